"""Assemble and run one node: configuration source, runtimes, manager, HTTP API."""
from __future__ import annotations

import asyncio
import logging
import os
import pwd
import signal
import subprocess
from pathlib import Path

from aiohttp import web

from .api.app import build_app
from .config import NodeConfig
from .runtimes.base import FactSink, ServerRuntime
from .server.definition import ServerDefinition
from .server.manager import Manager
from .server.source import DirectorySource, ServerSource

log = logging.getLogger("roost.daemon")


def server_user(config: NodeConfig) -> tuple[int | None, int | None]:
    """The unprivileged uid/gid game servers run as when the daemon is root.

    Many real servers refuse to run as root. The user is created (a system account without
    a login shell) when it does not exist yet.
    """
    if os.geteuid() != 0:
        return None, None
    u = config.system.user
    if u.uid is not None and u.gid is not None:
        return u.uid, u.gid
    name = config.system.username
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
            check=True, timeout=30, capture_output=True,
        )
        entry = pwd.getpwnam(name)
    return entry.pw_uid, entry.pw_gid


def runtime_chooser(config: NodeConfig, uid: int | None, gid: int | None):
    """Returns runtime_for(definition, uuid, data_dir, sink) for the Manager."""
    from .runtimes.process.runtime import ProcessRuntimeFactory

    factories: dict[str, object] = {
        "process": ProcessRuntimeFactory(str(config.state_directory), uid, gid, config.roost.cgroup_parent),
    }

    def docker_factory():
        # Built on first use: a node that never runs a container needs no engine.
        if "docker" not in factories:
            from .runtimes.docker.runtime import DockerRuntimeFactory

            factories["docker"] = DockerRuntimeFactory(
                state_root=str(config.state_directory / "docker"), docker_url=config.docker.socket,
                uid=uid, gid=gid, network_mode=config.docker.network.mode,
                tmpfs_size_mb=config.docker.tmpfs_size, labels=config.docker.labels or None,
            )
        return factories["docker"]

    def runtime_for(definition: ServerDefinition, uuid: str, data_dir: str, sink: FactSink) -> ServerRuntime:
        kind = definition.runtime or config.roost.runtime
        factory = docker_factory() if kind == "docker" else factories["process"]
        return factory.for_server(uuid, data_dir, sink)

    return runtime_for


def default_source(config: NodeConfig) -> ServerSource:
    """A panel (`remote`) when no server directory is configured, else the directory."""
    if config.roost.servers_directory is None and config.remote:
        from .remote.client import PanelClient
        from .remote.source import RemoteSource

        return RemoteSource(PanelClient(config.remote, config.token_id, config.token,
                                        retry_total_s=config.roost.remote_retry_s))
    return DirectorySource(config.servers_directory)


def build_node(config: NodeConfig, source: ServerSource | None = None) -> tuple[web.Application, Manager]:
    source = source or default_source(config)
    uid, gid = server_user(config)
    owner = (uid, gid) if uid is not None and gid is not None else None
    manager = Manager(config, source, runtime_chooser(config, uid, gid), owner=owner)
    return build_app(config, manager), manager


async def serve(config: NodeConfig, *, source: ServerSource | None = None, ready=None) -> None:
    """Run the node until SIGINT/SIGTERM; `await ready(manager)` once it listens."""
    app, manager = build_node(config, source)
    # Keep-alive HTTP clients must not hold a shutdown for a minute (aiohttp's default).
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    ssl_ctx = None
    if config.api.ssl.enabled:
        import ssl

        ssl_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ssl_ctx.load_cert_chain(config.api.ssl.cert, config.api.ssl.key)
    site = web.TCPSite(runner, config.api.host, config.api.port, ssl_context=ssl_ctx)
    await site.start()
    log.info("listening on %s:%s", config.api.host, config.api.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if ready is not None:
        await ready(manager)
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        await runner.cleanup()
