"""Per-server cgroups: limits, OOM detection and accounting for the process runtime.

Why: without a cgroup a server's memory limit is a wish, a fork bomb takes the machine, and
"was it the OOM killer?" has no answer. Works with cgroup v2 (when its memory controller is
available) or v1 (separate hierarchies per controller, as on this kind of machine).

Each server gets `<hierarchy mount>/<cgroup_root>/<server uuid>` in every hierarchy we use.
The group root sits at the top of the hierarchy, not under the daemon's own cgroup, so
killing or restarting the daemon's cgroup (a systemd unit) leaves the servers alone.
When something cannot be created or written, the server still runs and the reason is returned
as one human sentence (`limits_note`).
"""
from __future__ import annotations

import errno
import os
import time
from dataclasses import dataclass, field

from roost.runtimes.base import Limits
from roost.runtimes.process.holder import kill_cgroup_members, read_oom_kills

DEFAULT_CGROUP_ROOT = "roost"
V1_CONTROLLERS = ("memory", "cpu", "cpuacct", "pids")
V2_CONTROLLERS = ("memory", "cpu", "pids")
CFS_PERIOD_US = 100_000
# v1 reports "no limit" as PAGE_COUNTER_MAX * page size (~2^63); anything this large is none.
UNLIMITED_THRESHOLD = 1 << 60


@dataclass(frozen=True, slots=True)
class Hierarchies:
    """Where the cgroup filesystems are mounted."""

    v2: str | None = None  # cgroup2 mount point
    v1: dict[str, str] = field(default_factory=dict)  # controller -> mount point


