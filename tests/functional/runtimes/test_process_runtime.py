"""The process runtime with real processes: fakegame, OpenTTD, redis-server."""
from __future__ import annotations

import asyncio
import time
import os
import shutil
import signal
import socket
import sys

import pytest

from roost.runtimes.base import Attached, Exited, Limits, Output, RuntimeError_
from roost.runtimes.process import holder_wire as wire

from .conftest import FAKEGAME, PYTHON, REPO, Harness, pid_gone

OPENTTD = "/usr/games/openttd"
REDIS = shutil.which("redis-server")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_ready_line_commands_and_both_streams(harness: Harness):
    runtime, rec, _ = await harness.start()
    assert isinstance(rec.facts[0], Attached) and rec.facts[0].pid > 0
    assert rec.facts[0].reattached is False
    await rec.line("this is not a real game server", stream="stderr")
    assert any("Starting fakegame" in line for line in rec.lines("stdout"))
    await runtime.write_stdin(b"say hi\n")
    await rec.line("[Server] hi", stream="stdout")
    await runtime.write_stdin(b"list\nnonsense\n")
    await rec.line("There are 0 of a max of 20 players online:")
    await rec.line('Unknown command. Type "help" for help.')
    await runtime.write_stdin(b"stop\n")
    exited = await rec.exited()
    assert exited == Exited(code=0, oom_killed=False, by_signal=None)
    assert "Stopping server" in rec.lines()
    assert isinstance(rec.facts[-1], Exited)  # nothing after the exit
    assert await runtime.sample() is None
    with pytest.raises(RuntimeError_):
        await runtime.write_stdin(b"say too late\n")


async def test_crash_exit_code_is_reported(harness: Harness):
    runtime, rec, _ = await harness.start()
    await runtime.write_stdin(b"crash 3\n")
    assert (await rec.exited()).code == 3
    await rec.line("Crashing with exit code 3", stream="stderr")


async def test_sigterm_reaches_the_whole_process_group(harness: Harness):
    runtime, rec, _ = await harness.start(f'sleep 300 & echo "child $!"\n{FAKEGAME}')
    child = int((await rec.line("child ")).line.split()[1])
    assert not pid_gone(child)
    await runtime.signal(signal.SIGTERM)
    exited = await rec.exited()
    # The game handles SIGTERM and exits 0; the wrapper shell reports the game's code.
    assert exited.code == 0, "\n".join(rec.lines())
    assert "Received SIGTERM, stopping server" in rec.lines()
    for _ in range(50):
        if pid_gone(child):
            break
        await asyncio.sleep(0.05)
    assert pid_gone(child)


async def test_kill_is_exit_137(harness: Harness):
    runtime, rec, _ = await harness.start()
    pid = rec.attached().pid
    await runtime.kill()
    exited = await rec.exited()
    assert exited.code == 137
    assert pid_gone(pid)


async def test_signal_and_kill_after_exit_are_harmless(harness: Harness):
    runtime, rec, _ = await harness.start("echo bye", ready=None)
    await rec.exited()
    await runtime.signal(signal.SIGTERM)
    await runtime.kill()


async def test_runs_as_unprivileged_user_with_home_in_data_dir(harness: Harness, test_user):
    factory = harness.factory(uid=test_user.pw_uid, gid=test_user.pw_gid)
    runtime, rec, data_dir = await harness.start(
        f'echo "ids $(id -u) $(id -g) $(id -G)"; echo "home $HOME"; echo "cwd $(pwd)"; '
        f'echo "path $PATH"; touch owned-file\n{FAKEGAME}', factory=factory)
    uid, gid = test_user.pw_uid, test_user.pw_gid
    assert f"ids {uid} {gid} {gid}" in rec.lines()  # no supplementary groups left
    assert f"home {data_dir}" in rec.lines()
    assert f"cwd {data_dir}" in rec.lines()
    assert "/usr/games" in next(l for l in rec.lines() if l.startswith("path ")).split(":")
    assert os.stat(data_dir).st_uid == uid
    assert os.stat(os.path.join(data_dir, "owned-file")).st_uid == uid
    await runtime.write_stdin(b"stop\n")
    assert (await rec.exited()).code == 0


