"""Framing for the daemon <-> holder unix socket and the holder's output spool (sans-I/O).

Stdlib only: the holder imports this and nothing else from roost, so a holder started by one
daemon version keeps working while another daemon version talks to it.

Frame: `>IB` (payload length, frame type) + payload; payloads are at most MAX_FRAME_BYTES.
Output record (in the spool file and inside OUTPUT frames): `>BI` (stream id, length) + bytes.
An OUTPUT frame is `>Q` (spool offset of its first record) + whole records, so the daemon's
resume cursor is simply `offset + len(records)`.
"""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any, Iterator

FRAME_HEADER = struct.Struct(">IB")
RECORD_HEADER = struct.Struct(">BI")
OFFSET = struct.Struct(">Q")
SIGNUM = struct.Struct(">I")

# Big enough for one OUTPUT frame of OUTPUT_FRAME_RECORD_BYTES plus headers; anything larger
# means the peer is not speaking this protocol.
MAX_FRAME_BYTES = 1024 * 1024
# The holder sends at most this many record bytes per OUTPUT frame.
OUTPUT_FRAME_RECORD_BYTES = 256 * 1024

STDOUT, STDERR = 1, 2
STREAM_NAMES = {STDOUT: "stdout", STDERR: "stderr"}

# holder -> daemon
INSTANCE = 1  # JSON {"pid", "started_at", "holder_pid"}; first reply to RESUME
OUTPUT = 2  # >Q offset + records
EXITED = 3  # JSON {"code", "signal", "oom_killed", "pid", "started_at"}; after all output
# daemon -> holder
RESUME = 10  # >Q offset: send output from here (the first frame a daemon sends)
STDIN = 11  # raw bytes for the server's stdin
SIGNAL = 12  # >I signal number, sent to the whole process group
KILL = 13  # empty: SIGKILL everything
EXIT_ACK = 14  # empty: the daemon has the exit; the holder may go

FRAME_TYPES = {INSTANCE, OUTPUT, EXITED, RESUME, STDIN, SIGNAL, KILL, EXIT_ACK}


class WireError(Exception):
    """The peer sent something that is not a valid frame."""


@dataclass(frozen=True, slots=True)
class Frame:
    type: int
    payload: bytes


def encode_frame(frame_type: int, payload: bytes = b"") -> bytes:
    if len(payload) > MAX_FRAME_BYTES:
        raise WireError(f"frame payload of {len(payload)} bytes exceeds {MAX_FRAME_BYTES}")
    return FRAME_HEADER.pack(len(payload), frame_type) + payload


def encode_json(frame_type: int, obj: Any) -> bytes:
    return encode_frame(frame_type, json.dumps(obj, separators=(",", ":")).encode())


def decode_json(frame: Frame) -> Any:
    try:
        return json.loads(frame.payload)
    except ValueError as exc:
        raise WireError(f"bad JSON in frame type {frame.type}") from exc


def encode_offset(frame_type: int, offset: int) -> bytes:
    return encode_frame(frame_type, OFFSET.pack(offset))


def decode_offset(frame: Frame) -> int:
    if len(frame.payload) < OFFSET.size:
        raise WireError(f"frame type {frame.type} too short for an offset")
    return OFFSET.unpack_from(frame.payload)[0]


def encode_signal(signum: int) -> bytes:
    return encode_frame(SIGNAL, SIGNUM.pack(signum))


def decode_signal(frame: Frame) -> int:
    if len(frame.payload) != SIGNUM.size:
        raise WireError("SIGNAL frame must carry 4 bytes")
    return SIGNUM.unpack(frame.payload)[0]


class FrameDecoder:
    """Accumulates bytes from the socket and returns whole frames."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        """Add received bytes; return the frames now complete. Raises WireError."""
        self._buf += data
        frames: list[Frame] = []
        pos = 0
        while len(self._buf) - pos >= FRAME_HEADER.size:
            length, frame_type = FRAME_HEADER.unpack_from(self._buf, pos)
            if length > MAX_FRAME_BYTES:
                raise WireError(f"frame of {length} bytes exceeds {MAX_FRAME_BYTES}")
            if frame_type not in FRAME_TYPES:
                raise WireError(f"unknown frame type {frame_type}")
            end = pos + FRAME_HEADER.size + length
            if end > len(self._buf):
                break
            frames.append(Frame(frame_type, bytes(self._buf[pos + FRAME_HEADER.size:end])))
            pos = end
        del self._buf[:pos]
        return frames


def encode_record(stream: int, data: bytes) -> bytes:
    return RECORD_HEADER.pack(stream, len(data)) + data


def whole_records_length(buf: bytes) -> int:
    """Length of the longest prefix of `buf` made of whole records."""
    pos = 0
    while len(buf) - pos >= RECORD_HEADER.size:
        _, length = RECORD_HEADER.unpack_from(buf, pos)
        end = pos + RECORD_HEADER.size + length
        if end > len(buf):
            break
        pos = end
    return pos


def iter_records(buf: bytes) -> Iterator[tuple[int, bytes]]:
    """(stream id, data) for each whole record in `buf`. Raises WireError on a torn record."""
    view = memoryview(buf)
    pos = 0
    while pos < len(buf):
        if len(buf) - pos < RECORD_HEADER.size:
            raise WireError("torn record header")
        stream, length = RECORD_HEADER.unpack_from(buf, pos)
        end = pos + RECORD_HEADER.size + length
        if end > len(buf) or stream not in STREAM_NAMES:
            raise WireError("torn or invalid record")
        yield stream, bytes(view[pos + RECORD_HEADER.size:end])
        pos = end


def encode_output(offset: int, records: bytes) -> bytes:
    return encode_frame(OUTPUT, OFFSET.pack(offset) + records)


def decode_output(frame: Frame) -> tuple[int, bytes]:
    """(offset of the first record, records). The next resume offset is offset + len(records)."""
    return decode_offset(frame), frame.payload[OFFSET.size:]
