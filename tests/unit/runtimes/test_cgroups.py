"""cgroup detection, parsing and limit writing (against a fake hierarchy in a temp dir)."""
import os

from roost.runtimes.base import Limits
from roost.runtimes.process import cgroups
from roost.runtimes.process.cgroups import Hierarchies

V1_MOUNTINFO = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""

COMOUNTED_MOUNTINFO = """\
25 24 0:22 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:9 - cgroup cgroup rw,cpu,cpuacct
26 24 0:23 / /sys/fs/cgroup/memory rw,nosuid shared:10 - cgroup cgroup rw,memory
27 24 0:24 / /mnt/my\\040cgroups rw master:1 - cgroup2 cgroup2 rw,nsdelegate
"""


def test_parse_mountinfo_v1_with_unified_mount():
    found = cgroups.parse_mountinfo(V1_MOUNTINFO)
    assert found.v2 == "/sys/fs/cgroup/unified"
    assert found.v1 == {"cpu": "/sys/fs/cgroup/cpu", "cpuacct": "/sys/fs/cgroup/cpuacct",
                        "memory": "/sys/fs/cgroup/memory", "pids": "/sys/fs/cgroup/pids"}


def test_parse_mountinfo_comounted_controllers_and_escaped_paths():
    found = cgroups.parse_mountinfo(COMOUNTED_MOUNTINFO)
    assert found.v1["cpu"] == found.v1["cpuacct"] == "/sys/fs/cgroup/cpu,cpuacct"
    assert found.v2 == "/mnt/my cgroups"


def test_parse_flat_keyed_and_limits():
    assert cgroups.parse_flat_keyed("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")[
        "oom_kill"] == 2
    assert cgroups.parse_limit("max\n") == 0
    assert cgroups.parse_limit("9223372036854771712\n") == 0
    assert cgroups.parse_limit("67108864\n") == 64 * 1024 * 1024


def _read(path):
    with open(path) as f:
        return f.read()


def test_create_v1_writes_limits_in_each_hierarchy(tmp_path):
    mounts = {c: str(tmp_path / c) for c in ("memory", "cpu", "pids")}
    mounts["cpuacct"] = mounts["cpu"]  # co-mounted
    for m in set(mounts.values()):
        os.makedirs(m)
    limits = Limits(memory_bytes=100, swap_bytes=50, cpu_percent=150, pids=32,
                    oom_disabled=True)
    group, note = cgroups.create("roost", "srv", limits, Hierarchies(v1=mounts))
    assert note is None
    memory = tmp_path / "memory/roost/srv"
    assert _read(memory / "memory.limit_in_bytes") == "100"
    assert _read(memory / "memory.memsw.limit_in_bytes") == "150"
    assert _read(memory / "memory.oom_control") == "1"
    assert _read(tmp_path / "cpu/roost/srv/cpu.cfs_quota_us") == "150000"
    assert _read(tmp_path / "cpu/roost/srv/cpu.cfs_period_us") == "100000"
    assert _read(tmp_path / "pids/roost/srv/pids.max") == "32"
    assert sorted(group.procs_files()) == sorted(
        str(tmp_path / c / "roost/srv/cgroup.procs") for c in ("memory", "cpu", "pids"))
    assert group.oom_file == str(memory / "memory.oom_control")
    assert cgroups.Cgroup.from_json(group.to_json()) == group


def test_create_v2_enables_controllers_and_writes_limits(tmp_path):
    limits = Limits(memory_bytes=1 << 20, cpu_percent=50, pids=10)
    group, note = cgroups.create("a/b", "srv", limits, Hierarchies(v2=str(tmp_path)))
    assert note is None
    assert _read(tmp_path / "cgroup.subtree_control") == "+memory +cpu +pids"
    assert _read(tmp_path / "a/b/cgroup.subtree_control") == "+memory +cpu +pids"
    assert _read(tmp_path / "a/b/srv/memory.max") == str(1 << 20)
    assert _read(tmp_path / "a/b/srv/cpu.max") == "50000 100000"
    assert group.oom_file == str(tmp_path / "a/b/srv/memory.events")


def test_unwritable_cgroups_give_a_note_but_no_failure():
    limits = Limits(memory_bytes=1 << 20)
    group, note = cgroups.create("roost", "srv", limits, Hierarchies(v1={"memory": "/proc/self"}))
    assert group is None
    assert note.startswith("resource limits not applied: cannot create cgroup /proc/self/roost")


def test_unwritable_cgroups_without_limits_need_no_note():
    assert cgroups.create("roost", "srv", Limits(), Hierarchies(v1={"memory": "/proc/self"})) \
        == (None, None)


def test_no_cgroup_filesystem():
    group, note = cgroups.create(None, "srv", Limits(pids=5), Hierarchies())
    assert group is None and "no cgroup filesystem" in note


def test_usage_readers_use_v1_files(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "c").mkdir()
    (tmp_path / "m/memory.usage_in_bytes").write_text("5000\n")
    (tmp_path / "m/memory.stat").write_text("cache 10\ntotal_inactive_file 1000\n")
    (tmp_path / "m/memory.limit_in_bytes").write_text("9223372036854771712\n")
    (tmp_path / "c/cpuacct.usage").write_text("123456789\n")
    group = cgroups.Cgroup(1, {"memory": str(tmp_path / "m"), "cpuacct": str(tmp_path / "c")})
    assert group.memory_usage_bytes() == 4000
    assert group.memory_limit_bytes() == 0
    assert group.cpu_usage_ns() == 123456789
