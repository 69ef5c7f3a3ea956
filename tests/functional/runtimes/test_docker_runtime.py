"""The Docker runtime with a real engine and real containers of the local test image."""
from __future__ import annotations

import asyncio
import os
import signal
import sys
import time

import pytest

from roost.runtimes.base import Attached, Exited, Limits, Output, Progress, RuntimeError_
from roost.runtimes.docker.containerspec import CAP_DROP

from .conftest import REPO
from .docker_support import (  # noqa: F401  (fixtures)
    FAKEGAME, IMAGE, DockerHarness, FakeRegistry, docker_engine, docker_harness, free_port,
    image_as_registry_blobs, remove_image,
)

MIB = 1024 * 1024


async def test_ready_line_commands_and_both_streams(docker_harness: DockerHarness):
    runtime, rec, _ = await docker_harness.start()
    first = rec.facts[0]
    assert isinstance(first, Attached) and first.pid > 0 and first.reattached is False
    assert abs(first.started_at - time.time()) < 60
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
    assert [f for f in rec.facts if isinstance(f, Attached)] == [first]
    assert await runtime.sample() is None
    with pytest.raises(RuntimeError_):
        await runtime.write_stdin(b"say too late\n")


async def test_crash_exit_code_is_reported(docker_harness: DockerHarness):
    runtime, rec, _ = await docker_harness.start()
    await runtime.write_stdin(b"crash 3\n")
    assert (await rec.exited()).code == 3
    assert "Crashing with exit code 3" in rec.lines("stderr")


async def test_sigterm_reaches_the_game_and_its_process_group(docker_harness: DockerHarness):
    runtime, rec, _ = await docker_harness.start(f'sleep 300 & echo "child $!"\n{FAKEGAME}')
    await rec.line("child ")
    await runtime.signal(signal.SIGTERM)
    exited = await rec.exited()
    # The game handles SIGTERM and exits 0 (the shell exec'd it: its code is the container's).
    assert exited.code == 0, "\n".join(rec.lines())
    assert exited.by_signal is None
    assert "Received SIGTERM, stopping server" in rec.lines()


async def test_sigterm_reaches_a_game_behind_a_shell(docker_harness: DockerHarness):
    """The shell does not exec the game here (a command follows it) and ignores SIGTERM:
    only a signal to the whole process group (tini -g) lets the game stop gracefully."""
    runtime, rec, _ = await docker_harness.start(
        f'trap "" TERM\n{FAKEGAME}\necho "shell saw exit $?"')
    await runtime.signal(signal.SIGTERM)
    exited = await rec.exited()
    assert "Received SIGTERM, stopping server" in rec.lines()
    assert "shell saw exit 0" in rec.lines()
    assert exited.code == 0


async def test_sigterm_kills_a_shell_wrapped_group(docker_harness: DockerHarness):
    """A game that does not handle SIGTERM dies of it: 143, as a process would."""
    runtime, rec, _ = await docker_harness.start("echo up; sleep 300; echo never", ready="up")
    await runtime.signal(signal.SIGTERM)
    exited = await rec.exited()
    assert exited.code == 143 and exited.by_signal == signal.SIGTERM
    assert "never" not in rec.lines()


async def test_kill_is_exit_137(docker_harness: DockerHarness):
    runtime, rec, _ = await docker_harness.start()
    await runtime.kill()
    exited = await rec.exited()
    assert exited.code == 137 and exited.by_signal == signal.SIGKILL
    assert exited.oom_killed is False
    info = await docker_harness.inspect(runtime)
    assert info["State"]["Running"] is False


async def test_signal_and_kill_after_exit_are_harmless(docker_harness: DockerHarness):
    runtime, rec, _ = await docker_harness.start("echo bye", ready=None)
    assert (await rec.exited()).code == 0
    assert rec.lines() == ["bye"]
    await runtime.signal(signal.SIGTERM)
    await runtime.kill()


async def test_burst_of_20000_lines_arrives_complete_and_in_order(docker_harness: DockerHarness):
    runtime, rec, _ = await docker_harness.start()
    await runtime.write_stdin(b"burst 20000\n")
    await rec.line("burst line 20000 of 20000", timeout=60)
    burst = [line for line in rec.lines() if line.startswith("burst line ")]
    assert burst == [f"burst line {i} of 20000" for i in range(1, 20001)]
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


