"""The container's log as roost's console source, and where to resume it (sans-I/O).

Why the engine's log and not the attach stream: attach output carries no timestamps, so a
daemon that dies (kill -9) cannot know where its output ended, and a reattach would either
lose or repeat lines at the seam. The engine's log API (`GET /containers/{id}/logs` with
`timestamps=1`) is one ordered stream of entries, each with a nanosecond timestamp, and with
`follow=1` it continues live from the same reader, gaplessly. So roost reads *only* the log:
history and live output come through the same ordered stream and there is no seam between
a "catch-up" read and a live attach. Attach is used for stdin only.

Each entry is one write the engine's log copier made: a whole line with its `\\n`, or a piece
of a line longer than 16 KiB (pieces share the timestamp of the line's first piece), or the
unterminated tail at exit. Entries are fed to `LineSplitter`s per stream, which rebuild the
console lines exactly as the process runtime would.

The resume rule (`Position` + `Resume`):
- The runtime remembers the last entry it delivered as `(ts, count)`: its timestamp, and how
  many delivered entries carry exactly that timestamp (more than one only for the pieces of
  one long line).
- To resume, it reads the log `since` `ts - SINCE_SLACK_NS` and skips, in log order, every
  entry up to and including the `count`-th entry stamped `ts` (the marker). Everything after
  the marker is new. Entries *before* the marker in log order were delivered even if their
  timestamp is later: the engine stamps stdout and stderr in two goroutines and writes them
  in lock order, so the log may hold a later stamp a few microseconds before an earlier one.
  The slack makes such neighbours visible to the skip, so none is replayed.
- If the marker is not in the log any more (rotated away while nobody read it), the entries
  stamped after `ts` are delivered (output between the last delivery and the oldest kept log
  is lost, as with a full spool in the process runtime). Seeking gives up on the marker when
  an entry is more than `GIVE_UP_NS` later than `ts`, or at the end of a finite read.
- Assumption: two separate entries never carry the same nanosecond timestamp unless they are
  pieces of one line (which are consecutive). The engine's clock reading makes that so.
"""
from __future__ import annotations

import calendar
import struct
from dataclasses import dataclass, field

STDIN, STDOUT, STDERR = 0, 1, 2
STREAM_NAMES = {STDOUT: "stdout", STDERR: "stderr"}
HEADER = struct.Struct(">BxxxL")
# How far before the marker a resume read starts (see the module docstring). The engine's
# stdout/stderr reordering spans microseconds; 100 ms is far beyond it and cheap to skip.
SINCE_SLACK_NS = 100_000_000
# Seeking assumes the marker was rotated away once entries are this much later than it.
GIVE_UP_NS = 2_000_000_000
NS_PER_S = 1_000_000_000


class LogFormatError(ValueError):
    """The engine sent something that is not a timestamped multiplexed log."""


@dataclass(slots=True)
class Entry:
    stream: int  # STDOUT or STDERR
    ts_ns: int  # nanoseconds since the epoch
    data: bytes


_minute_cache: dict[bytes, int] = {}


def parse_timestamp_ns(text: bytes) -> int:
    """RFC 3339 with nanoseconds (`2026-11-26T15:48:10.914065004Z`, the engine's fixed
    format; shorter fractions and a missing fraction are accepted too) to epoch ns."""
    if len(text) < 20 or text[10:11] != b"T" or not text.endswith(b"Z"):
        raise LogFormatError(f"bad log timestamp {text[:40]!r}")
    minute = text[:16]
    base = _minute_cache.get(minute)
    if base is None:
        try:
            base = calendar.timegm((int(text[0:4]), int(text[5:7]), int(text[8:10]),
                                    int(text[11:13]), int(text[14:16]), 0))
        except ValueError:
            raise LogFormatError(f"bad log timestamp {text[:40]!r}") from None
        if len(_minute_cache) > 1024:
            _minute_cache.clear()
        _minute_cache[minute] = base
    try:
        seconds = int(text[17:19])
        fraction = text[20:-1] if text[19:20] == b"." else b""
        nanos = int(fraction.ljust(9, b"0")[:9]) if fraction else 0
    except ValueError:
        raise LogFormatError(f"bad log timestamp {text[:40]!r}") from None
    return (base + seconds) * NS_PER_S + nanos


