"""A failed, cancelled or killed backup never leaves a complete-looking archive; a running
server changing files mid-backup cannot make the backup read outside its directory."""
import os
import signal
import subprocess
import sys
import threading

import pytest

import roost
from roost.backups import (
    BackupCancelled,
    create_backup,
    remove_partial_backups,
    restore_backup,
)
from roost.backups import archive as archive_mod
from tests.unit.backups.helpers import snapshot

REPO = os.path.dirname(os.path.dirname(os.path.abspath(roost.__file__)))
TMPFILE_MODES = [pytest.param(True, id="tmpfile-if-supported"),
                 pytest.param(False, id="named-temp")]


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    root = tmp_path_factory.mktemp("atomic") / "src"
    (root / "world").mkdir(parents=True)
    for i in range(50):
        (root / "world" / f"f{i}.txt").write_text(f"file {i}\n" * 200)
    with open(root / "world" / "big.bin", "wb") as f:
        block = os.urandom(1 << 20)
        for _ in range(48):
            f.write(block)
    return root


def _leftovers(directory):
    return sorted(os.listdir(directory)) if os.path.isdir(directory) else []


@pytest.mark.parametrize("use_tmpfile", TMPFILE_MODES)
def test_failure_mid_write_leaves_nothing(src, tmp_path, use_tmpfile):
    dest = tmp_path / "backups" / "b.tar.gz"

    def progress(done, total):
        if done > total // 3:
            raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        create_backup(src, dest, progress=progress, progress_interval=0,
                      _use_tmpfile=use_tmpfile)
    assert _leftovers(dest.parent) == []


@pytest.mark.parametrize("use_tmpfile", TMPFILE_MODES)
def test_cancel_leaves_nothing_and_keeps_an_older_archive(src, tmp_path, use_tmpfile):
    dest = tmp_path / "b.tar.gz"
    dest.write_bytes(b"an older backup")
    cancel = threading.Event()

    def progress(done, total):
        if done > total // 2:
            cancel.set()

    with pytest.raises(BackupCancelled):
        create_backup(src, dest, progress=progress, progress_interval=0, cancel=cancel,
                      _use_tmpfile=use_tmpfile)
    assert _leftovers(tmp_path) == ["b.tar.gz"]
    assert dest.read_bytes() == b"an older backup"
    result = create_backup(src, dest, _use_tmpfile=use_tmpfile)      # replaces it atomically
    assert result.size == dest.stat().st_size and _leftovers(tmp_path) == ["b.tar.gz"]


_CHILD = """
import os, signal, sys
from roost.backups import create_backup

def progress(done, total):
    if done > total // 2:
        os.kill(os.getpid(), signal.SIGKILL)     # the daemon dies mid-write

create_backup(sys.argv[1], sys.argv[2], progress=progress, progress_interval=0,
              _use_tmpfile=sys.argv[3] == "1")
print("finished")
"""


@pytest.mark.parametrize("use_tmpfile", TMPFILE_MODES)
def test_killed_backup_leaves_no_complete_looking_archive(src, tmp_path, use_tmpfile):
    dest = tmp_path / "backups" / "b.tar.gz"
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(src), str(dest),
                           "1" if use_tmpfile else "0"], cwd=REPO, capture_output=True,
                          timeout=60, env={**os.environ, "PYTHONPATH": REPO})
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert b"finished" not in proc.stdout
    assert not dest.exists()
    left = _leftovers(dest.parent)
    # with O_TMPFILE nothing at all; otherwise only a hidden ".b.tar.gz.<random>.part"
    assert all(name.startswith(".b.tar.gz.") and name.endswith(".part") for name in left)
    if archive_mod._tmpfile_works(os.fsencode(dest.parent)) and use_tmpfile:
        assert left == []
    assert remove_partial_backups(dest.parent) == left
    assert _leftovers(dest.parent) == []


