"""tarfmt: our headers read back by us, by tarfile and by GNU tar; we read GNU/pax/ustar/v7."""
import gzip
import io
import os
import shutil
import subprocess
import tarfile

import pytest
from hypothesis import given, settings, strategies as st

from roost.backups import tarfmt
from roost.backups.tarfmt import DIR, HARDLINK, REG, SYMLINK

from .helpers import tar_gz


def _archive(*members: bytes) -> bytes:
    return b"".join(members) + tarfmt.END_OF_ARCHIVE


def _file(name: bytes, data: bytes, **kw) -> bytes:
    return tarfmt.member_header(REG, name, size=len(data), **kw) + data + tarfmt.padding(len(data))


def _read_all(raw: bytes) -> list[tuple[tarfmt.Member, bytes]]:
    pieces = [raw[i:i + 700] for i in range(0, len(raw), 700)]      # headers split across
    reader = tarfmt.TarReader(tarfmt.ByteStream(iter(pieces)))
    out = []
    while (m := reader.next()) is not None:
        data = b""
        if m.kind == REG:
            r, w = os.pipe()
            reader.copy_data(w)
            os.close(w)
            with os.fdopen(r, "rb") as f:
                data = f.read()
        out.append((m, data))
    return out


NAMES = [
    b"plain.txt",
    b"dir/sub/file",
    "caf\u00e9/\u4e16\u754c.txt".encode(),
    b"bad\xff\xfename",
    b"x" * 100,
    b"long/" + b"y" * 200,
    b"long-non-utf8/" + b"\xff" * 150,
    b"with space and 'quotes' and \\backslash",
    b"line\nbreak",
]


@pytest.mark.parametrize("name", NAMES)
def test_names_round_trip_through_our_reader_and_tarfile(name):
    mtime = 1_700_000_000_123_456_789
    raw = _archive(_file(name, b"hello", mode=0o640, mtime_ns=mtime, uid=1000, gid=1001))
    [(m, data)] = _read_all(raw)
    assert (m.kind, m.name, m.mode, m.mtime_ns, m.uid, m.gid, data) == (
        REG, name, 0o640, mtime, 1000, 1001, b"hello")
    with tarfile.open(fileobj=io.BytesIO(raw), encoding="utf-8", errors="surrogateescape") as t:
        [info] = t.getmembers()
        assert os.fsencode(info.name) == name
        assert t.extractfile(info).read() == b"hello"


def test_all_member_kinds_and_exact_mtimes():
    raw = _archive(
        tarfmt.member_header(DIR, b"d", mode=0o2750, mtime_ns=5),
        _file(b"d/f", b"abc", mtime_ns=-1_500_000_000),
        tarfmt.member_header(SYMLINK, b"d/l", linkname=b"f", mtime_ns=1_000_000_000),
        tarfmt.member_header(HARDLINK, b"d/h", linkname=b"d/f"),
        tarfmt.member_header(SYMLINK, b"d/long", linkname=b"t" * 300),
        tarfmt.member_header(SYMLINK, b"d/longbin", linkname=b"\xfe" * 300),
    )
    got = [(m.kind, m.name, m.linkname, m.mode, m.mtime_ns, d) for m, d in _read_all(raw)]
    assert got == [
        (DIR, b"d", b"", 0o2750, 5, b""),
        (REG, b"d/f", b"", 0o644, -1_500_000_000, b"abc"),
        (SYMLINK, b"d/l", b"f", 0o644, 1_000_000_000, b""),
        (HARDLINK, b"d/h", b"d/f", 0o644, 0, b""),
        (SYMLINK, b"d/long", b"t" * 300, 0o644, 0, b""),
        (SYMLINK, b"d/longbin", b"\xfe" * 300, 0o644, 0, b""),
    ]


def test_huge_numbers_use_pax():
    header = tarfmt.member_header(REG, b"big", size=9 << 30, uid=2**31, gid=2**22,
                                  mtime_ns=9 * 10**18)
    reader = tarfmt.TarReader(tarfmt.ByteStream(iter([header])))
    m = reader.next()
    assert (m.size, m.uid, m.gid, m.mtime_ns) == (9 << 30, 2**31, 2**22, 9 * 10**18)


@given(st.integers(min_value=-(10**19), max_value=10**20))
def test_mtime_format_parse_exact(ns):
    assert tarfmt.parse_mtime(tarfmt.format_mtime(ns)) == ns


