"""`roost console` through a pty, against a real node behind the real token service."""
from __future__ import annotations

import re
import subprocess
import time


def status_line(c) -> str:
    """The newest status line drawn (the footer's first row)."""
    rows = [r for r in c.text().split("\n") if " | " in r and ("live" in r or "reconnect" in r or "connect" in r)]
    return rows[-1] if rows else ""


def test_output_command_and_power(make_stack):
    stack = make_stack()
    c = stack.console()
    c.expect(r"connected to Demo server")
    c.expect(r"offline")
    c.send_line("/start")
    c.expect(r"Done \(")  # the game's own output
    c.expect(r"\| running \|")
    c.send_line("say hello")
    c.expect(r"\[Server\] hello")
    c.send_line("crash 3")  # daemon lines are coloured: the escapes reach the terminal untouched
    c.expect(r"Exit code: 3")
    assert "\x1b[33m\x1b[1m[roost Daemon]:\x1b[39m Exit code: 3\x1b[0m" in c.raw
    c.expect(r"\| running \|")  # restarted after the crash
    c.expect(r"\| cpu [0-9.]+% \| mem [0-9.]+ [KMG]iB / 256\.0 MiB \| up \d+")
    c.send_line("/stop")
    c.expect(r"\| stopping \|")
    c.expect(r"\| offline \|")
    c.send_line("/quit")
    assert c.wait_exit() == 0


def ticks(c, total: int) -> list[int]:
    return [int(m.group(1)) for m in re.finditer(rf"^tick (\d+) of {total}$", c.text(), re.M)]


def start_running(c) -> None:
    c.expect(r"connected to Demo server")
    c.send_line("/start")
    c.expect(r"\| running \|")


def test_token_renewal_keeps_the_same_socket(make_stack):
    # 3 s tokens, `token expiring` 1 s before the end: a renewal every ~2-3 s on one socket.
    stack = make_stack(token_ttl_s=3, node_overrides={"roost": {"websocket": {"expiring_notice_s": 1,
                                                                              "expired_grace_s": 30}}})
    c = stack.console("-v")
    start_running(c)
    c.send_line("tick 48 250")  # 12 s of output
    c.expect(r"tick 48 of 48", timeout=30)
    c.drain(0.5)
    assert ticks(c, 48) == list(range(1, 49))  # every line once, in order
    text = c.text()
    assert text.count("token renewed") >= 3, text[-3000:]
    assert "reconnect" not in text and "connection lost" not in text  # never a new socket
    c.send_line("say still attached")
    c.expect(r"\[Server\] still attached")
    c.send_line("/quit")
    assert c.wait_exit() == 0


def test_reconnects_after_daemon_restarts_without_duplicates(make_stack):
    stack = make_stack(node_overrides={"roost": {"shutdown_stops_servers": False}})
    c = stack.console()
    start_running(c)
    c.send_line("tick 120 100")  # 12 s of output
    c.expect(r"tick 15 of 120")
    stack.node.kill9()  # a network drop: the socket just dies
    c.expect(r"reconnecting in")
    time.sleep(1.0)
    stack.node.start()
    c.expect(r"reconnected", timeout=30)
    c.expect(r"tick 60 of 120", timeout=30)
    stack.node.stop()  # a graceful restart: close code 1012
    c.expect(r"\(1012")
    stack.node.start()
    c.expect(r"reconnected", timeout=30)
    c.expect(r"tick 120 of 120", timeout=30)
    c.drain(0.5)
    assert ticks(c, 120) == list(range(1, 121))  # nothing twice, nothing lost
    c.expect(r"\| running \| .*\| live")
    c.send_line("say after restarts")
    c.expect(r"\[Server\] after restarts")
    c.send_line("/quit")
    assert c.wait_exit() == 0


def test_bad_key_unknown_server(make_stack):
    stack = make_stack()
    c = stack.console(key="ptlc_" + "x" * 43)
    assert c.wait_exit() == 3
    assert "refused the API key (401" in c.text()
    c = stack.console(server="deadbeef")
    assert c.wait_exit() == 5
    assert "no such server: 'deadbeef' (404" in c.text()
    # a revoked key
    stack.panel.store.revoke_api_key(stack.key[:16])
    c = stack.console()
    assert c.wait_exit() == 3


def test_piped_stdin_and_plain_output(make_stack):
    stack = make_stack()
    status, _ = stack.panel.api("POST", f"/servers/{stack.identifier}/power", stack.key, {"signal": "start"})
    assert status == 204
    stack.wait_state("running")
    argv, env = stack.command()
    done = subprocess.run(argv, env=env, input="say piped one\nlist\n", capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "[Server] piped one" in done.stdout and "players online" in done.stdout
    assert "[console] status: running" in done.stderr  # notices go to stderr, output to stdout
    # no input at all: EOF at once, exit 0
    done = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_subuser_permissions_and_revocation_on_a_live_socket(make_stack):
    stack = make_stack()
    store = stack.panel.store
    store.create_user("bob")
    store.add_subuser(stack.identifier, "bob", ["control.console", "control.start"])
    bob_key = store.create_api_key("bob")[1]
    c = stack.console("-v", key=bob_key)
    c.expect(r"connected to Demo server")
    c.send_line("/kill")  # bob may not stop or kill: refused locally, with the reason
    c.expect(r"permission denied: /kill needs control\.stop")
    c.send_line("/start")
    c.expect(r"\| running \|")
    c.send_line("say from bob")
    c.expect(r"\[Server\] from bob")
    # the owner changes bob's permissions: his live token is revoked, the console takes a new one
    result = stack.panel.call(stack.panel.service.change_subuser(stack.identifier, "bob", ["control.stop"]))
    assert result.nodes_ok
    c.expect(r"denylist\): fetching a new token")
    c.expect(r"token renewed")
    c.send_line("say nope")  # the new token carries the new permissions
    c.expect(r"permission denied: this user may not send commands \(control\.console\)")
    c.send_line("/stop")
    c.expect(r"\| offline \|")
    assert "reconnect" not in c.text()
    c.send_line("/quit")
    assert c.wait_exit() == 0


def test_suspension_ends_the_session(make_stack):
    stack = make_stack(node_overrides={"roost": {"shutdown_stops_servers": False}})
    c = stack.console()
    c.expect(r"connected to Demo server")
    result = stack.panel.call(stack.panel.service.suspend_server(stack.identifier))
    assert result.nodes_ok
    # Like Wings, the node keeps live sockets; the next connection is refused: a node restart.
    stack.node.stop()
    stack.node.start()
    assert c.wait_exit() == 6
    assert "is suspended" in c.text()
    c = stack.console()  # and a new console says so at once
    assert c.wait_exit() == 6
    assert f"the server {stack.identifier} is suspended" in c.text()
