"""The same console through Node's `ws` package (installed by the test command from npm)."""
import asyncio
import json
import pathlib
import shutil

import pytest

NODE_DIR = pathlib.Path(__file__).resolve().parents[1] / "node"

pytestmark = pytest.mark.asyncio


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed (scripts/test.sh installs it)")
async def test_node_ws_client_drives_a_server(node):
    assert (NODE_DIR / "node_modules" / "ws").exists(), "run scripts/test.sh (npm install in tests/node)"
    proc = await asyncio.create_subprocess_exec(
        "node", str(NODE_DIR / "console_client.js"), node.ws_url(node.demo), node.token(node.demo), "http://panel.example",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    result = json.loads(out.decode().strip().splitlines()[-1])
    assert result["ok"], (result, err.decode())
    assert {"auth success", "status", "console output"} <= set(result["events"])
