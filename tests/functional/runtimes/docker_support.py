"""Fixtures for Docker runtime tests: a real engine, the local test image, a fake registry.

The engine is made available by `scripts/docker.sh ensure` (install docker.io, start dockerd
with the vfs driver, build `roost-test/fakegame:latest` with `docker import`); the
`docker_engine` fixture runs it once when no engine answers or the image is missing, and
skips the tests with the reason only when that fails. Every container a test creates carries
`roost.test=1` and a per-test run label, and is removed at the end even when the test fails.
"""
from __future__ import annotations

import gzip
import hashlib
import http.client
import io
import json
import os
import shutil
import socket
import subprocess
import tarfile
import tempfile
import uuid

import pytest
from aiohttp import web

from roost.runtimes.base import LaunchSpec, Limits
from roost.runtimes.docker import DockerRuntimeFactory, DockerServerRuntime
from roost.runtimes.docker.engine import DEFAULT_SOCKET, Engine

from .conftest import REPO, Recorder

IMAGE = "roost-test/fakegame:latest"
LOCAL_IMAGE = "~" + IMAGE
FAKEGAME = "python3 /opt/roost/fakegame.py"
TEST_LABELS = {"roost.test": "1"}
ENSURE_TIMEOUT_S = 900


def _socket_path() -> str:
    host = os.environ.get("DOCKER_HOST", "")
    return host[len("unix://"):] if host.startswith("unix://") else DEFAULT_SOCKET


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=5)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(5)
        self.sock.connect(self._path)


def _get(path: str) -> tuple[int, bytes]:
    conn = _UnixHTTPConnection(_socket_path())
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def engine_problem() -> str | None:
    """None when the engine answers and has the test image, else what is missing."""
    try:
        status, _ = _get("/_ping")
        if status != 200:
            return f"the engine at {_socket_path()} answered /_ping with {status}"
        status, _ = _get(f"/images/{IMAGE}/json")
        if status != 200:
            return f"the test image {IMAGE} is missing"
    except OSError as exc:
        return f"no container engine at {_socket_path()}: {exc}"
    return None


@pytest.fixture(scope="session")
def docker_engine() -> None:
    """A running engine with the test image; started/built with scripts/docker.sh when
    needed (as the README test command does), else the tests are skipped with the reason."""
    problem = engine_problem()
    if problem is None:
        return
    script = os.path.join(REPO, "scripts", "docker.sh")
    if os.geteuid() != 0 or not os.path.exists(script):
        pytest.skip(f"Docker runtime tests need an engine: {problem} (and cannot start one "
                    f"without root)")
    try:
        done = subprocess.run(["sh", script, "ensure"], capture_output=True, text=True,
                              timeout=ENSURE_TIMEOUT_S, cwd=REPO)
    except subprocess.TimeoutExpired:
        pytest.skip(f"Docker runtime tests need an engine: {problem}; "
                    f"scripts/docker.sh ensure took over {ENSURE_TIMEOUT_S}s")
    problem = engine_problem()
    if problem is not None:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-8:])
        pytest.skip(f"Docker runtime tests need an engine: {problem}; "
                    f"scripts/docker.sh ensure said:\n{tail}")


