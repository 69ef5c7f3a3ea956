"""Through the public path against real daemons: client API key → server list → websocket
token → auth on the daemon → console, power, stats → `token expiring` → a new token from the
client API → re-auth on the same socket; revocation on a live socket; two nodes.

The daemons here read their servers from definition files (the same definitions the token
service holds, same uuids); the daemon fetching them through the remote API is covered in
test_remote_daemon.py.
"""
import json
import uuid

import jwt
import pytest
import websockets

from roost.demo.definition import demo_definition

from ..harness import TOKEN, Client

pytestmark = pytest.mark.asyncio

OTHER_TOKEN = "second-node-token-" + "fedcba9876543210" * 3


def register(panel, node, name: str, *, token_id: str = "tid", token: str = TOKEN):
    return panel.store.add_node(name, node.url, token_id=token_id, token=token)


def place(panel, node, server_uuid: str, *, owner: str, node_name: str, name: str = "Demo server"):
    """The same definition on the daemon (file) and in the token service (store)."""
    node.add_server(uuid=server_uuid, name=name)
    return panel.store.create_server(demo_definition(server_uuid, name=name), owner=owner, node=node_name)


async def ws_token(panel, key, server_ref) -> dict:
    status, body = await panel.api("GET", f"/servers/{server_ref}/websocket", key)
    assert status == 200, body
    return body["data"]


async def connect(data: dict) -> Client:
    """Connect to the socket URL the client API gave, and authenticate with its token."""
    c = Client(await websockets.connect(data["socket"], max_size=None))
    await c.send("auth", data["token"])
    await c.expect(lambda e: e["event"] == "auth success")
    status = await c.expect(lambda e: e["event"] == "status")
    if status["args"] == ["offline"]:
        await c.expect(lambda e: e["event"] == "stats")
    return c


def claims_of(token: str, secret: str = TOKEN) -> dict:
    return jwt.decode(token, secret, algorithms=["HS256"], options={"verify_aud": False})


async def test_public_path_with_token_renewal(make_panel, make_node):
    panel = await make_panel(token_ttl_s=8)
    node = make_node({"roost": {"websocket": {"expiring_notice_s": 5, "expired_grace_s": 30}}})
    register(panel, node, "n1")
    panel.store.create_user("alice")
    server = place(panel, node, str(uuid.uuid4()), owner="alice", node_name="n1")
    key = panel.store.create_api_key("alice")[1]
    node.start()

    status, body = await panel.api("GET", "", key)
    assert status == 200
    (listed,) = body["data"]
    identifier = listed["attributes"]["identifier"]
    assert identifier == server.identifier
    data = await ws_token(panel, key, identifier)
    assert data["socket"] == node.ws_url(server.uuid)
    c = await connect(data)
    try:
        # power through the client API; the socket sees it
        status, _ = await panel.api("POST", f"/servers/{identifier}/power", key, json_body={"signal": "start"})
        assert status == 204
        await c.expect_status("running", 15)
        status, _ = await panel.api("POST", f"/servers/{identifier}/command", key, json_body={"command": "say via api"})
        assert status == 204
        await c.expect_console("via api")
        await c.expect(lambda e: e["event"] == "stats" and json.loads(e["args"][0])["state"] == "running")
        status, body = await panel.api("GET", f"/servers/{identifier}/resources", key)
        assert status == 200 and body["attributes"]["current_state"] == "running"
        assert body["attributes"]["resources"]["uptime"] >= 0
        # heartbeating: `token expiring`, a fresh token from the client API, re-auth, keep streaming
        if not any(e["event"] == "token expiring" for e in c.events):
            await c.expect(lambda e: e["event"] == "token expiring", timeout=6)
        assert not any(e["event"] == "token expired" for e in c.events)
        fresh = await ws_token(panel, key, identifier)
        assert fresh["token"] != data["token"]
        await c.send("auth", fresh["token"])
        await c.expect(lambda e: e["event"] == "auth success")
        await c.send("send command", "say after renewal")
        await c.expect_console("after renewal")
        status, _ = await panel.api("POST", f"/servers/{identifier}/power", key, json_body={"signal": "stop"})
        assert status == 204
        await c.expect_status("offline", 15)
        # a command to the stopped server: the node's 502 comes through as the panel's
        status, body = await panel.api("POST", f"/servers/{identifier}/command", key, json_body={"command": "say x"})
        assert status == 502 and body["errors"][0]["detail"] == "Server must be online in order to send commands."
        assert not any(e["event"] in ("jwt error", "token expired") for e in c.events)
    finally:
        await c.close()


