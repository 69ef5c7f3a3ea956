"""The token service's operations, over the store and the nodes' APIs.

Pure data operations live on `Store` (synchronous; call them directly, or through
`asyncio.to_thread` from a running loop). `TokenService` adds what must also reach a node:

- subuser change/removal → `POST /api/servers/{uuid}/ws/deny` (revokes that user's tokens);
- suspend/unsuspend → `POST /api/servers/{uuid}/sync`; delete → `DELETE /api/servers/{uuid}`;
- create → `POST /api/servers` (optional: the node also finds it at its next boot);
- websocket tokens, minted exactly as a panel mints them (issuer.py).

A node call that fails never undoes the store change: the result says what the node was not
told (`NodeOutcome`), and the caller reports it.

**Revocation and integer `iat`.** A node denies tokens of a jti whose `iat` (integer seconds)
is *before* the moment it received the deny (a float). A token minted in the same second as,
but after, a revocation would carry `iat = floor(now)` < deny time, and be denied too. So a
change marks the (user, server) pair "revocation in flight" in the same transaction as the
new permissions; tokens for the pair wait while it is in flight; once the node has answered
(at time r, after the node's deny time t), the pair gets `not_before = floor(r) + 1`, and a
token for it is minted only once `now >= not_before`, so its iat >= floor(r) + 1 > r >= t.
That is at most one second of waiting, once, right after a revocation. Each token's iat is
the clock read *before* the snapshot its permissions come from: a token minted from
permissions read before a change has iat <= that read < t, so the deny catches it.
This assumes the service's and the node's clocks agree (true on one machine; NTP otherwise).
"""
from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from .access import user_permissions
from .issuer import DEFAULT_TTL_S, mint_websocket_token, websocket_jti
from .nodeclient import DEFAULT_TIMEOUT_S, NodeClient, NodeError
from .store import Access, Node, NotFound, ServerRecord, Store, Subuser, User

T = TypeVar("T")

# Poll interval while a revocation for a pair is in flight (seconds).
REVOCATION_POLL_S = 0.05


@dataclass(frozen=True, slots=True)
class NodeOutcome:
    """What a node was asked to do after a store change, and whether it did."""

    node: str
    action: str
    ok: bool
    error: str | None = None
    consequence: str = ""  # what it means when it failed

    def public(self) -> dict[str, Any]:
        return {"node": self.node, "action": self.action, "ok": self.ok, "error": self.error,
                "consequence": None if self.ok else self.consequence}

    def describe(self) -> str:
        if self.ok:
            return f"node {self.node}: {self.action} done"
        return f"node {self.node}: {self.action} FAILED ({self.error}); {self.consequence}"


@dataclass(slots=True)
class Result(Generic[T]):
    """A store change that stands, and what the nodes were told about it."""

    record: T
    nodes: list[NodeOutcome] = field(default_factory=list)

    @property
    def nodes_ok(self) -> bool:
        return all(n.ok for n in self.nodes)


@dataclass(frozen=True, slots=True)
class WebsocketCredentials:
    token: str
    socket: str
    permissions: list[str]
    iat: int


