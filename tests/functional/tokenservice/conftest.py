"""A real token service on loopback (in the test's event loop), a scriptable fake node, and
helpers to register real daemons (tests/functional/harness.py) as its nodes."""
from __future__ import annotations

import json
import tempfile
import shutil
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from roost.tokenservice.app import build_token_service_app
from roost.tokenservice.service import TokenService
from roost.tokenservice.store import Store

from ..harness import free_port


async def _serve(app: web.Application) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, port


class Panel:
    """The token service under test, with HTTP helpers."""

    def __init__(self, home: Path, token_ttl_s: int):
        self.home = home
        self.store = Store.open(home)
        self.token_ttl_s = token_ttl_s
        self.url = ""
        self.service: TokenService | None = None
        self._runner: web.AppRunner | None = None

    async def start(self) -> "Panel":
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.service = TokenService(self.store, public_url=self.url, token_ttl_s=self.token_ttl_s, node_timeout_s=3)
        app = build_token_service_app(self.store, public_url=self.url, service=self.service)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self.service is not None:
            await self.service.close()

    async def request(self, method: str, path: str, *, headers: dict | None = None, json_body: Any = None,
                      data: bytes | None = None) -> tuple[int, Any]:
        async with aiohttp.ClientSession() as s:
            async with s.request(method, self.url + path, headers=headers or {}, json=json_body, data=data) as r:
                text = await r.text()
                try:
                    return r.status, json.loads(text) if text else None
                except ValueError:
                    return r.status, text

    async def api(self, method: str, path: str, key: str | None, **kw) -> tuple[int, Any]:
        headers = {"Accept": "application/json"}
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        return await self.request(method, "/api/client" + path, headers=headers, **kw)

    async def remote(self, method: str, path: str, auth: str | None, **kw) -> tuple[int, Any]:
        headers = {"Accept": "application/vnd.pterodactyl.v1+json"}
        if auth is not None:
            headers["Authorization"] = f"Bearer {auth}"
        return await self.request(method, "/api/remote" + path, headers=headers, **kw)


@pytest.fixture
async def make_panel():
    panels: list[Panel] = []
    homes: list[Path] = []

    async def factory(token_ttl_s: int = 600) -> Panel:
        home = Path(tempfile.mkdtemp(prefix="ts", dir="/tmp"))
        homes.append(home)
        p = await Panel(home, token_ttl_s).start()
        panels.append(p)
        return p

    yield factory
    for p in panels:
        await p.stop()
    for h in homes:
        shutil.rmtree(h, ignore_errors=True)


@pytest.fixture
async def panel(make_panel):
    return await make_panel()


class FakeNode:
    """A node API that records every call and answers as scripted (default 204/202 or a
    server view)."""

    def __init__(self, token: str):
        self.token = token
        self.calls: list[tuple[str, str, Any, str]] = []  # method, path, body, Authorization
        self.answers: dict[tuple[str, str], tuple[int, Any]] = {}
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def answer(self, method: str, suffix: str, status: int, body: Any = None) -> None:
        self.answers[(method, suffix)] = (status, body)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw
        self.calls.append((request.method, request.path, body, request.headers.get("Authorization", "")))
        for (method, suffix), (status, doc) in self.answers.items():
            if method == request.method and request.path.endswith(suffix):
                if doc is None:
                    return web.Response(status=status)
                return web.json_response(doc, status=status, headers={"X-Request-Id": "req-1"})
        if request.method == "GET":
            return web.json_response({"state": "offline", "is_suspended": False, "utilization": {}})
        return web.Response(status=204)

    async def start(self) -> "FakeNode":
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner, self.port = await _serve(app)
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def posts(self, suffix: str) -> list[Any]:
        return [body for m, p, body, _ in self.calls if m == "POST" and p.endswith(suffix)]


@pytest.fixture
async def fake_node():
    nodes: list[FakeNode] = []

    async def factory(token: str = "f" * 64) -> FakeNode:
        n = await FakeNode(token).start()
        nodes.append(n)
        return n

    yield factory
    for n in nodes:
        await n.stop()
