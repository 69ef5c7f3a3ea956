"""A narrow client for the container engine's API, on aiodocker.

Only what the runtime needs, with the engine's errors turned into `EngineError` (message safe
for admins) and a timeout on every call that is not meant to last (log follow, exit wait and
pulls are bounded by their callers). aiodocker drops two things roost needs, so two calls use
its request helper directly: `create` (the engine's `Warnings`, which say which limits it did
not apply) and `logs` (raw frames, to keep each entry's stream and timestamp).

One client (one HTTP connection pool) serves every server of a factory. The pool has no
connection cap: each running server holds two long requests (log follow, exit wait), and
aiohttp's default cap of 100 would stall the 51st server.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
from typing import Any, AsyncIterator

import aiodocker
import aiohttp
from aiodocker.exceptions import DockerError
from aiodocker.stream import Stream

DEFAULT_SOCKET = "/var/run/docker.sock"
# Streaming requests: no total or read timeout (they last as long as the container).
STREAM_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_read=None, sock_connect=10)


class EngineError(Exception):
    """The engine refused or failed a request (or could not be reached)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


def _engine_error(what: str, exc: BaseException) -> EngineError:
    if isinstance(exc, DockerError):
        return EngineError(f"{what}: {exc.message}", exc.status)
    if isinstance(exc, TimeoutError):
        return EngineError(f"{what}: the container engine did not answer in time")
    return EngineError(f"{what}: {exc}")


def resolve_url(url: str | None) -> str:
    """The engine address: the argument, else DOCKER_HOST, else the default unix socket. A
    bare path (Wings' `docker.socket`, e.g. /var/run/docker.sock) is a unix socket."""
    url = url or os.environ.get("DOCKER_HOST") or f"unix://{DEFAULT_SOCKET}"
    if url.startswith("/"):
        return f"unix://{url}"
    return url


class Engine:
    """Calls to one engine. Create in or outside a loop; the client connects lazily."""

    def __init__(self, url: str | None = None, timeout_s: float = 10.0) -> None:
        self.url = resolve_url(url)
        self.timeout_s = timeout_s
        self._docker: aiodocker.Docker | None = None

    def _client(self) -> aiodocker.Docker:
        if self._docker is None:
            if self.url.startswith("unix://"):
                connector: aiohttp.BaseConnector = aiohttp.UnixConnector(
                    self.url[len("unix://"):], limit=0)
                base = "unix://localhost"
            elif self.url.startswith(("tcp://", "http://")):
                connector = aiohttp.TCPConnector(limit=0)
                base = "http://" + self.url.split("://", 1)[1]
            else:
                raise EngineError(f"unsupported engine address {self.url!r} (unix:// or tcp://)")
            self._docker = aiodocker.Docker(url=base, connector=connector)
        return self._docker

    async def close(self) -> None:
        docker, self._docker = self._docker, None
        if docker is not None:
            await docker.close()
            # Our connector is ours to close (aiodocker leaves a caller's connector open).
            await docker.connector.close()

    async def _call(self, what: str, coro, timeout_s: float | None = None) -> Any:
        try:
            async with asyncio.timeout(timeout_s or self.timeout_s):
                return await coro
        except (DockerError, TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise _engine_error(what, exc) from exc

    async def version(self) -> dict:
        return await self._call("engine version", self._client().version())

    # -- containers --------------------------------------------------------------------------

    async def find(self, labels: dict[str, str]) -> list[dict]:
        """Every container (running or not) carrying all of `labels`, newest first."""
        filters = json.dumps({"label": [f"{k}={v}" for k, v in labels.items()]})
        docker = self._client()
        data = await self._call("list containers", docker._query_json(
            "containers/json", params={"all": "1", "filters": filters}))
        return sorted(data, key=lambda c: c.get("Created", 0), reverse=True)

    async def inspect(self, container_id: str) -> dict | None:
        """The container's details, None when it does not exist."""
        try:
            return await self._call("inspect container", self._client()._query_json(
                f"containers/{container_id}/json"))
        except EngineError as exc:
            if exc.status == 404:
                return None
            raise

    async def create(self, name: str, config: dict, timeout_s: float | None = None
                     ) -> tuple[str, list[str]]:
        """Create a container: (id, the engine's warnings)."""
        data = await self._call("create container", self._client()._query_json(
            "containers/create", method="POST", params={"name": name},
            data=json.dumps(config)), timeout_s)
        return data["Id"], [w for w in (data.get("Warnings") or []) if w]

    async def start(self, container_id: str, timeout_s: float | None = None) -> None:
        await self._call("start container",
                         self._client().containers.container(container_id).start(), timeout_s)

    async def kill(self, container_id: str, signal_name: str) -> bool:
        """Send a signal; False when the container is not running (or gone)."""
        try:
            await self._call("signal container", self._client().containers.container(
                container_id).kill(signal=signal_name))
            return True
        except EngineError as exc:
            if exc.status in (404, 409):
                return False
            raise

    async def remove(self, container_id: str, timeout_s: float | None = None) -> None:
        """Remove (killing it first if it runs); a missing container is fine."""
        try:
            await self._call("remove container", self._client().containers.container(
                container_id).delete(force=True, v=True), timeout_s)
        except EngineError as exc:
            if exc.status != 404:
                raise

    async def wait(self, container_id: str) -> int:
        """Block until the container is not running; its exit code. No timeout: this is the
        exit watch (cancel it to stop waiting)."""
        try:
            data = await self._client()._query_json(
                f"containers/{container_id}/wait", method="POST",
                params={"condition": "not-running"}, timeout=STREAM_TIMEOUT)
        except (DockerError, aiohttp.ClientError, OSError) as exc:
            raise _engine_error("wait for container", exc) from exc
        return int(data.get("StatusCode", 0))

    @contextlib.asynccontextmanager
    async def logs(self, container_id: str, *, follow: bool, since: str | None
                   ) -> AsyncIterator[aiohttp.StreamReader]:
        """The raw multiplexed, timestamped log (see logstream.FrameDecoder)."""
        params = {"stdout": "1", "stderr": "1", "timestamps": "1",
                  "follow": "1" if follow else "0"}
        if since:
            params["since"] = since
        try:
            async with asyncio.timeout(self.timeout_s):
                response = await self._client()._do_query(
                    f"containers/{container_id}/logs", "GET", params=params,
                    timeout=STREAM_TIMEOUT)
        except (DockerError, TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise _engine_error("read container log", exc) from exc
        try:
            yield response.content
        finally:
            response.close()

    async def attach_stdin(self, container_id: str) -> Stream:
        """A hijacked connection to the container's stdin (works before start too)."""
        stream = self._client().containers.container(container_id).attach(
            stdin=True, stdout=False, stderr=False)
        try:
            await self._call("attach to container stdin", stream.__aenter__())
        except BaseException:
            await stream.close()
            raise
        return stream

    async def stats_once(self, container_id: str) -> dict:
        """The engine's one-shot stats (the fallback when cgroup files are out of reach)."""
        return await self._call("container stats", self._client()._query_json(
            f"containers/{container_id}/stats", params={"stream": "0", "one-shot": "1"}))

    # -- images ------------------------------------------------------------------------------

    async def image_exists(self, ref: str) -> bool:
        try:
            await self._call("inspect image", self._client().images.inspect(ref))
            return True
        except EngineError as exc:
            if exc.status == 404:
                return False
            raise

    def pull(self, ref: str) -> AsyncIterator[dict]:
        """The engine's pull progress messages (raises DockerError on a failed pull)."""
        return self._client().images.pull(ref, stream=True, timeout=None)
