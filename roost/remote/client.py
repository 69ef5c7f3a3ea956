"""The daemon's client for its panel's remote API (http-api §2).

One method per endpoint. Network errors and 5xx are retried with backoff for about
`retry_total_s`; a 4xx is the panel's answer and is never retried.
"""
from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

import aiohttp

log = logging.getLogger("roost.remote")


class PanelError(Exception):
    """The panel refused or could not be reached (message is safe to log: no credentials)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class PanelClient:
    def __init__(
        self,
        base_url: str,
        token_id: str,
        token: str,
        *,
        timeout_s: float = 15.0,
        retry_total_s: float = 30.0,
    ):
        self._base = base_url.rstrip("/") + "/api/remote"
        self._headers = {
            "Authorization": f"Bearer {token_id}.{token}",
            "Accept": "application/vnd.pterodactyl.v1+json",
            "Content-Type": "application/json",
        }
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._retry_total_s = retry_total_s
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _request(self, method: str, path: str, *, json_body: Any = None, params: dict | None = None) -> Any:
        if self._session is None:
            self._session = aiohttp.ClientSession(headers=self._headers, timeout=self._timeout)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._retry_total_s
        delay = 0.25
        while True:
            try:
                async with self._session.request(method, self._base + path, json=json_body, params=params) as r:
                    if r.status < 400:
                        text = await r.text()
                        return None if not text else await r.json(content_type=None)
                    body = (await r.text())[:300]
                    if r.status < 500:
                        raise PanelError(f"panel answered {r.status} to {method} {path}: {body}", r.status)
                    problem = f"panel error {r.status} on {method} {path}"
            except PanelError:
                raise
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
                problem = f"panel unreachable ({type(e).__name__}) on {method} {path}"
            if loop.time() + delay > deadline:
                raise PanelError(problem)
            log.warning("%s; retrying in %.1fs", problem, delay)
            await asyncio.sleep(delay * (0.8 + 0.4 * random.random()))
            delay = min(delay * 2, 5.0)

    async def servers_page(self, page: int, per_page: int = 50) -> dict:
        return await self._request("GET", "/servers", params={"page": str(page), "per_page": str(per_page)})

    async def server(self, uuid: str) -> dict:
        return await self._request("GET", f"/servers/{uuid}")

    async def reset_servers(self) -> None:
        await self._request("POST", "/servers/reset")

    async def install_script(self, uuid: str) -> dict:
        return await self._request("GET", f"/servers/{uuid}/install")

    async def report_install(self, uuid: str, *, successful: bool, reinstall: bool) -> None:
        await self._request("POST", f"/servers/{uuid}/install", json_body={"successful": successful, "reinstall": reinstall})

    async def report_backup(self, backup: str, *, successful: bool, checksum: str, size: int) -> None:
        await self._request("POST", f"/backups/{backup}", json_body={
            "checksum": checksum, "checksum_type": "sha1", "size": size, "successful": successful, "parts": [],
        })

    async def report_restore(self, backup: str, *, successful: bool) -> None:
        await self._request("POST", f"/backups/{backup}/restore", json_body={"successful": successful})
