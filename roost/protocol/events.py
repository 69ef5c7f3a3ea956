"""Every wire event name, and pure builders for outbound frames.

Wire strings live here and nowhere else. Builders return the serialized text frame so a
console line is encoded once and shared by every socket (design note 7).
"""
from __future__ import annotations

import json
from json.encoder import encode_basestring
from typing import Any

# inbound
AUTH = "auth"
SET_STATE = "set state"
SEND_COMMAND = "send command"
SEND_LOGS = "send logs"
SEND_STATS = "send stats"

# outbound
AUTH_SUCCESS = "auth success"
STATUS = "status"
CONSOLE_OUTPUT = "console output"
STATS = "stats"
DAEMON_MESSAGE = "daemon message"
DAEMON_ERROR = "daemon error"
JWT_ERROR = "jwt error"
TOKEN_EXPIRING = "token expiring"
TOKEN_EXPIRED = "token expired"
INSTALL_STARTED = "install started"
INSTALL_OUTPUT = "install output"
INSTALL_COMPLETED = "install completed"
BACKUP_COMPLETED = "backup completed"
BACKUP_RESTORE_COMPLETED = "backup restore completed"
TRANSFER_LOGS = "transfer logs"
TRANSFER_STATUS = "transfer status"
THROTTLED = "throttled"
DELETED = "deleted"

# jwt error texts (clients match on substrings: keep them byte-exact)
JWT_NO_JWT = "jwt: no jwt present"
JWT_EXPIRED = "jwt: exp claim is invalid"
JWT_DENYLISTED = "jwt: created too far in past (denylist)"
JWT_MISSING_CONNECT = "jwt: missing connect permission"
JWT_SERVER_MISMATCH = "jwt: server uuid mismatch"
JWT_BAD_SIGNATURE = "jwt: HMAC verification failed"
JWT_MALFORMED = "jwt: malformed token"

# daemon error texts
POWER_LOCKED = (
    "another power action is currently being processed for this server, "
    "please try again later"
)
GENERIC_ERROR = "an unexpected error was encountered while handling this request"

# daemon console lines
CRASH_DETECTED = "---------- Detected server process in a crashed state! ----------"
THROTTLING = "Server is outputting console data too quickly -- throttling..."

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def frame(event: str, *args: str, **extra: Any) -> str:
    """Serialize one outbound envelope. `args` is omitted when empty, as Wings does."""
    doc: dict[str, Any] = {"event": event}
    if args:
        doc["args"] = list(args)
    if extra:
        doc.update(extra)
    return _dumps(doc)


_CONSOLE_HEAD = '{"event":"console output","args":['


def console_frame(line: str) -> str:
    """`console output` for one line: the hottest serializer, so a fixed template around
    the C string encoder instead of a dict through JSONEncoder (same bytes as `frame`)."""
    return _CONSOLE_HEAD + encode_basestring(line) + "]}"


def console_frame_seq(line: str, seq: int) -> str:
    return _CONSOLE_HEAD + encode_basestring(line) + '],"seq":' + str(seq) + "}"


def daemon_console_line(app_name: str, message: str) -> str:
    """A daemon line in the console, coloured exactly as Wings renders it."""
    return f"\x1b[33m\x1b[1m[{app_name} Daemon]:\x1b[39m {message}\x1b[0m"


def stats_payload(
    *,
    state: str,
    memory_bytes: int = 0,
    memory_limit_bytes: int = 0,
    cpu_absolute: float = 0.0,
    rx_bytes: int = 0,
    tx_bytes: int = 0,
    uptime_ms: int = 0,
    disk_bytes: int = 0,
) -> dict[str, Any]:
    """The `stats` document (spec §6). The panel console throws if `network` is missing."""
    return {
        "memory_bytes": int(memory_bytes),
        "memory_limit_bytes": int(memory_limit_bytes),
        "cpu_absolute": round(float(cpu_absolute), 3),
        "network": {"rx_bytes": int(rx_bytes), "tx_bytes": int(tx_bytes)},
        "uptime": int(uptime_ms),
        "state": state,
        "disk_bytes": int(disk_bytes),
    }


def stats_frame(payload: dict[str, Any]) -> str:
    return frame(STATS, _dumps(payload))


def dumps(doc: Any) -> str:
    return _dumps(doc)
