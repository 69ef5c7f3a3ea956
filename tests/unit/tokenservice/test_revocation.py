"""Revocation vs integer iat: a token minted right after a revocation is never itself denied,
and a token minted from permissions read before it always is (service.py explains the rule).

The node here is a fake that applies the deny with the real DenyList at the real clock, as
the daemon does; the daemon itself is exercised in tests/functional/tokenservice.
"""
import asyncio
import time
import uuid

import jwt
import pytest

from roost.demo.definition import demo_definition
from roost.protocol.tokens import DenyList, JwtError, TokenVerifier
from roost.tokenservice.nodeclient import NodeError
from roost.tokenservice.service import TokenService
from roost.tokenservice.store import Store

TOKEN = "n" * 64


class FakeNode:
    """Records deny calls and applies them to a DenyList like the daemon (now = time.time())."""

    def __init__(self, delay_s: float = 0.0, fail: bool = False):
        self.denylist = DenyList()
        self.delay_s = delay_s
        self.fail = fail
        self.calls: list[tuple[str, list[str], float]] = []

    async def deny_jtis(self, node, uuid, jtis):
        await asyncio.sleep(self.delay_s)
        if self.fail:
            raise NodeError("node down")
        t = time.time()
        self.denylist.deny_jtis(jtis, t)
        self.calls.append((uuid, jtis, t))

    async def close(self):
        pass


@pytest.fixture
def setup(tmp_path):
    store = Store.open(tmp_path)
    store.create_user("owner")
    bob = store.create_user("bob")
    store.add_node("n1", "http://127.0.0.1:9", token_id="tid", token=TOKEN)
    server = store.create_server(demo_definition(str(uuid.uuid4())), owner="owner")
    store.add_subuser(server.identifier, "bob", ["control.console"])
    return store, bob, server


def verify(token, server, deny):
    return TokenVerifier(TOKEN).verify(token, server_uuid=server.uuid, now=time.time(), denylist=deny)


async def test_fresh_token_after_change_is_not_denied(setup):
    store, bob, server = setup
    node = FakeNode()
    svc = TokenService(store, node_client=node, token_ttl_s=60)
    for permissions in (["control.start"], ["control.stop"], ["control.console", "control.restart"]):
        old = await svc.websocket_credentials(bob, server.identifier)
        result = await svc.change_subuser(server.identifier, "bob", permissions)
        assert result.nodes_ok
        fresh = await svc.websocket_credentials(bob, server.identifier)
        _, _, t = node.calls[-1]
        assert fresh.iat > t  # strictly after the deny: the rule `iat < t` cannot catch it
        claims = verify(fresh.token, server, node.denylist)
        assert sorted(claims.raw["permissions"]) == sorted(["websocket.connect", *permissions])
        with pytest.raises(JwtError, match="denylist"):
            verify(old.token, server, node.denylist)


async def test_waits_at_most_about_a_second(setup):
    store, bob, server = setup
    svc = TokenService(store, node_client=FakeNode(), token_ttl_s=60)
    await svc.change_subuser(server.identifier, "bob", ["control.start"])
    started = time.monotonic()
    await svc.websocket_credentials(bob, server.identifier)
    assert time.monotonic() - started <= 1.1
    # and only once: the next token is immediate
    started = time.monotonic()
    await svc.websocket_credentials(bob, server.identifier)
    assert time.monotonic() - started < 0.2


async def test_token_requested_during_the_deny_waits_for_it(setup):
    store, bob, server = setup
    node = FakeNode(delay_s=0.4)
    svc = TokenService(store, node_client=node, token_ttl_s=60)
    change = asyncio.create_task(svc.change_subuser(server.identifier, "bob", ["control.stop"]))
    await asyncio.sleep(0.1)  # the change is committed, the deny is in flight
    creds = await svc.websocket_credentials(bob, server.identifier)
    await change
    assert creds.permissions == ["websocket.connect", "control.stop"]
    assert creds.iat > node.calls[-1][2]
    verify(creds.token, server, node.denylist)


async def test_token_from_permissions_read_before_the_change_is_denied(setup):
    """The race the other way: iat is read before the snapshot of the permissions."""
    store, bob, server = setup
    node = FakeNode()
    svc = TokenService(store, node_client=node, token_ttl_s=60)
    access, now = await svc.token_snapshot(bob, server.id)  # reads the old permissions
    await svc.change_subuser(server.identifier, "bob", ["control.start"])
    stale = svc.mint(bob, access, now)
    assert "control.console" in jwt.decode(stale.token, options={"verify_signature": False})["permissions"]
    with pytest.raises(JwtError, match="denylist"):
        verify(stale.token, server, node.denylist)


async def test_removal_revokes_and_ends_access(setup):
    store, bob, server = setup
    node = FakeNode()
    svc = TokenService(store, node_client=node, token_ttl_s=60)
    old = await svc.websocket_credentials(bob, server.identifier)
    result = await svc.remove_subuser(server.identifier, "bob")
    assert result.nodes_ok and node.calls
    assert await svc.websocket_credentials(bob, server.identifier) is None
    with pytest.raises(JwtError, match="denylist"):
        verify(old.token, server, node.denylist)


async def test_node_down_is_reported_and_the_change_stands(setup):
    store, bob, server = setup
    svc = TokenService(store, node_client=FakeNode(fail=True), token_ttl_s=60)
    result = await svc.change_subuser(server.identifier, "bob", ["control.start"])
    assert not result.nodes_ok
    (outcome,) = result.nodes
    assert outcome.action == "ws/deny" and "node down" in outcome.error and "until their token expires" in outcome.consequence
    assert store.list_subusers(server.identifier)[0][0].permissions == ["websocket.connect", "control.start"]
    # the pair is not left blocked
    assert store.token_context(bob, server.id)[1].pending_since is None


async def test_stale_in_flight_marker_does_not_block_forever(setup):
    store, bob, server = setup
    svc = TokenService(store, node_client=FakeNode(), token_ttl_s=60, node_timeout_s=0.1)
    store.begin_revocation(bob.id, server.id, now=time.time() - 60)  # a CLI that died mid-call
    started = time.monotonic()
    assert await svc.websocket_credentials(bob, server.identifier) is not None
    assert time.monotonic() - started < 0.5
