"""The token service's SQLite store: schema, users, keys, nodes, servers, subusers, revocation."""
import json
import os
import sqlite3
import stat
import uuid

import pytest

from roost.demo.definition import demo_definition
from roost.tokenservice import credentials
from roost.tokenservice.store import (DB_FILENAME, SCHEMA_VERSION, Conflict, Invalid, NotFound, Store,
                                      parse_node_url)


@pytest.fixture
def store(tmp_path):
    return Store.open(tmp_path)


@pytest.fixture
def world(store):
    """alice (admin), bob, carol; two nodes; one server each for alice on n1 and bob on n2."""
    alice = store.create_user("alice", admin=True)
    bob = store.create_user("bob")
    carol = store.create_user("carol")
    n1 = store.add_node("n1", "http://127.0.0.1:8081", token_id="tid1", token="t" * 64)
    n2 = store.add_node("n2", "https://node2.example:443", token_id="tid2", token="u" * 64)
    s1 = store.create_server(demo_definition(str(uuid.uuid4())), owner="alice")
    s2 = store.create_server(demo_definition(str(uuid.uuid4()), name="Bob's"), owner="bob", node="n2")
    return dict(alice=alice, bob=bob, carol=carol, n1=n1, n2=n2, s1=s1, s2=s2)


def rows(store, table):
    con = sqlite3.connect(store.path)
    try:
        return con.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
    finally:
        con.close()


def test_schema_version_and_reopen(tmp_path):
    s = Store.open(tmp_path)
    assert s.schema_version() == SCHEMA_VERSION
    s.create_user("alice")
    again = Store.open(tmp_path)  # migrations are not re-run
    assert again.schema_version() == SCHEMA_VERSION
    assert [u.username for u in again.list_users()] == ["alice"]


def test_newer_schema_is_refused(tmp_path):
    s = Store.open(tmp_path)
    con = sqlite3.connect(s.path)
    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    con.close()
    with pytest.raises(Exception, match="newer"):
        Store.open(tmp_path)


def test_file_mode_is_0600(tmp_path):
    Store.open(tmp_path)
    mode = stat.S_IMODE(os.stat(tmp_path / DB_FILENAME).st_mode)
    assert mode == 0o600


def test_users(store):
    a = store.create_user("alice", "a@example.com", first_name="Al", last_name="Ice", admin=True)
    assert a.id == 1 and a.admin and a.email == "a@example.com" and uuid.UUID(a.uuid)
    b = store.create_user("bob")
    assert b.email == "bob@roost.local" and not b.admin
    for ref in (b.id, str(b.id), "bob", b.uuid, "bob@roost.local"):
        assert store.find_user(ref) == b
    with pytest.raises(Conflict):
        store.create_user("ALICE")  # usernames are case-insensitive
    with pytest.raises(Invalid):
        store.create_user("12345")
    with pytest.raises(Invalid):
        store.create_user("has space")
    with pytest.raises(NotFound):
        store.find_user("nobody")
    assert [u.username for u in store.list_users()] == ["alice", "bob"]


def test_delete_user_refused_while_owning(world, store):
    with pytest.raises(Conflict, match="owns"):
        store.delete_user("alice")
    store.add_subuser(world["s1"].identifier, "carol", ["control.console"])
    user, servers = store.delete_user("carol")
    assert user.username == "carol" and [s.id for s in servers] == [world["s1"].id]
    assert store.list_subusers() == []


def test_api_keys_are_hashed_and_checked(store):
    store.create_user("alice")
    record, key = store.create_api_key("alice", "laptop")
    assert key.startswith("ptlc_") and len(key) == 48
    assert record.identifier == key[:16] and len(record.identifier) == 16
    raw = store.path.read_bytes()
    assert key[16:].encode() not in raw  # the secret is not stored
    user, k = store.authenticate(key)
    assert user.username == "alice" and k.identifier == record.identifier
    assert store.authenticate(key[:-1] + ("A" if key[-1] != "A" else "B")) is None
    assert store.authenticate("ptlc_short") is None
    assert store.authenticate("") is None
    assert store.authenticate("x" * 48) is None
    assert store.list_api_keys("alice")[0].last_used_at is not None
    store.revoke_api_key(record.identifier)
    assert store.authenticate(key) is None
    assert store.list_api_keys()[0].revoked
    with pytest.raises(NotFound):
        store.revoke_api_key("ptlc_nonexisting")


def test_key_split():
    ident, secret = credentials.new_api_key()
    assert credentials.split_api_key(ident + secret) == (ident, secret)
    assert credentials.split_api_key("ptlc_" + "a" * 10 + "-" + "b" * 32) is None
    assert credentials.split_api_key("ptla_" + "a" * 43) is None


