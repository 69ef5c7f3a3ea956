"""One game server: definition, state machine, console, fan-out, runtime and power.

The runtime reports facts through `_on_fact`; this class alone turns them into state changes,
console lines and crash handling (design note 3).
"""
from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING

from .. import limits
from ..protocol import events
from ..protocol.done import DoneMatcher
from ..protocol.throttle import ConsoleThrottle
from ..protocol.permissions import ADMIN_INSTALL
from ..runtimes.base import Attached, Exited, Fact, LaunchSpec, Limits, Output, Progress, Sample, ServerRuntime
from . import crash_policy
from .console_log import ConsoleLog
from .definition import ServerDefinition
from .fanout import Hub, Subscriber
from .machine import StateMachine
from .power import PowerError, PowerLock
from .states import ACTIVE, Busy, ServerState

if TYPE_CHECKING:
    from ..config import NodeConfig
    from .source import ServerSource

log = logging.getLogger("roost.server")

S = ServerState
MIB = 1024 * 1024

# Stop signals by the names eggs use (spec §7); anything else means SIGKILL, as in Wings.
STOP_SIGNALS = {
    "SIGINT": signal.SIGINT, "INT": signal.SIGINT, "C": signal.SIGINT,
    "SIGTERM": signal.SIGTERM, "TERM": signal.SIGTERM,
    "SIGABRT": signal.SIGABRT, "ABRT": signal.SIGABRT,
    "SIGHUP": signal.SIGHUP, "HUP": signal.SIGHUP,
    "SIGQUIT": signal.SIGQUIT, "QUIT": signal.SIGQUIT,
    "SIGUSR1": signal.SIGUSR1, "USR1": signal.SIGUSR1,
    "SIGUSR2": signal.SIGUSR2, "USR2": signal.SIGUSR2,
    # roost: 112 public eggs stop with `^^C`, which panels turn into the signal name "^C";
    # Wings SIGKILLs those servers. Ctrl-C is what their authors mean.
    "^C": signal.SIGINT,
}


def stop_signal(value: str | None) -> int:
    return STOP_SIGNALS.get((value or "").strip().upper(), signal.SIGKILL)


