"""Restore refuses bad archives before writing anything; it never writes through links;
checksums are checked first; ownership and setuid handling."""
import gzip
import os

import pytest

from roost.backups import (
    ChecksumMismatch,
    InvalidArchive,
    UnsafeArchive,
    create_backup,
    restore_backup,
)
from tests.unit.backups.helpers import snapshot, tar_gz, write_archive

GOOD_FIRST = [("dir", "world", None), ("file", "world/level.dat", b"good"),
              ("file", "server.properties", b"motd=hi")]

MALICIOUS = {
    "dotdot": [("file", "../evil", b"x")],
    "dotdot-inner": [("file", "world/../../evil", b"x")],
    "dotdot-harmless-looking": [("file", "world/../server.properties", b"x")],
    "absolute": [("file", "/tmp/roost-evil-absolute", b"x")],
    "absolute-outside": [("file", "{outside}/evil", b"x")],
    "symlink-absolute": [("symlink", "etc", "/etc")],
    "symlink-up": [("symlink", "up", "../outside")],
    "symlink-deep-up": [("symlink", "world/a/b/up", "../../../../outside/sentinel")],
    "symlink-then-write-through": [("symlink", "w", "world"), ("file", "w/x", b"x")],
    "symlink-then-write-through-out": [("symlink", "o", "../outside"), ("file", "o/pwn", b"x")],
    "symlink-chain": [("symlink", "s", "."), ("symlink", "l", "s/../outside")],
    "symlink-loop": [("symlink", "a", "b"), ("symlink", "b", "a")],
    "hardlink-absolute": [("hardlink", "h", "/etc/passwd")],
    "hardlink-up": [("hardlink", "h", "../outside/sentinel")],
    "hardlink-not-in-archive": [("hardlink", "h", "existing.txt")],
    "hardlink-to-symlink": [("symlink", "s", "existing.txt"), ("hardlink", "h", "s")],
    "char-device": [("chr", "null", None)],
    "block-device": [("blk", "sda", None)],
    "fifo": [("fifo", "pipe", None)],
    "dir-replaced-by-file": [("dir", "d", None), ("file", "d", b"x")],
}


@pytest.fixture
def layout(tmp_path):
    """base/data (with content) and base/outside/sentinel, plus an archive path."""
    data = tmp_path / "data"
    outside = tmp_path / "outside"
    (data / "world").mkdir(parents=True)
    (data / "world" / "level.dat").write_bytes(b"old level")
    (data / "existing.txt").write_text("existing")
    outside.mkdir()
    (outside / "sentinel").write_text("keep me")
    return tmp_path, data, outside


@pytest.mark.parametrize("truncate", [False, True])
@pytest.mark.parametrize("case", sorted(MALICIOUS))
def test_malicious_archives_are_refused_and_nothing_is_written(layout, case, truncate):
    base, data, outside = layout
    members = [(k, n.format(outside=outside), t) for k, n, t in GOOD_FIRST + MALICIOUS[case]]
    archive = base / "evil.tar.gz"
    sha = write_archive(archive, tar_gz(members))
    before = snapshot(base)
    with pytest.raises(UnsafeArchive):
        restore_backup(archive, data, expected_sha1=sha, truncate=truncate)
    assert snapshot(base) == before
    assert not os.path.exists("/tmp/roost-evil-absolute")


