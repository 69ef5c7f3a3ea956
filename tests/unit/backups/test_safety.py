"""The escape checks: unit cases, and hypothesis fuzzing against the kernel's own resolution."""
import os
import posixpath
import shutil
import tempfile

import pytest
from hypothesis import HealthCheck, event, given, settings, strategies as st

from roost.backups import BackupError, UnsafeArchive, restore_backup
from roost.backups.safety import ArchivePlan, UnsafeMember, resolve, split_member_path
from roost.backups.tarfmt import DIR, HARDLINK, REG, SYMLINK

from .helpers import snapshot, tar_gz, write_archive


# --------------------------------------------------------------------------- unit cases

@pytest.mark.parametrize("name, parts", [
    (b"a", (b"a",)),
    (b"./a//b/", (b"a", b"b")),
    (b"a/./b", (b"a", b"b")),
    (b".", ()),
    (b"./", ()),
    (b"\xff/x", (b"\xff", b"x")),
])
def test_accepted_paths(name, parts):
    assert split_member_path(name) == parts


@pytest.mark.parametrize("name", [
    b"/etc/passwd", b"../x", b"a/../../x", b"a/..", b"..", b"a/../b", b"//x", b"a\0b",
    b"a/" + b"n" * 256, b"a/" * 2100,
])
def test_refused_paths(name):
    with pytest.raises(UnsafeMember):
        split_member_path(name)


def _plan(*members, disk=None):
    plan = ArchivePlan(disk)
    for kind, name, *link in members:
        plan.check(kind, name, link[0] if link else b"")
    plan.finish()
    return plan


@pytest.mark.parametrize("members", [
    [(SYMLINK, b"l", b"/etc")],
    [(SYMLINK, b"l", b"..")],
    [(SYMLINK, b"a/l", b"../../x")],
    [(SYMLINK, b"s", b"."), (SYMLINK, b"l", b"s/..")],          # lexically inside, not really
    [(SYMLINK, b"s", b"a/b/c"), (SYMLINK, b"l", b"s/../../../..")],
    [(SYMLINK, b"l", b"l")],                                     # loop
    [(SYMLINK, b"a", b"b"), (SYMLINK, b"b", b"a")],              # loop
    [(SYMLINK, b"l", b"t"), (SYMLINK, b"t", b"/")],              # chain to absolute
    [(SYMLINK, b"l", b"x"), (REG, b"l/f")],                      # writes through a symlink
    [(REG, b"f"), (REG, b"f/g")],
    [(DIR, b"d"), (REG, b"d")],                                  # replaces a directory
    [(REG, b"d/f"), (SYMLINK, b"d", b".")],
    [(HARDLINK, b"h", b"/etc/passwd")],
    [(HARDLINK, b"h", b"../x")],
    [(HARDLINK, b"h", b"missing")],
    [(SYMLINK, b"s", b"f"), (HARDLINK, b"h", b"s")],             # hard link to a symlink
    [(DIR, b"d"), (HARDLINK, b"h", b"d")],
    [(REG, b"f"), (HARDLINK, b"f", b"f")],
    [(REG, b"."),],
])
def test_refused_namespaces(members):
    with pytest.raises(UnsafeMember):
        _plan(*members)


@pytest.mark.parametrize("members", [
    [(SYMLINK, b"l", b"a/b/../c")],
    [(SYMLINK, b"a/b/l", b"../../x")],
    [(SYMLINK, b"s", b"a/b"), (SYMLINK, b"l", b"s/..")],        # = a
    [(SYMLINK, b"l", b"missing/../x")],
    [(REG, b"f"), (HARDLINK, b"h", b"./f")],
    [(DIR, b"."), (DIR, b"d"), (DIR, b"d")],
    [(REG, b"f"), (SYMLINK, b"f", b"g")],                        # later member wins
])
def test_accepted_namespaces(members):
    _plan(*members)


