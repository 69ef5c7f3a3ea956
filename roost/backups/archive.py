"""The backup archive engine: create and restore `.tar.gz` backups of a server's data directory.

Both entry points are blocking and thread-safe; run them with `asyncio.to_thread` (or use
`create_backup_async` / `restore_backup_async`, which also bring progress callbacks back onto
the event loop). Callbacks given to the blocking functions are called from the worker thread.

create_backup
    Walks the data directory (never following a symlink: every directory and file is opened
    relative to its parent with O_NOFOLLOW, so a server swapping a directory for a symlink
    mid-backup cannot make it read outside), skips what the ignore rules match, and writes a
    standard tar (ustar + pax, nanosecond mtimes, raw byte names) compressed as concatenated
    gzip members in a thread pool (see `gz.py`). Regular files, directories (empty ones too),
    symlinks (as links) and hard links are kept; sockets, FIFOs and devices are skipped. By
    default symlinks whose target leaves the data directory are left out (and listed in
    `BackupResult.skipped`), because `restore_backup` refuses archives holding them: a backup
    that cannot be restored is worse than one without a dangling link.

    The archive is written to an unnamed file (O_TMPFILE) in the destination directory, or,
    where that cannot be named later (probed once per filesystem), to `.<name>.<random>.part`;
    it is fsynced and only then linked/renamed to `dest_path` and the directory fsynced. A
    failure, a cancel or a kill never leaves a file under the final name (with O_TMPFILE
    nothing at all; `remove_partial_backups` clears `.part` files left by a kill).

restore_backup
    Pass 1 reads the archive once: SHA-1 of the raw bytes, and every member header checked
    against the escape rules of `safety.py` (with a checksum to trust, gzip blocks holding only
    file data are not even inflated; those it does inflate are kept, within `cache_bytes`, for
    pass 2). Only if the checksum matches and every member is acceptable does pass 2 touch the
    data directory: truncate it if asked, then extract (each header must equal the validated
    one), creating every path relative to its parent directory with O_NOFOLLOW/O_EXCL (never
    writing through a symlink or into an existing inode), then set directory modes and mtimes
    last. Errors from the filesystem during pass 2 (disk full, ...) propagate as OSError and
    leave a partial restore.
"""
from __future__ import annotations

import asyncio
import collections
import ctypes
import errno
import hashlib
import os
import re
import secrets
import shutil
import stat
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from . import gz, tarfmt
from .ignore import load_ignore_rules
from .safety import ArchivePlan, UnsafeMember, disk_lookup, split_member_path
from .tarfmt import DIR, HARDLINK, REG, SYMLINK

DEFAULT_CHUNK = 1 << 20
DEFAULT_LEVEL = 1          # Wings' default backup compression level ("best_speed")
PROGRESS_INTERVAL = 0.25   # seconds between byte-progress callbacks
DEFAULT_RESTORE_CACHE = 128 << 20

ByteProgress = Callable[[int, int], None]

_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class BackupError(Exception):
    """Base class for backup and restore failures."""


class BackupCancelled(BackupError):
    """The `cancel` event was set."""


class ChecksumMismatch(BackupError):
    def __init__(self, expected: str, actual: str):
        super().__init__(f"archive checksum mismatch: expected sha1 {expected}, got {actual}")
        self.expected = expected
        self.actual = actual


class InvalidArchive(BackupError):
    """Not a readable .tar.gz (corrupt, truncated, unsupported member type)."""


class UnsafeArchive(BackupError):
    """A member would write or point outside the data directory; nothing was written."""

    def __init__(self, problem: UnsafeMember):
        super().__init__(f"unsafe archive member {problem}")
        self.member = problem.name
        self.reason = problem.reason


@dataclass(frozen=True)
class BackupResult:
    sha1: str                 # hex SHA-1 of the archive bytes
    size: int                 # archive size in bytes
    files: int = 0            # regular files archived (hard links included)
    dirs: int = 0
    symlinks: int = 0
    bytes: int = 0            # file data archived (uncompressed)
    skipped: tuple[str, ...] = field(default=())   # paths left out (escaping symlinks, ...)


