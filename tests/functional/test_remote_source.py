"""A daemon whose servers come from a panel's remote API (http-api §2).

The panel here is a minimal stand-in serving the remote API's documented shapes (a real
Pterodactyl panel cannot run on this machine); roost's own token service is tested against
the daemon in tests/functional/tokenservice.
"""
import asyncio
import uuid as uuidlib

import pytest
from aiohttp import web

from roost.demo.definition import demo_definition, install_demo_files

from .harness import TOKEN, free_port

pytestmark = pytest.mark.asyncio


class StandInPanel:
    def __init__(self, servers: list[dict], per_page: int = 1):
        self.servers = {s["settings"]["uuid"]: s for s in servers}
        self.per_page = per_page
        self.calls: list[str] = []
        self.fail_next = 0  # answer this many requests with 503
        self.auth_seen: set[str] = set()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    async def start(self):
        app = web.Application()
        app.router.add_get("/api/remote/servers", self.list)
        app.router.add_get("/api/remote/servers/{uuid}", self.one)
        app.router.add_post("/api/remote/servers/reset", self.reset)
        self.add_routes(app)
        self.runner = web.AppRunner(app, shutdown_timeout=0.2)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    def add_routes(self, app) -> None:
        """Subclasses serve more of the remote API here."""

    async def stop(self):
        await self.runner.cleanup()

    def _gate(self, request):
        self.calls.append(f"{request.method} {request.path_qs}")
        self.auth_seen.add(request.headers.get("Authorization", ""))
        if self.fail_next:
            self.fail_next -= 1
            raise web.HTTPServiceUnavailable()

    async def list(self, request):
        self._gate(request)
        page = int(request.query.get("page", "1"))
        items = list(self.servers.values())
        last = max(1, -(-len(items) // self.per_page))
        chunk = items[(page - 1) * self.per_page: page * self.per_page]
        return web.json_response({"data": [{"uuid": s["settings"]["uuid"], **s} for s in chunk],
                                  "meta": {"current_page": page, "last_page": last, "per_page": self.per_page, "total": len(items)}})

    async def one(self, request):
        self._gate(request)
        s = self.servers.get(request.match_info["uuid"])
        if s is None:
            return web.json_response({"errors": [{"code": "NotFoundHttpException", "status": "404", "detail": "not found"}]}, status=404)
        return web.json_response(s)

    async def reset(self, request):
        self._gate(request)
        return web.Response(status=204)


def remote_node(make_node, panel: StandInPanel):
    n = make_node({"remote": panel.url, "token_id": "node-token-id", "roost": {"servers_directory": None, "remote_retry_s": 5}})
    return n


async def test_boot_pages_through_the_panel_and_runs_its_servers(make_node):
    a, b = str(uuidlib.uuid4()), str(uuidlib.uuid4())
    panel = await StandInPanel([demo_definition(a, "A"), demo_definition(b, "B")], per_page=1).start()
    try:
        n = remote_node(make_node, panel)
        for sid in (a, b):
            install_demo_files(n.home / "volumes" / sid)
        await asyncio.to_thread(n.start)  # the stand-in panel runs on this loop
        await asyncio.sleep(0.5)
        st, servers, _ = await n.http("GET", "/api/servers")
        assert sorted(s["configuration"]["uuid"] for s in servers) == sorted([a, b])
        assert "POST /api/remote/servers/reset" in panel.calls
        assert any("page=2" in c for c in panel.calls)
        assert panel.auth_seen == {f"Bearer node-token-id.{TOKEN}"}
        c = await n.client(a)
        await c.send("set state", "start")  # fetches the configuration again before starting
        await c.expect_status("running", 15)
        assert f"GET /api/remote/servers/{a}" in panel.calls
    finally:
        await panel.stop()


async def test_panel_5xx_is_retried_and_4xx_is_not(make_node):
    a = str(uuidlib.uuid4())
    panel = await StandInPanel([demo_definition(a)]).start()
    try:
        panel.fail_next = 2  # the first two calls at boot fail with 503
        n = remote_node(make_node, panel)
        install_demo_files(n.home / "volumes" / a)
        await asyncio.to_thread(n.start)  # the stand-in panel runs on this loop
        for _ in range(50):
            st, servers, _ = await n.http("GET", "/api/servers")
            if servers:
                break
            await asyncio.sleep(0.2)
        assert [s["configuration"]["uuid"] for s in servers] == [a]
        missing = str(uuidlib.uuid4())
        before = len(panel.calls)
        st, body, _ = await n.http("POST", "/api/servers", json_body={"uuid": missing})
        assert st == 404
        assert len(panel.calls) == before + 1  # a 4xx is the panel's answer: asked once
    finally:
        await panel.stop()


async def test_create_server_from_panel_and_start_on_completion(make_node):
    a = str(uuidlib.uuid4())
    panel = await StandInPanel([]).start()
    try:
        n = remote_node(make_node, panel)
        await asyncio.to_thread(n.start)  # the stand-in panel runs on this loop
        panel.servers[a] = demo_definition(a, "late")
        install_demo_files(n.home / "volumes" / a)
        st, _, _ = await n.http("POST", "/api/servers", json_body={"uuid": a, "start_on_completion": True})
        assert st == 202
        c = await n.client(a)
        for _ in range(50):
            _, view, _ = await n.http("GET", f"/api/servers/{a}")
            if view["state"] == "running":
                break
            await asyncio.sleep(0.2)
        assert view["state"] == "running"
        st, _, _ = await n.http("POST", "/api/servers", json_body={"uuid": a})
        assert st == 409
        st, body, _ = await n.http("POST", "/api/servers", json_body={"uuid": "nope"})
        assert st == 422
    finally:
        await panel.stop()