class TokenService:
    """Operations that reach nodes, and websocket token minting. Safe to share between the
    aiohttp app and `roost up`; the CLI makes one per command."""

    def __init__(self, store: Store, *, public_url: str = "http://127.0.0.1:8080", token_ttl_s: int = DEFAULT_TTL_S,
                 node_timeout_s: float = DEFAULT_TIMEOUT_S, node_client: NodeClient | None = None):
        self.store = store
        self.public_url = public_url.rstrip("/")
        self.token_ttl_s = int(token_ttl_s)
        self.node_timeout_s = node_timeout_s
        self.nodes = node_client or NodeClient(timeout_s=node_timeout_s)
        # A revocation left "in flight" longer than this (a crashed CLI) no longer blocks minting:
        # the deny call it waited for has timed out by then.
        self.stale_revocation_s = node_timeout_s + 5.0

    async def close(self) -> None:
        await self.nodes.close()

    async def _run(self, fn, *args, **kw):
        return await asyncio.to_thread(fn, *args, **kw)

    async def _tell(self, node: Node, action: str, call, consequence: str) -> NodeOutcome:
        try:
            await call
        except NodeError as e:
            return NodeOutcome(node.name, action, False, str(e), consequence)
        return NodeOutcome(node.name, action, True)

    # ---- servers ------------------------------------------------------------------------------

    async def create_server(self, definition: dict[str, Any], *, owner: str | int, node: str | int | None = None,
                            name: str | None = None, description: str | None = None, uuid: str | None = None,
                            notify: bool = True, start_on_completion: bool = False) -> Result[ServerRecord]:
        """Store the server on its node; then, with `notify`, ask the node to create it (it
        fetches the configuration from this service's remote API)."""
        server = await self._run(self.store.create_server, definition, owner=owner, node=node, name=name,
                                 description=description, uuid=uuid)
        result = Result(server)
        if notify:
            target = await self._run(self.store.get_node, server.node_id)
            result.nodes.append(await self._tell(
                target, "create", self.nodes.create(target, server.uuid, start_on_completion=start_on_completion),
                "the node will pick the server up when it next boots (or retry with a sync)"))
        return result

    async def delete_server(self, ref: str | int) -> Result[ServerRecord]:
        server, node = await self._run(self.store.delete_server, ref)
        outcome = await self._tell(node, "delete", self.nodes.delete(node, server.uuid),
                                   "the server is gone from the store, but the node may still run it and keep its files")
        if not outcome.ok and "answered 404" in (outcome.error or ""):
            outcome = NodeOutcome(node.name, "delete", True)  # the node did not have it: nothing to do
        return Result(server, [outcome])

    async def set_suspended(self, ref: str | int, suspended: bool) -> Result[ServerRecord]:
        server, node = await self._run(self.store.set_suspended, ref, suspended)
        what = "suspension" if suspended else "unsuspension"
        outcome = await self._tell(node, "sync", self.nodes.sync(node, server.uuid),
                                   f"the client API applies the {what} now; the node applies it when it next "
                                   "fetches the server's configuration (start, sync or boot)")
        return Result(server, [outcome])

    async def suspend_server(self, ref: str | int) -> Result[ServerRecord]:
        return await self.set_suspended(ref, True)

    async def unsuspend_server(self, ref: str | int) -> Result[ServerRecord]:
        return await self.set_suspended(ref, False)

    # ---- subusers -----------------------------------------------------------------------------

    async def add_subuser(self, server: str | int, user: str | int, permissions: list[str]) -> Result[Subuser]:
        return Result(await self._run(self.store.add_subuser, server, user, permissions))

    async def change_subuser(self, server: str | int, user: str | int, permissions: list[str]) -> Result[Subuser]:
        """New permissions; the user's live tokens for the server are revoked on its node."""
        sub, srv, usr, node = await self._run(self.store.change_subuser, server, user, permissions)
        return Result(sub, [await self._revoke(usr, srv, node)])

    async def remove_subuser(self, server: str | int, user: str | int) -> Result[User]:
        srv, usr, node = await self._run(self.store.remove_subuser, server, user)
        return Result(usr, [await self._revoke(usr, srv, node)])

    async def delete_user(self, ref: str | int) -> Result[User]:
        """Delete a user (refused while they own servers); their tokens on servers they were a
        subuser of are revoked."""
        user, servers = await self._run(self.store.delete_user, ref)
        outcomes = []
        for s in servers:
            node = await self._run(self.store.get_node, s.node_id)
            await self._run(self.store.begin_revocation, user.id, s.id)
            outcomes.append(await self._revoke(user, s, node))
        return Result(user, outcomes)

    async def _revoke(self, user: User, server: ServerRecord, node: Node) -> NodeOutcome:
        """Deny the user's tokens for the server on its node, then let new tokens be minted
        (the pair was marked in flight by the store change)."""
        try:
            return await self._tell(
                node, "ws/deny", self.nodes.deny_jtis(node, server.uuid, [websocket_jti(user.id, server.uuid)]),
                f"{user.username}'s open consoles on {server.identifier} keep their old permissions until their "
                f"token expires (at most {self.token_ttl_s}s)")
        finally:
            # After the node's answer (or the timeout): its deny time is behind us.
            await self._run(self.store.finish_revocation, user.id, server.id, completed_at=time.time())

    # ---- websocket tokens ---------------------------------------------------------------------

    async def token_snapshot(self, user: User, server_id: int) -> tuple[Access | None, float]:
        """The user's access to the server, read once no revocation for the pair is in flight
        and its `not_before` has passed, and the clock reading to mint with (taken before the
        read; see the module docstring)."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self.stale_revocation_s
        while True:
            now = time.time()
            access, revocation = await self._run(self.store.token_context, user, server_id)
            if access is None:
                return None, now
            if revocation.pending_since is not None and now - revocation.pending_since < self.stale_revocation_s \
                    and loop.time() < give_up:
                await asyncio.sleep(REVOCATION_POLL_S)
                continue
            if now < revocation.not_before:
                await asyncio.sleep(revocation.not_before - now + 0.001)
                continue
            return access, now

    def mint(self, user: User, access: Access, now: float) -> WebsocketCredentials:
        """A websocket token for `user` on the server in `access`, as a panel mints it."""
        server, node = access.server, access.node
        perms = user_permissions(is_admin=user.admin, is_owner=user.id == server.owner_id,
                                 subuser=access.subuser_permissions) or []
        token = mint_websocket_token(
            secret=node.token, server_uuid=server.uuid, user_uuid=user.uuid, user_id=user.id,
            permissions=perms, issuer=self.public_url, node_url=node.url, ttl_s=self.token_ttl_s, now=now,
        )
        return WebsocketCredentials(token=token, socket=node.socket_url(server.uuid), permissions=perms, iat=int(now))

    async def websocket_credentials(self, user: User, server_ref: str) -> WebsocketCredentials | None:
        """Convenience for in-process callers (no state or permission checks: the client API
        route does those): None when the user has no access to the server."""
        access = await self._run(self.store.access, user, server_ref)
        if access is None:
            return None
        access, now = await self.token_snapshot(user, access.server.id)
        return None if access is None else self.mint(user, access, now)


# ---- first start (for `roost up`) ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Bootstrap:
    user: User
    api_key: str | None  # the full key; None when it was created earlier and no key file holds it
    node: Node
    server: ServerRecord
    created: bool  # True on the first start


def bootstrap(store: Store, *, node_url: str, node_token_id: str, node_token: str, definition: dict[str, Any],
              key_file: str | Path | None = None, admin_username: str = "admin", node_name: str = "local",
              server_name: str | None = None) -> Bootstrap:
    """First start of a one-machine install, idempotent: an admin user, a client API key, the
    local node (address and credentials updated on every call, so a changed port or token
    applies) and one server from `definition` (created only when the node has none).

    The full key exists only at creation: with `key_file`, it is written there (mode 0600) and
    read back on later starts, so `roost up` can print it every time.
    """
    created = False
    try:
        user = store.find_user(admin_username)
    except NotFound:
        user = store.create_user(admin_username, admin=True, first_name="roost", last_name="admin")
        created = True
    try:
        node = store.find_node(node_name)
        node = store.update_node(node.id, url=node_url, token_id=node_token_id, token=node_token)
    except NotFound:
        node = store.add_node(node_name, node_url, token_id=node_token_id, token=node_token)
        created = True
    servers = store.list_servers(node=node.id)
    if servers:
        server = servers[0]
    else:
        server = store.create_server(definition, owner=user.id, node=node.id, name=server_name)
        created = True
    key: str | None = None
    path = Path(key_file) if key_file else None
    if path is not None and path.exists():
        key = path.read_text().strip() or None
        if key is not None and store.authenticate(key) is None:
            key = None  # revoked or from another store: make a new one
    if key is None and (path is not None or not store.list_api_keys(user.id)):
        _record, key = store.create_api_key(user.id, memo="roost up")
        if path is not None:
            tmp = path.with_name(f".{path.name}.tmp")
            fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
            with open(fd, "w") as f:
                f.write(key + "\n")
            os.replace(tmp, path)
    return Bootstrap(user=user, api_key=key, node=node, server=server, created=created)


__all__ = ["TokenService", "NodeOutcome", "Result", "WebsocketCredentials", "Bootstrap", "bootstrap"]
