"""Real servers from Debian (workloads.md) driven through the daemon and the websocket."""
import asyncio
import json
import os
import shutil
import uuid as uuidlib

import pytest

from roost.protocol import events

from .harness import free_port

pytestmark = pytest.mark.asyncio

OPENTTD = "/usr/games/openttd"
REDIS = shutil.which("redis-server")
REDIS_BENCHMARK = shutil.which("redis-benchmark")

# The config of workloads.md (local game, loopback only), shared with the runtime tests.
from .runtimes.test_process_runtime import OPENTTD_CFG  # noqa: E402


def definition(sid: str, invocation: str, *, done: list[str], stop: dict, port: int, env: dict | None = None) -> dict:
    return {
        "settings": {
            "uuid": sid,
            "meta": {"name": "real server"},
            "invocation": invocation,
            "environment": env or {},
            "allocations": {"default": {"ip": "127.0.0.1", "port": port}},
            "build": {"memory_limit": 1024, "swap": 0, "cpu_limit": 0, "oom_disabled": False},
        },
        "process_configuration": {"startup": {"done": done, "strip_ansi": False}, "stop": stop},
    }


@pytest.mark.skipif(not os.path.exists(OPENTTD), reason="openttd is not installed (scripts/test.sh installs it)")
async def test_openttd_start_ready_on_stderr_command_and_quit(make_node):
    n = make_node()
    sid = str(uuidlib.uuid4())
    port = free_port()
    data = n.home / "volumes" / sid
    data.mkdir(parents=True)
    (data / "openttd.cfg").write_text(OPENTTD_CFG.format(port=port))
    n.add_server(definition(
        sid, f"{OPENTTD} -D 127.0.0.1:{{{{SERVER_PORT}}}} -c openttd.cfg -x",
        done=["Map generated, starting game"], stop={"type": "command", "value": "quit"}, port=port))
    n.start()
    c = await n.client(sid)
    await c.send("set state", "start")
    await c.expect_status("starting")
    await c.expect_console("Map generated, starting game", 30)  # printed on stderr
    await c.expect_status("running")
    await c.send("send command", "getdate")
    await c.expect_console("Date: ")  # the reply comes on stdout
    st = await c.expect(lambda e: e["event"] == "stats" and json.loads(e["args"][0])["memory_bytes"] > 10_000_000)
    assert json.loads(st["args"][0])["memory_limit_bytes"] in (0, 1024 * 1024 * 1024)
    await c.send("set state", "stop")
    await c.expect_status("stopping")
    await c.expect_status("offline", 15)
    later = await c.quiet(0.5)
    assert not any(events.CRASH_DETECTED in (e.get("args") or [""])[0] for e in later)


@pytest.mark.skipif(REDIS is None or REDIS_BENCHMARK is None, reason="redis-server is not installed (scripts/test.sh installs it)")
async def test_redis_stops_by_signal_and_its_flood_is_throttled(make_node):
    n = make_node({"throttles": {"lines": 500, "line_reset_interval": 100}})
    sid = str(uuidlib.uuid4())
    port = free_port()
    (n.home / "volumes" / sid).mkdir(parents=True)
    n.add_server(definition(
        sid, f"{REDIS} --port {{{{SERVER_PORT}}}} --bind 127.0.0.1 --save '' --appendonly no --dir . --loglevel verbose",
        done=["Ready to accept connections"], stop={"type": "signal", "value": "SIGTERM"}, port=port))
    n.start()
    c = await n.client(sid)
    await c.send("set state", "start")
    await c.expect_status("running", 15)
    bench = await asyncio.create_subprocess_exec(
        REDIS_BENCHMARK, "-p", str(port), "-n", "20000", "-c", "20", "-k", "0", "-t", "ping", "-q",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    await asyncio.wait_for(bench.wait(), 60)
    await c.expect_console(events.THROTTLING, 10)
    await c.send("set state", "stop")
    await c.expect_status("stopping", 15)
    await c.expect_status("offline", 15)
    st, logs, _ = await n.http("GET", f"/api/servers/{sid}/logs?size=100")
    assert any("ready to exit, bye bye" in ln for ln in logs["data"])
