"""A real roost daemon on loopback, and real websocket clients, for functional tests."""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid as uuidlib
from pathlib import Path
from typing import Any, Callable

import aiohttp
import websockets
import yaml
from multidict import CIMultiDict

from roost.demo.definition import demo_definition, install_demo_files
from roost.tokenservice.issuer import ADMIN_PERMISSIONS, mint_websocket_token

TOKEN = "test-node-token-" + "0123456789abcdef" * 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def deep_merge(base: dict, over: dict) -> dict:
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            deep_merge(base[k], v)
        else:
            base[k] = v
    return base


class Node:
    """One daemon process with its own short-path home (unix sockets need short paths)."""

    def __init__(self, overrides: dict | None = None, runtime: str = "process"):
        self.runtime = runtime
        self.home = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))
        self.home.chmod(0o755)  # the unprivileged server user must reach its data dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config: dict[str, Any] = {
            "app_name": "roost",
            "uuid": str(uuidlib.uuid4()),
            "token_id": "tid",
            "token": TOKEN,
            "remote": "http://panel.example",
            "allowed_origins": ["*"],
            "api": {"host": "127.0.0.1", "port": self.port},
            "system": {
                "root_directory": str(self.home),
                "data": str(self.home / "volumes"),
                "crash_detection": {"enabled": True, "detect_clean_exit_as_crash": True, "timeout": 60},
            },
            "roost": {
                "servers_directory": str(self.home / "servers"),
                "state_directory": str(self.home / "run"),
                "stop_timeout_s": 10,
                "shutdown_stops_servers": True,
                "stats_interval_s": 1.0,
                "runtime": runtime,
            },
            "docker": {"labels": {"roost.test": "1"}},
        }
        deep_merge(self.config, overrides or {})
        (self.home / "servers").mkdir()
        self.proc: subprocess.Popen | None = None
        self.log_path = self.home / "daemon.log"

    # ---- servers -----------------------------------------------------------------------------

    def add_server(self, doc: dict | None = None, **settings: Any) -> str:
        """Write a server definition file; the default is the demo game."""
        if doc is None:
            sid = settings.pop("uuid", None) or str(uuidlib.uuid4())
            if self.runtime == "docker":
                settings.setdefault("container", {"image": "~roost-test/fakegame:latest"})
            doc = demo_definition(sid, **settings)
            install_demo_files(Path(self.config["system"]["data"]) / sid)
        sid = doc["settings"]["uuid"]
        (self.home / "servers" / f"{sid}.yml").write_text(yaml.safe_dump(doc))
        return sid

    # ---- process -----------------------------------------------------------------------------

    def start(self, timeout: float = 20.0) -> "Node":
        cfg = self.home / "config.yml"
        cfg.write_text(yaml.safe_dump(self.config))
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "roost", "daemon", "--config", str(cfg)],
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited: {self.log_path.read_text()[-3000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("daemon did not start listening")

    def kill9(self) -> None:
        """The daemon dies at once (no shutdown code runs); its servers stay up."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)
        self._log.close()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if hasattr(self, "_log"):
            self._log.close()

    def cleanup(self) -> None:
        self.stop()
        # Servers outlive the daemon by design: make sure no test leaves one behind.
        subprocess.run(["pkill", "-9", "-f", str(self.home)], check=False)
        time.sleep(0.05)
        if self.runtime == "docker":
            names = [d.stem for d in (self.home / "servers").glob("*.yml")]
            if names:
                subprocess.run(["docker", "rm", "-f", *names], capture_output=True, check=False)
        for definition in (self.home / "servers").glob("*.yml"):
            for cg in Path("/sys/fs/cgroup").glob(f"*/roost/{definition.stem}"):
                try:
                    for pid in (cg / "cgroup.procs").read_text().split():
                        os.kill(int(pid), signal.SIGKILL)
                    time.sleep(0.05)
                    cg.rmdir()
                except OSError:
                    pass
        shutil.rmtree(self.home, ignore_errors=True)

    def daemon_log(self) -> str:
        return self.log_path.read_text(errors="replace")

    # ---- tokens and HTTP ---------------------------------------------------------------------

    def token(self, server: str, *, permissions=ADMIN_PERMISSIONS, ttl: int = 600, user: str | None = None,
              user_id: int = 1, now: float | None = None) -> str:
        return mint_websocket_token(
            secret=TOKEN, server_uuid=server, user_uuid=user or str(uuidlib.UUID(int=user_id)), user_id=user_id,
            permissions=permissions, issuer="http://panel.example", node_url=self.url, ttl_s=ttl, now=now,
        )

    async def http(self, method: str, path: str, *, json_body: Any = None, token: str | None = TOKEN,
                   headers: dict | None = None) -> tuple[int, Any, dict]:
        h = dict(headers or {})
        if token is not None:
            h["Authorization"] = f"Bearer {token}"
        async with aiohttp.ClientSession() as s:
            async with s.request(method, self.url + path, json=json_body, headers=h) as r:
                text = await r.text()
                try:
                    body = json.loads(text) if text else None
                except ValueError:
                    body = text
                return r.status, body, CIMultiDict(r.headers)

    def ws_url(self, server: str, query: str = "") -> str:
        return f"ws://127.0.0.1:{self.port}/api/servers/{server}/ws{query}"

    async def client(self, server: str, *, auth: bool = True, token: str | None = None, query: str = "",
                     origin: str | None = None, **kw) -> "Client":
        c = Client(await websockets.connect(self.ws_url(server, query), origin=origin, max_size=None, **kw))
        if auth:
            await c.send("auth", token or self.token(server))
            await c.expect(lambda e: e["event"] == "auth success")
            # the first auth is followed by `status`, and by one `stats` when offline
            status = await c.expect(lambda e: e["event"] == "status")
            if status["args"] == ["offline"]:
                await c.expect(lambda e: e["event"] == "stats")
        return c

    async def power(self, server: str, action: str) -> int:
        status, _, _ = await self.http("POST", f"/api/servers/{server}/power", json_body={"action": action})
        return status


class Client:
    """A websocket client that records every event it receives."""

    def __init__(self, ws):
        self.ws = ws
        self.events: list[dict] = []
        self._cursor = 0

    async def send(self, event: str, *args: str) -> None:
        await self.ws.send(json.dumps({"event": event, "args": list(args)}))

    async def recv(self, timeout: float = 10.0) -> dict:
        raw = await asyncio.wait_for(self.ws.recv(), timeout)
        ev = json.loads(raw)
        self.events.append(ev)
        return ev

    async def expect(self, pred: Callable[[dict], bool], timeout: float = 10.0) -> dict:
        """Wait for the next event matching `pred` (events seen before are kept in `events`)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no matching event; last: {self.events[-5:]}")
            try:
                ev = await self.recv(left)
            except (TimeoutError, asyncio.TimeoutError):
                raise TimeoutError(f"no matching event in {timeout}s; last: {self.events[-5:]}") from None
            if pred(ev):
                return ev

    async def expect_console(self, text: str, timeout: float = 10.0) -> dict:
        return await self.expect(lambda e: e["event"] == "console output" and text in e["args"][0], timeout)

    async def expect_status(self, state: str, timeout: float = 10.0) -> dict:
        return await self.expect(lambda e: e["event"] == "status" and e["args"] == [state], timeout)

    async def quiet(self, seconds: float) -> list[dict]:
        """Collect events for `seconds` (used to assert something did NOT arrive)."""
        got: list[dict] = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                got.append(await self.recv(left))
            except (TimeoutError, asyncio.TimeoutError):
                break
        return got

    async def close(self) -> None:
        await self.ws.close()


class RawClient:
    """A bare-bones websocket client over a plain TCP stream: it can stop reading entirely
    (a stalled peer) and later parse everything the daemon managed to send."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer
        self.buffer = b""

    @classmethod
    async def connect(cls, node: "Node", server: str, rcvbuf: int = 4096) -> "RawClient":
        import base64
        sock = socket.socket()
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", node.port))
        # a small limit: the stream stops reading the socket once 2x this is buffered
        reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 16)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write((f"GET /api/servers/{server}/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                      f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert b" 101 " in head.split(b"\r\n")[0], head
        return cls(reader, writer)

    def send(self, event: str, *args: str) -> None:
        payload = json.dumps({"event": event, "args": list(args)}).encode()
        mask = os.urandom(4)
        n = len(payload)
        header = bytes([0x81, 0x80 | n]) if n < 126 else bytes([0x81, 0x80 | 126]) + n.to_bytes(2, "big")
        self.writer.write(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    async def read_for(self, seconds: float) -> list[dict]:
        """Read whatever arrives for `seconds`, and return the complete text frames."""
        deadline = time.monotonic() + seconds
        chunks = [self.buffer]
        while (left := deadline - time.monotonic()) > 0:
            try:
                chunk = await asyncio.wait_for(self.reader.read(1 << 20), left)
            except (TimeoutError, asyncio.TimeoutError):
                break
            if not chunk:
                break
            chunks.append(chunk)
        frames, i, buf = [], 0, b"".join(chunks)
        while i + 2 <= len(buf):
            op, ln = buf[i] & 0x0F, buf[i + 1] & 0x7F
            j = i + 2
            if ln == 126:
                ln, j = int.from_bytes(buf[j:j + 2], "big"), j + 2
            elif ln == 127:
                ln, j = int.from_bytes(buf[j:j + 8], "big"), j + 8
            if j + ln > len(buf):
                break
            if op == 1:
                frames.append(json.loads(buf[j:j + ln]))
            i = j + ln
        self.buffer = buf[i:]
        return frames

    def close(self) -> None:
        self.writer.close()
