"""The client API over real HTTP and a real SQLite store, against a scriptable fake node:
envelopes, pagination, every error case (and that nothing changed), the permission matrix."""
import uuid

import jwt
import pytest

from roost.demo.definition import demo_definition
from roost.tokenservice.issuer import ADMIN_PERMISSIONS, websocket_jti

pytestmark = pytest.mark.asyncio


@pytest.fixture
async def world(panel, fake_node):
    """owner alice (key), admin root (key), bob with a server of his own, carol a subuser of
    alice's server; one fake node."""
    node = await fake_node()
    st = panel.store
    st.add_node("n1", node.url, token_id="tid1", token=node.token)
    alice, root, bob, carol = (st.create_user("alice"), st.create_user("root", admin=True), st.create_user("bob"),
                               st.create_user("carol"))
    server = st.create_server(demo_definition(str(uuid.uuid4()), name="Alice's"), owner="alice")
    bobs = st.create_server(demo_definition(str(uuid.uuid4()), name="Bob's"), owner="bob")
    st.add_subuser(server.identifier, "carol", ["control.console"])
    keys = {name: st.create_api_key(name)[1] for name in ("alice", "root", "bob", "carol")}
    return dict(node=node, alice=alice, root=root, bob=bob, carol=carol, server=server, bobs=bobs, keys=keys)


def err(body, status, code):
    assert isinstance(body, dict) and list(body) == ["errors"], body
    (entry,) = body["errors"]
    assert entry["status"] == str(status) and entry["code"] == code, entry
    assert isinstance(entry["detail"], str) and entry["detail"]
    return entry


async def test_account(panel, world):
    status, body = await panel.api("GET", "/account", world["keys"]["alice"])
    assert status == 200
    assert body == {"object": "user", "attributes": {"id": world["alice"].id, "admin": False, "username": "alice",
                                                     "email": "alice@roost.local", "first_name": "", "last_name": "",
                                                     "language": "en"}}


async def test_list_and_server_view(panel, world):
    s = world["server"]
    status, body = await panel.api("GET", "", world["keys"]["alice"])
    assert status == 200 and body["object"] == "list"
    assert [d["attributes"]["identifier"] for d in body["data"]] == [s.identifier]
    assert body["meta"]["pagination"] == {"total": 1, "count": 1, "per_page": 50, "current_page": 1,
                                          "total_pages": 1, "links": {}}
    # the subuser sees it too, not as owner
    status, body = await panel.api("GET", "/", world["keys"]["carol"])
    assert [d["attributes"]["server_owner"] for d in body["data"]] == [False]
    for ref in (s.identifier, s.uuid):
        status, body = await panel.api("GET", f"/servers/{ref}", world["keys"]["alice"])
        assert status == 200 and body["object"] == "server"
        assert body["attributes"]["uuid"] == s.uuid and body["attributes"]["node"] == "n1"
        assert body["meta"] == {"is_server_owner": True, "user_permissions": ["*"]}
    status, body = await panel.api("GET", f"/servers/{s.identifier}", world["keys"]["carol"])
    assert body["meta"] == {"is_server_owner": False, "user_permissions": ["websocket.connect", "control.console"]}
    status, body = await panel.api("GET", f"/servers/{s.identifier}", world["keys"]["root"])
    assert body["meta"] == {"is_server_owner": False, "user_permissions": ADMIN_PERMISSIONS}


async def test_list_types_for_admins(panel, world):
    root = world["keys"]["root"]
    _, body = await panel.api("GET", "", root)
    assert body["data"] == []
    _, body = await panel.api("GET", "?type=admin", root)
    assert {d["attributes"]["identifier"] for d in body["data"]} == {world["server"].identifier, world["bobs"].identifier}
    _, body = await panel.api("GET", "?type=admin-all", root)
    assert body["meta"]["pagination"]["total"] == 2
    _, body = await panel.api("GET", "?type=admin-all", world["keys"]["bob"])  # not an admin: nothing
    assert body["data"] == [] and body["meta"]["pagination"]["total"] == 0
    _, body = await panel.api("GET", "?type=owner", world["keys"]["carol"])
    assert body["data"] == []


