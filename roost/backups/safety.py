"""Which archive members a restore may write: the escape checks.

A member is written only if its path and, for links, its target stay inside the data
directory:

- paths are relative, made of components other than `..`, without NUL bytes, each component
  at most 255 bytes and the whole path at most 4095 (leading `./`, `.` and empty components
  are dropped: `./a//b/` is `a/b`);
- no member is written through a symlink of the archive (`link/file` after `link` a symlink)
  and no member changes the kind of a path that earlier members gave children;
- a symlink's target is relative and, resolved like the kernel would (following the archive's
  own symlinks and, when restoring over existing files, the symlinks already on disk), never
  leaves the data directory; loops are refused;
- a hard link names an earlier regular-file member of the same archive;
- devices, FIFOs and every other member type are refused by the tar reader.

`ArchivePlan.check` applies the path, kind and hard-link rules member by member and
`ArchivePlan.finish` the symlink rule once the whole namespace is known (a later member may
replace an earlier one); both raise `UnsafeMember`. `create_backup` uses the same plan to leave
out what a restore would refuse (symlinks pointing outside, over-long paths).
"""
from __future__ import annotations

import os
import stat
from typing import Callable

from .tarfmt import DIR, HARDLINK, REG, SYMLINK

NAME_MAX = 255
PATH_MAX = 4095
MAX_SYMLINK_FOLLOWS = 40

Path = tuple[bytes, ...]


class UnsafeMember(ValueError):
    """A member that would write or point outside the data directory."""

    def __init__(self, name: bytes, reason: str):
        super().__init__(f"{name.decode('utf-8', 'backslashreplace')!r}: {reason}")
        self.name = name
        self.reason = reason


def split_member_path(name: bytes) -> Path:
    """Normalised components of an archive member path; raise UnsafeMember if it escapes."""
    if b"\0" in name:
        raise UnsafeMember(name, "NUL byte in path")
    if name.startswith(b"/"):
        raise UnsafeMember(name, "absolute path")
    if len(name) > PATH_MAX:
        raise UnsafeMember(name, "path too long")
    parts = []
    for part in name.split(b"/"):
        if part in (b"", b"."):
            continue
        if part == b"..":
            raise UnsafeMember(name, "'..' in path")
        if len(part) > NAME_MAX:
            raise UnsafeMember(name, "path component too long")
        parts.append(part)
    return tuple(parts)


def split_link_target(target: bytes) -> list[bytes]:
    return [p for p in target.split(b"/") if p not in (b"", b".")]


# What a lookup says a path is: DIR, REG, ("symlink", target) or None when nothing is there.
Lookup = Callable[[Path], "str | tuple[str, bytes] | None"]


def resolve(start: Path, target: bytes, lookup: Lookup) -> Path:
    """Resolve symlink `target` found in directory `start`, following symlinks via `lookup`.

    Returns the resolved path (components below the root); raises ValueError if resolution
    leaves the root, meets an absolute target, or follows more than 40 links.
    """
    if target.startswith(b"/"):
        raise ValueError("absolute symlink target")
    if b"\0" in target or not target:
        raise ValueError("bad symlink target")
    resolved = list(start)
    todo = split_link_target(target)
    todo.reverse()                       # a stack: next component last
    follows = 0
    while todo:
        part = todo.pop()
        if part == b"..":
            if not resolved:
                raise ValueError("symlink target leaves the data directory")
            resolved.pop()
            continue
        resolved.append(part)
        kind = lookup(tuple(resolved))
        if isinstance(kind, tuple):      # a symlink: splice its target in
            follows += 1
            if follows > MAX_SYMLINK_FOLLOWS:
                raise ValueError("too many levels of symbolic links")
            link_target = kind[1]
            if link_target.startswith(b"/"):
                raise ValueError("symlink chain through an absolute symlink")
            resolved.pop()
            parts = split_link_target(link_target)
            parts.reverse()
            todo.extend(parts)
    return tuple(resolved)