@dataclass(frozen=True)
class RestoreResult:
    files: int
    dirs: int
    symlinks: int
    hardlinks: int
    bytes: int


class _Throttle:
    def __init__(self, callback: ByteProgress | None, interval: float):
        self.callback = callback
        self.interval = interval
        self.next_at = 0.0

    def __call__(self, done: int, total: int, force: bool = False) -> None:
        if self.callback is None:
            return
        now = time.monotonic()
        if force or now >= self.next_at:
            self.next_at = now + self.interval
            self.callback(done, max(total, done))


def _check_cancel(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise BackupCancelled("cancelled")


def _display(path: bytes) -> str:
    return path.decode("utf-8", "backslashreplace")


# ---------------------------------------------------------------------------------------------
# directory file descriptors, opened component by component without following symlinks

class _DirFds:
    def __init__(self, root_fd: int, *, create: bool = False,
                 on_mkdir: Callable[[int], None] | None = None, limit: int = 256):
        self.root_fd = root_fd
        self.create = create
        self.on_mkdir = on_mkdir
        self.limit = limit
        self.cache: collections.OrderedDict[tuple, int] = collections.OrderedDict()

    def get(self, path: tuple) -> int:
        if not path:
            return self.root_fd
        cache = self.cache
        fd = cache.get(path)
        if fd is not None:
            cache.move_to_end(path)
            return fd
        i = len(path) - 1
        while i > 0 and path[:i] not in cache:
            i -= 1
        fd = self.root_fd if i == 0 else cache[path[:i]]
        for j in range(i, len(path)):
            fd = self._open_child(fd, path[j])
            cache[path[:j + 1]] = fd
        while len(cache) > self.limit:
            _, old = cache.popitem(last=False)
            os.close(old)
        return fd

    def _open_child(self, parent: int, name: bytes) -> int:
        try:
            return os.open(name, _O_DIR, dir_fd=parent)
        except FileNotFoundError:
            if not self.create:
                raise
        except OSError as exc:
            if not self.create or exc.errno not in (errno.ENOTDIR, errno.ELOOP):
                raise
            _remove(parent, name)
        os.mkdir(name, 0o700, dir_fd=parent)
        fd = os.open(name, _O_DIR, dir_fd=parent)
        if self.on_mkdir is not None:
            self.on_mkdir(fd)
        return fd

    def forget(self, path: tuple) -> None:
        """Drop cached descriptors of `path` and everything below it."""
        n = len(path)
        for key in [k for k in self.cache if k[:n] == path]:
            os.close(self.cache.pop(key))

    def close(self) -> None:
        for fd in self.cache.values():
            os.close(fd)
        self.cache.clear()


def _remove(parent: int, name: bytes) -> None:
    try:
        st = os.stat(name, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(name, dir_fd=parent)
    else:
        os.unlink(name, dir_fd=parent)


def _open_root(data_dir, *, create: bool) -> tuple[bytes, int]:
    root = os.fsencode(os.path.abspath(os.fsencode(data_dir)))
    if create:
        os.makedirs(root, 0o755, exist_ok=True)
    return root, os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


# ---------------------------------------------------------------------------------------------
# atomic output

_AT_FDCWD = -100
_AT_EMPTY_PATH = 0x1000


def _linkat_empty_path(fd: int, dest: bytes) -> None:
    """linkat(fd, "", AT_FDCWD, dest, AT_EMPTY_PATH): name an O_TMPFILE file (needs
    CAP_DAC_READ_SEARCH on older kernels)."""
    libc = _libc()
    if libc is None:
        raise OSError(errno.ENOSYS, "linkat unavailable")
    if libc.linkat(fd, b"", _AT_FDCWD, dest, _AT_EMPTY_PATH) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), dest)


def _linkat_proc(fd: int, dest: bytes) -> None:
    """The unprivileged way: link the /proc/self/fd magic link, following it."""
    os.link(b"/proc/self/fd/%d" % fd, dest, follow_symlinks=True)


_libc_handle = None


