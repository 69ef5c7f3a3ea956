"""Turn a byte stream into console lines (sans-I/O).

Game servers write to a pipe in arbitrary chunks, end lines with `\\n`, `\\r\\n` or a bare `\\r`
(progress bars), and sometimes print garbage or enormous lines. The console wants whole,
bounded, valid-text lines, and the result must not depend on how the bytes were chunked.
"""
from __future__ import annotations

# Lines longer than this are cut (spec §6). The cut keeps the first MAX_LINE_BYTES bytes
# (less, to end on a whole UTF-8 character) and DISCARDS the rest of that line up to its line
# end: a 10 MB line of base64 is noise, and emitting it as 150 further lines would flood the
# console and the throttle.
MAX_LINE_BYTES = 65536


def _utf8_cut(buf: bytes | bytearray, limit: int) -> int:
    """Index <= limit where `buf` can be cut without splitting a UTF-8 character.

    Requires len(buf) > limit. Backs off over at most 3 continuation bytes (a UTF-8 character
    is at most 4 bytes); invalid data is cut at `limit` and decoded with replacement anyway.
    """
    cut = limit
    for _ in range(3):
        if buf[cut] & 0xC0 != 0x80:
            break
        cut -= 1
    else:
        if buf[cut] & 0xC0 == 0x80:
            return limit
    return cut


class LineSplitter:
    """Split bytes into lines; feed chunks in order, call `flush` at end of stream.

    A line ends at `\\n`, `\\r\\n` or a lone `\\r`. A `\\r` ending a chunk ends its line at
    once; a `\\n` starting the next chunk is then swallowed, so `\\r\\n` split across chunks
    is still one line end.
    """

    def __init__(self, max_line_bytes: int = MAX_LINE_BYTES) -> None:
        self._max = max_line_bytes
        self._partial = bytearray()
        self._discarding = False  # inside the over-long tail of a line that was cut
        self._after_cr = False  # the previous chunk ended with \r

    def feed(self, data: bytes) -> list[str]:
        """Add a chunk; return the lines it completes. Call `flush` after the last chunk."""
        lines: list[str] = []
        if not data:
            return lines
        if self._after_cr:
            self._after_cr = False
            if data[:1] == b"\n":
                data = data[1:]
        # bytes.splitlines splits on exactly \n, \r\n and \r (unlike str.splitlines).
        for piece in data.splitlines(keepends=True):
            if piece.endswith(b"\r\n"):
                self._append(piece[:-2], lines)
                self._end_line(lines)
            elif piece.endswith((b"\n", b"\r")):
                self._append(piece[:-1], lines)
                self._end_line(lines)
            else:
                self._append(piece, lines)
        self._after_cr = data.endswith(b"\r")
        return lines

    @property
    def pending_bytes(self) -> int:
        """Bytes fed but not yet part of an emitted line (the unterminated tail)."""
        return 0 if self._discarding else len(self._partial)

    def flags(self) -> tuple[bool, bool]:
        """(after_cr, discarding): the state a resumed splitter needs besides the bytes."""
        return self._after_cr, self._discarding

    @classmethod
    def resumed(cls, after_cr: bool, discarding: bool, max_line_bytes: int = MAX_LINE_BYTES) -> "LineSplitter":
        """A splitter continuing a stream at a checkpoint (see `pending_bytes`, `flags`)."""
        s = cls(max_line_bytes)
        s._after_cr, s._discarding = after_cr, discarding
        return s

    def flush(self) -> list[str]:
        """End of stream: return the unterminated last line, if any."""
        lines: list[str] = []
        if self._partial and not self._discarding:
            lines.append(self._partial.decode("utf-8", "replace"))
        self._partial.clear()
        self._discarding = False
        self._after_cr = False
        return lines

    def _append(self, content: bytes, lines: list[str]) -> None:
        if self._discarding or not content:
            return
        self._partial += content
        if len(self._partial) > self._max:
            cut = _utf8_cut(self._partial, self._max)
            lines.append(bytes(self._partial[:cut]).decode("utf-8", "replace"))
            self._partial.clear()
            self._discarding = True

    def _end_line(self, lines: list[str]) -> None:
        if self._discarding:
            self._discarding = False
        else:
            lines.append(self._partial.decode("utf-8", "replace"))
        self._partial.clear()
