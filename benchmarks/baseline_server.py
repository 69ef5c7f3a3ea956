"""The baseline for benchmarks/fanout.py: the obvious aiohttp console broadcast.

Spawns the firehose, reads its stdout line by line, and sends each line as the same
`console output` frame roost sends, with `await ws.send_str(frame)` to each socket in turn.
A client sends `auth` first (any token is accepted) and gets `auth success`.
`POST /command {"line": "..."}` writes a line to the firehose's stdin.
"""
import argparse
import asyncio
import json
import os
import sys

from aiohttp import WSMsgType, web

dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode  # as roost's events.py


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--firehose", required=True)
    args = p.parse_args()
    clients: set[web.WebSocketResponse] = set()
    proc = await asyncio.create_subprocess_exec(
        "python3", "-u", os.path.basename(args.firehose), cwd=os.path.dirname(os.path.abspath(args.firehose)),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)

    async def broadcast() -> None:
        while raw := await proc.stdout.readline():
            frame = dumps({"event": "console output", "args": [raw.decode("utf-8", "replace").rstrip("\r\n")]})
            for ws in list(clients):
                try:
                    await ws.send_str(frame)
                except Exception:  # the peer went away
                    clients.discard(ws)

    async def websocket(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        try:
            async for msg in ws:
                if msg.type is WSMsgType.TEXT and json.loads(msg.data).get("event") == "auth":
                    await ws.send_str(dumps({"event": "auth success"}))
                    clients.add(ws)
        finally:
            clients.discard(ws)
        return ws

    async def command(request: web.Request) -> web.Response:
        proc.stdin.write((await request.json())["line"].encode() + b"\n")
        await proc.stdin.drain()
        return web.Response(status=204)

    app = web.Application()
    app.add_routes([web.get("/ws", websocket), web.post("/command", command)])
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", args.port).start()
    print("baseline listening", flush=True)
    pump = asyncio.create_task(broadcast())
    try:
        await proc.wait()
    finally:
        pump.cancel()
        await runner.cleanup()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
