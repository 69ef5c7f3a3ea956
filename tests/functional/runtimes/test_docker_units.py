"""The Docker runtime's pure parts: log frames and the resume rule, the container
configuration (Wings' limits), pull progress lines. No engine needed."""
from __future__ import annotations

import calendar
import random
import struct
import time

import pytest

from roost.runtimes.base import LaunchSpec, Limits, RuntimeError_
from roost.runtimes.docker.cgroupstats import parse_proc_cgroup
from roost.runtimes.docker.containerspec import (
    container_config, memory_resources, port_bindings, wings_memory_overhead,
)
from roost.runtimes.docker.engine import resolve_url
from roost.runtimes.docker.images import PullProgress, local_name
from roost.runtimes.docker.logstream import (
    SINCE_SLACK_NS, STDERR, STDOUT, Entry, FrameDecoder, LogFormatError, LogMarks,
    format_since, parse_timestamp_ns,
)

MIB = 1024 * 1024
BASE_NS = calendar.timegm((2026, 11, 26, 15, 48, 10)) * 1_000_000_000


def stamp(ns: int) -> bytes:
    seconds, nanos = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)).encode() + \
        b".%09dZ" % nanos


def frame(stream: int, ns: int, data: bytes) -> bytes:
    payload = stamp(ns) + b" " + data
    return struct.pack(">BxxxL", stream, len(payload)) + payload


# -- timestamps and frames ------------------------------------------------------------------


def test_timestamps_parse_to_exact_nanoseconds():
    assert parse_timestamp_ns(b"2026-11-26T15:48:10.914065004Z") == BASE_NS + 914065004
    assert parse_timestamp_ns(b"2026-11-26T15:48:10.9Z") == BASE_NS + 900_000_000
    assert parse_timestamp_ns(b"2026-11-26T15:48:10Z") == BASE_NS
    assert parse_timestamp_ns(stamp(BASE_NS + 61_000_000_007)) == BASE_NS + 61_000_000_007
    for bad in (b"", b"yesterday", b"2026-11-26 15:48:10Z", b"2026-11-26T15:48:10.x1Z"):
        with pytest.raises(LogFormatError):
            parse_timestamp_ns(bad)


def test_since_keeps_nanoseconds():
    assert format_since(BASE_NS + 5) == f"{BASE_NS // 10**9}.000000005"


def test_frames_decode_whatever_the_chunking():
    data = (frame(STDOUT, BASE_NS + 1, b"hello\n") + frame(STDERR, BASE_NS + 2, b"oops\n")
            + frame(STDOUT, BASE_NS + 3, b"x" * 20000) + frame(STDOUT, BASE_NS + 3, b"y\n"))
    expected = [(STDOUT, BASE_NS + 1, b"hello\n"), (STDERR, BASE_NS + 2, b"oops\n"),
                (STDOUT, BASE_NS + 3, b"x" * 20000), (STDOUT, BASE_NS + 3, b"y\n")]
    for size in (1, 7, 8, 9, 100, 4096, len(data)):
        decoder = FrameDecoder()
        got = []
        for i in range(0, len(data), size):
            got += [(e.stream, e.ts_ns, e.data) for e in decoder.feed(data[i:i + size])]
        assert got == expected, size
        assert decoder.pending_bytes == 0


def test_a_frame_without_timestamp_is_an_error():
    decoder = FrameDecoder()
    with pytest.raises(LogFormatError):
        decoder.feed(struct.pack(">BxxxL", STDOUT, 5) + b"hello")


# -- the resume rule -------------------------------------------------------------------------


def replay(log: list[Entry], checkpoint: dict | None = None, container: str = "c"
           ) -> tuple[list[tuple[int, str]], list[tuple[int, dict]]]:
    """Read `log` as the engine would serve it from `checkpoint`: the (stream, line)s
    emitted, and after each entry (lines emitted so far, the checkpoint then)."""
    restored = LogMarks.restore(checkpoint, container) if checkpoint else None
    marks, splitters = restored or LogMarks.fresh()
    since = marks.since()
    since_ns = 0 if since is None else int(since.replace(".", ""))
    lines: list[tuple[int, str]] = []
    checkpoints = []
    for entry in log:
        if entry.ts_ns < since_ns:  # the engine's `since` filter
            continue
        fed = marks.accept(entry)
        if fed:
            lines += [(entry.stream, line) for line in splitters[entry.stream].feed(fed)]
            marks.settle(entry.stream, splitters[entry.stream])
        checkpoints.append((len(lines), marks.checkpoint(container, splitters)))
    return lines, checkpoints