class DockerHarness:
    """Creates factories and runtimes for one test and removes all they made at the end."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.state_root = os.path.join(root, "state")
        self.run_id = uuid.uuid4().hex[:12]
        self.labels = {**TEST_LABELS, "roost.test.run": self.run_id}
        self.factories: list[DockerRuntimeFactory] = []
        self.runtimes: list[DockerServerRuntime] = []
        self.engine = Engine(timeout_s=30)

    def factory(self, **kwargs) -> DockerRuntimeFactory:
        kwargs.setdefault("state_root", self.state_root)
        kwargs.setdefault("timeout_s", 10.0)
        factory = DockerRuntimeFactory(labels=self.labels, **kwargs)
        self.factories.append(factory)
        return factory

    def runtime(self, factory: DockerRuntimeFactory | None = None,
                server_uuid: str | None = None
                ) -> tuple[DockerServerRuntime, Recorder, str]:
        server_uuid = server_uuid or str(uuid.uuid4())
        recorder = Recorder()
        data_dir = os.path.join(self.root, "data", server_uuid)
        runtime = (factory or self.factory()).for_server(server_uuid, data_dir, recorder)
        self.runtimes.append(runtime)
        return runtime, recorder, data_dir

    @staticmethod
    def spec(runtime: DockerServerRuntime, invocation: str, data_dir: str,
             limits: Limits = Limits(), image: str = LOCAL_IMAGE,
             ports: tuple[tuple[str, int], ...] = (), **env: str) -> LaunchSpec:
        return LaunchSpec(server_uuid=runtime.server_uuid, invocation=invocation,
                          environment=dict(env), data_dir=data_dir, limits=limits,
                          image=image, ports=ports)

    async def start(self, invocation: str = FAKEGAME, limits: Limits = Limits(),
                    factory: DockerRuntimeFactory | None = None, ready: str | None = "Done (",
                    ports: tuple[tuple[str, int], ...] = (), image: str = LOCAL_IMAGE,
                    ) -> tuple[DockerServerRuntime, Recorder, str]:
        runtime, recorder, data_dir = self.runtime(factory)
        await runtime.start(self.spec(runtime, invocation, data_dir, limits, image, ports))
        if ready:
            await recorder.line(ready)
        return runtime, recorder, data_dir

    async def inspect(self, runtime: DockerServerRuntime) -> dict | None:
        assert runtime.container_id
        return await self.engine.inspect(runtime.container_id)

    async def containers(self, server_uuid: str) -> list[dict]:
        return await self.engine.find({"roost.server": server_uuid,
                                       "roost.test.run": self.run_id})

    async def cleanup(self) -> None:
        for runtime in self.runtimes:
            try:
                await runtime.close()
            except Exception as exc:  # keep cleaning up the others
                print(f"close failed: {exc!r}")
        try:
            for container in await self.engine.find({"roost.test.run": self.run_id}):
                await self.engine.remove(container["Id"], timeout_s=120)
        except Exception as exc:
            print(f"container cleanup failed: {exc!r}")
        for factory in self.factories:
            await factory.close()
        await self.engine.close()


@pytest.fixture
async def docker_harness(docker_engine):
    root = tempfile.mkdtemp(prefix="dk", dir="/tmp")
    os.chmod(root, 0o755)
    harness = DockerHarness(root)
    try:
        yield harness
    finally:
        await harness.cleanup()
        shutil.rmtree(root, ignore_errors=True)


# -- a registry serving the test image, so pulls can be tested without the internet ----------


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _one_file_layer(path: str, content: bytes) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        info = tarfile.TarInfo(path)
        info.size, info.mode = len(content), 0o644
        tar.addfile(info, io.BytesIO(content))
    return out.getvalue()


def image_as_registry_blobs(image: str = IMAGE, extra_file: tuple[str, bytes] | None = None,
                            ) -> tuple[bytes, dict[str, bytes]]:
    """(manifest, blobs by digest) of a local image, from `docker save`; with `extra_file`,
    one more layer holding that file (so a pull has a layer to download for real)."""
    saved = subprocess.run(["docker", "save", image], capture_output=True, check=True,
                           timeout=120).stdout
    with tarfile.open(fileobj=io.BytesIO(saved)) as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())[0]
        config = tar.extractfile(manifest["Config"]).read()
        layers = [tar.extractfile(name).read() for name in manifest["Layers"]]
    if extra_file is not None:
        layer = _one_file_layer(*extra_file)
        layers.append(layer)
        parsed = json.loads(config)
        parsed["rootfs"]["diff_ids"].append(_sha256(layer))
        parsed.setdefault("history", []).append({"created_by": "roost test layer"})
        config = json.dumps(parsed).encode()
    blobs = {_sha256(config): config}
    layer_entries = []
    for layer in layers:
        packed = gzip.compress(layer, compresslevel=1)
        blobs[_sha256(packed)] = packed
        layer_entries.append({
            "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
            "size": len(packed), "digest": _sha256(packed)})
    registry_manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                   "size": len(config), "digest": _sha256(config)},
        "layers": layer_entries,
    }).encode()
    return registry_manifest, blobs


class FakeRegistry:
    """The registry v2 API subset a pull uses, serving one image under any name."""

    MANIFEST_TYPE = "application/vnd.docker.distribution.manifest.v2+json"

    def __init__(self, manifest: bytes, blobs: dict[str, bytes]) -> None:
        self.manifest = manifest
        self.blobs = blobs
        self.requests: list[str] = []
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        self.requests.append(f"{request.method} {path}")
        if path in ("/v2/", "/v2"):
            return web.json_response({})
        if "/manifests/" in path:
            return web.Response(body=self.manifest, headers={
                "Content-Type": self.MANIFEST_TYPE,
                "Docker-Content-Digest": _sha256(self.manifest)})
        if "/blobs/" in path:
            blob = self.blobs.get(path.rsplit("/", 1)[1])
            if blob is None:
                return web.Response(status=404)
            return web.Response(body=blob, headers={
                "Content-Type": "application/octet-stream",
                "Docker-Content-Digest": path.rsplit("/", 1)[1]})
        return web.Response(status=404)

    async def __aenter__(self) -> "FakeRegistry":
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


async def remove_image(ref: str) -> None:
    engine = Engine(timeout_s=60)
    try:
        await engine._client().images.delete(ref, force=True)
    except Exception as exc:
        print(f"image cleanup failed: {exc!r}")
    finally:
        await engine.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

