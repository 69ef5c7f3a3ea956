"""A small, strict tar (ustar + pax) writer and reader working on raw byte names.

Why not `tarfile`: the writer must keep mtimes to the nanosecond (pax `mtime` with nine
decimals; tarfile goes through a float) and be cheap per member; the reader must hand back raw
byte names and nanosecond mtimes, refuse member types a restore never writes, and stream a
member's data straight into a file descriptor.

Writer output: ustar headers; a pax extended header (typeflag `x`) precedes a member only when
needed (name or link target over 100 bytes, a sub-second mtime, a size of 8 GiB or more, a
large uid/gid). Names over 100 bytes that are not valid UTF-8 go in GNU `L`/`K` long-name
headers instead (raw bytes; pax would need `hdrcharset=BINARY`, which GNU tar warns about).

Reader input: ustar, GNU (`ustar  ` magic, `L`/`K` long names, base-256 numbers), pax (`x`,
`g` ignored), and v7 headers. Types: regular file (`0`, NUL, `7`), hard link (`1`), symlink
(`2`), directory (`5`). Anything else (devices, FIFOs, sparse files, multi-volume, ...) raises
`UnsupportedMember`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator

BLOCK = 512
ZERO_BLOCK = bytes(BLOCK)
END_OF_ARCHIVE = bytes(2 * BLOCK)

REG, HARDLINK, SYMLINK, DIR = "file", "hardlink", "symlink", "dir"
_TYPEFLAGS = {REG: b"0", HARDLINK: b"1", SYMLINK: b"2", DIR: b"5"}
_SIZE_MAX = 0o77777777777          # 11 octal digits
_ID_MAX = 0o7777777                # 7 octal digits
_NS = 1_000_000_000


class TarFormatError(ValueError):
    """The stream is not a readable tar archive (bad checksum, truncation, bad pax record)."""


class UnsupportedMember(TarFormatError):
    """A member type that a restore refuses to write (device, FIFO, sparse file, ...)."""

    def __init__(self, name: bytes, reason: str):
        super().__init__(f"member {name!r}: {reason}")
        self.name = name
        self.reason = reason


# ---------------------------------------------------------------------------------------------
# writer

def _octal(value: int, width: int) -> bytes:
    return b"%0*o\0" % (width - 1, value)


def _pax_record(key: bytes, value: bytes) -> bytes:
    body = b" " + key + b"=" + value + b"\n"
    n = len(body) + 1
    while len(b"%d" % n) + len(body) != n:
        n = len(b"%d" % n) + len(body)
    return b"%d" % n + body


def format_mtime(mtime_ns: int) -> bytes:
    """Pax decimal seconds, exact to the nanosecond ("-1.5" is 1.5 s before the epoch)."""
    sign = b"-" if mtime_ns < 0 else b""
    sec, frac = divmod(abs(mtime_ns), _NS)
    if not frac:
        return sign + b"%d" % sec
    return sign + (b"%d.%09d" % (sec, frac)).rstrip(b"0")


def _ustar_block(name: bytes, mode: int, uid: int, gid: int, size: int, mtime: int,
                 typeflag: bytes, linkname: bytes) -> bytes:
    block = bytearray(BLOCK)
    block[0:len(name)] = name
    block[100:108] = _octal(mode, 8)
    block[108:116] = _octal(uid, 8)
    block[116:124] = _octal(gid, 8)
    block[124:136] = _octal(size, 12)
    block[136:148] = _octal(mtime, 12)
    block[148:156] = b"        "
    block[156:157] = typeflag
    block[157:157 + len(linkname)] = linkname
    block[257:265] = b"ustar\x0000"
    block[329:337] = _octal(0, 8)
    block[337:345] = _octal(0, 8)
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block)


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def member_header(kind: str, name: bytes, *, mode: int = 0o644, uid: int = 0, gid: int = 0,
                  size: int = 0, mtime_ns: int = 0, linkname: bytes = b"") -> bytes:
    """The header block(s) of one member: [pax header + pax data] + ustar header.

    `name` is the archive path as raw bytes, without a leading slash; directories get a
    trailing slash here. The caller appends `size` data bytes and `padding(size)`.
    """
    if kind == DIR and not name.endswith(b"/"):
        name += b"/"
    if b"\0" in name or b"\0" in linkname:
        raise ValueError("NUL byte in a member name")
    records = []
    gnu_long = b""                       # GNU 'L'/'K' headers for long names that are not UTF-8
    uname = name
    if len(name) > 100:
        if _is_utf8(name):
            records.append(_pax_record(b"path", name))
        else:
            gnu_long += _gnu_long(b"L", name)
        uname = name[:100]
    ulink = linkname
    if len(linkname) > 100:
        if _is_utf8(linkname):
            records.append(_pax_record(b"linkpath", linkname))
        else:
            gnu_long += _gnu_long(b"K", linkname)
        ulink = linkname[:100]
    usize = size
    if size > _SIZE_MAX:
        records.append(_pax_record(b"size", b"%d" % size))
        usize = 0
    uuid, ugid = uid, gid
    if not 0 <= uid <= _ID_MAX:
        records.append(_pax_record(b"uid", b"%d" % uid))
        uuid = 0
    if not 0 <= gid <= _ID_MAX:
        records.append(_pax_record(b"gid", b"%d" % gid))
        ugid = 0
    umtime = mtime_ns // _NS
    if mtime_ns % _NS or not 0 <= umtime <= _SIZE_MAX:
        records.append(_pax_record(b"mtime", format_mtime(mtime_ns)))
        umtime = min(max(umtime, 0), _SIZE_MAX)
    header = _ustar_block(uname, mode & 0o7777, uuid, ugid, usize, umtime, _TYPEFLAGS[kind], ulink)
    if not records:
        return gnu_long + header if gnu_long else header
    data = b"".join(records)
    pax = _ustar_block(b"././@PaxHeader", 0o644, 0, 0, len(data), 0, b"x", b"")
    return gnu_long + pax + data + padding(len(data)) + header


def _gnu_long(typeflag: bytes, value: bytes) -> bytes:
    data = value + b"\0"
    return (_ustar_block(b"././@LongLink", 0o644, 0, 0, len(data), 0, typeflag, b"")
            + data + padding(len(data)))


def padding(size: int) -> bytes:
    return bytes(-size % BLOCK)


# ---------------------------------------------------------------------------------------------
# reader

@dataclass(slots=True)
class Member:
    kind: str            # REG, HARDLINK, SYMLINK or DIR
    name: bytes          # raw archive path (not normalised; trailing slash of dirs removed)
    linkname: bytes      # symlink target or hard-link target ("" otherwise)
    mode: int
    uid: int
    gid: int
    size: int            # data bytes that follow (regular files only)
    mtime_ns: int


def _field(block: bytes, start: int, end: int) -> bytes:
    raw = block[start:end]
    nul = raw.find(b"\0")
    return raw if nul < 0 else raw[:nul]


def _number(raw: bytes) -> int:
    if raw and raw[0] & 0x80:               # GNU base-256
        value = int.from_bytes(raw[1:], "big")
        if raw[0] == 0xFF:
            value -= 1 << (8 * (len(raw) - 1))
        else:
            value += (raw[0] & 0x3F) << (8 * (len(raw) - 1))
        return value
    text = raw.split(b"\0", 1)[0].strip(b" ")
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        raise TarFormatError(f"bad number field {raw!r}") from None


def _checksum_ok(block: bytes) -> bool:
    stored = _number(block[148:156])
    unsigned = sum(block[:148]) + 256 + sum(block[156:])
    if stored == unsigned:
        return True
    signed = sum(b - 256 if b > 127 else b for b in block[:148] + block[156:]) + 256
    return stored == signed


def parse_mtime(value: bytes) -> int:
    """Pax decimal seconds to integer nanoseconds (extra digits truncated)."""
    text = value.strip()
    negative = text.startswith(b"-")
    if negative or text.startswith(b"+"):
        text = text[1:]
    whole, _, frac = text.partition(b".")
    if not whole.isdigit() and whole != b"" or frac and not frac.isdigit() or not (whole or frac):
        raise TarFormatError(f"bad pax mtime {value!r}")
    ns = int(whole or b"0") * _NS + int((frac[:9] or b"0").ljust(9, b"0"))
    return -ns if negative else ns


def parse_pax(data: bytes) -> dict[bytes, bytes]:
    records: dict[bytes, bytes] = {}
    pos = 0
    while pos < len(data):
        if data[pos] == 0:                   # trailing NUL padding
            break
        space = data.find(b" ", pos)
        if space < 0:
            raise TarFormatError("bad pax record")
        try:
            length = int(data[pos:space])
        except ValueError:
            raise TarFormatError("bad pax record length") from None
        end = pos + length
        if length <= 0 or end > len(data) or end <= space + 1 or data[end - 1:end] != b"\n":
            raise TarFormatError("bad pax record")
        key, eq, value = data[space + 1:end - 1].partition(b"=")
        if not eq:
            raise TarFormatError("bad pax record")
        records[key] = value
        pos = end
    return records


class ByteStream:
    """Sequential reads over an iterator of byte chunks (the decompressed tar stream).

    A chunk may also be an int: that many bytes the producer did not decompress because
    `hint.until` said they would only be skipped (see gz.iter_decompressed)."""

    __slots__ = ("_chunks", "_buf", "_pos", "consumed", "hint")

    def __init__(self, chunks: Iterator[bytes | int], hint=None):
        self._chunks = chunks
        self._buf = b""
        self._pos = 0
        self.consumed = 0
        self.hint = hint

    def _fill(self) -> bool:
        for chunk in self._chunks:
            if isinstance(chunk, int):
                raise TarFormatError("internal error: needed data was not decompressed")
            if chunk:
                self._buf = chunk
                self._pos = 0
                return True
        return False

    def read(self, n: int) -> bytes:
        """Exactly n bytes, or fewer only at the end of the stream."""
        pos = self._pos
        if pos + n <= len(self._buf):
            self._pos = pos + n
            self.consumed += n
            return self._buf[pos:pos + n]
        parts = [self._buf[pos:]]
        got = len(parts[0])
        while got < n and self._fill():
            take = min(n - got, len(self._buf))
            parts.append(self._buf[:take])
            self._pos = take
            got += take
        if got < n:
            self._buf, self._pos = b"", 0
        self.consumed += got
        return b"".join(parts)

    def skip(self, n: int) -> None:
        if self.hint is not None:
            self.hint.until = max(self.hint.until, self.consumed + n)
        while n:
            avail = len(self._buf) - self._pos
            if not avail:
                for chunk in self._chunks:
                    if isinstance(chunk, int):
                        if chunk > n:
                            raise TarFormatError("internal error: skipped too much")
                        n -= chunk
                        self.consumed += chunk
                        if not n:
                            return
                        continue
                    if chunk:
                        self._buf, self._pos = chunk, 0
                        break
                else:
                    raise TarFormatError("archive is truncated")
                continue
            take = min(avail, n)
            self._pos += take
            self.consumed += take
            n -= take

    def copy_to(self, fd: int, n: int) -> None:
        while n:
            avail = len(self._buf) - self._pos
            if not avail:
                if not self._fill():
                    raise TarFormatError("archive is truncated")
                continue
            take = min(avail, n)
            view = memoryview(self._buf)[self._pos:self._pos + take]
            while view:
                written = os.write(fd, view)
                view = view[written:]
            self._pos += take
            self.consumed += take
            n -= take

    def drain(self) -> None:
        self._buf, self._pos = b"", 0
        for chunk in self._chunks:
            self.consumed += chunk if isinstance(chunk, int) else len(chunk)


class TarReader:
    """Iterate members; after `next()` returns a regular file the caller may `copy_data(fd)`,
    otherwise its data is skipped on the next call."""

    def __init__(self, stream: ByteStream):
        self.stream = stream
        self._pending = 0            # data + padding of the current member not yet consumed
        self._pending_data = 0

    def _block(self) -> bytes:
        block = self.stream.read(BLOCK)
        if len(block) != BLOCK:
            raise TarFormatError("archive is truncated (no end-of-archive marker)")
        return block

    def _data(self, size: int) -> bytes:
        if size > 64 << 20:
            raise TarFormatError("extended header too large")
        data = self.stream.read(size)
        if len(data) != size:
            raise TarFormatError("archive is truncated")
        self.stream.skip(-size % BLOCK)
        return data

    def copy_data(self, fd: int) -> None:
        self.stream.copy_to(fd, self._pending_data)
        self._pending -= self._pending_data
        self._pending_data = 0

    def next(self) -> Member | None:
        if self._pending:
            self.stream.skip(self._pending)
            self._pending = self._pending_data = 0
        pax: dict[bytes, bytes] = {}
        long_name = long_link = None
        while True:
            block = self._block()
            if block == ZERO_BLOCK:
                return None              # end of archive (the second zero block is optional)
            if not _checksum_ok(block):
                raise TarFormatError("bad header checksum")
            typeflag = block[156:157]
            size = _number(block[124:136])
            if typeflag == b"x":
                pax.update(parse_pax(self._data(size)))
                continue
            if typeflag == b"g":
                self._data(size)         # global pax header: nothing in it applies to a restore
                continue
            if typeflag == b"L":
                long_name = self._data(size).split(b"\0", 1)[0]
                continue
            if typeflag == b"K":
                long_link = self._data(size).split(b"\0", 1)[0]
                continue
            break
        magic = block[257:263]
        name = _field(block, 0, 100)
        if magic == b"ustar\0":
            prefix = _field(block, 345, 500)
            if prefix:
                name = prefix + b"/" + name
        if long_name is not None:
            name = long_name
        if b"path" in pax:
            name = pax[b"path"]
        linkname = _field(block, 157, 257)
        if long_link is not None:
            linkname = long_link
        if b"linkpath" in pax:
            linkname = pax[b"linkpath"]
        if b"size" in pax:
            size = _int(pax[b"size"])
        mode = _number(block[100:108])
        uid = _int(pax[b"uid"]) if b"uid" in pax else _number(block[108:116])
        gid = _int(pax[b"gid"]) if b"gid" in pax else _number(block[116:124])
        if b"mtime" in pax:
            mtime_ns = parse_mtime(pax[b"mtime"])
        else:
            mtime_ns = _number(block[136:148]) * _NS
        if not -(1 << 63) < mtime_ns < 1 << 63:
            raise TarFormatError(f"member {name!r} has an mtime out of range")
        if any(key.startswith(b"GNU.sparse") for key in pax):
            raise UnsupportedMember(name, "sparse files are not supported")
        if typeflag in (b"0", b"\0", b"7"):
            kind = DIR if typeflag == b"\0" and name.endswith(b"/") else REG
        elif typeflag == b"5":
            kind = DIR
        elif typeflag == b"2":
            kind = SYMLINK
        elif typeflag == b"1":
            kind = HARDLINK
        else:
            what = {b"3": "character device", b"4": "block device", b"6": "FIFO"}.get(
                typeflag, f"unsupported member type {typeflag!r}")
            raise UnsupportedMember(name, what)
        if size < 0:
            raise TarFormatError("negative size")
        if kind == REG:
            self._pending_data = size
            self._pending = size + (-size % BLOCK)
        else:
            size = 0
        if kind == DIR:
            name = name.rstrip(b"/") or b"."
        return Member(kind, name, linkname, mode & 0o7777, uid, gid, size, mtime_ns)


def _int(value: bytes) -> int:
    try:
        return int(value)
    except ValueError:
        raise TarFormatError(f"bad pax number {value!r}") from None
