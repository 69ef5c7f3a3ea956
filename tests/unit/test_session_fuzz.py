"""Property tests: whatever a client sends, the session never raises and only emits
well-formed envelopes."""
import json

import jwt
from hypothesis import given, settings, strategies as st

from roost.protocol import session as proto
from roost.protocol.tokens import DenyList, TokenVerifier

SECRET = "k" * 64
SERVER = "8a7c2a4e-0a49-4b7e-9a34-6a8e2e1f0b11"
T0 = 1_800_000_000.0
GOOD = jwt.encode({"iat": int(T0), "exp": int(T0) + 600, "server_uuid": SERVER, "permissions": ["*"],
                   "user_uuid": "u", "jti": "j"}, SECRET, algorithm="HS256")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3), max_leaves=8)
events_ = st.sampled_from(["auth", "set state", "send command", "send logs", "send stats", "nope", ""]) | st.text(max_size=12)
args_ = st.lists(st.sampled_from([GOOD, "start", "stop", "kill", "restart", "", "say hi", "12"]) | st.text(max_size=20), max_size=3)
frames = st.one_of(
    st.builds(lambda e, a: json.dumps({"event": e, "args": a}), events_, args_),
    st.builds(lambda e, a: json.dumps({"event": e, "args": a}), events_, json_values),
    json_values.map(json.dumps),
    st.text(max_size=80),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(frames, st.floats(min_value=0, max_value=2000)), max_size=25))
def test_any_sequence_of_frames_is_handled(steps):
    s = proto.Session(proto.SessionConfig(server_uuid=SERVER), TokenVerifier(SECRET), DenyList(), T0)
    now = T0
    for text, dt in steps:
        now += dt / 100
        s.receive(text, now)
        s.tick(now)
        for action in s.take_actions():
            if isinstance(action, proto.Send):
                doc = json.loads(action.frame)
                assert isinstance(doc["event"], str)
                assert all(isinstance(a, str) for a in doc.get("args", []))
            elif isinstance(action, proto.Power):
                assert action.action in ("start", "stop", "restart", "kill")
        d = s.next_deadline()
        assert d is None or d >= now - 1e-6 or s.phase is proto.Phase.CLOSED
