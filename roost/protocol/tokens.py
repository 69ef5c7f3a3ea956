"""Websocket JWT rules: signature, expiry, denylist, scope, server; with Wings' error texts.

PyJWT checks the signature and algorithm; everything time-related is checked here against a
`now` passed in, so the rules are testable without a clock (PyJWT's own exp check is off).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import jwt
from jwt.warnings import InsecureKeyLengthWarning

# The key is the node token the panel generated; its length is not ours to choose, and the
# warning would fire on every verify.
warnings.filterwarnings("ignore", category=InsecureKeyLengthWarning)

from . import events
from .permissions import WEBSOCKET_CONNECT, PermissionSet


class JwtError(Exception):
    """A token was refused; `str(err)` is the exact wire text for `jwt error`."""


@dataclass(frozen=True, slots=True)
class Claims:
    server_uuid: str
    user_uuid: str
    permissions: PermissionSet
    jti: str
    iat: float | None  # None: the token had no iat, which Wings treats as denylisted
    exp: float
    unique_id: str = ""
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


class DenyList:
    """Revoked tokens: by `jti` (ws/deny) and by user and server (deauthorize-user).

    Plain data so the I/O layer can persist it (roost keeps deny lists across restarts,
    Wings forgets them and denies everything issued before boot instead).
    """

    def __init__(self) -> None:
        self.jtis: dict[str, float] = {}
        self.users: dict[str, dict[str, float]] = {}  # user -> {server uuid | "*": time}

    def deny_jtis(self, jtis: list[str], now: float) -> None:
        """Tokens with one of these jti and iat before `now` are denied."""
        for j in jtis:
            self.jtis[j] = now

    def deauthorize(self, user: str, servers: list[str], now: float) -> None:
        """Tokens of `user` for `servers` (all when empty) with iat at or before now are denied."""
        entry = self.users.setdefault(user, {})
        for s in servers or ["*"]:
            entry[s] = now

    def is_denied(self, claims: Claims) -> bool:
        if claims.iat is None:
            return True
        t = self.jtis.get(claims.jti)
        if t is not None and claims.iat < t:
            return True
        entry = self.users.get(claims.user_uuid)
        if entry:
            for key in (claims.server_uuid, "*"):
                t = entry.get(key)
                if t is not None and claims.iat <= t:
                    return True
        return False

    def prune(self, now: float, max_token_lifetime_s: float) -> None:
        """Forget entries older than any token that could still be valid."""
        horizon = now - max_token_lifetime_s
        self.jtis = {k: v for k, v in self.jtis.items() if v > horizon}
        for user in list(self.users):
            kept = {k: v for k, v in self.users[user].items() if v > horizon}
            if kept:
                self.users[user] = kept
            else:
                del self.users[user]

    def to_json(self) -> dict[str, Any]:
        return {"jtis": self.jtis, "users": self.users}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> "DenyList":
        d = cls()
        d.jtis = {str(k): float(v) for k, v in (doc.get("jtis") or {}).items()}
        d.users = {
            str(u): {str(k): float(v) for k, v in (m or {}).items()}
            for u, m in (doc.get("users") or {}).items()
        }
        return d


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if not math.isfinite(value):
        return None
    return float(value)


class TokenVerifier:
    """Turns a token string into `Claims` or raises `JwtError` with the spec's text."""

    def __init__(self, secret: str, *, require_scope: bool = False):
        self._secret = secret
        self._require_scope = require_scope

    def decode(self, token: str) -> dict[str, Any]:
        """Signature and structure only; no time rules."""
        if not isinstance(token, str) or token.count(".") != 2:
            raise JwtError(events.JWT_MALFORMED)
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise JwtError(events.JWT_MALFORMED) from None
        if header.get("alg") != "HS256":
            raise JwtError(events.JWT_BAD_SIGNATURE)
        try:
            doc = jwt.decode(
                token,
                self._secret,
                algorithms=["HS256"],
                options={
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    "verify_aud": False,
                    "verify_iss": False,
                    "verify_sub": False,
                    "verify_jti": False,
                },
            )
        except jwt.InvalidSignatureError:
            raise JwtError(events.JWT_BAD_SIGNATURE) from None
        except jwt.InvalidAlgorithmError:
            raise JwtError(events.JWT_BAD_SIGNATURE) from None
        except jwt.PyJWTError:
            raise JwtError(events.JWT_MALFORMED) from None
        if not isinstance(doc, dict):
            raise JwtError(events.JWT_MALFORMED)
        return doc

    def verify(self, token: str, *, server_uuid: str, now: float, denylist: DenyList) -> Claims:
        """Every rule of spec §3, in Wings' order; the server check is roost's addition."""
        doc = self.decode(token)
        exp = _number(doc.get("exp"))
        if exp is None or now >= exp:
            raise JwtError(events.JWT_EXPIRED)
        iat = _number(doc.get("iat"))
        perms = doc.get("permissions")
        claims = Claims(
            server_uuid=str(doc.get("server_uuid") or ""),
            user_uuid=str(doc.get("user_uuid") or ""),
            permissions=PermissionSet(perms if isinstance(perms, list) else []),
            jti=str(doc.get("jti") or ""),
            iat=iat,
            exp=exp,
            unique_id=str(doc.get("unique_id") or ""),
            raw=doc,
        )
        self.check_live(claims, now=now, denylist=denylist)
        scope = doc.get("scope")
        if scope is None:
            if self._require_scope:
                raise JwtError(events.JWT_MISSING_CONNECT)
        elif not isinstance(scope, str) or "websocket" not in scope.split():
            raise JwtError(events.JWT_MISSING_CONNECT)
        if not claims.permissions.has(WEBSOCKET_CONNECT):
            raise JwtError(events.JWT_MISSING_CONNECT)
        if claims.server_uuid != server_uuid:
            raise JwtError(events.JWT_SERVER_MISMATCH)
        return claims

    @staticmethod
    def check_live(claims: Claims, *, now: float, denylist: DenyList) -> None:
        """The checks that can change while a token is stored: expiry and revocation."""
        if now >= claims.exp:
            raise JwtError(events.JWT_EXPIRED)
        if denylist.is_denied(claims):
            raise JwtError(events.JWT_DENYLISTED)
