"""Random input at the daemon's edges: websocket frames and REST bodies (bounded, seeded).

The sans-I/O session is property-tested with hypothesis in tests/unit; here random documents
go through the real aiohttp stack to catch what only the I/O layers can get wrong.
"""
import json
import random

import pytest

pytestmark = pytest.mark.asyncio


def random_json(rnd: random.Random, depth: int = 0):
    kinds = ["null", "bool", "int", "float", "str"] + (["list", "dict"] if depth < 3 else [])
    k = rnd.choice(kinds)
    if k == "null":
        return None
    if k == "bool":
        return rnd.random() < 0.5
    if k == "int":
        return rnd.choice([0, -1, 1, 2**63, rnd.randint(-10**6, 10**6)])
    if k == "float":
        return rnd.uniform(-1e9, 1e9)
    if k == "str":
        return rnd.choice(["", "start", "kill", "say hi", "\x00\udcff".encode("utf-8", "surrogatepass").decode("utf-8", "replace"),
                           "é" * rnd.randint(0, 50), "x" * rnd.randint(0, 300)])
    if k == "list":
        return [random_json(rnd, depth + 1) for _ in range(rnd.randint(0, 4))]
    keys = ["event", "args", "action", "commands", "jtis", "user", "servers", "wait_seconds", "x"]
    return {rnd.choice(keys): random_json(rnd, depth + 1) for _ in range(rnd.randint(0, 4))}


async def test_random_websocket_frames_never_break_the_socket(node):
    rnd = random.Random(1234)
    c = await node.client(node.demo)
    for i in range(300):
        doc = random_json(rnd)
        if rnd.random() < 0.5:
            doc = {"event": rnd.choice(["send logs", "send stats", "set state", "auth", "zzz"]),
                   "args": random_json(rnd)}
        text = json.dumps(doc) if rnd.random() < 0.9 else json.dumps(doc)[: rnd.randint(0, 20)]
        if len(text.encode()) < 4000:
            await c.ws.send(text)
    await c.quiet(6)  # let the rate limiter's buckets refill
    await c.send("send stats")
    ev = await c.expect(lambda e: e["event"] == "stats", 10)
    assert json.loads(ev["args"][0])["state"] in ("offline", "starting", "running", "stopping")


async def test_random_rest_bodies_get_4xx_never_500_and_change_nothing(node):
    rnd = random.Random(99)
    paths = [f"/api/servers/{node.demo}/power", f"/api/servers/{node.demo}/commands",
             f"/api/servers/{node.demo}/ws/deny", "/api/deauthorize-user"]
    for i in range(200):
        path = rnd.choice(paths)
        body = random_json(rnd)
        st, resp, _ = await node.http("POST", path, json_body=body)
        assert st < 500, (path, body, st, resp)
        if st == 422:
            assert isinstance(resp, dict) and resp.get("error")
    _, view, _ = await node.http("GET", f"/api/servers/{node.demo}")
    assert view["state"] in ("offline", "starting", "running", "stopping")
