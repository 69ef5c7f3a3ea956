"""The console's pieces without processes: client API errors (against a stand-in, for the
answers the real token service cannot easily be made to give), resume ordering, settings from
`roost up`'s home, the line editor."""
from __future__ import annotations

import argparse
import json

import aiohttp
import pytest
from aiohttp import web

from roost.cli import console as rc

from ..harness import free_port


async def stand_in(status: int, body: dict) -> tuple[web.AppRunner, str]:
    app = web.Application()

    async def answer(request: web.Request) -> web.Response:
        return web.json_response(body, status=status)

    app.router.add_get("/api/client/servers/{server}", answer)
    app.router.add_get("/api/client/servers/{server}/websocket", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}"


def err(status: int, detail: str) -> dict:
    return {"errors": [{"code": "X", "status": str(status), "detail": detail}]}


@pytest.mark.parametrize("status,code,text", [
    (401, rc.EXIT_UNAUTHENTICATED, "refused the API key (401"),
    (403, rc.EXIT_FORBIDDEN, "permission denied for abcd1234 (403) (You do not have permission"),
    (404, rc.EXIT_NOT_FOUND, "no such server: 'abcd1234' (404)"),
])
async def test_client_api_errors_are_fatal_with_their_exit_code(status, code, text):
    runner, url = await stand_in(status, err(status, "You do not have permission to connect"))
    try:
        async with aiohttp.ClientSession() as s:
            api = rc.ClientAPI(s, url, "ptlc_x")
            with pytest.raises(rc.ConsoleError) as e:
                await api.websocket("abcd1234")
            assert e.value.code == code and text in e.value.message
    finally:
        await runner.cleanup()


async def test_client_api_conflicts_and_outages_are_retryable():
    runner, url = await stand_in(409, err(409, "This server is currently installing."))
    try:
        async with aiohttp.ClientSession() as s:
            with pytest.raises(rc.Retryable) as e:
                await rc.ClientAPI(s, url, "ptlc_x").websocket("abcd1234")
            assert e.value.status == 409 and "installing" in str(e.value)
            with pytest.raises(rc.Retryable):  # nothing listens there
                await rc.ClientAPI(s, f"http://127.0.0.1:{free_port()}", "ptlc_x").websocket("abcd1234")
    finally:
        await runner.cleanup()


class Lines:
    interactive = False

    def __init__(self):
        self.status = rc.StatusInfo()
        self.shown: list[str] = []

    def lines(self, lines):
        self.shown += lines

    def notice(self, *a, **kw):
        pass

    def refresh(self):
        pass


class FakeOutbox:
    def __init__(self):
        self.sent = []
        self.buckets = rc._buckets(0.0)

    def put(self, event, *args, label=""):
        self.sent.append((event, *args))


async def test_resume_shows_each_line_once_and_in_order():
    d = Lines()
    c = rc.Console(rc.Settings("http://p", "k", "s"), d)
    for seq in (1, 2, 3):
        c._console_line(f"line {seq}", seq)
    conn = rc.Conn(ws=None, socket="ws://n/api/servers/u/ws", token="t")  # type: ignore[arg-type]
    conn.outbox = FakeOutbox()  # type: ignore[assignment]
    c._request_since(conn)
    assert conn.outbox.sent == [("send logs", "3")]
    # live lines that beat the replay are held, then covered by the replay (which repeats them)
    c._console_line("line 6", 6)
    c._console_line("line 7", 7)
    for seq in (4, 5, 6, 7):
        c._console_line(f"line {seq}", seq)
    c._console_line("line 8", 8)
    c._console_line("line 7", 7)  # a repeat is dropped
    c._console_line("no seq", None)  # frames without seq are always shown
    assert d.shown == [f"line {i}" for i in range(1, 9)] + ["no seq"]