def test_on_disk_symlinks_are_followed_when_not_truncating(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    os.symlink(".", root / "dot")
    from roost.backups.safety import disk_lookup
    lookup = disk_lookup(os.fsencode(root))
    with pytest.raises(UnsafeMember):
        _plan((SYMLINK, b"l", b"dot/.."), disk=lookup)
    _plan((SYMLINK, b"l", b"dot/x"), disk=lookup)
    # the archive replacing the on-disk symlink with a directory makes it lexical again
    _plan((DIR, b"dot"), (SYMLINK, b"l", b"dot/.."), disk=lookup)


def test_resolve_counts_links():
    chain = {(b"l%d" % i,): (SYMLINK, b"l%d" % (i + 1)) for i in range(50)}
    with pytest.raises(ValueError):
        resolve((), b"l0", chain.get)
    assert resolve((), b"l0", {k: v for k, v in list(chain.items())[:30]}.get) == (b"l30",)


# --------------------------------------------------------------------------- fuzzing

COMPONENTS = [b"a", b"b", b"..", b".", b"", b"\xff", b"c d"]


@given(st.lists(st.sampled_from(COMPONENTS), min_size=1, max_size=6), st.booleans())
@settings(max_examples=500)
def test_member_paths_fuzz(parts, absolute):
    name = (b"/" if absolute else b"") + b"/".join(parts)
    root = b"/srv/data"
    try:
        got = split_member_path(name)
    except UnsafeMember:
        assert name.startswith(b"/") or b".." in parts
        return
    assert not name.startswith(b"/") and b".." not in parts
    joined = posixpath.normpath(posixpath.join(root, name))
    assert joined == root or joined.startswith(root + b"/")
    assert posixpath.join(root, *got) == joined if got else joined == root


_names = st.lists(st.sampled_from([b"a", b"b", b"c"]), min_size=1, max_size=3)
_targets = st.tuples(st.booleans(), st.lists(st.sampled_from([b"a", b"b", b"c", b"..", b"."]),
                                             min_size=1, max_size=5))
_member = st.one_of(
    st.tuples(st.just(DIR), _names, st.none()),
    st.tuples(st.just(REG), _names, st.none()),
    st.tuples(st.just(SYMLINK), _names, _targets),
)


@given(st.lists(_member, min_size=1, max_size=8))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_symlink_checks_agree_with_the_kernel(members):
    """Build what the plan accepts on a real filesystem; every symlink it does not flag must
    resolve (os.path.realpath, i.e. the kernel's rules) inside the data directory, and every
    symlink it flags as leaving must resolve outside."""
    base = tempfile.mkdtemp(prefix="roost-fuzz-")
    try:
        root = os.path.join(base, "x", "y", "data").encode()
        os.makedirs(root)
        plan = ArchivePlan()
        seen = set()
        for kind, parts, target in members:
            path = b"/".join(parts)
            if path in seen:
                continue
            linkname = b""
            if kind == SYMLINK:
                absolute, tparts = target
                linkname = (b"/" if absolute else b"") + b"/".join(tparts)
            try:
                plan.check(kind, path, linkname)
            except UnsafeMember:
                continue
            seen.add(path)
            full = os.path.join(root, path)
            os.makedirs(os.path.dirname(full), exist_ok=True)
            if kind == DIR:
                os.makedirs(full, exist_ok=True)
            elif kind == REG:
                open(full, "wb").close()
            else:
                os.symlink(linkname, full)
        flagged = {p.name: p.reason for p in plan.escaping_symlinks()}
        for path, kind in plan.kinds.items():
            if not isinstance(kind, tuple):
                continue
            name = b"/".join(path)
            real = os.path.realpath(os.path.join(root, name))
            inside = real == root or real.startswith(root + b"/")
            event("symlink flagged" if name in flagged else "symlink accepted")
            if name not in flagged:
                assert inside, (name, kind, real)
            elif "leaves the data directory" in flagged[name]:
                assert not inside, (name, kind, real)
    finally:
        shutil.rmtree(base)


_plain_name = st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=3).map("/".join)
_odd_name = st.lists(st.sampled_from(["a", "b", "..", ".", "", "/"]), min_size=1,
                     max_size=4).map("/".join)
_link_target = st.lists(st.sampled_from(["a", "b", "c", "..", "..", ".", "/", "outside",
                                         "sentinel"]), min_size=1, max_size=5).map("/".join)
_archive_member = st.one_of(
    st.tuples(st.sampled_from(["file", "dir"]), _plain_name, st.none()),
    st.tuples(st.sampled_from(["file", "dir"]), _plain_name, st.none()),
    st.tuples(st.sampled_from(["file", "dir"]), _odd_name, st.none()),
    st.tuples(st.sampled_from(["symlink", "hardlink"]), _plain_name, _link_target),
    st.tuples(st.sampled_from(["symlink", "hardlink"]), _plain_name, _plain_name),
    st.tuples(st.sampled_from(["fifo", "chr"]), st.sampled_from(["a", "b/c"]), st.none()),
)


