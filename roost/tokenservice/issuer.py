"""Websocket JWTs with exactly the claims a Pterodactyl/Pelican panel puts in (wire §3)."""
from __future__ import annotations

import hashlib
import secrets
import time
from typing import Iterable

import jwt

DEFAULT_TTL_S = 600  # panels issue 10-minute websocket tokens

OWNER_PERMISSIONS = ["*"]
ADMIN_PERMISSIONS = ["*", "admin.websocket.errors", "admin.websocket.install", "admin.websocket.transfer"]


def websocket_jti(user_id: int | str, server_uuid: str) -> str:
    """md5(decimal user id + server uuid): one deny entry revokes all of a user's tokens."""
    return hashlib.md5(f"{user_id}{server_uuid}".encode()).hexdigest()


def mint_websocket_token(
    *,
    secret: str,
    server_uuid: str,
    user_uuid: str,
    user_id: int | str,
    permissions: Iterable[str],
    issuer: str,
    node_url: str,
    ttl_s: int = DEFAULT_TTL_S,
    now: float | None = None,
) -> str:
    iat = int(time.time() if now is None else now)
    claims = {
        "iss": issuer,
        "aud": [node_url],
        "jti": websocket_jti(user_id, server_uuid),
        "iat": iat,
        "nbf": iat - 300,  # panels backdate nbf to tolerate clock skew between machines
        "exp": iat + int(ttl_s),
        "server_uuid": server_uuid,
        "permissions": list(permissions),
        "user_uuid": user_uuid,
        "user_id": int(user_id) if str(user_id).isdigit() else user_id,
        "unique_id": secrets.token_urlsafe(12),
        "scope": "websocket",
    }
    return jwt.encode(claims, secret, algorithm="HS256")
