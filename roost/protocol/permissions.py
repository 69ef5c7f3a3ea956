"""Permission strings and the rule for `*` (it never grants `admin.*`)."""
from __future__ import annotations

from collections.abc import Iterable

WEBSOCKET_CONNECT = "websocket.connect"
CONTROL_CONSOLE = "control.console"
CONTROL_START = "control.start"
CONTROL_STOP = "control.stop"
CONTROL_RESTART = "control.restart"
ADMIN_ERRORS = "admin.websocket.errors"
ADMIN_INSTALL = "admin.websocket.install"
ADMIN_TRANSFER = "admin.websocket.transfer"
BACKUP_READ = "backup.read"

ALL = (
    WEBSOCKET_CONNECT,
    CONTROL_CONSOLE,
    CONTROL_START,
    CONTROL_STOP,
    CONTROL_RESTART,
    ADMIN_ERRORS,
    ADMIN_INSTALL,
    ADMIN_TRANSFER,
    BACKUP_READ,
)

# `set state <action>` → permission needed (spec §4: kill needs control.stop)
POWER_PERMISSION = {
    "start": CONTROL_START,
    "stop": CONTROL_STOP,
    "restart": CONTROL_RESTART,
    "kill": CONTROL_STOP,
}


class PermissionSet:
    """A token's permissions, resolved once per (re)auth."""

    __slots__ = ("_granted", "_star")

    def __init__(self, granted: Iterable[str]):
        self._granted = frozenset(p for p in granted if isinstance(p, str))
        self._star = "*" in self._granted

    def has(self, permission: str) -> bool:
        if permission in self._granted:
            return True
        return self._star and not permission.startswith("admin")

    def __repr__(self) -> str:
        return f"PermissionSet({sorted(self._granted)!r})"
