"""`roost up` from a fresh home directory, then again on the same one, through the public
path: client API key → server → websocket token → socket."""
import asyncio
import json
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import pytest
import websockets

from .harness import free_port

pytestmark = pytest.mark.asyncio


async def run_up(home: Path, port: int) -> tuple[asyncio.subprocess.Process, dict]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "roost", "up", "--home", str(home), "--port", str(port), "--node-port", str(free_port()),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, start_new_session=True)
    info: dict = {}
    deadline = time.monotonic() + 40
    while "console" not in info:
        line = (await asyncio.wait_for(proc.stdout.readline(), max(0.1, deadline - time.monotonic()))).decode()
        assert line, "roost up exited early"
        for key, pattern in (("panel", r"panel \(client API\):\s+(\S+)"), ("key", r"API key:\s+(ptlc_\S+)"),
                             ("server", r"demo server:\s+(\S+)"), ("console", r"open its console:\s+(roost console .+)")):
            m = re.search(pattern, line)
            if m:
                info[key] = m.group(1).strip()
    return proc, info


async def stop(proc) -> None:
    proc.send_signal(signal.SIGINT)
    await asyncio.wait_for(proc.wait(), 30)


async def socket_for(info: dict) -> tuple[str, str]:
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {info['key']}", "Accept": "application/json"}) as s:
        async with s.get(f"{info['panel']}/servers/{info['server']}/websocket") as r:
            assert r.status == 200, await r.text()
            data = (await r.json())["data"]
    return data["socket"], data["token"]


async def test_up_fresh_then_again():
    home = Path(tempfile.mkdtemp(prefix="ru", dir="/tmp"))
    port = free_port()
    try:
        proc, first = await run_up(home, port)
        try:
            assert first["console"].startswith(f"roost console {first['server']}")
            url, token = await socket_for(first)
            async with websockets.connect(url) as ws:
                await ws.send(json.dumps({"event": "auth", "args": [token]}))
                seen = []
                deadline = time.monotonic() + 20
                while not any(e == {"event": "status", "args": ["running"]} for e in seen):
                    seen.append(json.loads(await asyncio.wait_for(ws.recv(), deadline - time.monotonic())))
                await ws.send(json.dumps({"event": "send command", "args": ["say from the up test"]}))
                while True:
                    e = json.loads(await asyncio.wait_for(ws.recv(), 10))
                    if e["event"] == "console output" and "from the up test" in e["args"][0]:
                        break
        finally:
            await stop(proc)
        # Ctrl-C stopped the demo server by its stop command
        log = next((home / "console").glob("*.log")).read_text()
        assert "Stopping server" in log
        proc, second = await run_up(home, port)
        try:
            assert second["server"] == first["server"] and second["key"] == first["key"]
            url, token = await socket_for(second)
            async with websockets.connect(url) as ws:
                await ws.send(json.dumps({"event": "auth", "args": [token]}))
                assert json.loads(await asyncio.wait_for(ws.recv(), 10)) == {"event": "auth success"}
        finally:
            await stop(proc)
    finally:
        subprocess.run(["pkill", "-9", "-f", str(home)], check=False)
        subprocess.run(["rm", "-rf", str(home)], check=False)