RAW_OUTPUT = r"""
import sys, time
w = sys.stdout.buffer
w.write(b"part"); w.flush(); time.sleep(0.2)
w.write(b"ial\n10%\r20%\r"); w.flush(); time.sleep(0.2)
w.write(b"\nwindows\r\n" + b"x" * 70000 + b"\nbad \xff\xfe bytes\n")
w.write("caf\u00e9 \u2603\n".encode())
w.write(b"no newline at exit"); w.flush()
sys.stderr.buffer.write(b"err1\nerr")
"""


async def test_partial_cr_long_and_invalid_output(harness: Harness, tmp_path):
    script = tmp_path / "raw.py"
    script.write_text(RAW_OUTPUT)
    runtime, rec, _ = await harness.start(f"{PYTHON} {script}", ready=None)
    await rec.exited()
    assert rec.lines("stdout") == ["partial", "10%", "20%", "windows", "x" * 65536,
                                   "bad \ufffd\ufffd bytes", "caf\u00e9 \u2603",
                                   "no newline at exit"]
    assert rec.lines("stderr") == ["err1", "err"]


async def test_burst_of_100000_lines_arrives_complete_and_in_order(harness: Harness):
    runtime, rec, _ = await harness.start()
    await runtime.write_stdin(b"burst 100000\n")
    await rec.line("burst line 100000 of 100000", timeout=60)
    burst = [line for line in rec.lines() if line.startswith("burst line ")]
    assert burst == [f"burst line {i} of 100000" for i in range(1, 100001)]
    await runtime.write_stdin(b"stop\n")
    assert (await rec.exited()).code == 0


async def test_a_daemon_slower_than_the_game_loses_no_output(harness: Harness):
    """Far more output than the spool holds, read by a daemon that is slow: the holder
    must hold the game back instead of overwriting output the daemon has not read."""
    runtime, rec, _ = await harness.start()
    slow_sink = rec.__call__

    def slow(fact):
        if isinstance(fact, Output):
            time.sleep(0.0005)  # a busy daemon: blocks its own event loop a little per line
        slow_sink(fact)

    runtime._sink = slow
    await runtime.write_stdin(b"burst 2000 16000\n")  # 32 MB, four times the spool
    await rec.line("burst line 2000 of 2000", timeout=60)
    burst = [int(line.split()[2]) for line in rec.lines() if line.startswith("burst line ")]
    assert burst == list(range(1, 2001))


async def test_sample_reports_memory_cpu_and_uptime(harness: Harness):
    runtime, rec, _ = await harness.start(limits=Limits(memory_bytes=512 * 1024 * 1024))
    first = await runtime.sample()
    assert first is not None
    assert 1_000_000 < first.memory_bytes < 200 * 1024 * 1024
    assert first.cpu_absolute >= 0 and first.uptime_ms > 0
    if runtime.limits_note is None:
        assert first.memory_limit_bytes == 512 * 1024 * 1024
    await runtime.write_stdin(b"alloc 64\n")
    await rec.line("Allocated 64 MiB")
    second = await runtime.sample()
    assert second.memory_bytes >= first.memory_bytes + 60 * 1024 * 1024
    assert second.uptime_ms >= first.uptime_ms
    assert (second.rx_bytes, second.tx_bytes) == (0, 0)  # host network: not attributable


async def test_cpu_is_percent_of_one_core_and_the_cpu_limit_holds(harness: Harness):
    runtime, rec, _ = await harness.start(f'{PYTHON} -c "while True: pass"', ready=None,
                                          limits=Limits(cpu_percent=50))
    if runtime.limits_note:
        pytest.skip(runtime.limits_note)
    await runtime.sample()
    await asyncio.sleep(1.0)
    busy = await runtime.sample()
    assert 30 <= busy.cpu_absolute <= 70, busy
    assert busy.cpu_absolute == round(busy.cpu_absolute, 3)


async def test_memory_limit_oom_kills_and_is_reported(harness: Harness):
    runtime, rec, _ = await harness.start(limits=Limits(memory_bytes=64 * 1024 * 1024))
    if runtime.limits_note:
        pytest.skip(f"cgroups not writable here: {runtime.limits_note}")
    await runtime.write_stdin(b"alloc 256\n")
    exited = await rec.exited()
    assert exited.oom_killed is True
    assert exited.code == 137
    assert "Allocated 256 MiB" not in rec.lines()


