import time

import jwt
import pytest

from roost.protocol import events
from roost.protocol.permissions import PermissionSet
from roost.protocol.tokens import DenyList, JwtError, TokenVerifier
from roost.tokenservice.issuer import mint_websocket_token, websocket_jti

SECRET = "node-secret-token-0123456789abcdef0123456789abcdef"
SERVER = "8a7c2a4e-0a49-4b7e-9a34-6a8e2e1f0b11"
USER = "11111111-2222-3333-4444-555555555555"
NOW = 1_800_000_000.0


def token(**over):
    claims = {
        "iat": int(NOW), "nbf": int(NOW) - 300, "exp": int(NOW) + 600, "jti": "j1",
        "server_uuid": SERVER, "user_uuid": USER, "permissions": ["*"], "scope": "websocket",
    }
    claims.update(over)
    claims = {k: v for k, v in claims.items() if v is not ...}
    return jwt.encode(claims, over.pop("_key", SECRET), algorithm="HS256")


def verify(tok, now=NOW, deny=None, require_scope=False):
    return TokenVerifier(SECRET, require_scope=require_scope).verify(
        tok, server_uuid=SERVER, now=now, denylist=deny or DenyList())


def reason(tok, **kw):
    with pytest.raises(JwtError) as e:
        verify(tok, **kw)
    return str(e.value)


def test_star_never_grants_admin():
    p = PermissionSet(["*"])
    assert p.has("control.start") and p.has("websocket.connect")
    assert not p.has("admin.websocket.errors")
    assert PermissionSet(["admin.websocket.install"]).has("admin.websocket.install")
    assert not PermissionSet(["control.console"]).has("control.start")


def test_valid_token():
    c = verify(token())
    assert c.server_uuid == SERVER and c.user_uuid == USER and c.permissions.has("control.console")


def test_alg_none_and_wrong_key_and_other_alg():
    none_tok = jwt.encode({"exp": NOW + 60, "iat": NOW}, None, algorithm="none")
    assert reason(none_tok) == events.JWT_BAD_SIGNATURE
    assert reason(jwt.encode({"exp": NOW + 60}, "other", algorithm="HS256")) == events.JWT_BAD_SIGNATURE
    assert reason(jwt.encode({"exp": NOW + 60}, SECRET, algorithm="HS512")) == events.JWT_BAD_SIGNATURE


def test_malformed():
    for t in ["", "abc", "a.b.c", "a.b", "....."]:
        assert reason(t) == events.JWT_MALFORMED


def test_expired_and_missing_exp():
    assert reason(token(exp=int(NOW) - 1)) == events.JWT_EXPIRED
    assert reason(token(exp=...)) == events.JWT_EXPIRED
    assert reason(token(exp="soon")) == events.JWT_EXPIRED
    assert reason(token(exp=int(NOW) + 10), now=NOW + 10) == events.JWT_EXPIRED


def test_missing_iat_is_denylisted():
    assert reason(token(iat=...)) == events.JWT_DENYLISTED


def test_scope_and_connect_permission():
    assert reason(token(scope="transfer")) == events.JWT_MISSING_CONNECT
    assert reason(token(permissions=["control.console"])) == events.JWT_MISSING_CONNECT
    verify(token(scope=...))  # old panels: no scope claim
    assert reason(token(scope=...), require_scope=True) == events.JWT_MISSING_CONNECT
    verify(token(permissions=["websocket.connect"]))


def test_wrong_server():
    assert reason(token(server_uuid="00000000-0000-0000-0000-000000000000")) == events.JWT_SERVER_MISMATCH


def test_denylist_by_jti_and_user():
    deny = DenyList()
    deny.deny_jtis(["j1"], NOW + 1)
    assert reason(token(), deny=deny) == events.JWT_DENYLISTED
    verify(token(iat=int(NOW) + 2), deny=deny)  # issued after the deny
    deny = DenyList()
    deny.deauthorize(USER, [SERVER], NOW)
    assert reason(token(), deny=deny) == events.JWT_DENYLISTED  # iat == deny time is denied
    deny = DenyList()
    deny.deauthorize(USER, [], NOW)  # empty list: every server
    assert reason(token(), deny=deny) == events.JWT_DENYLISTED
    deny = DenyList()
    deny.deauthorize("someone-else", [], NOW)
    verify(token(), deny=deny)


def test_denylist_round_trips_json():
    d = DenyList()
    d.deny_jtis(["a"], 5.0)
    d.deauthorize("u", ["s"], 6.0)
    assert DenyList.from_json(d.to_json()).to_json() == d.to_json()


def test_issuer_mints_panel_claims():
    t = mint_websocket_token(secret=SECRET, server_uuid=SERVER, user_uuid=USER, user_id=7,
                             permissions=["*"], issuer="http://panel", node_url="http://node:8080",
                             ttl_s=600, now=NOW + 0.7)
    doc = jwt.decode(t, SECRET, algorithms=["HS256"], options={"verify_exp": False, "verify_aud": False, "verify_nbf": False, "verify_iat": False})
    assert doc["iat"] == int(NOW) and doc["exp"] == int(NOW) + 600 and isinstance(doc["iat"], int)
    assert doc["aud"] == ["http://node:8080"] and doc["scope"] == "websocket"
    assert doc["jti"] == websocket_jti(7, SERVER) and doc["unique_id"]
    verify(t, now=NOW + 1)
