"""Client API documents and request validation (pure)."""
import uuid

import pytest

from roost.demo.definition import demo_definition
from roost.tokenservice import errors as E
from roost.tokenservice import views
from roost.tokenservice.nodeclient import NodeError
from roost.tokenservice.store import Node, ServerRecord, User

USER = User(id=3, uuid=str(uuid.uuid4()), username="bob", email="b@x", first_name="B", last_name="Ob", language="en",
            admin=False, created_at="2024-01-01T00:00:00+00:00")
NODE = Node(id=1, uuid=str(uuid.uuid4()), name="n1", scheme="http", host="10.1.2.3", port=8080, sftp_port=2022,
            token_id="tid", token="secret")


def server(**over):
    sid = str(uuid.uuid4())
    d = demo_definition(sid, name="Demo")
    d["settings"]["environment"]["SECRET_VAR"] = "hunter2"
    d["settings"]["invocation"] = "run --name {{SERVER_NAME}} --port {{SERVER_PORT}} --mem {{SERVER_MEMORY}} {{SECRET_VAR}}"
    fields = dict(id=7, uuid=sid, identifier=sid[:8], name="Demo", description="d", owner_id=3, node_id=1,
                  definition=d)
    fields.update(over)
    return ServerRecord(**fields)


SERVER_FIELDS = {"server_owner", "identifier", "internal_id", "uuid", "name", "node", "is_node_under_maintenance",
                 "sftp_details", "description", "limits", "invocation", "docker_image", "egg_features",
                 "feature_limits", "status", "is_suspended", "is_installing", "is_transferring", "relationships"}


def test_server_document():
    s = server()
    doc = views.server(s, NODE, USER, ["*"], with_meta=True)
    assert doc["object"] == "server"
    a = doc["attributes"]
    assert SERVER_FIELDS <= set(a)
    assert a["server_owner"] is True and a["identifier"] == s.uuid[:8] and a["internal_id"] == 7
    assert a["node"] == "n1" and a["sftp_details"] == {"ip": "10.1.2.3", "port": 2022}
    assert a["limits"] == {"memory": 256, "swap": 0, "disk": 1024, "io": 500, "cpu": 100, "threads": None,
                           "oom_disabled": False}
    assert a["feature_limits"] == {"databases": 0, "allocations": 0, "backups": 0}
    assert a["status"] is None and not a["is_suspended"] and not a["is_installing"]
    assert a["invocation"] == "run --name Demo --port 25565 --mem 256 hunter2"
    allocs = a["relationships"]["allocations"]
    assert allocs["object"] == "list"
    assert allocs["data"][0] == {"object": "allocation", "attributes": {
        "id": 1, "ip": "127.0.0.1", "ip_alias": None, "port": 25565, "notes": None, "is_default": True}}
    names = [v["attributes"]["env_variable"] for v in a["relationships"]["variables"]["data"]]
    assert "SECRET_VAR" in names
    assert doc["meta"] == {"is_server_owner": True, "user_permissions": ["*"]}


def test_subuser_without_startup_read_sees_no_values():
    s = server(owner_id=1)
    a = views.server(s, NODE, USER, ["websocket.connect", "control.console"], with_meta=True)["attributes"]
    assert a["server_owner"] is False
    assert a["invocation"] == "run --name [hidden] --port 25565 --mem 256 [hidden]"
    assert a["relationships"]["variables"]["data"] == []
    a = views.server(s, NODE, USER, ["websocket.connect", "startup.read"], with_meta=False)["attributes"]
    assert "hunter2" in a["invocation"]


def test_status_fields():
    a = views.server_attributes(server(suspended=True, status="installing"), NODE, USER, ["*"])
    assert a["status"] == "suspended" and a["is_suspended"] and a["is_installing"]
    a = views.server_attributes(server(status="install_failed", transferring=True), NODE, USER, ["*"])
    assert a["status"] == "install_failed" and a["is_installing"] and a["is_transferring"]


