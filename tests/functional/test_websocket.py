"""The console websocket against a real daemon on loopback, with real clients."""
import asyncio
import json
import time

import pytest
import websockets

from .harness import RawClient

from roost.protocol import events

pytestmark = pytest.mark.asyncio

# The whole suite runs on the process runtime and on the Docker runtime (conftest.py).
BOTH_RUNTIMES = True


async def started(node, c):
    await c.send("set state", "start")
    await c.expect_status("running", 15)


async def test_first_auth_sends_status_and_offline_stats_reauth_only_success(node):
    c = await node.client(node.demo, auth=False)
    await c.send("auth", node.token(node.demo))
    assert (await c.recv())["event"] == "auth success"
    assert await c.recv() == {"event": "status", "args": ["offline"]}
    stats = await c.recv()
    assert stats["event"] == "stats"
    doc = json.loads(stats["args"][0])
    assert doc["state"] == "offline" and doc["network"] == {"rx_bytes": 0, "tx_bytes": 0}
    await c.send("auth", node.token(node.demo))
    assert await c.recv() == {"event": "auth success"}
    assert await c.quiet(0.5) == []


async def test_power_console_command_stats_logs_and_stop_by_command(node):
    c = await node.client(node.demo)
    await c.send("set state", "start")
    await c.expect_status("starting")
    await c.expect_console('Done (')
    await c.expect_status("running")
    await c.send("send command", "say hello there")
    await c.expect_console("[Server] hello there")
    st = await c.expect(lambda e: e["event"] == "stats" and json.loads(e["args"][0])["memory_bytes"] > 0)
    doc = json.loads(st["args"][0])
    assert doc["state"] == "running" and doc["uptime"] > 0
    await c.send("send stats")
    assert json.loads((await c.expect(lambda e: e["event"] == "stats"))["args"][0])["state"] == "running"
    await c.send("send logs")
    replay = [e async for e in _take(c, 3)]
    assert all(e["event"] == "console output" for e in replay)
    await c.send("set state", "stop")
    await c.expect_status("stopping")
    await c.expect_console("Stopping server")
    await c.expect_status("offline")
    zero = await c.expect(lambda e: e["event"] == "stats")
    assert json.loads(zero["args"][0])["memory_bytes"] == 0


async def _take(c, n):
    for _ in range(n):
        yield await c.recv()


async def test_typed_stop_command_moves_to_stopping(node):
    c = await node.client(node.demo)
    await started(node, c)
    await c.send("send command", "stop")
    await c.expect_status("stopping")
    await c.expect_status("offline")
    # a clean exit after a typed stop is not a crash
    assert not any("crashed" in e.get("args", [""])[0] for e in await c.quiet(1.0) if e["event"] == "console output")


async def test_stop_by_signal(make_node):
    n = make_node()
    sid = n.add_server()
    doc_path = n.home / "servers" / f"{sid}.yml"
    import yaml
    doc = yaml.safe_load(doc_path.read_text())
    doc["process_configuration"]["stop"] = {"type": "signal", "value": "SIGINT"}
    doc_path.write_text(yaml.safe_dump(doc))
    n.start()
    c = await n.client(sid)
    await started(n, c)
    await c.send("set state", "stop")
    await c.expect_console("Received SIGINT, stopping server")
    await c.expect_status("offline")


async def test_kill_is_not_a_crash(node):
    c = await node.client(node.demo)
    await started(node, c)
    await c.send("set state", "kill")
    await c.expect_status("stopping")
    await c.expect_status("offline")
    later = await c.quiet(1.5)
    assert not any(e["event"] == "status" and e["args"] == ["starting"] for e in later)
    assert not any(events.CRASH_DETECTED in (e.get("args") or [""])[0] for e in later)


async def test_crash_restarts_then_guard_aborts(make_node):
    n = make_node({"system": {"crash_detection": {"timeout": 30}}})
    sid = n.add_server()
    n.start()
    c = await n.client(sid)
    await started(n, c)
    await c.send("send command", "crash 3")
    await c.expect_console(events.CRASH_DETECTED)
    await c.expect_console("Exit code: 3")
    await c.expect_console("Out of memory: false")
    await c.expect_status("starting")
    await c.expect_status("running", 15)
    await c.send("send command", "crash 4")
    await c.expect_console("Exit code: 4")
    await c.expect_console("Aborting automatic restart, last crash occurred less than 30 seconds ago.")
    assert not any(e["event"] == "status" and e["args"] == ["starting"] for e in await c.quiet(1.0))


