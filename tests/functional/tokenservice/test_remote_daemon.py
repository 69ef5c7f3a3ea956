"""A real daemon whose servers come from the token service's remote API (no definition files):
the one code path of issue item 6, whether in one process or across machines."""
import asyncio
import inspect
import time
import uuid
from pathlib import Path

import pytest

import roost.daemon
from roost.demo.definition import demo_definition, install_demo_files

from ..harness import TOKEN
from .test_end_to_end import connect, ws_token

pytestmark = [
    pytest.mark.asyncio,
    pytest.mark.skipif("RemoteSource" not in inspect.getsource(roost.daemon),
                       reason="the daemon does not read servers from a panel yet"),
]


def remote_node(make_node, panel, token_id: str = "tid", token: str = TOKEN):
    node = make_node({"remote": panel.url, "token_id": token_id, "token": token})
    node.config["roost"].pop("servers_directory", None)  # unset: the panel is the source
    return node


async def test_daemon_boots_from_the_token_service(make_panel, make_node):
    panel = await make_panel()
    node = remote_node(make_node, panel)
    panel.store.add_node("n1", node.url, token_id="tid", token=TOKEN)
    panel.store.create_user("alice")
    sid = str(uuid.uuid4())
    server = panel.store.create_server(demo_definition(sid, name="From the panel"), owner="alice")
    install_demo_files(Path(node.config["system"]["data"]) / sid)
    panel.store.set_status(server.id, "installing")  # stale: the daemon's boot resets it
    key = panel.store.create_api_key("alice")[1]
    # in a thread: the daemon calls this loop's token service while it boots
    await asyncio.to_thread(node.start)

    deadline = time.monotonic() + 10
    while True:
        status, views, _ = await node.http("GET", "/api/servers")
        if status == 200 and views:
            break
        assert time.monotonic() < deadline, node.daemon_log()[-2000:]
        await asyncio.sleep(0.1)
    assert [v["configuration"]["uuid"] for v in views] == [sid]
    assert views[0]["configuration"]["meta"]["name"] == "From the panel"
    assert panel.store.find_server(sid).status is None  # POST /servers/reset cleared it

    c = await connect(await ws_token(panel, key, server.identifier))
    try:
        status, _ = await panel.api("POST", f"/servers/{server.identifier}/power", key, json_body={"signal": "start"})
        assert status == 204
        await c.expect_status("running", 15)
        # suspension: store → node sync → the daemon re-fetches from the remote API and closes sockets
        result = await panel.service.suspend_server(server.identifier)
        assert result.nodes_ok, [o.describe() for o in result.nodes]
        status, body, _ = await node.http("GET", f"/api/servers/{sid}")
        assert body["is_suspended"] is True
        status, _ = await panel.api("GET", f"/servers/{server.identifier}/websocket", key)
        assert status == 409
    finally:
        await c.close()
        await node.power(sid, "kill")


async def test_create_and_delete_reach_the_daemon(make_panel, make_node):
    panel = await make_panel()
    node = remote_node(make_node, panel)
    panel.store.add_node("n1", node.url, token_id="tid", token=TOKEN)
    panel.store.create_user("alice")
    key = panel.store.create_api_key("alice")[1]
    await asyncio.to_thread(node.start)

    sid = str(uuid.uuid4())
    install_demo_files(Path(node.config["system"]["data"]) / sid)
    result = await panel.service.create_server(demo_definition(sid, name="Made later"), owner="alice")
    assert result.nodes_ok, [o.describe() for o in result.nodes]  # POST /api/servers; the daemon fetched it
    status, view, _ = await node.http("GET", f"/api/servers/{sid}")
    assert status == 200 and view["configuration"]["meta"]["name"] == "Made later"
    c = await connect(await ws_token(panel, key, sid[:8]))
    await c.close()

    result = await panel.service.delete_server(sid[:8])
    assert result.nodes_ok, [o.describe() for o in result.nodes]
    status, _, _ = await node.http("GET", f"/api/servers/{sid}")
    assert status == 404
    status, _ = await panel.api("GET", f"/servers/{sid[:8]}", key)
    assert status == 404
