"""The node's aiohttp application: routes, middleware, and the Manager's lifecycle."""
from __future__ import annotations

from aiohttp import web

from ..config import NodeConfig
from ..protocol.tokens import TokenVerifier
from ..server.manager import Manager
from .keys import CONFIG, MANAGER, VERIFIER
from .middleware import node_middleware
from .routes import routes
from .websocket import websocket_handler


def build_app(config: NodeConfig, manager: Manager) -> web.Application:
    app = web.Application(middlewares=[node_middleware], client_max_size=1024 * 1024)
    app[CONFIG] = config
    app[MANAGER] = manager
    app[VERIFIER] = TokenVerifier(config.token, require_scope=config.roost.require_scope)
    app.router.add_get("/api/servers/{uuid}/ws", websocket_handler)
    app.add_routes(routes)

    async def lifecycle(app: web.Application):
        await manager.boot()
        yield
        await manager.shutdown()

    async def close_sockets(app: web.Application) -> None:
        # on_shutdown runs before the server waits for open handlers: close sockets first,
        # with 1012 so clients reconnect to the next daemon.
        for server in manager.servers.values():
            for sub in list(server.hub.subscribers):
                if sub.owner is not None:
                    sub.owner.close_soon(1012, "daemon restarting")

    app.cleanup_ctx.append(lifecycle)
    app.on_shutdown.append(close_sockets)
    return app
