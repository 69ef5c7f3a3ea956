"""Suspension, limits reporting, and the CLI around a real daemon."""
import asyncio
import json
import os
import subprocess
import sys

import jwt
import pytest
import websockets

from .harness import TOKEN

# async tests run in pytest-asyncio auto mode (pyproject.toml)


async def test_suspended_server_closes_4409_and_refuses_start(make_node):
    n = make_node()
    sid = n.add_server(suspended=True)
    n.start()
    c = await n.client(sid, auth=False)
    with pytest.raises(websockets.ConnectionClosed):
        await c.recv(5)
    assert c.ws.close_code == 4409
    assert await n.power(sid, "start") == 202
    await asyncio.sleep(0.5)
    _, view, _ = await n.http("GET", f"/api/servers/{sid}")
    assert view["state"] == "offline" and view["is_suspended"] is True


async def test_limits_applied_are_reported_honestly(node):
    c = await node.client(node.demo)
    await c.send("set state", "start")
    await c.expect_status("running")
    st = await c.expect(lambda e: e["event"] == "stats" and json.loads(e["args"][0])["memory_bytes"] > 0)
    _, view, _ = await node.http("GET", f"/api/servers/{node.demo}")
    if view["limits_note"] is None:  # cgroups writable: the limit is enforced and reported
        assert json.loads(st["args"][0])["memory_limit_bytes"] == 256 * 1024 * 1024


async def test_limits_that_cannot_be_applied_start_anyway_and_say_so(make_node):
    n = make_node({"roost": {"cgroup_parent": "tasks"}})  # a file, not a directory: mkdir fails
    sid = n.add_server()
    n.start()
    c = await n.client(sid)
    await c.send("set state", "start")
    await c.expect_status("running")
    _, view, _ = await n.http("GET", f"/api/servers/{sid}")
    assert view["limits_note"] and "not applied" in view["limits_note"]
    await c.send("set state", "restart")
    await c.expect_status("running", 15)
    log = n.daemon_log()
    assert log.count("resource limits not applied") == 1  # said once, not at every start


def test_token_command_prints_panel_claims(make_node):
    n = make_node()
    sid = n.add_server()
    (n.home / "config.yml").write_text(__import__("yaml").safe_dump(n.config))
    out = subprocess.run(
        [sys.executable, "-m", "roost", "token", "--config", str(n.home / "config.yml"), "--server", sid,
         "--user", "11111111-1111-1111-1111-111111111111", "--permissions", "control.console,websocket.connect",
         "--ttl", "120"], capture_output=True, text=True, timeout=30, check=True).stdout.strip()
    claims = jwt.decode(out, TOKEN, algorithms=["HS256"], options={"verify_aud": False})
    assert claims["server_uuid"] == sid and claims["user_uuid"] == "11111111-1111-1111-1111-111111111111"
    assert claims["permissions"] == ["control.console", "websocket.connect"]
    assert claims["exp"] - claims["iat"] == 120 and claims["scope"] == "websocket"
    assert isinstance(claims["aud"], list) and len(claims["jti"]) == 32 and claims["unique_id"]


async def test_config_files_are_rewritten_before_every_start(make_node):
    n = make_node()
    sid = n.add_server(environment={"SERVER_NAME": "Demo", "MOTD": "hello roost"},
                       allocations={"default": {"ip": "127.0.0.1", "port": 25599}, "mappings": {}})
    import yaml
    path = n.home / "servers" / f"{sid}.yml"
    doc = yaml.safe_load(path.read_text())
    doc["process_configuration"]["configs"] = [{
        "file": "server.properties", "parser": "properties",
        "replace": [{"match": "server-port", "replace_with": "{{server.build.default.port}}"},
                    {"match": "motd", "replace_with": "{{server.build.env.MOTD}}"}],
    }]
    path.write_text(yaml.safe_dump(doc))
    props = n.home / "volumes" / sid / "server.properties"
    props.write_text("# Minecraft server properties\nserver-port=25565\nmotd=old\nlevel-name=world\n")
    n.start()
    c = await n.client(sid)
    await c.send("set state", "start")
    await c.expect_console("Updating process configuration files...")
    await c.expect_status("running")
    text = props.read_text()
    assert "server-port=25599" in text and "motd=hello roost" in text
    assert text.startswith("# Minecraft server properties") and "level-name=world" in text
