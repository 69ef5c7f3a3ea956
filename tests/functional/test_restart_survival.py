"""Servers survive the daemon: kill -9, crash while down, host reboot, clean shutdown."""
import asyncio
import json
import os
import re
import signal
import subprocess
import time

import pytest

from roost.protocol import events

pytestmark = pytest.mark.asyncio

# The whole suite runs on the process runtime and on the Docker runtime (conftest.py).
BOTH_RUNTIMES = True


async def wait_for_line(node, sid, text: str, timeout: float = 20.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        lines = await all_lines(node, sid, settle=0.7)
        if any(text in e["args"][0] for e in lines):
            return lines
        assert time.monotonic() < deadline, f"{text!r} never logged"


async def all_lines(node, sid, settle: float = 1.0) -> list[dict]:
    """Every console line the daemon has for the server, with sequence numbers."""
    c = await node.client(sid, query="?roost=1")
    await c.send("send logs", "0")
    got: list[dict] = []
    deadline = time.monotonic() + 20
    quiet_until = time.monotonic() + settle
    while time.monotonic() < min(deadline, quiet_until):  # until no console line for `settle` s
        try:
            ev = await c.recv(max(0.01, quiet_until - time.monotonic()))
        except (TimeoutError, asyncio.TimeoutError):
            break
        got.append(ev)
        if ev["event"] == "console output":
            quiet_until = time.monotonic() + settle
    await c.close()
    return [e for e in got if e["event"] == "console output"]


def game_pid(lines: list[dict]) -> int:
    for e in reversed(lines):
        m = re.search(r"\(pid (\d+)\)", e["args"][0])
        if m:
            return int(m.group(1))
    raise AssertionError("no pid line")


async def test_kill_9_while_printing_loses_nothing_and_keeps_the_process(make_node):
    n = make_node({"roost": {"shutdown_stops_servers": False}})
    sid = n.add_server()
    n.start()
    c = await n.client(sid)
    await c.send("set state", "start")
    await c.expect_status("running")
    await c.send("send command", "tick 600 10")
    await c.expect_console("tick 60 of 600")
    pid_before = game_pid(await all_lines(n, sid))
    n.kill9()
    await asyncio.sleep(0.7)  # the game keeps printing while no daemon runs
    n.start()
    c = await n.client(sid, auth=False)
    await c.send("auth", n.token(sid))
    await c.expect(lambda e: e["event"] == "auth success")
    assert await c.recv() == {"event": "status", "args": ["running"]}
    lines = await wait_for_line(n, sid, "tick 600 of 600")
    ticks = [int(e["args"][0].split()[1]) for e in lines if e["args"][0].startswith("tick ")]
    assert ticks == list(range(1, 601))  # every line once, in order, across the kill
    seqs = [e["seq"] for e in lines]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # sequence numbers continuous
    await c.send("send command", "list")  # the same process answers
    await c.expect_console("players online")
    assert os.path.exists(f"/proc/{pid_before}")
    await c.send("send command", "crash 5")  # and a later crash is still detected
    await c.expect_console("Exit code: 5")
    await c.expect_status("running", 15)


async def test_crash_while_the_daemon_is_down_is_detected_on_return(make_node):
    n = make_node({"roost": {"shutdown_stops_servers": False}})
    sid = n.add_server()
    n.start()
    c = await n.client(sid)
    await c.send("set state", "start")
    await c.expect_status("running")
    await c.send("send command", "say last words")
    await c.expect_console("[Server] last words")
    pid = game_pid(await all_lines(n, sid))
    n.kill9()
    os.kill(pid, signal.SIGKILL)
    await asyncio.sleep(0.5)
    n.start()  # the crash is found at boot, before any client is back: it is in the log
    lines = [e["args"][0] for e in await wait_for_line(n, sid, "Exit code: 137")]
    assert any(events.CRASH_DETECTED in ln for ln in lines)
    assert sum("last words" in ln for ln in lines) == 1
    for _ in range(100):
        _, view, _ = await n.http("GET", f"/api/servers/{sid}")
        if view["state"] == "running":
            break
        await asyncio.sleep(0.1)
    assert view["state"] == "running"  # restarted automatically
    assert game_pid(await all_lines(n, sid)) != pid


async def test_host_reboot_starts_servers_that_were_running(make_node):
    n = make_node({"roost": {"shutdown_stops_servers": False}})
    running = n.add_server(name="was running")
    idle = n.add_server(name="was offline")
    n.start()
    c = await n.client(running)
    await c.send("set state", "start")
    await c.expect_status("running")
    pid = game_pid(await all_lines(n, running))
    n.kill9()
    # a reboot: every process is gone, nothing could record an exit
    subprocess.run(["pkill", "-9", "-f", str(n.home)], check=False)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    await asyncio.sleep(0.3)
    n.start()
    for _ in range(100):
        _, view, _ = await n.http("GET", f"/api/servers/{running}")
        if view["state"] == "running":
            break
        await asyncio.sleep(0.1)
    assert view["state"] == "running"
    _, other, _ = await n.http("GET", f"/api/servers/{idle}")
    assert other["state"] == "offline"
    assert game_pid(await all_lines(n, running)) != pid


async def test_clean_shutdown_leaves_servers_running_and_resumes_exactly(make_node):
    n = make_node({"roost": {"shutdown_stops_servers": False}})
    sid = n.add_server()
    n.start()
    c = await n.client(sid)
    await c.send("set state", "start")
    await c.expect_status("running")
    await c.send("send command", "tick 100 10")
    await c.expect_console("tick 20 of 100")
    pid = game_pid(await all_lines(n, sid))
    n.stop()  # SIGTERM
    assert os.path.exists(f"/proc/{pid}")
    n.start()
    lines = await wait_for_line(n, sid, "tick 100 of 100")
    ticks = [int(e["args"][0].split()[1]) for e in lines if e["args"][0].startswith("tick ")]
    assert ticks == list(range(1, 101))