def _unescape(path: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal (\\040)."""
    out, i = [], 0
    while i < len(path):
        if path[i] == "\\" and path[i + 1:i + 4].isdigit():
            out.append(chr(int(path[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(path[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text: str) -> Hierarchies:
    """Find the cgroup v1 and v2 mounts in /proc/self/mountinfo content."""
    v2: str | None = None
    v1: dict[str, str] = {}
    for line in text.splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        sep = fields.index("-")
        if len(fields) < sep + 4 or len(fields) < 5:
            continue
        mount_point, fstype, super_options = _unescape(fields[4]), fields[sep + 1], fields[sep + 3]
        if fstype == "cgroup2" and v2 is None:
            v2 = mount_point
        elif fstype == "cgroup":
            for option in super_options.split(","):
                if option in V1_CONTROLLERS:
                    v1.setdefault(option, mount_point)
    return Hierarchies(v2=v2, v1=v1)


def parse_flat_keyed(text: str) -> dict[str, int]:
    """Parse `key value` lines (memory.stat, memory.events, cpu.stat, memory.oom_control)."""
    result = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        try:
            result[key] = int(value)
        except ValueError:
            continue
    return result


def parse_limit(text: str) -> int:
    """A limit file's content as bytes; 0 when unlimited ("max" or a v1 huge number)."""
    text = text.strip()
    if not text or text == "max":
        return 0
    value = int(text.split()[0])
    return 0 if value >= UNLIMITED_THRESHOLD else value


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def detect() -> Hierarchies:
    """The cgroup hierarchies to use: v2 if it has the memory controller, else v1."""
    try:
        found = parse_mountinfo(_read("/proc/self/mountinfo"))
    except OSError:
        return Hierarchies()
    if found.v2:
        try:
            if "memory" in _read(os.path.join(found.v2, "cgroup.controllers")).split():
                return Hierarchies(v2=found.v2)
        except OSError:
            pass
    return Hierarchies(v1=found.v1)


@dataclass(frozen=True, slots=True)
class Cgroup:
    """One server's cgroup: a directory per hierarchy (v2: one, keyed "unified")."""

    version: int
    dirs: dict[str, str]

    def _dir(self, controller: str) -> str | None:
        return self.dirs.get("unified" if self.version == 2 else controller)

    def procs_files(self) -> list[str]:
        """Files the server's pid is written to so it (and every fork) is in the group."""
        return [os.path.join(d, "cgroup.procs") for d in dict.fromkeys(self.dirs.values())]

    @property
    def oom_file(self) -> str | None:
        d = self._dir("memory")
        if d is None:
            return None
        return os.path.join(d, "memory.events" if self.version == 2 else "memory.oom_control")

    def oom_kills(self) -> int:
        return read_oom_kills(self.oom_file)

    def memory_usage_bytes(self) -> int | None:
        """Memory charged to the group minus reclaimable page cache (as Docker reports it)."""
        d = self._dir("memory")
        if d is None:
            return None
        try:
            if self.version == 2:
                usage = int(_read(os.path.join(d, "memory.current")))
                inactive = parse_flat_keyed(_read(os.path.join(d, "memory.stat"))).get(
                    "inactive_file", 0)
            else:
                usage = int(_read(os.path.join(d, "memory.usage_in_bytes")))
                inactive = parse_flat_keyed(_read(os.path.join(d, "memory.stat"))).get(
                    "total_inactive_file", 0)
        except (OSError, ValueError):
            return None
        return max(0, usage - inactive)

    def memory_limit_bytes(self) -> int:
        """The enforced memory limit, 0 when none."""
        d = self._dir("memory")
        if d is None:
            return 0
        name = "memory.max" if self.version == 2 else "memory.limit_in_bytes"
        try:
            return parse_limit(_read(os.path.join(d, name)))
        except (OSError, ValueError):
            return 0

    def cpu_usage_ns(self) -> int | None:
        """CPU time used by the group so far, in nanoseconds."""
        try:
            if self.version == 2:
                stat = parse_flat_keyed(_read(os.path.join(self.dirs["unified"], "cpu.stat")))
                return stat["usage_usec"] * 1000
            d = self._dir("cpuacct")
            return None if d is None else int(_read(os.path.join(d, "cpuacct.usage")))
        except (OSError, ValueError, KeyError):
            return None

    def remove(self, timeout_s: float = 2.0) -> None:
        """Kill anything left in the group and delete it (blocking; a dying process takes a
        moment to leave the group). Missing directories are fine."""
        deadline = time.monotonic() + timeout_s
        for d in dict.fromkeys(self.dirs.values()):
            while True:
                try:
                    os.rmdir(d)
                    break
                except FileNotFoundError:
                    break
                except OSError as exc:
                    if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                        break
                    kill_cgroup_members([os.path.join(d, "cgroup.procs")])
                    time.sleep(0.02)

    def to_json(self) -> dict:
        return {"version": self.version, "dirs": self.dirs}

    @classmethod
    def from_json(cls, data: dict | None) -> "Cgroup | None":
        if not data:
            return None
        return cls(version=int(data["version"]), dirs=dict(data["dirs"]))


def _wants_limits(limits: Limits) -> bool:
    return bool(limits.memory_bytes or limits.cpu_percent or limits.pids or limits.oom_disabled)


def _v1_limit_writes(limits: Limits) -> list[tuple[str, str, str, str]]:
    """(what, controller, file, value) in the order they must be written."""
    writes = []
    if limits.memory_bytes:
        writes.append(("memory limit", "memory", "memory.limit_in_bytes", str(limits.memory_bytes)))
        if limits.swap_bytes >= 0:
            # memsw is memory + swap and must be written after the memory limit.
            # Wings semantics: swap 0 = no swap at all, -1 = unlimited (nothing written).
            total = limits.memory_bytes + limits.swap_bytes
            writes.append(("swap limit", "memory", "memory.memsw.limit_in_bytes", str(total)))
    if limits.oom_disabled:
        writes.append(("OOM killer disable", "memory", "memory.oom_control", "1"))
    if limits.cpu_percent:
        writes.append(("cpu limit", "cpu", "cpu.cfs_period_us", str(CFS_PERIOD_US)))
        writes.append(("cpu limit", "cpu", "cpu.cfs_quota_us",
                       str(limits.cpu_percent * CFS_PERIOD_US // 100)))
    if limits.pids:
        writes.append(("pids limit", "pids", "pids.max", str(limits.pids)))
    return writes


def _v2_limit_writes(limits: Limits) -> list[tuple[str, str, str, str]]:
    writes = []
    if limits.memory_bytes:
        writes.append(("memory limit", "unified", "memory.max", str(limits.memory_bytes)))
        if limits.swap_bytes >= 0:
            writes.append(("swap limit", "unified", "memory.swap.max", str(limits.swap_bytes)))
    if limits.cpu_percent:
        writes.append(("cpu limit", "unified", "cpu.max",
                       f"{limits.cpu_percent * CFS_PERIOD_US // 100} {CFS_PERIOD_US}"))
    if limits.pids:
        writes.append(("pids limit", "unified", "pids.max", str(limits.pids)))
    return writes


def _enable_v2_controllers(mount: str, relative_parent: str) -> None:
    """Enable memory/cpu/pids for children at each level from the mount down to the parent
    (v2 only lets a group use a controller its parent enabled for it)."""
    levels = [mount]
    for part in relative_parent.split("/"):
        levels.append(os.path.join(levels[-1], part))
    for path in levels:
        try:
            os.makedirs(path, exist_ok=True)
            _write(os.path.join(path, "cgroup.subtree_control"),
                   " ".join(f"+{c}" for c in V2_CONTROLLERS))
        except OSError:
            pass  # the limit writes report what is missing


def create(cgroup_root: str | None, name: str, limits: Limits,
           hierarchies: Hierarchies | None = None) -> tuple[Cgroup | None, str | None]:
    """Create the server's cgroup and apply `limits`: (cgroup or None, limits_note or None).

    Call before starting the server; put it in with `procs_files()`; `remove()` it after the
    exit. A leftover group of the same name (an earlier run) is emptied and recreated.
    """
    hierarchies = detect() if hierarchies is None else hierarchies
    relative = (cgroup_root or DEFAULT_CGROUP_ROOT).strip("/")
    wanted = _wants_limits(limits)
    problems: list[str] = []
    if hierarchies.v2:
        mounts = {"unified": hierarchies.v2}
        version = 2
    elif hierarchies.v1:
        mounts = dict(hierarchies.v1)
        version = 1
    else:
        return None, ("resource limits not applied: no cgroup filesystem is mounted"
                      if wanted else None)
    if version == 2:
        _enable_v2_controllers(hierarchies.v2, relative)
    dirs: dict[str, str] = {}
    for controller, mount in mounts.items():
        d = os.path.join(mount, relative, name)
        if d in dirs.values():  # co-mounted controllers (e.g. cpu,cpuacct) share a directory
            dirs[controller] = d
            continue
        if os.path.isdir(d):
            Cgroup(version, {controller: d}).remove()
        try:
            os.makedirs(d, exist_ok=True)
            dirs[controller] = d
        except OSError as exc:
            problems.append(f"cannot create cgroup {d}: {exc.strerror}")
    if not dirs:
        return None, (f"resource limits not applied: {'; '.join(problems)}" if wanted else None)
    cgroup = Cgroup(version, dirs)
    writes = _v2_limit_writes(limits) if version == 2 else _v1_limit_writes(limits)
    if version == 2 and limits.oom_disabled:
        problems.append("disabling the OOM killer is not supported on cgroup v2")
    for what, controller, filename, value in writes:
        d = dirs.get(controller)
        if d is None:
            problems.append(f"{what}: no writable {controller} cgroup")
            continue
        try:
            _write(os.path.join(d, filename), value)
        except OSError as exc:
            problems.append(f"{what}: cannot write {os.path.join(d, filename)}: {exc.strerror}")
    if wanted and problems:
        return cgroup, f"resource limits not fully applied: {'; '.join(dict.fromkeys(problems))}"
    return cgroup, None
