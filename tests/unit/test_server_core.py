"""State machine, crash policy, throttle, done matching, fan-out and console log: no loop."""
import ast
import pathlib

import pytest

from roost.protocol.done import DoneMatcher, strip_ansi
from roost.protocol.throttle import ConsoleThrottle
from roost.server import crash_policy
from roost.server.console_log import ConsoleLog
from roost.server.fanout import Hub
from roost.server.machine import IllegalTransition, StateMachine
from roost.server.states import ServerState as S

ROOT = pathlib.Path(__file__).resolve().parents[2] / "roost"


def test_protocol_package_is_sans_io():
    banned = {"asyncio", "aiohttp", "socket", "time", "selectors", "subprocess"}
    for path in (ROOT / "protocol").glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module.split(".")[0]]
            assert not banned & set(names), f"{path.name} imports {banned & set(names)}"


def machine():
    seen = []
    return StateMachine(lambda old, new, cause: seen.append((old, new))), seen


def test_offline_to_starting_when_start_requested():
    m, seen = machine()
    assert m.change_state(S.STARTING, cause="start")
    assert seen == [(S.OFFLINE, S.STARTING)]


def test_starting_to_running_when_done_line():
    m, seen = machine()
    m.change_state(S.STARTING, cause="start")
    m.change_state(S.RUNNING, cause="done")
    assert m.state is S.RUNNING


def test_running_to_running_is_no_change_and_no_status():
    m, seen = machine()
    m.change_state(S.STARTING, cause="")
    m.change_state(S.RUNNING, cause="")
    assert not m.change_state(S.RUNNING, cause="")
    assert len(seen) == 2


def test_offline_to_stopping_is_illegal():
    m, _ = machine()
    with pytest.raises(IllegalTransition) as e:
        m.change_state(S.STOPPING, cause="stop")
    assert "offline -> stopping" in str(e.value)


def test_stopping_to_offline_when_exit():
    m, _ = machine()
    for st in (S.STARTING, S.RUNNING, S.STOPPING, S.OFFLINE):
        m.change_state(st, cause="")
    assert m.state is S.OFFLINE


def decide(**kw):
    base = dict(previous_state=S.RUNNING, exit_code=1, enabled=True, detect_clean_exit_as_crash=True,
                last_crash_at=None, now=1000.0, timeout_s=60)
    base.update(kw)
    return crash_policy.decide(**base)


def test_crash_policy():
    assert isinstance(decide(), crash_policy.Restart)
    assert isinstance(decide(previous_state=S.STOPPING), crash_policy.NotACrash)
    assert isinstance(decide(exit_code=0, detect_clean_exit_as_crash=False), crash_policy.NotACrash)
    assert isinstance(decide(exit_code=0), crash_policy.Restart)
    assert isinstance(decide(enabled=False), crash_policy.NotACrash)
    assert isinstance(decide(last_crash_at=950.0), crash_policy.Abort)
    assert isinstance(decide(last_crash_at=940.0), crash_policy.Restart)


def test_throttle_one_announcement_per_episode():
    t = ConsoleThrottle(lines=3, interval_s=1.0)
    results = [t.admit(0.0) for _ in range(6)]
    assert [r[0] for r in results] == [True, True, True, False, False, False]
    assert [r[1] for r in results] == [False, False, False, True, False, False]
    # next window still over the limit: same episode, no new announcement
    results = [t.admit(1.0) for _ in range(5)]
    assert [r[1] for r in results] == [False] * 5
    # a calm window ends the episode
    t.admit(2.0)
    results = [t.admit(3.0) for _ in range(5)]
    assert [r[1] for r in results] == [False, False, False, True, False]


def test_done_matching():
    assert DoneMatcher(['Done (']).matches('[12:00] Done (1.2s)! For help')
    assert DoneMatcher(['regex:^Map generated']).matches('Map generated, starting game')
    assert not DoneMatcher(['regex:^Map generated']).matches('x Map generated')
    coloured = "\x1b[32mDone\x1b[0m (1s)"
    assert not DoneMatcher(["Done (1s)"]).matches(coloured)
    assert DoneMatcher(["Done (1s)"], strip=True).matches(coloured)
    assert strip_ansi("\x1b[1;33mA\x1b]0;title\x07B") == "AB"
    assert DoneMatcher(["regex:("]).matches("a regex:( b")  # broken regex matched literally
    assert DoneMatcher([]).empty


