"""What the token service says to its nodes: the node API of http-api §1, as a panel calls it.

One method per call, each with a timeout and without retries (the caller reports a failure;
the store change it follows stands). Errors never carry the node token.
"""
from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from .store import Node

DEFAULT_TIMEOUT_S = 10.0


class NodeError(Exception):
    """A node call failed. `status` is the node's HTTP status (None: unreachable/timeout)."""

    def __init__(self, message: str, *, status: int | None = None, error: str | None = None,
                 request_id: str | None = None):
        super().__init__(message)
        self.status = status
        self.error = error  # the node's own `error` text, when it sent one
        self.request_id = request_id


class NodeClient:
    def __init__(self, *, timeout_s: float = DEFAULT_TIMEOUT_S):
        self.timeout_s = timeout_s
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> "NodeClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s))
        return self._session

    async def request(self, node: Node, method: str, path: str, *, body: Any = None) -> Any:
        """Call the node; the parsed JSON answer (None when empty), or NodeError."""
        headers = {
            "Authorization": f"Bearer {node.token}",
            "Accept": "application/json",
            "User-Agent": "roost-tokenservice",
        }
        what = f"{method} {path} on node {node.name} ({node.url})"
        try:
            async with self._get_session().request(method, node.url + path, json=body, headers=headers) as r:
                text = await r.text()
                request_id = r.headers.get("X-Request-Id")
                try:
                    doc = json.loads(text) if text else None
                except ValueError:
                    doc = None
                if r.status >= 400:
                    error = doc.get("error") if isinstance(doc, dict) else None
                    detail = f": {error}" if isinstance(error, str) else ""
                    raise NodeError(f"{what} answered {r.status}{detail}", status=r.status,
                                    error=error if isinstance(error, str) else None, request_id=request_id)
                return doc
        except NodeError:
            raise
        except asyncio.TimeoutError:
            raise NodeError(f"{what} timed out after {self.timeout_s:g}s") from None
        except (aiohttp.ClientError, OSError) as e:
            raise NodeError(f"{what} failed: {type(e).__name__}") from None

    # ---- one method per node API call ---------------------------------------------------------

    async def server_details(self, node: Node, uuid: str) -> dict:
        doc = await self.request(node, "GET", f"/api/servers/{uuid}")
        return doc if isinstance(doc, dict) else {}

    async def power(self, node: Node, uuid: str, action: str) -> None:
        await self.request(node, "POST", f"/api/servers/{uuid}/power", body={"action": action})

    async def send_commands(self, node: Node, uuid: str, commands: list[str]) -> None:
        await self.request(node, "POST", f"/api/servers/{uuid}/commands", body={"commands": commands})

    async def deny_jtis(self, node: Node, uuid: str, jtis: list[str]) -> None:
        await self.request(node, "POST", f"/api/servers/{uuid}/ws/deny", body={"jtis": jtis})

    async def sync(self, node: Node, uuid: str) -> None:
        await self.request(node, "POST", f"/api/servers/{uuid}/sync")

    async def delete(self, node: Node, uuid: str) -> None:
        await self.request(node, "DELETE", f"/api/servers/{uuid}")

    async def create(self, node: Node, uuid: str, *, start_on_completion: bool = False) -> None:
        await self.request(node, "POST", "/api/servers", body={"uuid": uuid, "start_on_completion": start_on_completion})