async def test_power_lock_contention(node):
    c = await node.client(node.demo, token=node.token(node.demo, permissions=["*"]))
    await c.send("set state", "start")
    await c.send("set state", "start")
    err = await c.expect(lambda e: e["event"] == "daemon error")
    assert events.POWER_LOCKED in err["args"][0]  # shown to everyone, not only admins
    await c.expect_status("running")


async def test_origin_rules(make_node):
    n = make_node({"allowed_origins": ["https://allowed.example"], "remote": "https://panel.example"})
    sid = n.add_server()
    n.start()
    for origin in ("https://panel.example", "https://allowed.example"):
        c = await n.client(sid, origin=origin)
        await c.close()
    for origin in ("https://evil.example", "https://panel.example/", "http://panel.example", None):
        with pytest.raises(websockets.InvalidStatus) as e:
            await n.client(sid, origin=origin, auth=False)
        assert e.value.response.status_code == 403


async def test_missing_origin_accepted_with_star(node):
    c = await node.client(node.demo, origin=None)
    await c.close()


async def test_unknown_server_404_and_security_headers(node):
    with pytest.raises(websockets.InvalidStatus) as e:
        await node.client("00000000-0000-0000-0000-000000000000", auth=False)
    assert e.value.response.status_code == 404
    assert json.loads(e.value.response.body) == {"error": "The requested resource does not exist on this instance."}
    st, _, headers = await node.http("GET", "/api/system")
    assert headers["Content-Security-Policy"] == "default-src 'self'" and headers["X-Frame-Options"] == "DENY"


async def test_31st_socket_refused(node):
    clients = [await node.client(node.demo, auth=False) for _ in range(30)]
    with pytest.raises(websockets.InvalidStatus) as e:
        await node.client(node.demo, auth=False)
    assert e.value.response.status_code == 400
    assert json.loads(e.value.response.body) == {"error": "Too many open websocket connections."}
    await clients[0].close()
    await asyncio.sleep(0.3)
    (await node.client(node.demo, auth=False))
    for c in clients[1:]:
        await c.close()


async def test_oversized_message_closes_1009(node):
    c = await node.client(node.demo)
    await c.ws.send(json.dumps({"event": "send command", "args": ["x" * 5000]}))
    with pytest.raises(websockets.ConnectionClosed):
        await c.recv(5)
    assert c.ws.close_code == 1009


async def test_garbage_and_binary_are_ignored(node):
    c = await node.client(node.demo)
    await c.ws.send("{nope")
    await c.ws.send(b"\x00\x01")
    await c.ws.send(json.dumps({"event": "nonsense"}))
    await c.send("send stats")
    assert (await c.recv())["event"] == "stats"


async def test_token_expiring_expired_and_reauth_on_same_socket(make_node):
    n = make_node({"roost": {"websocket": {"expiring_notice_s": 2, "expired_grace_s": 30}}})
    sid = n.add_server()
    n.start()
    tok = n.token(sid, ttl=4)
    exp = json.loads(__import__("base64").urlsafe_b64decode(tok.split(".")[1] + "==").decode())["exp"]
    c = await n.client(sid, token=tok)
    await c.expect(lambda e: e["event"] == "token expiring", 6)
    assert exp - 2 - 0.3 <= time.time() <= exp - 2 + 0.5
    await c.expect(lambda e: e["event"] == "token expired", 6)
    assert exp - 0.3 <= time.time() <= exp + 0.5
    await c.send("send stats")
    assert (await c.recv()) == {"event": "jwt error", "args": [events.JWT_EXPIRED]}
    await c.send("auth", n.token(sid))
    assert await c.recv() == {"event": "auth success"}
    await c.send("send stats")
    assert (await c.recv())["event"] == "stats"


async def test_expired_socket_closed_after_grace(make_node):
    n = make_node({"roost": {"websocket": {"expiring_notice_s": 1, "expired_grace_s": 1}}})
    sid = n.add_server()
    n.start()
    c = await n.client(sid, token=n.token(sid, ttl=2))
    with pytest.raises(websockets.ConnectionClosed):
        while True:
            await c.recv(6)
    assert c.ws.close_code == 4001


