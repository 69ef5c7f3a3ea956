"""The token service's HTTP side: the client API subset (http-api §3) under `/api/client`
and the remote API for its nodes (http-api §2) under `/api/remote`.

Neither prefix collides with the node API (`/api/system`, `/api/servers`, ...), so this app
can run on its own port or share a process with a daemon node. Handlers are thin: checks in
a fixed order (auth 401 → server 404 → state 409 → body 422 / permission 403 → node call),
store calls in a worker thread, node calls through `NodeClient`. An error changes nothing.
Keys and tokens are never logged (the access log holds no headers, and errors never echo them).
"""
from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from aiohttp import web

from . import errors as E
from . import views
from .access import (COMMAND_PERMISSION, WEBSOCKET_PERMISSION, Route, has, power_permission, route_blocked,
                     user_permissions)
from .issuer import DEFAULT_TTL_S
from .nodeclient import DEFAULT_TIMEOUT_S, NodeError
from .service import TokenService
from .store import Access, Node, Store, User

log = logging.getLogger("roost.tokenservice")

SERVICE: web.AppKey[TokenService] = web.AppKey("tokenservice", TokenService)
PUBLIC_URL: web.AppKey[str] = web.AppKey("tokenservice_public_url", str)
# Per-request state (typed keys where this aiohttp has them; pyproject's floor predates them).
_RequestKey = getattr(web, "RequestKey", None)
USER: Any = _RequestKey("tokenservice_user", User) if _RequestKey else "roost.tokenservice.user"
NODE: Any = _RequestKey("tokenservice_node", Node) if _RequestKey else "roost.tokenservice.node"

CLIENT_PREFIX = "/api/client"
REMOTE_PREFIX = "/api/remote"
PREFIXES = (CLIENT_PREFIX, REMOTE_PREFIX)
MAX_BODY_BYTES = 256 * 1024  # activity batches are the largest bodies
REMOTE_DEFAULT_PER_PAGE = 50
REMOTE_MAX_PER_PAGE = 1000

routes = web.RouteTableDef()


def _service(request: web.Request) -> TokenService:
    return request.app[SERVICE]


def _store(request: web.Request) -> Store:
    return request.app[SERVICE].store


async def _in_thread(fn, *args, **kw):
    return await asyncio.to_thread(fn, *args, **kw)


def _error_response(err: E.ApiError) -> web.Response:
    r = web.json_response(err.document(), status=err.status)
    for k, v in err.headers.items():
        r.headers[k] = v
    return r


def _bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


@web.middleware
async def tokenservice_middleware(request: web.Request, handler) -> web.StreamResponse:
    path = request.path
    if not path.startswith(PREFIXES):
        return await handler(request)
    try:
        if path == CLIENT_PREFIX or path.startswith(CLIENT_PREFIX + "/"):
            key = _bearer(request)
            found = await _in_thread(_store(request).authenticate, key) if key else None
            if found is None:
                raise E.unauthenticated()
            request[USER] = found[0]
        elif path.startswith(REMOTE_PREFIX + "/"):
            request[NODE] = await _authenticate_node(request)
        resp = await handler(request)
    except E.ApiError as err:
        return _error_response(err)
    except web.HTTPMethodNotAllowed as e:
        return _error_response(E.method_not_allowed(request.method, sorted(e.allowed_methods)))
    except web.HTTPRequestEntityTooLarge:
        return _error_response(E.too_large())
    except web.HTTPException as e:
        if e.status == 404:
            return _error_response(E.not_found())
        if e.status >= 400:
            return _error_response(E.ApiError(e.status, "HttpException", e.reason))
        raise
    except asyncio.CancelledError:
        raise
    except Exception:
        # The message may come from anywhere; log the type and where, never request headers.
        log.exception("unhandled error in %s %s", request.method, path)
        return _error_response(E.internal())
    resp.headers.setdefault("Cache-Control", "no-store")
    return resp


async def _authenticate_node(request: web.Request) -> Node:
    bearer = _bearer(request)
    if bearer is None:
        raise E.remote_no_auth()
    token_id, dot, token = bearer.partition(".")
    if not dot or not token_id or not token:
        raise E.remote_bad_auth_format()
    node = await _in_thread(_store(request).authenticate_node, token_id, token)
    if node is None:
        raise E.remote_forbidden()
    return node


async def _json_body(request: web.Request) -> dict[str, Any]:
    """The body as an object; anything else reads as empty (fields then fail as required)."""
    raw = await request.read()
    if not raw:
        return {}
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return {}
    return doc if isinstance(doc, dict) else {}


# ---- client API -------------------------------------------------------------------------------


def _permissions(user: User, access: Access) -> list[str]:
    return user_permissions(is_admin=user.admin, is_owner=user.id == access.server.owner_id,
                            subuser=access.subuser_permissions) or []


