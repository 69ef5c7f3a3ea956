"""The runtime interface: how a game server process is run, whatever runs it.

A runtime reports *facts* (a line was printed, the process exited) and never decides
anything: the server aggregate (`roost.server`) owns the state machine. Nothing outside
`roost/runtimes/` imports a concrete runtime; differences show up as capability attributes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Literal, Protocol, Union


@dataclass(frozen=True, slots=True)
class Output:
    """One console line printed by the server (without its line ending)."""

    line: str
    stream: Literal["stdout", "stderr"] = "stdout"


@dataclass(frozen=True, slots=True)
class Exited:
    """The server process (the whole instance) is gone."""

    code: int
    oom_killed: bool = False
    # True when the runtime killed it on request (kill/stop timeout); informative only.
    by_signal: int | None = None


@dataclass(frozen=True, slots=True)
class Attached:
    """The runtime is attached to a running instance (fresh start or reattach)."""

    pid: int | None
    reattached: bool = False
    started_at: float = 0.0  # wall clock (time.time()) when the instance started


@dataclass(frozen=True, slots=True)
class Progress:
    """A line about preparing an instance, before it starts (e.g. image pull progress).

    Not console output: the daemon shows it as `install output`, between daemon console lines.
    """

    line: str


Fact = Union[Output, Exited, Attached, Progress]
FactSink = Callable[[Fact], None]


@dataclass(frozen=True, slots=True)
class Limits:
    """Resource limits from the server definition; 0 means unlimited (except swap)."""

    memory_bytes: int = 0
    # As Wings: with a memory limit, 0 = no swap at all, -1 = unlimited swap, N = N bytes.
    swap_bytes: int = -1
    cpu_percent: int = 0  # percent of one core: 150 = one and a half cores
    pids: int = 0
    oom_disabled: bool = False


@dataclass(frozen=True, slots=True)
class LaunchSpec:
    """Everything a runtime needs to start one instance of a server."""

    server_uuid: str
    invocation: str  # the startup command after variable substitution; run by /bin/sh -c
    environment: dict[str, str]
    data_dir: str  # working directory; the server's files
    limits: Limits = field(default_factory=Limits)
    image: str = ""  # container runtimes only
    # Container runtimes only: (host ip, port) of each allocation; bound as tcp and udp to the
    # same port inside the container.
    ports: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True, slots=True)
class Sample:
    """One resource reading. cpu_absolute is percent of ONE core."""

    memory_bytes: int = 0
    memory_limit_bytes: int = 0
    cpu_absolute: float = 0.0
    rx_bytes: int = 0
    tx_bytes: int = 0
    uptime_ms: int = 0


class RuntimeError_(Exception):
    """A runtime could not do what was asked (message is safe to show to admins)."""


class ServerRuntime(Protocol):
    """One server's instance handle. Created once per server by a `RuntimeFactory`.

    Facts are delivered synchronously to the sink given at construction, from the event loop.
    Call `start` only when no instance runs; call `attach` at daemon boot to find one.
    """

    kind: str  # "process" | "docker"
    survives_daemon_restart: bool
    # Human text when limits could not be applied ("cgroups not writable: ..."), else None.
    limits_note: str | None

    async def start(self, spec: LaunchSpec) -> None:
        """Start an instance; an `Attached` fact follows, then `Output`s, then `Exited`."""

    async def attach(self, checkpoint: dict | None = None) -> bool:
        """Reattach to an instance left running by an earlier daemon; False when none.

        `checkpoint` is the last value of `checkpoint()` the daemon stored together with the
        console lines it had received: output after it is delivered again, exactly once.
        """

    def checkpoint(self) -> dict | None:
        """An opaque, JSON-serialisable position: every `Output` fact emitted so far is
        before it, nothing after it. None when there is no instance or no exact position."""

    async def write_stdin(self, data: bytes) -> None:
        """Write bytes to the instance's stdin. Raises RuntimeError_ when not running."""

    async def signal(self, signum: int) -> None:
        """Send a signal to the whole instance (process group / container)."""

    async def kill(self) -> None:
        """SIGKILL the whole instance now."""

    async def sample(self) -> Sample | None:
        """Current resource usage, or None when no instance runs. Cheap: no subprocesses."""

    async def close(self) -> None:
        """Stop watching (daemon shutdown). Does not stop the instance if it can outlive us."""

    async def destroy(self) -> None:
        """Forget the instance for good (server deleted): kill it and remove runtime state."""


def server_identity(uid: int | None, gid: int | None) -> tuple[int | None, int | None]:
    """The uid/gid servers run as; a uid without a gid means that user's primary group
    (never the daemon's)."""
    if uid is not None and gid is None:
        import pwd

        try:
            gid = pwd.getpwuid(uid).pw_gid
        except KeyError:
            raise ValueError(f"uid {uid} has no passwd entry: give a gid") from None
    return uid, gid


class RuntimeFactory(Protocol):
    kind: str

    def for_server(self, server_uuid: str, data_dir: str, sink: FactSink) -> ServerRuntime: ...