def test_checksum_mismatch_touches_nothing(layout, tmp_path):
    base, data, outside = layout
    src = tmp_path / "src"
    src.mkdir()
    (src / "new.txt").write_text("new")
    archive = tmp_path / "b.tar.gz"
    result = create_backup(src, archive)
    before = snapshot(data), snapshot(outside)
    with pytest.raises(ChecksumMismatch) as info:
        restore_backup(archive, data, expected_sha1="0" * 40, truncate=True)
    assert info.value.actual == result.sha1
    # a corrupted archive with the original's checksum: same
    raw = bytearray(archive.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    archive.write_bytes(bytes(raw))
    with pytest.raises(ChecksumMismatch):
        restore_backup(archive, data, expected_sha1=result.sha1.upper(), truncate=True)
    # a truncated archive
    archive.write_bytes(bytes(raw[: len(raw) // 2]))
    with pytest.raises(ChecksumMismatch):
        restore_backup(archive, data, expected_sha1=result.sha1, truncate=True)
    assert (snapshot(data), snapshot(outside)) == before


def test_garbage_and_empty_files_are_invalid(layout):
    base, data, _ = layout
    before = snapshot(base)
    for raw in (b"", b"definitely not gzip", gzip.compress(b"not a tar" * 100),
                gzip.compress(b"\0" * 100)):
        archive = base / "x.tar.gz"
        sha = write_archive(archive, raw)
        before = snapshot(base)
        with pytest.raises(InvalidArchive):
            restore_backup(archive, data, expected_sha1=sha, truncate=True)
        assert snapshot(base) == before


def test_non_truncating_restore_replaces_but_keeps_extras(layout, tmp_path):
    base, data, outside = layout
    (data / "extra.txt").write_text("extra")
    archive = tmp_path / "a.tar.gz"
    sha = write_archive(archive, tar_gz(GOOD_FIRST))
    restore_backup(archive, data, expected_sha1=sha, truncate=False)
    assert (data / "world" / "level.dat").read_bytes() == b"good"
    assert (data / "extra.txt").read_text() == "extra"
    assert (data / "existing.txt").read_text() == "existing"


def test_existing_symlinks_and_hardlinks_are_never_written_through(layout, tmp_path):
    """A server may plant links in its own directory before asking for a restore."""
    base, data, outside = layout
    victim_dir = outside / "victim"
    victim_dir.mkdir()
    (data / "world" / "level.dat").unlink()
    (data / "world").rmdir()
    os.symlink(victim_dir, data / "world")                      # dir -> outside
    os.symlink(outside / "sentinel", data / "server.properties")  # file -> outside
    os.link(outside / "sentinel", data / "existing.txt.tmp")
    os.replace(data / "existing.txt.tmp", data / "existing.txt")  # hard link to outside
    archive = tmp_path / "a.tar.gz"
    sha = write_archive(archive, tar_gz(GOOD_FIRST + [("file", "existing.txt", b"new")]))
    outside_before = snapshot(outside)
    restore_backup(archive, data, expected_sha1=sha, truncate=False)
    assert snapshot(outside) == outside_before
    assert (outside / "sentinel").read_text() == "keep me"
    assert not (data / "world").is_symlink()
    assert (data / "world" / "level.dat").read_bytes() == b"good"
    assert not (data / "server.properties").is_symlink()
    assert (data / "existing.txt").read_bytes() == b"new"


def test_symlink_through_existing_link_is_judged_on_disk(layout, tmp_path):
    """Not truncating: a symlink of the archive resolved through a link already on disk."""
    base, data, outside = layout
    os.symlink(".", data / "dot")
    archive = tmp_path / "a.tar.gz"
    sha = write_archive(archive, tar_gz([("symlink", "l", "dot/../outside/sentinel")]))
    before = snapshot(base)
    with pytest.raises(UnsafeArchive):
        restore_backup(archive, data, expected_sha1=sha, truncate=False)
    assert snapshot(base) == before
    # truncating removes the on-disk link first: "dot" is then nothing, "dot/.." the data
    # directory itself, and the link a dangling one inside it
    restore_backup(archive, data, expected_sha1=sha, truncate=True)
    assert os.listdir(data) == ["l"]
    real = os.path.realpath(data / "l")
    assert real == str(data / "outside" / "sentinel")


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_chown_to_applies_to_everything_restored(tmp_path):
    src = tmp_path / "src"
    (src / "d" / "e").mkdir(parents=True)
    (src / "d" / "f").write_text("x")
    os.symlink("d/f", src / "l")
    os.chmod(src / "d" / "f", 0o4755)
    archive = tmp_path / "a.tar.gz"
    result = create_backup(src, archive)
    data = tmp_path / "data"
    restore_backup(archive, data, expected_sha1=result.sha1, chown_to=(12345, 23456))
    for rel in ["d", "d/e", "d/f", "l"]:
        st = os.lstat(data / rel)
        assert (st.st_uid, st.st_gid) == (12345, 23456), rel
    assert os.stat(data / "d" / "f").st_mode & 0o7777 == 0o755         # setuid dropped
    restore_backup(archive, data, expected_sha1=result.sha1, chown_to=(12345, 23456),
                   keep_setid=True, truncate=True)
    assert os.stat(data / "d" / "f").st_mode & 0o7777 == 0o4755
    # implicit parent directories get the owner too
    sha = write_archive(tmp_path / "b.tar.gz", tar_gz([("file", "x/y/z", b"1")]))
    restore_backup(tmp_path / "b.tar.gz", data, expected_sha1=sha, chown_to=(7, 8))
    assert (os.stat(data / "x").st_uid, os.stat(data / "x" / "y").st_gid) == (7, 8)


def test_escaping_symlinks_are_left_out_of_backups_by_default(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "ok").write_text("x")
    os.symlink("/etc/passwd", src / "abs")
    os.symlink("../../x", src / "up")
    os.symlink("ok", src / "fine")
    archive = tmp_path / "a.tar.gz"
    result = create_backup(src, archive)
    assert sorted(result.skipped) == ["abs", "up"] and result.symlinks == 1
    data = tmp_path / "data"
    restore_backup(archive, data, expected_sha1=result.sha1)
    assert sorted(os.listdir(data)) == ["fine", "ok"]
    kept = create_backup(src, tmp_path / "k.tar.gz", keep_escaping_symlinks=True)
    assert kept.symlinks == 3
    with pytest.raises(UnsafeArchive):
        restore_backup(tmp_path / "k.tar.gz", tmp_path / "data2", expected_sha1=kept.sha1)
    assert not (tmp_path / "data2").exists()
