"""The per-server holder: a tiny detached process that owns the game server and its pipes.

Why it exists: a game server's stdin/stdout are pipes, and pipes die with the process that
holds them. If the daemon held them, restarting (or crashing) the daemon would kill or orphan
every server. The holder holds them instead, so the daemon can come and go: output printed
while no daemon is connected goes to a bounded spool file and is replayed on reconnect.

Stdlib only (plus the stdlib-only `holder_wire`); run as
`python -m roost.runtimes.process.holder <state_dir>` with `<state_dir>/spec.json` written by
the daemon. It forks once and the launcher exits 0 once the server process is spawned and the
socket is listening (1 on failure, reason in `holder.log`), so the daemon never has to reap a
long-lived child. Files in the state dir:

- `spec.json`   what to run (written by the daemon)
- `holder.sock` the daemon connects here (bound relative to the state dir: sun_path is short)
- `spool.<off>` output records, at most two segments (the oldest is dropped: bounded)
- `exit.json`   the exit status, written before it is reported, read by a later daemon
- `holder.log`  the holder's own errors
"""
from __future__ import annotations

import asyncio
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any

from roost.runtimes.process import holder_wire as wire

SOCKET_NAME = "holder.sock"
SPEC_NAME = "spec.json"
EXIT_NAME = "exit.json"
LOG_NAME = "holder.log"
SPOOL_PREFIX = "spool."

# A segment this big is closed and a new one started; two segments are kept, so the spool
# holds at least this much (~80k console lines) of the output a daemon has not yet seen.
SPOOL_SEGMENT_BYTES = 4 * 1024 * 1024
# One pipe read; also the largest output record.
PIPE_READ_BYTES = 64 * 1024
# stdin bytes queued for a server that does not read them; beyond this, writes are dropped.
STDIN_BUFFER_BYTES = 1024 * 1024
# After the main process exits, wait this long for the pipes to reach EOF (a grandchild that
# escaped the process group may hold them open forever).
PIPE_DRAIN_TIMEOUT_S = 1.0
# A connected daemon gets this long to acknowledge the exit; it is on disk anyway.
EXIT_DELIVERY_TIMEOUT_S = 30.0
# A connecting daemon must send RESUME within this time.
HANDSHAKE_TIMEOUT_S = 10.0
# Prepended to the invocation. Signals go to the whole process group, and /bin/sh (dash)
# does not exec the last command of `-c`: without this, SIGTERM would kill the wrapper shell
# at once (exit 143) and end the instance while the game is still saving. Caught signals are
# reset to default in the shell's children, so the game still gets them; the shell waits for
# it and exits with its code. (A script without `exec` inside the invocation has the same
# issue; as in Docker, use `exec` there.)
SHELL_PRELUDE = "trap : HUP INT QUIT ABRT TERM USR1 USR2\n"
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def write_atomic(path: str, data: bytes, *, fsync: bool = True) -> None:
    """Write a file so readers see the old or the new content, never a torn one."""
    tmp = f"{path}.tmp.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def read_json(path: str) -> Any:
    """The JSON in `path`, or None when it does not exist or is unreadable."""
    try:
        with open(path, "rb") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def exit_code(returncode: int) -> tuple[int, int | None]:
    """(exit code, terminating signal) from a Popen returncode; a signal death is 128+signum,
    as a shell reports it."""
    if returncode < 0:
        return 128 - returncode, -returncode
    return returncode, None


def read_oom_kills(path: str | None) -> int:
    """The `oom_kill` counter of a cgroup (v1 memory.oom_control, v2 memory.events)."""
    if not path:
        return 0
    try:
        with open(path) as f:
            for line in f:
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
    except (OSError, ValueError):
        pass
    return 0


def kill_cgroup_members(procs_files: list[str]) -> None:
    """SIGKILL every process in the server's cgroups (catches forks that left the group)."""
    for path in procs_files:
        try:
            with open(path) as f:
                pids = [int(p) for p in f.read().split()]
        except (OSError, ValueError):
            continue
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


