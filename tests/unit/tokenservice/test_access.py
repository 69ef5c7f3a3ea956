"""Permission and state rules of the client API (pure)."""
import pytest

from roost.protocol.permissions import PermissionSet
from roost.tokenservice.access import (SUBUSER_PERMISSIONS, InvalidPermissions, Route, has,
                                       normalise_subuser_permissions, power_permission, route_blocked,
                                       state_conflict, user_permissions)
from roost.tokenservice.issuer import ADMIN_PERMISSIONS

CONTROL = ["control.start", "control.stop", "control.restart", "control.console"]


def test_who_gets_what():
    assert user_permissions(is_admin=False, is_owner=True, subuser=None) == ["*"]
    assert user_permissions(is_admin=True, is_owner=False, subuser=None) == ADMIN_PERMISSIONS
    assert user_permissions(is_admin=True, is_owner=True, subuser=None) == ADMIN_PERMISSIONS
    assert user_permissions(is_admin=False, is_owner=False, subuser=["control.start"]) == \
        ["websocket.connect", "control.start"]
    assert user_permissions(is_admin=False, is_owner=False, subuser=None) is None


def test_star_never_grants_admin():
    owner = user_permissions(is_admin=False, is_owner=True, subuser=None)
    for p in CONTROL + ["websocket.connect", "backup.read"]:
        assert has(owner, p)
    for p in ("admin.websocket.errors", "admin.websocket.install", "admin.websocket.transfer"):
        assert not has(owner, p)
        assert has(ADMIN_PERMISSIONS, p)


@pytest.mark.parametrize("granted", CONTROL)
def test_each_control_permission_allows_exactly_its_action(granted):
    perms = user_permissions(is_admin=False, is_owner=False, subuser=normalise_subuser_permissions([granted]))
    allowed = {signal for signal in ("start", "stop", "restart", "kill") if has(perms, power_permission(signal))}
    expected = {"control.start": {"start"}, "control.stop": {"stop", "kill"}, "control.restart": {"restart"},
                "control.console": set()}[granted]
    assert allowed == expected
    assert has(perms, "control.console") == (granted == "control.console")
    assert has(perms, "websocket.connect")


def test_websocket_connect_is_always_there():
    assert normalise_subuser_permissions([]) == ["websocket.connect"]
    assert normalise_subuser_permissions(["control.stop", "websocket.connect"]) == ["control.stop", "websocket.connect"]
    # without it (a hand-edited store), the check fails as the panel's would
    assert not PermissionSet(["control.start"]).has("websocket.connect")


@pytest.mark.parametrize("bad", [["*"], ["admin.websocket.install"], ["control.everything"], ["control.start", "x"]])
def test_subusers_cannot_hold(bad):
    with pytest.raises(InvalidPermissions):
        normalise_subuser_permissions(bad)


def test_catalogue_has_the_wire_permissions():
    for p in ("websocket.connect", "control.console", "control.start", "control.stop", "control.restart",
              "backup.read"):
        assert p in SUBUSER_PERMISSIONS


STATES = {
    "ok": dict(suspended=False, maintenance=False, status=None, transferring=False),
    "suspended": dict(suspended=True, maintenance=False, status=None, transferring=False),
    "maintenance": dict(suspended=False, maintenance=True, status=None, transferring=False),
    "installing": dict(suspended=False, maintenance=False, status="installing", transferring=False),
    "install_failed": dict(suspended=False, maintenance=False, status="install_failed", transferring=False),
    "reinstall_failed": dict(suspended=False, maintenance=False, status="reinstall_failed", transferring=False),
    "restoring": dict(suspended=False, maintenance=False, status="restoring_backup", transferring=False),
    "transferring": dict(suspended=False, maintenance=False, status=None, transferring=True),
}


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("route", list(Route))
@pytest.mark.parametrize("admin", [False, True])
def test_route_blocking(state, route, admin):
    blocked = route_blocked(route, is_admin=admin, **STATES[state])
    usable = state in ("ok", "reinstall_failed")
    if usable or route is Route.VIEW:
        assert blocked is None
    elif admin and route is Route.WEBSOCKET and state not in ("suspended", "maintenance"):
        assert blocked is None  # admins may watch an install, restore or transfer
    else:
        assert blocked == state_conflict(**STATES[state])


def test_conflict_texts():
    assert "suspended" in state_conflict(**STATES["suspended"])
    assert "installation" in state_conflict(**STATES["installing"])
    assert "transferred" in state_conflict(**STATES["transferring"])
    assert "restoring" in state_conflict(**STATES["restoring"])
    assert "maintenance" in state_conflict(**STATES["maintenance"])
