"""Parallel gzip: concatenated members compressed in a thread pool (zlib releases the GIL).

Output is standard gzip (RFC 1952: a file may hold several members; `gzip -d`, `tar xzf`,
Python's gzip module and Go's compress/gzip read it as one stream). Each member carries an
FEXTRA subfield `RB` (roost block, 8 bytes: the member's total length, little-endian), much
like BGZF's `BC`: readers ignore it, while `iter_decompressed` uses it to hand whole members to
the thread pool, so verifying and restoring our own archives is parallel too. Archives from
anywhere else (plain `tar czf`, pigz, Wings) are decompressed as one stream in a helper thread.

Chunks that look incompressible (already compressed worlds, jars, media) are stored (deflate
level 0): same format, about twenty times faster than level 1 on such data.
"""
from __future__ import annotations

import collections
import os
import queue
import struct
import threading
import zlib
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Iterator

_MAGIC = b"\x1f\x8b\x08"
_FEXTRA = 0x04
_SUBFIELD = b"RB"
_HEADER_LEN = 10 + 2 + 4 + 8          # fixed header, XLEN, subfield id+len, member length
_TRAILER_LEN = 8
MAX_MEMBER_OUTPUT = 64 << 20          # our members hold at most one chunk (1 MiB by default)
_SAMPLE = 8192


class GzipFormatError(ValueError):
    """Not a gzip stream, a corrupt member, or a truncated archive."""


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _incompressible(data) -> bool:
    """Cheap guess from up to three 8 KiB samples compressed at level 1."""
    n = len(data)
    if n < 4 * _SAMPLE:
        return False
    for start in (0, n // 2, n - _SAMPLE):
        sample = data[start:start + _SAMPLE]
        if len(zlib.compress(sample, 1)) < _SAMPLE * 0.97:
            return False
    return True


def compress_member(data, level: int) -> tuple[bytes, bytes, bytes]:
    """One complete gzip member for `data` as (header, deflate body, trailer)."""
    if level > 0 and _incompressible(data):
        level = 0
    comp = zlib.compressobj(level, zlib.DEFLATED, -15)
    body = comp.compress(data) + comp.flush()
    total = _HEADER_LEN + len(body) + _TRAILER_LEN
    xfl = 4 if level == 1 else 2 if level == 9 else 0
    header = (_MAGIC + bytes([_FEXTRA]) + b"\0\0\0\0" + bytes([xfl, 3])
              + struct.pack("<H", 12) + _SUBFIELD + struct.pack("<HQ", 8, total))
    trailer = struct.pack("<II", zlib.crc32(data), len(data) & 0xFFFFFFFF)
    return header, body, trailer


class ParallelGzipWriter:
    """Compress chunks in a thread pool; members are written in order by `sink(parts)` on the
    calling thread. At most `max_pending` chunks are in flight (memory bound)."""

    def __init__(self, sink: Callable[[tuple[bytes, ...]], None], *, level: int = 1,
                 workers: int | None = None, max_pending: int | None = None):
        self._sink = sink
        self._level = level
        workers = workers or default_workers()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="roost-gzip")
        self._pending: collections.deque[Future] = collections.deque()
        self._max_pending = max_pending or 2 * workers + 2

    def submit(self, chunk) -> None:
        self._pending.append(self._pool.submit(compress_member, chunk, self._level))
        while len(self._pending) > self._max_pending or (self._pending and self._pending[0].done()):
            self._sink(self._pending.popleft().result())

    def finish(self) -> None:
        while self._pending:
            self._sink(self._pending.popleft().result())
        self._pool.shutdown(wait=True)

    def abort(self) -> None:
        for future in self._pending:
            future.cancel()
        self._pending.clear()
        self._pool.shutdown(wait=True, cancel_futures=True)


# ---------------------------------------------------------------------------------------------
# reading

def _inflate_member(member: bytes, offset: int) -> bytes:
    """Decompress one of our `RB` members (header already checked)."""
    dec = zlib.decompressobj(-15)
    try:
        out = dec.decompress(memoryview(member)[_HEADER_LEN:], MAX_MEMBER_OUTPUT)
    except zlib.error as exc:
        raise GzipFormatError(f"corrupt gzip member at byte {offset}: {exc}") from None
    if not dec.eof or dec.unconsumed_tail:
        raise GzipFormatError(f"bad gzip member at byte {offset}")
    if len(dec.unused_data) != _TRAILER_LEN:
        raise GzipFormatError(f"bad gzip member length at byte {offset}")
    crc, isize = struct.unpack("<II", dec.unused_data)
    if crc != zlib.crc32(out) or isize != len(out) & 0xFFFFFFFF:
        raise GzipFormatError(f"gzip member at byte {offset} fails its CRC")
    return out


def _our_member_length(header: bytes) -> int | None:
    if (len(header) == _HEADER_LEN and header[:3] == _MAGIC and header[3] == _FEXTRA
            and header[10:12] == b"\x0c\x00" and header[12:14] == _SUBFIELD
            and header[14:16] == b"\x08\x00"):
        return struct.unpack("<Q", header[16:24])[0]
    return None


class SkipHint:
    """Shared with the consumer: decompressed bytes before `until` (an offset in the
    decompressed stream) will only be skipped, never looked at."""

    __slots__ = ("until",)

    def __init__(self) -> None:
        self.until = 0


class MemberCache:
    """Inflated members kept by a first pass (up to `budget` bytes) so that a second pass over
    the same archive need not inflate them again. `freeze()` after the first pass; the second
    pass takes (and so releases) each one."""

    def __init__(self, budget: int):
        self.budget = budget
        self.used = 0
        self.frozen = False
        self._data: dict[int, bytes] = {}

    def put(self, index: int, data: bytes) -> None:
        if not self.frozen and self.used + len(data) <= self.budget:
            self._data[index] = data
            self.used += len(data)

    def take(self, index: int) -> bytes | None:
        return self._data.pop(index, None) if self.frozen else None

    def freeze(self) -> None:
        self.frozen = True