async def test_auth_timeout_closes(make_node):
    n = make_node({"roost": {"websocket": {"auth_timeout_s": 1}}})
    sid = n.add_server()
    n.start()
    c = await n.client(sid, auth=False)
    with pytest.raises(websockets.ConnectionClosed):
        await c.recv(5)
    assert c.ws.close_code == 4001


async def test_jwt_errors_on_socket(node):
    c = await node.client(node.demo, auth=False)
    await c.send("send stats")
    assert await c.recv() == {"event": "jwt error", "args": [events.JWT_NO_JWT]}
    await c.send("auth", "not-a-token")
    assert await c.recv() == {"event": "jwt error", "args": [events.JWT_MALFORMED]}
    other = "11111111-1111-1111-1111-111111111111"
    await asyncio.sleep(5.1)  # the auth bucket: burst 2, one per 5 s
    await c.send("auth", node.token(other))
    assert await c.recv() == {"event": "jwt error", "args": [events.JWT_SERVER_MISMATCH]}


async def test_deny_and_deauthorize_live_sockets(node):
    victim = await node.client(node.demo, token=node.token(node.demo, user_id=5))
    bystander = await node.client(node.demo, token=node.token(node.demo, user_id=6))
    from roost.tokenservice.issuer import websocket_jti
    await asyncio.sleep(1.1)  # deny applies to tokens issued before now (integer iat)
    st, _, _ = await node.http("POST", f"/api/servers/{node.demo}/ws/deny",
                               json_body={"jtis": [websocket_jti(5, node.demo)]})
    assert st == 204
    assert await victim.recv() == {"event": "jwt error", "args": [events.JWT_DENYLISTED]}
    await victim.send("send stats")
    assert await victim.recv() == {"event": "jwt error", "args": [events.JWT_DENYLISTED]}
    await bystander.send("send stats")
    assert (await bystander.recv())["event"] == "stats"
    await asyncio.sleep(1.1)
    await victim.send("auth", node.token(node.demo, user_id=5))
    assert await victim.recv() == {"event": "auth success"}
    user6 = "00000000-0000-0000-0000-000000000006"
    st, _, _ = await node.http("POST", "/api/deauthorize-user", json_body={"user": user6, "servers": [node.demo]})
    assert st == 204
    with pytest.raises(websockets.ConnectionClosed):
        while True:
            await bystander.recv(5)
    await victim.send("send stats")
    assert (await victim.recv())["event"] == "stats"


async def test_send_logs_while_offline_replays_last_run(node):
    c = await node.client(node.demo)
    await started(node, c)
    await c.send("send command", "say last words")
    await c.expect_console("[Server] last words")
    await c.send("set state", "stop")
    await c.expect_status("offline")
    fresh = await node.client(node.demo)
    await fresh.send("send logs")
    got = await fresh.quiet(1.0)
    lines = [e["args"][0] for e in got if e["event"] == "console output"]
    assert any("last words" in ln for ln in lines)
    assert lines[-1].startswith("Stopping server") or "Stopping server" in lines[-1]
    assert not any("Daemon]" in ln for ln in lines)  # only the server's own output


async def test_console_throttle(make_node):
    n = make_node({"throttles": {"lines": 200, "line_reset_interval": 100}})
    sid = n.add_server()
    n.start()
    c = await n.client(sid)
    await started(n, c)
    await c.send("send command", "burst 5000")
    got = await c.quiet(2.0)
    lines = [e["args"][0] for e in got if e["event"] == "console output"]
    assert any(events.THROTTLING in ln for ln in lines)
    assert sum(1 for ln in lines if "burst line" in ln) < 5000
    assert sum(events.THROTTLING in ln for ln in lines) == 1
    # the log kept everything
    st, body, _ = await n.http("GET", f"/api/servers/{sid}/logs?size=1")
    assert body["data"] == ["burst line 5000 of 5000"]


