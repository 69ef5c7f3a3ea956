"""Node API edges: bearer auth, request ids, JSON errors, security headers, CORS."""
from __future__ import annotations

import hmac
import logging
import uuid

from aiohttp import web

from .keys import CONFIG

log = logging.getLogger("roost.api")

NO_AUTH = {"error": "The required authorization heads were not present in the request."}
BAD_AUTH = {"error": "You are not authorized to access this endpoint."}


def json_error(status: int, message: str, **extra) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


def _cors_origin(request: web.Request) -> str | None:
    config = request.app[CONFIG]
    origin = request.headers.get("Origin")
    if origin is None:
        return None
    if origin == config.remote or origin in config.allowed_origins:
        return origin
    if "*" in config.allowed_origins:
        return origin
    return None


def _public(request: web.Request) -> bool:
    """Routes that carry their own auth: the websocket (JWT inside) and transfers (JWT header)."""
    path = request.path
    if request.method == "GET" and path.startswith("/api/servers/") and path.endswith("/ws"):
        return True
    if request.method == "POST" and path == "/api/transfers":
        return True
    return not path.startswith("/api/")


@web.middleware
async def node_middleware(request: web.Request, handler) -> web.StreamResponse:
    request_id = request.headers.get("X-Request-Id") or str(uuid.uuid4())
    origin = _cors_origin(request)
    if request.method == "OPTIONS":
        resp: web.StreamResponse = web.Response(status=204)
    else:
        resp = await _guarded(request, handler, request_id)
    if not resp.prepared:
        resp.headers["X-Request-Id"] = request_id
        resp.headers.setdefault("Content-Security-Policy", "default-src 'self'")
        resp.headers.setdefault("X-Frame-Options", "DENY")
        if origin is not None:
            resp.headers["Access-Control-Allow-Origin"] = origin
            resp.headers["Access-Control-Allow-Methods"] = "GET, POST, PATCH, PUT, DELETE, OPTIONS"
            resp.headers["Access-Control-Allow-Headers"] = "Accept, Accept-Encoding, Authorization, Cache-Control, Content-Type, Content-Length, Origin, X-Real-IP, X-CSRF-Token"
            resp.headers["Access-Control-Allow-Credentials"] = "true"
            resp.headers["Vary"] = "Origin"
    return resp


async def _guarded(request: web.Request, handler, request_id: str) -> web.StreamResponse:
    if not _public(request):
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme != "Bearer" or not token:
            r = web.json_response(NO_AUTH, status=401)
            r.headers["WWW-Authenticate"] = "Bearer"
            return r
        expected = request.app[CONFIG].token
        if not hmac.compare_digest(token.encode(), expected.encode()):
            return web.json_response(BAD_AUTH, status=403)
    try:
        return await handler(request)
    except web.HTTPException as e:
        if e.status >= 400 and e.content_type != "application/json":
            text = e.reason if e.status != 404 else "The requested resource does not exist on this instance."
            return json_error(e.status, text)
        raise
    except Exception:
        log.exception("unhandled error in %s %s (request %s)", request.method, request.path, request_id)
        return json_error(
            500,
            "An unexpected error was encountered while processing this request",
            request_id=request_id,
        )