def iter_decompressed(read: Callable[[int], bytes], *, workers: int | None = None,
                      chunk: int = 1 << 20, skip_hint: SkipHint | None = None,
                      cache: MemberCache | None = None) -> Iterator[bytes | int]:
    """Decompressed bytes of a (possibly multi-member) gzip stream, in order.

    `read(n)` returns up to n raw bytes (b"" at the end); every raw byte of the file is read
    through it exactly once, so a caller can hash the archive on the way. Members written by
    `ParallelGzipWriter` are inflated in parallel; anything else is inflated as a stream in a
    helper thread. The whole stream is checked (CRCs, sizes, nothing but zero padding after
    the last member) before the iterator ends.

    With `skip_hint`, one of our members lying wholly before `skip_hint.until` is not
    inflated (or its inflation is cancelled): an int (its length, from its trailer) is yielded
    instead of its bytes, and its CRC is not checked (use it only when the archive's integrity
    is otherwise known, e.g. by its SHA-1). With `cache`, inflated members are remembered (first
    pass) or taken from it instead of being inflated again (second pass, once frozen).
    """
    workers = workers or default_workers()
    offset = 0
    head = _read_exact(read, _HEADER_LEN)
    if not head:
        raise GzipFormatError("empty archive")
    if head[:2] != b"\x1f\x8b":
        raise GzipFormatError("not a gzip file")
    if _our_member_length(head) is None:
        yield from _stream_inflate(head, read, chunk)
        return
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="roost-gunzip")
    # (future, member index, offset in the decompressed stream, decompressed length)
    pending: collections.deque[tuple[Future, int, int, int]] = collections.deque()
    limit = 2 * workers + 2
    out_offset = 0
    index = 0

    def take(entry) -> bytes | int:
        future, i, start, isize = entry
        if skip_hint is not None and start + isize <= skip_hint.until:
            future.cancel()              # not needed after all (if already running: ignored)
            return isize
        data = future.result()
        if cache is not None:
            cache.put(i, data)
        return data

    try:
        while head:
            length = _our_member_length(head)
            if length is None:
                if not head.strip(b"\0"):
                    _check_zero_tail(read, chunk)
                    break
                if head[:2] != b"\x1f\x8b":
                    raise GzipFormatError(f"trailing garbage at byte {offset}")
                # a foreign member after ours: finish ours, then stream the rest
                while pending:
                    yield take(pending.popleft())
                yield from _stream_inflate(head, read, chunk)
                return
            if length < _HEADER_LEN + _TRAILER_LEN or length > 2 * MAX_MEMBER_OUTPUT:
                raise GzipFormatError(f"bad gzip member length at byte {offset}")
            rest = _read_exact(read, length - _HEADER_LEN)
            if len(rest) != length - _HEADER_LEN:
                raise GzipFormatError("archive is truncated")
            isize = struct.unpack("<I", rest[-4:])[0]
            cached = cache.take(index) if cache is not None else None
            if cached is not None and len(cached) == isize:
                future: Future = Future()
                future.set_result(cached)
            elif skip_hint is not None and out_offset + isize <= skip_hint.until:
                future = Future()
                future.set_result(isize)
            else:
                future = pool.submit(_inflate_member, head + rest, offset)
            pending.append((future, index, out_offset, isize))
            offset += length
            out_offset += isize
            index += 1
            while len(pending) > limit or (pending and pending[0][0].done()):
                yield take(pending.popleft())
            head = _read_exact(read, _HEADER_LEN)
        while pending:
            yield take(pending.popleft())
    finally:
        for entry in pending:
            entry[0].cancel()
        pool.shutdown(wait=True, cancel_futures=True)


def _read_exact(read: Callable[[int], bytes], n: int) -> bytes:
    data = read(n)
    if len(data) == n or not data:
        return data
    parts = [data]
    got = len(data)
    while got < n:
        more = read(n - got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def _check_zero_tail(read: Callable[[int], bytes], chunk: int) -> None:
    while data := read(chunk):
        if data.strip(b"\0"):
            raise GzipFormatError("trailing garbage after the last gzip member")


_DONE = object()


def _stream_inflate(first: bytes, read: Callable[[int], bytes], chunk: int) -> Iterator[bytes]:
    """Inflate a foreign gzip stream (any number of members) in a helper thread; the raw
    reads happen there too, so the consumer overlaps its work (parsing, writing) with it."""
    out: queue.Queue = queue.Queue(maxsize=8)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                out.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            dec = zlib.decompressobj(31)
            data = first
            started = True               # inside a member
            while True:
                if not data:
                    data = read(chunk)
                    if not data:
                        break
                if not started:
                    if not data.strip(b"\0"):
                        data = b""       # zero padding between/after members
                        continue
                    dec = zlib.decompressobj(31)
                    started = True
                produced = dec.decompress(data, 4 * chunk)
                data = dec.unconsumed_tail
                if produced and not put(produced):
                    return
                if dec.eof:
                    data = dec.unused_data + data
                    started = False
            if started:
                raise GzipFormatError("archive is truncated")
            put(_DONE)
        except zlib.error as exc:
            put(GzipFormatError(f"corrupt gzip stream: {exc}"))
        except BaseException as exc:     # noqa: BLE001 - handed to the consumer
            put(exc)

    thread = threading.Thread(target=work, name="roost-gunzip-stream", daemon=True)
    thread.start()
    try:
        while True:
            item = out.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()