async def test_partial_cr_long_and_invalid_output(docker_harness: DockerHarness):
    runtime, rec, data_dir = docker_harness.runtime()
    os.makedirs(data_dir, exist_ok=True)
    with open(os.path.join(data_dir, "raw.py"), "w") as f:
        f.write(RAW_OUTPUT)
    await runtime.start(docker_harness.spec(runtime, "python3 raw.py", data_dir))
    await rec.exited()
    assert rec.lines("stdout") == ["partial", "10%", "20%", "windows", "x" * 65536,
                                   "bad \ufffd\ufffd bytes", "caf\u00e9 \u2603",
                                   "no newline at exit"]
    assert rec.lines("stderr") == ["err1", "err"]


async def test_memory_limit_oom_kills_and_is_reported(docker_harness: DockerHarness):
    runtime, rec, _ = await docker_harness.start(
        limits=Limits(memory_bytes=64 * MIB, swap_bytes=0))
    assert runtime.limits_note is None
    await runtime.write_stdin(b"alloc 256\n")
    exited = await rec.exited()
    assert exited.oom_killed is True
    assert exited.code == 137
    assert "Allocated 256 MiB" not in rec.lines()


async def test_limits_and_ports_are_set_on_the_container(docker_harness: DockerHarness):
    port = free_port()
    runtime, rec, data_dir = await docker_harness.start(
        limits=Limits(memory_bytes=1024 * MIB, swap_bytes=256 * MIB, cpu_percent=150,
                      pids=64),
        ports=(("127.0.0.1", port),))
    info = await docker_harness.inspect(runtime)
    host = info["HostConfig"]
    assert host["Memory"] == round(1024 * MIB * 1.15)
    assert host["MemoryReservation"] == 1024 * MIB
    assert host["MemorySwap"] == round(1024 * MIB * 1.15) + 256 * MIB
    assert (host["CpuQuota"], host["CpuPeriod"]) == (150_000, 100_000)
    assert host["PidsLimit"] == 64
    assert host["Tmpfs"] == {"/tmp": "rw,exec,nosuid,size=100M"}
    assert host["OomKillDisable"] is False
    assert host["Init"] is True
    assert set(CAP_DROP) <= {c.lower().removeprefix("cap_") for c in host["CapDrop"]}
    assert host["LogConfig"]["Type"] == "json-file"
    binding = [{"HostIp": "127.0.0.1", "HostPort": str(port)}]
    assert host["PortBindings"] == {f"{port}/tcp": binding, f"{port}/udp": binding}
    assert host["Binds"] == [f"{data_dir}:/home/container"]
    config = info["Config"]
    assert config["Labels"]["roost.server"] == runtime.server_uuid
    assert config["Labels"]["roost.managed"] == "1"
    assert info["Name"] == f"/{runtime.server_uuid}"
    assert config["WorkingDir"] == "/home/container"
    assert "HOME=/home/container" in config["Env"]
    assert (config["OpenStdin"], config["StdinOnce"], config["Tty"]) == (True, False, False)
    # The kernel got them too: the cgroup limit is what sample() reports.
    sample = await runtime.sample()
    assert sample.memory_limit_bytes == round(1024 * MIB * 1.15) // 4096 * 4096
    # /tmp is the small tmpfs, the data dir is the working directory and HOME.
    await runtime.write_stdin(b"stop\n")
    await rec.exited()
    runtime2, rec2, data_dir2 = await docker_harness.start(
        'df -k /tmp | tail -1; echo "home=$HOME cwd=$(pwd)"; touch made-inside',
        ready=None)
    await rec2.exited()
    df = rec2.lines()[0].split()
    assert 100 * 1024 - 1024 <= int(df[1]) <= 100 * 1024, rec2.lines()
    assert "home=/home/container cwd=/home/container" in rec2.lines()
    assert os.path.exists(os.path.join(data_dir2, "made-inside"))


async def test_no_limits_means_none_set(docker_harness: DockerHarness):
    runtime, rec, _ = await docker_harness.start()
    host = (await docker_harness.inspect(runtime))["HostConfig"]
    assert host["Memory"] == 0 and host["CpuQuota"] == 0
    assert host["PidsLimit"] in (None, 0, -1)
    assert (await runtime.sample()).memory_limit_bytes == 0