def format_since(ts_ns: int) -> str:
    """The `since` query value for a timestamp: `seconds.nanoseconds` (the engine accepts
    fractional Unix times and keeps every entry stamped at or after it)."""
    return f"{ts_ns // NS_PER_S}.{ts_ns % NS_PER_S:09d}"


class FrameDecoder:
    """Split the engine's multiplexed, timestamped log stream into entries.

    Feed bytes in order; each frame is an 8-byte header (stream, length) and a payload of
    `<timestamp> <data>`.
    """

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Entry]:
        buf = self._buf
        buf += data
        entries: list[Entry] = []
        pos = 0
        size = len(buf)
        while size - pos >= HEADER.size:
            stream, length = HEADER.unpack_from(buf, pos)
            end = pos + HEADER.size + length
            if end > size:
                break
            payload = bytes(buf[pos + HEADER.size:end])
            pos = end
            if stream not in STREAM_NAMES:
                if stream == STDIN:
                    continue
                raise LogFormatError(f"unknown log stream {stream}")
            stamp, sep, line = payload.partition(b" ")
            if not sep:
                raise LogFormatError(f"log entry without timestamp: {payload[:60]!r}")
            entries.append(Entry(stream, parse_timestamp_ns(stamp), line))
        del buf[:pos]
        return entries

    @property
    def pending_bytes(self) -> int:
        return len(self._buf)


@dataclass(slots=True)
class Position:
    """The last entry delivered: its timestamp and how many delivered entries had exactly
    that timestamp. (0, 0) = nothing delivered yet: every entry is new. (ts, 0) = the marker
    was lost: entries stamped after ts are new."""

    ts_ns: int = 0
    count: int = 0

    def advance(self, entry: Entry) -> None:
        if entry.ts_ns == self.ts_ns and self.count:
            self.count += 1
        else:
            self.ts_ns = entry.ts_ns
            self.count = 1

    def to_json(self) -> dict:
        return {"ts_ns": self.ts_ns, "count": self.count}

    @classmethod
    def from_json(cls, data: object) -> "Position":
        if isinstance(data, dict):
            ts, count = data.get("ts_ns"), data.get("count")
            if isinstance(ts, int) and isinstance(count, int) and ts >= 0 and count >= 0:
                return cls(ts, count)
        return cls()


@dataclass(slots=True)
class Resume:
    """Filters one log read (started at `since()`) down to the entries not yet delivered.

    Call `filter` with each batch of entries in order; at the end of a finite read (or a
    follow that ended) call `finish` and deliver what it returns too.
    """

    start: Position
    found: bool = False  # the marker was passed (or there is none to look for)
    marker_lost: bool = False  # the marker was looked for and is not in the log
    _seen_at_ts: int = 0
    _pending: list[Entry] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.found = self.start.count == 0

    def since(self) -> str | None:
        """The `since` parameter for the read, None for the whole log."""
        if self.start.ts_ns == 0:
            return None
        return format_since(max(1, self.start.ts_ns - SINCE_SLACK_NS))

    def filter(self, entries: list[Entry]) -> list[Entry]:
        if self.found:
            if self.start.count == 0 and self.start.ts_ns:
                # Marker lost: only what is stamped after it is new. Once one entry passes,
                # every later one does (log order), even a reordered neighbour.
                for i, entry in enumerate(entries):
                    if entry.ts_ns > self.start.ts_ns:
                        self.start = Position()
                        return entries[i:]
                return []
            return entries
        ts, want = self.start.ts_ns, self.start.count
        for i, entry in enumerate(entries):
            if entry.ts_ns == ts:
                self._seen_at_ts += 1
                if self._seen_at_ts >= want:
                    self.found = True
                    self.start = Position()
                    self._pending.clear()  # they precede the marker: delivered before
                    return entries[i + 1:]
            elif entry.ts_ns > ts:
                if entry.ts_ns - ts > GIVE_UP_NS:  # the marker is gone
                    self.found = self.marker_lost = True
                    self.start = Position()
                    out = self._pending + entries[i:]
                    self._pending = []
                    return out
                self._pending.append(entry)
        return []

    def finish(self) -> list[Entry]:
        """End of the read: if the marker never came, what was held back is new."""
        if self.found:
            return []
        self.found = self.marker_lost = True
        self.start = Position()
        out, self._pending = self._pending, []
        return out
