"""Node API routes (http-api §1): thin handlers over the Manager and Server."""
from __future__ import annotations

import asyncio
import logging
import os
import platform
import shutil
from pathlib import Path

from aiohttp import web

from .. import __version__, limits
from ..protocol import events
from ..server.power import PowerError
from ..server.server import Server
from ..server.states import Busy, ServerState
from .keys import CONFIG, MANAGER
from .middleware import json_error
from ..server.source import SourceError, UnknownServer
from ..server.backups import BackupRefused
from .schemas import (BackupBody, CommandsBody, CreateServerBody, DeauthorizeBody, DenyBody, PowerBody, RestoreBody,
                      parse_body, unprocessable)

log = logging.getLogger("roost.api")
routes = web.RouteTableDef()


def _server(request: web.Request) -> Server:
    server = request.app[MANAGER].servers.get(request.match_info["uuid"])
    if server is None:
        raise web.HTTPNotFound(
            text='{"error":"The requested resource does not exist on this instance."}',
            content_type="application/json",
        )
    return server


def server_view(server: Server) -> dict:
    return {
        "state": str(server.state),
        "is_suspended": server.suspended,
        "utilization": server.stats_doc(),
        "configuration": server.definition.settings.model_dump(mode="json"),
        # roost extras (clients ignore unknown keys)
        "is_installing": server.busy is Busy.INSTALLING,
        "is_transferring": server.busy is Busy.TRANSFERRING,
        "is_restoring": server.busy is Busy.RESTORING,
        "runtime": server.runtime.kind,
        "limits_note": server.runtime.limits_note,
    }


@routes.get("/api/system")
async def system(request: web.Request) -> web.Response:
    uname = platform.uname()
    return web.json_response(
        {
            "architecture": {"x86_64": "amd64", "aarch64": "arm64"}.get(uname.machine, uname.machine),
            "cpu_count": os.cpu_count() or 1,
            "kernel_version": uname.release,
            "os": uname.system.lower(),
            "version": __version__,
        }
    )


@routes.get("/api/servers")
async def list_servers(request: web.Request) -> web.Response:
    return web.json_response([server_view(s) for s in request.app[MANAGER].servers.values()])


@routes.post("/api/servers")
async def create_server(request: web.Request) -> web.Response:
    body = await parse_body(request, CreateServerBody)
    manager = request.app[MANAGER]
    uuid = body.uuid.lower()
    if uuid in manager.servers:
        return json_error(409, "A server with this uuid already exists on this node.")
    try:
        server = await manager.create(uuid)
    except UnknownServer as e:
        return json_error(404, str(e))
    except (SourceError, TimeoutError) as e:
        return json_error(502, f"Could not fetch the server configuration: {e}")
    if body.start_on_completion:
        server.spawn(server.power("start"))
    return web.Response(status=202)


@routes.get("/api/servers/{uuid}")
async def get_server(request: web.Request) -> web.Response:
    return web.json_response(server_view(_server(request)))


@routes.delete("/api/servers/{uuid}")
async def delete_server(request: web.Request) -> web.Response:
    server = _server(request)
    manager = request.app[MANAGER]
    await manager.delete(server.uuid)
    for sub in list(server.hub.subscribers):
        if sub.owner is not None:
            sub.owner.close_soon(1001, "server deleted")
    await asyncio.to_thread(shutil.rmtree, server.data_dir, True)
    return web.Response(status=204)


@routes.get("/api/servers/{uuid}/logs")
async def logs(request: web.Request) -> web.Response:
    server = _server(request)
    raw = request.query.get("size", str(limits.LOGS_API_MAX_LINES))
    try:
        size = int(raw)
    except ValueError:
        raise unprocessable("size: must be an integer") from None
    size = max(0, min(size, limits.LOGS_API_MAX_LINES))
    return web.json_response({"data": [ln.text for ln in server.log.tail(size)]})


@routes.post("/api/servers/{uuid}/power")
async def power(request: web.Request) -> web.Response:
    server = _server(request)
    body = await parse_body(request, PowerBody)
    try:
        server.check_power_allowed()
    except PowerError as e:
        return json_error(409, str(e))
    if body.action != "kill" and server.power_lock.held and body.wait_seconds == 0:
        return json_error(409, events.POWER_LOCKED)

    async def run() -> None:
        try:
            await server.power(body.action, wait_s=body.wait_seconds)
        except PowerError as e:
            log.warning("server %s: power %s from the API failed: %s", server.uuid, body.action, e)

    server.spawn(run())
    return web.Response(status=202)


@routes.post("/api/servers/{uuid}/commands")
async def commands(request: web.Request) -> web.Response:
    server = _server(request)
    body = await parse_body(request, CommandsBody)
    if server.state is ServerState.OFFLINE or not server.attached:
        return json_error(502, "Server must be online in order to send commands.")
    for line in body.commands:
        if not await server.send_command(line):
            return json_error(502, "Server must be online in order to send commands.")
    return web.Response(status=204)


@routes.post("/api/servers/{uuid}/sync")
async def sync(request: web.Request) -> web.Response:
    server = _server(request)
    manager = request.app[MANAGER]
    try:
        server.definition = await asyncio.wait_for(manager.source.get_server(server.uuid), limits.RUNTIME_CALL_TIMEOUT_S)
    except Exception as e:
        return json_error(502, f"Could not fetch the server configuration: {e}")
    if server.suspended:
        for sub in list(server.hub.subscribers):
            if sub.owner is not None:
                sub.owner.close_soon(4409, "server is suspended")
    return web.Response(status=204)


@routes.post("/api/servers/{uuid}/ws/deny")
async def ws_deny(request: web.Request) -> web.Response:
    server = _server(request)
    body = await parse_body(request, DenyBody)
    await request.app[MANAGER].deny_jtis(server.uuid, body.jtis)
    for sub in list(server.hub.subscribers):
        if sub.owner is not None:
            sub.owner.recheck()
    return web.Response(status=204)


@routes.post("/api/deauthorize-user")
async def deauthorize_user(request: web.Request) -> web.Response:
    body = await parse_body(request, DeauthorizeBody)
    manager = request.app[MANAGER]
    await manager.deauthorize(body.user, body.servers)
    targets = body.servers or list(manager.servers)
    for uuid in targets:
        server = manager.servers.get(uuid)
        if server is None:
            continue
        for sub in list(server.hub.subscribers):
            owner = sub.owner
            if owner is not None and owner.is_user(body.user):
                owner.recheck()
                owner.close_soon(4001, "user deauthorized")
    return web.Response(status=204)


@routes.post("/api/servers/{uuid}/backup")
async def create_backup(request: web.Request) -> web.Response:
    server = _server(request)
    body = await parse_body(request, BackupBody)
    try:
        request.app[MANAGER].backups.start_backup(server, body.uuid, body.ignore)
    except BackupRefused as e:
        return json_error(e.status, str(e))
    return web.Response(status=202)


@routes.post("/api/servers/{uuid}/backup/{backup}/restore")
async def restore_backup(request: web.Request) -> web.Response:
    server = _server(request)
    body = await parse_body(request, RestoreBody)
    try:
        request.app[MANAGER].backups.start_restore(server, request.match_info["backup"], body.truncate_directory)
    except BackupRefused as e:
        return json_error(e.status, str(e))
    return web.Response(status=202)


@routes.delete("/api/servers/{uuid}/backup/{backup}")
async def delete_backup(request: web.Request) -> web.Response:
    _server(request)
    try:
        request.app[MANAGER].backups.delete(request.match_info["backup"])
    except BackupRefused as e:
        return json_error(e.status, str(e))
    return web.Response(status=204)
