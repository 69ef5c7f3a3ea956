"""The container's log as roost's console source, and exact resume points in it (sans-I/O).

Why the engine's log and not the attach stream: attach output carries no timestamps, so a
daemon that dies (kill -9) cannot tell where its output ended, and a reattach would either
lose or repeat lines at the seam. The engine's log API (`GET /containers/{id}/logs` with
`timestamps=1`) is one ordered stream of entries, each with a nanosecond timestamp, and with
`follow=1` it continues live from the same reader, gaplessly. So roost reads *only* the log:
history and live output come through the same ordered stream, and there is no seam between
a "catch-up" read and a live attach. Attach is used for stdin only.

Each entry is one write of the engine's log copier: a whole line with its `\\n`, a piece of
a line longer than 16 KiB (the pieces share the timestamp of the first one), or the
unterminated tail at exit. Entries are fed to a `LineSplitter` per stream, which rebuilds the
console lines exactly as the process runtime does.

The resume rule (`LogMarks`), per stream, because stdout and stderr are copied by two
goroutines that each stamp and write their own entries in order (so within a stream, log
order is timestamp order; across streams, a later stamp can be written a few microseconds
before an earlier one):
- An entry is named (timestamp, index among this stream's entries with that timestamp).
- A stream's position is the first byte not yet part of a delivered line: (entry name,
  bytes of that entry already consumed). With no unterminated tail it is just past the last
  entry fed. The checkpoint holds each stream's position and its splitter flags.
- To resume, the log is read `since` the earliest position (less `SINCE_SLACK_NS`); entries
  named before a stream's position are skipped, the entry at it is fed from its byte offset,
  later ones whole. A line that was only partly received is thus read again whole.
- A stream with no unfinished line moves up to `SINCE_SLACK_NS` before the newest entry
  read (any entry of it stamped earlier would have been read by then), so a stream that
  rarely prints does not make every resume read the whole log.
- If the entry at a position is no longer in the log (rotated away while nobody read it),
  resuming starts at the oldest later entry: what was between is lost, as with a full spool
  in the process runtime.
- Within a read, a stream's entry names only increase; an entry named at or before the
  last one accepted, or stamped like the last one accepted when that one ended a line, is a
  repeat and is dropped (the engine's log follower sends part of the log again when it
  rotates the file). Not detected: a repeat that starts inside a long line whose pieces the
  follower had only partly sent.
- Assumption: the engine's wall clock does not step backwards while a server prints. After
  a step back by D, the entries stamped in the next D look like repeats and are dropped
  (time daemons step the clock at boot only, before the engine starts containers).
"""
from __future__ import annotations

import calendar
import struct
from collections import deque
from dataclasses import dataclass, field

from roost.runtimes.lines import LineSplitter

STDIN, STDOUT, STDERR = 0, 1, 2
STREAM_NAMES = {STDOUT: "stdout", STDERR: "stderr"}
HEADER = struct.Struct(">BxxxL")
# How far before the earliest position a resume read starts, and how far a silent stream's
# position trails the newest entry read. The engine's stdout/stderr reordering spans
# microseconds; 100 ms is far beyond it and cheap to skip.
SINCE_SLACK_NS = 100_000_000
CHECKPOINT_VERSION = 1
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
class _Span:
    entry: tuple[int, int]  # the entry's name: (timestamp ns, index within the timestamp)
    first: int  # where the fed bytes start inside the entry's data
    local_start: int  # stream-local position of the first fed byte
    length: int


@dataclass(slots=True)
class _Stream:
    position: tuple[int, int, int]  # (ts, index, skip): where this read resumes
    restored: bool = True  # the position has not been reached yet in this read
    last: tuple[int, int] | None = None  # name of the last entry seen in this read
    last_complete: bool = False  # the last entry accepted ended a line
    consumed: int = 0
    spans: deque = field(default_factory=deque)