@given(st.lists(_archive_member, min_size=1, max_size=7), st.booleans())
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_restore_fuzz_never_escapes(members, truncate):
    """End to end: arbitrary archives are either refused with nothing written, or restored
    with every path and every symlink inside the data directory."""
    base = tempfile.mkdtemp(prefix="roost-fuzz-")
    try:
        data = os.path.join(base, "data")
        os.makedirs(os.path.join(base, "outside"))
        os.makedirs(data)
        with open(os.path.join(base, "outside", "sentinel"), "w") as f:
            f.write("keep")
        with open(os.path.join(data, "existing"), "w") as f:
            f.write("old")
        archive = os.path.join(base, "a.tar.gz")
        sha = write_archive(archive, tar_gz(members))
        before = snapshot(base)
        try:
            restore_backup(archive, data, expected_sha1=sha, truncate=truncate)
        except BackupError as exc:
            event(f"refused: {type(exc).__name__}")
            assert snapshot(base) == before
            return
        event("restored")
        after = snapshot(base)
        for rel, entry in after.items():
            if not rel.startswith(b"data/"):
                assert before.get(rel) == entry or rel == b"data", rel
        for dirpath, dirnames, filenames in os.walk(data):
            for name in dirnames + filenames:
                full = os.path.join(dirpath, name)
                real = os.path.realpath(full)
                assert real == data or real.startswith(data + "/"), (full, real)
    finally:
        shutil.rmtree(base)


def test_restore_fuzz_examples_include_refusals(tmp_path):
    """Sanity check of the fuzz set-up itself: a known escape is refused."""
    data = tmp_path / "data"
    data.mkdir()
    archive = tmp_path / "a.tar.gz"
    sha = write_archive(archive, tar_gz([("symlink", "a", "../outside")]))
    with pytest.raises(UnsafeArchive):
        restore_backup(archive, data, expected_sha1=sha, truncate=True)
    assert list(data.iterdir()) == []


def _sample_archive() -> bytes:
    return tar_gz([("dir", "d", None), ("file", "d/f", b"x" * 3000), ("symlink", "d/l", "f"),
                   ("hardlink", "d/h", "d/f"), ("file", "g" * 150, b"y" * 700)])


@given(st.lists(st.tuples(st.integers(min_value=0), st.integers(min_value=0, max_value=255)),
                min_size=1, max_size=4), st.booleans())
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_corrupted_archives_fail_cleanly(flips, decompressed):
    """Byte flips (in the gzip stream, or in the tar stream then recompressed, so they reach
    the tar parser) with no checksum to catch them: a BackupError or a restore that stays
    inside, never another exception."""
    import gzip
    raw = bytearray(gzip.decompress(_sample_archive()) if decompressed else _sample_archive())
    for pos, value in flips:
        raw[pos % len(raw)] = value
    raw = gzip.compress(bytes(raw)) if decompressed else bytes(raw)
    base = tempfile.mkdtemp(prefix="roost-fuzz-")
    try:
        data = os.path.join(base, "data")
        os.makedirs(data)
        archive = os.path.join(base, "a.tar.gz")
        write_archive(archive, raw)
        try:
            restore_backup(archive, data, expected_sha1=None, truncate=True)
            event("restored")
        except BackupError as exc:
            event(f"refused: {type(exc).__name__}")
        for dirpath, dirnames, filenames in os.walk(data):
            for name in dirnames + filenames:
                real = os.path.realpath(os.path.join(dirpath, name))
                assert real.startswith(data + "/")
        assert sorted(os.listdir(base)) == ["a.tar.gz", "data"]
    finally:
        shutil.rmtree(base)


def test_disk_lookup_never_follows_on_disk_links(tmp_path):
    from roost.backups.safety import disk_lookup
    root = tmp_path / "data"
    root.mkdir()
    outside = tmp_path / "outside"
    (outside / "d").mkdir(parents=True)
    os.symlink("/", outside / "d" / "up")
    os.symlink(outside, root / "a")                 # a -> outside (a restore replaces it)
    lookup = disk_lookup(os.fsencode(root))
    assert lookup((b"a",)) == (SYMLINK, os.fsencode(outside))
    assert lookup((b"a", b"d")) is None             # not looked up through the link
    assert lookup((b"a", b"d", b"up")) is None
    # the archive makes "a" a directory: a symlink to a/d/up/.. is judged on what will be
    _plan((DIR, b"a"), (SYMLINK, b"l", b"a/d/up/../x"), disk=lookup)
