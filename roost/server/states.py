"""Server states (values are the wire strings), the allowed transitions, and busy flags."""
from __future__ import annotations

from enum import Enum, StrEnum


class ServerState(StrEnum):
    OFFLINE = "offline"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"


S = ServerState

# For each state, the states it may be entered from.
TRANSITIONS: dict[ServerState, frozenset[ServerState]] = {
    # OFFLINE -> STARTING: start requested
    S.STARTING: frozenset({S.OFFLINE}),
    # STARTING -> RUNNING: done line seen (or no matchers configured)
    # (reattach at boot may also enter RUNNING from OFFLINE)
    S.RUNNING: frozenset({S.STARTING, S.OFFLINE}),
    # STARTING/RUNNING -> STOPPING: stop, restart or kill requested; stop command typed
    S.STOPPING: frozenset({S.STARTING, S.RUNNING}),
    # STARTING/RUNNING -> OFFLINE: the process exited on its own (a crash, unless clean exit)
    # STOPPING -> OFFLINE: the process exited after a stop or kill
    S.OFFLINE: frozenset({S.STARTING, S.RUNNING, S.STOPPING}),
}

ACTIVE = frozenset({S.STARTING, S.RUNNING, S.STOPPING})


class Busy(Enum):
    """What long operation, if any, owns the server (replaces Wings' three flags)."""

    NONE = "none"
    INSTALLING = "installing"
    TRANSFERRING = "transferring"
    RESTORING = "restoring"
