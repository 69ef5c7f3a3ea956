"""Client API keys and node credentials: generation, hashing, constant-time checks.

A client API key is `ptlc_` + 11 characters (the identifier, kept in clear to find the row)
followed by a 32-character secret, as a Pterodactyl panel issues them. Only an HMAC-SHA256
of the secret under a per-key random salt is stored; the full key is shown once.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
import string

KEY_PREFIX = "ptlc_"
IDENTIFIER_LENGTH = 16  # "ptlc_" + 11 characters, as the panel's identifiers
SECRET_LENGTH = 32
NODE_TOKEN_ID_LENGTH = 16
NODE_TOKEN_LENGTH = 64
_ALPHABET = string.ascii_letters + string.digits

# Compared against when the identifier is unknown, so that a miss costs the same as a hit.
_DUMMY_SALT = b"\x00" * 16
_DUMMY_HASH = hmac.new(_DUMMY_SALT, b"", hashlib.sha256).digest()


def random_string(length: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def new_api_key() -> tuple[str, str]:
    """A fresh (identifier, secret); the key a client sends is identifier + secret."""
    return KEY_PREFIX + random_string(IDENTIFIER_LENGTH - len(KEY_PREFIX)), random_string(SECRET_LENGTH)


def split_api_key(key: str) -> tuple[str, str] | None:
    """(identifier, secret) of a presented key, or None when it cannot be one of ours."""
    if not isinstance(key, str) or len(key) != IDENTIFIER_LENGTH + SECRET_LENGTH:
        return None
    rest = key[len(KEY_PREFIX):]
    if not key.startswith(KEY_PREFIX) or not rest.isascii() or not rest.isalnum():
        return None
    return key[:IDENTIFIER_LENGTH], key[IDENTIFIER_LENGTH:]


def hash_secret(secret: str, salt: bytes | None = None) -> tuple[bytes, bytes]:
    """(salt, digest) for storage."""
    salt = secrets.token_bytes(16) if salt is None else salt
    return salt, hmac.new(salt, secret.encode(), hashlib.sha256).digest()


def secret_matches(secret: str, salt: bytes | None, digest: bytes | None) -> bool:
    """Constant-time check of a presented secret; pass None/None for an unknown identifier."""
    if salt is None or digest is None:
        hmac.compare_digest(hmac.new(_DUMMY_SALT, secret.encode(), hashlib.sha256).digest(), _DUMMY_HASH)
        return False
    return hmac.compare_digest(hmac.new(salt, secret.encode(), hashlib.sha256).digest(), digest)


def new_node_credentials() -> tuple[str, str]:
    """(token_id, token) for a node, the lengths a panel uses."""
    return random_string(NODE_TOKEN_ID_LENGTH), random_string(NODE_TOKEN_LENGTH)


def tokens_equal(presented: str, expected: str) -> bool:
    return hmac.compare_digest(presented.encode(), expected.encode())
