"""The token service's store: one SQLite file under a data directory.

Synchronous on purpose (stdlib `sqlite3`): the CLI and `roost up`'s first start call it
directly, and the aiohttp app runs each call in a worker thread (`asyncio.to_thread`), so
the event loop never waits on the disk. Each call opens its own connection (cheap, and safe
across threads and processes: the CLI may write while the service runs), in WAL mode with a
busy timeout. Every write is one `BEGIN IMMEDIATE` transaction: it happens whole or not at all.

The file holds node tokens (they sign websocket JWTs), so it is created with mode 0600.
API key secrets are never stored, only their salted HMAC (credentials.py).
"""
from __future__ import annotations

import copy
import json
import math
import os
import re
import sqlite3
import time
import uuid as uuidlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlsplit

from pydantic import ValidationError

from ..server.definition import ServerDefinition
from . import credentials
from .access import InvalidPermissions, normalise_subuser_permissions

DB_FILENAME = "tokenservice.db"
BUSY_TIMEOUT_MS = 5000
# Activity rows kept (the newest); older ones are dropped as new batches arrive.
ACTIVITY_KEEP = 10_000

SERVER_STATUSES = (None, "installing", "install_failed", "reinstall_failed", "restoring_backup")


class StoreError(Exception):
    """A store operation was refused; the message is for the user (no secrets)."""


class NotFound(StoreError):
    pass


class Conflict(StoreError):
    pass


class Invalid(StoreError):
    pass


def now_iso() -> str:
    """Panel-style timestamps (ISO 8601, UTC, seconds)."""
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


# ---- records ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class User:
    id: int
    uuid: str
    username: str
    email: str
    first_name: str
    last_name: str
    language: str
    admin: bool
    created_at: str

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "uuid": self.uuid, "username": self.username, "email": self.email,
                "first_name": self.first_name, "last_name": self.last_name, "language": self.language,
                "admin": self.admin, "created_at": self.created_at}


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: int
    identifier: str
    user_id: int
    memo: str
    last_used_at: str | None
    created_at: str
    revoked: bool

    def public(self) -> dict[str, Any]:
        return {"identifier": self.identifier, "user_id": self.user_id, "memo": self.memo,
                "last_used_at": self.last_used_at, "created_at": self.created_at, "revoked": self.revoked}


@dataclass(frozen=True, slots=True)
class Node:
    id: int
    uuid: str
    name: str
    scheme: str
    host: str
    port: int
    sftp_port: int
    token_id: str
    token: str = field(repr=False)
    maintenance: bool = False
    created_at: str = ""

    @property
    def url(self) -> str:
        """The node API's base URL (also the `aud` of its websocket tokens)."""
        return f"{self.scheme}://{self.host}:{self.port}"

    def socket_url(self, server_uuid: str) -> str:
        ws = "wss" if self.scheme == "https" else "ws"
        return f"{ws}://{self.host}:{self.port}/api/servers/{server_uuid}/ws"

    def public(self) -> dict[str, Any]:
        """Everything but the token."""
        return {"id": self.id, "uuid": self.uuid, "name": self.name, "url": self.url, "scheme": self.scheme,
                "host": self.host, "port": self.port, "sftp_port": self.sftp_port, "token_id": self.token_id,
                "maintenance": self.maintenance, "created_at": self.created_at}


@dataclass(frozen=True, slots=True)
class ServerRecord:
    id: int
    uuid: str
    identifier: str
    name: str
    description: str
    owner_id: int
    node_id: int
    definition: dict[str, Any] = field(repr=False)
    suspended: bool = False
    status: str | None = None
    transferring: bool = False
    created_at: str = ""

    def panel_definition(self) -> dict[str, Any]:
        """What the remote API hands a node: the stored document with the panel's own facts
        (uuid, name, description, suspension) written in, validated and normalised."""
        doc = copy.deepcopy(self.definition)
        settings = doc.setdefault("settings", {})
        settings["uuid"] = self.uuid
        meta = settings.get("meta") if isinstance(settings.get("meta"), dict) else {}
        meta["name"] = self.name
        meta["description"] = self.description
        settings["meta"] = meta
        settings["suspended"] = self.suspended
        out = ServerDefinition.model_validate(doc).model_dump(mode="json")
        if out.get("runtime") is None:
            out.pop("runtime", None)
        return out

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "uuid": self.uuid, "identifier": self.identifier, "name": self.name,
                "description": self.description, "owner_id": self.owner_id, "node_id": self.node_id,
                "suspended": self.suspended, "status": self.status, "transferring": self.transferring,
                "created_at": self.created_at}


@dataclass(frozen=True, slots=True)
class Subuser:
    server_id: int
    user_id: int
    permissions: list[str]
    created_at: str
    updated_at: str

    def public(self) -> dict[str, Any]:
        return {"server_id": self.server_id, "user_id": self.user_id, "permissions": list(self.permissions),
                "created_at": self.created_at, "updated_at": self.updated_at}


