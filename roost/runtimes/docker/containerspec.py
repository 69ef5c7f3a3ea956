"""The engine's container configuration for a server, as Wings builds it (pure functions).

Wings' rules (environment/settings.go, environment/docker/container.go), with roost's changes:
- Memory: the limit plus an overhead (a JVM or any runtime needs headroom beyond the heap the
  panel's figure is about): `Memory = limit * multiplier` with 1.15 up to 2048 MiB, 1.10 up
  to 4096 MiB, 1.05 above; `MemoryReservation` = the limit as given.
- Swap (`MemorySwap` is memory + swap in the engine): -1 = unlimited, 0 = none (equal to
  Memory), N = Memory + N. Without a memory limit nothing is set (the engine rejects a swap
  limit without one).
- CPU: `CpuQuota = percent * 1000` per `CpuPeriod = 100000` µs (150 % = one and a half
  cores); nothing when 0. `PidsLimit` from the limits (roost's config, 512 by default).
- A tmpfs `/tmp` (`rw,exec,nosuid,size=<n>M`), `OomKillDisable` per `oom_disabled`, the
  capabilities Wings drops and `no-new-privileges`.
- Every allocation's port bound as tcp and udp to the same port inside the container.
- roost: the invocation is run as `/bin/sh -c <invocation>` (no image entrypoint), under the
  engine's init (tini) with `TINI_KILL_PROCESS_GROUP=1`, as Pterodactyl's images run
  `tini -g`: a stop signal reaches the whole process group, as in the process runtime, and
  zombies are reaped. The log driver is `json-file` in blocking mode (a full log buffer
  holds the game back instead of dropping lines; roost reads the log as its console source).
"""
from __future__ import annotations

from typing import Callable

from roost.runtimes.base import LaunchSpec, Limits

MIB = 1024 * 1024
CFS_PERIOD_US = 100_000
CONTAINER_HOME = "/home/container"
# Wings drops these capabilities from every server container.
CAP_DROP = ("setpcap", "mknod", "audit_write", "net_raw", "dac_override", "fowner", "fsetid",
            "net_bind_service", "sys_chroot", "setfcap")
LABEL_SERVER = "roost.server"
LABEL_MANAGED = "roost.managed"

MemoryOverhead = Callable[[int], float]


def wings_memory_overhead(limit_bytes: int) -> float:
    """Wings' default multiplier for a memory limit (thresholds in MiB, inclusive)."""
    limit_mib = limit_bytes / MIB
    if limit_mib <= 2048:
        return 1.15
    if limit_mib <= 4096:
        return 1.10
    return 1.05


def memory_resources(limits: Limits, overhead: MemoryOverhead = wings_memory_overhead
                     ) -> dict[str, int]:
    """Memory, MemoryReservation and MemorySwap for the engine (empty: no memory limit)."""
    if limits.memory_bytes <= 0:
        return {}
    memory = int(round(limits.memory_bytes * overhead(limits.memory_bytes)))
    if limits.swap_bytes < 0:
        swap = -1
    else:
        swap = memory + limits.swap_bytes
    return {"Memory": memory, "MemoryReservation": limits.memory_bytes, "MemorySwap": swap}


def port_bindings(ports: tuple[tuple[str, int], ...]) -> tuple[dict, dict]:
    """(ExposedPorts, PortBindings): each (ip, port) as tcp and udp on the same port."""
    exposed: dict[str, dict] = {}
    bindings: dict[str, list[dict[str, str]]] = {}
    for ip, port in ports:
        for proto in ("tcp", "udp"):
            key = f"{int(port)}/{proto}"
            exposed[key] = {}
            binding = {"HostIp": ip or "", "HostPort": str(int(port))}
            if binding not in bindings.setdefault(key, []):
                bindings[key].append(binding)
    return exposed, bindings


def container_config(spec: LaunchSpec, *, image: str, labels: dict[str, str],
                     user: str | None = None, network_mode: str = "bridge",
                     tmpfs_size_mb: int = 100, overhead: MemoryOverhead = wings_memory_overhead,
                     init: bool = True, log_max_size_mb: int = 10, log_max_files: int = 2,
                     ) -> dict:
    """The body of `POST /containers/create` for `spec`."""
    env = {str(k): "" if v is None else str(v) for k, v in spec.environment.items()}
    env["HOME"] = CONTAINER_HOME
    if init:
        env["TINI_KILL_PROCESS_GROUP"] = "1"
    limits = spec.limits
    host: dict = {
        "Binds": [f"{spec.data_dir}:{CONTAINER_HOME}"],
        "NetworkMode": network_mode,
        "Tmpfs": {"/tmp": f"rw,exec,nosuid,size={int(tmpfs_size_mb)}M"},
        "OomKillDisable": bool(limits.oom_disabled),
        "CpuPeriod": CFS_PERIOD_US,
        "CpuShares": 1024,
        "Init": bool(init),
        "CapDrop": list(CAP_DROP),
        "SecurityOpt": ["no-new-privileges"],
        "LogConfig": {"Type": "json-file", "Config": {
            "max-size": f"{int(log_max_size_mb)}m", "max-file": str(int(log_max_files)),
            "mode": "blocking"}},
        **memory_resources(limits, overhead),
    }
    if limits.cpu_percent > 0:
        host["CpuQuota"] = limits.cpu_percent * 1000
    if limits.pids > 0:
        host["PidsLimit"] = limits.pids
    config: dict = {
        "Image": image,
        "Entrypoint": [""],
        "Cmd": ["/bin/sh", "-c", spec.invocation],
        "Env": [f"{k}={v}" for k, v in env.items()],
        "WorkingDir": CONTAINER_HOME,
        "Labels": dict(labels),
        "Tty": False,
        "OpenStdin": True,
        "StdinOnce": False,
        "AttachStdin": True,
        "AttachStdout": True,
        "AttachStderr": True,
        "HostConfig": host,
    }
    if user:
        config["User"] = user
    if spec.ports and network_mode != "host":
        config["ExposedPorts"], host["PortBindings"] = port_bindings(spec.ports)
    return config
