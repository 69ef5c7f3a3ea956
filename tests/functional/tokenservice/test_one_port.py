"""The token service added to another app (one port): its routes and middleware only touch
/api/client and /api/remote."""
import uuid

import aiohttp
import pytest
from aiohttp import web

from roost.demo.definition import demo_definition
from roost.tokenservice.app import PREFIXES, install_token_service
from roost.tokenservice.store import Store

from ..harness import free_port

pytestmark = pytest.mark.asyncio


async def test_shares_an_app_with_node_routes(tmp_path):
    store = Store.open(tmp_path)
    store.create_user("alice")
    store.add_node("n1", "http://127.0.0.1:1", token_id="tid", token="t" * 64)
    server = store.create_server(demo_definition(str(uuid.uuid4())), owner="alice")
    key = store.create_api_key("alice")[1]

    app = web.Application()

    async def node_route(request):
        return web.json_response({"node": request.match_info["uuid"]})

    app.router.add_get("/api/servers/{uuid}", node_route)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    install_token_service(app, store, public_url=url)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{url}/api/servers/abc") as r:  # untouched by the token service
                assert r.status == 200 and await r.json() == {"node": "abc"}
            async with s.get(f"{url}/api/client", headers={"Authorization": f"Bearer {key}"}) as r:
                assert r.status == 200 and (await r.json())["data"][0]["attributes"]["uuid"] == server.uuid
            async with s.get(f"{url}/api/remote/servers", headers={"Authorization": "Bearer tid." + "t" * 64}) as r:
                assert r.status == 200 and (await r.json())["meta"]["total"] == 1
    finally:
        await runner.cleanup()
    assert PREFIXES == ("/api/client", "/api/remote")
