"""The Docker runtime: each game server in a container of a container engine (Docker API).

One container per server, named by the server uuid and labelled `roost.server=<uuid>` and
`roost.managed=1`, created afresh on every start from the server's image (see
`containerspec` for the configuration, which follows Wings). The runtime reports facts
like the process runtime and never decides state.

Console: the container's log, read through the engine's log API with timestamps, is the
source of every console line, live and after a reattach (see `logstream` for why and for
the exact resume rule); stdin is a hijacked attach connection. `checkpoint()` says exactly
where the delivered output ends; the daemon stores it with its console lines and hands it to
`attach()`, and output then resumes with nothing lost and nothing twice. The runtime also
keeps its own copy in `<state_root>/<uuid>.json` (saved at most every
`cursor_save_interval_s` while output flows, and on `close()`), used when the daemon has
none: then a daemon that was killed re-reads at most that much output. Output printed while
no daemon watched is never lost as long as the engine's log (2 x 10 MB by default) holds it.

Containers outlive the daemon: `close()` leaves them running, `attach()` finds them by
label. A container that stopped while nobody watched is reported on the next `attach()`
(`Attached(reattached=True)`, the output not delivered yet, `Exited`) once: the state file
then records that its exit was reported. Stopped containers are kept until the next start
(as Wings does) or `destroy()`.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import signal as signals
import time
from typing import Mapping

import aiohttp

from roost.runtimes.base import (
    server_identity,
    Attached, Exited, Fact, FactSink, LaunchSpec, Output, Progress, RuntimeError_, Sample,
)
from roost.runtimes.docker.cgroupstats import ContainerStats, find_cgroup
from roost.runtimes.docker.containerspec import (
    LABEL_MANAGED, LABEL_SERVER, MemoryOverhead, container_config, wings_memory_overhead,
)
from roost.runtimes.docker.engine import Engine, EngineError
from roost.runtimes.docker.images import ensure_image
from roost.runtimes.docker.logstream import (
    STREAM_NAMES, Entry, FrameDecoder, LogFormatError, LogMarks, parse_timestamp_ns,
)
from roost.runtimes.lines import LineSplitter

log = logging.getLogger(__name__)

CURSOR_SAVE_INTERVAL_S = 1.0
# When the log stream ends without an exit, the exit is expected within this time (the
# engine ends log followers just before it records the exit); otherwise the engine dropped
# the stream and it is followed again.
EXIT_AFTER_LOG_END_S = 2.0
# Pause before following the log again after it ended or failed while the container runs.
REFOLLOW_PAUSE_S = 0.5
SIGKILL = int(signals.SIGKILL)
# Exit code reported when the container vanished (removed behind roost's back) before its
# exit could be read: as for a killed process.
VANISHED_EXIT_CODE = 128 + SIGKILL
STREAM_ERRORS = (EngineError, aiohttp.ClientError, OSError, LogFormatError)


def _started_at(state: dict) -> float:
    try:
        ns = parse_timestamp_ns(str(state.get("StartedAt", "")).encode())
    except ValueError:
        return time.time()
    return ns / 1e9 if ns > 0 else time.time()


def _write_atomic(path: str, data: bytes) -> None:
    """Replace `path` with `data` (no fsync: it only has to survive a daemon crash)."""
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


class DockerRuntimeFactory:
    """Makes Docker runtimes; one engine client serves them all.

    Args:
        state_root: directory for each server's small state file (`<uuid>.json`: container
            id, the runtime's own checkpoint, whether the exit was reported). Give each
            runtime kind its own.
        docker_url: engine address (`unix:///var/run/docker.sock`, a bare socket path as in
            Wings' `docker.socket`, or `tcp://host:2375`); default DOCKER_HOST, else the local
            socket.
        uid, gid: run servers as this user/group (None: the image's user, root for most).
            With a uid but no gid, the user's primary group. The data dir is chowned to it.
        network_mode: the container network (`bridge`, a user network, `host`).
        memory_overhead: limit in bytes -> multiplier for the container's memory limit
            (default: Wings' rule).
        tmpfs_size_mb: size of the tmpfs mounted at /tmp.
        init: run the engine's init (tini) as PID 1, signalling the whole process group.
        labels: extra labels on every container (e.g. to find test containers).
        log_max_size_mb, log_max_files: the engine's log of each container (json-file):
            the bound on output kept for a daemon that is down.
        timeout_s: bound on every quick engine call (inspect, kill, attach, ...).
        slow_timeout_s: bound on create/start/remove (they copy or delete file trees).
        pull_timeout_s: bound on one image pull.
        cursor_save_interval_s: how often the state file's checkpoint is saved while output
            flows (it is used when the daemon hands no checkpoint to `attach`).
    """

    kind = "docker"

    def __init__(self, *, state_root: str, docker_url: str | None = None,
                 uid: int | None = None, gid: int | None = None,
                 network_mode: str = "bridge",
                 memory_overhead: MemoryOverhead = wings_memory_overhead,
                 tmpfs_size_mb: int = 100, init: bool = True,
                 labels: Mapping[str, str] | None = None,
                 log_max_size_mb: int = 10, log_max_files: int = 2,
                 timeout_s: float = 10.0, slow_timeout_s: float = 120.0,
                 pull_timeout_s: float = 1800.0,
                 cursor_save_interval_s: float = CURSOR_SAVE_INTERVAL_S) -> None:
        self.state_root = os.path.abspath(state_root)
        self.uid, self.gid = server_identity(uid, gid)
        self.network_mode = network_mode
        self.memory_overhead = memory_overhead
        self.tmpfs_size_mb = tmpfs_size_mb
        self.init = init
        self.labels = dict(labels or {})
        self.log_max_size_mb = log_max_size_mb
        self.log_max_files = log_max_files
        self.timeout_s = timeout_s
        self.slow_timeout_s = slow_timeout_s
        self.pull_timeout_s = pull_timeout_s
        self.cursor_save_interval_s = cursor_save_interval_s
        self.engine = Engine(docker_url, timeout_s)

    def for_server(self, server_uuid: str, data_dir: str,
                   sink: FactSink) -> "DockerServerRuntime":
        return DockerServerRuntime(self, server_uuid, data_dir, sink)

    async def check(self) -> str:
        """The engine's version; raises RuntimeError_ when no engine answers."""
        try:
            return str((await self.engine.version()).get("Version", "?"))
        except EngineError as exc:
            raise RuntimeError_(f"no container engine at {self.engine.url}: {exc}") from exc

    async def close(self) -> None:
        """Close the engine connection (after closing every runtime). Containers keep running."""
        await self.engine.close()


class DockerServerRuntime:
    """One server's container. See `roost.runtimes.base.ServerRuntime`."""

    kind = "docker"
    survives_daemon_restart = True

    def __init__(self, factory: DockerRuntimeFactory, server_uuid: str, data_dir: str,
                 sink: FactSink) -> None:
        self.limits_note: str | None = None
        self.server_uuid = server_uuid
        self._factory = factory
        self._engine = factory.engine
        self._data_dir = os.path.abspath(data_dir)
        self._sink = sink
        self._state_path = os.path.join(factory.state_root, f"{server_uuid}.json")
        self._running = False  # an instance exists and we have not reported its exit
        self._container_id: str | None = None
        self._marks: LogMarks | None = None  # what of the log was delivered
        self._splitters: dict[int, LineSplitter] = {}
        self._stdin = None  # aiodocker Stream attached to the container's stdin
        self._stdin_lock = asyncio.Lock()
        self._task: asyncio.Task | None = None
        self._wait_task: asyncio.Task | None = None
        self._exited = asyncio.Event()
        self._stats: ContainerStats | None = None
        self._memory_limited = False
        self._sent_signal: int | None = None
        self._saved_at = 0.0

    @property
    def container_id(self) -> str | None:
        """The current instance's container id (None before start/attach)."""
        return self._container_id

    # -- facts -------------------------------------------------------------------------------

    def _emit(self, fact: Fact) -> None:
        try:
            self._sink(fact)
        except Exception:  # a broken sink must not kill the relay
            log.exception("fact sink failed for server %s", self.server_uuid)

    def _deliver(self, entries: list[Entry]) -> None:
        """Console lines from log entries (in log order), skipping what was delivered."""
        marks, splitters = self._marks, self._splitters
        assert marks is not None
        for entry in entries:
            fed = marks.accept(entry)
            if fed:
                splitter = splitters[entry.stream]
                name = STREAM_NAMES[entry.stream]
                for line in splitter.feed(fed):
                    self._emit(Output(line, name))
                marks.settle(entry.stream, splitter)
        if time.monotonic() - self._saved_at >= self._factory.cursor_save_interval_s:
            self._save_state()

    def _current_checkpoint(self) -> dict | None:
        if self._marks is None or self._container_id is None:
            return None
        return self._marks.checkpoint(self._container_id, self._splitters)

    def _flush_output(self) -> None:
        for stream, splitter in self._splitters.items():
            for line in splitter.flush():
                self._emit(Output(line, STREAM_NAMES[stream]))

    # -- state file --------------------------------------------------------------------------

    def _save_state(self, exit_reported: bool = False) -> None:
        if self._container_id is None:
            return
        state = {"container_id": self._container_id, "checkpoint": self._current_checkpoint(),
                 "exit_reported": exit_reported, "limits_note": self.limits_note}
        try:
            os.makedirs(self._factory.state_root, mode=0o700, exist_ok=True)
            _write_atomic(self._state_path, json.dumps(state).encode())
        except OSError as exc:
            log.warning("server %s: cannot save runtime state: %s", self.server_uuid, exc)
        self._saved_at = time.monotonic()

    def _load_state(self) -> dict:
        try:
            with open(self._state_path, "rb") as f:
                state = json.loads(f.read())
        except (OSError, ValueError):
            return {}
        return state if isinstance(state, dict) else {}

    def _remove_state(self) -> None:
        for path in (self._state_path, f"{self._state_path}.tmp"):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    # -- instance ----------------------------------------------------------------------------

    def _labels(self) -> dict[str, str]:
        return {**self._factory.labels, LABEL_SERVER: self.server_uuid, LABEL_MANAGED: "1"}

    def _prepare_data_dir(self) -> None:
        os.makedirs(self._data_dir, exist_ok=True)
        uid, gid = self._factory.uid, self._factory.gid
        if uid is not None or gid is not None:
            os.chown(self._data_dir, -1 if uid is None else uid, -1 if gid is None else gid)

    def _user(self) -> str | None:
        uid, gid = self._factory.uid, self._factory.gid
        if uid is None:
            return None
        return f"{uid}:{gid}" if gid is not None else str(uid)

    def _begin(self, info: dict, reattached: bool) -> None:
        """Take the instance `info` (an inspect result) as ours; emits Attached."""
        cid = info["Id"]
        state = info.get("State") or {}
        pid = int(state.get("Pid") or 0)
        started_at = _started_at(state)
        self._container_id = cid
        self._running = True
        self._exited = asyncio.Event()
        self._sent_signal = None
        self._memory_limited = bool((info.get("HostConfig") or {}).get("Memory"))
        # No pid: the container is not running (it exited before we looked).
        self._stats = ContainerStats(cid, pid, started_at, find_cgroup(cid, pid)) if pid else None
        self._wait_task = asyncio.create_task(self._engine.wait(cid),
                                              name=f"roost-docker-wait-{self.server_uuid}")
        self._emit(Attached(pid=pid or None, reattached=reattached, started_at=started_at))

    async def _close_stdin(self) -> None:
        stream, self._stdin = self._stdin, None
        if stream is not None:
            try:
                await stream.close()
            except Exception as exc:  # closing a dead connection
                log.debug("server %s: closing stdin: %r", self.server_uuid, exc)

    # -- relay -------------------------------------------------------------------------------

    async def _read_log(self, cid: str, follow: bool) -> None:
        """Deliver the log from the current checkpoint: up to now (follow=False) or until the
        engine ends the stream (follow=True: when the container stops)."""
        # Every read resumes from the checkpoint: an unterminated tail held by the splitters
        # is dropped here and read again whole.
        restored = LogMarks.restore(self._current_checkpoint(), cid)
        self._marks, self._splitters = restored or LogMarks.fresh()
        decoder = FrameDecoder()
        async with asyncio.timeout(None if follow else self._factory.slow_timeout_s):
            async with self._engine.logs(cid, follow=follow,
                                         since=self._marks.since()) as content:
                while True:
                    chunk = await content.readany()
                    if not chunk:
                        break
                    entries = decoder.feed(chunk)
                    if entries:
                        self._deliver(entries)

    async def _follow_until_exit(self, cid: str) -> bool:
        """Follow the log until the container exits: True once it exited (the caller then
        reads the log's last entries), False when the stream ended without an exit."""
        wait_task = self._wait_task
        assert wait_task is not None
        follow = asyncio.create_task(self._read_log(cid, follow=True),
                                     name=f"roost-docker-log-{self.server_uuid}")
        try:
            done, _ = await asyncio.wait({follow, wait_task},
                                         return_when=asyncio.FIRST_COMPLETED)
            if follow in done:
                follow.result()  # raises what ended it
                try:
                    await asyncio.wait_for(asyncio.shield(wait_task), EXIT_AFTER_LOG_END_S)
                except TimeoutError:
                    return False
                return True
            if wait_task.exception() is not None:
                return False
            # Exited: the engine ends the stream once it has logged the last output. If it
            # does not, the caller's final read from the checkpoint delivers the rest.
            try:
                await asyncio.wait_for(asyncio.shield(follow), EXIT_AFTER_LOG_END_S)
            except TimeoutError:
                log.info("server %s: log follow did not end after the exit", self.server_uuid)
            return True
        finally:
            if not follow.done():
                follow.cancel()
            await asyncio.gather(follow, return_exceptions=True)

    def _drop_wait_task(self) -> None:
        """Forget the exit watch (cancelled if still waiting; a failure is only logged)."""
        task, self._wait_task = self._wait_task, None
        if task is None:
            return
        if not task.done():
            task.cancel()
        elif not task.cancelled() and task.exception() is not None:
            log.debug("server %s: exit watch ended: %r", self.server_uuid, task.exception())

    async def _container_status(self, cid: str) -> str:
        """"running", "exited" or "gone" (raises EngineError when the engine is away)."""
        info = await self._engine.inspect(cid)
        if info is None:
            return "gone"
        state = info.get("State") or {}
        if state.get("Running") or state.get("Restarting"):
            return "running"
        return "exited"

    async def _relay(self, cid: str, catch_up: bool) -> None:
        """Deliver output until the container exits, then report the exit."""
        problem_logged = False
        while True:
            try:
                if catch_up:
                    await self._read_log(cid, follow=False)
                    catch_up = False
                if await self._follow_until_exit(cid):
                    status = "exited"
                else:
                    status = await self._container_status(cid)
            except STREAM_ERRORS as exc:
                if not problem_logged:
                    log.warning("server %s: container log or engine failed: %r",
                                self.server_uuid, exc)
                    problem_logged = True
                try:
                    status = await self._container_status(cid)
                except EngineError:
                    status = "unknown"  # engine away: try again shortly
            if status == "gone":
                break
            if status == "exited":
                # The engine may end a follow a moment before it wrote the last entries (the
                # unterminated tail at exit, seen with 20.10's json-file). Once the exit is
                # recorded the log is complete: read it from the checkpoint to the end.
                try:
                    await self._read_log(cid, follow=False)
                except STREAM_ERRORS as exc:
                    log.warning("server %s: last output unreadable: %r", self.server_uuid, exc)
                break
            if self._wait_task is None or self._wait_task.done():
                self._drop_wait_task()
                self._wait_task = asyncio.create_task(self._engine.wait(cid))
            await asyncio.sleep(REFOLLOW_PAUSE_S)
        await self._finish(cid)

    async def _finish(self, cid: str) -> None:
        self._flush_output()
        code, oom = VANISHED_EXIT_CODE, False
        try:
            info = await self._engine.inspect(cid)
        except EngineError as exc:
            log.warning("server %s: cannot read the exit status: %s", self.server_uuid, exc)
            info = None
        if info is not None:
            state = info.get("State") or {}
            code = int(state.get("ExitCode") or 0)
            oom = bool(state.get("OOMKilled"))
        else:
            log.warning("server %s: container %s vanished", self.server_uuid, cid[:12])
        sent = self._sent_signal
        by_signal = sent if sent and code == 128 + sent else None
        self._save_state(exit_reported=True)
        await self._close_stdin()
        self._drop_wait_task()
        self._running = False
        self._stats = None
        self._exited.set()
        self._emit(Exited(code=code, oom_killed=oom, by_signal=by_signal))

    # -- ServerRuntime -----------------------------------------------------------------------

    async def start(self, spec: LaunchSpec) -> None:
        """Create and start the server's container (pulling its image first unless it is
        local); returns after `Attached` was emitted. `Progress` facts may come before."""
        if self._running:
            raise RuntimeError_("server is already running")
        f = self._factory
        try:
            existing = await self._engine.find({LABEL_SERVER: self.server_uuid})
            for container in existing:
                if container.get("State") in ("running", "restarting", "paused"):
                    raise RuntimeError_("an instance started by an earlier daemon is still "
                                        "running")
            for container in existing:
                await self._engine.remove(container["Id"], f.slow_timeout_s)
        except EngineError as exc:
            raise RuntimeError_(str(exc)) from exc
        self._remove_state()
        image = await ensure_image(self._engine, spec.image,
                                   lambda line: self._emit(Progress(line)), f.pull_timeout_s)
        self._prepare_data_dir()
        config = container_config(
            spec, image=image, labels=self._labels(), user=self._user(),
            network_mode=f.network_mode, tmpfs_size_mb=f.tmpfs_size_mb,
            overhead=f.memory_overhead, init=f.init, log_max_size_mb=f.log_max_size_mb,
            log_max_files=f.log_max_files)
        try:
            cid, warnings = await self._engine.create(self.server_uuid, config,
                                                      f.slow_timeout_s)
        except EngineError as exc:
            raise RuntimeError_(f"cannot create the server's container: {exc}") from exc
        self.limits_note = (f"the container engine did not apply every limit: "
                            f"{'; '.join(warnings)}" if warnings else None)
        if self.limits_note:
            log.warning("server %s: %s", self.server_uuid, self.limits_note)
        self._container_id = cid
        self._marks, self._splitters = LogMarks.fresh()
        self._save_state()
        stdin = None
        try:
            # Attached before the start (as `docker run -i` does): no command can be missed.
            stdin = await self._engine.attach_stdin(cid)
            await self._engine.start(cid, f.slow_timeout_s)
            info = await self._engine.inspect(cid)
            if info is None:
                raise EngineError("the container vanished right after its start")
        except BaseException as exc:
            if stdin is not None:
                await stdin.close()
            try:
                await self._engine.remove(cid, f.slow_timeout_s)
            except EngineError:
                pass
            self._remove_state()
            self._container_id = None
            if isinstance(exc, EngineError):
                raise RuntimeError_(f"cannot start the server's container: {exc}") from exc
            raise
        self._stdin = stdin
        self._begin(info, reattached=False)
        self._task = asyncio.create_task(self._relay(cid, catch_up=False),
                                         name=f"roost-docker-{self.server_uuid}")

    def checkpoint(self) -> dict | None:
        """Where the output delivered so far ends (JSON-serialisable; see logstream): every
        Output emitted is before it, nothing after it. None when no instance runs."""
        if not self._running:
            return None
        return self._current_checkpoint()

    async def attach(self, checkpoint: dict | None = None) -> bool:
        """Find the server's container by label. Running: reattach and relay its output.
        Exited while no daemon watched (and not reported yet): report it like a live one
        (Attached, the output not delivered yet, Exited) and return True.

        Output resumes exactly after `checkpoint` when it is one of this container (the
        daemon stores it with its console lines); otherwise from the runtime's own state file
        (saved every `cursor_save_interval_s` and on close); with neither, from the start of
        the container's log. Raises RuntimeError_ when the engine cannot be asked."""
        if self._running:
            return True
        state = self._load_state()
        try:
            found = await self._engine.find({LABEL_SERVER: self.server_uuid})
            if not found:
                self._remove_state()
                return False
            chosen = next((c for c in found if c["Id"] == state.get("container_id")), found[0])
            info = await self._engine.inspect(chosen["Id"])
        except EngineError as exc:
            raise RuntimeError_(str(exc)) from exc
        if info is None:
            return False
        cid = info["Id"]
        status = info.get("State") or {}
        same = state.get("container_id") == cid
        live = bool(status.get("Running") or status.get("Restarting"))
        if not live:
            if status.get("Status") == "created":  # never started (a start was interrupted)
                try:
                    await self._engine.remove(cid, self._factory.slow_timeout_s)
                except EngineError:
                    pass
                self._remove_state()
                return False
            if same and state.get("exit_reported"):
                return False
        self._container_id = cid
        restored = LogMarks.restore(checkpoint, cid) if checkpoint is not None else None
        if restored is None and same:
            restored = LogMarks.restore(state.get("checkpoint"), cid)
        self._marks, self._splitters = restored or LogMarks.fresh()
        self.limits_note = state.get("limits_note") if same else None
        if live:
            try:
                self._stdin = await self._engine.attach_stdin(cid)
            except EngineError as exc:  # it stopped a moment ago: the relay reports it
                log.info("server %s: no stdin: %s", self.server_uuid, exc)
        self._begin(info, reattached=True)
        self._task = asyncio.create_task(self._relay(cid, catch_up=True),
                                         name=f"roost-docker-{self.server_uuid}")
        return True

    async def write_stdin(self, data: bytes) -> None:
        if not self._running or self._stdin is None:
            raise RuntimeError_("server is not running")
        async with self._stdin_lock:
            stream = self._stdin
            if stream is None:
                raise RuntimeError_("server is not running")
            try:
                async with asyncio.timeout(self._factory.timeout_s):
                    await stream.write_in(data)
            except (OSError, RuntimeError, TimeoutError, aiohttp.ClientError) as exc:
                raise RuntimeError_(f"cannot write to the server's stdin: {exc!r}") from exc

    async def signal(self, signum: int) -> None:
        """Send a signal to the container (its init passes it to the whole process group); a
        no-op when it is not running (it may have exited a moment ago)."""
        cid = self._container_id
        if not self._running or cid is None:
            return
        try:
            name = signals.Signals(signum).name
        except ValueError:
            name = str(signum)
        self._sent_signal = int(signum)
        try:
            await self._engine.kill(cid, name)
        except EngineError as exc:
            raise RuntimeError_(str(exc)) from exc

    async def kill(self) -> None:
        """SIGKILL the container now (everything in it dies with its init)."""
        await self.signal(SIGKILL)

    async def sample(self) -> Sample | None:
        stats, cid = self._stats, self._container_id
        if not self._running or stats is None or cid is None:
            return None
        if stats.available:
            return stats.sample()
        try:  # the cgroup is out of reach: ask the engine (costly, but right)
            sample = stats.from_engine(await self._engine.stats_once(cid))
        except EngineError:
            return None
        if not self._memory_limited:
            sample = Sample(memory_bytes=sample.memory_bytes, memory_limit_bytes=0,
                            cpu_absolute=sample.cpu_absolute, rx_bytes=sample.rx_bytes,
                            tx_bytes=sample.tx_bytes, uptime_ms=sample.uptime_ms)
        return sample

    async def close(self) -> None:
        """Stop relaying; the container keeps running for the next daemon."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        wait_task, self._wait_task = self._wait_task, None
        if wait_task is not None and not wait_task.done():
            wait_task.cancel()
            await asyncio.gather(wait_task, return_exceptions=True)
        await self._close_stdin()
        if self._running:
            self._save_state()
        self._running = False
        self._stats = None

    async def destroy(self) -> None:
        """Kill the instance (waiting for its exit report, bounded), remove every container
        of this server and the runtime's state."""
        if self._running:
            try:
                await self.kill()
                await asyncio.wait_for(self._exited.wait(), self._factory.timeout_s)
            except (RuntimeError_, TimeoutError) as exc:
                log.warning("server %s: no exit after kill: %r", self.server_uuid, exc)
        await self.close()
        try:
            for container in await self._engine.find({LABEL_SERVER: self.server_uuid}):
                await self._engine.remove(container["Id"], self._factory.slow_timeout_s)
        except EngineError as exc:
            raise RuntimeError_(f"cannot remove the server's container: {exc}") from exc
        self._remove_state()
        self._container_id = None
