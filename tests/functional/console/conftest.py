"""A real node (tests/functional/harness.py) behind the real token service, and `roost console`
run as a real process on a pty (pexpect).

The token service runs in a thread with its own event loop, so the tests can block on pexpect
while it answers the console's client API calls.
"""
from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pexpect
import pytest
from aiohttp import web

from roost.demo.definition import demo_definition
from roost.tokenservice.app import build_token_service_app
from roost.tokenservice.service import TokenService
from roost.tokenservice.store import Store

from ..harness import TOKEN, Node, free_port

ERASE = re.compile(r"\r?\x1b\[\d*A\x1b\[J|\r\x1b\[J")
ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")


class PanelThread:
    """The token service (client API) on loopback, served from a background thread."""

    def __init__(self, token_ttl_s: int = 600):
        self.home = Path(tempfile.mkdtemp(prefix="rc", dir="/tmp"))
        self.store = Store.open(self.home)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token_ttl_s = token_ttl_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self.service: TokenService | None = None

    def start(self) -> "PanelThread":
        ready = threading.Event()
        failure: list[BaseException] = []

        def main() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self.service = TokenService(self.store, public_url=self.url, token_ttl_s=self.token_ttl_s,
                                            node_timeout_s=3)
                app = build_token_service_app(self.store, public_url=self.url, service=self.service)
                self._runner = web.AppRunner(app, access_log=None)
                loop.run_until_complete(self._runner.setup())
                loop.run_until_complete(web.TCPSite(self._runner, "127.0.0.1", self.port).start())
            except BaseException as e:  # pragma: no cover - reported to the test
                failure.append(e)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())
            loop.run_until_complete(self.service.close())
            loop.close()

        self._thread = threading.Thread(target=main, name="token-service", daemon=True)
        self._thread.start()
        assert ready.wait(20), "token service did not start"
        if failure:
            raise failure[0]
        return self

    def call(self, coro, timeout: float = 20):
        """Run a coroutine (e.g. a `TokenService` operation) on the service's loop; its result."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def api(self, method: str, path: str, key: str, body: dict | None = None) -> tuple[int, Any]:
        """A client API call, as any client makes it."""
        req = urllib.request.Request(self.url + "/api/client" + path, method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Authorization": f"Bearer {key}", "Accept": "application/json",
                                              "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                raw = r.read()
                return r.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as e:
            raw = e.read()
            return e.code, json.loads(raw) if raw else None

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(20)
        shutil.rmtree(self.home, ignore_errors=True)


class Stack:
    """One node, one token service, a user with a key, and a demo server on the node."""

    def __init__(self, node: Node, panel: PanelThread):
        self.node = node
        self.panel = panel
        store = panel.store
        store.add_node("local", node.url, token_id="tid", token=TOKEN)
        store.create_user("alice")
        self.server_uuid = str(uuid.uuid4())
        node.add_server(uuid=self.server_uuid, name="Demo server")
        self.server = store.create_server(demo_definition(self.server_uuid, name="Demo server"),
                                          owner="alice", node="local")
        self.identifier = self.server.identifier
        self.key = store.create_api_key("alice")[1]

    def wait_state(self, state: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while True:
            status, body = self.panel.api("GET", f"/servers/{self.identifier}/resources", self.key)
            if status == 200 and body["attributes"]["current_state"] == state:
                return
            assert time.monotonic() < deadline, f"server never {state}: {status} {body}"
            time.sleep(0.2)

    def command(self, *extra: str, server: str | None = None, key: str | None = None) -> tuple[list[str], dict]:
        """argv and environment to run the console as a plain process."""
        argv = [sys.executable, "-m", "roost", "console", server or self.identifier, "--panel", self.panel.url,
                *extra]
        env = {**os.environ, "ROOST_API_KEY": key or self.key, "ROOST_HOME": "/nonexistent", "PYTHONUNBUFFERED": "1"}
        return argv, env

    def console(self, *extra: str, server: str | None = None, key: str | None = None, env: dict | None = None,
                timeout: float = 20) -> "ConsoleProc":
        args = ["-m", "roost", "console", server or self.identifier, "--panel", self.panel.url, *extra]
        e = {**os.environ, "ROOST_API_KEY": key or self.key, "TERM": "xterm-256color", "ROOST_HOME": "/nonexistent",
             "PYTHONUNBUFFERED": "1", **(env or {})}
        return ConsoleProc(pexpect.spawn(sys.executable, args, env=e, encoding="utf-8", timeout=timeout,
                                         dimensions=(24, 100), codec_errors="replace"))


class ConsoleProc:
    """A console on a pty; `text()` is everything it printed so far, ANSI removed."""

    def __init__(self, child: pexpect.spawn):
        self.child = child
        self.raw = ""

    def expect(self, pattern: str, timeout: float | None = None) -> str:
        """Wait until `pattern` (a regex on the ANSI-stripped output) appears after earlier matches."""
        deadline = time.monotonic() + (timeout if timeout is not None else self.child.timeout)
        start = getattr(self, "_mark", 0)
        rx = re.compile(pattern)
        while True:
            clean = self.text()
            m = rx.search(clean, start)
            if m:
                self._mark = m.end()
                return m.group(0)
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{pattern!r} not seen; output tail:\n{clean[-3000:]}")
            self.pump(min(left, 0.2))

    def pump(self, seconds: float) -> None:
        """Read whatever the console prints for up to `seconds`."""
        try:
            self.raw += self.child.read_nonblocking(65536, timeout=seconds)
        except pexpect.TIMEOUT:
            pass
        except pexpect.EOF:
            time.sleep(min(seconds, 0.05))

    def drain(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.pump(left)

    def text(self) -> str:
        """Output as lines: footer erases (cursor up + clear) and carriage returns become line
        breaks, so every output line and every drawn footer row stands on its own line."""
        s = ERASE.sub("\n", self.raw)
        return ANSI.sub("", s).replace("\r\n", "\n").replace("\r", "\n")

    def send_line(self, line: str) -> None:
        self.child.send(line + "\r")

    def wait_exit(self, timeout: float = 15) -> int:
        deadline = time.monotonic() + timeout
        while self.child.isalive():
            if time.monotonic() > deadline:
                raise AssertionError(f"console did not exit; tail:\n{self.text()[-2000:]}")
            self.pump(0.1)
        self.drain(0.05)
        self.child.close()
        return self.child.exitstatus if self.child.exitstatus is not None else 128 + (self.child.signalstatus or 0)

    def close(self) -> None:
        if self.child.isalive():
            self.child.terminate(force=True)
        self.child.close()


@pytest.fixture
def make_stack(make_node):
    panels: list[PanelThread] = []
    consoles: list[ConsoleProc] = []

    def factory(*, token_ttl_s: int = 600, node_overrides: dict | None = None) -> Stack:
        node = make_node(node_overrides)
        panel = PanelThread(token_ttl_s).start()
        panels.append(panel)
        stack = Stack(node, panel)
        node.start()
        orig = stack.console

        def console(*a, **kw) -> ConsoleProc:
            c = orig(*a, **kw)
            consoles.append(c)
            return c

        stack.console = console  # type: ignore[method-assign]
        return stack

    yield factory
    for c in consoles:
        c.close()
    for p in panels:
        p.stop()