@given(st.binary(min_size=1, max_size=300).filter(lambda b: b"\0" not in b),
       st.sampled_from([REG, DIR, SYMLINK]))
@settings(max_examples=200)
def test_any_name_round_trips(name, kind):
    if kind == DIR:
        name = name.rstrip(b"/") or b"d"
    raw = _archive(tarfmt.member_header(kind, name, linkname=b"target" if kind == SYMLINK else b""))
    [(m, _)] = _read_all(raw)
    assert m.name == name and m.kind == kind


def test_bad_checksum_and_truncation_are_errors():
    raw = bytearray(_archive(_file(b"f", b"data")))
    raw[0] ^= 1
    with pytest.raises(tarfmt.TarFormatError):
        _read_all(bytes(raw))
    good = _archive(_file(b"f", b"data" * 200))
    with pytest.raises(tarfmt.TarFormatError):
        _read_all(good[:700])
    with pytest.raises(tarfmt.TarFormatError):      # no end-of-archive marker
        _read_all(good[:-1024])


@pytest.mark.parametrize("kind", ["chr", "blk", "fifo"])
def test_special_members_are_unsupported(kind):
    raw = gzip.decompress(tar_gz([(kind, "dev", None)]))
    with pytest.raises(tarfmt.UnsupportedMember):
        _read_all(raw)


def test_gnu_sparse_is_unsupported():
    pax = tarfmt._pax_record(b"GNU.sparse.major", b"1")
    block = tarfmt._ustar_block(b"././@PaxHeader", 0o644, 0, 0, len(pax), 0, b"x", b"")
    raw = _archive(block + pax + tarfmt.padding(len(pax)), _file(b"f", b""))
    with pytest.raises(tarfmt.UnsupportedMember):
        _read_all(raw)


@pytest.mark.skipif(shutil.which("tar") is None, reason="GNU tar not installed")
@pytest.mark.parametrize("fmt", ["gnu", "pax", "ustar", "v7", "oldgnu"])
def test_reads_gnu_tar_output(tmp_path, fmt):
    src = tmp_path / "src"
    (src / "d" / "e").mkdir(parents=True)
    (src / "d" / "f.txt").write_bytes(b"content")
    # v7 holds at most 99 bytes; ustar splits a long path into prefix + name
    long = "n" * 90 if fmt == "v7" else "p" * 80 + "/" + "n" * 60
    (src / "d" / long).parent.mkdir(exist_ok=True)
    (src / "d" / long).write_bytes(b"x" * 1000)
    os.symlink("f.txt", src / "d" / "link")
    os.link(src / "d" / "f.txt", src / "d" / "hard")
    os.utime(src / "d" / "f.txt", ns=(0, 1_600_000_000_987_654_321))
    out = subprocess.run(["tar", "cf", "-", f"--format={fmt}", "-C", str(src), "d"],
                         capture_output=True, check=True).stdout
    members = {m.name: (m, data) for m, data in _read_all(out)}
    expected = {b"d", b"d/e", b"d/f.txt", b"d/" + long.encode(), b"d/link", b"d/hard"}
    if "/" in long:
        expected.add(b"d/" + long.split("/")[0].encode())
    assert set(members) == expected
    f, data = members[b"d/f.txt"]
    hard, _ = members[b"d/hard"]
    first, second = (f, hard) if f.kind == REG else (hard, f)
    assert first.kind == REG and second.kind == HARDLINK
    assert members[b"d/link"][0].linkname == b"f.txt"
    assert members[b"d/" + long.encode()][1] == b"x" * 1000
    expected_mtime = 1_600_000_000_987_654_321 if fmt == "pax" else 1_600_000_000 * 10**9
    assert f.mtime_ns == expected_mtime


@pytest.mark.skipif(shutil.which("tar") is None, reason="GNU tar not installed")
def test_gnu_tar_lists_our_stream_without_warnings(tmp_path):
    raw = _archive(
        tarfmt.member_header(DIR, b"d", mtime_ns=1),
        _file(b"d/" + b"\xff" * 150, b"abc", mtime_ns=1_600_000_000_000_000_001),
        _file("d/\u00e9".encode() * 60, b"abc"),
        tarfmt.member_header(SYMLINK, b"d/l", linkname=b"\xfe" * 150),
    )
    proc = subprocess.run(["tar", "tvf", "-", "--full-time"], input=raw, capture_output=True)
    assert proc.returncode == 0 and proc.stderr == b""
    assert b"2020-09-13 12:26:40.000000001" in proc.stdout