@dataclass(frozen=True, slots=True)
class Access:
    """One user's view of one server, read in one transaction."""

    server: ServerRecord
    node: Node
    owner: User
    subuser_permissions: list[str] | None  # None: not a subuser


@dataclass(frozen=True, slots=True)
class Revocation:
    """Where a (user, server) pair stands after revocations: tokens for it may be minted only
    when no revocation is in flight and with iat >= not_before."""

    pending_since: float | None
    not_before: float


# ---- schema ----------------------------------------------------------------------------------

MIGRATIONS: list[str] = [
    # 1: the first schema
    """
    CREATE TABLE users (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        uuid TEXT NOT NULL UNIQUE,
        username TEXT NOT NULL UNIQUE COLLATE NOCASE,
        email TEXT NOT NULL UNIQUE COLLATE NOCASE,
        first_name TEXT NOT NULL DEFAULT '',
        last_name TEXT NOT NULL DEFAULT '',
        language TEXT NOT NULL DEFAULT 'en',
        admin INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL
    );
    CREATE TABLE api_keys (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        identifier TEXT NOT NULL UNIQUE,
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        salt BLOB NOT NULL,
        secret_hash BLOB NOT NULL,
        memo TEXT NOT NULL DEFAULT '',
        last_used_at TEXT,
        created_at TEXT NOT NULL,
        revoked_at TEXT
    );
    CREATE TABLE nodes (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        uuid TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL UNIQUE,
        scheme TEXT NOT NULL,
        host TEXT NOT NULL,
        port INTEGER NOT NULL,
        sftp_port INTEGER NOT NULL DEFAULT 2022,
        token_id TEXT NOT NULL UNIQUE,
        token TEXT NOT NULL,
        maintenance INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL
    );
    CREATE TABLE servers (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        uuid TEXT NOT NULL UNIQUE,
        identifier TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL,
        description TEXT NOT NULL DEFAULT '',
        owner_id INTEGER NOT NULL REFERENCES users(id) ON DELETE RESTRICT,
        node_id INTEGER NOT NULL REFERENCES nodes(id) ON DELETE RESTRICT,
        definition TEXT NOT NULL,
        suspended INTEGER NOT NULL DEFAULT 0,
        status TEXT,
        transferring INTEGER NOT NULL DEFAULT 0,
        installed_at TEXT,
        created_at TEXT NOT NULL
    );
    CREATE INDEX servers_owner ON servers(owner_id);
    CREATE INDEX servers_node ON servers(node_id);
    CREATE TABLE subusers (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        server_id INTEGER NOT NULL REFERENCES servers(id) ON DELETE CASCADE,
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        permissions TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        UNIQUE(server_id, user_id)
    );
    CREATE INDEX subusers_user ON subusers(user_id);
    CREATE TABLE revocations (
        user_id INTEGER NOT NULL,
        server_id INTEGER NOT NULL REFERENCES servers(id) ON DELETE CASCADE,
        pending_since REAL,
        not_before REAL NOT NULL DEFAULT 0,
        PRIMARY KEY (user_id, server_id)
    );
    CREATE TABLE activity (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        node_id INTEGER NOT NULL,
        server_uuid TEXT NOT NULL,
        user_uuid TEXT,
        event TEXT NOT NULL,
        metadata TEXT,
        ip TEXT,
        timestamp TEXT NOT NULL,
        received_at TEXT NOT NULL
    );
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)

_USERNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,190}")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+")


def parse_node_url(url: str) -> tuple[str, str, int]:
    """`http(s)://host[:port]` → (scheme, host, port); the port defaults to 8080 as Wings'."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Invalid(f"node URL must look like http://host:port, got {url!r}")
    if parts.path not in ("", "/") or parts.query or parts.username:
        raise Invalid(f"node URL must be just scheme://host:port, got {url!r}")
    try:
        port = parts.port or 8080
    except ValueError:
        raise Invalid(f"bad port in node URL {url!r}") from None
    host = parts.hostname
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    return parts.scheme, host, port


class Store:
    """All reads and writes of the token service's data. Thread- and process-safe."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            # Create it 0600 before SQLite does (it would use the umask); SQLite gives the
            # -wal and -shm files the main file's mode.
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        os.chmod(self.path, 0o600)
        self._migrate()

    @classmethod
    def open(cls, directory: str | Path) -> "Store":
        """The store of a data directory (`<directory>/tokenservice.db`), created if needed."""
        return cls(Path(directory) / DB_FILENAME)

    # ---- plumbing -----------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        con.row_factory = sqlite3.Row
        con.execute("PRAGMA foreign_keys = ON")
        con.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        # WAL + NORMAL: every transaction stays atomic; a power cut may lose the last few.
        con.execute("PRAGMA synchronous = NORMAL")
        return con

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One atomic write transaction."""
        con = self._connect()
        try:
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")
        finally:
            con.close()

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A consistent snapshot for several reads."""
        con = self._connect()
        try:
            con.execute("BEGIN")
            try:
                yield con
            finally:
                con.execute("ROLLBACK")
        finally:
            con.close()

    def _migrate(self) -> None:
        con = self._connect()
        try:
            con.execute("PRAGMA journal_mode = WAL")
            con.execute("BEGIN IMMEDIATE")
            try:
                version = con.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    raise StoreError(
                        f"{self.path} has schema version {version}, newer than this roost knows ({SCHEMA_VERSION})"
                    )
                for i in range(version, SCHEMA_VERSION):
                    for statement in MIGRATIONS[i].split(";"):
                        if statement.strip():
                            con.execute(statement)
                    con.execute(f"PRAGMA user_version = {i + 1}")
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")
        finally:
            con.close()

    def schema_version(self) -> int:
        con = self._connect()
        try:
            return con.execute("PRAGMA user_version").fetchone()[0]
        finally:
            con.close()

    # ---- row mapping --------------------------------------------------------------------------

    @staticmethod
    def _user(r: sqlite3.Row) -> User:
        return User(id=r["id"], uuid=r["uuid"], username=r["username"], email=r["email"],
                    first_name=r["first_name"], last_name=r["last_name"], language=r["language"],
                    admin=bool(r["admin"]), created_at=r["created_at"])

    @staticmethod
    def _key(r: sqlite3.Row) -> ApiKey:
        return ApiKey(id=r["id"], identifier=r["identifier"], user_id=r["user_id"], memo=r["memo"],
                      last_used_at=r["last_used_at"], created_at=r["created_at"], revoked=r["revoked_at"] is not None)

    @staticmethod
    def _node(r: sqlite3.Row) -> Node:
        return Node(id=r["id"], uuid=r["uuid"], name=r["name"], scheme=r["scheme"], host=r["host"], port=r["port"],
                    sftp_port=r["sftp_port"], token_id=r["token_id"], token=r["token"],
                    maintenance=bool(r["maintenance"]), created_at=r["created_at"])

    @staticmethod
    def _server(r: sqlite3.Row) -> ServerRecord:
        return ServerRecord(id=r["id"], uuid=r["uuid"], identifier=r["identifier"], name=r["name"],
                            description=r["description"], owner_id=r["owner_id"], node_id=r["node_id"],
                            definition=json.loads(r["definition"]), suspended=bool(r["suspended"]),
                            status=r["status"], transferring=bool(r["transferring"]), created_at=r["created_at"])

    @staticmethod
    def _subuser(r: sqlite3.Row) -> Subuser:
        return Subuser(server_id=r["server_id"], user_id=r["user_id"], permissions=json.loads(r["permissions"]),
                       created_at=r["created_at"], updated_at=r["updated_at"])

    # ---- lookups by reference (id, uuid, name...) ---------------------------------------------

    def _find_user(self, con: sqlite3.Connection, ref: str | int) -> User:
        ref = str(ref).strip()
        if ref.isdigit():
            r = con.execute("SELECT * FROM users WHERE id = ?", (int(ref),)).fetchone()
        else:
            r = con.execute("SELECT * FROM users WHERE uuid = ? OR username = ? OR email = ?",
                            (ref.lower(), ref, ref)).fetchone()
        if r is None:
            raise NotFound(f"no user {ref!r}")
        return self._user(r)

    def _find_node(self, con: sqlite3.Connection, ref: str | int) -> Node:
        ref = str(ref).strip()
        if ref.isdigit():
            r = con.execute("SELECT * FROM nodes WHERE id = ?", (int(ref),)).fetchone()
        else:
            r = con.execute("SELECT * FROM nodes WHERE uuid = ? OR name = ?", (ref.lower(), ref)).fetchone()
        if r is None:
            raise NotFound(f"no node {ref!r}")
        return self._node(r)

    def _find_server(self, con: sqlite3.Connection, ref: str | int) -> ServerRecord:
        r = self._server_row(con, ref)
        if r is None:
            raise NotFound(f"no server {str(ref)!r}")
        return self._server(r)

    @staticmethod
    def _server_row(con: sqlite3.Connection, ref: str | int) -> sqlite3.Row | None:
        ref = str(ref).strip()
        if len(ref) == 8:
            return con.execute("SELECT * FROM servers WHERE identifier = ?", (ref.lower(),)).fetchone()
        if len(ref) == 36:
            return con.execute("SELECT * FROM servers WHERE uuid = ?", (ref.lower(),)).fetchone()
        if ref.isdigit():
            return con.execute("SELECT * FROM servers WHERE id = ?", (int(ref),)).fetchone()
        return None

    # ---- users --------------------------------------------------------------------------------

    def create_user(self, username: str, email: str | None = None, *, first_name: str = "", last_name: str = "",
                    language: str = "en", admin: bool = False) -> User:
        if not isinstance(username, str) or not _USERNAME.fullmatch(username) or username.isdigit():
            raise Invalid("username: 1-191 letters, digits, '_', '.', '-', starting with a letter or digit, "
                          "and not all digits")
        email = email or f"{username}@roost.local"
        if not _EMAIL.fullmatch(email):
            raise Invalid(f"email: {email!r} is not an email address")
        with self._write() as con:
            try:
                cur = con.execute(
                    "INSERT INTO users (uuid, username, email, first_name, last_name, language, admin, created_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (str(uuidlib.uuid4()), username, email, first_name, last_name, language or "en", int(admin),
                     now_iso()),
                )
            except sqlite3.IntegrityError:
                raise Conflict(f"a user with username {username!r} or email {email!r} exists already") from None
            return self._user(con.execute("SELECT * FROM users WHERE id = ?", (cur.lastrowid,)).fetchone())

    def list_users(self) -> list[User]:
        with self._read() as con:
            return [self._user(r) for r in con.execute("SELECT * FROM users ORDER BY id")]

    def find_user(self, ref: str | int) -> User:
        """By id, uuid, username or email."""
        with self._read() as con:
            return self._find_user(con, ref)

    def delete_user(self, ref: str | int) -> tuple[User, list[ServerRecord]]:
        """Delete a user, their keys and subuser places. Refused while they own servers.
        Returns the user and the servers they were a subuser of (their tokens need revoking)."""
        with self._write() as con:
            user = self._find_user(con, ref)
            owned = con.execute("SELECT identifier FROM servers WHERE owner_id = ?", (user.id,)).fetchall()
            if owned:
                raise Conflict(f"user {user.username!r} owns servers ({', '.join(r[0] for r in owned)}); "
                               "delete them first")
            servers = [self._server(r) for r in con.execute(
                "SELECT s.* FROM servers s JOIN subusers su ON su.server_id = s.id WHERE su.user_id = ? ORDER BY s.id",
                (user.id,))]
            con.execute("DELETE FROM users WHERE id = ?", (user.id,))
            return user, servers

    # ---- API keys -----------------------------------------------------------------------------

    def create_api_key(self, user_ref: str | int, memo: str = "") -> tuple[ApiKey, str]:
        """A new client API key for a user: (record, the full key). The key is not kept."""
        with self._write() as con:
            user = self._find_user(con, user_ref)
            while True:
                identifier, secret = credentials.new_api_key()
                if con.execute("SELECT 1 FROM api_keys WHERE identifier = ?", (identifier,)).fetchone() is None:
                    break
            salt, digest = credentials.hash_secret(secret)
            cur = con.execute(
                "INSERT INTO api_keys (identifier, user_id, salt, secret_hash, memo, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                (identifier, user.id, salt, digest, memo or "", now_iso()),
            )
            row = con.execute("SELECT * FROM api_keys WHERE id = ?", (cur.lastrowid,)).fetchone()
            return self._key(row), identifier + secret

    def list_api_keys(self, user_ref: str | int | None = None) -> list[ApiKey]:
        with self._read() as con:
            if user_ref is None:
                rows = con.execute("SELECT * FROM api_keys ORDER BY id")
            else:
                user = self._find_user(con, user_ref)
                rows = con.execute("SELECT * FROM api_keys WHERE user_id = ? ORDER BY id", (user.id,))
            return [self._key(r) for r in rows]

    def revoke_api_key(self, identifier: str) -> ApiKey:
        identifier = identifier.strip()[: credentials.IDENTIFIER_LENGTH]
        with self._write() as con:
            r = con.execute("SELECT * FROM api_keys WHERE identifier = ?", (identifier,)).fetchone()
            if r is None:
                raise NotFound(f"no API key {identifier!r}")
            if r["revoked_at"] is None:
                con.execute("UPDATE api_keys SET revoked_at = ? WHERE id = ?", (now_iso(), r["id"]))
            return self._key(con.execute("SELECT * FROM api_keys WHERE id = ?", (r["id"],)).fetchone())

    def authenticate(self, key: str, *, touch_after_s: float = 60.0) -> tuple[User, ApiKey] | None:
        """The user behind a presented client API key, or None (unknown, wrong or revoked).
        The comparison is constant-time; `last_used_at` is refreshed at most once a minute."""
        parts = credentials.split_api_key(key)
        if parts is None:
            credentials.secret_matches(key if isinstance(key, str) else "", None, None)
            return None
        identifier, secret = parts
        with self._read() as con:
            r = con.execute("SELECT * FROM api_keys WHERE identifier = ?", (identifier,)).fetchone()
            ok = credentials.secret_matches(secret, r["salt"] if r else None, r["secret_hash"] if r else None)
            if not ok or r["revoked_at"] is not None:
                return None
            user = self._user(con.execute("SELECT * FROM users WHERE id = ?", (r["user_id"],)).fetchone())
            api_key = self._key(r)
        if api_key.last_used_at is None or _age_s(api_key.last_used_at) >= touch_after_s:
            with self._write() as con:
                con.execute("UPDATE api_keys SET last_used_at = ? WHERE id = ?", (now_iso(), api_key.id))
        return user, api_key

    # ---- nodes --------------------------------------------------------------------------------

    def add_node(self, name: str, url: str, *, token_id: str | None = None, token: str | None = None,
                 sftp_port: int = 2022, maintenance: bool = False, uuid: str | None = None) -> Node:
        """Register a node (its API URL and the credentials in its config.yml; generated when
        not given)."""
        scheme, host, port = parse_node_url(url)
        if not name or not isinstance(name, str) or name.isdigit():
            raise Invalid("node name: required, and not all digits")
        gen_id, gen_token = credentials.new_node_credentials()
        token_id = token_id or gen_id
        token = token or gen_token
        if "." in token_id or not token_id.strip():
            raise Invalid("node token_id: must not be empty or contain '.'")
        with self._write() as con:
            try:
                cur = con.execute(
                    "INSERT INTO nodes (uuid, name, scheme, host, port, sftp_port, token_id, token, maintenance, created_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (uuid or str(uuidlib.uuid4()), name, scheme, host, port, int(sftp_port), token_id, token,
                     int(maintenance), now_iso()),
                )
            except sqlite3.IntegrityError:
                raise Conflict(f"a node named {name!r} or with that token id exists already") from None
            return self._node(con.execute("SELECT * FROM nodes WHERE id = ?", (cur.lastrowid,)).fetchone())

    def update_node(self, ref: str | int, *, url: str | None = None, token_id: str | None = None,
                    token: str | None = None, sftp_port: int | None = None, maintenance: bool | None = None) -> Node:
        with self._write() as con:
            node = self._find_node(con, ref)
            scheme, host, port = parse_node_url(url) if url else (node.scheme, node.host, node.port)
            try:
                con.execute(
                    "UPDATE nodes SET scheme = ?, host = ?, port = ?, token_id = ?, token = ?, sftp_port = ?,"
                    " maintenance = ? WHERE id = ?",
                    (scheme, host, port, token_id or node.token_id, token or node.token,
                     node.sftp_port if sftp_port is None else int(sftp_port),
                     int(node.maintenance if maintenance is None else maintenance), node.id),
                )
            except sqlite3.IntegrityError:
                raise Conflict("another node has that token id") from None
            return self._node(con.execute("SELECT * FROM nodes WHERE id = ?", (node.id,)).fetchone())

    def list_nodes(self) -> list[Node]:
        with self._read() as con:
            return [self._node(r) for r in con.execute("SELECT * FROM nodes ORDER BY id")]

    def find_node(self, ref: str | int) -> Node:
        """By id, uuid or name."""
        with self._read() as con:
            return self._find_node(con, ref)

    def get_node(self, node_id: int) -> Node:
        with self._read() as con:
            return self._find_node(con, node_id)

    def remove_node(self, ref: str | int) -> Node:
        with self._write() as con:
            node = self._find_node(con, ref)
            n = con.execute("SELECT COUNT(*) FROM servers WHERE node_id = ?", (node.id,)).fetchone()[0]
            if n:
                raise Conflict(f"node {node.name!r} still has {n} server(s); delete or move them first")
            con.execute("DELETE FROM nodes WHERE id = ?", (node.id,))
            return node

    def authenticate_node(self, token_id: str, token: str) -> Node | None:
        """The node presenting `<token_id>.<token>`, or None (constant-time on the token)."""
        with self._read() as con:
            r = con.execute("SELECT * FROM nodes WHERE token_id = ?", (token_id,)).fetchone()
        expected = r["token"] if r is not None else "x" * credentials.NODE_TOKEN_LENGTH
        ok = credentials.tokens_equal(token, expected)
        return self._node(r) if (ok and r is not None) else None

    # ---- servers ------------------------------------------------------------------------------

    def create_server(self, definition: dict[str, Any], *, owner: str | int, node: str | int | None = None,
                      name: str | None = None, description: str | None = None, uuid: str | None = None,
                      status: str | None = None) -> ServerRecord:
        """Place a server (a definition in the panel's shape) on a node (default: the first).

        The uuid comes from `uuid`, else the definition's `settings.uuid`, else a new one; the
        identifier is its first 8 characters and must be unique too.
        """
        if not isinstance(definition, dict):
            raise Invalid("definition: expected a mapping with `settings` and `process_configuration`")
        doc = copy.deepcopy(definition)
        settings = doc.get("settings")
        if settings is None:
            settings = doc["settings"] = {}
        if not isinstance(settings, dict):
            raise Invalid("definition: `settings` must be a mapping")
        server_uuid = (uuid or settings.get("uuid") or str(uuidlib.uuid4()))
        try:
            server_uuid = str(uuidlib.UUID(str(server_uuid)))
        except ValueError:
            raise Invalid(f"uuid: {server_uuid!r} is not a uuid") from None
        settings["uuid"] = server_uuid
        meta = settings.get("meta") if isinstance(settings.get("meta"), dict) else {}
        name = (name or meta.get("name") or "").strip() or f"Server {server_uuid[:8]}"
        description = description if description is not None else str(meta.get("description") or "")
        if status not in SERVER_STATUSES:
            raise Invalid(f"status: one of {SERVER_STATUSES}")
        _validate_definition(doc)
        with self._write() as con:
            owner_user = self._find_user(con, owner)
            if node is None:
                r = con.execute("SELECT * FROM nodes ORDER BY id LIMIT 1").fetchone()
                if r is None:
                    raise Invalid("no node is registered; add one first (roost node add)")
                target = self._node(r)
            else:
                target = self._find_node(con, node)
            try:
                cur = con.execute(
                    "INSERT INTO servers (uuid, identifier, name, description, owner_id, node_id, definition, status,"
                    " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (server_uuid, server_uuid[:8], name, description, owner_user.id, target.id,
                     json.dumps(doc, separators=(",", ":")), status, now_iso()),
                )
            except sqlite3.IntegrityError:
                raise Conflict(f"a server with uuid {server_uuid} or identifier {server_uuid[:8]} exists already") from None
            return self._server(con.execute("SELECT * FROM servers WHERE id = ?", (cur.lastrowid,)).fetchone())

    def find_server(self, ref: str | int) -> ServerRecord:
        """By 8-character identifier, uuid or numeric id."""
        with self._read() as con:
            return self._find_server(con, ref)

    def list_servers(self, *, node: str | int | None = None, owner: str | int | None = None) -> list[ServerRecord]:
        with self._read() as con:
            sql, args = "SELECT * FROM servers", []
            where = []
            if node is not None:
                where.append("node_id = ?")
                args.append(self._find_node(con, node).id)
            if owner is not None:
                where.append("owner_id = ?")
                args.append(self._find_user(con, owner).id)
            if where:
                sql += " WHERE " + " AND ".join(where)
            return [self._server(r) for r in con.execute(sql + " ORDER BY id", args)]

    def delete_server(self, ref: str | int) -> tuple[ServerRecord, Node]:
        with self._write() as con:
            server = self._find_server(con, ref)
            node = self._find_node(con, server.node_id)
            con.execute("DELETE FROM servers WHERE id = ?", (server.id,))
            return server, node

    def set_suspended(self, ref: str | int, suspended: bool) -> tuple[ServerRecord, Node]:
        with self._write() as con:
            server = self._find_server(con, ref)
            con.execute("UPDATE servers SET suspended = ? WHERE id = ?", (int(suspended), server.id))
            return self._find_server(con, server.id), self._find_node(con, server.node_id)

    def set_status(self, ref: str | int, status: str | None, *, transferring: bool | None = None) -> ServerRecord:
        if status not in SERVER_STATUSES:
            raise Invalid(f"status: one of {SERVER_STATUSES}")
        with self._write() as con:
            server = self._find_server(con, ref)
            con.execute("UPDATE servers SET status = ?, transferring = ? WHERE id = ?",
                        (status, int(server.transferring if transferring is None else transferring), server.id))
            return self._find_server(con, server.id)

    def update_definition(self, ref: str | int, definition: dict[str, Any]) -> ServerRecord:
        with self._write() as con:
            server = self._find_server(con, ref)
            doc = copy.deepcopy(definition)
            doc.setdefault("settings", {})["uuid"] = server.uuid
            _validate_definition(doc)
            con.execute("UPDATE servers SET definition = ? WHERE id = ?",
                        (json.dumps(doc, separators=(",", ":")), server.id))
            return self._find_server(con, server.id)

    # ---- what a user sees ---------------------------------------------------------------------

    def access(self, user: User, ref: str) -> Access | None:
        """The server `ref` (identifier or uuid) as `user` may see it; None when it does not
        exist or the user is neither its owner, a subuser nor a root admin."""
        with self._read() as con:
            r = self._server_row(con, ref) if len(str(ref)) in (8, 36) else None
            if r is None:
                return None
            server = self._server(r)
            sub = con.execute("SELECT permissions FROM subusers WHERE server_id = ? AND user_id = ?",
                              (server.id, user.id)).fetchone()
            perms = json.loads(sub["permissions"]) if sub else None
            if not (user.admin or server.owner_id == user.id or perms is not None):
                return None
            node = self._find_node(con, server.node_id)
            owner = self._user(con.execute("SELECT * FROM users WHERE id = ?", (server.owner_id,)).fetchone())
            return Access(server=server, node=node, owner=owner, subuser_permissions=perms)

    def token_context(self, user: User, server_id: int) -> tuple[Access | None, Revocation]:
        """In one snapshot: the user's access to the server and the revocation state of the
        pair (websocket tokens are minted from exactly this)."""
        with self._read() as con:
            r = con.execute("SELECT * FROM servers WHERE id = ?", (server_id,)).fetchone()
            rev = con.execute("SELECT pending_since, not_before FROM revocations WHERE user_id = ? AND server_id = ?",
                              (user.id, server_id)).fetchone()
            revocation = Revocation(rev["pending_since"], rev["not_before"]) if rev else Revocation(None, 0.0)
            if r is None:
                return None, revocation
            server = self._server(r)
            sub = con.execute("SELECT permissions FROM subusers WHERE server_id = ? AND user_id = ?",
                              (server.id, user.id)).fetchone()
            perms = json.loads(sub["permissions"]) if sub else None
            u = con.execute("SELECT * FROM users WHERE id = ?", (user.id,)).fetchone()
            if u is None:
                return None, revocation
            fresh = self._user(u)
            if not (fresh.admin or server.owner_id == fresh.id or perms is not None):
                return None, revocation
            node = self._find_node(con, server.node_id)
            owner = self._user(con.execute("SELECT * FROM users WHERE id = ?", (server.owner_id,)).fetchone())
            return Access(server=server, node=node, owner=owner, subuser_permissions=perms), revocation

    def visible_servers(self, user: User, *, kind: str | None = None, page: int = 1,
                        per_page: int = 50) -> tuple[list[tuple[ServerRecord, Node, list[str] | None]], int]:
        """A page of the servers `GET /api/client` lists, with the total.

        kind None: owned plus subuser; "owner": owned; "admin": (root admins only) the servers
        they neither own nor are a subuser of; "admin-all": (root admins only) every server.
        """
        access_sql = "(s.owner_id = :uid OR s.id IN (SELECT server_id FROM subusers WHERE user_id = :uid))"
        if kind in ("admin", "admin-all"):
            if not user.admin:
                return [], 0
            where = "1 = 1" if kind == "admin-all" else f"NOT {access_sql}"
        elif kind == "owner":
            where = "s.owner_id = :uid"
        else:
            where = access_sql
        args = {"uid": user.id, "limit": per_page, "offset": (page - 1) * per_page}
        with self._read() as con:
            total = con.execute(f"SELECT COUNT(*) FROM servers s WHERE {where}", args).fetchone()[0]
            rows = con.execute(
                f"SELECT s.*, su.permissions AS sub_permissions FROM servers s"
                f" LEFT JOIN subusers su ON su.server_id = s.id AND su.user_id = :uid"
                f" WHERE {where} ORDER BY s.id LIMIT :limit OFFSET :offset", args).fetchall()
            nodes: dict[int, Node] = {}
            out = []
            for r in rows:
                if r["node_id"] not in nodes:
                    nodes[r["node_id"]] = self._find_node(con, r["node_id"])
                perms = json.loads(r["sub_permissions"]) if r["sub_permissions"] is not None else None
                out.append((self._server(r), nodes[r["node_id"]], perms))
            return out, total

    # ---- subusers and revocation --------------------------------------------------------------

    def add_subuser(self, server_ref: str | int, user_ref: str | int, permissions: list[str]) -> Subuser:
        perms = _permissions(permissions)
        with self._write() as con:
            server = self._find_server(con, server_ref)
            user = self._find_user(con, user_ref)
            if user.id == server.owner_id:
                raise Conflict(f"{user.username!r} owns this server; an owner cannot also be a subuser")
            try:
                stamp = now_iso()
                con.execute("INSERT INTO subusers (server_id, user_id, permissions, created_at, updated_at)"
                            " VALUES (?, ?, ?, ?, ?)", (server.id, user.id, json.dumps(perms), stamp, stamp))
            except sqlite3.IntegrityError:
                raise Conflict(f"{user.username!r} is a subuser of {server.identifier} already; use change") from None
            return self._subuser(con.execute("SELECT * FROM subusers WHERE server_id = ? AND user_id = ?",
                                             (server.id, user.id)).fetchone())

    def change_subuser(self, server_ref: str | int, user_ref: str | int, permissions: list[str],
                       *, now: float | None = None) -> tuple[Subuser, ServerRecord, User, Node]:
        """New permissions, and (in the same transaction) a revocation marked in flight for the
        pair: no token is minted for it until `finish_revocation`."""
        perms = _permissions(permissions)
        with self._write() as con:
            server = self._find_server(con, server_ref)
            user = self._find_user(con, user_ref)
            cur = con.execute("UPDATE subusers SET permissions = ?, updated_at = ? WHERE server_id = ? AND user_id = ?",
                              (json.dumps(perms), now_iso(), server.id, user.id))
            if cur.rowcount == 0:
                raise NotFound(f"{user.username!r} is not a subuser of {server.identifier}")
            self._begin_revocation(con, user.id, server.id, now)
            sub = self._subuser(con.execute("SELECT * FROM subusers WHERE server_id = ? AND user_id = ?",
                                            (server.id, user.id)).fetchone())
            return sub, server, user, self._find_node(con, server.node_id)

    def remove_subuser(self, server_ref: str | int, user_ref: str | int,
                       *, now: float | None = None) -> tuple[ServerRecord, User, Node]:
        with self._write() as con:
            server = self._find_server(con, server_ref)
            user = self._find_user(con, user_ref)
            cur = con.execute("DELETE FROM subusers WHERE server_id = ? AND user_id = ?", (server.id, user.id))
            if cur.rowcount == 0:
                raise NotFound(f"{user.username!r} is not a subuser of {server.identifier}")
            self._begin_revocation(con, user.id, server.id, now)
            return server, user, self._find_node(con, server.node_id)

    def list_subusers(self, server_ref: str | int | None = None) -> list[tuple[Subuser, ServerRecord, User]]:
        with self._read() as con:
            if server_ref is None:
                rows = con.execute("SELECT * FROM subusers ORDER BY server_id, user_id").fetchall()
            else:
                server = self._find_server(con, server_ref)
                rows = con.execute("SELECT * FROM subusers WHERE server_id = ? ORDER BY user_id",
                                   (server.id,)).fetchall()
            out = []
            for r in rows:
                out.append((self._subuser(r), self._find_server(con, r["server_id"]), self._find_user(con, r["user_id"])))
            return out

    @staticmethod
    def _begin_revocation(con: sqlite3.Connection, user_id: int, server_id: int, now: float | None) -> None:
        con.execute(
            "INSERT INTO revocations (user_id, server_id, pending_since, not_before) VALUES (?, ?, ?, 0)"
            " ON CONFLICT (user_id, server_id) DO UPDATE SET pending_since = excluded.pending_since",
            (user_id, server_id, time.time() if now is None else now),
        )

    def begin_revocation(self, user_id: int, server_id: int, *, now: float | None = None) -> None:
        with self._write() as con:
            self._begin_revocation(con, user_id, server_id, now)

    def finish_revocation(self, user_id: int, server_id: int, *, completed_at: float | None = None) -> float:
        """The node has applied (or refused) the deny: tokens for the pair may be minted again,
        with iat strictly after the second the deny completed. Returns that not_before."""
        done = time.time() if completed_at is None else completed_at
        not_before = float(math.floor(done) + 1)
        with self._write() as con:
            con.execute(
                "INSERT INTO revocations (user_id, server_id, pending_since, not_before) VALUES (?, ?, NULL, ?)"
                " ON CONFLICT (user_id, server_id) DO UPDATE SET pending_since = NULL,"
                " not_before = max(not_before, excluded.not_before)",
                (user_id, server_id, not_before),
            )
        return not_before

    # ---- the remote API (a node's view) -------------------------------------------------------

    def node_servers(self, node_id: int, *, page: int, per_page: int) -> tuple[list[ServerRecord], int]:
        with self._read() as con:
            total = con.execute("SELECT COUNT(*) FROM servers WHERE node_id = ?", (node_id,)).fetchone()[0]
            rows = con.execute("SELECT * FROM servers WHERE node_id = ? ORDER BY id LIMIT ? OFFSET ?",
                               (node_id, per_page, (page - 1) * per_page)).fetchall()
            return [self._server(r) for r in rows], total

    def node_server(self, node_id: int, server_uuid: str) -> ServerRecord | None:
        with self._read() as con:
            r = con.execute("SELECT * FROM servers WHERE uuid = ? AND node_id = ?",
                            (server_uuid.lower(), node_id)).fetchone()
            return self._server(r) if r else None

    def reset_node_states(self, node_id: int) -> int:
        """Boot of a node: servers stuck installing or restoring are back to normal."""
        with self._write() as con:
            cur = con.execute("UPDATE servers SET status = NULL WHERE node_id = ? AND status IN"
                              " ('installing', 'restoring_backup')", (node_id,))
            return cur.rowcount

    def record_install(self, node_id: int, server_uuid: str, *, successful: bool, reinstall: bool) -> ServerRecord | None:
        with self._write() as con:
            r = con.execute("SELECT * FROM servers WHERE uuid = ? AND node_id = ?",
                            (server_uuid.lower(), node_id)).fetchone()
            if r is None:
                return None
            status = None if successful else ("reinstall_failed" if reinstall else "install_failed")
            con.execute("UPDATE servers SET status = ?, installed_at = ? WHERE id = ?", (status, now_iso(), r["id"]))
            return self._server(con.execute("SELECT * FROM servers WHERE id = ?", (r["id"],)).fetchone())

    def add_activity(self, node_id: int, items: list[dict[str, Any]]) -> int:
        stamp = now_iso()
        with self._write() as con:
            for it in items:
                con.execute(
                    "INSERT INTO activity (node_id, server_uuid, user_uuid, event, metadata, ip, timestamp, received_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (node_id, it["server"], it.get("user"), it["event"], json.dumps(it.get("metadata")),
                     it.get("ip"), it["timestamp"], stamp),
                )
            con.execute("DELETE FROM activity WHERE id <= (SELECT max(id) FROM activity) - ?", (ACTIVITY_KEEP,))
        return len(items)

    def list_activity(self, limit: int = 100) -> list[dict[str, Any]]:
        with self._read() as con:
            rows = con.execute("SELECT * FROM activity ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
            return [{k: r[k] for k in r.keys()} for r in rows]


def _permissions(permissions: list[str]) -> list[str]:
    try:
        return normalise_subuser_permissions(permissions)
    except InvalidPermissions as e:
        raise Invalid(str(e)) from None


def _validate_definition(doc: dict[str, Any]) -> None:
    try:
        ServerDefinition.model_validate(doc)
    except ValidationError as e:
        fields = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors())
        raise Invalid(f"definition: {fields}") from None


def _age_s(iso: str) -> float:
    try:
        return time.time() - datetime.fromisoformat(iso).timestamp()
    except ValueError:
        return float("inf")
