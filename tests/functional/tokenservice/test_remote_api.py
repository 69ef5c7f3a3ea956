"""The remote API the token service serves its nodes (http-api §2), over real HTTP."""
import uuid

import pytest

from roost.demo.definition import demo_definition
from roost.server.definition import ServerDefinition

pytestmark = pytest.mark.asyncio


@pytest.fixture
def world(panel):
    st = panel.store
    st.create_user("alice", admin=True)
    n1 = st.add_node("n1", "http://127.0.0.1:1", token_id="tid1", token="a" * 64)
    n2 = st.add_node("n2", "http://127.0.0.1:2", token_id="tid2", token="b" * 64)
    on1 = [st.create_server(demo_definition(str(uuid.uuid4()), name=f"s{i}"), owner="alice", node="n1")
           for i in range(7)]
    on2 = [st.create_server(demo_definition(str(uuid.uuid4())), owner="alice", node="n2")]
    return dict(n1=n1, n2=n2, on1=on1, on2=on2, auth1="tid1." + "a" * 64, auth2="tid2." + "b" * 64)


async def test_auth(panel, world):
    status, body = await panel.remote("GET", "/servers", None)
    assert status == 401 and body["errors"][0]["code"] == "HttpException"
    status, body = await panel.remote("GET", "/servers", "no-dot-here")
    assert status == 400 and body["errors"][0]["code"] == "BadRequestHttpException"
    for bad in ("tid1." + "b" * 64, "tid9." + "a" * 64, "tid1.", ".x", "tid1.a"):
        status, body = await panel.remote("GET", "/servers", bad)
        assert status in (400, 403), bad
        assert body["errors"][0]["code"] in ("AccessDeniedHttpException", "BadRequestHttpException")
    status, _ = await panel.remote("GET", "/servers", "tid1." + "b" * 64)
    assert status == 403
    # a client API key is not a node credential
    key = panel.store.create_api_key("alice")[1]
    status, _ = await panel.remote("GET", "/servers", key)
    assert status in (400, 403)
    # nor the other way round
    status, _ = await panel.api("GET", "", world["auth1"])
    assert status == 401


async def test_paging_lists_only_this_nodes_servers(panel, world):
    seen = []
    page = 1
    while True:
        status, body = await panel.remote("GET", f"/servers?page={page}&per_page=3", world["auth1"])
        assert status == 200
        meta = body["meta"]
        assert meta["current_page"] == page and meta["last_page"] == 3 and meta["per_page"] == 3 and meta["total"] == 7
        for item in body["data"]:
            assert set(item) >= {"uuid", "settings", "process_configuration"}
            assert item["settings"]["uuid"] == item["uuid"]
            ServerDefinition.model_validate(item)
            seen.append(item["uuid"])
        if page >= meta["last_page"]:
            break
        page += 1
    assert seen == [s.uuid for s in world["on1"]]
    status, body = await panel.remote("GET", "/servers", world["auth2"])
    assert [d["uuid"] for d in body["data"]] == [world["on2"][0].uuid]
    assert body["meta"]["per_page"] == 50


async def test_one_server(panel, world):
    s = world["on1"][0]
    status, body = await panel.remote("GET", f"/servers/{s.uuid}", world["auth1"])
    assert status == 200
    assert body["settings"]["uuid"] == s.uuid and body["settings"]["meta"]["name"] == "s0"
    assert body["settings"]["suspended"] is False
    assert body["process_configuration"]["startup"]["done"] == ["Done ("]
    status, body = await panel.remote("GET", f"/servers/{s.uuid}", world["auth2"])  # not on n2
    assert status == 404 and body["errors"][0]["code"] == "NotFoundHttpException"
    panel.store.set_suspended(s.uuid, True)
    _, body = await panel.remote("GET", f"/servers/{s.uuid}", world["auth1"])
    assert body["settings"]["suspended"] is True
    status, body = await panel.remote("GET", f"/servers/{s.uuid}/install", world["auth1"])
    assert status == 200 and set(body) == {"container_image", "entrypoint", "script"}


async def test_reset_and_install_reports(panel, world):
    a, b = world["on1"][0], world["on1"][1]
    st = panel.store
    st.set_status(a.id, "installing")
    st.set_status(b.id, "restoring_backup")
    st.set_status(world["on2"][0].id, "installing")
    status, _ = await panel.remote("POST", "/servers/reset", world["auth1"])
    assert status == 204
    assert st.find_server(a.id).status is None and st.find_server(b.id).status is None
    assert st.find_server(world["on2"][0].id).status == "installing"  # another node's: untouched
    status, _ = await panel.remote("POST", f"/servers/{a.uuid}/install", world["auth1"],
                                   json_body={"successful": False, "reinstall": False})
    assert status == 204 and st.find_server(a.id).status == "install_failed"
    status, body = await panel.remote("POST", f"/servers/{a.uuid}/install", world["auth1"], json_body={"reinstall": "x"})
    assert status == 422
    assert [e["meta"]["source_field"] for e in body["errors"]] == ["successful", "reinstall"]
    assert st.find_server(a.id).status == "install_failed"  # nothing changed
    status, _ = await panel.remote("POST", f"/servers/{a.uuid}/install", world["auth2"], json_body={"successful": True})
    assert status == 404
    status, _ = await panel.remote("POST", f"/servers/{a.uuid}/install", world["auth1"], json_body={"successful": True})
    assert status == 204 and st.find_server(a.id).status is None


async def test_activity(panel, world):
    s = world["on1"][0]
    entry = {"user": str(uuid.uuid4()), "server": s.uuid, "event": "server:console.command",
             "metadata": {"command": "say hi"}, "ip": "127.0.0.1", "timestamp": "2024-01-01T00:00:00Z"}
    foreign = {**entry, "server": world["on2"][0].uuid}
    status, _ = await panel.remote("POST", "/activity", world["auth1"], json_body={"data": [entry, foreign]})
    assert status == 204
    rows = panel.store.list_activity()
    assert [r["server_uuid"] for r in rows] == [s.uuid]  # another node's server is not recorded
    status, body = await panel.remote("POST", "/activity", world["auth1"], json_body={"data": "nope"})
    assert status == 422
    assert len(panel.store.list_activity()) == 1


async def test_the_daemons_remote_source_reads_it(panel, world):
    """roost's own RemoteSource (what a daemon uses) pages through this API."""
    PanelClient = pytest.importorskip("roost.remote.client").PanelClient
    RemoteSource = pytest.importorskip("roost.remote.source").RemoteSource
    client = PanelClient(panel.url, "tid1", "a" * 64, retry_total_s=1)
    source = RemoteSource(client)
    try:
        await source.reset_states()
        listed = await source.list_servers()
        assert [d.uuid for d in listed] == [s.uuid for s in world["on1"]] and source.errors == []
        one = await source.get_server(world["on1"][3].uuid)
        assert one.settings.meta.name == "s3"
    finally:
        await source.close()
