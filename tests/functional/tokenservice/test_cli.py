"""`roost user|key|server|subuser|node` as a script would use them: subprocesses with --json,
on the same store a running token service reads, telling a (fake) node what it must know."""
import asyncio
import json
import sys
import uuid

import pytest
import yaml

from roost.demo.definition import demo_definition
from roost.tokenservice.issuer import websocket_jti

pytestmark = pytest.mark.asyncio


async def roost(home, *args, json_out: bool = True) -> tuple[int, object, str]:
    argv = [sys.executable, "-m", "roost", *args, "--home", str(home)]
    if json_out:
        argv.append("--json")
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    text = out.decode()
    doc = json.loads(text) if json_out and text.strip() else text
    return proc.returncode, doc, err.decode()


async def test_cli_end_to_end(panel, fake_node, tmp_path):
    home = panel.home
    node = await fake_node()
    rc, alice, _ = await roost(home, "user", "create", "alice", "--admin", "--email", "alice@example.com")
    assert rc == 0 and alice["admin"] is True and alice["email"] == "alice@example.com"
    rc, bob, _ = await roost(home, "user", "create", "bob", "--first-name", "Bob")
    assert rc == 0 and bob["first_name"] == "Bob"
    rc, users, _ = await roost(home, "user", "list")
    assert [u["username"] for u in users] == ["alice", "bob"]

    rc, n1, _ = await roost(home, "node", "add", "n1", "--url", node.url, "--token-id", "tid", "--token", node.token)
    assert rc == 0 and n1["url"] == node.url and n1["token"] == node.token
    rc, nodes, _ = await roost(home, "node", "list")
    assert nodes[0]["name"] == "n1" and "token" not in nodes[0]

    sid = str(uuid.uuid4())
    definition = tmp_path / "demo.yml"
    definition.write_text(yaml.safe_dump(demo_definition(sid, name="From the CLI")))
    rc, server, _ = await roost(home, "server", "create", "--definition", str(definition))
    assert rc == 0, server
    assert server["uuid"] == sid and server["identifier"] == sid[:8] and server["owner_id"] == alice["id"]
    assert server["nodes"] == [{"node": "n1", "action": "create", "ok": True, "error": None, "consequence": None}]
    assert node.posts("/api/servers") == [{"uuid": sid, "start_on_completion": False}]
    rc, listed, _ = await roost(home, "server", "list")
    assert [s["identifier"] for s in listed] == [sid[:8]]

    rc, key, _ = await roost(home, "key", "create", "bob", "--memo", "ci")
    assert rc == 0 and key["key"].startswith("ptlc_") and len(key["key"]) == 48 and key["memo"] == "ci"
    rc, keys, _ = await roost(home, "key", "list")
    assert keys[0]["identifier"] == key["key"][:16] and key["key"] not in json.dumps(keys)

    rc, sub, _ = await roost(home, "subuser", "add", sid[:8], "bob", "--permissions", "control.console")
    assert rc == 0 and sub["permissions"] == ["websocket.connect", "control.console"]
    # the running service sees it at once (same store)
    status, body = await panel.api("GET", "", key["key"])
    assert status == 200 and [d["attributes"]["uuid"] for d in body["data"]] == [sid]

    rc, sub, _ = await roost(home, "subuser", "change", sid[:8], "bob", "--permissions", "control.start,control.stop")
    assert rc == 0 and sub["permissions"] == ["websocket.connect", "control.start", "control.stop"]
    assert node.posts(f"/api/servers/{sid}/ws/deny") == [{"jtis": [websocket_jti(bob["id"], sid)]}]
    assert all(auth == f"Bearer {node.token}" for _, _, _, auth in node.calls)

    rc, s, _ = await roost(home, "server", "suspend", sid[:8])
    assert rc == 0 and s["suspended"] is True and node.posts(f"/api/servers/{sid}/sync") == [None]
    status, _ = await panel.api("GET", f"/servers/{sid[:8]}/websocket", key["key"])
    assert status == 409
    rc, s, _ = await roost(home, "server", "unsuspend", sid[:8])
    assert rc == 0 and s["suspended"] is False

    rc, revoked, _ = await roost(home, "key", "revoke", key["key"][:16])
    assert rc == 0 and revoked["revoked"] is True
    status, _ = await panel.api("GET", "", key["key"])
    assert status == 401

    rc, gone, _ = await roost(home, "subuser", "remove", sid[:8], "bob")
    assert rc == 0 and gone["removed"] is True and len(node.posts("/ws/deny")) == 2

    rc, deleted, _ = await roost(home, "server", "delete", sid[:8])
    assert rc == 0 and deleted["deleted"]["uuid"] == sid
    assert ("DELETE", f"/api/servers/{sid}") in [(m, p) for m, p, _, _ in node.calls]
    rc, listed, _ = await roost(home, "server", "list")
    assert listed == []