class Spool:
    """Append-only log of output records with global byte offsets, in <= 2 segment files.

    A record never spans segments, and offsets the daemon holds are record boundaries, so
    reading from any offset it was given yields whole records. Reading below the oldest kept
    segment resumes at that segment (the skipped output is lost: the spool is bounded).
    """

    def __init__(self, directory: str, segment_bytes: int = SPOOL_SEGMENT_BYTES) -> None:
        self._dir = directory
        self._segment_bytes = self.segment_bytes = segment_bytes
        self._segments: list[tuple[int, int]] = []  # (start offset, fd)
        self.end = 0

    @classmethod
    def open_existing(cls, directory: str) -> "Spool":
        """Open a spool left by a holder that is gone (read only)."""
        spool = cls(directory)
        starts = sorted(int(n[len(SPOOL_PREFIX):]) for n in os.listdir(directory)
                        if n.startswith(SPOOL_PREFIX) and n[len(SPOOL_PREFIX):].isdigit())
        for start in starts:
            fd = os.open(spool._path(start), os.O_RDONLY | os.O_CLOEXEC)
            spool._segments.append((start, fd))
            spool.end = start + os.fstat(fd).st_size
        return spool

    def _path(self, start: int) -> str:
        return os.path.join(self._dir, f"{SPOOL_PREFIX}{start:020d}")

    def append(self, stream: int, data: bytes) -> None:
        """Append one record. On a write error (disk full) the record is dropped."""
        if not self._segments or self.end - self._segments[-1][0] >= self._segment_bytes:
            fd = os.open(self._path(self.end), os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC,
                         0o600)
            self._segments.append((self.end, fd))
            while len(self._segments) > 2:
                start, old = self._segments.pop(0)
                os.close(old)
                try:
                    os.unlink(self._path(start))
                except OSError:
                    pass
        start, fd = self._segments[-1]
        record = memoryview(wire.encode_record(stream, data))
        written = 0
        try:
            while written < len(record):
                written += os.pwrite(fd, record[written:], self.end - start + written)
        except OSError as exc:
            log(f"spool write failed, output dropped: {exc}")
            return
        self.end += len(record)

    def read(self, offset: int, max_bytes: int) -> tuple[int, bytes]:
        """(offset actually read from, whole records from there); empty at the end."""
        if not self._segments:
            return self.end, b""
        offset = min(max(offset, self._segments[0][0]), self.end)
        index = max(i for i, (start, _) in enumerate(self._segments) if start <= offset)
        start, fd = self._segments[index]
        segment_end = self._segments[index + 1][0] if index + 1 < len(self._segments) else self.end
        data = os.pread(fd, min(max_bytes, segment_end - offset), offset - start)
        return offset, data[:wire.whole_records_length(data)]

    def close(self) -> None:
        for _, fd in self._segments:
            os.close(fd)
        self._segments.clear()

    def remove(self) -> None:
        """Close and delete every segment file."""
        self.close()
        for name in os.listdir(self._dir):
            if name.startswith(SPOOL_PREFIX):
                os.unlink(os.path.join(self._dir, name))


_log_path: str | None = None


def log(message: str) -> None:
    """Append to holder.log (the holder's stdio is /dev/null)."""
    if _log_path is None:
        return
    try:
        with open(_log_path, "a") as f:
            f.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} [{os.getpid()}] {message}\n")
    except OSError:
        pass


def _prepare_child(procs_files: list[str], uid: int | None, gid: int | None) -> None:
    """Runs in the forked child before exec: join the cgroups first (as root, so no fork can
    escape them), then a new session/process group, then drop privileges."""
    try:
        pid = str(os.getpid())
        for path in procs_files:
            with open(path, "w") as f:
                f.write(pid)
        os.setsid()
        if uid is not None or gid is not None:
            os.setgroups([])
        if gid is not None:
            os.setgid(gid)
        if uid is not None:
            os.setuid(uid)
        # If the holder is killed, nothing can drive the server any more: take the main
        # process down with it rather than leave it holding the server's ports. (Set after
        # the uid change, which clears it; a later daemon's attach kills the cgroup's rest.)
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError as exc:
        log(f"preparing the server process failed: {exc}")
        raise