async def test_pids_limit_stops_a_fork_bomb(harness: Harness):
    runtime, rec, _ = await harness.start(
        "for i in 1 2 3 4 5 6 7 8 9 10; do sleep 5 & done; echo forked", ready=None,
        limits=Limits(pids=4))
    if runtime.limits_note:
        pytest.skip(runtime.limits_note)
    await rec.exited()
    assert any("fork" in line.lower() for line in rec.lines("stderr")), rec.lines()


async def test_reattach_after_close_delivers_output_stdin_and_exit(harness: Harness):
    first_factory = harness.factory()
    runtime, rec, data_dir = harness.runtime(first_factory)
    await runtime.start(harness.spec(
        runtime, f"sleep 0.5; echo printed while detached\n{FAKEGAME}", data_dir))
    pid = rec.attached().pid
    await runtime.close()
    await asyncio.sleep(1.5)  # the server prints and becomes ready with nobody listening

    again, rec2, _ = harness.runtime(harness.factory(), server_uuid=runtime.server_uuid)
    assert await again.attach() is True
    attached = rec2.facts[0]
    assert attached == Attached(pid=pid, reattached=True, started_at=attached.started_at)
    await rec2.line("printed while detached")
    await rec2.line("Done (")
    assert "printed while detached" not in rec.lines()
    await again.write_stdin(b"say back again\n")
    await rec2.line("[Server] back again")
    assert (await again.sample()) is not None
    await again.write_stdin(b"stop\n")
    assert (await rec2.exited()).code == 0


async def test_reattach_replays_only_output_not_seen_before(harness: Harness):
    runtime, rec, data_dir = await harness.start()
    await runtime.write_stdin(b"say before\n")
    await rec.line("[Server] before")
    await runtime.close()
    again, rec2, _ = harness.runtime(harness.factory(), server_uuid=runtime.server_uuid)
    assert await again.attach()
    await again.write_stdin(b"say after\n")
    await rec2.line("[Server] after")
    assert "[Server] before" not in rec2.lines()
    await again.kill()
    assert (await rec2.exited()).code == 137


DAEMON_STUB = """
import asyncio, sys
from roost.runtimes.base import LaunchSpec
from roost.runtimes.process.runtime import ProcessRuntimeFactory

async def main(state_root, cgroup_root, server_uuid, data_dir, invocation, pythonpath):
    factory = ProcessRuntimeFactory(state_root, None, None, cgroup_root, timeout_s=5)
    runtime = factory.for_server(server_uuid, data_dir, lambda f: print(f, flush=True))
    await runtime.start(LaunchSpec(server_uuid, invocation, {"PYTHONPATH": pythonpath}, data_dir))
    await asyncio.sleep(3600)

asyncio.run(main(*sys.argv[1:]))
"""


async def test_server_survives_kill_9_of_the_daemon(harness: Harness):
    runtime, rec, data_dir = harness.runtime()
    invocation = f"(sleep 1; echo printed while the daemon was dead) &\n{FAKEGAME}"
    daemon = await asyncio.create_subprocess_exec(
        sys.executable, "-c", DAEMON_STUB, harness.state_root, harness.cgroup_root,
        runtime.server_uuid, data_dir, invocation, REPO, stdout=asyncio.subprocess.PIPE)
    try:
        async with asyncio.timeout(15):
            while b"Done (" not in await daemon.stdout.readline():
                pass
    finally:
        daemon.kill()
        await daemon.wait()
    await asyncio.sleep(1.5)
    assert await runtime.attach() is True
    assert rec.facts[0].reattached is True
    await rec.line("printed while the daemon was dead")
    await runtime.write_stdin(b"say still here\n")
    await rec.line("[Server] still here")
    await runtime.write_stdin(b"stop\n")
    assert (await rec.exited()).code == 0


async def test_killing_the_holder_takes_the_server_down(harness: Harness):
    runtime, rec, data_dir = await harness.start(f"exec {FAKEGAME}")
    pid = rec.attached().pid
    holder_pid = runtime._holder_pid
    await runtime.close()
    os.kill(holder_pid, signal.SIGKILL)
    for _ in range(100):
        if pid_gone(pid):
            break
        await asyncio.sleep(0.02)
    assert pid_gone(pid)
    again, rec2, _ = harness.runtime(harness.factory(), server_uuid=runtime.server_uuid)
    assert await again.attach() is False  # nothing to report: no exit was recorded
    assert rec2.facts == []