async def test_stalled_client_does_not_delay_others_and_is_told_what_it_skipped(node):
    # never reads until we say so; a small receive buffer so kernel autotuning can't hide it
    stalled = await RawClient.connect(node, node.demo, rcvbuf=4096)
    stalled.send("auth", node.token(node.demo))
    live = await node.client(node.demo)
    await started(node, live)
    # ~16 MB of console: more than the stalled socket's buffers plus its queue (8 MiB)
    await live.send("send command", "burst 1000 16000")
    await live.expect_console("burst line 1000 of 1000", 20)
    t0 = time.monotonic()
    await live.send("send command", "say ping")
    await live.expect_console("[Server] ping", 5)
    assert time.monotonic() - t0 < 1.0
    assert not any("console lines skipped" in (e.get("args") or [""])[0] for e in live.events)
    got_frames = await stalled.read_for(3.0)  # now it reads everything
    await live.send("send command", "say pong")
    got_frames += await stalled.read_for(1.0)
    console = [e["args"][0] for e in got_frames if e["event"] == "console output"]
    notices = [ln for ln in console if "console lines skipped" in ln]
    skipped = sum(int(ln.split("[roost] ")[1].split()[0]) for ln in notices)
    numbers = [int(ln.split()[2]) for ln in console if ln.startswith("burst line")]
    got = len(numbers)
    assert len(set(numbers)) == got and numbers == sorted(numbers)  # no duplicates, in order
    assert notices and skipped > 0, (len(got_frames), got)
    pinged = sum(1 for ln in console if "[Server] ping" in ln)
    # every line (1000 burst lines and the ping reply) either arrived or was counted as skipped
    assert got + pinged + skipped == 1001
    assert any("[Server] pong" in ln for ln in console)  # and it carries on normally
    stalled.close()


async def test_deleted_then_close_1001(node):
    c = await node.client(node.demo)
    st, _, _ = await node.http("DELETE", f"/api/servers/{node.demo}")
    assert st == 204
    await c.expect(lambda e: e["event"] == "deleted")
    with pytest.raises(websockets.ConnectionClosed):
        await c.recv(5)
    assert c.ws.close_code == 1001
    st, _, _ = await node.http("GET", f"/api/servers/{node.demo}")
    assert st == 404


async def test_roost_extension_sequence_numbers_and_resume(node):
    c = await node.client(node.demo, query="?roost=1")
    await started(node, c)
    await c.send("send command", "say one")
    ev = await c.expect_console("[Server] one")
    seq = ev["seq"]
    await c.send("send command", "say two")
    await c.expect_console("[Server] two")
    await c.close()
    c2 = await node.client(node.demo, query="?roost=1")
    await c2.send("send logs", str(seq))
    again = await c2.expect_console("[Server] two")
    assert again["seq"] > seq
    plain = await node.client(node.demo)
    await plain.send("send command", "say three")
    ev = await plain.expect_console("[Server] three")
    assert "seq" not in ev


async def test_stop_timeout_kills_the_group(make_node):
    n = make_node({"roost": {"stop_timeout_s": 1.5}})
    sid = n.add_server()
    import yaml
    path = n.home / "servers" / f"{sid}.yml"
    doc = yaml.safe_load(path.read_text())
    doc["process_configuration"]["stop"] = {"type": "command", "value": "say not stopping"}  # ignored stop
    path.write_text(yaml.safe_dump(doc))
    n.start()
    c = await n.client(sid)
    await started(n, c)
    t0 = time.monotonic()
    await c.send("set state", "stop")
    await c.expect_console("[Server] not stopping")
    await c.expect_console("did not stop in time", 5)
    await c.expect_status("offline", 5)
    assert 1.4 < time.monotonic() - t0 < 5


async def test_out_of_memory_is_reported(make_node):
    n = make_node({"system": {"crash_detection": {"enabled": True}}})
    sid = n.add_server(build={"memory_limit": 64, "swap": 0, "cpu_limit": 0, "oom_disabled": False})
    n.start()
    c = await n.client(sid)
    await started(n, c)
    _, view, _ = await n.http("GET", f"/api/servers/{sid}")
    if view["limits_note"]:
        pytest.skip(f"memory limits cannot be enforced here: {view['limits_note']}")
    await c.send("send command", "alloc 256")
    await c.expect_console(events.CRASH_DETECTED, 15)
    await c.expect_console("Out of memory: true")
