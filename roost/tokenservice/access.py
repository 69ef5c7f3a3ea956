"""Who may do what on a server, as a panel decides it (pure: no I/O, no clock).

- Owners get `["*"]`; root admins get `*` plus the three `admin.websocket.*` permissions
  (an admin who owns the server is an admin first); a subuser gets its stored list, which
  always holds `websocket.connect`. `*` never grants `admin.*` (protocol/permissions.py).
- A server in a conflicting state (suspended, node under maintenance, installing, install
  failed, restoring, transferring) answers 409 on every client route but the server view;
  a root admin may still get a websocket token while it installs, restores or transfers
  (to watch the install output), never while it is suspended or its node is in maintenance.
"""
from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from ..protocol import permissions as P
from ..protocol.permissions import PermissionSet
from .issuer import ADMIN_PERMISSIONS, OWNER_PERMISSIONS

# Every permission a panel lets an owner hand to a subuser (Pterodactyl's catalogue).
SUBUSER_PERMISSIONS: tuple[str, ...] = (
    "websocket.connect",
    "control.console", "control.start", "control.stop", "control.restart",
    "user.create", "user.read", "user.update", "user.delete",
    "file.create", "file.read", "file.read-content", "file.update", "file.delete", "file.archive", "file.sftp",
    "backup.create", "backup.read", "backup.delete", "backup.download", "backup.restore",
    "allocation.read", "allocation.create", "allocation.update", "allocation.delete",
    "startup.read", "startup.update", "startup.docker-image",
    "database.create", "database.read", "database.update", "database.delete", "database.view_password",
    "schedule.create", "schedule.read", "schedule.update", "schedule.delete",
    "settings.rename", "settings.reinstall",
    "activity.read",
)
_KNOWN = frozenset(SUBUSER_PERMISSIONS)

# Client route → the permission it needs (power depends on the signal).
POWER_SIGNALS = ("start", "stop", "restart", "kill")
POWER_PERMISSION = P.POWER_PERMISSION  # kill needs control.stop
COMMAND_PERMISSION = P.CONTROL_CONSOLE
WEBSOCKET_PERMISSION = P.WEBSOCKET_CONNECT
STARTUP_READ = "startup.read"


class InvalidPermissions(ValueError):
    """A subuser permission list names something a subuser cannot hold."""


def normalise_subuser_permissions(perms: Iterable[str]) -> list[str]:
    """Deduplicated, known permissions, always with `websocket.connect` (as the panel stores
    them). Refuses `*`, `admin.*` and unknown names."""
    out: list[str] = []
    bad: list[str] = []
    for p in perms:
        p = p.strip() if isinstance(p, str) else p
        if not isinstance(p, str) or not p:
            continue
        if p not in _KNOWN:
            bad.append(p)
        elif p not in out:
            out.append(p)
    if bad:
        raise InvalidPermissions(
            "not a subuser permission: " + ", ".join(sorted(set(bad)))
            + " (known: " + ", ".join(SUBUSER_PERMISSIONS) + ")"
        )
    if P.WEBSOCKET_CONNECT not in out:
        out.insert(0, P.WEBSOCKET_CONNECT)
    return out


def user_permissions(*, is_admin: bool, is_owner: bool, subuser: list[str] | None) -> list[str] | None:
    """The permission list a panel gives this user on this server; None = no access at all."""
    if is_admin:
        return list(ADMIN_PERMISSIONS)
    if is_owner:
        return list(OWNER_PERMISSIONS)
    if subuser is None:
        return None
    perms = list(subuser)
    if P.WEBSOCKET_CONNECT not in perms:
        perms.insert(0, P.WEBSOCKET_CONNECT)
    return perms


def has(perms: Iterable[str], permission: str) -> bool:
    return PermissionSet(perms).has(permission)


def power_permission(signal: str) -> str:
    return POWER_PERMISSION[signal]


class Route(StrEnum):
    VIEW = "view"
    WEBSOCKET = "websocket"
    RESOURCES = "resources"
    POWER = "power"
    COMMAND = "command"


# The panel's texts for each conflicting state (first match wins, in this order).
STATE_SUSPENDED = "This server is currently suspended and the functionality requested is unavailable."
STATE_MAINTENANCE = ("The node of this server is currently under maintenance and the functionality requested "
                     "is unavailable.")
STATE_INSTALLING = "This server has not yet completed its installation process, please try again later."
STATE_RESTORING = "This server is currently restoring from a backup, please try again later."
STATE_TRANSFERRING = "This server is currently being transferred to a new machine, please try again later."

INSTALLING_STATUSES = ("installing", "install_failed")


def state_conflict(*, suspended: bool, maintenance: bool, status: str | None, transferring: bool) -> str | None:
    """The 409 text for a server's state, or None when the server is usable."""
    if suspended:
        return STATE_SUSPENDED
    if maintenance:
        return STATE_MAINTENANCE
    if status in INSTALLING_STATUSES:
        return STATE_INSTALLING
    if status == "restoring_backup":
        return STATE_RESTORING
    if transferring:
        return STATE_TRANSFERRING
    return None


def route_blocked(route: Route, *, is_admin: bool, suspended: bool, maintenance: bool, status: str | None,
                  transferring: bool) -> str | None:
    """The 409 text when `route` is refused in the server's current state, else None."""
    conflict = state_conflict(suspended=suspended, maintenance=maintenance, status=status, transferring=transferring)
    if conflict is None or route is Route.VIEW:
        return None
    if suspended or maintenance:
        return conflict
    if is_admin and route is Route.WEBSOCKET:
        return None
    return conflict