def test_nodes(store):
    n = store.add_node("n1", "http://10.0.0.5:8080")
    assert (n.scheme, n.host, n.port) == ("http", "10.0.0.5", 8080)
    assert len(n.token_id) == 16 and len(n.token) == 64
    assert n.socket_url("abc") == "ws://10.0.0.5:8080/api/servers/abc/ws"
    assert "token" not in n.public() and n.token not in repr(n)
    tls = store.add_node("n2", "https://node.example", token_id="x", token="y")
    assert tls.port == 8080 and tls.socket_url("u") == "wss://node.example:8080/api/servers/u/ws"
    with pytest.raises(Conflict):
        store.add_node("n1", "http://other:1")
    with pytest.raises(Conflict):
        store.add_node("n3", "http://other:1", token_id="x")
    assert store.authenticate_node("x", "y") == tls
    assert store.authenticate_node("x", "z") is None
    assert store.authenticate_node("nope", "y") is None
    moved = store.update_node("n2", url="https://node.example:9443", maintenance=True)
    assert moved.port == 9443 and moved.maintenance and moved.token == "y"
    assert store.remove_node("n2").name == "n2"
    assert [x.name for x in store.list_nodes()] == ["n1"]


@pytest.mark.parametrize("url", ["ftp://x:1", "http://", "http://x:1/path", "x:1", "http://x:99999"])
def test_bad_node_urls(url):
    with pytest.raises(Invalid):
        parse_node_url(url)


def test_server_create_and_placement(world, store):
    s1, s2 = world["s1"], world["s2"]
    assert s1.node_id == world["n1"].id  # default: the first node
    assert s2.node_id == world["n2"].id
    assert s1.identifier == s1.uuid[:8] and s1.name == "Demo server"
    assert store.find_server(s1.identifier) == s1 == store.find_server(s1.uuid) == store.find_server(s1.id)
    doc = s1.panel_definition()
    assert doc["settings"]["uuid"] == s1.uuid and doc["settings"]["meta"]["name"] == "Demo server"
    assert doc["process_configuration"]["stop"] == {"type": "command", "value": "stop"}
    with pytest.raises(Conflict):
        store.create_server(demo_definition(s1.uuid), owner="alice")
    with pytest.raises(Conflict):  # same identifier (first 8 characters)
        store.create_server(demo_definition(s1.uuid[:8] + "-0000-4000-8000-000000000000"), owner="alice")
    fresh = store.create_server({"settings": {"invocation": "./run"}}, owner="bob", name="gen")
    assert uuid.UUID(fresh.uuid) and fresh.name == "gen"


def test_bad_server_writes_change_nothing(world, store):
    before = rows(store, "servers")
    bad = demo_definition(str(uuid.uuid4()))
    bad["process_configuration"]["stop"]["type"] = "explode"
    with pytest.raises(Invalid):
        store.create_server(bad, owner="alice")
    with pytest.raises(NotFound):
        store.create_server(demo_definition(str(uuid.uuid4())), owner="nobody")
    with pytest.raises(NotFound):
        store.create_server(demo_definition(str(uuid.uuid4())), owner="alice", node="n9")
    with pytest.raises(Invalid):
        store.create_server(demo_definition("not-a-uuid"), owner="alice")
    assert rows(store, "servers") == before


def test_no_node_no_server(store):
    store.create_user("alice")
    with pytest.raises(Invalid, match="no node"):
        store.create_server(demo_definition(str(uuid.uuid4())), owner="alice")


def test_node_with_servers_cannot_be_removed(world, store):
    with pytest.raises(Conflict):
        store.remove_node("n1")


def test_suspend_status_and_definition(world, store):
    s1 = world["s1"]
    s, node = store.set_suspended(s1.identifier, True)
    assert s.suspended and node.name == "n1"
    assert s.panel_definition()["settings"]["suspended"] is True
    assert store.set_status(s1.id, "installing").status == "installing"
    with pytest.raises(Invalid):
        store.set_status(s1.id, "bogus")


def test_subusers(world, store):
    s1 = world["s1"]
    sub = store.add_subuser(s1.identifier, "bob", ["control.console", "control.console"])
    assert sub.permissions == ["websocket.connect", "control.console"]
    with pytest.raises(Conflict):
        store.add_subuser(s1.identifier, "bob", ["control.start"])
    with pytest.raises(Conflict):
        store.add_subuser(s1.identifier, "alice", ["control.start"])  # the owner
    for bad in (["*"], ["admin.websocket.errors"], ["control.fly"]):
        with pytest.raises(Invalid):
            store.add_subuser(s1.identifier, "carol", bad)
    assert len(store.list_subusers(s1.identifier)) == 1
    sub, server, user, node = store.change_subuser(s1.identifier, "bob", ["control.start"])
    assert sub.permissions == ["websocket.connect", "control.start"] and user.username == "bob"
    with pytest.raises(NotFound):
        store.change_subuser(s1.identifier, "carol", ["control.start"])
    store.remove_subuser(s1.identifier, "bob")
    with pytest.raises(NotFound):
        store.remove_subuser(s1.identifier, "bob")


