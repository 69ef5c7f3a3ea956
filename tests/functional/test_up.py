"""`roost up` from a fresh home directory, then again on the same one."""
import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import websockets

from .harness import free_port

pytestmark = pytest.mark.asyncio


async def run_up(home: Path, port: int) -> tuple[asyncio.subprocess.Process, dict]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "roost", "up", "--home", str(home), "--port", str(port),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, start_new_session=True)
    info: dict = {}
    deadline = time.monotonic() + 30
    while "token" not in info:
        line = (await asyncio.wait_for(proc.stdout.readline(), max(0.1, deadline - time.monotonic()))).decode()
        assert line, "roost up exited early"
        for key, pattern in (("url", r"console URL:\s+(\S+)"), ("token", r"token \(1 h\):\s+(\S+)"),
                             ("server", r"demo server:\s+(\S+)")):
            m = re.search(pattern, line)
            if m:
                info[key] = m.group(1)
    return proc, info


async def stop(proc) -> None:
    proc.send_signal(signal.SIGINT)
    await asyncio.wait_for(proc.wait(), 30)


async def test_up_fresh_then_again(tmp_path):
    home = Path(tempfile.mkdtemp(prefix="ru", dir="/tmp"))
    port = free_port()
    try:
        proc, first = await run_up(home, port)
        try:
            async with websockets.connect(first["url"]) as ws:
                await ws.send(json.dumps({"event": "auth", "args": [first["token"]]}))
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
            assert second["server"] == first["server"] and second["url"] == first["url"]
            async with websockets.connect(second["url"]) as ws:
                await ws.send(json.dumps({"event": "auth", "args": [first["token"]]}))  # same node token
                assert json.loads(await asyncio.wait_for(ws.recv(), 10)) == {"event": "auth success"}
        finally:
            await stop(proc)
    finally:
        subprocess.run(["pkill", "-9", "-f", str(home)], check=False)
        subprocess.run(["rm", "-rf", str(home)], check=False)