class LogMarks:
    """Where each stream's delivered output ends, for one read of the log.

    Start every read with marks (and splitters) restored from the current checkpoint; feed
    every entry through `accept` and `settle`; ask `checkpoint` at any time.
    """

    def __init__(self, positions: dict[int, tuple[int, int, int]] | None = None) -> None:
        positions = positions or {}
        self._streams = {s: _Stream(tuple(positions.get(s, (0, 0, 0))))
                         for s in STREAM_NAMES}
        self._newest_ts = 0

    @classmethod
    def restore(cls, checkpoint: object, container_id: str
                ) -> tuple["LogMarks", dict[int, LineSplitter]] | None:
        """Marks and splitters continuing at `checkpoint`; None when it is not a checkpoint
        of this container."""
        if not isinstance(checkpoint, dict) or checkpoint.get("v") != CHECKPOINT_VERSION:
            return None
        if checkpoint.get("container") != container_id:
            return None
        try:
            positions: dict[int, tuple[int, int, int]] = {}
            splitters: dict[int, LineSplitter] = {}
            for s in STREAM_NAMES:
                ts, index, skip, after_cr, discarding = checkpoint["streams"][str(s)]
                positions[s] = (int(ts), int(index), int(skip))
                if min(positions[s]) < 0:
                    return None
                splitters[s] = LineSplitter.resumed(bool(after_cr), bool(discarding))
        except (KeyError, TypeError, ValueError):
            return None
        return cls(positions), splitters

    @classmethod
    def fresh(cls) -> tuple["LogMarks", dict[int, LineSplitter]]:
        """Marks for a log nothing of which was delivered."""
        return cls(), {s: LineSplitter() for s in STREAM_NAMES}

    def since(self) -> str | None:
        """The `since` parameter for this read (None: the whole log)."""
        earliest = min(st.position[0] for st in self._streams.values())
        if earliest <= SINCE_SLACK_NS:
            return None
        return format_since(earliest - SINCE_SLACK_NS)

    def accept(self, entry: Entry) -> bytes:
        """Register an entry (in log order); returns the bytes of it to feed the splitter."""
        st = self._streams[entry.stream]
        last = st.last
        name = (entry.ts_ns, last[1] + 1 if last is not None and last[0] == entry.ts_ns else 0)
        st.last = name
        if entry.ts_ns > self._newest_ts:
            self._newest_ts = entry.ts_ns
        first = 0
        if st.restored:
            ts, index, skip = st.position
            if name < (ts, index):
                return b""  # delivered before the checkpoint
            if name == (ts, index):
                first = min(skip, len(entry.data))
            st.restored = False
        elif name <= st.spans[-1].entry or (
                entry.ts_ns == st.spans[-1].entry[0] and st.last_complete):
            # Sent again: the engine's follower re-reads part of the log when it rotates the
            # file (seen with 20.10's json-file). A stream's names only increase, and after a
            # complete line no other entry carries its timestamp.
            return b""
        st.last_complete = entry.data.endswith(b"\n")
        fed = entry.data[first:]
        st.spans.append(_Span(name, first, st.consumed, len(fed)))
        st.consumed += len(fed)
        return fed

    def settle(self, stream: int, splitter: LineSplitter) -> None:
        """Call after feeding: forget entries wholly before the unterminated tail."""
        st = self._streams[stream]
        done = st.consumed - splitter.pending_bytes
        spans = st.spans
        while len(spans) > 1 and spans[0].local_start + spans[0].length <= done:
            spans.popleft()

    def position(self, stream: int, splitter: LineSplitter) -> tuple[int, int, int]:
        st = self._streams[stream]
        pending = 0 if st.restored or not st.spans else splitter.pending_bytes
        if pending == 0:
            if st.restored or not st.spans:
                position = st.position
            else:
                ts, index = st.spans[-1].entry
                position = (ts, index + 1, 0)
            # No line of this stream is unfinished: any entry of it stamped before the floor
            # would have been read by now, so a quiet stream does not hold resumes back.
            return max(position, (self._newest_ts - SINCE_SLACK_NS, 0, 0))
        done = st.consumed - pending
        for span in st.spans:
            if span.local_start <= done < span.local_start + span.length:
                return (span.entry[0], span.entry[1], span.first + done - span.local_start)
        span = st.spans[0]  # unreachable: settle keeps the span holding the tail
        return (span.entry[0], span.entry[1], span.first)

    def checkpoint(self, container_id: str, splitters: dict[int, LineSplitter]) -> dict:
        """Every line emitted so far is before this position, nothing after it."""
        streams = {}
        for s, splitter in splitters.items():
            ts, index, skip = self.position(s, splitter)
            after_cr, discarding = (splitter.flags() if splitter.pending_bytes == 0
                                    else (False, False))
            streams[str(s)] = [ts, index, skip, after_cr, discarding]
        return {"v": CHECKPOINT_VERSION, "container": container_id, "streams": streams}