async def test_engine_warnings_become_the_limits_note(docker_harness: DockerHarness):
    # The engine warns that disabling the OOM killer without a memory limit is risky.
    runtime, rec, _ = await docker_harness.start(limits=Limits(oom_disabled=True))
    assert runtime.limits_note and "oom" in runtime.limits_note.lower()
    assert runtime.limits_note.startswith("the container engine did not apply every limit")


async def test_sample_reports_memory_cpu_network_and_uptime(docker_harness: DockerHarness):
    runtime, rec, _ = await docker_harness.start(limits=Limits(memory_bytes=512 * MIB))
    first = await runtime.sample()
    assert first is not None
    assert 1_000_000 < first.memory_bytes < 200 * MIB
    assert first.memory_limit_bytes == round(512 * MIB * 1.15) // 4096 * 4096
    assert first.cpu_absolute >= 0 and first.uptime_ms > 0
    await runtime.write_stdin(b"alloc 64\n")
    await rec.line("Allocated 64 MiB")
    second = await runtime.sample()
    assert second.memory_bytes >= first.memory_bytes + 60 * MIB
    assert second.uptime_ms >= first.uptime_ms
    # Bridge network: the container's own namespace; counters are its own (maybe 0 yet).
    assert second.rx_bytes >= 0 and second.tx_bytes >= 0
    started = time.perf_counter()
    for _ in range(200):
        await runtime.sample()
    per_sample_us = (time.perf_counter() - started) / 200 * 1e6
    print(f"sample() costs {per_sample_us:.0f} us")
    assert per_sample_us < 2000  # 100 containers at 1 Hz: well under a fifth of a core


async def test_cpu_is_percent_of_one_core_and_the_cpu_limit_holds(docker_harness: DockerHarness):
    runtime, rec, _ = await docker_harness.start(
        'python3 -c "while True: pass"', ready=None, limits=Limits(cpu_percent=50))
    await runtime.sample()
    await asyncio.sleep(1.0)
    busy = await runtime.sample()
    assert 30 <= busy.cpu_absolute <= 70, busy
    assert busy.cpu_absolute == round(busy.cpu_absolute, 3)


async def test_runs_as_the_given_user(docker_harness: DockerHarness, test_user):
    factory = docker_harness.factory(uid=test_user.pw_uid, gid=test_user.pw_gid)
    runtime, rec, data_dir = await docker_harness.start(
        'echo "ids $(id -u) $(id -g)"; touch owned-file', factory=factory, ready=None)
    assert (await rec.exited()).code == 0, rec.lines()
    assert f"ids {test_user.pw_uid} {test_user.pw_gid}" in rec.lines()
    assert os.stat(data_dir).st_uid == test_user.pw_uid
    assert os.stat(os.path.join(data_dir, "owned-file")).st_uid == test_user.pw_uid


async def test_reattach_after_close_delivers_output_exactly_once(docker_harness: DockerHarness):
    runtime, rec, data_dir = docker_harness.runtime()
    await runtime.start(docker_harness.spec(
        runtime, f"(sleep 2; echo printed while detached) &\n{FAKEGAME}", data_dir))
    pid = (await rec.wait_for(lambda f: isinstance(f, Attached))).pid
    await rec.line("Done (")
    await runtime.write_stdin(b"say before\n")
    await rec.line("[Server] before")
    await runtime.write_stdin(b"burst 5000\n")
    await rec.line("burst line 1 of 5000")
    await runtime.close()  # mid-burst: some lines seen, the rest not yet
    seen_before = len(rec.facts)
    await asyncio.sleep(2.5)
    assert len(rec.facts) == seen_before  # a closed runtime reports nothing

    again, rec2, _ = docker_harness.runtime(docker_harness.factory(),
                                            server_uuid=runtime.server_uuid)
    assert await again.attach() is True
    attached = rec2.facts[0]
    assert attached == Attached(pid=pid, reattached=True, started_at=attached.started_at)
    await rec2.line("printed while detached")
    await rec2.line("burst line 5000 of 5000")
    burst = [line for line in rec.lines() + rec2.lines() if line.startswith("burst line ")]
    assert burst == [f"burst line {i} of 5000" for i in range(1, 5001)]  # no loss, no repeat
    assert "[Server] before" not in rec2.lines()
    assert "printed while detached" not in rec.lines()
    await again.write_stdin(b"say back again\n")
    await rec2.line("[Server] back again")
    assert (await again.sample()) is not None
    await again.write_stdin(b"stop\n")
    assert (await rec2.exited()).code == 0
    assert rec2.lines().count("printed while detached") == 1


