"""Resource samples for a process-runtime server, read from files only (no subprocesses).

With a cgroup the numbers come from it: it sees every process the server forked, and its
memory figure is the one the limit is enforced on. Without one, the processes of the server's
session (the holder makes the server a session leader; a process group is narrower, since job
control shells move children out of it) are read from /proc.

Network: only reported when honestly attributable, i.e. the server runs in a network
namespace of its own (e.g. started under `unshare -n`): then the non-loopback interfaces of
that namespace are its traffic. In the host namespace there is no per-process counter, so
rx/tx stay 0 rather than showing the whole machine's traffic.
"""
from __future__ import annotations

import os
import time

from roost.runtimes.base import Sample
from roost.runtimes.process.cgroups import Cgroup

CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def parse_stat(text: str) -> tuple[int, int]:
    """(session id, cpu ticks) from /proc/<pid>/stat; cpu counts reaped children too, so time
    used by short-lived helpers does not vanish from the total when they exit."""
    fields = text[text.rindex(")") + 2:].split()
    # fields[0] is field 3 (state): session is field 6, utime..cstime are fields 14..17.
    session = int(fields[3])
    ticks = sum(int(v) for v in fields[11:15])
    return session, ticks


def parse_status_rss(text: str) -> int:
    """Resident anonymous + shared memory in bytes from /proc/<pid>/status (page cache of
    mapped files is excluded, as the cgroup figure minus inactive_file does)."""
    total_kib = 0
    for line in text.splitlines():
        if line.startswith(("RssAnon:", "RssShmem:")):
            total_kib += int(line.split()[1])
    return total_kib * 1024


def parse_net_dev(text: str) -> tuple[int, int]:
    """(rx bytes, tx bytes) over every interface but loopback, from /proc/<pid>/net/dev."""
    rx = tx = 0
    for line in text.splitlines()[2:]:
        name, _, counters = line.partition(":")
        if name.strip() == "lo" or not counters:
            continue
        values = counters.split()
        rx += int(values[0])
        tx += int(values[8])
    return rx, tx


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def session_usage(session: int) -> tuple[int, int]:
    """(memory bytes, cpu ns) summed over the live processes of a session."""
    memory = ticks = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            sid, proc_ticks = parse_stat(_read(f"/proc/{entry}/stat"))
            if sid != session:
                continue
            memory += parse_status_rss(_read(f"/proc/{entry}/status"))
        except (OSError, ValueError, IndexError):
            continue  # exited while we looked
        ticks += proc_ticks
    return memory, ticks * 1_000_000_000 // CLOCK_TICKS_PER_S


def own_network(pid: int) -> tuple[int, int]:
    """(rx, tx) when `pid` has a network namespace of its own, else (0, 0)."""
    try:
        if os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat("/proc/self/ns/net").st_ino:
            return 0, 0
        return parse_net_dev(_read(f"/proc/{pid}/net/dev"))
    except (OSError, ValueError, IndexError):
        return 0, 0


class ProcStats:
    """Samples one running instance; cpu is the delta since the previous sample."""

    def __init__(self, pid: int, started_at: float, cgroup: Cgroup | None) -> None:
        self._pid = pid
        self._started_at = started_at
        self._cgroup = cgroup
        # Before the first sample, the baseline is "no cpu used, at start time".
        self._last_cpu_ns = 0
        self._last_at = time.monotonic() - max(0.0, time.time() - started_at)

    def sample(self) -> Sample:
        memory = cpu_ns = None
        if self._cgroup is not None:
            memory = self._cgroup.memory_usage_bytes()
            cpu_ns = self._cgroup.cpu_usage_ns()
        if memory is None or cpu_ns is None:
            proc_memory, proc_cpu_ns = session_usage(self._pid)
            memory = proc_memory if memory is None else memory
            cpu_ns = proc_cpu_ns if cpu_ns is None else cpu_ns
        now = time.monotonic()
        elapsed_ns = (now - self._last_at) * 1e9
        cpu = max(0, cpu_ns - self._last_cpu_ns) / elapsed_ns * 100 if elapsed_ns > 0 else 0.0
        self._last_cpu_ns, self._last_at = cpu_ns, now
        rx, tx = own_network(self._pid)
        return Sample(
            memory_bytes=memory,
            memory_limit_bytes=self._cgroup.memory_limit_bytes() if self._cgroup else 0,
            cpu_absolute=round(cpu, 3),
            rx_bytes=rx,
            tx_bytes=tx,
            uptime_ms=max(0, int((time.time() - self._started_at) * 1000)),
        )
