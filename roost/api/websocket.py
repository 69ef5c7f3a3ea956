"""The console websocket: Origin check, upgrade, then one reader and one pump per socket.

The protocol lives in `roost.protocol.session.Session`; this module only moves bytes, runs
the effects it asks for, and writes queued frames to the transport in batches.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from aiohttp import WSMsgType, web

from .. import limits
from ..protocol import session as proto
from ..protocol.tokens import TokenVerifier
from ..protocol.wsframe import text_frame
from ..server.power import PowerError, PowerLocked
from ..server.states import ServerState
from .keys import CONFIG, MANAGER, VERIFIER

if TYPE_CHECKING:
    from ..server.fanout import Subscriber
    from ..server.server import Server

log = logging.getLogger("roost.websocket")

NOT_FOUND = {"error": "The requested resource does not exist on this instance."}
TOO_MANY = {"error": "Too many open websocket connections."}


def origin_allowed(origin: str | None, remote: str, allowed: list[str]) -> bool:
    """Exact match against the panel URL or allowed_origins; `*` allows anything."""
    if "*" in allowed:
        return True
    if origin is None:
        return False
    return origin == remote or origin in allowed


class Connection:
    """One socket: its Session, its Subscriber, and the tasks that serve them."""

    def __init__(self, ws: web.WebSocketResponse, request: web.Request, server: "Server", session: proto.Session):
        self.ws = ws
        self.request = request
        self.server = server
        self.session = session
        self.wake = asyncio.Event()
        self.sub: "Subscriber" = server.hub.subscribe(
            may_receive=session.may_receive,
            wake=self.wake.set,
            roost_extensions=session.config.roost_extensions,
            owner=self,
        )
        self.close_request: proto.Close | None = None
        self._commands: list[str] = []
        self._tasks: set[asyncio.Task] = set()

    # called by the manager/routes
    def recheck(self) -> None:
        self.session.recheck(time.time())
        self.process()

    def close_soon(self, code: int, reason: str) -> None:
        if self.close_request is None:
            self.close_request = proto.Close(code, reason)
        self.wake.set()

    def is_user(self, user_uuid: str) -> bool:
        return self.session.is_user(user_uuid)

    # effects ------------------------------------------------------------------------------

    def process(self) -> None:
        """Carry out what the session asked for, in order."""
        for action in self.session.take_actions():
            if isinstance(action, proto.Send):
                self.sub.offer_control(text_frame(action.frame))
            elif isinstance(action, proto.Close):
                self.close_soon(action.code, action.reason)
            elif isinstance(action, proto.FirstAuth):
                self.sub.offer_control(text_frame(self.server.status_frame()))
                if self.server.state is ServerState.OFFLINE:
                    self.sub.offer_control(text_frame(self.server.stats_frame()))
            elif isinstance(action, proto.Power):
                self._spawn(self._power(action.action))
            elif isinstance(action, proto.Command):
                self._commands.append(action.line)  # the reader awaits these, in order
            elif isinstance(action, proto.SendLogs):
                self.server.replay_logs(self.sub, action.since_seq)
            elif isinstance(action, proto.SendStats):
                self.sub.offer_control(text_frame(self.server.stats_frame()))
        for error_id, text in self.session.logged_errors:
            log.warning("server %s: error event %s: %s", self.server.uuid, error_id, text)
        self.session.logged_errors.clear()
        self.wake.set()

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _power(self, action: str) -> None:
        try:
            await self.server.power(action)
        except PowerLocked as e:
            self.session.public_error(str(e))
        except PowerError as e:
            self.session.daemon_error(str(e))
        except Exception as e:  # never let a failed action kill the socket
            log.exception("server %s: power %s failed", self.server.uuid, action)
            self.session.daemon_error(f"{type(e).__name__}: {e}")
        self.process()

    # tasks --------------------------------------------------------------------------------

    async def reader(self) -> None:
        async for msg in self.ws:
            if msg.type is WSMsgType.TEXT:
                self.session.receive(msg.data, time.time())
                self.process()
                while self._commands:
                    await self.server.send_command(self._commands.pop(0))
            elif msg.type is WSMsgType.ERROR:
                break
            # binary frames are ignored (spec §1)

    async def pump(self) -> None:
        """Writes queued frames in batches and fires the session's deadlines.

        One timer per socket, re-armed only when the session's next deadline changes: a
        console line then costs a plain event wake-up, not a new task and timer.
        """
        loop = asyncio.get_running_loop()
        transport = self.request.transport
        timer: asyncio.TimerHandle | None = None
        armed_for: float | None = None
        try:
            while True:
                deadline = self.session.next_deadline()
                if deadline != armed_for:
                    if timer is not None:
                        timer.cancel()
                    timer = None if deadline is None else loop.call_at(
                        loop.time() + max(0.0, deadline - time.time()), self.wake.set)
                    armed_for = deadline
                await self.wake.wait()
                self.wake.clear()
                self.session.tick(time.time())
                self.process()
                self.wake.clear()
                if self.sub.overflowed:
                    self.close_request = proto.Close(1008, "not reading")
                while self.sub.queue:
                    if transport is None or transport.is_closing():
                        return
                    transport.write(b"".join(self.sub.take()))
                    await self._drain(transport)
                if self.close_request is not None:
                    await self.ws.close(code=self.close_request.code, message=self.close_request.reason.encode())
                    return
        finally:
            if timer is not None:
                timer.cancel()

    async def _drain(self, transport: asyncio.Transport) -> None:
        """Wait (bounded) until the peer has taken most of what we wrote.

        Uses the protocol's flow control (pause_writing/resume_writing) through aiohttp's
        drain helper, the same wait aiohttp's own writers use; a peer that takes nothing for
        SOCKET_STALL_TIMEOUT_S is dropped.
        """
        if transport.get_write_buffer_size() <= limits.SOCKET_WRITE_BUFFER_HIGH:
            return
        drain = getattr(self.request.protocol, "_drain_helper", None)
        try:
            if drain is not None:
                await asyncio.wait_for(drain(), limits.SOCKET_STALL_TIMEOUT_S)
                return
            waited = 0.0  # fallback if aiohttp ever drops the helper: poll
            while transport.get_write_buffer_size() > limits.SOCKET_WRITE_BUFFER_HIGH // 2:
                if transport.is_closing() or waited >= limits.SOCKET_STALL_TIMEOUT_S:
                    raise TimeoutError
                await asyncio.sleep(0.005)
                waited += 0.005
        except TimeoutError:
            log.info("server %s: dropping a socket that stopped reading", self.server.uuid)
            transport.abort()
        except ConnectionResetError:
            transport.abort()

    async def serve(self) -> None:
        try:
            async with asyncio.TaskGroup() as tg:
                reader = tg.create_task(self.reader())
                pump = tg.create_task(self.pump())
                done, _ = await asyncio.wait({reader, pump}, return_when=asyncio.FIRST_COMPLETED)
                reader.cancel()
                pump.cancel()
        except* (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.server.hub.unsubscribe(self.sub)
            for t in list(self._tasks):
                t.cancel()
            if not self.ws.closed:
                await self.ws.close()


async def websocket_handler(request: web.Request) -> web.StreamResponse:
    config = request.app[CONFIG]
    manager = request.app[MANAGER]
    server = manager.servers.get(request.match_info["uuid"])
    if server is None:
        return web.json_response(NOT_FOUND, status=404)
    if not origin_allowed(request.headers.get("Origin"), config.remote, config.allowed_origins):
        return web.json_response({"error": "This origin is not allowed to connect."}, status=403)
    if len(server.hub) >= config.roost.websocket.max_sockets_per_server:
        return web.json_response(TOO_MANY, status=400)
    wsconf = config.roost.websocket
    ws = web.WebSocketResponse(
        max_msg_size=limits.WS_MAX_MESSAGE_BYTES,
        compress=False,
        heartbeat=wsconf.ping_interval_s,
        autoping=True,
        timeout=5.0,
    )
    await ws.prepare(request)
    if server.deleted:
        await ws.close(code=1001, message=b"server deleted")
        return ws
    if server.suspended:
        await ws.close(code=4409, message=b"server is suspended")
        return ws
    now = time.time()
    session = proto.Session(
        proto.SessionConfig(
            server_uuid=server.uuid,
            auth_timeout_s=wsconf.auth_timeout_s,
            expiring_notice_s=wsconf.expiring_notice_s,
            expired_grace_s=wsconf.expired_grace_s,
            roost_extensions=request.query.get("roost") == "1",
        ),
        request.app[VERIFIER],
        manager.denylist,
        now,
    )
    await Connection(ws, request, server, session).serve()
    return ws