async def test_exit_while_detached_is_reported_on_attach(harness: Harness):
    runtime, rec, data_dir = harness.runtime()
    await runtime.start(harness.spec(runtime, "sleep 0.3; echo last words; exit 5", data_dir))
    await runtime.close()
    await asyncio.sleep(1.5)  # exits with no daemon connected; the holder leaves
    assert not os.path.exists(os.path.join(harness.state_root, runtime.server_uuid,
                                           "holder.sock"))
    again, rec2, _ = harness.runtime(harness.factory(), server_uuid=runtime.server_uuid)
    assert await again.attach() is True
    exited = await rec2.exited()
    assert exited.code == 5
    assert rec2.lines() == ["last words"]
    assert isinstance(rec2.facts[0], Attached) and rec2.facts[0].reattached
    # Reported once: a later daemon finds nothing.
    third, rec3, _ = harness.runtime(harness.factory(), server_uuid=runtime.server_uuid)
    assert await third.attach() is False
    assert rec3.facts == []


async def test_detached_output_beyond_the_spool_is_bounded(harness: Harness):
    factory = harness.factory(spool_segment_bytes=64 * 1024)
    runtime, rec, data_dir = harness.runtime(factory)
    printer = "for i in range(1, 50001): print(f'burst line {i} of 50000')"
    await runtime.start(harness.spec(runtime, f'sleep 0.3; {PYTHON} -c "{printer}"; sleep 60',
                                     data_dir))
    await runtime.close()
    await asyncio.sleep(1.5)  # ~1.4 MB printed with nobody listening
    state = os.path.join(harness.state_root, runtime.server_uuid)
    assert len([n for n in os.listdir(state) if n.startswith("spool.")]) == 2
    again, rec2, _ = harness.runtime(factory, server_uuid=runtime.server_uuid)
    assert await again.attach()
    await rec2.line("burst line 50000 of 50000")
    got = [line for line in rec2.lines() if line.startswith("burst line ")]
    assert 1000 < len(got) < 50000  # the oldest detached output was dropped, the newest kept
    assert got[-2:] == ["burst line 49999 of 50000", "burst line 50000 of 50000"]
    await again.kill()
    assert (await rec2.exited()).code == 137


async def test_a_daemon_that_stops_reading_never_blocks_the_server(harness: Harness):
    runtime, rec, data_dir = harness.runtime()
    printer = "for i in range(200000): print(f'flood line {i}')"
    await runtime.start(harness.spec(
        runtime, f'sleep 0.5; {PYTHON} -c "{printer}"; touch finished; sleep 60', data_dir))
    await runtime.close()
    stuck = socket.socket(socket.AF_UNIX)
    stuck.connect(os.path.join(harness.state_root, runtime.server_uuid, "holder.sock"))
    stuck.sendall(wire.encode_offset(wire.RESUME, 0))  # ...and never reads a byte
    try:
        for _ in range(100):
            if os.path.exists(os.path.join(data_dir, "finished")):
                break
            await asyncio.sleep(0.05)
        assert os.path.exists(os.path.join(data_dir, "finished")), "the server was blocked"
    finally:
        stuck.close()
    again, rec2, _ = harness.runtime(harness.factory(), server_uuid=runtime.server_uuid)
    assert await again.attach()
    await rec2.line("flood line 199999")
    await again.kill()
    await rec2.exited()


async def test_long_state_root_still_connects(harness: Harness):
    long_root = os.path.join(harness.root, "s" * 90)
    runtime, rec, _ = await harness.start(factory=harness.factory(state_root=long_root))
    assert len(os.path.join(long_root, runtime.server_uuid, "holder.sock")) > 108
    await runtime.write_stdin(b"say long\n")
    await rec.line("[Server] long")
    await runtime.close()
    again, rec2, _ = harness.runtime(harness.factory(state_root=long_root),
                                     server_uuid=runtime.server_uuid)
    assert await again.attach()
    await again.write_stdin(b"stop\n")
    assert (await rec2.exited()).code == 0


async def test_start_while_running_is_refused(harness: Harness):
    runtime, rec, data_dir = await harness.start()
    with pytest.raises(RuntimeError_):
        await runtime.start(harness.spec(runtime, FAKEGAME, data_dir))
    await runtime.close()
    other, _, _ = harness.runtime(harness.factory(), server_uuid=runtime.server_uuid)
    with pytest.raises(RuntimeError_, match="still running"):
        await other.start(harness.spec(other, FAKEGAME, data_dir))


