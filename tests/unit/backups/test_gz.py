"""gz: parallel members are standard gzip; the reader handles ours, foreign and broken streams."""
import gzip
import io
import os
import random
import shutil
import subprocess
import zlib

import pytest

from roost.backups import gz


def _compress(data: bytes, *, level=1, workers=2, chunk=64 << 10) -> bytes:
    out = io.BytesIO()
    writer = gz.ParallelGzipWriter(lambda parts: out.write(b"".join(parts)), level=level,
                                   workers=workers)
    for i in range(0, len(data), chunk):
        writer.submit(data[i:i + chunk])
    writer.finish()
    return out.getvalue()


def _reader(raw: bytes, read_size: int | None = None):
    f = io.BytesIO(raw)
    if read_size is None:
        return f.read
    return lambda n: f.read(min(n, read_size))


def _mixed(n: int, seed: int = 0) -> bytes:
    rng = random.Random(seed)
    text = b" ".join(rng.choice([b"alpha", b"beta", b"gamma", b"tick", b"world"])
                     for _ in range(n // 10))
    return (text[: n // 2] + rng.randbytes(n // 2))


@pytest.mark.parametrize("level", [0, 1, 6, 9])
def test_members_are_standard_gzip(level):
    data = _mixed(1_000_000)
    raw = _compress(data, level=level)
    assert gzip.decompress(raw) == data
    assert raw.count(b"\x1f\x8b\x08\x04") >= 15       # one member per chunk
    if shutil.which("gzip"):
        assert subprocess.run(["gzip", "-dc"], input=raw, capture_output=True,
                              check=True).stdout == data


def test_incompressible_chunks_are_stored_cheaply():
    data = os.urandom(1 << 20)
    header, body, trailer = gz.compress_member(data, 6)
    assert len(body) < len(data) + 200                  # stored: 5 bytes per 64 KiB block
    dec = zlib.decompressobj(-15)
    assert dec.decompress(body) == data


@pytest.mark.parametrize("workers", [1, 2, 4])
@pytest.mark.parametrize("read_size", [None, 7, 100_000])
def test_reader_round_trip(workers, read_size):
    data = _mixed(600_000, seed=workers)
    raw = _compress(data)
    out = b"".join(gz.iter_decompressed(_reader(raw, read_size), workers=workers))
    assert out == data


@pytest.mark.parametrize("read_size", [None, 13])
def test_reader_handles_foreign_single_and_multi_member(read_size):
    a, b = _mixed(300_000, 1), _mixed(200_000, 2)
    ga, gb = gzip.compress(a, mtime=0), gzip.compress(b, mtime=0)
    for raw, expected in ((ga, a), (ga + gb, a + b), (_compress(a) + gb, a + b),
                          (ga + b"\0" * 1000, a)):
        assert b"".join(gz.iter_decompressed(_reader(raw, read_size))) == expected


def test_empty_input_compresses_to_nothing_and_reads_back():
    assert b"".join(gz.iter_decompressed(_reader(gzip.compress(b"")))) == b""


def test_every_raw_byte_is_read_exactly_once():
    raw = _compress(_mixed(500_000)) + bytes(600)
    seen = bytearray()
    f = io.BytesIO(raw)

    def read(n):
        data = f.read(n)
        seen.extend(data)
        return data

    for _ in gz.iter_decompressed(read):
        pass
    assert bytes(seen) == raw


@pytest.mark.parametrize("maker", ["ours", "foreign"])
def test_corruption_is_detected(maker):
    data = _mixed(400_000)
    raw = bytearray(_compress(data) if maker == "ours" else gzip.compress(data))
    raw[len(raw) // 2] ^= 0x55
    with pytest.raises(gz.GzipFormatError):
        b"".join(gz.iter_decompressed(_reader(bytes(raw))))


@pytest.mark.parametrize("maker", ["ours", "foreign"])
def test_truncation_and_garbage_are_detected(maker):
    data = _mixed(400_000)
    raw = _compress(data) if maker == "ours" else gzip.compress(data)
    for bad in (raw[:-3], raw[: len(raw) // 2], raw + b"garbage", b"not gzip at all"):
        with pytest.raises(gz.GzipFormatError):
            b"".join(gz.iter_decompressed(_reader(bad)))


def test_skip_hint_skips_whole_members_only():
    data = _mixed(1_000_000)
    raw = _compress(data, chunk=100_000)
    hint = gz.SkipHint()
    hint.until = 450_000                               # members 0-3 lie wholly before it
    chunks = list(gz.iter_decompressed(_reader(raw), skip_hint=hint))
    assert chunks[:4] == [100_000] * 4
    assert b"".join(c for c in chunks if isinstance(c, bytes)) == data[400_000:]


def test_oversized_member_claim_is_refused():
    header, body, trailer = gz.compress_member(bytes(2_000_000), 9)
    # claim a huge member length
    bad = header[:16] + (2 * gz.MAX_MEMBER_OUTPUT + 100).to_bytes(8, "little") + body + trailer
    with pytest.raises(gz.GzipFormatError):
        b"".join(gz.iter_decompressed(_reader(bad)))


def test_member_inflating_past_the_cap_is_refused():
    header, body, trailer = gz.compress_member(bytes(gz.MAX_MEMBER_OUTPUT + 1), 9)
    with pytest.raises(gz.GzipFormatError):
        b"".join(gz.iter_decompressed(_reader(header + body + trailer)))