class _Connection:
    """One connected daemon."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.cursor = 0
        self.resumed = asyncio.Event()
        self.wake = asyncio.Event()  # new output or the exit is available


class Holder:
    """Owns one spawned server process; serves one daemon connection at a time."""

    def __init__(self, spec: dict[str, Any], listener: socket.socket) -> None:
        self._spec = spec
        self._listener = listener
        self._procs_files: list[str] = spec.get("cgroup_procs") or []
        self._oom_file: str | None = spec.get("oom_file")
        self._oom_baseline = read_oom_kills(self._oom_file)
        self._spool = Spool(".", int(spec.get("spool_segment_bytes") or SPOOL_SEGMENT_BYTES))
        uid, gid = spec.get("uid"), spec.get("gid")
        self.child = subprocess.Popen(
            ["/bin/sh", "-c", SHELL_PRELUDE + spec["invocation"]],
            cwd=spec["data_dir"], env=spec["environment"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            preexec_fn=lambda: _prepare_child(self._procs_files, uid, gid),
        )
        self.started_at = time.time()
        self._reaped = False
        self._exit: dict[str, Any] | None = None
        self._conn: _Connection | None = None
        self._exit_settled = asyncio.Event()  # set on EXIT_ACK or when the daemon goes away
        self._pipes_closed = asyncio.Event()
        self._open_pipes: dict[int, Any] = {}
        self._pipe_streams: dict[int, int] = {}
        self._stdin: asyncio.WriteTransport | None = None
        # While a daemon is connected, output it has not been sent yet must stay inside the
        # spool's two segments, or it would be overwritten: past one segment of lag the
        # pipes are paused and the game blocks on write (as it would on a slow terminal).
        # With no daemon at all the spool keeps the newest output and drops the oldest.
        self._lag_pause_bytes = self._spool.segment_bytes
        self._reading_paused = False

    def _lag(self) -> int:
        conn = self._conn
        if conn is None or not conn.resumed.is_set():
            return 0
        return self._spool.end - conn.cursor

    def _pause_reading(self) -> None:
        loop = asyncio.get_running_loop()
        for fd in self._open_pipes:
            loop.remove_reader(fd)
        self._reading_paused = True

    def _resume_reading(self) -> None:
        if not self._reading_paused:
            return
        self._reading_paused = False
        loop = asyncio.get_running_loop()
        for fd in list(self._open_pipes):
            stream = self._pipe_streams[fd]
            loop.add_reader(fd, self._on_readable, stream, fd)

    async def run(self) -> None:
        """Serve until the server exited and the exit was delivered (or is on disk)."""
        loop = asyncio.get_running_loop()
        server = await asyncio.start_unix_server(self._on_connection, sock=self._listener)
        for stream, pipe in ((wire.STDOUT, self.child.stdout), (wire.STDERR, self.child.stderr)):
            fd = pipe.fileno()
            os.set_blocking(fd, False)
            self._open_pipes[fd] = pipe
            self._pipe_streams[fd] = stream
            loop.add_reader(fd, self._on_readable, stream, fd)
        self._stdin, _ = await loop.connect_write_pipe(asyncio.Protocol, self.child.stdin)
        child_done = asyncio.Event()
        pidfd = os.pidfd_open(self.child.pid)
        loop.add_reader(pidfd, child_done.set)
        await child_done.wait()
        loop.remove_reader(pidfd)
        os.close(pidfd)
        await self._record_exit()
        if self._conn is not None:
            try:
                await asyncio.wait_for(self._exit_settled.wait(), EXIT_DELIVERY_TIMEOUT_S)
            except TimeoutError:
                log("daemon did not acknowledge the exit; it is on disk")
        server.close()
        try:
            os.unlink(SOCKET_NAME)
        except OSError:
            pass
        if self._conn is not None:
            self._conn.writer.close()
        self._spool.close()

    async def _record_exit(self) -> None:
        # Like a container: the instance ends with its main process. Nothing else in the
        # group may linger holding ports or files. Killed before reaping, while the zombie
        # still pins the process group id.
        self._kill_all()
        code, sig = exit_code(self.child.wait())  # pidfd said it exited: returns at once
        self._reaped = True
        self._resume_reading()  # the last output (at most a pipe buffer) is always taken
        try:
            await asyncio.wait_for(self._pipes_closed.wait(), PIPE_DRAIN_TIMEOUT_S)
        except TimeoutError:
            for fd in list(self._open_pipes):
                self._close_pipe(fd)
        if self._stdin is not None and not self._stdin.is_closing():
            self._stdin.abort()
        record = {"code": code, "signal": sig, "pid": self.child.pid,
                  "oom_killed": read_oom_kills(self._oom_file) > self._oom_baseline,
                  "started_at": self.started_at, "exited_at": time.time()}
        write_atomic(EXIT_NAME, json.dumps(record).encode())
        self._exit = record
        if self._conn is not None:
            self._conn.wake.set()

    def _kill_all(self) -> None:
        try:
            os.killpg(self.child.pid, signal.SIGKILL)
        except OSError:
            pass
        kill_cgroup_members(self._procs_files)

    def _signal(self, signum: int) -> None:
        # Until reaped, the pid (= pgid) cannot be reused, so this never hits a stranger.
        if self._reaped:
            return
        try:
            os.killpg(self.child.pid, signum)
        except OSError as exc:
            log(f"signal {signum} failed: {exc}")

    def _on_readable(self, stream: int, fd: int) -> None:
        try:
            data = os.read(fd, PIPE_READ_BYTES)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._close_pipe(fd)
            return
        self._spool.append(stream, data)
        if self._conn is not None:
            self._conn.wake.set()
            if self._lag() > self._lag_pause_bytes:
                self._pause_reading()

    def _close_pipe(self, fd: int) -> None:
        if not self._reading_paused:
            asyncio.get_running_loop().remove_reader(fd)
        self._open_pipes.pop(fd).close()
        if not self._open_pipes:
            self._pipes_closed.set()

    def _write_stdin(self, data: bytes) -> None:
        if self._stdin is None or self._stdin.is_closing():
            return
        if self._stdin.get_write_buffer_size() + len(data) > STDIN_BUFFER_BYTES:
            log(f"server is not reading stdin; dropped {len(data)} bytes")
            return
        self._stdin.write(data)

    async def _on_connection(self, reader: asyncio.StreamReader,
                             writer: asyncio.StreamWriter) -> None:
        # The newest daemon wins: an older connection belongs to a daemon that is gone or hung.
        if self._conn is not None:
            self._conn.writer.close()
        conn = self._conn = _Connection(reader, writer)
        receiver = asyncio.create_task(self._receive(conn))
        sender = asyncio.create_task(self._send(conn))
        try:
            await asyncio.wait({receiver, sender}, return_when=asyncio.FIRST_COMPLETED)
            if sender.done() and not sender.cancelled() and sender.exception() is None:
                await receiver  # the exit was sent: wait for EXIT_ACK or the daemon leaving
        except (OSError, wire.WireError):
            pass
        finally:
            for task in (receiver, sender):
                task.cancel()
                try:
                    await task
                except (asyncio.CancelledError, OSError, TimeoutError, wire.WireError) as exc:
                    if not isinstance(exc, asyncio.CancelledError):
                        log(f"daemon connection ended: {exc!r}")
            writer.close()
            if self._conn is conn:
                self._conn = None
                self._resume_reading()  # no daemon: the spool takes it all
                if self._exit is not None:
                    self._exit_settled.set()

    async def _send(self, conn: _Connection) -> None:
        """Stream output from the daemon's cursor, then the exit. Never blocks the pipes:
        this only reads the spool, at the pace the daemon drains the socket."""
        await asyncio.wait_for(conn.resumed.wait(), HANDSHAKE_TIMEOUT_S)
        conn.writer.write(wire.encode_json(wire.INSTANCE, {
            "pid": self.child.pid, "started_at": self.started_at, "holder_pid": os.getpid()}))
        while True:
            conn.wake.clear()
            offset, records = self._spool.read(conn.cursor, wire.OUTPUT_FRAME_RECORD_BYTES)
            if records:
                conn.writer.write(wire.encode_output(offset, records))
                conn.cursor = offset + len(records)
                await conn.writer.drain()
                if self._reading_paused and self._lag() < self._lag_pause_bytes // 2:
                    self._resume_reading()
            elif self._exit is not None:
                conn.writer.write(wire.encode_json(wire.EXITED, self._exit))
                await conn.writer.drain()
                return
            else:
                await conn.wake.wait()

    async def _receive(self, conn: _Connection) -> None:
        decoder = wire.FrameDecoder()
        while data := await conn.reader.read(65536):
            for frame in decoder.feed(data):
                if frame.type == wire.RESUME:
                    conn.cursor = wire.decode_offset(frame)
                    conn.resumed.set()
                elif frame.type == wire.STDIN:
                    self._write_stdin(frame.payload)
                elif frame.type == wire.SIGNAL:
                    self._signal(wire.decode_signal(frame))
                elif frame.type == wire.KILL:
                    if not self._reaped:
                        self._kill_all()
                elif frame.type == wire.EXIT_ACK:
                    self._exit_settled.set()
                    return


def main(argv: list[str] | None = None) -> None:
    global _log_path
    argv = sys.argv[1:] if argv is None else argv
    state_dir = os.path.abspath(argv[0])
    os.chdir(state_dir)
    _log_path = os.path.join(state_dir, LOG_NAME)
    ready_r, ready_w = os.pipe()
    if os.fork():
        # Launcher: report whether the holder got going, then leave (the holder is adopted
        # by init, so the daemon never has to reap it).
        os.close(ready_w)
        with os.fdopen(ready_r, "rb") as f:
            os._exit(0 if f.read() == b"ok" else 1)
    os.close(ready_r)
    try:
        spec = read_json(SPEC_NAME)
        if not isinstance(spec, dict):
            raise ValueError(f"{SPEC_NAME} is missing or invalid")
        try:
            os.unlink(SOCKET_NAME)
        except FileNotFoundError:
            pass
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(SOCKET_NAME)  # relative: an absolute path may exceed sun_path
        listener.listen(4)
        holder = Holder(spec, listener)
    except BaseException as exc:  # noqa: BLE001 - reported to the daemon via holder.log
        log(f"could not start the server process: {exc}")
        os._exit(1)
    os.write(ready_w, b"ok")
    os.close(ready_w)
    try:
        asyncio.run(holder.run())
    except BaseException:  # noqa: BLE001
        import traceback
        log(f"holder failed: {traceback.format_exc()}")
        raise


if __name__ == "__main__":
    main()