def test_kill_from_outside_mid_backup(src, tmp_path):
    """The parent kills the child while it writes (no cooperation from the child)."""
    dest = tmp_path / "b.tar.gz"
    child = """
import sys
from roost.backups import create_backup
def progress(done, total):
    if done:
        print("writing", flush=True)
create_backup(sys.argv[1], sys.argv[2], progress=progress, level=9)
"""
    proc = subprocess.Popen([sys.executable, "-c", child, str(src), str(dest)], cwd=REPO,
                            stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": REPO})
    try:
        assert proc.stdout.readline() == b"writing\n"
        proc.kill()
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not dest.exists()
    remove_partial_backups(tmp_path)
    assert _leftovers(tmp_path) == []


def test_files_changing_during_backup(src, tmp_path):
    """Files deleted, grown or swapped for links to outside between the scan and the read:
    the backup completes, is a valid archive, and holds nothing from outside."""
    data = tmp_path / "data"
    (data / "a").mkdir(parents=True)
    (data / "a" / "inner.txt").write_text("inner")
    (data / "gone.txt").write_text("soon gone")
    (data / "grows.txt").write_text("12345")
    (data / "z-last").mkdir()
    (data / "z-last" / "x.txt").write_text("x")
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "x.txt").write_text("TOP SECRET")
    (secret / "inner.txt").write_text("TOP SECRET")
    fired = []

    def progress(done, total):
        if not fired:                       # first call: after the scan, before any read
            fired.append(1)
            (data / "gone.txt").unlink()
            with open(data / "grows.txt", "a") as f:
                f.write("6789")
            os.rename(data / "z-last", tmp_path / "moved")
            os.symlink(secret, data / "z-last")        # dir swapped for a link to outside
            (data / "a" / "inner.txt").unlink()
            os.symlink(secret / "inner.txt", data / "a" / "inner.txt")

    archive = tmp_path / "b.tar.gz"
    result = create_backup(data, archive, progress=progress, progress_interval=0)
    assert b"TOP SECRET" not in subprocess.run(["tar", "xzOf", str(archive)],
                                               capture_output=True, check=True).stdout
    assert set(result.skipped) >= {"gone.txt", "z-last/x.txt", "a/inner.txt"}
    out = tmp_path / "out"
    restore_backup(archive, out, expected_sha1=result.sha1)
    assert (out / "grows.txt").read_text() == "123456789"
    assert not (out / "gone.txt").exists()


def test_shrinking_file_is_padded_to_its_header_size(tmp_path):
    """_TarChunker: a file shorter than announced yields zeros, keeping the stream valid."""
    chunks = []
    chunker = archive_mod._TarChunker(lambda view: chunks.append(bytes(view)), 4096)
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    fd = os.open(path, os.O_RDONLY)
    try:
        chunker.add_file(fd, 10_000, lambda n: None)
    finally:
        os.close(fd)
    chunker.flush()
    data = b"".join(chunks)
    assert len(data) == 10_240 and data[:3] == b"abc" and data[3:] == bytes(10_237)


def test_remove_partial_backups_only_removes_ours(tmp_path):
    (tmp_path / "b.tar.gz").write_text("complete")
    (tmp_path / ".b.tar.gz.0123456789ab.part").write_text("partial")
    (tmp_path / ".other.part").write_text("not ours")
    assert remove_partial_backups(tmp_path) == [".b.tar.gz.0123456789ab.part"]
    assert sorted(os.listdir(tmp_path)) == [".other.part", "b.tar.gz"]
    assert snapshot(tmp_path)


def test_cancelling_the_async_task_stops_the_backup(src, tmp_path):
    import asyncio

    from roost.backups import create_backup_async

    dest = tmp_path / "b.tar.gz"

    async def main():
        started = asyncio.Event()

        def progress(done, total):
            if done:
                started.set()

        task = asyncio.create_task(create_backup_async(src, dest, progress=progress, level=9,
                                                       progress_interval=0))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.get_running_loop().shutdown_default_executor()   # the worker finished

    asyncio.run(main())
    assert _leftovers(tmp_path) == []
