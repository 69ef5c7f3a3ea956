"""`roost console [SERVER]`: a terminal attached to one server's console.

It goes through the public path any client uses (http-api.md §3, wire-protocol.md):
client API key → `GET /api/client/servers/{server}` → `GET …/websocket` (token + socket URL)
→ websocket → `auth` → `send logs` → live. It never talks to a node's own API.

- Output is shown as it comes, ANSI colours passed through untouched. Typed lines are sent as
  `send command`; lines starting with `/` are console commands (`/help`): `/start`, `/stop`,
  `/restart`, `/kill`, `/stats`, `/quit`; `//text` sends `/text` to the server.
- On a terminal, the last two rows are a status line (state, cpu, memory, uptime, connection)
  and the input line; output scrolls above them. Anywhere else (pipes, files) it is line
  based: output on stdout, notices on stderr, commands read from stdin.
- `token expiring`: a fresh token from the client API, `auth` on the same socket. `token
  expired` and `jwt error` with the expiry or denylist texts: the same, then the lines missed
  meanwhile are fetched (`send logs <seq>`). Frames are paced to stay inside the daemon's
  per-socket rate limits (wire-protocol §5), so a renewal is never throttled away.
- A network drop or any close code but 1000/1001/1005/4409: reconnect with backoff (1 s
  doubling to 30 s, with jitter) and a fresh token. With roost's `?roost=1` extension console
  frames carry `seq`, and the reconnect resumes with `send logs <last seq>`: no line is shown
  twice and none is lost while it stays in the node's buffer. A node without the extension
  gets a plain `send logs` (recent lines may then repeat).

Settings: `--panel`/`ROOST_PANEL_URL`, `--key`/`ROOST_API_KEY`, else what `roost up` left in
its home (`--home`/`ROOST_HOME`): `up.json` `{"panel_url", "server"}` (optionally `"api_key"` or
`"api_key_file"`), the key in `api-key`, else the node's `config.yml` (`remote`).

Exit status: 0 `/quit`, Ctrl-C/Ctrl-D on an empty line, or end of input; 1 an error (panel
unreachable at start, a token the node refuses for good, ...); 2 usage (no panel URL or key);
3 the key was refused (401); 4 missing permission (403); 5 no such server (404); 6 the node
ended the session for good (server deleted or suspended, normal close).
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import codecs
import json
import os
import random
import signal
import sys
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit, urlunsplit, parse_qsl, urlencode, quote

import aiohttp

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_UNAUTHENTICATED = 3
EXIT_FORBIDDEN = 4
EXIT_NOT_FOUND = 5
EXIT_CLOSED = 6

HTTP_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 15.0
AUTH_TIMEOUT_S = 10.0
HEARTBEAT_S = 15.0  # aiohttp pings; no pong within half of it → the socket is dead
BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 30.0
STABLE_AFTER_S = 10.0  # a connection authenticated this long resets the backoff
RESYNC_WAIT_S = 2.0  # how long to hold live lines while waiting for a `send logs <seq>` replay
QUEUED_MAX_AGE_S = 30.0  # a command that could not be sent by then is dropped, not sent late
EOF_DRAIN_S = 15.0
EOF_LINGER_S = 1.0
RECENT_LINES = 5000

# Close codes after which the panel's own console does not reconnect (wire-protocol §1), plus
# 4409 (suspended).
FINAL_CLOSE_CODES = {1000: "closed by the node", 1001: "server deleted or node going away",
                     1005: "closed by the node", 4409: "server is suspended"}
RENEWABLE_JWT_ERRORS = ("exp claim is invalid", "denylist")
POWER = {"start": "control.start", "stop": "control.stop", "restart": "control.restart", "kill": "control.stop"}

HELP = [
    "/start /stop /restart /kill   power actions",
    "/stats                        ask for fresh stats",
    "/quit (or Ctrl-D, Ctrl-C)     leave the console (the server keeps running)",
    "//text                        send '/text' as a command",
    "anything else is sent to the server as a command",
]


class ConsoleError(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


class Retryable(Exception):
    """A failure worth trying again later (network, 5xx, 409, 429)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


# ---- settings ----------------------------------------------------------------------------------


@dataclass
class Settings:
    panel_url: str
    api_key: str
    server: str
    verbose: bool = False
    no_input: bool = False
    plain: bool = False


def default_home() -> Path:
    """`roost up`'s data directory (the same default as `roost up` and the management CLI)."""
    return Path(os.environ.get("ROOST_HOME", "/var/lib/roost-up" if os.geteuid() == 0
                               else str(Path.home() / ".local/share/roost")))


def home_defaults(home: Path) -> dict[str, str]:
    """Panel URL, key and server left by `roost up` in its home, where readable."""
    found: dict[str, str] = {}
    try:
        doc = json.loads((home / "up.json").read_text())
        if isinstance(doc, dict):
            for k in ("panel_url", "api_key", "server"):
                if isinstance(doc.get(k), str) and doc[k]:
                    found[k] = doc[k]
            if "api_key" not in found and isinstance(doc.get("api_key_file"), str):
                key = _read_small(Path(doc["api_key_file"]) if os.path.isabs(doc["api_key_file"])
                                  else home / doc["api_key_file"])
                if key:
                    found["api_key"] = key
    except (OSError, ValueError):
        pass
    if "panel_url" not in found:
        try:
            import yaml

            cfg = yaml.safe_load((home / "config.yml").read_text())
            if isinstance(cfg, dict) and isinstance(cfg.get("remote"), str) and cfg["remote"]:
                found["panel_url"] = cfg["remote"]
        except Exception:  # unreadable (e.g. another user's 0600 file): no default
            pass
    if "api_key" not in found:
        for name in ("api-key", "admin-key"):
            key = _read_small(home / name)
            if key:
                found["api_key"] = key
                break
    if "server" not in found:
        server = _read_small(home / "demo-server-uuid")
        if server:
            found["server"] = server
    return found


def _read_small(path: Path) -> str | None:
    try:
        text = path.read_text()[:4096].strip()
    except (OSError, ValueError):
        return None
    return text or None


def normalise_panel_url(url: str) -> str:
    url = url.strip().rstrip("/")
    if "://" not in url:
        url = "http://" + url
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConsoleError(EXIT_USAGE, f"roost console: not a panel URL: {url!r} (expected http(s)://host[:port])")
    return url