def test_console_log_sequences_ring_and_reload(tmp_path):
    log = ConsoleLog(tmp_path / "s.log", ring_lines=5)
    for i in range(7):
        log.append(f"line {i}")
    log.append("daemon says", daemon=True)
    assert [ln.text for ln in log.tail(3)] == ["line 4", "line 5", "line 6"]
    assert [ln.seq for ln in log.tail(10, include_daemon=True)] == [4, 5, 6, 7, 8]
    log.close()
    again = ConsoleLog(tmp_path / "s.log", ring_lines=5)
    assert again.next_seq == 9
    assert again.tail(1)[0].text == "line 6"
    assert [ln.seq for ln in again.since(6, limit=10)] == [7, 8]


def test_console_log_rotates_and_survives_torn_record(tmp_path):
    log = ConsoleLog(tmp_path / "s.log", ring_lines=100, max_bytes=200, keep=2)
    for i in range(50):
        log.append(f"line {i:03d}")
    log.close()
    assert (tmp_path / "s.log.1").exists()
    with open(tmp_path / "s.log", "ab") as f:
        f.write(b"51\ts\ttorn")  # no newline: a crash mid-write
    again = ConsoleLog(tmp_path / "s.log", ring_lines=100, max_bytes=200, keep=2)
    assert again.tail(1)[0].text in ("torn", "line 049")
    assert again.next_seq >= 51


def test_fanout_slow_subscriber_skips_alone_and_is_told():
    hub = Hub("roost")
    fast = hub.subscribe(may_receive=lambda p: True, wake=lambda: None, high=8)
    slow = hub.subscribe(may_receive=lambda p: True, wake=lambda: None, high=8)
    for i in range(4):
        hub.publish_console([(i * 5 + j, f"l{i * 5 + j}") for j in range(5)])
        fast.take()
    assert slow.skipping and slow.skipped == 12
    assert not fast.skipping
    out = slow.take() + slow.take()
    assert len(out) == 9  # 8 lines, then the notice, in the gap's place
    assert b"12 console lines skipped" in out[-1]
    hub.publish_console([(99, "after")])
    assert b"after" in slow.take()[0]


def test_fanout_filters_and_control_never_skipped():
    hub = Hub("roost")
    unauthed = hub.subscribe(may_receive=lambda p: False, wake=lambda: None)
    admin = hub.subscribe(may_receive=lambda p: True, wake=lambda: None, high=2, control_slack=2)
    hub.publish_console([(1, "a")])
    hub.publish('{"event":"install output","args":["x"]}', "admin.websocket.install")
    assert not unauthed.queue
    for _ in range(2):
        hub.publish('{"event":"status","args":["running"]}')
    assert not admin.overflowed
    hub.publish('{"event":"status","args":["running"]}')
    assert admin.overflowed


def test_stop_signal_names_as_eggs_use_them():
    import signal as sig
    from roost.server.server import stop_signal
    assert stop_signal("C") == stop_signal("SIGINT") == stop_signal("INT") == sig.SIGINT
    assert stop_signal("SIGTERM") == stop_signal("TERM") == sig.SIGTERM
    assert stop_signal("SIGUSR1") == sig.SIGUSR1 and stop_signal("ABRT") == sig.SIGABRT
    assert stop_signal("X") == stop_signal(None) == stop_signal("bogus") == sig.SIGKILL  # as Wings


def test_definition_accepts_real_panel_quirks_and_substitutes():
    from roost.server.definition import ServerDefinition
    d = ServerDefinition.model_validate({
        "settings": {"uuid": "8A7C2A4E-0A49-4B7E-9A34-6A8E2E1F0B11", "invocation": "java -Xmx{{SERVER_MEMORY}}M -jar ${JAR} {{ UNKNOWN }}",
                     "environment": {"JAR": "server.jar", "NULLED": None, "FLAG": True},
                     "build": {"memory_limit": 1024, "threads": None, "oom_killer": False}, "mounts": None},
        "process_configuration": {"startup": {"done": "Done ("}, "stop": {"type": "command", "value": "stop"}, "configs": None},
    })
    assert d.uuid == "8a7c2a4e-0a49-4b7e-9a34-6a8e2e1f0b11"
    assert d.startup_command() == "java -Xmx1024M -jar server.jar {{ UNKNOWN }}"
    assert d.settings.build.oom_disabled is True  # Pelican's oom_killer: false
    assert d.process_configuration.startup.done == ["Done ("]
    env = d.environment()
    assert env["NULLED"] == "" and env["FLAG"] == "true" and env["STARTUP"].startswith("java")