async def test_revocation_on_a_live_socket(make_panel, make_node):
    panel = await make_panel()
    node = make_node()
    register(panel, node, "n1")
    panel.store.create_user("owner")
    bob = panel.store.create_user("bob")
    server = place(panel, node, str(uuid.uuid4()), owner="owner", node_name="n1")
    panel.store.add_subuser(server.identifier, "bob", ["control.console", "control.start"])
    key = panel.store.create_api_key("bob")[1]
    node.start()

    first = await ws_token(panel, key, server.identifier)
    assert claims_of(first["token"])["permissions"] == ["websocket.connect", "control.console", "control.start"]
    c = await connect(first)
    watcher = await node.client(server.uuid)  # someone else's socket is not affected
    try:
        result = await panel.service.change_subuser(server.identifier, "bob", ["control.stop"])
        assert result.nodes_ok, [o.describe() for o in result.nodes]
        err = await c.expect(lambda e: e["event"] == "jwt error", timeout=5)
        assert err["args"] == ["jwt: created too far in past (denylist)"]
        # a fresh token works at once on the same socket, with the new permissions
        fresh = await ws_token(panel, key, server.identifier)
        assert claims_of(fresh["token"])["permissions"] == ["websocket.connect", "control.stop"]
        assert claims_of(fresh["token"])["iat"] >= claims_of(first["token"])["iat"]
        await c.send("auth", fresh["token"])
        await c.expect(lambda e: e["event"] == "auth success")
        # the new permissions are in force: start is dropped silently, console too
        await c.send("set state", "start")
        await c.send("send command", "say nope")
        quiet = await c.quiet(1.0)
        assert not any(e["event"] == "status" and e["args"] == ["starting"] for e in quiet), quiet
        # a fresh connection with the fresh token works as well
        c2 = await connect(fresh)
        await c2.close()
        assert not any(e["event"] == "jwt error" for e in watcher.events)
        # removal: the socket is revoked again and the user loses access
        result = await panel.service.remove_subuser(server.identifier, "bob")
        assert result.nodes_ok
        err = await c.expect(lambda e: e["event"] == "jwt error", timeout=5)
        assert err["args"] == ["jwt: created too far in past (denylist)"]
        status, _ = await panel.api("GET", f"/servers/{server.identifier}/websocket", key)
        assert status == 404
    finally:
        await c.close()
        await watcher.close()


async def test_back_to_back_revocations_each_fresh_token_survives(make_panel, make_node):
    """Repeated change → fresh token → auth, so some land in the same second as a deny. (A
    new socket each round: the daemon allows 2 `auth` per socket per 5 s.)"""
    panel = await make_panel()
    node = make_node()
    register(panel, node, "n1")
    panel.store.create_user("owner")
    panel.store.create_user("bob")
    server = place(panel, node, str(uuid.uuid4()), owner="owner", node_name="n1")
    panel.store.add_subuser(server.identifier, "bob", ["control.console"])
    key = panel.store.create_api_key("bob")[1]
    node.start()
    c = await connect(await ws_token(panel, key, server.identifier))
    try:
        for perms in (["control.start"], ["control.stop"], ["control.restart"], ["control.console"]):
            await panel.service.change_subuser(server.identifier, "bob", perms)
            ev = await c.expect(lambda e: e["event"] == "jwt error", timeout=5)
            assert ev["args"] == ["jwt: created too far in past (denylist)"]
            fresh = await ws_token(panel, key, server.identifier)
            assert claims_of(fresh["token"])["permissions"] == ["websocket.connect", *perms]
            nxt = Client(await websockets.connect(fresh["socket"]))
            await nxt.send("auth", fresh["token"])
            ev = await nxt.expect(lambda e: e["event"] in ("auth success", "jwt error"), timeout=5)
            assert ev == {"event": "auth success"}, ev
            await c.close()
            c = nxt
    finally:
        await c.close()


