"""The process runtime: game servers as plain processes, each kept by a detached holder.

The daemon side of `holder.py`: launch a holder (or find one left by an earlier daemon),
relay what it reports as facts, and pass stdin, signals and kill to it. Because the holder
owns the server's pipes, `close()` (daemon shutdown or crash) leaves the server running, and
a later daemon's `attach()` picks up output from where the last one stopped.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import sys
import time

import roost
from roost.runtimes.base import (
    server_identity,
    Attached, Exited, Fact, FactSink, LaunchSpec, Output, RuntimeError_, Sample,
)
from roost.runtimes.lines import LineSplitter
from roost.runtimes.process import cgroups, holder_wire as wire
from roost.runtimes.process.cgroups import Cgroup
from roost.runtimes.process.holder import (
    EXIT_NAME, LOG_NAME, SOCKET_NAME, SPEC_NAME, SPOOL_PREFIX, SPOOL_SEGMENT_BYTES, Spool,
    read_json, write_atomic,
)
from roost.runtimes.process.procstats import ProcStats
from roost.runtimes.process.resume import ResumeMarks, iter_records_at

log = logging.getLogger(__name__)

HOLDER_MODULE = "roost.runtimes.process.holder"
CURSOR_NAME = "cursor"
# Root's PATH lacks /usr/games, where Debian puts game servers (workloads.md).
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/usr/games"
# The resume cursor is saved at most this often while output flows (and on close), so a
# daemon killed with -9 re-reads at most about this much output after it comes back.
CURSOR_SAVE_INTERVAL_S = 1.0
# stdin is sent in frames of at most this size.
STDIN_FRAME_BYTES = 64 * 1024
READ_BYTES = 256 * 1024
# Longest unix socket path (sun_path is 108 bytes including the NUL).
MAX_SOCKET_PATH_BYTES = 107


def _socket_address(state_dir: str) -> tuple[str, int | None]:
    """(path to connect to, dir fd to close afterwards). A path too long for sun_path is
    reached through /proc/self/fd/<dir fd>/, which is short whatever the state root is."""
    path = os.path.join(state_dir, SOCKET_NAME)
    if len(os.fsencode(path)) <= MAX_SOCKET_PATH_BYTES:
        return path, None
    dir_fd = os.open(state_dir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    return f"/proc/self/fd/{dir_fd}/{SOCKET_NAME}", dir_fd


def _holder_errors(state_dir: str) -> str:
    """The holder's log of this start (it is truncated before each start), for admins."""
    try:
        with open(os.path.join(state_dir, LOG_NAME)) as f:
            lines = [line.strip() for line in f if line.strip()]
    except OSError:
        lines = []
    # Drop the "time [pid]" prefixes; the last few lines say what went wrong.
    return "; ".join(line.split("] ", 1)[-1] for line in lines[-3:]) or "no holder log"