async def test_cli_reports_a_node_it_could_not_tell(panel, fake_node, tmp_path):
    home = panel.home
    node = await fake_node()
    st = panel.store
    st.create_user("alice", admin=True)
    st.create_user("bob")
    st.add_node("n1", node.url, token_id="tid", token=node.token)
    server = st.create_server(demo_definition(str(uuid.uuid4())), owner="alice")
    st.add_subuser(server.identifier, "bob", ["control.console"])
    await node.stop()  # the node is down

    rc, doc, err = await roost(home, "subuser", "change", server.identifier, "bob", "--permissions", "control.stop")
    assert rc == 3
    assert doc["permissions"] == ["websocket.connect", "control.stop"]
    (outcome,) = doc["nodes"]
    assert outcome["ok"] is False and outcome["action"] == "ws/deny" and "until their token expires" in outcome["consequence"]
    assert st.list_subusers(server.identifier)[0][0].permissions == ["websocket.connect", "control.stop"]  # stands
    # the human form says so too
    rc, out, err = await roost(home, "server", "suspend", server.identifier, json_out=False)
    assert rc == 3 and "sync FAILED" in err and "saved in the store all the same" in err
    assert st.find_server(server.identifier).suspended


async def test_cli_refusals_change_nothing(panel, tmp_path):
    home = panel.home
    st = panel.store
    st.create_user("alice", admin=True)
    st.add_node("n1", "http://127.0.0.1:9", token_id="tid", token="t" * 64)
    st.create_server(demo_definition(str(uuid.uuid4())), owner="alice")
    rc, doc, err = await roost(home, "user", "delete", "alice")
    assert rc == 1 and "owns servers" in doc["error"] and "owns servers" in err
    bad = tmp_path / "bad.yml"
    bad.write_text(yaml.safe_dump({"settings": {"uuid": "nope"}}))
    rc, doc, _ = await roost(home, "server", "create", "--definition", str(bad))
    assert rc == 1 and "uuid" in doc["error"]
    rc, doc, _ = await roost(home, "server", "create", "--definition", str(tmp_path / "missing.yml"))
    assert rc == 1
    rc, doc, _ = await roost(home, "subuser", "add", st.list_servers()[0].identifier, "alice", "--permissions", "*")
    assert rc == 1
    rc, doc, _ = await roost(home, "node", "remove", "n1")
    assert rc == 1 and "still has" in doc["error"]
    assert len(st.list_servers()) == 1 and len(st.list_users()) == 1 and st.list_subusers() == []
    rc, doc, _ = await roost(tmp_path / "no-such-home", "user", "list")
    assert rc == 1 and "no token service store" in doc["error"]


async def test_cli_tables(panel, tmp_path):
    rc, _, _ = await roost(panel.home, "user", "create", "tabby")
    rc, out, _ = await roost(panel.home, "user", "list", json_out=False)
    assert rc == 0 and "tabby" in out and "username" in out
    rc, out, _ = await roost(panel.home, "key", "create", "tabby", json_out=False)
    assert rc == 0 and "shown once" in out and "ptlc_" in out
