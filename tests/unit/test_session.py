"""The per-socket protocol machine, driven with plain strings and a fake clock."""
import json

import jwt

from roost.protocol import events
from roost.protocol import session as proto
from roost.protocol.tokens import DenyList, TokenVerifier

SECRET = "x" * 64
SERVER = "8a7c2a4e-0a49-4b7e-9a34-6a8e2e1f0b11"
T0 = 1_800_000_000.0


def tok(iat=T0, ttl=600, perms=("*",), **extra):
    c = {"iat": int(iat), "exp": int(iat) + ttl, "jti": "j", "server_uuid": SERVER,
         "user_uuid": "u1", "permissions": list(perms), **extra}
    return jwt.encode(c, SECRET, algorithm="HS256")


def msg(event, *args):
    return json.dumps({"event": event, "args": list(args)})


def make(now=T0, deny=None, **cfg):
    deny = deny if deny is not None else DenyList()
    return proto.Session(proto.SessionConfig(server_uuid=SERVER, **cfg), TokenVerifier(SECRET), deny, now,
                         new_error_id=lambda: "EID"), deny


def frames(actions):
    return [json.loads(a.frame) for a in actions if isinstance(a, proto.Send)]


def test_first_auth_then_reauth():
    s, _ = make()
    s.receive(msg("auth", tok()), T0)
    acts = s.take_actions()
    assert frames(acts) == [{"event": "auth success"}]
    assert any(isinstance(a, proto.FirstAuth) for a in acts)
    s.receive(msg("auth", tok(iat=T0 + 5)), T0 + 5)
    acts = s.take_actions()
    assert frames(acts) == [{"event": "auth success"}]
    assert not any(isinstance(a, proto.FirstAuth) for a in acts)


def test_events_before_auth_get_no_jwt():
    s, _ = make()
    s.receive(msg("send stats"), T0)
    assert frames(s.take_actions()) == [{"event": "jwt error", "args": [events.JWT_NO_JWT]}]


def test_failed_reauth_keeps_earlier_token():
    s, _ = make()
    s.receive(msg("auth", tok()), T0)
    s.take_actions()
    s.receive(msg("auth", "garbage"), T0 + 1)
    assert frames(s.take_actions()) == [{"event": "jwt error", "args": [events.JWT_MALFORMED]}]
    s.receive(msg("send stats"), T0 + 2)
    assert isinstance(s.take_actions()[0], proto.SendStats)


def test_expiring_expired_and_close_deadlines():
    s, _ = make(expiring_notice_s=60, expired_grace_s=30)
    s.receive(msg("auth", tok(ttl=100)), T0)
    s.take_actions()
    assert s.next_deadline() == T0 + 40
    s.tick(T0 + 39.9)
    assert frames(s.take_actions()) == []
    s.tick(T0 + 40)
    assert frames(s.take_actions()) == [{"event": "token expiring"}]
    assert s.next_deadline() == T0 + 100
    s.tick(T0 + 100)
    assert frames(s.take_actions()) == [{"event": "token expired"}]
    assert not s.may_receive(None)
    s.receive(msg("send stats"), T0 + 101)
    assert frames(s.take_actions()) == [{"event": "jwt error", "args": [events.JWT_EXPIRED]}]
    s.tick(T0 + 130)
    acts = s.take_actions()
    assert acts == [proto.Close(4001, "token expired")]


def test_reauth_after_expiry_resumes_delivery():
    s, _ = make(expiring_notice_s=60, expired_grace_s=30)
    s.receive(msg("auth", tok(ttl=100)), T0)
    s.tick(T0 + 100)
    s.take_actions()
    s.receive(msg("auth", tok(iat=T0 + 101)), T0 + 101)
    assert frames(s.take_actions()) == [{"event": "auth success"}]
    assert s.may_receive(None)
    s.tick(T0 + 135)  # the grace close was cancelled by the re-auth
    assert s.take_actions() == []


def test_short_token_gets_expiring_at_once():
    s, _ = make()
    s.receive(msg("auth", tok(ttl=30)), T0)
    assert frames(s.take_actions()) == [{"event": "auth success"}, {"event": "token expiring"}]


def test_auth_timeout_closes():
    s, _ = make(auth_timeout_s=30)
    s.tick(T0 + 29)
    assert s.take_actions() == []
    s.tick(T0 + 30)
    assert s.take_actions() == [proto.Close(4001, "authentication timeout")]


def test_permissions_drop_silently_and_power_mapping():
    s, _ = make()
    s.receive(msg("auth", tok(perms=["websocket.connect", "control.stop"])), T0)
    s.take_actions()
    s.receive(msg("send command", "say hi"), T0)
    s.receive(msg("set state", "start"), T0)
    assert s.take_actions() == []
    s.receive(msg("set state", "kill"), T0)
    assert s.take_actions() == [proto.Power("kill")]
    s.receive(msg("set state", "explode"), T0)
    (err,) = frames(s.take_actions())
    assert err == {"event": "daemon error", "args": ["Error Event [EID]: " + events.GENERIC_ERROR]}
    assert s.logged_errors and "explode" in s.logged_errors[0][1]


def test_admin_errors_permission_shows_real_text():
    s, _ = make()
    s.receive(msg("auth", tok(perms=["*", "admin.websocket.errors"])), T0)
    s.take_actions()
    s.receive(msg("set state", "explode"), T0)
    (err,) = frames(s.take_actions())
    assert "invalid power action" in err["args"][0]


def test_rate_limits_global_and_per_event():
    s, _ = make()
    s.receive(msg("auth", tok()), T0)
    s.take_actions()
    for _ in range(4):
        s.receive(msg("send stats"), T0)
    s.receive(msg("send stats"), T0)
    s.receive(msg("send stats"), T0)
    acts = s.take_actions()
    assert sum(isinstance(a, proto.SendStats) for a in acts) == 4
    assert frames(acts) == [{"event": "throttled", "args": ["send stats"]}]  # once per episode
    for _ in range(10):
        s.receive(msg("send command", "x"), T0)
    acts = s.take_actions()
    assert frames(acts) == [{"event": "throttled", "args": ["global"]}]


def test_revocation_stops_delivery_until_reauth():
    s, deny = make()
    s.receive(msg("auth", tok()), T0)
    s.take_actions()
    deny.deny_jtis(["j"], T0 + 1)
    s.recheck(T0 + 1)
    assert frames(s.take_actions()) == [{"event": "jwt error", "args": [events.JWT_DENYLISTED]}]
    assert not s.may_receive(None)
    s.receive(msg("auth", tok(iat=T0 + 2)), T0 + 2)
    assert frames(s.take_actions()) == [{"event": "auth success"}]
    assert s.may_receive(None)


def test_unknown_events_and_garbage_ignored():
    s, _ = make()
    s.receive(msg("explode"), T0)
    s.receive("{not json", T0)
    s.receive('{"event":"auth","args":[1]}', T0)
    assert s.take_actions() == []


def test_roost_send_logs_resume():
    s, _ = make(roost_extensions=True)
    s.receive(msg("auth", tok()), T0)
    s.take_actions()
    s.receive(msg("send logs", "41"), T0)
    assert s.take_actions() == [proto.SendLogs(41)]
    s2, _ = make()
    s2.receive(msg("auth", tok()), T0)
    s2.take_actions()
    s2.receive(msg("send logs", "41"), T0)
    assert s2.take_actions() == [proto.SendLogs(None)]