def _blocked(route: Route, user: User, access: Access) -> None:
    s = access.server
    text = route_blocked(route, is_admin=user.admin, suspended=s.suspended, maintenance=access.node.maintenance,
                         status=s.status, transferring=s.transferring)
    if text is not None:
        raise E.state_conflict(text)


async def _server_access(request: web.Request, route: Route) -> Access:
    """The server of the URL as the key's user sees it: 404 when it does not exist or is not
    theirs (the same answer, so the API does not tell which), 409 when its state blocks
    `route`."""
    user = request[USER]
    access = await _in_thread(_store(request).access, user, request.match_info["server"])
    if access is None:
        raise E.not_found()
    _blocked(route, user, access)
    return access


@routes.get(CLIENT_PREFIX)
@routes.get(CLIENT_PREFIX + "/")
async def client_index(request: web.Request) -> web.Response:
    user = request[USER]
    kind, page, per_page = views.list_query(dict(request.query))
    rows, total = await _in_thread(_store(request).visible_servers, user, kind=kind, page=page, per_page=per_page)
    data = []
    for server, node, sub in rows:
        perms = user_permissions(is_admin=user.admin, is_owner=user.id == server.owner_id, subuser=sub) or []
        data.append(views.server(server, node, user, perms, with_meta=False))
    base = request.app[PUBLIC_URL] + CLIENT_PREFIX
    return web.json_response(views.list_of(data, views.pagination(
        total=total, count=len(data), per_page=per_page, page=page, url=base, query=dict(request.query))))


@routes.get(CLIENT_PREFIX + "/account")
async def client_account(request: web.Request) -> web.Response:
    return web.json_response(views.account(request[USER]))


@routes.get(CLIENT_PREFIX + "/servers/{server}")
async def client_server(request: web.Request) -> web.Response:
    user = request[USER]
    access = await _server_access(request, Route.VIEW)
    perms = _permissions(user, access)
    return web.json_response(views.server(access.server, access.node, user, perms, with_meta=True))


@routes.get(CLIENT_PREFIX + "/servers/{server}/websocket")
async def client_websocket(request: web.Request) -> web.Response:
    user = request[USER]
    service = _service(request)
    first = await _server_access(request, Route.WEBSOCKET)
    # Waits out a revocation in flight for this user and server (service.py explains why).
    access, now = await service.token_snapshot(user, first.server.id)
    if access is None:
        raise E.not_found()
    _blocked(Route.WEBSOCKET, user, access)
    perms = _permissions(user, access)
    if not has(perms, WEBSOCKET_PERMISSION):
        raise E.forbidden(E.WEBSOCKET_FORBIDDEN_TEXT)
    if access.server.transferring and "admin.websocket.transfer" not in perms:
        raise E.forbidden(E.TRANSFER_LOGS_FORBIDDEN_TEXT)
    creds = service.mint(user, access, now)
    return web.json_response({"data": {"token": creds.token, "socket": creds.socket}})


@routes.get(CLIENT_PREFIX + "/servers/{server}/resources")
async def client_resources(request: web.Request) -> web.Response:
    access = await _server_access(request, Route.RESOURCES)
    try:
        doc = await _service(request).nodes.server_details(access.node, access.server.uuid)
    except NodeError as e:
        raise E.daemon_error(e) from None
    return web.json_response(views.stats(doc))


@routes.post(CLIENT_PREFIX + "/servers/{server}/power")
async def client_power(request: web.Request) -> web.Response:
    user = request[USER]
    access = await _server_access(request, Route.POWER)
    # The permission depends on the signal: validate first (422), then authorize (403).
    signal = views.power_signal(await _json_body(request))
    if not has(_permissions(user, access), power_permission(signal)):
        raise E.access_denied()
    try:
        await _service(request).nodes.power(access.node, access.server.uuid, signal)
    except NodeError as e:
        raise E.daemon_error(e) from None
    return web.Response(status=204)


@routes.post(CLIENT_PREFIX + "/servers/{server}/command")
async def client_command(request: web.Request) -> web.Response:
    user = request[USER]
    access = await _server_access(request, Route.COMMAND)
    if not has(_permissions(user, access), COMMAND_PERMISSION):
        raise E.access_denied()
    command = views.command_line(await _json_body(request))
    try:
        await _service(request).nodes.send_commands(access.node, access.server.uuid, [command])
    except NodeError as e:
        if e.status == 502:
            raise E.command_offline() from None
        raise E.daemon_error(e) from None
    return web.Response(status=204)


# ---- remote API (for nodes) -------------------------------------------------------------------


def _remote_page(raw: str | None, default: int, maximum: int) -> int:
    try:
        n = int(raw) if raw not in (None, "") else default
    except ValueError:
        return default
    return min(max(n, 1), maximum)


