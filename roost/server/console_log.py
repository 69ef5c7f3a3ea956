"""A server's console history: sequence numbers, a memory ring, an append-only file.

Every line (server output and daemon lines) gets the next sequence number. The file is the
durable record (rotated by size); the ring serves `send logs` and GET logs, including while
the server is offline and after a daemon restart (the tail of the file is read back).
"""
from __future__ import annotations

import json
import os
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from .. import limits


@dataclass(frozen=True, slots=True)
class LogLine:
    seq: int
    text: str
    daemon: bool  # a daemon console line, not the server's own output


class ConsoleLog:
    """Call `append` for each line; call `flush` periodically and `close` at shutdown."""

    def __init__(
        self,
        path: Path,
        *,
        ring_lines: int = limits.CONSOLE_RING_LINES,
        max_bytes: int = limits.CONSOLE_LOG_MAX_BYTES,
        keep: int = limits.CONSOLE_LOG_KEEP,
    ):
        self.path = path
        self._max_bytes = max_bytes
        self._keep = keep
        self._ring: deque[LogLine] = deque(maxlen=ring_lines)
        self.next_seq = 1
        # The newest runtime checkpoint in the file, and the server lines written after it:
        # a runtime resuming at that checkpoint delivers those lines again (see Server.attach).
        self.last_checkpoint: dict | None = None
        self.after_checkpoint: list[str] = []
        self._written_checkpoint: dict | None = None
        path.parent.mkdir(parents=True, exist_ok=True)
        self._load_tail()
        self._file = open(path, "ab", buffering=256 * 1024)
        self._size = self._file.tell()

    def _load_tail(self) -> None:
        """Restore the ring and the sequence counter from the newest files."""
        files = [self.path.with_name(f"{self.path.name}.{i}") for i in range(self._keep, 0, -1)] + [self.path]
        for f in files:
            try:
                data = f.read_bytes()
            except FileNotFoundError:
                continue
            for raw in data.split(b"\n"):
                if raw.startswith(b"0\tc\t"):
                    try:
                        self.last_checkpoint = json.loads(raw[4:])
                    except ValueError:
                        continue  # torn by a crash: the previous one still holds
                    self.after_checkpoint = []
                    continue
                line = _decode(raw)
                if line is not None:
                    self._ring.append(line)
                    self.next_seq = line.seq + 1
                    if not line.daemon:
                        self.after_checkpoint.append(line.text)

    def append(self, text: str, *, daemon: bool = False) -> LogLine:
        line = LogLine(self.next_seq, text, daemon)
        self.next_seq += 1
        self._ring.append(line)
        rec = f"{line.seq}\t{'d' if daemon else 's'}\t{text}\n".encode("utf-8", "replace")
        self._file.write(rec)
        self._size += len(rec)
        if self._size >= self._max_bytes:
            self._rotate()
        return line

    def tail(self, count: int, *, include_daemon: bool = False) -> list[LogLine]:
        """The last `count` lines, oldest first (server output only unless asked)."""
        out: list[LogLine] = []
        for line in reversed(self._ring):
            if len(out) >= count:
                break
            if include_daemon or not line.daemon:
                out.append(line)
        out.reverse()
        return out

    def since(self, seq: int, *, limit: int) -> list[LogLine]:
        """Lines after `seq` still in the ring (roost resume), at most `limit`, oldest first."""
        out = [line for line in self._ring if line.seq > seq]
        return out[-limit:]

    def flush(self) -> None:
        self._file.flush()

    def checkpoint(self, doc: dict | None) -> None:
        """Record the runtime's position after the lines written so far, then flush."""
        if doc is not None and doc != self._written_checkpoint:
            rec = b"0\tc\t" + json.dumps(doc, separators=(",", ":")).encode() + b"\n"
            self._file.write(rec)
            self._size += len(rec)
            self._written_checkpoint = doc
        self._file.flush()

    def close(self) -> None:
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
        finally:
            self._file.close()

    def remove(self) -> None:
        self._file.close()
        for i in range(self._keep, 0, -1):
            self.path.with_name(f"{self.path.name}.{i}").unlink(missing_ok=True)
        self.path.unlink(missing_ok=True)

    def _rotate(self) -> None:
        self._file.close()
        for i in range(self._keep, 0, -1):
            src = self.path if i == 1 else self.path.with_name(f"{self.path.name}.{i - 1}")
            if src.exists():
                os.replace(src, self.path.with_name(f"{self.path.name}.{i}"))
        self._file = open(self.path, "ab", buffering=256 * 1024)
        self._size = 0


def _decode(raw: bytes) -> LogLine | None:
    parts = raw.split(b"\t", 2)
    if len(parts) != 3 or not parts[0].isdigit():
        return None  # a torn last record after a crash, or garbage: skip it
    return LogLine(int(parts[0]), parts[2].decode("utf-8", "replace"), parts[1] == b"d")