def _is_holder(pid: int) -> bool:
    """True when `pid` is a live holder process."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return HOLDER_MODULE.encode() in f.read()
    except OSError:
        return False


class ProcessRuntimeFactory:
    """Makes process runtimes.

    Args:
        state_root: directory for per-server state (`<state_root>/<uuid>/`); keep it short,
            e.g. /var/lib/roost/run, although long paths work too.
        uid, gid: run servers as this user/group (None: as the daemon's user). With a uid
            but no gid, the user's primary group is used, never the daemon's.
        cgroup_root: cgroup path below each hierarchy's mount (None: "roost").
        timeout_s: the bound on every wait for a holder (start, connect, drain, exit).
        spool_segment_bytes: output spool segment size (two are kept).
    """

    kind = "process"

    def __init__(self, state_root: str, uid: int | None, gid: int | None,
                 cgroup_root: str | None = None, *, timeout_s: float = 10.0,
                 spool_segment_bytes: int = SPOOL_SEGMENT_BYTES) -> None:
        self.state_root = os.path.abspath(state_root)
        self.uid, self.gid = server_identity(uid, gid)
        self.cgroup_root = cgroup_root
        self.timeout_s = timeout_s
        self.spool_segment_bytes = spool_segment_bytes

    def for_server(self, server_uuid: str, data_dir: str,
                   sink: FactSink) -> "ProcessServerRuntime":
        return ProcessServerRuntime(self, server_uuid, data_dir, sink)


class ProcessServerRuntime:
    """One server's handle on its holder. See `roost.runtimes.base.ServerRuntime`."""

    kind = "process"
    survives_daemon_restart = True

    def __init__(self, factory: ProcessRuntimeFactory, server_uuid: str, data_dir: str,
                 sink: FactSink) -> None:
        self.limits_note: str | None = None
        self._factory = factory
        self.server_uuid = self._uuid = server_uuid
        self._data_dir = os.path.abspath(data_dir)
        self._sink = sink
        self._state_dir = os.path.join(factory.state_root, server_uuid)
        self._timeout_s = factory.timeout_s
        self._running = False  # an instance exists and we have not reported its exit
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task | None = None
        self._exited = asyncio.Event()
        self._cgroup: Cgroup | None = None
        self._stats: ProcStats | None = None
        self._pid = 0
        self._holder_pid = 0
        self._cursor = 0
        self._cursor_saved_at = 0.0
        self._splitters: dict[int, LineSplitter] = {}
        self._marks: ResumeMarks | None = None
        # (marks, splitters) continuing a checkpoint, used by the next _begin_instance
        self._restore: tuple[ResumeMarks, dict[int, LineSplitter]] | None = None
        self._instance_id = ""

    # -- facts -------------------------------------------------------------------------------

    def _emit(self, fact: Fact) -> None:
        try:
            self._sink(fact)
        except Exception:  # a broken sink must not kill the relay
            log.exception("fact sink failed for server %s", self._uuid)

    def _emit_records(self, offset: int, records: bytes) -> None:
        """Turn spool records (starting at `offset`) into Output facts, skipping what a
        restored checkpoint says was delivered already."""
        marks = self._marks
        for record_offset, record_end, stream, data in iter_records_at(records, offset):
            splitter = self._splitters[stream]
            fed = marks.accept(stream, record_offset, record_end, data) if marks else data
            if fed:
                name = wire.STREAM_NAMES[stream]
                for line in splitter.feed(fed):
                    self._emit(Output(line, name))
            if marks:
                marks.settle(stream, splitter)

    def checkpoint(self) -> dict | None:
        if not self._running or self._marks is None or not self._splitters:
            return None
        return self._marks.checkpoint(self._splitters)

    def _flush_output(self) -> None:
        for stream, splitter in self._splitters.items():
            for line in splitter.flush():
                self._emit(Output(line, wire.STREAM_NAMES[stream]))

    def _begin_instance(self, pid: int, started_at: float, reattached: bool) -> None:
        self._running = True
        self._exited = asyncio.Event()
        if self._restore is not None:
            self._marks, self._splitters = self._restore
            self._restore = None
        else:
            self._marks = ResumeMarks(self._instance_id, self._cursor)
            self._splitters = {wire.STDOUT: LineSplitter(), wire.STDERR: LineSplitter()}
        self._pid = pid
        self._stats = ProcStats(pid, started_at, self._cgroup)
        self._emit(Attached(pid=pid, reattached=reattached, started_at=started_at))

    # -- files -------------------------------------------------------------------------------

    def _path(self, name: str) -> str:
        return os.path.join(self._state_dir, name)

    def _save_cursor(self) -> None:
        # No fsync: this only has to survive a daemon crash, and a machine crash takes the
        # holder with it anyway.
        try:
            write_atomic(self._path(CURSOR_NAME), str(self._cursor).encode(), fsync=False)
        except OSError as exc:
            log.warning("server %s: cannot save output cursor: %s", self._uuid, exc)
        self._cursor_saved_at = time.monotonic()

    def _load_cursor(self) -> int:
        value = read_json(self._path(CURSOR_NAME))
        return value if isinstance(value, int) and value >= 0 else 0

    def _remove_instance_files(self) -> None:
        """Forget a finished instance: its exit, output spool and cursor."""
        if not os.path.isdir(self._state_dir):
            return
        for name in os.listdir(self._state_dir):
            if name in (EXIT_NAME, CURSOR_NAME, SPEC_NAME, SOCKET_NAME) or \
                    name.startswith(SPOOL_PREFIX):
                try:
                    os.unlink(self._path(name))
                except FileNotFoundError:
                    pass

    async def _release_instance(self) -> None:
        """Remove the cgroup and the instance files (before reporting the exit, so a restart
        triggered by the exit finds a clean slate)."""
        if self._cgroup is not None:
            await asyncio.to_thread(self._cgroup.remove, self._timeout_s)
            self._cgroup = None
        self._remove_instance_files()
        self._stats = None

    def _prepare_data_dir(self) -> None:
        os.makedirs(self._data_dir, exist_ok=True)
        uid, gid = self._factory.uid, self._factory.gid
        if uid is not None or gid is not None:
            os.chown(self._data_dir, -1 if uid is None else uid, -1 if gid is None else gid)

    def _environment(self, spec: LaunchSpec) -> dict[str, str]:
        env = {"PATH": DEFAULT_PATH, **spec.environment, "HOME": self._data_dir}
        if "/usr/games" not in env["PATH"].split(":"):
            env["PATH"] += ":/usr/games"
        return {str(k): str(v) for k, v in env.items()}

    # -- holder connection -------------------------------------------------------------------

    async def _probe_holder(self) -> bool:
        """True when a holder is listening in our state dir."""
        if not os.path.exists(self._path(SOCKET_NAME)):
            return False
        address, dir_fd = _socket_address(self._state_dir)
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_unix_connection(address), self._timeout_s)
        except (OSError, TimeoutError):
            return False
        finally:
            if dir_fd is not None:
                os.close(dir_fd)
        writer.close()
        return True

    async def _connect(self, cursor: int, reattached: bool) -> None:
        """Connect, ask for output from `cursor`, emit Attached, start relaying."""
        address, dir_fd = _socket_address(self._state_dir)
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_unix_connection(address, limit=READ_BYTES), self._timeout_s)
        finally:
            if dir_fd is not None:
                os.close(dir_fd)
        try:
            writer.write(wire.encode_offset(wire.RESUME, cursor))
            decoder = wire.FrameDecoder()
            frames: list[wire.Frame] = []
            deadline = time.monotonic() + self._timeout_s
            while not frames:
                data = await asyncio.wait_for(reader.read(READ_BYTES),
                                              max(0.0, deadline - time.monotonic()))
                if not data:
                    raise ConnectionError("holder closed the connection")
                frames = decoder.feed(data)
            if frames[0].type != wire.INSTANCE:
                raise wire.WireError(f"expected INSTANCE, got frame type {frames[0].type}")
            info = wire.decode_json(frames[0])
        except BaseException:
            writer.close()
            raise
        self._writer = writer
        self._cursor = cursor
        self._holder_pid = int(info.get("holder_pid") or 0)
        self._begin_instance(int(info["pid"]), float(info["started_at"]), reattached)
        self._task = asyncio.create_task(self._relay(reader, decoder, frames[1:]),
                                         name=f"roost-holder-{self._uuid}")

    async def _relay(self, reader: asyncio.StreamReader, decoder: wire.FrameDecoder,
                     frames: list[wire.Frame]) -> None:
        """Turn holder frames into facts until the exit is reported or the holder is gone."""
        try:
            while True:
                for frame in frames:
                    if frame.type == wire.OUTPUT:
                        self._on_output(frame)
                    elif frame.type == wire.EXITED:
                        await self._on_exited(wire.decode_json(frame), reader)
                        return
                data = await reader.read(READ_BYTES)
                if not data:
                    break
                frames = decoder.feed(data)
        except (OSError, wire.WireError) as exc:
            log.warning("server %s: holder connection failed: %r", self._uuid, exc)
        await self._on_holder_lost()

    def _on_output(self, frame: wire.Frame) -> None:
        offset, records = wire.decode_output(frame)
        if offset != self._cursor:
            log.warning("server %s: %d bytes of output were dropped from the full spool",
                        self._uuid, offset - self._cursor)
        self._emit_records(offset, records)
        self._cursor = offset + len(records)
        if time.monotonic() - self._cursor_saved_at >= CURSOR_SAVE_INTERVAL_S:
            self._save_cursor()

    async def _on_exited(self, info: dict, reader: asyncio.StreamReader) -> None:
        writer = self._writer
        self._writer = None
        if writer is not None:
            try:
                writer.write(wire.encode_frame(wire.EXIT_ACK))
                # The holder closes the connection once it removed its socket and is leaving.
                await asyncio.wait_for(reader.read(), self._timeout_s)
            except (OSError, TimeoutError):
                pass
            writer.close()
        await self._finish(info)

    async def _finish(self, info: dict) -> None:
        self._flush_output()
        await self._release_instance()
        self._running = False
        self._exited.set()
        signum = info.get("signal")
        self._emit(Exited(code=int(info["code"]), oom_killed=bool(info.get("oom_killed")),
                          by_signal=int(signum) if signum else None))

    async def _on_holder_lost(self) -> None:
        """The connection ended without an exit report."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        info = read_json(self._path(EXIT_NAME))
        if isinstance(info, dict):  # it finished and left before telling us
            await self._replay_spool()
            await self._finish(info)
        elif _is_holder(self._holder_pid):
            # Another daemon connected (the newest connection wins). Step back quietly.
            log.error("server %s: another daemon took over this server", self._uuid)
            self._running = False
            self._stats = None
        else:
            # The holder died (it should not): nothing can drive the server any more, so end
            # it rather than leave an unmanaged process holding the server's ports and files.
            log.error("server %s: holder vanished; killing the server", self._uuid)
            try:
                os.killpg(self._pid, signal.SIGKILL)
            except OSError:
                pass
            await self._finish({"code": 128 + signal.SIGKILL, "signal": signal.SIGKILL})

    async def _replay_spool(self) -> None:
        """Output a gone holder spooled after our cursor."""
        try:
            spool = Spool.open_existing(self._state_dir)
        except OSError:
            return
        try:
            while True:
                offset, records = spool.read(self._cursor, wire.OUTPUT_FRAME_RECORD_BYTES)
                if not records:
                    break
                self._emit_records(offset, records)
                self._cursor = offset + len(records)
                await asyncio.sleep(0)  # let other servers' output through
        except wire.WireError as exc:
            log.warning("server %s: spool unreadable: %s", self._uuid, exc)
        finally:
            spool.close()

    async def _send(self, frame: bytes) -> None:
        writer = self._writer
        if writer is None:
            raise RuntimeError_("server is not running")
        try:
            writer.write(frame)
            await asyncio.wait_for(writer.drain(), self._timeout_s)
        except (OSError, TimeoutError) as exc:
            raise RuntimeError_(f"server process holder is not responding: {exc!r}") from exc

    # -- ServerRuntime -----------------------------------------------------------------------

    async def start(self, spec: LaunchSpec) -> None:
        """Launch a holder that spawns the server; returns after `Attached` was emitted."""
        if self._running:
            raise RuntimeError_("server is already running")
        if await self._probe_holder():
            raise RuntimeError_("an instance started by an earlier daemon is still running")
        os.makedirs(self._state_dir, mode=0o700, exist_ok=True)
        self._remove_instance_files()
        self._instance_id = os.urandom(8).hex()
        self._restore = None
        self._prepare_data_dir()
        self._cgroup, self.limits_note = await asyncio.to_thread(
            cgroups.create, self._factory.cgroup_root, self._uuid, spec.limits)
        # The daemon reports limits_note once (log and API); not repeated here on every start.
        holder_spec = {
            "invocation": spec.invocation,
            "environment": self._environment(spec),
            "data_dir": self._data_dir,
            "uid": self._factory.uid,
            "gid": self._factory.gid,
            "cgroup": self._cgroup.to_json() if self._cgroup else None,
            "cgroup_procs": self._cgroup.procs_files() if self._cgroup else [],
            "oom_file": self._cgroup.oom_file if self._cgroup else None,
            "spool_segment_bytes": self._factory.spool_segment_bytes,
            "limits_note": self.limits_note,  # for a later daemon's attach
            "instance_id": self._instance_id,  # checkpoints name the instance they belong to
        }
        write_atomic(self._path(SPEC_NAME), json.dumps(holder_spec).encode())
        open(self._path(LOG_NAME), "w").close()
        try:
            await self._launch_holder()
            if not await self._adopt(cursor=0, reattached=False):
                raise RuntimeError_(f"lost the server process holder: "
                                    f"{_holder_errors(self._state_dir)}")
        except BaseException:
            await self._release_instance()
            raise

    async def _launch_holder(self) -> None:
        env = dict(os.environ)
        package_parent = os.path.dirname(os.path.dirname(os.path.abspath(roost.__file__)))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_parent,
                                                         env.get("PYTHONPATH")]))
        launcher = await asyncio.create_subprocess_exec(
            sys.executable, "-m", HOLDER_MODULE, self._state_dir,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL, start_new_session=True, env=env,
            cwd=self._state_dir,
        )
        try:
            code = await asyncio.wait_for(launcher.wait(), self._timeout_s)
        except TimeoutError:
            launcher.kill()
            await launcher.wait()
            raise RuntimeError_("server process holder did not start in time") from None
        if code != 0:
            raise RuntimeError_(f"could not start the server: {_holder_errors(self._state_dir)}")

    async def attach(self, checkpoint: dict | None = None) -> bool:
        """Reconnect to a holder left by an earlier daemon. A server that exited meanwhile is
        reported like a live one (Attached, its remaining output, Exited) and returns True.

        With the daemon's `checkpoint` for this instance, output resumes exactly after the
        last line the daemon recorded; without one, from the runtime's own (approximate)
        cursor file."""
        if self._running:
            return True
        spec = read_json(self._path(SPEC_NAME))
        if not isinstance(spec, dict):
            return False
        self._cgroup = Cgroup.from_json(spec.get("cgroup"))
        self.limits_note = spec.get("limits_note")
        self._instance_id = str(spec.get("instance_id") or "")
        restored = ResumeMarks.from_checkpoint(checkpoint, self._instance_id) if self._instance_id else None
        if restored is not None:
            self._restore = restored
            cursor = ResumeMarks.resume_offset(checkpoint)
        else:
            self._restore = None
            cursor = self._load_cursor()
        if await self._adopt(cursor, reattached=True):
            return True
        await self._release_instance()  # stale state of a holder that died
        return False

    async def _adopt(self, cursor: int, reattached: bool) -> bool:
        """Take over the instance in the state dir: the live holder, or else its recorded
        exit (a server can exit before the daemon connects, even right after launch)."""
        if os.path.exists(self._path(SOCKET_NAME)):
            try:
                await self._connect(cursor, reattached)
                return True
            except (OSError, TimeoutError, wire.WireError, KeyError, ValueError) as exc:
                log.info("server %s: no live holder (%r)", self._uuid, exc)
        info = read_json(self._path(EXIT_NAME))
        if isinstance(info, dict) and "code" in info:
            self._cursor = cursor
            self._begin_instance(int(info.get("pid") or 0), float(info.get("started_at", 0)),
                                 reattached)
            self._task = asyncio.create_task(self._replay_and_finish(info))
            return True
        return False

    async def _replay_and_finish(self, info: dict) -> None:
        await self._replay_spool()
        await self._finish(info)

    async def write_stdin(self, data: bytes) -> None:
        if not self._running:
            raise RuntimeError_("server is not running")
        for i in range(0, len(data), STDIN_FRAME_BYTES):
            await self._send(wire.encode_frame(wire.STDIN, data[i:i + STDIN_FRAME_BYTES]))

    async def signal(self, signum: int) -> None:
        """Signal the server's process group; a no-op when it is not running (it may have
        exited a moment ago)."""
        if self._writer is not None:
            await self._send(wire.encode_signal(signum))

    async def kill(self) -> None:
        """SIGKILL the process group and everything in the server's cgroup."""
        if self._writer is not None:
            await self._send(wire.encode_frame(wire.KILL))

    async def sample(self) -> Sample | None:
        if not self._running or self._stats is None or self._writer is None:
            return None
        return self._stats.sample()

    async def close(self) -> None:
        """Stop relaying; the server and its holder keep running for the next daemon."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            self._save_cursor()
        self._running = False
        self._stats = None

    async def destroy(self) -> None:
        """Kill the instance (waiting for its exit, bounded) and delete all runtime state."""
        if not self._running:
            await self.attach()
        if self._running:
            try:
                await self.kill()
                await asyncio.wait_for(self._exited.wait(), self._timeout_s)
            except (RuntimeError_, TimeoutError) as exc:
                log.warning("server %s: no exit after kill: %r", self._uuid, exc)
        await self.close()
        if self._cgroup is not None:
            await asyncio.to_thread(self._cgroup.remove, self._timeout_s)
            self._cgroup = None
        shutil.rmtree(self._state_dir, ignore_errors=True)