async def test_pagination(panel, world):
    for _ in range(4):
        panel.store.create_server(demo_definition(str(uuid.uuid4())), owner="bob")
    key = world["keys"]["bob"]
    seen = []
    page, pages = 1, None
    while True:
        status, body = await panel.api("GET", f"?per_page=2&page={page}", key)
        assert status == 200
        p = body["meta"]["pagination"]
        assert p["per_page"] == 2 and p["total"] == 5 and p["total_pages"] == 3 and p["current_page"] == page
        assert p["count"] == len(body["data"])
        seen += [d["attributes"]["uuid"] for d in body["data"]]
        if "next" not in p["links"]:
            break
        assert p["links"]["next"].startswith(panel.url + "/api/client?") and f"page={page + 1}" in p["links"]["next"]
        page += 1
    assert page == 3 and len(seen) == len(set(seen)) == 5
    _, body = await panel.api("GET", "?per_page=1000", key)
    assert body["meta"]["pagination"]["per_page"] == 100
    _, body = await panel.api("GET", "?page=9", key)
    assert body["data"] == [] and body["meta"]["pagination"]["current_page"] == 9


@pytest.mark.parametrize("path,method", [("", "GET"), ("/account", "GET"), ("/servers/{s}", "GET"),
                                         ("/servers/{s}/websocket", "GET"), ("/servers/{s}/resources", "GET"),
                                         ("/servers/{s}/power", "POST"), ("/servers/{s}/command", "POST")])
async def test_401_for_missing_wrong_or_revoked_keys(panel, world, path, method):
    path = path.format(s=world["server"].identifier)
    record = panel.store.list_api_keys("alice")[0]
    good = world["keys"]["alice"]
    panel.store.revoke_api_key(record.identifier)
    bad_keys = [None, good, good[:-4] + "AAAA", "ptlc_" + "x" * 43, "garbage", "Basic abc"]
    for key in bad_keys:
        status, body = await panel.api(method, path, key, json_body={"signal": "start", "command": "x"})
        assert status == 401, (key, body)
        assert err(body, 401, "AuthenticationException")["detail"] == "Unauthenticated."
    assert world["node"].calls == []  # nothing reached the node


async def test_404_for_another_users_server(panel, world):
    bobs = world["bobs"]
    for key in ("alice", "carol"):
        for sub in ("", "/websocket", "/resources"):
            status, body = await panel.api("GET", f"/servers/{bobs.identifier}{sub}", world["keys"][key])
            assert status == 404
            err(body, 404, "NotFoundHttpException")
        for sub, body_ in (("/power", {"signal": "kill"}), ("/command", {"command": "stop"})):
            status, body = await panel.api("POST", f"/servers/{bobs.uuid}{sub}", world["keys"][key], json_body=body_)
            assert status == 404
    # the same answer as for a server that does not exist (no existence oracle)
    _, other = await panel.api("GET", f"/servers/{bobs.identifier}", world["keys"]["alice"])
    _, missing = await panel.api("GET", "/servers/deadbeef", world["keys"]["alice"])
    assert other == missing
    assert world["node"].calls == []


async def test_unknown_route_and_method(panel, world):
    status, body = await panel.api("GET", "/nothing/here", world["keys"]["alice"])
    assert status == 404
    err(body, 404, "NotFoundHttpException")
    status, body = await panel.api("DELETE", "/account", world["keys"]["alice"])
    assert status == 405
    err(body, 405, "MethodNotAllowedHttpException")


async def test_403_missing_permission_and_nothing_reaches_the_node(panel, world):
    s = world["server"]
    carol = world["keys"]["carol"]  # control.console only
    for signal in ("start", "stop", "restart", "kill"):
        status, body = await panel.api("POST", f"/servers/{s.identifier}/power", carol, json_body={"signal": signal})
        assert status == 403
        assert err(body, 403, "AccessDeniedHttpException")["detail"] == "This action is unauthorized."
    assert world["node"].posts("/power") == []
    status, _ = await panel.api("POST", f"/servers/{s.identifier}/command", carol, json_body={"command": "say hi"})
    assert status == 204
    assert world["node"].posts("/commands") == [{"commands": ["say hi"]}]