async def test_destroy_kills_and_removes_state(harness: Harness):
    runtime, rec, _ = await harness.start(limits=Limits(memory_bytes=256 * 1024 * 1024))
    pid = rec.attached().pid
    await runtime.destroy()
    assert pid_gone(pid)
    assert isinstance(rec.facts[-1], Exited)
    assert not os.path.exists(os.path.join(harness.state_root, runtime.server_uuid))
    assert not os.path.exists(
        f"/sys/fs/cgroup/memory/{harness.cgroup_root}/{runtime.server_uuid}")


async def test_restart_after_exit_works(harness: Harness):
    runtime, rec, data_dir = await harness.start()
    await runtime.write_stdin(b"stop\n")
    await rec.exited()
    start = len(rec.facts)
    await runtime.start(harness.spec(runtime, FAKEGAME, data_dir))
    await rec.wait_for(lambda f: isinstance(f, Output) and f.line.startswith("Done ("),
                       start=start)
    await runtime.write_stdin(b"stop\n")
    await rec.wait_for(lambda f: isinstance(f, Exited), start=start)


async def test_bad_user_fails_start_with_a_reason(harness: Harness):
    factory = harness.factory(uid=os.getuid(), gid=2**32 - 1)  # setgid: EINVAL
    runtime, rec, data_dir = harness.runtime(factory)
    with pytest.raises(RuntimeError_, match="could not start.*Invalid argument"):
        await runtime.start(harness.spec(runtime, FAKEGAME, data_dir))
    assert rec.facts == []


OPENTTD_CFG = """\
[network]
server_game_type = local
server_name = roost-test
server_port = {port}
server_bind_addresses = 127.0.0.1
use_relay_service = never
[gui]
autosave = off
[game_creation]
map_x = 8
map_y = 8
"""


@pytest.mark.skipif(not os.path.exists(OPENTTD), reason="openttd is not installed")
async def test_openttd_dedicated_server(harness: Harness, test_user):
    port = free_port()
    factory = harness.factory(uid=test_user.pw_uid, gid=test_user.pw_gid)
    runtime, rec, data_dir = harness.runtime(factory)
    os.makedirs(data_dir)
    with open(os.path.join(data_dir, "openttd.cfg"), "w") as f:
        f.write(OPENTTD_CFG.format(port=port))
    await runtime.start(harness.spec(
        runtime, f"{OPENTTD} -D 127.0.0.1:{port} -c {data_dir}/openttd.cfg -x", data_dir))
    await rec.line("Map generated, starting game", stream="stderr", timeout=30)
    await runtime.write_stdin(b"getdate\n")
    await rec.line("Date: ", stream="stdout")
    sample = await runtime.sample()
    assert sample.memory_bytes > 10 * 1024 * 1024
    await runtime.write_stdin(b"quit\n")
    assert (await rec.exited()).code == 0


@pytest.mark.skipif(REDIS is None, reason="redis-server is not installed")
async def test_redis_server_stops_on_sigterm(harness: Harness, test_user):
    port = free_port()
    factory = harness.factory(uid=test_user.pw_uid, gid=test_user.pw_gid)
    runtime, rec, data_dir = harness.runtime(factory)
    await runtime.start(harness.spec(
        runtime, f"{REDIS} --port {port} --bind 127.0.0.1 --save '' --appendonly no "
                 f"--dir {data_dir}", data_dir))
    await rec.line("Ready to accept connections", stream="stdout")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(b"PING\r\n")
        assert conn.recv(100) == b"+PONG\r\n"
    await runtime.signal(signal.SIGTERM)
    assert (await rec.exited()).code == 0
    await rec.line("bye bye")


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None
                    or shutil.which("ip") is None, reason="needs root, unshare and ip")
async def test_server_in_its_own_network_namespace(harness: Harness):
    runtime, rec, _ = await harness.start(
        f"exec unshare -n sh -c 'ip link set lo up && exec {FAKEGAME}'")
    sample = await runtime.sample()
    # Its namespace has only loopback, so nothing it did crossed the host's interfaces.
    assert (sample.rx_bytes, sample.tx_bytes) == (0, 0)
    assert sample.memory_bytes > 0
    await runtime.write_stdin(b"stop\n")
    assert (await rec.exited()).code == 0