def test_account():
    assert views.account(USER) == {"object": "user", "attributes": {
        "id": 3, "admin": False, "username": "bob", "email": "b@x", "first_name": "B", "last_name": "Ob",
        "language": "en"}}


def test_pagination():
    p = views.pagination(total=5, count=2, per_page=2, page=2, url="http://p/api/client", query={"per_page": "2"})
    assert p["total"] == 5 and p["count"] == 2 and p["total_pages"] == 3 and p["current_page"] == 2
    assert p["links"] == {"previous": "http://p/api/client?per_page=2&page=1",
                          "next": "http://p/api/client?per_page=2&page=3"}
    empty = views.pagination(total=0, count=0, per_page=50, page=1, url="u", query={})
    assert empty["total_pages"] == 1 and empty["links"] == {}


def test_list_query():
    assert views.list_query({}) == (None, 1, 50)
    assert views.list_query({"per_page": "500", "page": "x", "type": "owner"}) == ("owner", 1, 100)
    with pytest.raises(E.ValidationFailed) as e:
        views.list_query({"per_page": "abc", "type": "mine"})
    doc = e.value.document()
    assert [(x["meta"]["source_field"], x["meta"]["rule"]) for x in doc["errors"]] == [("type", "in"),
                                                                                      ("per_page", "integer")]
    assert all(x["code"] == "ValidationException" and x["status"] == "422" for x in doc["errors"])
    with pytest.raises(E.ValidationFailed):
        views.list_query({"per_page": "0"})


@pytest.mark.parametrize("body,rule", [({}, "required"), ({"signal": ""}, "required"), ({"signal": 5}, "string"),
                                       ({"signal": "explode"}, "in"), ({"signal": ["start"]}, "string")])
def test_power_validation(body, rule):
    with pytest.raises(E.ValidationFailed) as e:
        views.power_signal(body)
    (entry,) = e.value.document()["errors"]
    assert entry["meta"] == {"source_field": "signal", "rule": rule}


def test_command_validation():
    assert views.command_line({"command": "say hi"}) == "say hi"
    for body in ({}, {"command": ""}, {"command": "   "}, {"command": 3}):
        with pytest.raises(E.ValidationFailed):
            views.command_line(body)


def test_install_report_and_activity():
    assert views.install_report({"successful": True}) == (True, False)
    assert views.install_report({"successful": "0", "reinstall": 1}) == (False, True)
    with pytest.raises(E.ValidationFailed) as e:
        views.install_report({"reinstall": "maybe"})
    assert [x["meta"]["source_field"] for x in e.value.document()["errors"]] == ["successful", "reinstall"]
    ok = views.activity_batch({"data": [{"server": "s", "event": "e", "timestamp": "t", "metadata": {}}]})
    assert ok[0]["server"] == "s"
    with pytest.raises(E.ValidationFailed) as e:
        views.activity_batch({"data": [{"event": 3}]})
    assert {x["meta"]["source_field"] for x in e.value.document()["errors"]} == \
        {"data.0.server", "data.0.event", "data.0.timestamp"}


def test_stats():
    doc = views.stats({"state": "running", "is_suspended": False, "utilization": {
        "memory_bytes": 10, "cpu_absolute": 1.5, "disk_bytes": 3, "network": {"rx_bytes": 4, "tx_bytes": 5},
        "uptime": 6000}})
    assert doc == {"object": "stats", "attributes": {"current_state": "running", "is_suspended": False, "resources": {
        "memory_bytes": 10, "cpu_absolute": 1.5, "disk_bytes": 3, "network_rx_bytes": 4, "network_tx_bytes": 5,
        "uptime": 6000}}}


def test_daemon_errors():
    assert E.daemon_error(NodeError("x")).status == 504
    e = E.daemon_error(NodeError("x", status=409, error="server is suspended", request_id="r1"))
    assert e.status == 409 and e.detail == "An error occurred on the remote host: server is suspended. (request id: r1)"
    assert E.daemon_error(NodeError("x", status=500)).document()["errors"][0]["code"] == "DaemonConnectionException"