class ArchivePlan:
    """The namespace an archive builds, checked member by member (archive order).

    `check()` refuses bad paths, hard links and kind conflicts at once; symlink targets are
    checked by `finish()` against the final namespace (what is on disk once every member is
    written, as later members may replace earlier ones and nothing is ever written through a
    symlink while restoring).
    """

    def __init__(self, disk_lookup: Lookup | None = None):
        # path -> DIR, REG, HARDLINK or (SYMLINK, target); implicit parents are DIR
        self.kinds: dict[Path, str | tuple[str, bytes]] = {}
        self._symlinks: dict[Path, bytes] = {}          # path -> member name (for messages)
        self._disk_lookup = disk_lookup

    def lookup(self, path: Path):
        kinds = self.kinds
        kind = kinds.get(path)
        if kind is not None:
            return REG if kind == HARDLINK else kind
        for i in range(len(path) - 1, 0, -1):
            parent = kinds.get(path[:i])
            if parent is not None:
                if parent != DIR:
                    return None          # below a file of the archive: nothing will be there
                break
        if self._disk_lookup is not None:
            return self._disk_lookup(path)
        return None

    def check(self, kind: str, name: bytes, linkname: bytes = b"") -> Path:
        """Check one member and record it; return its normalised path (() is the root)."""
        path = split_member_path(name)
        kinds = self.kinds
        for i in range(len(path) - 1, 0, -1):
            existing = kinds.get(path[:i])
            if existing is None:
                continue
            if existing != DIR:
                raise UnsafeMember(name, "path goes through a member that is not a directory")
            break                        # parents of a recorded dir are recorded dirs
        if not path:
            if kind != DIR:
                raise UnsafeMember(name, "member replaces the data directory itself")
            return path
        existing = kinds.get(path)
        if existing == DIR and kind != DIR:
            raise UnsafeMember(name, "member replaces a directory of the archive")
        if existing is not None and existing != DIR and kind == DIR:
            raise UnsafeMember(name, "directory replaces another member of the archive")
        if kind == SYMLINK:
            if not linkname or b"\0" in linkname:
                raise UnsafeMember(name, "bad symlink target")
            if linkname.startswith(b"/"):
                raise UnsafeMember(name, f"symlink to absolute path {linkname!r}")
            if len(linkname) > PATH_MAX:
                raise UnsafeMember(name, "symlink target too long")
        elif kind == HARDLINK:
            target = None if linkname.startswith(b"/") else split_member_path(linkname)
            if target is None or kinds.get(target) not in (REG, HARDLINK) or target == path:
                raise UnsafeMember(name, f"hard link to {linkname!r} which is not a file of"
                                         " this archive")
        elif kind not in (REG, DIR):
            raise UnsafeMember(name, f"unsupported member type {kind}")
        for i in range(1, len(path)):
            kinds.setdefault(path[:i], DIR)
        if kind == SYMLINK:
            kinds[path] = (SYMLINK, linkname)
            self._symlinks[path] = name
        else:
            kinds[path] = kind
            self._symlinks.pop(path, None)
        return path

    def escaping_symlinks(self) -> list[UnsafeMember]:
        """Every symlink of the final namespace whose target leaves the data directory."""
        problems = []
        for path, name in self._symlinks.items():
            target = self.kinds[path][1]
            try:
                resolve(path[:-1], target, self.lookup)
            except ValueError as exc:
                problems.append(UnsafeMember(name, f"symlink to {target!r}: {exc}"))
        return problems

    def finish(self) -> None:
        problems = self.escaping_symlinks()
        if problems:
            raise problems[0]


def disk_lookup(root: bytes) -> Lookup:
    """A lookup over what is on disk under `root`, never following a symlink: a path below
    anything but a real directory is nothing (a restore replaces such a parent with a
    directory before writing below it)."""
    def kind_of(full: bytes):
        try:
            st = os.lstat(full)
        except OSError:
            return None
        if stat.S_ISLNK(st.st_mode):
            try:
                return (SYMLINK, os.readlink(full))
            except OSError:
                return None
        return DIR if stat.S_ISDIR(st.st_mode) else REG

    def lookup(path: Path):
        full = root
        for part in path[:-1]:
            full = os.path.join(full, part)
            if kind_of(full) != DIR:
                return None
        return kind_of(os.path.join(full, path[-1]))
    return lookup
