"""Shared helpers for the backup tests: tree snapshots and hand-made tar archives."""
from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile


def snapshot(root, *, symlink_mtimes: bool = True, root_attrs: bool = False) -> dict:
    """Everything a restore must reproduce, per raw relative path: kind, mode, mtime (ns),
    content hash, symlink target; directory mtimes included. Never follows symlinks."""
    root = os.fsencode(root)
    out = {}
    if root_attrs:
        st = os.lstat(root)
        out[b"."] = ("d", stat.S_IMODE(st.st_mode), st.st_mtime_ns)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root)
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("l", os.readlink(full), st.st_mtime_ns if symlink_mtimes else None)
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("d", stat.S_IMODE(st.st_mode), st.st_mtime_ns)
            elif stat.S_ISREG(st.st_mode):
                h = hashlib.sha1()
                with open(full, "rb") as f:
                    while block := f.read(1 << 20):
                        h.update(block)
                out[rel] = ("f", stat.S_IMODE(st.st_mode), st.st_mtime_ns, st.st_size,
                            h.hexdigest())
            else:
                out[rel] = ("?", st.st_mode)
    return out


def sha1_file(path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def tar_gz(members, *, fmt=tarfile.PAX_FORMAT) -> bytes:
    """A .tar.gz built with the tarfile module from (kind, name, extra) tuples:
    ("file", name, data), ("dir", name, None), ("symlink", name, target),
    ("hardlink", name, target), ("chr"/"blk"/"fifo", name, None)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=fmt, encoding="utf-8",
                      errors="surrogateescape") as tar:
        for kind, name, extra in members:
            if isinstance(name, bytes):
                name = os.fsdecode(name)
            info = tarfile.TarInfo(name)
            info.mtime = 1_700_000_000
            data = None
            if kind == "file":
                data = extra if isinstance(extra, bytes) else (extra or "x").encode()
                info.size = len(data)
                info.mode = 0o644
            elif kind == "dir":
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
            elif kind == "symlink":
                info.type = tarfile.SYMTYPE
                info.linkname = os.fsdecode(extra)
            elif kind == "hardlink":
                info.type = tarfile.LNKTYPE
                info.linkname = os.fsdecode(extra)
            elif kind == "chr":
                info.type = tarfile.CHRTYPE
                info.devmajor, info.devminor = 1, 3
            elif kind == "blk":
                info.type = tarfile.BLKTYPE
                info.devmajor, info.devminor = 8, 0
            elif kind == "fifo":
                info.type = tarfile.FIFOTYPE
            else:
                raise ValueError(kind)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def write_archive(path, data: bytes) -> str:
    with open(path, "wb") as f:
        f.write(data)
    return hashlib.sha1(data).hexdigest()