def out(offset: int, data: str, stream: int = STDOUT) -> Entry:
    return Entry(stream, BASE_NS + offset, data.encode())


def test_fresh_marks_read_everything():
    marks, splitters = LogMarks.fresh()
    assert marks.since() is None
    lines, checkpoints = replay([out(1, "a\n"), out(2, "b\n", STDERR)])
    assert lines == [(STDOUT, "a"), (STDERR, "b")]
    assert checkpoints[-1][1]["streams"][str(STDERR)] == [BASE_NS + 2, 1, 0, False, False]


def test_resume_after_whole_lines():
    log = [out(1, "a\n"), out(2, "b\n"), out(3, "c\n")]
    lines, checkpoints = replay(log)
    assert replay(log, checkpoints[1][1])[0] == [(STDOUT, "c")]
    # stderr printed nothing: its position trails the newest entry by the slack.
    assert LogMarks.restore(checkpoints[1][1], "c")[0].since() == \
        format_since(BASE_NS + 2 - 2 * SINCE_SLACK_NS)


def test_a_line_received_in_part_is_read_again_whole():
    # A 3-piece line (the pieces share a timestamp), checkpointed after its second piece.
    log = [out(1, "a\n"), out(2, "x" * 5), out(2, "y" * 5), out(2, "z\n"), out(3, "b\n")]
    lines, checkpoints = replay(log)
    assert checkpoints[2][1]["streams"][str(STDOUT)][:3] == [BASE_NS + 2, 0, 0]
    assert replay(log, checkpoints[2][1])[0] == [(STDOUT, "xxxxxyyyyyz"), (STDOUT, "b")]


def test_a_tail_starting_inside_an_entry_resumes_there():
    log = [out(1, "one\rtw"), out(1, "o\n"), out(2, "three\n")]
    lines, checkpoints = replay(log)
    assert lines[0] == (STDOUT, "one")
    assert checkpoints[0][1]["streams"][str(STDOUT)][:3] == [BASE_NS + 1, 0, 4]
    assert replay(log, checkpoints[0][1])[0] == [(STDOUT, "two"), (STDOUT, "three")]


def test_a_cr_ending_an_entry_is_remembered():
    log = [out(1, "10%\r"), out(2, "\nnext\n")]  # \r then \n across entries: one line end
    lines, checkpoints = replay(log)
    assert lines == [(STDOUT, "10%"), (STDOUT, "next")]
    assert checkpoints[0][1]["streams"][str(STDOUT)][3] is True  # after_cr
    assert replay(log, checkpoints[0][1])[0] == [(STDOUT, "next")]


def test_streams_resume_independently_despite_reordering():
    # stderr stamped 5 was written after stdout stamped 6 (two copier goroutines).
    log = [out(4, "o1\n"), out(6, "o2\n"), out(5, "e1\n", STDERR), out(7, "o3\n"),
           out(8, "e2\n", STDERR)]
    full, checkpoints = replay(log)
    for count, checkpoint in checkpoints:
        assert full[:count] + replay(log, checkpoint)[0] == full


def test_a_silent_stream_does_not_pin_the_resume_point():
    log = [out(i * 1_000_000_000, f"line {i}\n") for i in range(1, 6)]
    _, checkpoints = replay(log)
    stderr = checkpoints[-1][1]["streams"][str(STDERR)]
    assert stderr[:3] == [BASE_NS + 5_000_000_000 - SINCE_SLACK_NS, 0, 0]
    marks, _ = LogMarks.restore(checkpoints[-1][1], "c")
    assert marks.since() == format_since(BASE_NS + 5_000_000_000 - 2 * SINCE_SLACK_NS)


def test_a_position_rotated_away_resumes_at_the_oldest_later_entry():
    _, checkpoints = replay([out(1, "a\n"), out(2, "b\n")])
    rotated = [out(10, "c\n"), out(11, "d\n")]
    assert replay(rotated, checkpoints[0][1])[0] == [(STDOUT, "c"), (STDOUT, "d")]


