"""Ignore rules: gitignore syntax from the request or .pteroignore, applied by create_backup."""
import os
import tarfile

import pytest

from roost.backups import create_backup
from roost.backups.ignore import IgnoreRules, load_ignore_rules


def _names(archive) -> set[str]:
    with tarfile.open(archive, encoding="utf-8", errors="surrogateescape") as t:
        return {m.name for m in t.getmembers()}


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "data"
    for rel in ["server.jar", "logs/latest.log", "logs/keep.log", "world/level.dat",
                "world/region/r.0.0.mca", "world/session.lock", "cache/a/b.bin",
                "plugins/x/cache/c.tmp", "plugins/x/config.yml", "a b.txt", "debug.log",
                "nested/logs/n.log"]:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(rel)
    return root


def test_rules_match_like_gitignore():
    rules = IgnoreRules(["# comment", "", "*.log", "!keep.log", "/world/*", "!/world/level.dat",
                         "cache/", "a\\ b.txt"])
    assert rules.ignored(b"debug.log", False)
    assert rules.ignored(b"nested/logs/n.log", False)
    assert not rules.ignored(b"logs/keep.log", False)
    assert rules.ignored(b"world/region", True)
    assert not rules.ignored(b"world/level.dat", False)
    assert not rules.ignored(b"world", True)
    assert rules.ignored(b"plugins/x/cache", True)
    assert not rules.ignored(b"cache", False)               # dir-only pattern, a file
    assert rules.ignored(b"a b.txt", False)
    assert rules.ignored(os.fsencode("caf\udce9.log"), False)   # undecodable names work
    assert not IgnoreRules(["# only comments", "   "])


def test_request_ignore_lines(tree, tmp_path):
    out = tmp_path / "b.tar.gz"
    create_backup(tree, out, ignore="*.log\n!keep.log\ncache/\n/world/*\n!/world/level.dat\n")
    assert _names(out) == {
        "server.jar", "logs", "logs/keep.log", "world", "world/level.dat", "plugins",
        "plugins/x", "plugins/x/config.yml", "a b.txt", "nested", "nested/logs"}


def test_pteroignore_used_when_request_is_empty(tree, tmp_path):
    (tree / ".pteroignore").write_text("world/\n*.jar\r\n")
    out = tmp_path / "b.tar.gz"
    create_backup(tree, out, ignore="  \n")
    names = _names(out)
    assert ".pteroignore" in names
    assert not any(n.startswith("world") for n in names)
    assert "server.jar" not in names and "debug.log" in names


def test_request_ignore_overrides_pteroignore(tree, tmp_path):
    (tree / ".pteroignore").write_text("world/\n")
    out = tmp_path / "b.tar.gz"
    create_backup(tree, out, ignore="*.jar")
    names = _names(out)
    assert "world/level.dat" in names and "server.jar" not in names


def test_pteroignore_can_be_disabled_and_is_not_followed(tree, tmp_path):
    (tree / ".pteroignore").write_text("world/\n")
    out = tmp_path / "b.tar.gz"
    create_backup(tree, out, use_pteroignore=False)
    assert "world/level.dat" in _names(out)
    outside = tmp_path / "rules"
    outside.write_text("*\n")
    (tree / ".pteroignore").unlink()
    os.symlink(outside, tree / ".pteroignore")
    root_fd = os.open(tree, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert not load_ignore_rules("", root_fd)
    finally:
        os.close(root_fd)


def test_ignored_directory_cannot_be_reincluded(tree, tmp_path):
    out = tmp_path / "b.tar.gz"
    create_backup(tree, out, ignore="logs/\n!logs/keep.log\n")
    assert not any(n.startswith("logs") for n in _names(out))