async def test_resume_without_a_replay_flushes_what_was_held_in_order():
    d = Lines()
    c = rc.Console(rc.Settings("http://p", "k", "s"), d)
    c._console_line("line 1", 1)
    conn = rc.Conn(ws=None, socket="ws://n/api/servers/u/ws", token="t")  # type: ignore[arg-type]
    conn.outbox = FakeOutbox()  # type: ignore[assignment]
    c._request_since(conn)
    c._console_line("line 9", 9)  # the node's buffer no longer has 2..8
    c._console_line("line 8", 8)
    c._resync_timeout()
    assert d.shown == ["line 1", "line 8", "line 9"]
    # numbering that restarted (a new log): lines with small seqs not seen before still show
    c._console_line("fresh 1", 1)
    assert d.shown[-1] == "fresh 1"


def test_settings_from_flags_env_and_roost_up_home(tmp_path):
    args = argparse.Namespace(server=None, panel=None, key=None, home=str(tmp_path))
    with pytest.raises(rc.ConsoleError) as e:
        rc.resolve_settings(args, env={})
    assert e.value.code == rc.EXIT_USAGE and "--panel" in e.value.message
    (tmp_path / "config.yml").write_text("remote: http://127.0.0.1:8080\n")
    (tmp_path / "demo-server-uuid").write_text("0f0f0f0f-0000-4000-8000-000000000000\n")
    (tmp_path / "api-key").write_text("ptlc_fromhome\n")
    s = rc.resolve_settings(args, env={})
    assert (s.panel_url, s.api_key, s.server) == ("http://127.0.0.1:8080", "ptlc_fromhome",
                                                  "0f0f0f0f-0000-4000-8000-000000000000")
    (tmp_path / "up.json").write_text(json.dumps({"panel_url": "http://10.0.0.1:9000/", "api_key_file": "k",
                                                       "server": "abcd1234"}))
    (tmp_path / "k").write_text("ptlc_viajson")
    s = rc.resolve_settings(args, env={})
    assert (s.panel_url, s.api_key, s.server) == ("http://10.0.0.1:9000", "ptlc_viajson", "abcd1234")
    s = rc.resolve_settings(argparse.Namespace(server="ffff0000", panel="127.0.0.1:1", key=None, home=str(tmp_path)),
                            env={"ROOST_API_KEY": "ptlc_env"})
    assert (s.panel_url, s.api_key, s.server) == ("http://127.0.0.1:1", "ptlc_env", "ffff0000")


def test_line_editor():
    d = rc.TtyDisplay(rc.StatusInfo(), False, fd_out=-1)
    d.refresh = lambda: None  # type: ignore[method-assign]
    got, quit = [], []
    ed = rc.LineEditor(d, got.append, lambda: quit.append(1), lambda: None)
    ed.feed("say hx\x7fi\x1b[D\x1b[D!\r")  # backspace, two lefts, insert
    ed.feed("abc\x15list\n")  # Ctrl-U
    ed.feed("\x1b[A\r")  # history: the previous line again
    ed.feed("one two\x17three\r")  # Ctrl-W
    ed.feed("x\x03")  # Ctrl-C clears a non-empty line...
    assert not quit
    ed.feed("\x03")  # ...and quits on an empty one
    assert got == ["say !hi", "list", "list", "one three"] and quit == [1]
    assert rc.input_view("abcdefghij", 10, 5) == ("ghij", 4)
    assert rc.input_view("abcdefghij", 0, 5) == ("abcde", 0)


def test_socket_url_and_claims():
    assert rc.socket_url_with_extensions("ws://h:1/api/servers/u/ws") == "ws://h:1/api/servers/u/ws?roost=1"
    assert rc.socket_url_with_extensions("wss://h/api/servers/u/ws?a=b&roost=0") == "wss://h/api/servers/u/ws?a=b&roost=1"
    import jwt

    token = jwt.encode({"exp": 5, "permissions": ["*"]}, "k" * 32, algorithm="HS256")
    assert rc.jwt_claims(token)["permissions"] == ["*"] and rc.jwt_claims("garbage") == {}
    assert rc.has_permission(["*"], "control.start") and not rc.has_permission(["*"], "admin.websocket.errors")
    assert not rc.has_permission(["control.console"], "control.start")
