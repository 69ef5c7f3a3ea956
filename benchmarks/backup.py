"""Backup/restore benchmark: roost's archive engine against `tar czf` / `tar xzf`, same run.

    .venv/bin/python benchmarks/backup.py [--quick] [--size-mb N] [--runs N] [--dir DIR] [--keep]

Builds one mixed tree (~1 GB; `--quick`: ~100 MB) like a game server's: many small files
(configs, logs, player data: mostly compressible text, some binary) in nested directories, a
few large compressible files (logs, JSON) and large incompressible ones (region files, jars),
plus one large half-and-half file, a few symlinks and empty directories. Then, with the tree
and the archives in the page cache and `sync` before every timed step:

- backup: `tar czf` (GNU tar piping into gzip -6) vs roost `create_backup` at its default
  level 1 (Wings' "best_speed") and at level 6 (tar's level, for a like-for-like row);
- restore: `tar xzf` of tar's archive vs roost `restore_backup` of roost's archive (SHA-1
  verification and the full safety pass included), into an empty directory; plus `tar xzf`
  of roost's archive, to show it is a plain .tar.gz.

Everything happens under --dir (default: /dev/shm when it has room, so the disk's own
behaviour stays out of the comparison; `--dir /tmp` measures on disk, where on this project's
VMs ext4 slows down inode allocation for minutes after any bulk delete, its own or another
process's, so run it on a quiet machine and look at every run, not just the table).

The roost-restored tree is compared with the source (contents, modes, mtimes, symlinks).
Each step runs `--runs` times (default 2), interleaved with the others in alternating order,
and its best wall time is kept: the machine may be shared, so compare ratios, not absolutes
(the load average is printed). Throughput is tree bytes / wall time; the ratio is tar's time
/ roost's time (goal >= 1.0). CPU is user+system seconds of all threads and children.
The temporary directory is removed at the end unless --keep.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import random
import resource
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from roost.backups import create_backup, restore_backup  # noqa: E402

MB = 1_000_000
_WORDS = ("the a player joined left server world chunk saved entity block tick INFO WARN "
          "DEBUG [main] [Server thread] minecraft:stone minecraft:dirt x= y= z= true false null "
          "uuid name level spawn inventory health food experience dimension overworld nether "
          "end config plugin enabled version 1.20.4 loaded in ms Done! For help, type").split()


def _text_corpus(rng: random.Random, size: int) -> bytes:
    """Log/JSON-like text: compresses to about a third with gzip."""
    out = []
    n = 0
    while n < size:
        line = (f"[{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}] "
                + " ".join(rng.choice(_WORDS) for _ in range(rng.randint(4, 14)))
                + f" {rng.random():.6f} {rng.getrandbits(32):08x}\n")
        out.append(line)
        n += len(line)
    return "".join(out).encode()[:size]


def _write_repeating(path: Path, corpus: bytes, size: int, rng: random.Random) -> None:
    with open(path, "wb") as f:
        left = size
        while left:
            start = rng.randrange(len(corpus) // 2)
            piece = corpus[start:start + min(left, len(corpus) // 2)]
            f.write(piece)
            left -= len(piece)


def _write_random(path: Path, size: int, rng: random.Random) -> None:
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 8 << 20)
            f.write(rng.randbytes(n))
            left -= n


def make_tree(root: Path, size_bytes: int, seed: int = 1) -> tuple[int, int]:
    """Returns (files, bytes). ~18% small files, ~35% large text, ~35% large random,
    ~12% one mixed file."""
    rng = random.Random(seed)
    corpus = _text_corpus(rng, 4 << 20)
    small_budget = int(size_bytes * 0.18)
    files = 0
    total = 0
    # small files: average ~8 KiB, in world/region-like and plugin-like directories
    dirs = [root / "world" / f"region{i:02d}" for i in range(40)]
    dirs += [root / "plugins" / f"plugin{i:02d}" / "data" for i in range(30)]
    dirs += [root / "world" / "playerdata", root / "logs" / "old", root / "config"]
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
    used = 0
    while used < small_budget:
        d = rng.choice(dirs)
        size = min(int(rng.expovariate(1 / 8192)) + 16, 96 * 1024)
        path = d / f"f{files:06d}{rng.choice(['.json', '.yml', '.log', '.dat', '.txt'])}"
        if rng.random() < 0.3:
            data = rng.randbytes(size)
        else:
            start = rng.randrange(len(corpus) - size)
            data = corpus[start:start + size]
        path.write_bytes(data)
        used += size
        files += 1
    total += used
    large = size_bytes - used
    big = root / "world" / "big"
    big.mkdir(parents=True, exist_ok=True)
    n_text = 3
    each = int(large * 0.35 / n_text)
    for i in range(n_text):
        _write_repeating(big / f"latest{i}.log", corpus, each, rng)
        total += each
        files += 1
    for i in range(n_text):
        _write_random(big / f"r.{i}.0.mca", each, rng)
        total += each
        files += 1
    mixed = size_bytes - total
    with open(big / "mixed.db", "wb") as f:
        left = mixed
        while left:
            n = min(left, 1 << 20)
            f.write(rng.randbytes(n) if rng.random() < 0.5 else
                    corpus[(s := rng.randrange(len(corpus) - n)):s + n])
            left -= n
    total += mixed
    files += 1
    # a few symlinks, empty directories, odd modes
    (root / "empty" / "nested").mkdir(parents=True)
    (root / "cache").mkdir()
    os.symlink("world/big/latest0.log", root / "latest.log")
    os.symlink("../region00", root / "world" / "region01" / "up")
    os.chmod(root / "config", 0o750)
    return files, total


def tree_digest(root: Path) -> dict[bytes, tuple]:
    """Everything a round trip must keep, per relative path (directory mtimes included)."""
    out = {}
    root_b = os.fsencode(root)
    for dirpath, dirnames, filenames in os.walk(root_b):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root_b)
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("l", os.readlink(full), st.st_mtime_ns)
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("d", stat.S_IMODE(st.st_mode), st.st_mtime_ns)
            else:
                h = hashlib.sha1()
                with open(full, "rb") as f:
                    while block := f.read(1 << 20):
                        h.update(block)
                out[rel] = ("f", stat.S_IMODE(st.st_mode), st.st_mtime_ns, h.hexdigest())
    return out


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


class Step:
    """One timed thing; keeps its best (lowest wall time) run."""

    def __init__(self, name: str, func, before=None):
        self.name = name
        self.func = func
        self.before = before
        self.best: tuple[float, float] | None = None
        self.result = None

    def run(self) -> None:
        if self.before:
            self.before()
        os.sync()
        cpu0 = _cpu()
        t0 = time.perf_counter()
        result = self.func()
        wall = time.perf_counter() - t0
        cpu = _cpu() - cpu0
        print(f"  {self.name:32} {wall:6.2f} s  (CPU {cpu:5.1f} s)", flush=True)
        if self.best is None or wall < self.best[0]:
            self.best = (wall, cpu)
            self.result = result


def _default_dir(size: int) -> str | None:
    """tmpfs when it has room (the tree, three archives and every restore stay until the end):
    both tools then write to the same place at memory speed, and the comparison is about the
    tools, not about the disk (on this project's VMs, ext4 allocates inodes slowly for minutes
    after a bulk delete, whoever did it). `--dir /tmp` measures on disk."""
    shm = "/dev/shm"
    try:
        st = os.statvfs(shm)
    except OSError:
        return None
    return shm if st.f_bavail * st.f_frsize > 8 * size else None


def _is_tmpfs(path: Path) -> bool:
    best, fstype = "", ""
    with open("/proc/mounts") as f:
        for line in f:
            parts = line.split()
            if len(parts) > 2 and str(path).startswith(parts[1]) and len(parts[1]) > len(best):
                best, fstype = parts[1], parts[2]
    return fstype == "tmpfs"


def run_rounds(steps: list[Step], runs: int) -> None:
    """Interleaved, alternating order: the machine's load drifts, every step sees it alike."""
    for r in range(runs):
        for step in (steps if r % 2 == 0 else steps[::-1]):
            step.run()