def _libc():
    global _libc_handle
    if _libc_handle is None:
        try:
            _libc_handle = ctypes.CDLL(None, use_errno=True)
            _libc_handle.linkat.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int,
                                            ctypes.c_char_p, ctypes.c_int]
        except (OSError, AttributeError):
            _libc_handle = False
    return _libc_handle or None


# directory device -> the way to name an O_TMPFILE file there (None: use a named temp file)
_TMPFILE_LINKER: dict[int, Callable[[int, bytes], None] | None] = {}


def _tmpfile_linker(directory: bytes) -> Callable[[int, bytes], None] | None:
    """How an O_TMPFILE file in `directory` can be given a name, probed once per device:
    not every filesystem has O_TMPFILE, and linkat through /proc or with AT_EMPTY_PATH is
    refused in some setups (containers, sandboxes, kernels)."""
    if not getattr(os, "O_TMPFILE", 0):
        return None
    dev = os.stat(directory).st_dev
    if dev in _TMPFILE_LINKER:
        return _TMPFILE_LINKER[dev]
    found = None
    for linker in (_linkat_proc, _linkat_empty_path):
        try:
            fd = os.open(directory, os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, 0o600)
        except OSError:
            break
        probe = os.path.join(directory, b".roost-probe.%s" % secrets.token_hex(6).encode())
        try:
            linker(fd, probe)
            os.unlink(probe)
            found = linker
            break
        except OSError:
            continue
        finally:
            os.close(fd)
    _TMPFILE_LINKER[dev] = found
    return found


def _tmpfile_works(directory: bytes) -> bool:
    return _tmpfile_linker(directory) is not None


