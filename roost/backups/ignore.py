"""Ignore rules for backups: gitignore syntax, matched with `pathspec` (GitIgnoreSpec).

The rules come from the request's `ignore` string (one pattern a line) or, when that is empty,
from `.pteroignore` in the server root (as Wings does). Matching is on paths relative to the
data directory; directories are matched with a trailing slash and an ignored directory is not
descended into, so, as in git, a file below an ignored directory cannot be re-included.
"""
from __future__ import annotations

import os
import stat

import pathspec

PTEROIGNORE = ".pteroignore"
_MAX_IGNORE_FILE = 1 << 20


class IgnoreRules:
    def __init__(self, lines: list[str]):
        self.lines = [line for line in lines if line.strip() and not line.lstrip().startswith("#")]
        self._spec = pathspec.GitIgnoreSpec.from_lines(lines) if self.lines else None

    def __bool__(self) -> bool:
        return self._spec is not None

    def ignored(self, rel: bytes, is_dir: bool) -> bool:
        """`rel` is the raw relative path (components joined with '/')."""
        if self._spec is None:
            return False
        text = os.fsdecode(rel)
        return self._spec.match_file(text + "/" if is_dir else text)


def load_ignore_rules(ignore: str, root_fd: int | None = None, *,
                      use_pteroignore: bool = True) -> IgnoreRules:
    """Rules from `ignore` if it has any, else from `.pteroignore` in the directory `root_fd`
    (read without following a symlink; at most 1 MiB)."""
    if ignore and ignore.strip():
        return IgnoreRules(ignore.splitlines())
    if not use_pteroignore or root_fd is None:
        return IgnoreRules([])
    try:
        fd = os.open(PTEROIGNORE, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK,
                     dir_fd=root_fd)
    except OSError:
        return IgnoreRules([])
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return IgnoreRules([])
        data = os.read(fd, _MAX_IGNORE_FILE)
    finally:
        os.close(fd)
    return IgnoreRules(data.decode("utf-8", "replace").splitlines())