@routes.get(REMOTE_PREFIX + "/servers")
async def remote_servers(request: web.Request) -> web.Response:
    node = request[NODE]
    page = views.page_number(request.query.get("page"))
    per_page = _remote_page(request.query.get("per_page"), REMOTE_DEFAULT_PER_PAGE, REMOTE_MAX_PER_PAGE)
    servers, total = await _in_thread(_store(request).node_servers, node.id, page=page, per_page=per_page)
    data = []
    for s in servers:
        d = s.panel_definition()
        data.append({"uuid": s.uuid, **d})
    last_page = max(1, -(-total // per_page))
    first_index = (page - 1) * per_page + 1
    path = request.app[PUBLIC_URL] + REMOTE_PREFIX + "/servers"

    def url(n: int) -> str:
        return f"{path}?page={n}&per_page={per_page}"

    return web.json_response({
        "data": data,
        "links": {"first": url(1), "last": url(last_page), "prev": url(page - 1) if page > 1 else None,
                  "next": url(page + 1) if page < last_page else None},
        "meta": {"current_page": page, "from": first_index if data else None, "last_page": last_page,
                 "path": path, "per_page": per_page, "to": first_index + len(data) - 1 if data else None,
                 "total": total},
    })


async def _node_server(request: web.Request):
    server = await _in_thread(_store(request).node_server, request[NODE].id, request.match_info["uuid"])
    if server is None:
        raise E.not_found()
    return server


@routes.get(REMOTE_PREFIX + "/servers/{uuid}")
async def remote_server(request: web.Request) -> web.Response:
    server = await _node_server(request)
    return web.json_response(server.panel_definition())


@routes.get(REMOTE_PREFIX + "/servers/{uuid}/install")
async def remote_install_script(request: web.Request) -> web.Response:
    server = await _node_server(request)
    settings = server.definition.get("settings") or {}
    install = server.definition.get("install") if isinstance(server.definition.get("install"), dict) else {}
    return web.json_response({
        "container_image": str(install.get("container_image") or (settings.get("container") or {}).get("image") or ""),
        "entrypoint": str(install.get("entrypoint") or "bash"),
        "script": str(install.get("script") or ""),
    })


@routes.post(REMOTE_PREFIX + "/servers/{uuid}/install")
async def remote_install_report(request: web.Request) -> web.Response:
    server = await _node_server(request)
    successful, reinstall = views.install_report(await _json_body(request))
    await _in_thread(_store(request).record_install, request[NODE].id, server.uuid,
                     successful=successful, reinstall=reinstall)
    return web.Response(status=204)


@routes.post(REMOTE_PREFIX + "/servers/reset")
async def remote_reset(request: web.Request) -> web.Response:
    await _in_thread(_store(request).reset_node_states, request[NODE].id)
    return web.Response(status=204)


@routes.post(REMOTE_PREFIX + "/activity")
async def remote_activity(request: web.Request) -> web.Response:
    node = request[NODE]
    entries = views.activity_batch(await _json_body(request))
    store = _store(request)
    if entries:
        mine = {s.uuid for s in await _in_thread(store.list_servers, node=node.id)}
        entries = [e for e in entries if e["server"].lower() in mine]
        if entries:
            await _in_thread(store.add_activity, node.id, entries)
    return web.Response(status=204)


# ---- the application --------------------------------------------------------------------------


def build_token_service_app(store: Store, *, public_url: str, token_ttl_s: int = DEFAULT_TTL_S,
                            node_timeout_s: float = DEFAULT_TIMEOUT_S,
                            service: TokenService | None = None) -> web.Application:
    """The token service as an aiohttp app: `/api/client/...` and `/api/remote/...` only.

    `public_url` is this service's own base URL as clients reach it (the tokens' `iss`, and
    pagination links). Pass `service` to share one `TokenService` with other code in the
    process (it is then not closed with the app).
    """
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    install_token_service(app, store, public_url=public_url, token_ttl_s=token_ttl_s,
                          node_timeout_s=node_timeout_s, service=service)
    return app


def install_token_service(app: web.Application, store: Store, *, public_url: str, token_ttl_s: int = DEFAULT_TTL_S,
                          node_timeout_s: float = DEFAULT_TIMEOUT_S,
                          service: TokenService | None = None) -> TokenService:
    """Add the token service to an existing (not yet started) app, e.g. a node's, to serve
    both on one port. Its middleware only touches `PREFIXES` paths; any middleware of that
    app that runs first (the node's bearer check) must let `PREFIXES` through."""
    owned = service is None
    svc = service or TokenService(store, public_url=public_url, token_ttl_s=token_ttl_s, node_timeout_s=node_timeout_s)
    app.middlewares.append(tokenservice_middleware)
    app[SERVICE] = svc
    app[PUBLIC_URL] = public_url.rstrip("/")
    app.add_routes(routes)
    if owned:
        async def close(app: web.Application) -> None:
            await svc.close()

        app.on_cleanup.append(close)
    return svc