def resolve_settings(args: argparse.Namespace, env: dict[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    home = Path(args.home) if getattr(args, "home", None) else (
        Path(env["ROOST_HOME"]) if env.get("ROOST_HOME") else default_home())
    defaults = home_defaults(home)
    panel = args.panel or env.get("ROOST_PANEL_URL") or defaults.get("panel_url")
    key = args.key or env.get("ROOST_API_KEY") or defaults.get("api_key")
    server = args.server or env.get("ROOST_SERVER") or defaults.get("server")
    missing = [what for what, value in (("a panel URL (--panel or ROOST_PANEL_URL)", panel),
                                        ("a client API key (--key or ROOST_API_KEY)", key),
                                        ("a server (SERVER argument)", server)) if not value]
    if missing:
        raise ConsoleError(EXIT_USAGE, "roost console: needs " + ", ".join(missing)
                           + f"; no `roost up` defaults found in {home}")
    return Settings(panel_url=normalise_panel_url(panel), api_key=key.strip(), server=server.strip(),
                    verbose=bool(getattr(args, "verbose", False)), no_input=bool(getattr(args, "no_input", False)),
                    plain=bool(getattr(args, "plain", False)))


# ---- the client API ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Credentials:
    token: str
    socket: str

    def claims(self) -> dict[str, Any]:
        return jwt_claims(self.token)


def jwt_claims(token: str) -> dict[str, Any]:
    """The token's claims, unverified (only the node can verify; we only read exp/permissions)."""
    try:
        payload = token.split(".")[1]
        doc = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return doc if isinstance(doc, dict) else {}
    except (IndexError, ValueError):
        return {}


def has_permission(perms: list[str] | None, wanted: str) -> bool:
    """wire-protocol §4: P itself, or `*` for anything not under admin."""
    if perms is None:
        return True  # unknown: let the node decide
    return wanted in perms or ("*" in perms and not wanted.startswith("admin"))


class ClientAPI:
    def __init__(self, session: aiohttp.ClientSession, panel_url: str, api_key: str):
        self.session = session
        self.base = panel_url.rstrip("/") + "/api/client"
        self.headers = {"Authorization": f"Bearer {api_key}", "Accept": "application/json",
                        "User-Agent": "roost-console"}

    async def _get(self, path: str, what: str) -> Any:
        url = self.base + path
        try:
            async with asyncio.timeout(HTTP_TIMEOUT_S):
                async with self.session.get(url, headers=self.headers, allow_redirects=False) as r:
                    text = await r.text()
                    status = r.status
        except (aiohttp.ClientError, OSError, TimeoutError) as e:
            raise Retryable(f"cannot reach the panel at {self.base}: {describe_exc(e)}") from None
        try:
            doc = json.loads(text) if text else None
        except ValueError:
            doc = None
        if status == 200 and doc is not None:
            return doc
        detail = ""
        if isinstance(doc, dict) and isinstance(doc.get("errors"), list) and doc["errors"]:
            first = doc["errors"][0]
            if isinstance(first, dict):
                detail = str(first.get("detail") or "")
        detail = f" ({detail})" if detail else ""
        if status == 401:
            raise ConsoleError(EXIT_UNAUTHENTICATED,
                               f"the panel refused the API key (401 Unauthenticated){detail}: check --key or "
                               "ROOST_API_KEY (a client key, ptlc_…, that has not been revoked)")
        if status == 403:
            raise ConsoleError(EXIT_FORBIDDEN, f"permission denied for {what} (403){detail}")
        if status == 404:
            raise ConsoleError(EXIT_NOT_FOUND, f"no such server: {what!r} (404){detail}: use its 8-character "
                               "identifier or uuid, of a server this key's user can see")
        if status in (409, 429) or status >= 500:
            raise Retryable(f"the panel answered {status}{detail}", status)
        if status == 200:
            raise Retryable("the panel sent a response that is not JSON")
        raise ConsoleError(EXIT_ERROR, f"the panel answered {status}{detail} for {url}")

    async def server(self, ref: str) -> dict[str, Any]:
        doc = await self._get(f"/servers/{quote(ref, safe='')}", ref)
        if not isinstance(doc, dict) or not isinstance(doc.get("attributes"), dict):
            raise Retryable("unexpected answer from the panel (no server attributes)")
        return doc

    async def websocket(self, ref: str) -> Credentials:
        doc = await self._get(f"/servers/{quote(ref, safe='')}/websocket", ref)
        data = doc.get("data") if isinstance(doc, dict) else None
        if not (isinstance(data, dict) and isinstance(data.get("token"), str)
                and isinstance(data.get("socket"), str)):
            raise Retryable("unexpected answer from the panel (no websocket token)")
        return Credentials(token=data["token"], socket=data["socket"])


def describe_exc(e: BaseException) -> str:
    if isinstance(e, TimeoutError):
        return "timed out"
    text = str(e) or type(e).__name__
    return text


def socket_url_with_extensions(url: str) -> str:
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "roost"]
    query.append(("roost", "1"))
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), ""))


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def same_socket(a: str, b: str) -> bool:
    pa, pb = urlsplit(a), urlsplit(b)
    return (pa.scheme, pa.netloc, pa.path) == (pb.scheme, pb.netloc, pb.path)


# ---- pacing: the daemon's per-socket rate limits, mirrored -------------------------------------


class Bucket:
    """A token bucket like the daemon's (wire-protocol §5), slightly slower to stay inside it."""

    def __init__(self, burst: int, refill_s: float, now: float):
        self.burst = burst
        self.refill_s = refill_s * 1.05
        self.tokens = float(burst)
        self.updated = now

    def _refill(self, now: float) -> None:
        self.tokens = min(float(self.burst), self.tokens + max(0.0, now - self.updated) / self.refill_s)
        self.updated = now

    def wait(self, now: float) -> float:
        self._refill(now)
        return 0.0 if self.tokens >= 1.0 else (1.0 - self.tokens) * self.refill_s

    def take(self, now: float) -> None:
        self._refill(now)
        self.tokens -= 1.0

    def empty(self, now: float) -> None:
        self._refill(now)
        self.tokens = 0.0


def _buckets(now: float) -> dict[str, Bucket]:
    return {"*": Bucket(10, 0.2, now), "auth": Bucket(2, 5.0, now), "send logs": Bucket(2, 5.0, now),
            "send command": Bucket(10, 1.0, now), "": Bucket(4, 1.0, now)}


@dataclass
class Outgoing:
    event: str
    args: list[str]
    queued_at: float
    label: str = ""