@pytest.mark.parametrize("granted", ["control.start", "control.stop", "control.restart", "control.console"])
async def test_permission_matrix(panel, world, granted):
    """Each control permission allows exactly its action (kill goes with control.stop)."""
    s = world["server"]
    panel.store.change_subuser(s.identifier, "carol", [granted])
    panel.store.finish_revocation(world["carol"].id, s.id, completed_at=0)
    carol = world["keys"]["carol"]
    allowed = set()
    for signal in ("start", "stop", "restart", "kill"):
        status, _ = await panel.api("POST", f"/servers/{s.identifier}/power", carol, json_body={"signal": signal})
        assert status in (204, 403)
        if status == 204:
            allowed.add(signal)
    status, _ = await panel.api("POST", f"/servers/{s.identifier}/command", carol, json_body={"command": "x"})
    if status == 204:
        allowed.add("command")
    expected = {"control.start": {"start"}, "control.stop": {"stop", "kill"}, "control.restart": {"restart"},
                "control.console": {"command"}}[granted]
    assert allowed == expected
    # exactly those reached the node, with the node's token
    sent = [b["action"] for b in world["node"].posts("/power")] + (["command"] if world["node"].posts("/commands") else [])
    assert set(sent) == expected
    assert all(auth == f"Bearer {world['node'].token}" for _, _, _, auth in world["node"].calls)
    # the websocket token carries the stored list plus websocket.connect, and `*` is absent
    status, body = await panel.api("GET", f"/servers/{s.identifier}/websocket", carol)
    claims = jwt.decode(body["data"]["token"], world["node"].token, algorithms=["HS256"], options={"verify_aud": False})
    assert claims["permissions"] == ["websocket.connect", granted]


async def test_owner_and_admin_may_do_everything(panel, world):
    s = world["server"]
    for who in ("alice", "root"):
        for signal in ("start", "stop", "restart", "kill"):
            status, _ = await panel.api("POST", f"/servers/{s.uuid}/power", world["keys"][who], json_body={"signal": signal})
            assert status == 204
    assert [b["action"] for b in world["node"].posts("/power")] == ["start", "stop", "restart", "kill"] * 2


async def test_websocket_token_claims(panel, world):
    s, node = world["server"], world["node"]
    status, body = await panel.api("GET", f"/servers/{s.identifier}/websocket", world["keys"]["alice"])
    assert status == 200 and list(body) == ["data"] and set(body["data"]) == {"token", "socket"}
    assert body["data"]["socket"] == f"ws://127.0.0.1:{node.port}/api/servers/{s.uuid}/ws"
    token = body["data"]["token"]
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    claims = jwt.decode(token, node.token, algorithms=["HS256"], options={"verify_aud": False})
    alice = world["alice"]
    assert claims["server_uuid"] == s.uuid and claims["user_uuid"] == alice.uuid and claims["user_id"] == alice.id
    assert claims["permissions"] == ["*"] and claims["scope"] == "websocket"
    assert claims["jti"] == websocket_jti(alice.id, s.uuid)
    assert claims["aud"] == [node.url] and claims["iss"] == panel.url
    assert all(isinstance(claims[k], int) for k in ("iat", "nbf", "exp"))
    assert claims["exp"] - claims["iat"] == 600 and claims["unique_id"]
    _, body = await panel.api("GET", f"/servers/{s.identifier}/websocket", world["keys"]["root"])
    root_claims = jwt.decode(body["data"]["token"], node.token, algorithms=["HS256"], options={"verify_aud": False})
    assert root_claims["permissions"] == ADMIN_PERMISSIONS


async def test_409_suspended_installing_and_what_stays_open(panel, world):
    s = world["server"]
    alice, root = world["keys"]["alice"], world["keys"]["root"]
    panel.store.set_suspended(s.identifier, True)
    for key in (alice, root):
        for path in ("/websocket", "/resources"):
            status, body = await panel.api("GET", f"/servers/{s.identifier}{path}", key)
            assert status == 409
            entry = err(body, 409, "ServerStateConflictException")
            assert entry["detail"] == "This server is currently suspended and the functionality requested is unavailable."
        for path, b in (("/power", {"signal": "start"}), ("/command", {"command": "x"})):
            status, body = await panel.api("POST", f"/servers/{s.identifier}{path}", key, json_body=b)
            assert status == 409
    status, body = await panel.api("GET", f"/servers/{s.identifier}", alice)  # the view stays open
    assert status == 200 and body["attributes"]["is_suspended"] and body["attributes"]["status"] == "suspended"
    panel.store.set_suspended(s.identifier, False)
    panel.store.set_status(s.identifier, "installing")
    status, body = await panel.api("GET", f"/servers/{s.identifier}/websocket", alice)
    assert status == 409 and "installation" in body["errors"][0]["detail"]
    status, body = await panel.api("POST", f"/servers/{s.identifier}/power", alice, json_body={"signal": "start"})
    assert status == 409
    status, _ = await panel.api("GET", f"/servers/{s.identifier}/websocket", root)  # admins may watch the install
    assert status == 200
    assert world["node"].calls == []