async def test_attach_at_a_checkpoint_resumes_exactly_there(docker_harness: DockerHarness):
    """The daemon stores checkpoint() with its console lines and hands it back to attach():
    output resumes with nothing lost and nothing twice, even inside a long line that the
    engine logged in several pieces."""
    runtime, rec, _ = await docker_harness.start()
    taken: list[tuple[int, dict]] = []

    async def take_checkpoints():  # as the daemon's flush loop does, between deliveries
        while True:
            checkpoint = runtime.checkpoint()
            if checkpoint is not None:
                taken.append((len(rec.lines()), checkpoint))
            await asyncio.sleep(0)

    taker = asyncio.create_task(take_checkpoints())
    try:
        await runtime.write_stdin(b"burst 400 40000\n")  # 40 kB lines: 3 log entries each
        await rec.line("burst line 400 of 400", timeout=60)
    finally:
        taker.cancel()
    full = rec.lines()
    mid_line = [t for t in taken if t[1]["streams"]["1"][1:3] != [0, 0]]
    assert mid_line, "no checkpoint fell inside a line"
    picks = [taken[0], mid_line[0], mid_line[len(mid_line) // 2], taken[len(taken) // 2],
             taken[-1]]
    for count, checkpoint in picks:
        again, rec2, _ = docker_harness.runtime(docker_harness.factory(),
                                                server_uuid=runtime.server_uuid)
        assert await again.attach(checkpoint) is True
        if count < len(full):
            await rec2.line("burst line 400 of 400")
        await asyncio.sleep(0.3)
        assert full[:count] + rec2.lines() == full, count
        await again.close()
    # A checkpoint of another container is ignored: the runtime's own state file is used.
    other = {**taken[-1][1], "container": "0" * 64}
    await runtime.close()
    again, rec2, _ = docker_harness.runtime(docker_harness.factory(),
                                            server_uuid=runtime.server_uuid)
    assert await again.attach(other) is True
    await again.write_stdin(b"say after close\n")
    await rec2.line("[Server] after close")
    assert rec2.lines() == ["[Server] after close"]
    await again.kill()
    await rec2.exited()


async def test_exit_while_detached_is_reported_once_on_attach(docker_harness: DockerHarness):
    runtime, rec, data_dir = docker_harness.runtime()
    await runtime.start(docker_harness.spec(
        runtime, "echo first words; sleep 1; echo last words >&2; exit 5", data_dir))
    await rec.line("first words")
    await runtime.close()
    await asyncio.sleep(2)
    again, rec2, _ = docker_harness.runtime(docker_harness.factory(),
                                            server_uuid=runtime.server_uuid)
    assert await again.attach() is True
    exited = await rec2.exited()
    assert exited == Exited(code=5, oom_killed=False, by_signal=None)
    assert isinstance(rec2.facts[0], Attached) and rec2.facts[0].reattached
    assert rec2.lines() == ["last words"]  # only what the first runtime had not delivered
    assert rec2.lines("stderr") == ["last words"]
    # Reported once: a later daemon finds nothing to report.
    third, rec3, _ = docker_harness.runtime(docker_harness.factory(),
                                            server_uuid=runtime.server_uuid)
    assert await third.attach() is False
    assert rec3.facts == []


async def test_exit_while_no_daemon_ever_watched(docker_harness: DockerHarness):
    """No state file (e.g. a lost state dir): the whole log and the exit, once."""
    runtime, rec, data_dir = docker_harness.runtime()
    await runtime.start(docker_harness.spec(runtime, "sleep 0.5; echo a; echo b; exit 7",
                                            data_dir))
    await runtime.close()
    os.unlink(os.path.join(docker_harness.state_root, f"{runtime.server_uuid}.json"))
    await asyncio.sleep(1.5)
    again, rec2, _ = docker_harness.runtime(docker_harness.factory(),
                                            server_uuid=runtime.server_uuid)
    assert await again.attach() is True
    assert (await rec2.exited()).code == 7
    assert rec2.lines() == ["a", "b"]
    third, _, _ = docker_harness.runtime(docker_harness.factory(),
                                         server_uuid=runtime.server_uuid)
    assert await third.attach() is False


async def test_attach_without_a_container_is_false(docker_harness: DockerHarness):
    runtime, rec, _ = docker_harness.runtime()
    assert await runtime.attach() is False
    assert rec.facts == []


DAEMON_STUB = """
import asyncio, sys
from roost.runtimes.base import LaunchSpec
from roost.runtimes.docker import DockerRuntimeFactory

async def main(state_root, server_uuid, data_dir, invocation, image, run_id):
    factory = DockerRuntimeFactory(state_root=state_root,
                                   labels={"roost.test": "1", "roost.test.run": run_id})
    runtime = factory.for_server(server_uuid, data_dir, lambda f: print(f, flush=True))
    await runtime.start(LaunchSpec(server_uuid, invocation, {}, data_dir, image=image))
    await asyncio.sleep(3600)

asyncio.run(main(*sys.argv[1:]))
"""


async def test_server_survives_kill_9_of_the_daemon(docker_harness: DockerHarness):
    runtime, rec, data_dir = docker_harness.runtime()
    invocation = (f"(sleep 1.5; echo printed while the daemon was dead) &\n"
                  f"(for i in $(seq 1 400); do echo tick $i; sleep 0.005; done) &\n{FAKEGAME}")
    env = {**os.environ, "PYTHONPATH": REPO}
    daemon = await asyncio.create_subprocess_exec(
        sys.executable, "-c", DAEMON_STUB, docker_harness.state_root, runtime.server_uuid,
        data_dir, invocation, "~" + IMAGE, docker_harness.run_id,
        stdout=asyncio.subprocess.PIPE, env=env)
    stub_lines: list[str] = []
    try:
        async with asyncio.timeout(30):
            while True:
                line = (await daemon.stdout.readline()).decode()
                assert line, "the daemon stub ended"
                stub_lines.append(line)
                if "tick 100'" in line:
                    break
    finally:
        daemon.kill()  # kill -9 while the server prints
        await daemon.wait()
    stub_lines += [line.decode() for line in (await daemon.stdout.read()).splitlines()]
    await asyncio.sleep(2.5)
    assert await runtime.attach() is True
    assert rec.facts[0].reattached is True
    await rec.line("printed while the daemon was dead")
    await rec.line("tick 400")
    await runtime.write_stdin(b"say still here\n")
    await rec.line("[Server] still here")
    # Nothing lost: every tick reached one daemon or the other, in order. Ticks the dead
    # daemon got after its last cursor save may come again (at most one save interval).
    seen_by_stub = [int(line.split("tick ")[1].split("'")[0]) for line in stub_lines
                    if "'tick " in line]
    seen_after = [int(line.split()[1]) for line in rec.lines() if line.startswith("tick ")]
    assert seen_after == list(range(seen_after[0], 401))
    assert seen_after[0] <= seen_by_stub[-1] + 1
    assert rec.lines().count("printed while the daemon was dead") == 1
    await runtime.write_stdin(b"stop\n")
    assert (await rec.exited()).code == 0


async def test_start_while_running_is_refused(docker_harness: DockerHarness):
    runtime, rec, data_dir = await docker_harness.start()
    with pytest.raises(RuntimeError_, match="already running"):
        await runtime.start(docker_harness.spec(runtime, FAKEGAME, data_dir))
    await runtime.close()
    other, _, _ = docker_harness.runtime(docker_harness.factory(),
                                         server_uuid=runtime.server_uuid)
    with pytest.raises(RuntimeError_, match="still running"):
        await other.start(docker_harness.spec(other, FAKEGAME, data_dir))


async def test_restart_after_exit_recreates_the_container(docker_harness: DockerHarness):
    runtime, rec, data_dir = await docker_harness.start()
    first_id = runtime.container_id
    await runtime.write_stdin(b"say first life\n")
    await runtime.write_stdin(b"stop\n")
    await rec.exited()
    start = len(rec.facts)
    await runtime.start(docker_harness.spec(runtime, FAKEGAME, data_dir))
    await rec.wait_for(lambda f: isinstance(f, Output) and f.line.startswith("Done ("),
                       start=start)
    assert runtime.container_id != first_id
    assert [c["Id"] for c in await docker_harness.containers(runtime.server_uuid)] == \
        [runtime.container_id]
    assert "[Server] first life" not in [f.line for f in rec.facts[start:]
                                         if isinstance(f, Output)]
    await runtime.kill()
    await rec.wait_for(lambda f: isinstance(f, Exited), start=start)


async def test_destroy_kills_and_removes_container_and_state(docker_harness: DockerHarness):
    runtime, rec, _ = await docker_harness.start()
    await runtime.destroy()
    assert isinstance(rec.facts[-1], Exited)
    assert await docker_harness.containers(runtime.server_uuid) == []
    assert not os.path.exists(os.path.join(docker_harness.state_root,
                                           f"{runtime.server_uuid}.json"))
    again, rec2, _ = docker_harness.runtime(docker_harness.factory(),
                                            server_uuid=runtime.server_uuid)
    assert await again.attach() is False


async def test_destroy_of_a_detached_server(docker_harness: DockerHarness):
    runtime, rec, _ = await docker_harness.start()
    await runtime.close()
    again, rec2, _ = docker_harness.runtime(docker_harness.factory(),
                                            server_uuid=runtime.server_uuid)
    await again.destroy()
    assert await docker_harness.containers(runtime.server_uuid) == []


async def test_missing_local_image_is_never_pulled(docker_harness: DockerHarness):
    runtime, rec, data_dir = docker_harness.runtime()
    with pytest.raises(RuntimeError_, match="never pulled"):
        await runtime.start(docker_harness.spec(runtime, FAKEGAME, data_dir,
                                                image="~roost-test/missing:latest"))
    assert not [f for f in rec.facts if isinstance(f, Progress)]
    assert await docker_harness.containers(runtime.server_uuid) == []


async def test_pull_failure_is_an_error(docker_harness: DockerHarness):
    runtime, rec, data_dir = docker_harness.runtime()
    with pytest.raises(RuntimeError_, match="cannot pull image"):
        await runtime.start(docker_harness.spec(
            runtime, FAKEGAME, data_dir, image=f"127.0.0.1:{free_port()}/roost-test/none:1"))
    assert isinstance(rec.facts[0], Progress)


async def test_pull_reports_progress_then_runs(docker_harness: DockerHarness):
    marker = f"pulled {docker_harness.run_id}".encode()
    manifest, blobs = await asyncio.to_thread(
        image_as_registry_blobs, IMAGE, ("opt/roost/pulled.txt", marker))
    async with FakeRegistry(manifest, blobs) as registry:
        ref = f"127.0.0.1:{registry.port}/roost-test/pulled:{docker_harness.run_id}"
        try:
            runtime, rec, data_dir = await docker_harness.start(
                image=ref, invocation="cat /opt/roost/pulled.txt; echo", ready=None)
            progress = [f.line for f in rec.facts if isinstance(f, Progress)]
            assert progress[0] == f"Pulling image {ref}"
            assert any(line.endswith(": Pull complete") for line in progress), progress
            assert progress[-1] == f"Status: Downloaded newer image for {ref}"
            first = next(f for f in rec.facts if not isinstance(f, Progress))
            assert isinstance(first, Attached)
            assert (await docker_harness.inspect(runtime))["Config"]["Image"] == ref
            assert (await rec.exited()).code == 0
            assert rec.lines() == [marker.decode()]
            # A second start pulls again (a tag may have moved): nothing new to download.
            start = len(rec.facts)
            await runtime.start(docker_harness.spec(runtime, "true", data_dir, image=ref))
            again = [f.line for f in rec.facts[start:] if isinstance(f, Progress)]
            assert again[-1] == f"Status: Image is up to date for {ref}", again
            await rec.wait_for(lambda f: isinstance(f, Exited), start=start)
        finally:
            await remove_image(ref)