def test_checkpoints_of_other_containers_or_versions_are_ignored():
    _, checkpoints = replay([out(1, "a\n")])
    checkpoint = checkpoints[0][1]
    assert LogMarks.restore(checkpoint, "other") is None
    assert LogMarks.restore({**checkpoint, "v": 99}, "c") is None
    assert LogMarks.restore({"v": 1, "container": "c", "streams": {}}, "c") is None
    assert LogMarks.restore(None, "c") is None


def generated_log(rng: random.Random) -> list[Entry]:
    """Engine-like entries: lines with \\n, \\r\\n or \\r inside, long ones cut in pieces
    sharing a timestamp, two streams stamped independently and sometimes reordered."""
    log: list[Entry] = []
    now = BASE_NS
    for _ in range(rng.randint(5, 60)):
        now += rng.choice([1, 2, 1000, 50_000_000])
        stream = rng.choice([STDOUT, STDOUT, STDERR])
        text = "".join(rng.choice("ab\r") for _ in range(rng.randint(0, 12)))
        text += rng.choice(["\n", "\r\n", "\n"])
        pieces, rest = [], text
        while len(rest) > 4 and rng.random() < 0.5:
            cut = rng.randint(1, len(rest) - 1)
            pieces.append(rest[:cut])
            rest = rest[cut:]
        pieces.append(rest)
        for piece in pieces:
            log.append(Entry(stream, now, piece.encode()))
        if len(log) > 2 and rng.random() < 0.2 and log[-2].stream != log[-1].stream \
                and log[-2].ts_ns != log[-1].ts_ns:
            log[-1], log[-2] = log[-2], log[-1]  # written in the other order
    return log


def with_repeats(log: list[Entry], rng: random.Random) -> list[Entry]:
    """The log as a rotating follower may send it: some stretches sent twice (jumping back
    to any earlier entry, at a point where no stream is inside a long line)."""
    out: list[Entry] = []
    last: dict[int, bytes] = {}
    for i, entry in enumerate(log):
        out.append(entry)
        last[entry.stream] = entry.data
        if i > 2 and all(d.endswith(b"\n") for d in last.values()) and rng.random() < 0.05:
            out += log[rng.randint(0, i):i + 1]  # back to an earlier entry, up to here
    return out


def test_entries_sent_again_by_the_engine_are_dropped():
    log = [out(1, "a\n"), out(2, "x"), out(2, "y\n"), out(3, "b\n")]
    # Jumped back to the second piece of the long line, then carried on.
    sent = log[:3] + [log[2]] + log[1:]
    assert replay(sent)[0] == [(STDOUT, "a"), (STDOUT, "xy"), (STDOUT, "b")]


