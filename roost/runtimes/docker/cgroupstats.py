"""Resource samples of a container read straight from its cgroup and /proc (no engine call).

Why not the engine's stats API: each call makes the engine read the same files, build a
large JSON document and (without `one-shot`) wait a second for a second reading; at 1 Hz for
100 containers that costs the engine far more than reading five small files here. The
numbers are the ones `docker stats` shows:
- memory: usage minus inactive file cache (v1 `total_inactive_file`, v2 `inactive_file`);
- memory limit: the enforced limit (with Wings' overhead), 0 when none;
- cpu: percent of one core, from the cpu usage delta over the wall time between samples;
- network: rx/tx of every interface but loopback in the container's network namespace;
- uptime: from the engine's `State.StartedAt`.

The container's cgroup is found from `/proc/<pid>/cgroup` of its init process (works for the
cgroupfs and systemd drivers, v1 and v2), falling back to the engine's usual paths. When no
cgroup can be read (e.g. roost runs in another pid namespace than the engine), `available`
is False and the runtime falls back to the engine's one-shot stats.
"""
from __future__ import annotations

import os
import time

from roost.runtimes.base import Sample
from roost.runtimes.process import cgroups
from roost.runtimes.process.cgroups import Cgroup
from roost.runtimes.process.procstats import own_network


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def parse_proc_cgroup(text: str) -> tuple[dict[str, str], str | None]:
    """(v1 controller -> path, v2 path) from /proc/<pid>/cgroup."""
    v1: dict[str, str] = {}
    v2: str | None = None
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            v2 = path
        for controller in controllers.split(","):
            if controller:
                v1[controller] = path
    return v1, v2


def _candidates(mount: str, proc_path: str | None, container_id: str) -> list[str]:
    found = []
    if proc_path:
        found.append(os.path.join(mount, proc_path.lstrip("/")))
    found += [os.path.join(mount, "docker", container_id),
              os.path.join(mount, "system.slice", f"docker-{container_id}.scope")]
    return found


def find_cgroup(container_id: str, pid: int,
                hierarchies: cgroups.Hierarchies | None = None) -> Cgroup | None:
    """The container's cgroup directories, or None when they cannot be found."""
    hierarchies = cgroups.detect() if hierarchies is None else hierarchies
    try:
        v1_paths, v2_path = parse_proc_cgroup(_read(f"/proc/{pid}/cgroup")) if pid else ({}, None)
    except OSError:
        v1_paths, v2_path = {}, None
    if hierarchies.v2:
        for d in _candidates(hierarchies.v2, v2_path, container_id):
            if container_id in d and os.path.isfile(os.path.join(d, "memory.current")):
                return Cgroup(2, {"unified": d})
        return None
    dirs: dict[str, str] = {}
    for controller, probe in (("memory", "memory.usage_in_bytes"),
                              ("cpuacct", "cpuacct.usage")):
        mount = hierarchies.v1.get(controller)
        if mount is None:
            continue
        for d in _candidates(mount, v1_paths.get(controller), container_id):
            if container_id in d and os.path.isfile(os.path.join(d, probe)):
                dirs[controller] = d
                break
    if "memory" not in dirs or "cpuacct" not in dirs:
        return None
    return Cgroup(1, dirs)


class ContainerStats:
    """Samples one running container; cpu is the delta since the previous sample."""

    def __init__(self, container_id: str, pid: int, started_at: float,
                 cgroup: Cgroup | None) -> None:
        self.container_id = container_id
        self._pid = pid
        self._started_at = started_at
        self._cgroup = cgroup
        # Before the first sample, the baseline is "no cpu used, at start time".
        self._last_cpu_ns = 0
        self._last_at = time.monotonic() - max(0.0, time.time() - started_at)

    @property
    def available(self) -> bool:
        return self._cgroup is not None

    def cpu_percent(self, cpu_ns: int, now: float) -> float:
        elapsed_ns = (now - self._last_at) * 1e9
        cpu = max(0, cpu_ns - self._last_cpu_ns) / elapsed_ns * 100 if elapsed_ns > 0 else 0.0
        self._last_cpu_ns, self._last_at = cpu_ns, now
        return round(cpu, 3)

    def uptime_ms(self) -> int:
        return max(0, int((time.time() - self._started_at) * 1000))

    def sample(self) -> Sample | None:
        """A sample from the files, None when they cannot be read (container gone)."""
        cgroup = self._cgroup
        if cgroup is None:
            return None
        memory = cgroup.memory_usage_bytes()
        cpu_ns = cgroup.cpu_usage_ns()
        if memory is None or cpu_ns is None:
            return None
        rx, tx = own_network(self._pid)
        return Sample(
            memory_bytes=memory,
            memory_limit_bytes=cgroup.memory_limit_bytes(),
            cpu_absolute=self.cpu_percent(cpu_ns, time.monotonic()),
            rx_bytes=rx,
            tx_bytes=tx,
            uptime_ms=self.uptime_ms(),
        )

    def from_engine(self, stats: dict) -> Sample:
        """A sample from the engine's one-shot stats document (the fallback)."""
        memory = stats.get("memory_stats") or {}
        detail = memory.get("stats") or {}
        inactive = detail.get("total_inactive_file", detail.get("inactive_file", 0))
        usage = max(0, int(memory.get("usage", 0)) - int(inactive))
        limit = int(memory.get("limit", 0))
        cpu_ns = int(((stats.get("cpu_stats") or {}).get("cpu_usage") or {}).get(
            "total_usage", 0))
        rx = tx = 0
        for name, counters in (stats.get("networks") or {}).items():
            if name != "lo":
                rx += int(counters.get("rx_bytes", 0))
                tx += int(counters.get("tx_bytes", 0))
        return Sample(
            memory_bytes=usage,
            memory_limit_bytes=limit if limit < cgroups.UNLIMITED_THRESHOLD else 0,
            cpu_absolute=self.cpu_percent(cpu_ns, time.monotonic()),
            rx_bytes=rx, tx_bytes=tx, uptime_ms=self.uptime_ms(),
        )
