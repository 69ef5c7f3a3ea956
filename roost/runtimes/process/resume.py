"""Exact resume points in the holder's output spool (sans-I/O).

The daemon stores a checkpoint beside the console lines it wrote. After a daemon crash it
hands the checkpoint back, and output is re-read from the spool so that every line is
delivered exactly once: lines completed before the checkpoint are skipped, and a line that
was only partly received (its bytes may span several spool records) is read again whole.

Positions are (record offset, bytes to skip inside that record), per stream, because stdout
and stderr interleave in one spool and each has its own unterminated tail.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from ..lines import LineSplitter
from . import holder_wire as wire

VERSION = 1


@dataclass(slots=True)
class _Span:
    record_offset: int
    record_end: int
    first_index: int  # where the fed bytes start inside the record's data
    local_start: int  # stream-local position of the first fed byte
    length: int


@dataclass(slots=True)
class _Stream:
    consumed: int = 0
    spans: deque = field(default_factory=deque)
    # Until the first record at/after it arrives: where a restored checkpoint resumes.
    restored: tuple[int, int] | None = None


class ResumeMarks:
    """Feed every record through `accept`, and ask `checkpoint` at any time."""

    def __init__(self, instance_id: str, base_offset: int = 0):
        self.instance_id = instance_id
        self.base_offset = base_offset  # where reading started (a record boundary)
        self._streams = {s: _Stream() for s in wire.STREAM_NAMES}

    @classmethod
    def from_checkpoint(cls, checkpoint: dict | None, instance_id: str) -> tuple["ResumeMarks", dict[int, LineSplitter]] | None:
        """Marks and splitters continuing at `checkpoint`; None if it is not for this instance."""
        if not isinstance(checkpoint, dict) or checkpoint.get("v") != VERSION:
            return None
        if checkpoint.get("instance") != instance_id:
            return None
        try:
            streams = {int(k): v for k, v in checkpoint["streams"].items()}
            marks = cls(instance_id, min(int(v[0]) for v in streams.values()))
            splitters = {}
            for s in wire.STREAM_NAMES:
                offset, skip, after_cr, discarding = streams[s]
                marks._streams[s].restored = (int(offset), int(skip))
                splitters[s] = LineSplitter.resumed(bool(after_cr), bool(discarding))
        except (KeyError, TypeError, ValueError):
            return None
        return marks, splitters

    def accept(self, stream: int, record_offset: int, record_end: int, data: bytes) -> bytes:
        """Register one record; returns the bytes of it that must be fed to the splitter."""
        st = self._streams[stream]
        first = 0
        if st.restored is not None:
            offset, skip = st.restored
            if record_offset < offset:
                return b""  # delivered before the checkpoint
            if record_offset == offset:
                first = min(skip, len(data))
            st.restored = None
        fed = data[first:]
        st.spans.append(_Span(record_offset, record_end, first, st.consumed, len(fed)))
        st.consumed += len(fed)
        return fed

    def settle(self, stream: int, splitter: LineSplitter) -> None:
        """Call after feeding: forget spans wholly before the stream's unterminated tail."""
        st = self._streams[stream]
        done = st.consumed - splitter.pending_bytes
        while len(st.spans) > 1 and st.spans[0].local_start + st.spans[0].length <= done:
            st.spans.popleft()

    def position(self, stream: int, splitter: LineSplitter) -> tuple[int, int]:
        st = self._streams[stream]
        if st.restored is not None:
            return st.restored
        if not st.spans:
            return self.base_offset, 0
        pending = splitter.pending_bytes
        if pending == 0:
            return st.spans[-1].record_end, 0
        done = st.consumed - pending
        for span in st.spans:
            if span.local_start <= done < span.local_start + span.length:
                return span.record_offset, span.first_index + (done - span.local_start)
        return st.spans[0].record_offset, st.spans[0].first_index  # unreachable: settle keeps it

    def checkpoint(self, splitters: dict[int, LineSplitter]) -> dict:
        streams = {}
        for s, splitter in splitters.items():
            offset, skip = self.position(s, splitter)
            after_cr, discarding = splitter.flags() if splitter.pending_bytes == 0 else (False, False)
            streams[str(s)] = [offset, skip, after_cr, discarding]
        return {"v": VERSION, "instance": self.instance_id, "streams": streams}

    @staticmethod
    def resume_offset(checkpoint: dict) -> int:
        return min(int(v[0]) for v in checkpoint["streams"].values())


def iter_records_at(records: bytes, base: int):
    """(record offset, record end, stream, data) for each whole record starting at `base`."""
    pos = 0
    for stream, data in wire.iter_records(records):
        size = wire.RECORD_HEADER.size + len(data)
        yield base + pos, base + pos + size, stream, data
        pos += size