def run(args) -> int:
    size = (args.size_mb or (100 if args.quick else 1000)) * MB
    base = Path(tempfile.mkdtemp(prefix="roost-bench-backup-", dir=args.dir or _default_dir(size)))
    try:
        src = base / "src"
        src.mkdir()
        t0 = time.perf_counter()
        files, total = make_tree(src, size)
        tar_version = subprocess.run(["tar", "--version"], capture_output=True,
                                     text=True).stdout.splitlines()[0]
        print(f"tree: {files} files, {total / MB:.0f} MB in {base} "
              f"({'tmpfs' if _is_tmpfs(base) else 'not tmpfs'}; generated in "
              f"{time.perf_counter() - t0:.1f} s); {os.cpu_count()} CPUs; {tar_version}; "
              f"load average {os.getloadavg()[0]:.2f}", flush=True)
        tar_out = base / "tar.tar.gz"
        roost_out = base / "roost.tar.gz"
        roost6_out = base / "roost6.tar.gz"

        def tar_create():
            subprocess.run(["tar", "czf", str(tar_out), "-C", str(src), "."], check=True)

        backup = [
            Step("backup: tar czf", tar_create),
            Step("backup: roost level 1 (default)", lambda: create_backup(src, roost_out)),
            Step("backup: roost level 6 (= tar's)",
                 lambda: create_backup(src, roost6_out, level=6)),
        ]
        run_rounds(backup, args.runs)
        roost_sha = backup[1].result.sha1

        # on disk every restore goes to a new directory, all removed at the end: deleting ~20k
        # files between runs makes ext4 slow at allocating inodes for a few minutes after
        # (recently_deleted() scans), which would tax whichever step runs next; tmpfs has no
        # such effect, and there the memory matters more
        on_tmpfs = _is_tmpfs(base)
        dests = iter(range(1_000_000))
        dest = base / "dest"

        def fresh():
            nonlocal dest
            if on_tmpfs and dest.exists():
                shutil.rmtree(dest)
            dest = base / f"dest{next(dests)}"
            dest.mkdir()

        def tar_extract(archive):
            return lambda: subprocess.run(["tar", "xzf", str(archive), "-C", str(dest)],
                                          check=True)

        restore = [
            Step("restore: tar xzf (tar's archive)", tar_extract(tar_out), fresh),
            Step("restore: roost (verify + restore)",
                 lambda: restore_backup(roost_out, dest, expected_sha1=roost_sha,
                                        truncate=True), fresh),
            Step("restore: tar xzf (roost's archive)", tar_extract(roost_out), fresh),
        ]
        run_rounds(restore[:2], args.runs)
        ok = True
        if not args.no_verify:
            restore[1].run()
            same = tree_digest(src) == tree_digest(dest)
            print(f"  roost round trip exact: {'yes' if same else 'NO'}", flush=True)
            ok = same
        restore[2].run()

        sizes = {0: tar_out.stat().st_size, 1: roost_out.stat().st_size,
                 2: roost6_out.stat().st_size}
        rows = [("backup", "tar czf", *backup[0].best, sizes[0], None),
                ("backup", "roost level 1 (default)", *backup[1].best, sizes[1],
                 backup[0].best[0] / backup[1].best[0]),
                ("backup", "roost level 6 (= tar's)", *backup[2].best, sizes[2],
                 backup[0].best[0] / backup[2].best[0]),
                ("restore", "tar xzf (tar's archive)", *restore[0].best, None, None),
                ("restore", "roost (verify + restore)", *restore[1].best, None,
                 restore[0].best[0] / restore[1].best[0]),
                ("restore", "tar xzf (roost's archive)", *restore[2].best, None,
                 restore[0].best[0] / restore[2].best[0])]
        print()
        print(f"{'step':8} {'tool':27} {'wall s':>7} {'MB/s':>7} {'CPU s':>6} "
              f"{'archive MB':>10} {'ratio':>6}")
        print("-" * 78)
        for step, tool, wall, cpu, arch, ratio in rows:
            print(f"{step:8} {tool:27} {wall:7.2f} {total / MB / wall:7.0f} {cpu:6.1f} "
                  f"{(f'{arch / MB:.0f}' if arch else ''):>10} "
                  f"{(f'{ratio:.2f}' if ratio else ''):>6}")
        print()
        print(f"best of {args.runs} interleaved run(s) per row; MB/s = tree MB / wall time; "
              "ratio = tar's wall time / the row's (goal >= 1.0); load average now "
              f"{os.getloadavg()[0]:.2f}")
        return 0 if ok else 1
    finally:
        if args.keep:
            print(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="~100 MB tree instead of ~1 GB")
    parser.add_argument("--size-mb", type=int, default=0, help="tree size in MB")
    parser.add_argument("--runs", type=int, default=2, help="runs per step (best kept)")
    parser.add_argument("--dir", default=None,
                        help="parent of the temporary directory (default: /dev/shm if it has "
                             "room, else the system temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--no-verify", action="store_true", help="skip the round-trip check")
    return run(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