@pytest.mark.parametrize("seed", range(200))
def test_resuming_at_any_checkpoint_delivers_every_line_once(seed):
    rng = random.Random(seed)
    log = generated_log(rng)
    full, checkpoints = replay(log)
    assert replay(with_repeats(log, rng))[0] == full
    for count, checkpoint in rng.sample(checkpoints, min(8, len(checkpoints))):
        assert full[:count] + replay(log, checkpoint)[0] == full, (count, checkpoint)
        # ...and resuming twice in a row changes nothing.
        again = replay(log, checkpoint)[1]
        if again:
            mid_count, mid = again[len(again) // 2]
            assert full[:count + mid_count] + replay(log, mid)[0] == full


# -- container configuration -----------------------------------------------------------------


def test_wings_memory_overhead_thresholds():
    assert wings_memory_overhead(512 * MIB) == 1.15
    assert wings_memory_overhead(2048 * MIB) == 1.15
    assert wings_memory_overhead(2049 * MIB) == 1.10
    assert wings_memory_overhead(4096 * MIB) == 1.10
    assert wings_memory_overhead(4097 * MIB) == 1.05


def test_memory_and_swap_as_wings_sets_them():
    limit = 1024 * MIB
    bounded = round(limit * 1.15)
    assert memory_resources(Limits(memory_bytes=limit, swap_bytes=0)) == {
        "Memory": bounded, "MemoryReservation": limit, "MemorySwap": bounded}
    assert memory_resources(Limits(memory_bytes=limit, swap_bytes=-1))["MemorySwap"] == -1
    assert memory_resources(Limits(memory_bytes=limit, swap_bytes=512 * MIB))["MemorySwap"] \
        == bounded + 512 * MIB
    assert memory_resources(Limits(memory_bytes=0, swap_bytes=512 * MIB)) == {}
    assert memory_resources(Limits(memory_bytes=limit), lambda _: 1.0)["Memory"] == limit


def test_ports_bound_as_tcp_and_udp():
    exposed, bindings = port_bindings((("0.0.0.0", 25565), ("10.0.0.2", 25566)))
    assert exposed == {"25565/tcp": {}, "25565/udp": {}, "25566/tcp": {}, "25566/udp": {}}
    assert bindings["25566/udp"] == [{"HostIp": "10.0.0.2", "HostPort": "25566"}]


def spec(**kwargs) -> LaunchSpec:
    base = dict(server_uuid="u1", invocation="java -jar server.jar",
                environment={"SERVER_PORT": 25565, "EMPTY": None, "HOME": "/root"},
                data_dir="/srv/roost/u1", image="ghcr.io/x/y:1")
    base.update(kwargs)
    return LaunchSpec(**base)


def test_container_config():
    config = container_config(
        spec(limits=Limits(memory_bytes=256 * MIB, swap_bytes=0, cpu_percent=250, pids=512,
                           oom_disabled=True), ports=(("0.0.0.0", 25565),)),
        image="ghcr.io/x/y:1", labels={"roost.server": "u1"}, user="988:988",
        tmpfs_size_mb=64)
    assert config["Cmd"] == ["/bin/sh", "-c", "java -jar server.jar"]
    assert config["User"] == "988:988"
    assert "HOME=/home/container" in config["Env"] and "HOME=/root" not in config["Env"]
    assert "SERVER_PORT=25565" in config["Env"] and "EMPTY=" in config["Env"]
    assert "TINI_KILL_PROCESS_GROUP=1" in config["Env"]
    assert (config["OpenStdin"], config["StdinOnce"], config["Tty"]) == (True, False, False)
    host = config["HostConfig"]
    assert host["CpuQuota"] == 250_000 and host["CpuPeriod"] == 100_000
    assert host["PidsLimit"] == 512 and host["OomKillDisable"] is True
    assert host["Tmpfs"] == {"/tmp": "rw,exec,nosuid,size=64M"}
    assert host["Binds"] == ["/srv/roost/u1:/home/container"]
    assert "25565/udp" in host["PortBindings"]
    unlimited = container_config(spec(), image="i", labels={}, network_mode="host",
                                 init=False)["HostConfig"]
    assert "Memory" not in unlimited and "CpuQuota" not in unlimited
    assert "PidsLimit" not in unlimited and "PortBindings" not in unlimited
    assert unlimited["Init"] is False


# -- images and stats helpers ----------------------------------------------------------------


def test_engine_addresses():
    assert resolve_url("/var/run/docker.sock") == "unix:///var/run/docker.sock"
    assert resolve_url("unix:///run/d.sock") == "unix:///run/d.sock"
    assert resolve_url("tcp://10.0.0.1:2375") == "tcp://10.0.0.1:2375"


def test_local_images():
    assert local_name("~roost/demo") == "roost/demo"
    assert local_name("ghcr.io/pterodactyl/yolks:java_17") is None


def test_pull_progress_lines_are_throttled_per_layer():
    progress = PullProgress(interval_s=2.0)
    assert progress.feed({"status": "Pulling from library/x", "id": "latest"}, 0) == \
        "latest: Pulling from library/x"
    assert progress.feed({"status": "Pulling fs layer", "id": "abc"}, 0) == \
        "abc: Pulling fs layer"
    down = {"status": "Downloading", "id": "abc", "progress": "[=>  ] 1MB/10MB"}
    assert progress.feed(down, 0.1) == "abc: Downloading [=>  ] 1MB/10MB"
    assert progress.feed(down, 1.0) is None
    assert progress.feed(down, 2.2) is not None
    assert progress.feed({"status": "Download complete", "id": "abc"}, 2.3) == \
        "abc: Download complete"
    assert progress.feed({"progressDetail": {}}, 3) is None
    with pytest.raises(RuntimeError_, match="denied"):
        progress.feed({"errorDetail": {"message": "denied"}, "error": "denied"}, 4)


def test_proc_cgroup_parsing():
    v1, v2 = parse_proc_cgroup("12:cpu,cpuacct:/docker/abc\n4:memory:/docker/abc\n0::/\n")
    assert v1 == {"cpu": "/docker/abc", "cpuacct": "/docker/abc", "memory": "/docker/abc"}
    assert v2 == "/"
