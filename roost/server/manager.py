"""All servers of this node: boot from the source, the 1 Hz sampler, deny list, delete."""
from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from .. import limits
from ..fsutil import write_atomic
from ..protocol import events
from ..protocol.tokens import DenyList
from ..runtimes.base import FactSink, ServerRuntime
from .backups import Backups
from .definition import ServerDefinition
from .server import Server
from .source import SourceError
from .states import ACTIVE, ServerState

if TYPE_CHECKING:
    from ..config import NodeConfig
    from .source import ServerSource

log = logging.getLogger("roost.manager")

RuntimeFor = Callable[[ServerDefinition, str, str, FactSink], ServerRuntime]


class Manager:
    def __init__(self, config: "NodeConfig", source: "ServerSource", runtime_for: RuntimeFor,
                 owner: tuple[int, int] | None = None):
        self.config = config
        self.owner = owner  # uid/gid servers run as; files the daemon writes for them get it
        self.source = source
        self._runtime_for = runtime_for
        self.servers: dict[str, Server] = {}
        self.denylist = DenyList()
        self._denylist_path = Path(config.system.root_directory) / "denylist.json"
        self._states_path = Path(config.system.root_directory) / "states.json"
        self._persisted_states: dict[str, str] = {}
        self._states_dirty = False
        self._write_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task] = []
        self.boot_time = time.time()
        self.backups = Backups(config, source, owner)

    # ---- lifecycle ----------------------------------------------------------------------------

    async def boot(self) -> None:
        for d in (self.config.system.root_directory, self.config.system.data, self.config.console_directory):
            Path(d).mkdir(parents=True, exist_ok=True)
        self.backups.cleanup()
        self._load_denylist()
        self._load_states()
        loop = asyncio.get_running_loop()
        if not await self._load_servers():
            # The source (a panel) is down: serve the API anyway and keep trying.
            self._tasks.append(loop.create_task(self._retry_load()))
        self._tasks.append(loop.create_task(self._sample_loop()))
        self._tasks.append(loop.create_task(self._flush_loop()))
        self._tasks.append(loop.create_task(self._disk_loop()))

    async def _load_servers(self) -> bool:
        try:
            await self.source.reset_states()
            definitions = await self.source.list_servers()
        except SourceError as e:
            log.error("could not load server configurations: %s", e)
            return False
        for definition in definitions:
            if definition.uuid in self.servers:
                continue
            server = self.add(definition)
            before = self._persisted_states.get(server.uuid)
            persisted = ServerState(before) if before in ServerState._value2member_map_ else None
            if await server.attach(persisted):
                log.info("server %s: reattached to a running instance", server.uuid)
            elif persisted in (ServerState.STARTING, ServerState.RUNNING):
                # It was running and is gone (the host restarted): start it again.
                log.info("server %s: was %s before this boot; starting it", server.uuid, persisted)
                server.spawn(server.power("start"))
        for err in getattr(self.source, "errors", []) or []:
            log.error("server definition refused: %s", err)
        return True

    async def _retry_load(self) -> None:
        while not await self._load_servers():
            await asyncio.sleep(limits.SOURCE_RETRY_S)

    async def create(self, uuid: str) -> Server:
        """Node API POST /api/servers: fetch the configuration and register the server."""
        definition = await asyncio.wait_for(self.source.get_server(uuid), limits.RUNTIME_CALL_TIMEOUT_S * 4)
        server = self.add(definition)
        server.data_dir.mkdir(parents=True, exist_ok=True)
        return server

    def add(self, definition: ServerDefinition) -> Server:
        def runtime_for(uuid: str, data_dir: str, sink: FactSink) -> ServerRuntime:
            return self._runtime_for(definition, uuid, data_dir, sink)

        server = Server(definition, config=self.config, source=self.source, runtime_for=runtime_for,
                        on_state=self._state_changed, owner=self.owner)
        self.servers[server.uuid] = server
        return server

    async def shutdown(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        stop = self.config.roost.shutdown_stops_servers
        await asyncio.gather(*(s.close(stop_servers=stop) for s in self.servers.values()), return_exceptions=True)
        self._save_denylist()
        self._save_states()
        close = getattr(self.source, "close", None)
        if close is not None:
            await close()

    async def delete(self, uuid: str) -> None:
        server = self.servers.pop(uuid)
        server.publish(events.frame(events.DELETED))
        await server.destroy()
        self._state_changed(server)

    # ---- persisted states (what to start again after a host reboot) -------------------------

    def _load_states(self) -> None:
        try:
            doc = json.loads(self._states_path.read_text())
            self._persisted_states = {str(k): str(v) for k, v in doc.items()} if isinstance(doc, dict) else {}
        except FileNotFoundError:
            pass
        except (ValueError, OSError) as e:
            log.error("server states unreadable (%s); nothing will be restarted", e)

    def _state_changed(self, server: Server) -> None:
        self._states_dirty = True

    def _states_bytes(self) -> bytes:
        return json.dumps({uuid: str(s.state) for uuid, s in self.servers.items()}).encode()

    def _save_states(self) -> None:
        try:
            write_atomic(self._states_path, self._states_bytes())
            self._states_dirty = False
        except OSError as e:
            log.error("could not persist server states: %s", e)

    # ---- deny list ----------------------------------------------------------------------------

    def _load_denylist(self) -> None:
        try:
            self.denylist = DenyList.from_json(json.loads(self._denylist_path.read_text()))
        except FileNotFoundError:
            pass
        except (ValueError, OSError) as e:
            log.error("deny list unreadable (%s); starting with an empty one", e)

    def _denylist_bytes(self) -> bytes:
        # Entries older than any live token can go (panel tokens live 10 minutes; keep a day).
        self.denylist.prune(time.time(), 24 * 3600)
        return json.dumps(self.denylist.to_json()).encode()

    def _save_denylist(self) -> None:
        write_atomic(self._denylist_path, self._denylist_bytes())

    async def deny_jtis(self, uuid: str, jtis: list[str]) -> None:
        """Applies at once (in memory); the file is written off the event loop."""
        self.denylist.deny_jtis(jtis, time.time())
        await self._write_off_loop(self._denylist_path, self._denylist_bytes())

    async def deauthorize(self, user: str, servers: list[str]) -> None:
        self.denylist.deauthorize(user, servers, time.time())
        await self._write_off_loop(self._denylist_path, self._denylist_bytes())

    async def _write_off_loop(self, path: Path, data: bytes) -> None:
        """Serialised on the loop, written (fsync) in a thread, one writer at a time."""
        async with self._write_lock:
            await asyncio.to_thread(write_atomic, path, data)

    # ---- periodic work ------------------------------------------------------------------------

    async def _sample_loop(self) -> None:
        """One task samples every active server about once per interval."""
        interval = self.config.roost.stats_interval_s
        while True:
            started = time.monotonic()
            active = [s for s in self.servers.values() if s.state in ACTIVE]
            if active:
                await asyncio.gather(*(s.sample() for s in active), return_exceptions=True)
            await asyncio.sleep(max(0.05, interval - (time.monotonic() - started)))

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(limits.CONSOLE_LOG_FLUSH_S)
            for s in list(self.servers.values()):
                try:
                    s.write_checkpoint()
                except (OSError, ValueError) as e:
                    log.error("server %s: console log flush failed: %s", s.uuid, e)
            if self._states_dirty:
                self._states_dirty = False
                try:
                    await self._write_off_loop(self._states_path, self._states_bytes())
                except OSError as e:
                    self._states_dirty = True
                    log.error("could not persist server states: %s", e)

    async def _disk_loop(self) -> None:
        """Data directory sizes, scanned off the event loop, one server at a time."""
        while True:
            for s in list(self.servers.values()):
                try:
                    s.disk_bytes = await asyncio.to_thread(directory_size, s.data_dir)
                except OSError:
                    pass
            await asyncio.sleep(limits.DISK_SCAN_INTERVAL_S)


def directory_size(path: Path) -> int:
    total = 0
    stack = [str(path)]
    while stack:
        try:
            with os.scandir(stack.pop()) as it:
                for entry in it:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(entry.path)
                        else:
                            total += entry.stat(follow_symlinks=False).st_size
                    except OSError:
                        continue
        except OSError:
            continue
    return total