def test_revocation_markers(world, store):
    s1, bob = world["s1"], world["bob"]
    store.add_subuser(s1.identifier, "bob", ["control.console"])
    access, rev = store.token_context(bob, s1.id)
    assert access is not None and rev.pending_since is None and rev.not_before == 0
    store.change_subuser(s1.identifier, "bob", ["control.start"], now=1000.25)
    access, rev = store.token_context(bob, s1.id)
    assert rev.pending_since == 1000.25 and access.subuser_permissions == ["websocket.connect", "control.start"]
    assert store.finish_revocation(bob.id, s1.id, completed_at=1000.5) == 1001.0
    _, rev = store.token_context(bob, s1.id)
    assert rev.pending_since is None and rev.not_before == 1001.0
    # not_before never goes back
    store.begin_revocation(bob.id, s1.id, now=900.0)
    store.finish_revocation(bob.id, s1.id, completed_at=900.0)
    assert store.token_context(bob, s1.id)[1].not_before == 1001.0


def test_visible_servers(world, store):
    alice, bob, carol = world["alice"], world["bob"], world["carol"]
    s1, s2 = world["s1"], world["s2"]
    store.add_subuser(s1.identifier, "carol", ["control.console"])

    def ids(user, **kw):
        items, total = store.visible_servers(user, **kw)
        return [s.id for s, _, _ in items], total

    assert ids(alice) == ([s1.id], 1)
    assert ids(alice, kind="admin") == ([s2.id], 1)
    assert ids(alice, kind="admin-all") == ([s1.id, s2.id], 2)
    assert ids(bob) == ([s2.id], 1)
    assert ids(bob, kind="admin") == ([], 0)
    assert ids(bob, kind="admin-all") == ([], 0)
    assert ids(carol) == ([s1.id], 1)
    assert ids(carol, kind="owner") == ([], 0)
    items, _ = store.visible_servers(carol)
    assert items[0][2] == ["websocket.connect", "control.console"]
    # paging
    more = [store.create_server(demo_definition(str(uuid.uuid4())), owner="bob") for _ in range(4)]
    assert ids(bob, page=1, per_page=2) == ([s2.id, more[0].id], 5)
    assert ids(bob, page=3, per_page=2) == ([more[3].id], 5)
    assert ids(bob, page=4, per_page=2) == ([], 5)


def test_access(world, store):
    alice, bob, carol, s1, s2 = (world[k] for k in ("alice", "bob", "carol", "s1", "s2"))
    assert store.access(bob, s1.identifier) is None  # not his
    assert store.access(alice, s2.uuid).server == s2  # admin sees all
    assert store.access(bob, s2.identifier).node.name == "n2"
    assert store.access(bob, "nope") is None
    assert store.access(bob, str(s2.id)) is None  # the client API takes identifier or uuid only
    store.add_subuser(s2.identifier, "carol", ["control.start"])
    assert store.access(carol, s2.uuid.upper()).subuser_permissions == ["websocket.connect", "control.start"]


def test_remote_side(world, store):
    n1, s1 = world["n1"], world["s1"]
    extra = [store.create_server(demo_definition(str(uuid.uuid4())), owner="alice", node="n1") for _ in range(3)]
    page, total = store.node_servers(n1.id, page=2, per_page=3)
    assert total == 4 and [s.id for s in page] == [extra[2].id]
    assert store.node_server(n1.id, s1.uuid) == s1
    assert store.node_server(world["n2"].id, s1.uuid) is None
    store.set_status(s1.id, "installing")
    store.set_status(extra[0].id, "restoring_backup")
    store.set_status(extra[1].id, "install_failed")
    assert store.reset_node_states(n1.id) == 2
    assert store.find_server(extra[1].id).status == "install_failed"
    assert store.record_install(n1.id, s1.uuid, successful=False, reinstall=False).status == "install_failed"
    assert store.record_install(n1.id, s1.uuid, successful=False, reinstall=True).status == "reinstall_failed"
    assert store.record_install(n1.id, s1.uuid, successful=True, reinstall=False).status is None
    assert store.record_install(world["n2"].id, s1.uuid, successful=True, reinstall=False) is None
    store.add_activity(n1.id, [{"server": s1.uuid, "event": "server:console.command", "timestamp": "t",
                                "metadata": {"command": "say hi"}}])
    assert json.loads(store.list_activity()[0]["metadata"]) == {"command": "say hi"}


def test_delete_server_cascades(world, store):
    s1 = world["s1"]
    store.add_subuser(s1.identifier, "bob", ["control.console"])
    store.change_subuser(s1.identifier, "bob", ["control.start"])
    server, node = store.delete_server(s1.identifier)
    assert server == s1 and node.name == "n1"
    assert rows(store, "subusers") == 0 and rows(store, "revocations") == 0
    with pytest.raises(NotFound):
        store.find_server(s1.identifier)


def test_concurrent_writers_from_threads(store):
    import threading

    store.create_user("alice")
    errors = []

    def make(i):
        try:
            for j in range(10):
                store.create_api_key("alice", f"{i}-{j}")
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=make, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(store.list_api_keys()) == 40