class Server:
    def __init__(
        self,
        definition: ServerDefinition,
        *,
        config: "NodeConfig",
        source: "ServerSource",
        runtime_for: "callable",
        on_state=None,
        owner: tuple[int, int] | None = None,
        clock=time.monotonic,
        wall=time.time,
    ):
        self.definition = definition
        self.uuid = definition.uuid
        self.config = config
        self._source = source
        self._clock = clock
        self._wall = wall
        self.data_dir = Path(config.system.data) / self.uuid
        self.hub = Hub(config.app_name)
        self.log = ConsoleLog(config.console_directory / f"{self.uuid}.log")
        self.machine = StateMachine(self._on_state_change)
        self.power_lock = PowerLock()
        self.busy = Busy.NONE
        t = config.throttles
        self.throttle = ConsoleThrottle(t.lines, t.line_reset_interval / 1000.0, t.enabled)
        self.runtime: ServerRuntime = runtime_for(self.uuid, str(self.data_dir), self._on_fact)
        self._matcher = self._make_matcher()
        self._pending: list[tuple[int, str]] = []
        self._flush_scheduled = False
        self._exited = asyncio.Event()
        self._exited.set()
        self.attached = False
        self.started_at = 0.0  # wall clock
        self.last_exit: Exited | None = None
        self._last_crash_at: float | None = None
        self._last_sample: Sample | None = None
        self.disk_bytes = 0
        self._tasks: set[asyncio.Task] = set()
        self.deleted = False
        self._limits_note_logged = False
        self._on_state = on_state  # the manager persists states (host reboot restarts)
        # Lines already in the log that a runtime resuming at the log's checkpoint delivers
        # again: matched and dropped so every line is logged and sent exactly once.
        self._redelivered: deque[str] = deque()
        self._reattach_state: ServerState | None = None
        self._preparing = False  # Progress facts seen, Attached not yet
        self._owner = owner

    # ---- views ------------------------------------------------------------------------------

    @property
    def state(self) -> ServerState:
        return self.machine.state

    @property
    def suspended(self) -> bool:
        return self.definition.settings.suspended

    def stats_doc(self) -> dict:
        s = self._last_sample if self.state in ACTIVE else None
        return events.stats_payload(
            state=str(self.state),
            memory_bytes=s.memory_bytes if s else 0,
            memory_limit_bytes=s.memory_limit_bytes if s else 0,
            cpu_absolute=s.cpu_absolute if s else 0.0,
            rx_bytes=s.rx_bytes if s else 0,
            tx_bytes=s.tx_bytes if s else 0,
            uptime_ms=s.uptime_ms if s else 0,
            disk_bytes=self.disk_bytes,
        )

    def stats_frame(self) -> str:
        return events.stats_frame(self.stats_doc())

    def status_frame(self) -> str:
        return events.frame(events.STATUS, str(self.state))

    # ---- console -----------------------------------------------------------------------------

    def daemon_line(self, message: str) -> None:
        """A daemon console line: logged, sequenced and sent to every socket (never throttled)."""
        text = events.daemon_console_line(self.config.app_name, message)
        line = self.log.append(text, daemon=True)
        self._pending.append((line.seq, text))
        self._flush_console()

    def _on_output(self, text: str) -> None:
        if self._redelivered:
            if text == self._redelivered[0]:
                self._redelivered.popleft()
                return
            self._redelivered.clear()
        line = self.log.append(text)
        passed, announce = self.throttle.admit(self._clock())
        if passed:
            self._pending.append((line.seq, text))
            if not self._flush_scheduled:
                self._flush_scheduled = True
                asyncio.get_running_loop().call_soon(self._flush_console)
        elif announce:
            self.daemon_line(events.THROTTLING)
        # Dropped lines still count for startup detection (spec §6).
        if self.state is S.STARTING and self._matcher.matches(text):
            self._flush_console()
            self.machine.change_state(S.RUNNING, cause="done line")

    def _flush_console(self) -> None:
        self._flush_scheduled = False
        if self._pending:
            batch, self._pending = self._pending, []
            self.hub.publish_console(batch)

    def publish(self, frame: str, permission: str | None = None) -> None:
        """Control events keep their order relative to console lines."""
        self._flush_console()
        self.hub.publish(frame, permission)

    def replay_logs(self, sub: Subscriber, since_seq: int | None = None) -> None:
        """`send logs`: the last N lines of the server's own output, to one socket, in one step."""
        from ..protocol.wsframe import text_frame

        self._flush_console()
        if since_seq is None:
            lines = self.log.tail(self.config.system.websocket_log_count)
        else:
            lines = self.log.since(since_seq, limit=limits.CONSOLE_RING_LINES)
        if sub.roost_extensions:
            items = [(text_frame(events.console_frame_seq(ln.text, ln.seq)), ln.seq) for ln in lines]
        else:
            items = [(text_frame(events.console_frame(ln.text)), ln.seq) for ln in lines]
        sub.replace_console(items)

    # ---- facts from the runtime ---------------------------------------------------------------

    def _on_fact(self, fact: Fact) -> None:
        if isinstance(fact, Output):
            self._on_output(fact.line)
        elif isinstance(fact, Progress):
            # Preparing the instance (an image pull): daemon lines around `install output`.
            if not self._preparing:
                self._preparing = True
                self.daemon_line("Pulling Docker container image, this could take a few minutes to complete...")
            self.publish(events.frame(events.INSTALL_OUTPUT, fact.line), ADMIN_INSTALL)
        elif isinstance(fact, Attached):
            if self._preparing:
                self._preparing = False
                self.daemon_line("Finished pulling Docker container image")
            self.attached = True
            self.started_at = fact.started_at or self._wall()
            self._exited.clear()
            if fact.reattached and self.state is S.OFFLINE:
                # Back in the state the previous daemon left it in (persisted), else running.
                if self._reattach_state is S.STARTING:
                    self.machine.change_state(S.STARTING, cause="reattached while starting")
                else:
                    self.machine.change_state(S.RUNNING, cause="reattached at boot")
                    if self._reattach_state is S.STOPPING:
                        self.machine.change_state(S.STOPPING, cause="reattached while stopping")
            elif self.state is S.STARTING and self._matcher.empty:
                self.machine.change_state(S.RUNNING, cause="no done matcher")
        elif isinstance(fact, Exited):
            self._on_exited(fact)

    def _on_exited(self, fact: Exited) -> None:
        self.attached = False
        self.last_exit = fact
        previous = self.state
        self._flush_console()
        self._exited.set()
        if previous is S.OFFLINE:
            return
        self.machine.change_state(S.OFFLINE, cause=f"process exited with code {fact.code}")
        self._last_sample = None
        self.publish(self.stats_frame())
        cd = self.config.system.crash_detection
        enabled = self.definition.settings.crash_detection_enabled
        decision = crash_policy.decide(
            previous_state=previous,
            exit_code=fact.code,
            enabled=cd.enabled if enabled is None else enabled,
            detect_clean_exit_as_crash=cd.detect_clean_exit_as_crash,
            last_crash_at=self._last_crash_at,
            now=self._clock(),
            timeout_s=cd.timeout,
        )
        if isinstance(decision, crash_policy.NotACrash):
            return
        self.daemon_line(events.CRASH_DETECTED)
        self.daemon_line(f"Exit code: {fact.code}")
        self.daemon_line(f"Out of memory: {'true' if fact.oom_killed else 'false'}")
        if isinstance(decision, crash_policy.Abort):
            self.daemon_line(
                f"Aborting automatic restart, last crash occurred less than {decision.timeout_s} seconds ago."
            )
            return
        self._last_crash_at = self._clock()
        self.spawn(self._restart_after_crash())

    async def _restart_after_crash(self) -> None:
        try:
            await self.power("start")
        except PowerError as e:
            log.warning("server %s: automatic restart failed: %s", self.uuid, e)
            self.daemon_line(f"Automatic restart failed: {e}")

    def _on_state_change(self, old: ServerState, new: ServerState, cause: str) -> None:
        log.info("server %s: %s -> %s (%s)", self.uuid, old, new, cause)
        self.publish(self.status_frame())
        if self._on_state is not None:
            self._on_state(self)

    # ---- power --------------------------------------------------------------------------------

    def check_power_allowed(self) -> None:
        if self.busy is not Busy.NONE:
            raise PowerError(f"server is busy ({self.busy.value}): power actions are not allowed")

    async def power(self, action: str, *, wait_s: float = 0.0) -> None:
        """Run one power action to completion. Raises PowerError (incl. PowerLocked)."""
        self.check_power_allowed()
        if action == "kill":
            await self._kill()
            return
        if action not in ("start", "stop", "restart"):
            raise PowerError(f"invalid power action provided: {action!r}")
        async with self.power_lock.hold(wait_s):
            self.check_power_allowed()
            if action == "start":
                await self._start()
            elif action == "stop":
                await self._stop()
            else:
                await self._stop()
                await self._start()

    async def _start(self) -> None:
        if self.state is not S.OFFLINE:
            raise PowerError("server is running")
        try:
            definition = await asyncio.wait_for(
                self._source.get_server(self.uuid), limits.RUNTIME_CALL_TIMEOUT_S
            )
        except Exception as e:  # the source is down: start with what we have, and say so
            log.warning("server %s: could not refresh configuration: %s", self.uuid, e)
        else:
            self.definition = definition
        if self.suspended:
            raise PowerError("server is suspended")
        self._matcher = self._make_matcher()
        self.machine.change_state(S.STARTING, cause="start requested")
        self._exited.clear()
        await self._rewrite_config_files()
        try:
            await asyncio.wait_for(self.runtime.start(self._launch_spec()), limits.RUNTIME_START_TIMEOUT_S)
        except Exception as e:
            log.exception("server %s: start failed", self.uuid)
            self._exited.set()
            if self.state is not S.OFFLINE and not self.attached:
                self.machine.change_state(S.OFFLINE, cause="start failed")
            self.daemon_line(f"Failed to start the server: {e}")
            raise PowerError(f"failed to start server: {e}") from None
        note = self.runtime.limits_note
        if note and not self._limits_note_logged:
            self._limits_note_logged = True
            log.warning("server %s: %s (said once per daemon run)", self.uuid, note)

    async def _stop(self) -> None:
        if self.state is S.OFFLINE:
            return
        if self.state is not S.STOPPING:
            self.machine.change_state(S.STOPPING, cause="stop requested")
        stop = self.definition.process_configuration.stop
        try:
            if stop.type == "command" and stop.value is not None:
                await asyncio.wait_for(self.runtime.write_stdin((stop.value + "\n").encode()), limits.RUNTIME_CALL_TIMEOUT_S)
            elif stop.type == "signal":
                await asyncio.wait_for(self.runtime.signal(stop_signal(stop.value)), limits.RUNTIME_CALL_TIMEOUT_S)
            else:
                await asyncio.wait_for(self.runtime.signal(signal.SIGTERM), limits.RUNTIME_CALL_TIMEOUT_S)
        except Exception as e:  # gone already, or stdin closed: the wait below settles it
            log.info("server %s: stop request failed (%s); waiting for exit", self.uuid, e)
        if not await self._wait_exit(self.config.roost.stop_timeout_s):
            self.daemon_line("Server did not stop in time; killing it.")
            await self._kill()

    async def _kill(self) -> None:
        if self.state is S.OFFLINE:
            return
        if self.state is not S.STOPPING:
            self.machine.change_state(S.STOPPING, cause="kill requested")
        try:
            await asyncio.wait_for(self.runtime.kill(), limits.RUNTIME_CALL_TIMEOUT_S)
        except Exception as e:
            log.warning("server %s: kill failed: %s", self.uuid, e)
        if not await self._wait_exit(limits.RUNTIME_CALL_TIMEOUT_S):
            raise PowerError("the server process did not exit after SIGKILL")

    async def _wait_exit(self, timeout_s: float) -> bool:
        try:
            await asyncio.wait_for(self._exited.wait(), timeout_s)
            return True
        except TimeoutError:
            return False

    async def send_command(self, line: str) -> bool:
        """Write a console command. False when there is no process to take it."""
        if self.state is S.OFFLINE or not self.attached:
            return False
        stop = self.definition.process_configuration.stop
        if stop.type == "command" and stop.value is not None and line == stop.value and self.state is not S.STOPPING:
            self.machine.change_state(S.STOPPING, cause="stop command typed")
        try:
            await asyncio.wait_for(self.runtime.write_stdin((line + "\n").encode()), limits.RUNTIME_CALL_TIMEOUT_S)
        except Exception as e:
            log.info("server %s: command not delivered: %s", self.uuid, e)
            return False
        return True

    # ---- stats --------------------------------------------------------------------------------

    async def sample(self) -> None:
        """Take one resource sample and publish `stats` (the 1 Hz sampler calls this)."""
        if self.state not in ACTIVE or not self.attached:
            return
        try:
            sample = await asyncio.wait_for(self.runtime.sample(), limits.RUNTIME_CALL_TIMEOUT_S)
        except Exception as e:
            log.debug("server %s: sample failed: %s", self.uuid, e)
            return
        if sample is not None and self.state in ACTIVE:
            self._last_sample = sample
            self.publish(self.stats_frame())

    # ---- lifecycle ----------------------------------------------------------------------------

    def spawn(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def attach(self, persisted_state: ServerState | None = None) -> bool:
        """Boot: find an instance left running by an earlier daemon, resuming its output at
        the checkpoint stored in the console log (nothing lost, nothing twice)."""
        self._reattach_state = persisted_state
        self._redelivered = deque(self.log.after_checkpoint)
        try:
            found = await asyncio.wait_for(self.runtime.attach(self.log.last_checkpoint), limits.RUNTIME_CALL_TIMEOUT_S)
        except Exception as e:
            log.warning("server %s: attach failed: %s", self.uuid, e)
            found = False
        if not found:
            self._redelivered.clear()
        return found

    def write_checkpoint(self) -> None:
        """Flush the console log with the runtime's position after its lines (periodic)."""
        self.log.checkpoint(self.runtime.checkpoint())

    async def close(self, *, stop_servers: bool) -> None:
        """Daemon shutdown: stop the server if asked, else leave it running for the next boot."""
        if stop_servers and self.state is not S.OFFLINE:
            try:
                await self.power("stop", wait_s=limits.RUNTIME_CALL_TIMEOUT_S)
            except PowerError as e:
                log.warning("server %s: stop at shutdown failed: %s", self.uuid, e)
        for t in list(self._tasks):
            t.cancel()
        try:
            self.write_checkpoint()
            await self.runtime.close()
        finally:
            self.log.close()

    async def destroy(self) -> None:
        """Deleted: kill the instance and forget everything about it."""
        self.deleted = True
        for t in list(self._tasks):
            t.cancel()
        try:
            await asyncio.wait_for(self.runtime.destroy(), limits.RUNTIME_CALL_TIMEOUT_S)
        except Exception as e:
            log.warning("server %s: runtime cleanup failed: %s", self.uuid, e)
        self.log.remove()

    # ---- helpers ------------------------------------------------------------------------------

    async def _rewrite_config_files(self) -> None:
        """The egg's config rewrites (server.properties port, ...), before every start."""
        configs = self.definition.process_configuration.configs
        if not configs:
            return
        from .configfiles import apply_config_files

        self.daemon_line("Updating process configuration files...")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            results = await asyncio.to_thread(
                apply_config_files, self.data_dir, configs,
                settings=self.definition.settings.model_dump(mode="json"),
                node_config=self.config.model_dump(mode="json"), owner=self._owner,
            )
        except OSError as e:
            log.warning("server %s: config files not updated: %s", self.uuid, e)
            return
        for r in results:
            if r.status == "error":
                log.warning("server %s: config file %s not updated: %s", self.uuid, r.file, r.detail)

    def _make_matcher(self) -> DoneMatcher:
        st = self.definition.process_configuration.startup
        return DoneMatcher(st.done, strip=st.strip_ansi)

    def _launch_spec(self) -> LaunchSpec:
        s = self.definition.settings
        b = s.build
        return LaunchSpec(
            server_uuid=self.uuid,
            invocation=self.definition.startup_command(),
            environment=self.definition.environment(),
            data_dir=str(self.data_dir),
            limits=Limits(
                memory_bytes=b.memory_limit * MIB,
                swap_bytes=-1 if b.swap < 0 else b.swap * MIB,
                cpu_percent=b.cpu_limit,
                pids=self.config.roost.pids_limit,
                oom_disabled=b.oom_disabled,
            ),
            image=s.container.image,
            ports=self._ports(),
        )

    def _ports(self) -> tuple[tuple[str, int], ...]:
        """Every allocation (mappings), or the default one, as (ip, port)."""
        a = self.definition.settings.allocations
        ports = [(ip, int(p)) for ip, plist in a.mappings.items() for p in plist]
        if not ports and a.default.port:
            ports = [(a.default.ip, a.default.port)]
        return tuple(ports)
