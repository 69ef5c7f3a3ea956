"""The node API (http-api §1) against a real daemon."""
import asyncio
import json

import pytest

from .harness import TOKEN

pytestmark = pytest.mark.asyncio

# The whole suite runs on the process runtime and on the Docker runtime (conftest.py).
BOTH_RUNTIMES = True


async def test_auth_rules(node):
    st, body, headers = await node.http("GET", "/api/system", token=None)
    assert st == 401 and headers["WWW-Authenticate"] == "Bearer"
    assert body == {"error": "The required authorization heads were not present in the request."}
    st, body, _ = await node.http("GET", "/api/system", token="wrong")
    assert st == 403 and body == {"error": "You are not authorized to access this endpoint."}
    st, body, headers = await node.http("GET", "/api/system")
    assert st == 200 and set(body) >= {"architecture", "cpu_count", "kernel_version", "os", "version"}
    assert headers["X-Request-Id"]


async def test_cors(node):
    st, _, headers = await node.http("OPTIONS", "/api/servers", token=None, headers={"Origin": "http://panel.example"})
    assert st == 204 and headers["Access-Control-Allow-Origin"] == "http://panel.example"


async def test_servers_list_and_view(node):
    st, body, _ = await node.http("GET", "/api/servers")
    assert st == 200 and len(body) == 1
    st, view, _ = await node.http("GET", f"/api/servers/{node.demo}")
    assert st == 200
    assert view["state"] == "offline" and view["is_suspended"] is False
    assert view["configuration"]["uuid"] == node.demo
    assert set(view["utilization"]) >= {"memory_bytes", "memory_limit_bytes", "cpu_absolute", "network", "uptime", "state", "disk_bytes"}
    st, body, _ = await node.http("GET", "/api/servers/00000000-0000-0000-0000-000000000000")
    assert st == 404 and body == {"error": "The requested resource does not exist on this instance."}


async def test_power_commands_logs(node):
    st, body, _ = await node.http("POST", f"/api/servers/{node.demo}/power", json_body={"action": "explode"})
    assert st == 422 and "action" in body["error"]
    st, body, _ = await node.http("POST", f"/api/servers/{node.demo}/commands", json_body={"commands": ["say x"]})
    assert st == 502
    st, body, _ = await node.http("POST", f"/api/servers/{node.demo}/power", json_body="nope")
    assert st == 422
    assert await node.power(node.demo, "start") == 202
    for _ in range(100):
        _, view, _ = await node.http("GET", f"/api/servers/{node.demo}")
        if view["state"] == "running":
            break
        await asyncio.sleep(0.1)
    assert view["state"] == "running"
    st, _, _ = await node.http("POST", f"/api/servers/{node.demo}/commands", json_body={"commands": ["say via api"]})
    assert st == 204
    for _ in range(50):
        _, logs, _ = await node.http("GET", f"/api/servers/{node.demo}/logs?size=5")
        if any("via api" in ln for ln in logs["data"]):
            break
        await asyncio.sleep(0.1)
    assert any("[Server] via api" in ln for ln in logs["data"])
    assert len(logs["data"]) <= 5
    _, big, _ = await node.http("GET", f"/api/servers/{node.demo}/logs?size=1000")
    assert len(big["data"]) <= 100
    st, _, _ = await node.http("GET", f"/api/servers/{node.demo}/logs?size=abc")
    assert st == 422
    assert await node.power(node.demo, "stop") == 202


async def test_bad_bodies_change_nothing(node):
    for path, body in [("/ws/deny", {"jtis": "x"}), ("/commands", {"commands": []}), ("/commands", {})]:
        st, resp, _ = await node.http("POST", f"/api/servers/{node.demo}{path}", json_body=body)
        assert st == 422 and "error" in resp
    st, resp, _ = await node.http("POST", "/api/deauthorize-user", json_body={"servers": []})
    assert st == 422