class _AtomicOutput:
    """A file that appears under `dest` only by `commit()` (fsynced), never half-written."""

    def __init__(self, dest: bytes, *, use_tmpfile: bool = True, mode: int = 0o600):
        self.dest = dest
        self.dir = os.path.dirname(dest) or b"."
        self.temp_name: bytes | None = None
        self.fd = -1
        os.makedirs(self.dir, 0o700, exist_ok=True)
        self.linker = _tmpfile_linker(self.dir) if use_tmpfile else None
        if self.linker is not None:
            self.fd = os.open(self.dir, os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, mode)
        if self.fd < 0:
            base = os.path.basename(dest)
            self.temp_name = os.path.join(
                self.dir, b".%s.%s.part" % (base, secrets.token_hex(6).encode()))
            self.fd = os.open(self.temp_name,
                              os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)

    def identity(self) -> tuple[int, int]:
        st = os.fstat(self.fd)
        return st.st_dev, st.st_ino

    def write(self, parts) -> None:
        fd = self.fd
        for part in parts:
            view = memoryview(part)
            while view:
                view = view[os.write(fd, view):]

    def commit(self) -> None:
        os.fsync(self.fd)
        if self.temp_name is None:
            try:
                self.linker(self.fd, self.dest)
            except FileExistsError:
                temp = os.path.join(self.dir, b".%s.%s.part" % (
                    os.path.basename(self.dest), secrets.token_hex(6).encode()))
                self.linker(self.fd, temp)
                try:
                    os.replace(temp, self.dest)
                except BaseException:
                    os.unlink(temp)
                    raise
        else:
            os.replace(self.temp_name, self.dest)
            self.temp_name = None
        os.close(self.fd)
        self.fd = -1
        dir_fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def abort(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if self.temp_name is not None:
            try:
                os.unlink(self.temp_name)
            except FileNotFoundError:
                pass
            self.temp_name = None


_PARTIAL = re.compile(rb"^(\..+\.[0-9a-f]{12}\.part|\.roost-probe\.[0-9a-f]{12})$", re.DOTALL)


def remove_partial_backups(directory) -> list[str]:
    """Delete what backups killed mid-write left in `directory` (the `.<name>.<hex>.part`
    files of the named-temp fallback; O_TMPFILE leaves nothing). Call it only when no backup
    is being written there, e.g. at daemon start. Returns the names removed."""
    removed = []
    try:
        names = os.listdir(os.fsencode(directory))
    except FileNotFoundError:
        return removed
    for name in sorted(names):
        if _PARTIAL.match(name):
            try:
                os.unlink(os.path.join(os.fsencode(directory), name))
            except FileNotFoundError:
                continue
            removed.append(os.fsdecode(name))
    return removed


# ---------------------------------------------------------------------------------------------
# create

@dataclass(slots=True)
class _Entry:
    path: tuple
    kind: str
    mode: int
    uid: int
    gid: int
    size: int
    mtime_ns: int
    linkname: bytes = b""


def _scan(root_fd: int, rules, cancel, exclude: tuple[int, int] | None) -> list[_Entry]:
    """Depth first, names sorted, directory entry before its contents."""
    entries: list[_Entry] = []
    # stack of (directory path, fd, iterator over its sorted children)
    stack: list[tuple[tuple, int, object]] = []

    def children(fd: int) -> list[tuple[bytes, os.stat_result]]:
        out = []
        with os.scandir(fd) as it:
            for entry in it:
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                out.append((os.fsencode(entry.name), st))
        out.sort(key=lambda item: item[0])
        return out

    stack.append(((), root_fd, iter(children(root_fd))))
    try:
        while stack:
            path, fd, it = stack[-1]
            item = next(it, None)
            if item is None:
                stack.pop()
                if path:
                    os.close(fd)
                continue
            _check_cancel(cancel)
            name, st = item
            child = path + (name,)
            rel = b"/".join(child)
            mode = st.st_mode
            if exclude is not None and (st.st_dev, st.st_ino) == exclude:
                continue
            if stat.S_ISDIR(mode):
                if rules and rules.ignored(rel, True):
                    continue
                try:
                    child_fd = os.open(name, _O_DIR, dir_fd=fd)
                except OSError as exc:
                    if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                        continue         # vanished or swapped for something else meanwhile
                    raise
                entries.append(_Entry(child, DIR, stat.S_IMODE(mode), st.st_uid, st.st_gid, 0,
                                      st.st_mtime_ns))
                stack.append((child, child_fd, iter(children(child_fd))))
            elif stat.S_ISREG(mode) or stat.S_ISLNK(mode):
                if rules and rules.ignored(rel, False):
                    continue
                if stat.S_ISREG(mode):
                    entries.append(_Entry(child, REG, stat.S_IMODE(mode), st.st_uid, st.st_gid,
                                          st.st_size, st.st_mtime_ns))
                else:
                    try:
                        target = os.readlink(name, dir_fd=fd)
                    except OSError:
                        continue
                    entries.append(_Entry(child, SYMLINK, stat.S_IMODE(mode), st.st_uid,
                                          st.st_gid, 0, st.st_mtime_ns, target))
            # sockets, FIFOs, devices: not part of a backup
    finally:
        for path, fd, _ in stack:
            if path:
                os.close(fd)
    return entries


class _TarChunker:
    """Builds the tar stream straight into fixed-size chunks handed to the compressor."""

    def __init__(self, submit: Callable, chunk_size: int):
        self.submit = submit
        self.size = chunk_size
        self.buf = bytearray(chunk_size)
        self.view = memoryview(self.buf)
        self.pos = 0

    def flush(self) -> None:
        if self.pos:
            self.submit(self.view[:self.pos])
            self.buf = bytearray(self.size)     # fresh zeroed buffer: padding is free
            self.view = memoryview(self.buf)
            self.pos = 0

    def add(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            take = min(len(view), self.size - self.pos)
            self.buf[self.pos:self.pos + take] = view[:take]
            self.pos += take
            view = view[take:]
            if self.pos == self.size:
                self.flush()

    def skip(self, n: int) -> None:
        """n zero bytes (the buffer is zeroed)."""
        while n:
            take = min(n, self.size - self.pos)
            self.pos += take
            n -= take
            if self.pos == self.size:
                self.flush()

    def add_file(self, fd: int, size: int, on_bytes: Callable[[int], None]) -> None:
        """Exactly `size` bytes from fd (zeros if the file shrank meanwhile) plus padding."""
        remaining = size
        while remaining:
            want = min(remaining, self.size - self.pos)
            got = os.readv(fd, [self.view[self.pos:self.pos + want]]) if want else 0
            if got == 0:                 # shrank while we read: keep the header's size
                got = want
            self.pos += got
            remaining -= got
            on_bytes(got)
            if self.pos == self.size:
                self.flush()
        self.skip(-size % tarfmt.BLOCK)


def create_backup(data_dir, dest_path, *, ignore: str = "", use_pteroignore: bool = True,
                  progress: ByteProgress | None = None, level: int = DEFAULT_LEVEL,
                  workers: int | None = None, cancel: threading.Event | None = None,
                  keep_escaping_symlinks: bool = False, chunk_size: int = DEFAULT_CHUNK,
                  progress_interval: float = PROGRESS_INTERVAL,
                  _use_tmpfile: bool = True) -> BackupResult:
    """Archive `data_dir` to `dest_path` (.tar.gz) atomically; see the module docstring.

    progress(bytes_done, bytes_total): file data read so far, at most every
    `progress_interval` seconds and once at the end (from this thread).
    level: gzip level 0-9 (1, Wings' default, is the fast one; 6 is gzip's default).
    """
    if not 0 <= level <= 9:
        raise ValueError("level must be 0..9")
    dest = os.fsencode(os.path.abspath(os.fsencode(dest_path)))
    root, root_fd = _open_root(data_dir, create=False)
    out = None
    writer = None
    dirs = None
    try:
        rules = load_ignore_rules(ignore, root_fd, use_pteroignore=use_pteroignore)
        out = _AtomicOutput(dest, use_tmpfile=_use_tmpfile)
        entries = _scan(root_fd, rules, cancel, out.identity())
        skipped: list[str] = []
        # what restore_backup would refuse: over-long paths, and (by default) symlinks
        # pointing outside the data directory
        plan = ArchivePlan()
        bad: set[bytes] = set()
        for entry in entries:
            if entry.kind == SYMLINK and keep_escaping_symlinks:
                continue
            try:
                plan.check(entry.kind, b"/".join(entry.path), entry.linkname)
            except UnsafeMember as problem:
                bad.add(problem.name)
        if not keep_escaping_symlinks:
            bad.update(problem.name for problem in plan.escaping_symlinks())
        if bad:
            kept = []
            for entry in entries:
                name = b"/".join(entry.path)
                if name in bad:
                    skipped.append(_display(name))
                else:
                    kept.append(entry)
            entries = kept
        total = sum(e.size for e in entries if e.kind == REG)
        sha = hashlib.sha1()
        written_size = 0

        def sink(parts) -> None:
            nonlocal written_size
            out.write(parts)
            for part in parts:
                sha.update(part)
                written_size += len(part)

        writer = gz.ParallelGzipWriter(sink, level=level, workers=workers)
        chunker = _TarChunker(writer.submit, chunk_size)
        throttle = _Throttle(progress, progress_interval)
        done = 0

        def on_bytes(n: int) -> None:
            nonlocal done
            done += n
            throttle(done, total)
            _check_cancel(cancel)

        dirs = _DirFds(root_fd, limit=64)
        hardlinks: dict[tuple[int, int], bytes] = {}
        counts = {REG: 0, DIR: 0, SYMLINK: 0}
        throttle(0, total, force=True)
        for entry in entries:
            _check_cancel(cancel)
            name = b"/".join(entry.path)
            if entry.kind != REG:
                chunker.add(tarfmt.member_header(
                    entry.kind, name, mode=entry.mode, uid=entry.uid, gid=entry.gid,
                    mtime_ns=entry.mtime_ns, linkname=entry.linkname))
                counts[entry.kind] += 1
                continue
            try:
                parent = dirs.get(entry.path[:-1])
                fd = os.open(entry.path[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
                             | os.O_NONBLOCK, dir_fd=parent)
            except OSError as exc:
                if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.ENXIO):
                    total -= entry.size  # vanished (or swapped for a symlink) meanwhile
                    skipped.append(_display(name))
                    continue
                raise
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):
                    total -= entry.size
                    skipped.append(_display(name))
                    continue
                if st.st_nlink > 1:
                    key = (st.st_dev, st.st_ino)
                    first = hardlinks.get(key)
                    if first is not None:
                        chunker.add(tarfmt.member_header(
                            HARDLINK, name, mode=stat.S_IMODE(st.st_mode), uid=st.st_uid,
                            gid=st.st_gid, mtime_ns=st.st_mtime_ns, linkname=first))
                        total -= entry.size
                        counts[REG] += 1
                        continue
                    hardlinks[key] = name
                total += st.st_size - entry.size
                chunker.add(tarfmt.member_header(
                    REG, name, mode=stat.S_IMODE(st.st_mode), uid=st.st_uid, gid=st.st_gid,
                    size=st.st_size, mtime_ns=st.st_mtime_ns))
                chunker.add_file(fd, st.st_size, on_bytes)
                counts[REG] += 1
            finally:
                os.close(fd)
        chunker.add(tarfmt.END_OF_ARCHIVE)
        chunker.flush()
        writer.finish()
        writer = None
        throttle(done, total, force=True)
        _check_cancel(cancel)
        out.commit()
        return BackupResult(sha1=sha.hexdigest(), size=written_size, files=counts[REG],
                            dirs=counts[DIR], symlinks=counts[SYMLINK], bytes=done,
                            skipped=tuple(skipped))
    finally:
        if writer is not None:
            writer.abort()
        if out is not None:
            out.abort()
        if dirs is not None:
            dirs.close()
        os.close(root_fd)


# ---------------------------------------------------------------------------------------------
# restore

def _umask() -> int:
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


class _Extractor:
    def __init__(self, root_fd: int, chown_to: tuple[int, int] | None, keep_setid: bool):
        self.chown_to = chown_to
        self.keep_setid = keep_setid
        self.umask = _umask()
        self.dirs = _DirFds(root_fd, create=True, on_mkdir=self._new_dir)
        self.dir_attrs: list[tuple[tuple, int, int]] = []

    def _new_dir(self, fd: int) -> None:
        if self.chown_to is not None:
            os.fchown(fd, *self.chown_to)
        os.fchmod(fd, 0o755)

    def _replace(self, parent: int, path: tuple, create: Callable[[], object]):
        try:
            return create()
        except FileExistsError:
            self.dirs.forget(path)
            _remove(parent, path[-1])
            return create()

    def directory(self, path: tuple, member: tarfmt.Member) -> None:
        self.dirs.get(path)
        self.dir_attrs.append((path, member.mode, member.mtime_ns))

    def file(self, path: tuple, member: tarfmt.Member, reader: tarfmt.TarReader) -> None:
        parent = self.dirs.get(path[:-1])
        mode = member.mode if self.keep_setid else member.mode & ~0o6000
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = self._replace(parent, path, lambda: os.open(path[-1], flags, mode, dir_fd=parent))
        try:
            if member.size:
                reader.copy_data(fd)
            if self.chown_to is not None:
                os.fchown(fd, *self.chown_to)
                if mode & 0o6000:
                    os.fchmod(fd, mode)
            if mode & self.umask:
                os.fchmod(fd, mode)
            os.utime(fd, ns=(member.mtime_ns, member.mtime_ns))
        finally:
            os.close(fd)

    def symlink(self, path: tuple, member: tarfmt.Member) -> None:
        parent = self.dirs.get(path[:-1])
        name = path[-1]
        self._replace(parent, path, lambda: os.symlink(member.linkname, name, dir_fd=parent))
        if self.chown_to is not None:
            os.chown(name, *self.chown_to, dir_fd=parent, follow_symlinks=False)
        os.utime(name, ns=(member.mtime_ns, member.mtime_ns), dir_fd=parent,
                 follow_symlinks=False)

    def hardlink(self, path: tuple, target: tuple) -> None:
        src_parent = os.dup(self.dirs.get(target[:-1]))
        try:
            parent = self.dirs.get(path[:-1])
            self._replace(parent, path, lambda: os.link(
                target[-1], path[-1], src_dir_fd=src_parent, dst_dir_fd=parent,
                follow_symlinks=False))
        finally:
            os.close(src_parent)

    def finish(self) -> None:
        # deepest first, so a read-only directory is closed only after its subdirectories
        for path, mode, mtime_ns in sorted(self.dir_attrs, key=lambda d: -len(d[0])):
            fd = self.dirs.get(path)
            if self.chown_to is not None:            # directories that existed already too
                os.fchown(fd, *self.chown_to)
            os.fchmod(fd, mode)
            os.utime(fd, ns=(mtime_ns, mtime_ns))
        self.dirs.close()


def _empty_directory(root_fd: int) -> None:
    with os.scandir(root_fd) as it:
        names = [os.fsencode(entry.name) for entry in it]
    for name in names:
        _remove(root_fd, name)


def restore_backup(archive_path, data_dir, *, expected_sha1: str | None, truncate: bool = False,
                   progress: Callable[[str], None] | None = None,
                   byte_progress: ByteProgress | None = None,
                   chown_to: tuple[int, int] | None = None, keep_setid: bool = False,
                   workers: int | None = None, cancel: threading.Event | None = None,
                   progress_interval: float = PROGRESS_INTERVAL,
                   cache_bytes: int = DEFAULT_RESTORE_CACHE) -> RestoreResult:
    """Restore `archive_path` into `data_dir`; see the module docstring.

    expected_sha1: hex SHA-1 the archive must have (None skips the check, e.g. for an archive
        whose checksum is unknown); checked before anything is written.
    truncate: empty `data_dir` first (only once the archive has been fully validated).
    progress(path): after each member is restored (path relative to the data directory,
        undecodable bytes backslash-escaped).
    byte_progress(done, total): file data written, throttled like create_backup's.
    chown_to: (uid, gid) given to every restored file, directory and symlink.
    keep_setid: keep setuid/setgid bits on regular files (dropped by default).
    cache_bytes: memory for decompressed blocks that the validation pass had to inflate
        anyway (those holding tar headers), so extraction does not inflate them again.
    Raises ChecksumMismatch, InvalidArchive, UnsafeArchive (nothing written in all three),
    BackupCancelled.
    """
    expected = expected_sha1.strip().lower() if expected_sha1 else None
    root = os.fsencode(os.path.abspath(os.fsencode(data_dir)))
    archive = open(archive_path, "rb", buffering=0)
    try:
        cache = gz.MemberCache(cache_bytes)
        plan_members = _validate(archive, root, expected, truncate, workers, cancel, cache)
        cache.freeze()
        _check_cancel(cancel)
        archive.seek(0)
        return _extract(archive, root, plan_members, truncate=truncate, progress=progress,
                        throttle=_Throttle(byte_progress, progress_interval), chown_to=chown_to,
                        keep_setid=keep_setid, workers=workers, cancel=cancel, cache=cache)
    finally:
        archive.close()


def _validate(archive, root: bytes, expected: str | None, truncate: bool,
              workers: int | None, cancel, cache: gz.MemberCache | None = None
              ) -> list[tuple[tuple, tarfmt.Member, tuple | None]]:
    sha = hashlib.sha1()

    def read(n: int) -> bytes:
        data = archive.read(n)
        sha.update(data)
        return data

    plan = ArchivePlan(None if truncate or not os.path.isdir(root) else disk_lookup(root))
    members = []
    failure: Exception | None = None
    # with a checksum to trust, file data need not be inflated here (only tar headers are
    # looked at); without one, every gzip member is inflated and CRC-checked before writing
    hint = gz.SkipHint() if expected is not None else None
    chunks = gz.iter_decompressed(read, workers=workers, skip_hint=hint, cache=cache)
    try:
        reader = tarfmt.TarReader(tarfmt.ByteStream(chunks, hint))
        while (member := reader.next()) is not None:
            _check_cancel(cancel)
            path = plan.check(member.kind, member.name, member.linkname)
            target = split_member_path(member.linkname) if member.kind == HARDLINK else None
            members.append((path, member, target))
        reader.stream.drain()
        plan.finish()
    except tarfmt.UnsupportedMember as exc:       # devices, FIFOs, ...: refused as unsafe
        failure = UnsafeMember(exc.name, exc.reason)
    except (tarfmt.TarFormatError, gz.GzipFormatError, UnsafeMember) as exc:
        failure = exc
    finally:
        chunks.close()
    while data := archive.read(1 << 20):    # hash whatever was not read (on failure)
        sha.update(data)
    actual = sha.hexdigest()
    if expected is not None and actual != expected:
        raise ChecksumMismatch(expected, actual) from failure
    if isinstance(failure, UnsafeMember):
        raise UnsafeArchive(failure) from None
    if failure is not None:
        raise InvalidArchive(f"invalid archive: {failure}") from failure
    return members


def _extract(archive, root: bytes, members, *, truncate: bool, progress, throttle: _Throttle,
             chown_to, keep_setid: bool, workers, cancel,
             cache: gz.MemberCache | None = None) -> RestoreResult:
    total = sum(m.size for _, m, _ in members)
    root, root_fd = _open_root(root, create=True)
    counts = collections.Counter()
    done = 0
    try:
        if truncate:
            _empty_directory(root_fd)
        extractor = _Extractor(root_fd, chown_to, keep_setid)
        chunks = gz.iter_decompressed(archive.read, workers=workers, cache=cache)
        try:
            reader = tarfmt.TarReader(tarfmt.ByteStream(chunks))
            throttle(0, total, force=True)
            for path, planned, target in members:
                _check_cancel(cancel)
                member = reader.next()
                if member != planned:
                    raise InvalidArchive("archive changed while it was being restored")
                if not path:
                    continue                 # the root directory itself ("./"): left as is
                kind = member.kind
                if kind == REG:
                    extractor.file(path, member, reader)
                    done += member.size
                    throttle(done, total)
                elif kind == DIR:
                    extractor.directory(path, member)
                elif kind == SYMLINK:
                    extractor.symlink(path, member)
                else:
                    extractor.hardlink(path, target)
                counts[kind] += 1
                if progress is not None:
                    progress(_display(b"/".join(path)))
            extractor.finish()
        finally:
            chunks.close()
            extractor.dirs.close()
        throttle(done, total, force=True)
    except (tarfmt.TarFormatError, gz.GzipFormatError) as exc:
        raise InvalidArchive(f"invalid archive: {exc}") from exc
    finally:
        os.close(root_fd)
    return RestoreResult(files=counts[REG], dirs=counts[DIR], symlinks=counts[SYMLINK],
                         hardlinks=counts[HARDLINK], bytes=done)


# ---------------------------------------------------------------------------------------------
# asyncio helpers

async def create_backup_async(data_dir, dest_path, *, progress: ByteProgress | None = None,
                              **kwargs) -> BackupResult:
    """`create_backup` in a thread; `progress` is called on the event loop. Cancelling the
    awaiting task sets the cancel event: the worker stops at its next check and cleans up."""
    return await _in_thread(create_backup, data_dir, dest_path, progress=progress, **kwargs)


async def restore_backup_async(archive_path, data_dir, *,
                               progress: Callable[[str], None] | None = None,
                               byte_progress: ByteProgress | None = None,
                               **kwargs) -> RestoreResult:
    """`restore_backup` in a thread; both callbacks are called on the event loop. Cancelling
    the awaiting task stops the worker at its next check: before extraction starts nothing
    has been written; after, the restore is partial."""
    loop = asyncio.get_running_loop()
    if byte_progress is not None:
        kwargs["byte_progress"] = _on_loop(loop, byte_progress)
    return await _in_thread(restore_backup, archive_path, data_dir, progress=progress,
                            **kwargs)


def _on_loop(loop: asyncio.AbstractEventLoop, callback: Callable) -> Callable:
    def call(*args) -> None:
        loop.call_soon_threadsafe(callback, *args)
    return call


async def _in_thread(func, *args, progress, **kwargs):
    if progress is not None:
        kwargs["progress"] = _on_loop(asyncio.get_running_loop(), progress)
    cancel = kwargs["cancel"] = kwargs.get("cancel") or threading.Event()
    try:
        return await asyncio.to_thread(func, *args, **kwargs)
    except asyncio.CancelledError:
        cancel.set()
        raise