async def test_two_nodes_behind_one_token_service(make_panel, make_node):
    panel = await make_panel()
    a = make_node()
    b = make_node({"token_id": "tid-b", "token": OTHER_TOKEN})
    register(panel, a, "alpha")
    register(panel, b, "beta", token_id="tid-b", token=OTHER_TOKEN)
    panel.store.create_user("alice")
    on_a = place(panel, a, str(uuid.uuid4()), owner="alice", node_name="alpha", name="on alpha")
    on_b = place(panel, b, str(uuid.uuid4()), owner="alice", node_name="beta", name="on beta")
    key = panel.store.create_api_key("alice")[1]
    a.start()
    b.start()

    _, body = await panel.api("GET", "", key)
    assert {d["attributes"]["node"] for d in body["data"]} == {"alpha", "beta"}
    da = await ws_token(panel, key, on_a.identifier)
    db = await ws_token(panel, key, on_b.identifier)
    assert da["socket"] == a.ws_url(on_a.uuid) and db["socket"] == b.ws_url(on_b.uuid)
    assert claims_of(db["token"], OTHER_TOKEN)["aud"] == [b.url]
    with pytest.raises(jwt.InvalidSignatureError):
        claims_of(db["token"], TOKEN)  # signed with its own node's token
    ca, cb = await connect(da), await connect(db)
    try:
        # node API calls go to the server's own node
        status, _ = await panel.api("POST", f"/servers/{on_b.identifier}/power", key, json_body={"signal": "start"})
        assert status == 204
        await cb.expect_status("running", 15)
        assert not any(e["event"] == "status" and e["args"] != ["offline"] for e in await ca.quiet(0.5))
        status, body = await panel.api("GET", f"/servers/{on_a.identifier}/resources", key)
        assert body["attributes"]["current_state"] == "offline"
        status, body = await panel.api("GET", f"/servers/{on_b.identifier}/resources", key)
        assert body["attributes"]["current_state"] == "running"
        # a token for one node is refused by the other
        wrong = Client(await websockets.connect(b.ws_url(on_b.uuid)))
        await wrong.send("auth", da["token"])
        ev = await wrong.expect(lambda e: e["event"] == "jwt error")
        assert ev["args"] == ["jwt: HMAC verification failed"]
        await wrong.close()
        status, _ = await panel.api("POST", f"/servers/{on_b.identifier}/power", key, json_body={"signal": "kill"})
        assert status == 204
        await cb.expect_status("offline", 15)
    finally:
        await ca.close()
        await cb.close()


async def test_suspend_reaches_the_node_and_the_client_api(make_panel, make_node):
    panel = await make_panel()
    node = make_node()
    register(panel, node, "n1")
    panel.store.create_user("alice")
    server = place(panel, node, str(uuid.uuid4()), owner="alice", node_name="n1")
    key = panel.store.create_api_key("alice")[1]
    node.start()
    result = await panel.service.suspend_server(server.identifier)
    (outcome,) = result.nodes
    assert outcome.action == "sync"  # the node was asked; with a directory source it re-reads its file
    status, body = await panel.api("GET", f"/servers/{server.identifier}/websocket", key)
    assert status == 409 and body["errors"][0]["code"] == "ServerStateConflictException"
    await panel.service.unsuspend_server(server.identifier)
    status, _ = await panel.api("GET", f"/servers/{server.identifier}/websocket", key)
    assert status == 200
