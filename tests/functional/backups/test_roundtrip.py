"""Backup -> wipe -> restore is exact on a big, odd tree; GNU tar and tarfile read our archives;
foreign archives restore; progress and the asyncio wrappers behave."""
import asyncio
import os
import random
import shutil
import subprocess
import tarfile
import threading
import time

import pytest

from roost.backups import (
    create_backup,
    create_backup_async,
    restore_backup,
    restore_backup_async,
)
from tests.unit.backups.helpers import sha1_file, snapshot

BIG = 200 * 1024 * 1024


def _set_mtime(path, ns):
    os.utime(path, ns=(ns, ns), follow_symlinks=False)


def build_tree(root, *, n_files=3000, big=BIG, seed=7) -> None:
    """Thousands of small files in nested dirs, odd and non-UTF-8 names, symlinks, hard links,
    empty dirs, odd modes, nanosecond and pre-1970 mtimes, and one big file."""
    rng = random.Random(seed)
    root = os.fsencode(root)
    os.makedirs(root)
    dirs = [root]
    for i in range(120):
        parent = rng.choice(dirs)
        d = os.path.join(parent, b"dir%03d" % i)
        os.mkdir(d)
        dirs.append(d)
    odd = [b"with space", b"-leading-dash", b"new\nline", b"tab\there", b"quote'\"", b"back\\slash",
           "caf\u00e9 \u4e16\u754c \U0001F600".encode(), b"latin1-\xe9\xe8", b"bad-\xff\xfe\x80",
           b"n" * 255, b"long-non-utf8-" + b"\xfe" * 130, b"*?[glob]", b".hidden", b"..dots..",
           b"trailing.", b"#hash"]
    for i in range(n_files):
        d = rng.choice(dirs)
        name = odd[i] if i < len(odd) else b"f%05d.%s" % (i, rng.choice([b"txt", b"dat", b"json"]))
        size = rng.choice([0, 1, 100, 511, 512, 513, 4096, rng.randint(0, 70_000)])
        data = rng.randbytes(size) if rng.random() < 0.3 else (b"line %d\n" % i) * (size // 8)
        path = os.path.join(d, name)
        with open(path, "wb") as f:
            f.write(data)
        os.chmod(path, rng.choice([0o644, 0o600, 0o755, 0o444, 0o640, 0o000, 0o777]))
    # a deep path (well over 100 bytes: pax path) with a long name
    deep = os.path.join(root, *[b"deep%02d" % i for i in range(30)])
    os.makedirs(deep)
    with open(os.path.join(deep, b"x" * 200), "wb") as f:
        f.write(b"deep")
    # non-UTF-8 directory with content
    bad_dir = os.path.join(root, b"\xff\xfe-dir")
    os.mkdir(bad_dir)
    with open(os.path.join(bad_dir, b"\xc3\x28"), "wb") as f:
        f.write(b"invalid utf-8 inside")
    # empty directories, nested and with odd modes
    os.makedirs(os.path.join(root, b"empty/nested/deeper"))
    os.mkdir(os.path.join(root, b"sticky"), 0o1777)
    os.chmod(os.path.join(root, b"sticky"), 0o1777)
    os.mkdir(os.path.join(root, b"setgid"))
    os.chmod(os.path.join(root, b"setgid"), 0o2750)
    os.mkdir(os.path.join(root, b"private"))
    os.chmod(os.path.join(root, b"private"), 0o700)
    # symlinks: to files, to dirs, dangling (inside), with odd names
    os.symlink(b"dir000", os.path.join(root, b"link-to-dir"))
    os.symlink(b"../empty", os.path.join(root, b"dir000", b"up-link"))
    os.symlink(b"does/not/exist", os.path.join(root, b"dangling"))
    os.symlink(b"\xff\xfe-dir/\xc3\x28", os.path.join(root, b"link-\xff"))
    os.symlink(b"big.bin", os.path.join(root, b"big-link"))
    # hard links
    os.link(os.path.join(bad_dir, b"\xc3\x28"), os.path.join(root, b"hard-1"))
    os.link(os.path.join(bad_dir, b"\xc3\x28"), os.path.join(root, b"empty", b"hard-2"))
    # the big file: random and repeated blocks (compressible and not), written fast
    if big:
        rand_block = rng.randbytes(4 << 20)
        text_block = b"".join(b"%08d the quick brown fox jumps over the lazy dog\n" % i
                              for i in range(4 << 20 >> 6))[: 4 << 20]
        with open(os.path.join(root, b"big.bin"), "wb") as f:
            left = big
            i = 0
            while left:
                block = (rand_block if i % 3 == 0 else text_block)[:left]
                f.write(block)
                left -= len(block)
                i += 1
    # mtimes: nanoseconds, pre-1970, far future; directories last, deepest first
    walked = list(os.walk(root))
    for dirpath, dirnames, filenames in walked:
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            recent = rng.randint(0, 2_000_000_000) * 10**9 + rng.randint(0, 10**9 - 1)
            _set_mtime(os.path.join(dirpath, name),
                       rng.choice([recent, -86_400 * 10**9 * 365 - 123, 4_000_000_000_123_456_789]))
    for dirpath, _, _ in sorted(walked, key=lambda w: -w[0].count(b"/")):
        if dirpath != root:
            _set_mtime(dirpath, rng.randint(0, 2_000_000_000) * 10**9 + rng.randint(0, 10**9 - 1))


@pytest.fixture(scope="module")
def big_tree(tmp_path_factory):
    base = tmp_path_factory.mktemp("backup-big")
    src = base / "src"
    build_tree(src)
    archive = base / "backups" / "b.tar.gz"
    calls = []
    t0 = time.monotonic()
    result = create_backup(src, archive, progress=lambda done, total: calls.append((done, total)))
    elapsed = time.monotonic() - t0
    yield {"base": base, "src": src, "archive": archive, "result": result, "calls": calls,
           "elapsed": elapsed, "snapshot": snapshot(src)}
    shutil.rmtree(base)


def test_result_checksum_size_and_counts(big_tree):
    result = big_tree["result"]
    archive = big_tree["archive"]
    assert result.sha1 == sha1_file(archive)
    assert result.size == archive.stat().st_size
    assert result.files >= 3000 and result.symlinks == 5 and result.skipped == ()
    assert result.bytes >= BIG
    assert oct(archive.stat().st_mode & 0o777) == "0o600"
    assert sorted(os.listdir(archive.parent)) == ["b.tar.gz"]        # no temp files left


def test_progress_is_monotonic_throttled_and_complete(big_tree):
    calls = big_tree["calls"]
    assert calls[0][0] == 0 and calls[-1][0] == calls[-1][1] == big_tree["result"].bytes
    assert all(a[0] <= b[0] for a, b in zip(calls, calls[1:]))
    assert len(calls) <= big_tree["elapsed"] / 0.25 + 3


def test_round_trip_after_wipe_is_exact(big_tree, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(big_tree["src"] / "empty", data)       # something to wipe
    (data / "stale.txt").write_text("not in the backup")
    restored = []
    result = restore_backup(big_tree["archive"], data, expected_sha1=big_tree["result"].sha1,
                            truncate=True, progress=restored.append)
    assert snapshot(data) == big_tree["snapshot"]
    assert result.files + result.dirs + result.symlinks + result.hardlinks == len(restored)
    assert len(restored) == len(big_tree["snapshot"])
    assert "latin1-\\xe9\\xe8" in {p.rsplit("/", 1)[-1] for p in restored}
    assert result.hardlinks == 2
    hard = os.stat(os.path.join(os.fsencode(data), b"hard-1"))
    assert hard.st_nlink == 3


def test_gnu_tar_extracts_the_same_tree(big_tree, tmp_path):
    out = tmp_path / "tar"
    out.mkdir()
    # (--warning=no-timestamp: GNU tar remarks on the tree's pre-1970 and far-future mtimes)
    proc = subprocess.run(["tar", "--warning=no-timestamp", "-xzf", str(big_tree["archive"]),
                           "-C", str(out)], capture_output=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == b""
    # GNU tar (as root) keeps modes and nanosecond mtimes; it does not set symlink mtimes
    assert snapshot(out, symlink_mtimes=False) == {
        k: (v[:2] + (None,) if v[0] == "l" else v) for k, v in big_tree["snapshot"].items()}


def test_tarfile_reads_every_member(big_tree):
    with tarfile.open(big_tree["archive"], encoding="utf-8", errors="surrogateescape") as t:
        names = {os.fsencode(m.name) for m in t.getmembers()}
    assert names == set(big_tree["snapshot"])


def test_restore_without_checksum_and_into_missing_dir(big_tree, tmp_path):
    data = tmp_path / "new" / "data"
    restore_backup(big_tree["archive"], data, expected_sha1=None)
    assert snapshot(data) == big_tree["snapshot"]


def _small_tree(root):
    (root / "d" / "e").mkdir(parents=True)
    (root / "d" / "f.txt").write_text("hello")
    (root / "g.bin").write_bytes(os.urandom(300_000))
    os.symlink("d/f.txt", root / "l")
    os.chmod(root / "d", 0o750)
    for p in [root / "d" / "f.txt", root / "g.bin", root / "d" / "e", root / "d"]:
        os.utime(p, ns=(0, 1_600_000_000_123_456_789))


@pytest.mark.parametrize("fmt", ["gnu", "posix"])
def test_restores_gnu_tar_archives(tmp_path, fmt):
    src = tmp_path / "src"
    _small_tree(src)
    archive = tmp_path / "t.tar.gz"
    subprocess.run(["tar", "czf", str(archive), f"--format={fmt}", "-C", str(src), "."],
                   check=True)
    data = tmp_path / "data"
    restore_backup(archive, data, expected_sha1=sha1_file(archive), truncate=True)
    expected = snapshot(src)
    if fmt == "gnu":                    # whole seconds only
        expected = {k: tuple(x // 10**9 * 10**9 if isinstance(x, int) and x > 10**17 else x
                             for x in v) for k, v in expected.items()}
    assert snapshot(data, symlink_mtimes=False) == {
        k: (v[:2] + (None,) if v[0] == "l" else v) for k, v in expected.items()}


def test_restores_python_tarfile_archives(tmp_path):
    src = tmp_path / "src"
    _small_tree(src)
    archive = tmp_path / "t.tar.gz"
    with tarfile.open(archive, "w:gz") as t:
        for name in ["d", "d/e", "d/f.txt", "g.bin", "l"]:
            t.add(src / name, arcname=name, recursive=False)
    data = tmp_path / "data"
    restore_backup(archive, data, expected_sha1=None)
    got = snapshot(data)
    assert got[b"d/f.txt"][:2] == ("f", 0o644) and got[b"l"][1] == b"d/f.txt"
    assert sha1_file(data / "g.bin") == sha1_file(src / "g.bin")


def test_empty_directory_and_special_files(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    archive = tmp_path / "e.tar.gz"
    result = create_backup(src, archive)
    assert subprocess.run(["tar", "tzf", str(archive)], capture_output=True,
                          check=True).stdout == b""
    os.mkfifo(src / "fifo")
    import socket
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(src / "sock"))
    (src / "file").write_text("x")
    try:
        result = create_backup(src, archive)
    finally:
        sock.close()
    assert result.files == 1
    with tarfile.open(archive) as t:
        assert t.getnames() == ["file"]
    data = tmp_path / "data"
    restore_backup(archive, data, expected_sha1=result.sha1)
    assert os.listdir(data) == ["file"]


def test_levels_and_workers_give_the_same_tree(tmp_path):
    src = tmp_path / "src"
    build_tree(src, n_files=200, big=3 << 20, seed=3)
    expected = snapshot(src)
    for level, workers in [(0, 1), (6, 2), (9, 3)]:
        archive = tmp_path / f"l{level}.tar.gz"
        result = create_backup(src, archive, level=level, workers=workers, chunk_size=65536)
        data = tmp_path / f"d{level}"
        restore_backup(archive, data, expected_sha1=result.sha1, workers=workers)
        assert snapshot(data) == expected


def test_async_wrappers_call_back_on_the_loop(tmp_path):
    src = tmp_path / "src"
    build_tree(src, n_files=100, big=8 << 20, seed=5)

    async def main():
        loop_thread = threading.get_ident()
        threads = set()
        paths = []

        def on_bytes(done, total):
            threads.add(threading.get_ident())

        def on_path(path):
            threads.add(threading.get_ident())
            paths.append(path)

        result = await create_backup_async(src, tmp_path / "a.tar.gz", progress=on_bytes)
        await restore_backup_async(tmp_path / "a.tar.gz", tmp_path / "data",
                                   expected_sha1=result.sha1, progress=on_path,
                                   byte_progress=on_bytes)
        await asyncio.sleep(0)              # let the last call_soon_threadsafe callbacks run
        return loop_thread, threads, paths

    loop_thread, threads, paths = asyncio.run(main())
    assert threads == {loop_thread}
    assert len(paths) == len(snapshot(src))
    assert snapshot(tmp_path / "data") == snapshot(src)