class Outbox:
    """Frames for one socket: `auth` first, everything else in order and only while the socket
    is authenticated; each sent when the mirrored buckets allow it."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, authed: Callable[[], bool],
                 on_drop: Callable[[Outgoing], None]):
        self.ws = ws
        self._authed = authed
        self._on_drop = on_drop
        self.auth: deque[Outgoing] = deque()
        self.queue: deque[Outgoing] = deque()
        self.buckets = _buckets(time.monotonic())
        self.wake = asyncio.Event()
        self.idle = asyncio.Event()
        self.idle.set()

    def _bucket(self, event: str) -> Bucket:
        return self.buckets.get(event) or self.buckets[""]

    def put(self, event: str, *args: str, label: str = "") -> None:
        item = Outgoing(event, list(args), time.monotonic(), label)
        if event == "auth":
            self.auth.clear()  # only the newest token matters
            self.auth.append(item)
        else:
            self.queue.append(item)
        self.idle.clear()
        self.wake.set()

    def auth_wait(self) -> float:
        now = time.monotonic()
        return max(self._bucket("auth").wait(now), self.buckets["*"].wait(now))

    def _next(self, now: float) -> tuple[Outgoing | None, float]:
        while self.queue and now - self.queue[0].queued_at > QUEUED_MAX_AGE_S:
            self._on_drop(self.queue.popleft())
        if self.auth:
            head, source = self.auth[0], self.auth
        elif self.queue and self._authed():
            head, source = self.queue[0], self.queue
        else:
            return None, 5.0 if self.queue else 60.0
        wait = max(self.buckets["*"].wait(now), self._bucket(head.event).wait(now))
        if wait > 0:
            return None, wait
        source.popleft()
        self.buckets["*"].take(now)
        self._bucket(head.event).take(now)
        return head, 0.0

    async def run(self) -> None:
        while True:
            item, wait = self._next(time.monotonic())
            if item is not None:
                await self.ws.send_str(json.dumps({"event": item.event, "args": item.args}))
                continue
            if not self.auth and not self.queue:
                self.idle.set()
            self.wake.clear()
            try:
                await asyncio.wait_for(self.wake.wait(), wait)
            except TimeoutError:
                pass


# ---- formatting --------------------------------------------------------------------------------


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def fmt_uptime(ms: float) -> str:
    s = int(ms // 1000)
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    if d:
        return f"{d}d{h:02d}h"
    if h:
        return f"{h}h{m:02d}m"
    if m:
        return f"{m}m{s:02d}s"
    return f"{s}s"


STATE_COLOUR = {"running": "32", "starting": "33", "stopping": "33", "offline": "31"}


@dataclass
class StatusInfo:
    name: str = ""
    state: str = "unknown"
    stats: dict[str, Any] = field(default_factory=dict)
    link: str = "connecting"

    def parts(self) -> list[tuple[str, str | None]]:
        """(text, SGR colour or None) segments of the status line."""
        out: list[tuple[str, str | None]] = [(self.name, "1"), (self.state, STATE_COLOUR.get(self.state))]
        st = self.stats
        if st and self.state != "offline":
            try:
                out.append((f"cpu {float(st.get('cpu_absolute', 0)):.1f}%", None))
                mem = fmt_bytes(float(st.get("memory_bytes", 0)))
                limit = float(st.get("memory_limit_bytes", 0) or 0)
                out.append((f"mem {mem}" + (f" / {fmt_bytes(limit)}" if limit else ""), None))
                out.append((f"up {fmt_uptime(float(st.get('uptime', 0)))}", None))
            except (TypeError, ValueError):
                pass
        out.append((self.link, "36" if self.link == "live" else "33"))
        return out

    def plain(self) -> str:
        return " | ".join(t for t, _ in self.parts())


# ---- displays ----------------------------------------------------------------------------------


def _cells(text: str) -> int:
    from rich.cells import cell_len

    return cell_len(text)


def _fit(text: str, width: int) -> str:
    """`text` cut to at most `width` cells."""
    if _cells(text) <= width:
        return text
    from rich.cells import get_character_cell_size

    out, used = [], 0
    for ch in text:
        w = get_character_cell_size(ch)
        if used + w > max(0, width - 1):
            break
        out.append(ch)
        used += w
    return "".join(out) + "…"


def input_view(buf: str, cursor: int, width: int) -> tuple[str, int]:
    """The part of `buf` that fits `width` cells with the cursor visible; (text, cursor cell)."""
    from rich.cells import get_character_cell_size

    sizes = [get_character_cell_size(c) for c in buf]
    start, used = cursor, 0
    while start > 0 and used + sizes[start - 1] <= width - 1:
        start -= 1
        used += sizes[start]
    end, total = start, 0
    while end < len(buf) and total + sizes[end] <= width:
        total += sizes[end]
        end += 1
    return buf[start:end], sum(sizes[start:cursor])


def _write_all(fd: int, data: bytes) -> bool:
    """Write everything; False when the output is gone (terminal hung up, pipe closed)."""
    while data:
        try:
            n = os.write(fd, data)
        except BlockingIOError:
            time.sleep(0.01)
            continue
        except InterruptedError:
            continue
        except OSError:
            return False
        data = data[n:]
    return True


class _Output:
    """Where a display writes; once the output is gone, `on_gone` is called (once)."""

    def __init__(self) -> None:
        self.gone = False
        self.on_gone: Callable[[], None] = lambda: None

    def write(self, fd: int, data: bytes) -> None:
        if self.gone:
            return
        if not _write_all(fd, data):
            self.gone = True
            self.on_gone()


class PlainDisplay(_Output):
    """Line based: console output on stdout, notices on stderr."""

    interactive = False

    def __init__(self, status: StatusInfo, verbose: bool):
        super().__init__()
        self.status = status
        self.verbose = verbose
        self._state_shown = ""

    def start(self) -> None:
        pass

    def lines(self, lines: list[str]) -> None:
        if lines:
            self.write(1, ("\n".join(lines) + "\n").encode("utf-8", "replace"))

    def notice(self, text: str, kind: str = "info") -> None:
        if kind == "echo":
            return
        self.write(2, f"[console] {text}\n".encode("utf-8", "replace"))

    def refresh(self) -> None:
        if self.status.state != self._state_shown and self.status.state != "unknown":
            self._state_shown = self.status.state
            self.notice(f"status: {self.status.state}")

    def close(self) -> None:
        pass


class TtyDisplay(_Output):
    """Output scrolls above a two-row footer: the status line and the input line.

    The footer is erased and drawn again around every batch of output (one write per loop
    turn), so the terminal's own scrollback holds all output and nothing depends on cursor
    addressing beyond "up one row" and "clear to end of screen".
    """

    interactive = True
    PROMPT = "> "

    def __init__(self, status: StatusInfo, verbose: bool, fd_out: int = 1):
        super().__init__()
        self.status = status
        self.verbose = verbose
        self.fd = fd_out
        self.buf = ""
        self.cursor = 0
        self.read_only = False
        self._pending: list[str] = []
        self._scheduled = False
        self._drawn = False
        self._drawn_status_cells = 1
        self._drawn_cursor_cells = 0
        self._closed = False

    def width(self) -> int:
        try:
            return max(20, os.get_terminal_size(self.fd).columns)
        except OSError:
            return 80

    def start(self) -> None:
        self._draw_now()

    def lines(self, lines: list[str]) -> None:
        for line in lines:
            # Colours pass through; a reset after a coloured line keeps them off the footer.
            self._pending.append(line + ("\x1b[0m" if "\x1b" in line else ""))
        self._schedule()

    def notice(self, text: str, kind: str = "info") -> None:
        colour = {"info": "36", "warn": "33", "error": "31", "echo": "2"}.get(kind, "36")
        if kind == "echo":
            self._pending.append(f"\x1b[2m{text}\x1b[0m")
        else:
            self._pending.append(f"\x1b[{colour}m[console]\x1b[0m {text}")
        self._schedule()

    def refresh(self) -> None:
        self._schedule()

    def _schedule(self) -> None:
        if self._closed or self._scheduled:
            return
        self._scheduled = True
        try:
            asyncio.get_running_loop().call_soon(self._draw_now)
        except RuntimeError:
            self._draw_now()

    def _erase(self) -> str:
        """Back to the footer's first row, and clear to the end of the screen. After the
        terminal narrowed, the old rows may have been re-wrapped (most terminals reflow)."""
        if not self._drawn:
            return "\r\x1b[J"
        width = self.width()
        up = -(-self._drawn_status_cells // width) + self._drawn_cursor_cells // width
        return f"\r\x1b[{up}A\x1b[J" if up > 0 else "\r\x1b[J"

    def _footer(self) -> str:
        width = self.width() - 1
        segments, used, parts = [], 0, self.status.parts()
        for i, (text, colour) in enumerate(parts):
            sep = " | " if i else " "
            piece = _fit(sep + text, width - used)
            if not piece:
                break
            used += _cells(piece)
            segments.append(f"\x1b[{colour}m{piece}\x1b[39m" if colour else piece)
            if used >= width:
                break
        pad = " " * max(0, width - used)
        status = "\x1b[0;7m" + "".join(segments) + pad + "\x1b[0m"
        prompt = ("(read-only) " if self.read_only else "") + self.PROMPT
        visible, col = input_view(self.buf, self.cursor, max(1, width - _cells(prompt)))
        col += _cells(prompt)
        self._drawn_status_cells = max(1, used + len(pad))
        self._drawn_cursor_cells = col
        line = f"\x1b[1m{prompt}\x1b[0m{visible}"
        return status + "\r\n" + line + ("\r" + (f"\x1b[{col}C" if col else ""))

    def _draw_now(self) -> None:
        self._scheduled = False
        if self._closed:
            return
        out = [self._erase()]
        if self._pending:
            out.append("\r\n".join(self._pending) + "\r\n")
            self._pending.clear()
        out.append(self._footer())
        self._drawn = True
        self.write(self.fd, "".join(out).encode("utf-8", "replace"))

    def clear_screen(self) -> None:
        self.write(self.fd, b"\x1b[H\x1b[2J")
        self._drawn = False
        self._draw_now()

    def suspend(self) -> None:
        """Take the footer away (before Ctrl-Z or exit)."""
        out = self._erase()
        if self._pending:
            out += "\r\n".join(self._pending) + "\r\n"
            self._pending.clear()
        self._drawn = False
        self.write(self.fd, out.encode("utf-8", "replace"))

    def close(self) -> None:
        if not self._closed:
            self.suspend()
            self._closed = True


# ---- input -------------------------------------------------------------------------------------


class LineEditor:
    """Keys from a terminal in cbreak mode (no echo, no signals) → an edited input line.

    Enter submits; editing: ←/→, Home/End, Ctrl-A/E/B/F, Backspace, Delete, Ctrl-U/K/W,
    ↑/↓ history, Ctrl-L redraws; Ctrl-C clears the line or, when empty, quits; Ctrl-D on an
    empty line quits; Ctrl-Z suspends.
    """

    def __init__(self, display: TtyDisplay, submit: Callable[[str], None], quit: Callable[[], None],
                 suspend: Callable[[], None]):
        self.d = display
        self.submit = submit
        self.quit = quit
        self.suspend = suspend
        self.history: list[str] = []
        self.hpos = 0
        self._esc: str | None = None
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def feed_bytes(self, data: bytes) -> None:
        self.feed(self._decoder.decode(data))

    def feed(self, text: str) -> None:
        d = self.d
        for ch in text:
            if self._esc is not None:
                self._esc += ch
                if self._escape_done():
                    seq, self._esc = self._esc, None
                    self._key_sequence(seq)
                continue
            if ch == "\x1b":
                self._esc = ch
            elif ch in "\r\n":
                line = d.buf
                d.buf, d.cursor = "", 0
                if line.strip() and (not self.history or self.history[-1] != line):
                    self.history.append(line)
                self.hpos = len(self.history)
                if line.strip():
                    self.submit(line)
            elif ch in "\x7f\x08":
                if d.cursor > 0:
                    d.buf = d.buf[:d.cursor - 1] + d.buf[d.cursor:]
                    d.cursor -= 1
            elif ch == "\x03":
                if d.buf:
                    d.buf, d.cursor = "", 0
                else:
                    self.quit()
            elif ch == "\x04":
                if not d.buf:
                    self.quit()
                else:
                    d.buf = d.buf[:d.cursor] + d.buf[d.cursor + 1:]
            elif ch == "\x1a":
                self.suspend()
            elif ch == "\x01":
                d.cursor = 0
            elif ch == "\x05":
                d.cursor = len(d.buf)
            elif ch == "\x02":
                d.cursor = max(0, d.cursor - 1)
            elif ch == "\x06":
                d.cursor = min(len(d.buf), d.cursor + 1)
            elif ch == "\x15":
                d.buf, d.cursor = d.buf[d.cursor:], 0
            elif ch == "\x0b":
                d.buf = d.buf[:d.cursor]
            elif ch == "\x17":
                left = d.buf[:d.cursor].rstrip()
                cut = left.rfind(" ") + 1
                d.buf, d.cursor = d.buf[:cut] + d.buf[d.cursor:], cut
            elif ch == "\x0c":
                d.clear_screen()
            elif ch == "\x10":
                self._history(-1)
            elif ch == "\x0e":
                self._history(+1)
            elif ch == "\t" or ord(ch) < 32:
                pass
            else:
                d.buf = d.buf[:d.cursor] + ch + d.buf[d.cursor:]
                d.cursor += 1
        d.refresh()

    def _escape_done(self) -> bool:
        s = self._esc or ""
        if len(s) < 2:
            return False
        if s[1] == "[":
            return len(s) > 2 and 0x40 <= ord(s[-1]) <= 0x7E
        if s[1] == "O":
            return len(s) >= 3
        return True  # Alt+key: ignored

    def _key_sequence(self, seq: str) -> None:
        d = self.d
        if seq in ("\x1b[A", "\x1bOA"):
            self._history(-1)
        elif seq in ("\x1b[B", "\x1bOB"):
            self._history(+1)
        elif seq in ("\x1b[C", "\x1bOC"):
            d.cursor = min(len(d.buf), d.cursor + 1)
        elif seq in ("\x1b[D", "\x1bOD"):
            d.cursor = max(0, d.cursor - 1)
        elif seq in ("\x1b[H", "\x1bOH", "\x1b[1~", "\x1b[7~"):
            d.cursor = 0
        elif seq in ("\x1b[F", "\x1bOF", "\x1b[4~", "\x1b[8~"):
            d.cursor = len(d.buf)
        elif seq == "\x1b[3~":
            d.buf = d.buf[:d.cursor] + d.buf[d.cursor + 1:]
        # anything else (function keys, Alt+key): ignored

    def _history(self, step: int) -> None:
        d = self.d
        if not self.history:
            return
        self.hpos = min(len(self.history), max(0, self.hpos + step))
        d.buf = self.history[self.hpos] if self.hpos < len(self.history) else ""
        d.cursor = len(d.buf)


class Terminal:
    """The controlling terminal in cbreak mode while the console runs; restored on exit."""

    def __init__(self, fd: int = 0):
        self.fd = fd
        self.saved: list | None = None

    def enter(self) -> None:
        import termios

        if self.saved is None:
            self.saved = termios.tcgetattr(self.fd)
        mode = termios.tcgetattr(self.fd)
        mode[0] &= ~(termios.IXON | termios.ISTRIP | termios.INPCK)
        mode[3] &= ~(termios.ECHO | termios.ICANON | termios.ISIG | termios.IEXTEN)
        mode[6][termios.VMIN] = 1
        mode[6][termios.VTIME] = 0
        termios.tcsetattr(self.fd, termios.TCSADRAIN, mode)

    def leave(self) -> None:
        import termios

        if self.saved is not None:
            try:
                termios.tcsetattr(self.fd, termios.TCSADRAIN, self.saved)
            except termios.error:
                pass


# ---- the console -------------------------------------------------------------------------------


@dataclass
class Conn:
    ws: aiohttp.ClientWebSocketResponse
    socket: str
    token: str
    outbox: Outbox | None = None
    authed: bool = False
    ever_authed: bool = False
    authed_at: float = 0.0
    needs_gap_fill: bool = False
    renewal: asyncio.Task | None = None
    tasks: set = field(default_factory=set)
    reconnect_now: str = ""  # set when the socket must be replaced (server moved)
    permissions: list[str] | None = None


class Console:
    def __init__(self, settings: Settings, display: PlainDisplay | TtyDisplay):
        self.s = settings
        self.display = display
        self.status = display.status
        self.exit_code: int | None = None
        self.exit_message = ""
        self.done = asyncio.Event()
        self.http: aiohttp.ClientSession | None = None
        self.api: ClientAPI | None = None
        self.conn: Conn | None = None
        self.server_ref = settings.server
        self.permissions: list[str] | None = None
        # resume state, kept across connections
        self.seq_supported: bool | None = None
        self.last_seq: int | None = None
        self.recent: OrderedDict[int, str] = OrderedDict()
        self.resync_after: int | None = None  # holding live lines until the replay after this seq
        self.resync_held: dict[int, str] = {}
        self.resync_timer: asyncio.TimerHandle | None = None
        self.sent_commands = 0
        self.eof = False
        self.first_auth = asyncio.Event()

    # ---- lifecycle ---------------------------------------------------------------------------

    def finish(self, code: int, message: str = "") -> None:
        if self.exit_code is None:
            self.exit_code = code
            self.exit_message = message
        self.done.set()

    async def prepare(self) -> dict[str, Any]:
        """Before the terminal is taken over: the panel answers and knows the server."""
        assert self.api is not None
        try:
            doc = await self.api.server(self.server_ref)
        except Retryable as e:
            raise ConsoleError(EXIT_ERROR, str(e)) from None
        attrs = doc["attributes"]
        meta = doc.get("meta") if isinstance(doc.get("meta"), dict) else {}
        perms = meta.get("user_permissions")
        self.permissions = [p for p in perms if isinstance(p, str)] if isinstance(perms, list) else None
        # The identifier is what the panel's URLs use; keep asking by it.
        self.server_ref = str(attrs.get("identifier") or attrs.get("uuid") or self.server_ref)
        self.status.name = f"{attrs.get('name') or self.server_ref} ({self.server_ref})"
        if attrs.get("is_suspended") is True:
            raise ConsoleError(EXIT_CLOSED, f"the server {self.server_ref} is suspended")
        if self.permissions is not None and not has_permission(self.permissions, "websocket.connect"):
            raise ConsoleError(EXIT_FORBIDDEN, "permission denied: this user may not connect to the server's "
                               "console (websocket.connect)")
        return attrs

    async def run(self) -> int:
        main = asyncio.create_task(self._connection_loop())
        done_wait = asyncio.create_task(self.done.wait())
        try:
            await asyncio.wait({main, done_wait}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (main, done_wait):
                t.cancel()
            await asyncio.gather(main, done_wait, return_exceptions=True)
            if self.conn is not None:
                await self._close_conn(self.conn)
        if main.done() and not main.cancelled() and main.exception() is not None:
            exc = main.exception()
            if isinstance(exc, ConsoleError):
                self.finish(exc.code, exc.message)
            else:
                self.finish(EXIT_ERROR, f"internal error: {type(exc).__name__}: {exc}")
        return self.exit_code if self.exit_code is not None else EXIT_OK

    # ---- connections -------------------------------------------------------------------------

    async def _connection_loop(self) -> None:
        assert self.api is not None
        attempt = 0
        while not self.done.is_set():
            reason = ""
            try:
                creds = await self.api.websocket(self.server_ref)
                authed_for = await self._session(creds)
                if authed_for >= STABLE_AFTER_S:
                    attempt = 0
            except ConsoleError as e:
                self.finish(e.code, e.message)
                return
            except FinalClose as e:
                self.finish(EXIT_CLOSED, str(e))
                return
            except Retryable as e:
                reason = str(e)
                if e.status == 409 and await self._suspended():
                    self.finish(EXIT_CLOSED, f"the server {self.server_ref} is suspended")
                    return
            except Dropped as e:
                reason = str(e)
            except (aiohttp.ClientError, OSError, TimeoutError) as e:
                reason = f"connection failed: {describe_exc(e)}"
            if self.done.is_set():
                return
            if self.conn is not None and self.conn.reconnect_now:
                reason, delay = self.conn.reconnect_now, 0.0
            else:
                base = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * (2 ** attempt))
                delay = min(BACKOFF_MAX_S, base * random.uniform(0.75, 1.25))
                attempt += 1
            self.conn = None
            self.status.link = f"reconnecting in {delay:.0f}s" if delay >= 1 else "reconnecting"
            self.display.notice(f"{reason}; reconnecting in {delay:.1f} s (attempt {attempt})", "warn")
            self.display.refresh()
            await asyncio.sleep(delay)

    async def _suspended(self) -> bool:
        """After a 409: is the server suspended (for good), rather than installing or moving?"""
        assert self.api is not None
        try:
            doc = await self.api.server(self.server_ref)
        except Retryable:
            return False
        return doc["attributes"].get("is_suspended") is True

    async def _session(self, creds: Credentials) -> float:
        """One socket, from connect to close. Returns how long it stayed authenticated."""
        assert self.http is not None
        url = socket_url_with_extensions(creds.socket)
        self.status.link = "connecting"
        self.display.refresh()
        try:
            ws = await asyncio.wait_for(
                self.http.ws_connect(url, origin=origin_of(self.s.panel_url), heartbeat=HEARTBEAT_S,
                                     autoping=True, timeout=aiohttp.ClientWSTimeout(ws_close=5.0)),
                CONNECT_TIMEOUT_S)
        except aiohttp.WSServerHandshakeError as e:
            if e.status == 403:
                origin = origin_of(self.s.panel_url)
                raise ConsoleError(EXIT_ERROR, f"the node refused the websocket (403, origin {origin} not allowed?): "
                                   "add the panel URL to the node's allowed_origins") from None
            raise Retryable(f"the node refused the websocket ({e.status} {e.message})") from None
        conn = Conn(ws=ws, socket=creds.socket, token=creds.token, permissions=creds.claims().get("permissions"))
        conn.outbox = Outbox(ws, authed=lambda: conn.authed, on_drop=self._dropped_item)
        self.conn = conn
        sender = asyncio.create_task(conn.outbox.run())
        conn.tasks.add(sender)
        try:
            conn.outbox.put("auth", creds.token)
            deadline = time.monotonic() + AUTH_TIMEOUT_S
            while True:
                timeout = None if conn.ever_authed else max(0.05, deadline - time.monotonic())
                try:
                    msg = await ws.receive(timeout=timeout)
                except TimeoutError:
                    raise Dropped("no answer to auth in time") from None
                if msg.type == aiohttp.WSMsgType.TEXT:
                    self._on_frame(conn, msg.data)
                    if self.done.is_set():
                        break
                    continue
                if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED,
                                aiohttp.WSMsgType.ERROR):
                    break
                # binary frames: ignored
            if self.done.is_set():
                return 0.0
            code = ws.close_code
            extra = f" {msg.extra}" if msg.type == aiohttp.WSMsgType.CLOSE and msg.extra else ""
            authed_for = time.monotonic() - conn.authed_at if conn.ever_authed else 0.0
            if conn.reconnect_now:
                raise Dropped(conn.reconnect_now)
            if code in FINAL_CLOSE_CODES:
                raise FinalClose(f"the node closed the console ({code}{extra or ': ' + FINAL_CLOSE_CODES[code]})")
            if code is None or code == 1006:
                raise Dropped(f"connection lost{': ' + describe_exc(ws.exception()) if ws.exception() else ''}")
            raise Dropped(f"the node closed the connection ({code}{extra})")
        finally:
            await self._close_conn(conn)

    async def _close_conn(self, conn: Conn) -> None:
        for t in list(conn.tasks) + ([conn.renewal] if conn.renewal else []):
            t.cancel()
        await asyncio.gather(*conn.tasks, *([conn.renewal] if conn.renewal else []), return_exceptions=True)
        conn.tasks.clear()
        conn.authed = False
        if not conn.ws.closed:
            try:
                await asyncio.wait_for(conn.ws.close(), 5)
            except (TimeoutError, aiohttp.ClientError, OSError):
                pass

    def _spawn(self, conn: Conn, coro) -> asyncio.Task:
        task = asyncio.create_task(coro)
        conn.tasks.add(task)
        task.add_done_callback(conn.tasks.discard)
        return task

    def _dropped_item(self, item: Outgoing) -> None:
        self.display.notice(f"not sent (not authenticated in time): {item.label or item.event}", "warn")

    # ---- inbound events ----------------------------------------------------------------------

    def _on_frame(self, conn: Conn, raw: str) -> None:
        try:
            ev = json.loads(raw)
        except ValueError:
            return
        if not isinstance(ev, dict) or not isinstance(ev.get("event"), str):
            return
        name = ev["event"]
        args = ev.get("args") if isinstance(ev.get("args"), list) else []
        arg = args[0] if args and isinstance(args[0], str) else ""
        if name == "console output":
            self._console_line(arg, ev.get("seq"))
        elif name == "status":
            if arg:
                self.status.state = arg
                if arg == "offline":
                    self.status.stats = {}
                self.display.refresh()
        elif name == "stats":
            try:
                doc = json.loads(arg)
            except ValueError:
                return
            if isinstance(doc, dict):
                self.status.stats = doc
                if isinstance(doc.get("state"), str) and doc["state"]:
                    self.status.state = doc["state"]
                self.display.refresh()
        elif name == "auth success":
            self._auth_success(conn)
        elif name == "token expiring":
            if self.s.verbose:
                self.display.notice("token expiring: renewing")
            self._renew(conn)
        elif name == "token expired":
            conn.authed = False
            conn.needs_gap_fill = True
            self.status.link = "renewing token"
            self.display.refresh()
            if self.s.verbose:
                self.display.notice("token expired: renewing")
            self._renew(conn)
        elif name == "jwt error":
            self._jwt_error(conn, arg)
        elif name == "daemon error":
            self.display.notice(arg or "daemon error", "error")
        elif name in ("daemon message", "install output", "transfer logs"):
            self.display.lines([arg])
        elif name == "install started":
            self.display.notice("installation started")
        elif name == "install completed":
            self.display.notice("installation completed")
        elif name == "transfer status":
            self.display.notice(f"transfer: {arg}")
        elif name == "backup completed":
            self.display.notice("backup completed")
        elif name == "backup restore completed":
            self.display.notice("backup restored")
        elif name == "deleted":
            self.display.notice("the server was deleted", "error")
        elif name == "throttled":
            self.display.notice(f"the node throttled {arg or 'a message'}", "warn")
            if arg == "auth" and conn.outbox is not None:
                conn.outbox.buckets["auth"].empty(time.monotonic())
                self._renew(conn)

    def _auth_success(self, conn: Conn) -> None:
        was_authed_before = conn.ever_authed
        conn.authed = True
        self.status.link = "live"
        assert conn.outbox is not None
        if not was_authed_before:
            conn.ever_authed = True
            conn.authed_at = time.monotonic()
            first_ever = not self.first_auth.is_set()
            self.first_auth.set()
            if first_ever:
                conn.outbox.put("send logs")
                self.display.notice(f"connected to {self.status.name}; /help for commands")
            elif self.seq_supported and self.last_seq is not None:
                self._request_since(conn)
                self.display.notice("reconnected")
            else:
                conn.outbox.put("send logs")
                self.display.notice("reconnected (this node cannot resume: recent lines may repeat)")
        else:
            if self.s.verbose:
                self.display.notice("token renewed")
            if conn.needs_gap_fill:
                conn.needs_gap_fill = False
                if self.seq_supported and self.last_seq is not None:
                    self._request_since(conn)
                conn.outbox.put("send stats")  # status events were not delivered meanwhile
        conn.outbox.wake.set()
        self.display.refresh()

    def _jwt_error(self, conn: Conn, text: str) -> None:
        if any(t in text for t in RENEWABLE_JWT_ERRORS):
            conn.authed = False
            conn.needs_gap_fill = conn.ever_authed
            self.status.link = "renewing token"
            self.display.refresh()
            if self.s.verbose or "denylist" in text:
                self.display.notice(f"{text}: fetching a new token", "warn")
            self._renew(conn)
            return
        if not conn.ever_authed:
            raise ConsoleError(EXIT_ERROR, f"the node refused the console token: {text}")
        self.display.notice(text, "error")

    # ---- token renewal -----------------------------------------------------------------------

    def _renew(self, conn: Conn) -> None:
        if conn.renewal is not None and not conn.renewal.done():
            return
        conn.renewal = asyncio.create_task(self._renewal(conn))

    async def _renewal(self, conn: Conn) -> None:
        """A fresh token from the client API, sent as `auth` on the same socket."""
        assert self.api is not None and conn.outbox is not None
        # Wait for an `auth` slot first, so the token is as fresh as possible when it is used.
        wait = conn.outbox.auth_wait()
        if wait > 0:
            await asyncio.sleep(wait)
        delay = 0.5
        while True:
            try:
                creds = await self.api.websocket(self.server_ref)
                break
            except ConsoleError as e:
                self.finish(e.code, e.message)
                return
            except Retryable as e:
                self.display.notice(f"token renewal: {e}; retrying in {delay:.0f} s", "warn")
                await asyncio.sleep(delay)
                delay = min(10.0, delay * 2)
        if not same_socket(creds.socket, conn.socket):
            conn.reconnect_now = "the server moved to another node"
            self._spawn(conn, conn.ws.close(code=1000, message=b"moving"))
            return
        conn.token = creds.token
        conn.permissions = creds.claims().get("permissions")
        conn.outbox.put("auth", creds.token)

    # ---- console lines and resume ------------------------------------------------------------

    def _request_since(self, conn: Conn) -> None:
        assert conn.outbox is not None and self.last_seq is not None
        self.resync_after = self.last_seq
        self.resync_held.clear()
        conn.outbox.put("send logs", str(self.last_seq))
        if self.resync_timer is not None:
            self.resync_timer.cancel()
        # The hold ends when the replay starts, or after a while (counted from the request).
        wait = conn.outbox.buckets["send logs"].wait(time.monotonic())
        self.resync_timer = asyncio.get_running_loop().call_later(RESYNC_WAIT_S + wait, self._resync_timeout)

    def _resync_timeout(self) -> None:
        self.resync_timer = None
        if self.resync_after is None:
            return
        self.resync_after = None
        held = sorted(self.resync_held.items())
        self.resync_held.clear()
        for seq, text in held:
            self._show_seq(seq, text)

    def _console_line(self, text: str, seq: Any) -> None:
        if not isinstance(seq, int) or isinstance(seq, bool):
            self.display.lines([text])
            return
        self.seq_supported = True
        if self.resync_after is not None:
            if seq == self.resync_after + 1:
                # The replay starts: it covers everything held (those came before it).
                self.resync_after = None
                self.resync_held.clear()
                if self.resync_timer is not None:
                    self.resync_timer.cancel()
                    self.resync_timer = None
            elif seq > self.resync_after:
                self.resync_held[seq] = text
                if len(self.resync_held) > RECENT_LINES:
                    self._resync_timeout()
                return
        self._show_seq(seq, text)

    def _show_seq(self, seq: int, text: str) -> None:
        if self.recent.get(seq) == text:
            return  # shown already
        self.recent[seq] = text
        self.recent.move_to_end(seq)
        while len(self.recent) > RECENT_LINES:
            self.recent.popitem(last=False)
        self.last_seq = seq
        self.display.lines([text])

    # ---- input -------------------------------------------------------------------------------

    def submit(self, line: str) -> None:
        """One line typed (or read from stdin)."""
        stripped = line.strip()
        if not stripped:
            return
        if stripped.startswith("/") and not stripped.startswith("//"):
            self._local_command(stripped[1:])
            return
        if stripped.startswith("//"):
            line = line.lstrip()[1:]
        self._send_command(line)

    def _current_permissions(self) -> list[str] | None:
        if self.conn is not None and isinstance(self.conn.permissions, list):
            return self.conn.permissions
        return self.permissions

    def _usable_conn(self, what: str) -> Conn | None:
        conn = self.conn
        if conn is None or conn.outbox is None or not conn.ever_authed:
            self.display.notice(f"not connected: {what} not sent", "warn")
            return None
        return conn

    def _send_command(self, line: str) -> None:
        if not has_permission(self._current_permissions(), "control.console"):
            self.display.notice("permission denied: this user may not send commands (control.console)", "error")
            return
        conn = self._usable_conn("command")
        if conn is None:
            return
        self.display.notice(f"> {line}", "echo")
        assert conn.outbox is not None
        conn.outbox.put("send command", line, label=line)
        self.sent_commands += 1

    def _local_command(self, text: str) -> None:
        verb = text.split()[0].lower() if text.split() else ""
        if verb in ("quit", "exit", "q"):
            self.finish(EXIT_OK)
        elif verb in POWER:
            if not has_permission(self._current_permissions(), POWER[verb]):
                self.display.notice(f"permission denied: /{verb} needs {POWER[verb]}", "error")
                return
            conn = self._usable_conn(f"/{verb}")
            if conn is not None and conn.outbox is not None:
                self.display.notice(f"/{verb}", "echo")
                conn.outbox.put("set state", verb, label=f"/{verb}")
                self.sent_commands += 1
        elif verb == "stats":
            conn = self._usable_conn("/stats")
            if conn is not None and conn.outbox is not None:
                conn.outbox.put("send stats")
        elif verb in ("help", "h", "?"):
            for line in HELP:
                self.display.notice(line)
        else:
            self.display.notice(f"unknown command /{verb}; /help lists them (//{text} sends it to the server)",
                                "warn")

    async def end_of_input(self) -> None:
        """stdin ended: send what is queued (bounded), show answers briefly, quit with 0."""
        self.eof = True
        deadline = time.monotonic() + EOF_DRAIN_S
        while time.monotonic() < deadline and not self.done.is_set():
            conn = self.conn
            if conn is not None and conn.outbox is not None and conn.outbox.idle.is_set() and conn.authed:
                break
            await asyncio.sleep(0.05)
        if self.sent_commands and not self.done.is_set():
            await asyncio.sleep(EOF_LINGER_S)
        self.finish(EXIT_OK)


class FinalClose(Exception):
    pass


class Dropped(Exception):
    pass


# ---- wiring ------------------------------------------------------------------------------------


def _stdin_lines_reader(console: Console, loop: asyncio.AbstractEventLoop) -> Callable[[], None]:
    """Lines from a non-terminal stdin, without blocking the loop. Returns a stop function."""
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    pending = [""]
    stopped = [False]

    def feed(data: bytes) -> None:
        if not data:
            if pending[0].strip():
                console.submit(pending[0])
            pending[0] = ""
            stop()
            loop.create_task(console.end_of_input())
            return
        pending[0] += decoder.decode(data)
        *lines, pending[0] = pending[0].split("\n")
        for line in lines:
            console.submit(line.rstrip("\r"))

    def on_readable() -> None:
        try:
            data = os.read(0, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        feed(data)

    try:
        loop.add_reader(0, on_readable)

        def stop() -> None:
            if not stopped[0]:
                stopped[0] = True
                loop.remove_reader(0)
        return stop
    except (PermissionError, ValueError, OSError):
        pass

    # Regular files and /dev/null cannot be polled: read them in a thread.
    def stop() -> None:
        stopped[0] = True

    async def pump() -> None:
        while not stopped[0]:
            data = await loop.run_in_executor(None, os.read, 0, 65536)
            if stopped[0]:
                return
            feed(data)
            if not data:
                return

    loop.create_task(pump())
    return stop


async def _amain(settings: Settings) -> int:
    interactive = (not settings.plain and os.isatty(0) and os.isatty(1)
                   and os.environ.get("TERM", "dumb") not in ("", "dumb"))
    status = StatusInfo(name=settings.server)
    display: PlainDisplay | TtyDisplay = (TtyDisplay(status, settings.verbose) if interactive
                                          else PlainDisplay(status, settings.verbose))
    console = Console(settings, display)
    display.on_gone = lambda: console.finish(EXIT_OK)  # nobody to show anything to
    loop = asyncio.get_running_loop()
    connector = aiohttp.TCPConnector(limit=8)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None)) as http:
        console.http = http
        console.api = ClientAPI(http, settings.panel_url, settings.api_key)
        try:
            await console.prepare()
        except ConsoleError as e:
            _write_all(2, f"roost console: {e.message}\n".encode("utf-8", "replace"))
            return e.code
        terminal = Terminal(0) if interactive else None
        stop_input: Callable[[], None] | None = None
        reader_task: asyncio.Task | None = None
        handled: list[int] = []

        def on_signal(signum: int) -> None:
            console.finish(EXIT_OK if signum == signal.SIGINT and interactive else 128 + signum)

        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            try:
                loop.add_signal_handler(sig, on_signal, sig)
                handled.append(sig)
            except (ValueError, RuntimeError, NotImplementedError):
                pass
        try:
            if interactive:
                assert isinstance(display, TtyDisplay) and terminal is not None
                display.read_only = not has_permission(console.permissions, "control.console")

                def suspend() -> None:  # Ctrl-Z: give the terminal back, stop, come back
                    display.suspend()
                    terminal.leave()
                    os.kill(os.getpid(), signal.SIGTSTP)

                def resumed() -> None:
                    terminal.enter()
                    display.refresh()

                editor = LineEditor(display, console.submit, lambda: console.finish(EXIT_OK), suspend)
                terminal.enter()
                loop.add_signal_handler(signal.SIGCONT, resumed)
                loop.add_signal_handler(signal.SIGWINCH, display.refresh)
                handled += [signal.SIGCONT, signal.SIGWINCH]

                def on_key() -> None:
                    try:
                        data = os.read(0, 4096)
                    except (BlockingIOError, InterruptedError):
                        return
                    except OSError:
                        data = b""
                    if not data:  # the terminal went away
                        loop.remove_reader(0)
                        console.finish(EXIT_OK)
                        return
                    editor.feed_bytes(data)

                loop.add_reader(0, on_key)
                stop_input = lambda: loop.remove_reader(0)  # noqa: E731
                display.start()
            elif not settings.no_input:
                async def start_reading() -> None:
                    # Commands from a pipe wait for the console to be attached.
                    await console.first_auth.wait()
                    nonlocal stop_input
                    stop_input = _stdin_lines_reader(console, loop)

                reader_task = loop.create_task(start_reading())
            code = await console.run()
        finally:
            if stop_input is not None:
                try:
                    stop_input()
                except Exception:
                    pass
            if reader_task is not None:
                reader_task.cancel()
            display.close()
            if terminal is not None:
                terminal.leave()
            for sig in handled:
                try:
                    loop.remove_signal_handler(sig)
                except Exception:
                    pass
    if console.exit_message:
        _write_all(2, f"roost console: {console.exit_message}\n".encode("utf-8", "replace"))
    return code


def cmd_console(args: argparse.Namespace) -> int:
    try:
        settings = resolve_settings(args)
    except ConsoleError as e:
        print(e.message, file=sys.stderr)
        return e.code
    try:
        return asyncio.run(_amain(settings))
    except KeyboardInterrupt:
        return 130


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("console", help="attach this terminal to a server's console (through the client API)",
                       description="Attach to a server's console through the client API: live output, "
                                   "commands, /start /stop /restart /kill, status line. /help inside.")
    p.add_argument("server", nargs="?", help="identifier (8 characters) or uuid; default: roost up's demo server")
    p.add_argument("--panel", help="panel URL, e.g. http://127.0.0.1:8080 (env ROOST_PANEL_URL)")
    p.add_argument("--key", help="client API key ptlc_… (env ROOST_API_KEY; safer than the command line)")
    p.add_argument("--home", help="roost up's data directory, for defaults (env ROOST_HOME)")
    p.add_argument("--plain", action="store_true", help="line mode even on a terminal (no status line)")
    p.add_argument("--no-input", action="store_true", help="only show output; do not read stdin")
    p.add_argument("-v", "--verbose", action="store_true", help="also show token renewals")
    p.set_defaults(func=cmd_console)