async def test_409_node_under_maintenance(panel, world):
    panel.store.update_node("n1", maintenance=True)
    status, body = await panel.api("POST", f"/servers/{world['server'].identifier}/command", world["keys"]["alice"],
                                   json_body={"command": "x"})
    assert status == 409 and "maintenance" in body["errors"][0]["detail"]
    _, body = await panel.api("GET", f"/servers/{world['server'].identifier}", world["keys"]["alice"])
    assert body["attributes"]["is_node_under_maintenance"] is True


async def test_422_one_entry_per_field_and_nothing_changes(panel, world):
    s, alice = world["server"], world["keys"]["alice"]
    cases = [
        ("POST", "/power", {}, [("signal", "required")]),
        ("POST", "/power", {"signal": "explode"}, [("signal", "in")]),
        ("POST", "/power", {"signal": 1}, [("signal", "string")]),
        ("POST", "/command", {}, [("command", "required")]),
        ("POST", "/command", {"command": ["a"]}, [("command", "string")]),
    ]
    for method, path, body_, expected in cases:
        status, body = await panel.api(method, f"/servers/{s.identifier}{path}", alice, json_body=body_)
        assert status == 422, body
        got = [(e["meta"]["source_field"], e["meta"]["rule"]) for e in body["errors"]]
        assert got == expected
        assert all(e["code"] == "ValidationException" and e["status"] == "422" for e in body["errors"])
    # not JSON, or not an object: the fields are missing
    status, body = await panel.api("POST", f"/servers/{s.identifier}/power", alice, data=b"{nope")
    assert status == 422 and body["errors"][0]["meta"]["source_field"] == "signal"
    status, body = await panel.api("POST", f"/servers/{s.identifier}/command", alice, json_body=["say"])
    assert status == 422
    # two bad query fields → two entries
    status, body = await panel.api("GET", "?per_page=zero&type=everything", alice)
    assert status == 422
    assert sorted(e["meta"]["source_field"] for e in body["errors"]) == ["per_page", "type"]
    assert world["node"].calls == []


async def test_resources_from_the_node(panel, world):
    node = world["node"]
    node.answer("GET", f"/api/servers/{world['server'].uuid}", 200, {
        "state": "running", "is_suspended": False,
        "utilization": {"memory_bytes": 1024, "cpu_absolute": 12.5, "disk_bytes": 99, "uptime": 5000,
                        "network": {"rx_bytes": 7, "tx_bytes": 8}, "state": "running"}})
    status, body = await panel.api("GET", f"/servers/{world['server'].identifier}/resources", world["keys"]["carol"])
    assert status == 200
    assert body == {"object": "stats", "attributes": {"current_state": "running", "is_suspended": False, "resources": {
        "memory_bytes": 1024, "cpu_absolute": 12.5, "disk_bytes": 99, "network_rx_bytes": 7, "network_tx_bytes": 8,
        "uptime": 5000}}}


async def test_command_to_an_offline_server_is_502(panel, world):
    world["node"].answer("POST", "/commands", 502, {"error": "Server must be online in order to send commands."})
    status, body = await panel.api("POST", f"/servers/{world['server'].identifier}/command", world["keys"]["alice"],
                                   json_body={"command": "say hi"})
    assert status == 502
    assert err(body, 502, "HttpException")["detail"] == "Server must be online in order to send commands."


async def test_node_errors(panel, world):
    world["node"].answer("POST", "/power", 409, {"error": "server is suspended"})
    status, body = await panel.api("POST", f"/servers/{world['server'].identifier}/power", world["keys"]["alice"],
                                   json_body={"signal": "start"})
    assert status == 409
    assert "server is suspended" in err(body, 409, "DaemonConnectionException")["detail"]
    await world["node"].stop()  # the node goes away
    status, body = await panel.api("GET", f"/servers/{world['server'].identifier}/resources", world["keys"]["alice"])
    assert status == 504
    err(body, 504, "DaemonConnectionException")


async def test_keys_never_in_logs(panel, world, caplog):
    caplog.set_level("DEBUG")
    key = world["keys"]["alice"]
    await panel.api("GET", "", key)
    await panel.api("GET", "", key[:-1] + "x")
    await panel.api("GET", f"/servers/{world['server'].identifier}/websocket", key)
    await world["node"].stop()
    await panel.api("GET", f"/servers/{world['server'].identifier}/resources", key)
    text = caplog.text
    assert key not in text and key[16:] not in text and world["node"].token not in text
