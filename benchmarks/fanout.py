"""Console fan-out benchmark: roost against the obvious aiohttp broadcast, in the same run.

    .venv/bin/python benchmarks/fanout.py [--quick] [--json PATH] [--profile DIR] [--burst-batch B]

Starts a real roost daemon (tests/functional/harness.py `Node`, throttle disabled) running
benchmarks/firehose.py as its game server, and benchmarks/baseline_server.py running the same
firehose. This process is the only client (one asyncio thread, all sockets); it talks to each
side in turn, alternating which side goes first, and measures per scenario and per side:

- burst, 1 and 30 sockets: the firehose prints N lines as fast as it can (one write per line);
  lines/s delivered to each socket, and lines lost (N minus lines received, once the end
  marker came). roost's losses are split into lines its sockets skipped (it says so in-band)
  and bytes its holder's output spool dropped before the daemon read them (daemon log);
- paced 20,000 lines/s, 30 sockets: the throughput target, delivered rate and loss;
- latency, 30 sockets: the firehose prints 1,000 lines/s, each carrying time.time_ns() at the
  write; p50/p99/max of (receive time - print time) over all lines and sockets.

The client does not decode websocket frames: server frames are unmasked and uncompressed, so
the raw byte stream holds each frame's JSON text verbatim. Throughput runs count a per-line
marker with bytes.count, reading every socket once per SWEEP_S (few large reads, so the client
stays cheap whatever the server's write pattern); latency runs read on readiness and pull the
timestamp out with one regex. The CPU of the client, the servers (roost: daemon and holder) and
the firehose is reported per scenario with the rest of the machine's load, because the machine
is shared: compare the ratios, not the absolutes.

The baseline never drops a line (send_str waits for the socket, so the firehose blocks on its
pipe), so a slow baseline run is cut at a time cap and reported as the share delivered by then.
`--profile DIR` samples the roost daemon with py-spy (if installed) during each roost run.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import uuid as uuidlib
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from roost.demo.definition import demo_definition  # noqa: E402
from tests.functional.harness import TOKEN, Node, free_port  # noqa: E402

FIREHOSE = HERE / "firehose.py"
PY_SPY = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
BASELINE = HERE / "baseline_server.py"

TARGET_RATE = 20_000  # lines/s to each socket ...
TARGET_SOCKETS = 30  # ... of this many, none lost
TARGET_P99_MS = 5.0  # at 1,000 lines/s with 30 sockets

TAIL_BYTES = 128  # overlap kept between reads so markers split across reads are still seen
RECV_BYTES = 1 << 20  # one read takes up to this much
SWEEP_S = 0.002  # throughput runs read all sockets this often (latency runs read on readiness)
SKIP_RE = re.compile(rb"\[roost\] (\d+) console lines skipped")
CONNECT_TIMEOUT_S = 20.0  # all sockets of a scenario connected and authenticated
FIRST_LINE_TIMEOUT_S = 30.0  # command sent -> first line of the run (a backlog may precede it)
CLIENT_CPU_WARN = 85.0  # % of one core: above this the client may be what limits the rate
OTHER_LOAD_WARN = 30.0  # % of one core used by processes outside the benchmark


@dataclass(frozen=True)
class Profile:
    burst_n: int  # lines per burst
    burst_cap_s: float  # a burst run is cut this long after its first line
    paced_s: float  # duration of the paced 20,000 lines/s run
    lat_s: float  # duration of the 1,000 lines/s latency run


PROFILES = {
    "full": Profile(burst_n=1_000_000, burst_cap_s=15.0, paced_s=5.0, lat_s=10.0),
    "quick": Profile(burst_n=100_000, burst_cap_s=3.0, paced_s=1.0, lat_s=2.0),
}


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    sockets: int
    kind: str  # "burst" | "paced" | "latency"
    lines: int
    rate: float = 0.0
    cap_s: float = 0.0
    batch: int = 1  # burst: lines per write

    def command(self, run: str) -> str:
        if self.kind == "burst":
            return f"burst {run} {self.lines} {self.batch}"
        return f"paced {run} {self.rate:g} {self.lines}"


def scenarios(p: Profile, batch: int) -> list[Scenario]:
    return [
        Scenario("burst1", "burst, 1 socket", 1, "burst", p.burst_n, cap_s=p.burst_cap_s, batch=batch),
        Scenario("burst30", "burst, 30 sockets", 30, "burst", p.burst_n, cap_s=p.burst_cap_s, batch=batch),
        Scenario("paced30", f"paced {TARGET_RATE:,}/s, 30 sockets", 30, "paced",
                 int(TARGET_RATE * p.paced_s), TARGET_RATE, cap_s=2 * p.paced_s + 2),
        Scenario("lat30", "latency @1,000/s, 30 sockets", 30, "latency",
                 int(1000 * p.lat_s), 1000, cap_s=2 * p.lat_s + 3),
    ]


# ---- raw websocket client --------------------------------------------------------------------

def client_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """A masked client frame (RFC 6455 §5.3)."""
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    return head + mask + bytes(b ^ mask[i & 3] for i, b in enumerate(payload))


class HandshakeError(Exception):
    def __init__(self, status: int, text: str):
        super().__init__(f"HTTP {status}: {text}" if status else text)
        self.status = status


class RawClient:
    """One websocket: upgrade and `auth` with asyncio's socket calls, then scan the unparsed
    byte stream for this run's lines. `pump()` reads everything the kernel holds; throughput
    runs call it for all sockets from one sweep every SWEEP_S (few, large reads: the client
    stays cheap however the server cuts its writes), latency runs call it on readiness."""

    def __init__(self, host: str, port: int, path: str, token: str, run: str, kind: str):
        key = base64.b64encode(os.urandom(16)).decode()
        self.addr = (host, port)
        self.request = (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()
        self.auth = client_frame(json.dumps({"event": "auth", "args": [token]}).encode())
        self.sock: socket.socket | None = None
        self.reading = False  # registered with the event loop (latency runs)
        self.done = False  # the run's end marker arrived
        self.closed = False  # the server closed the connection
        r = run.encode()
        self.marker = (b'["FH' if kind == "burst" else b'["FT') + r + b":"  # see firehose.py
        self.end_marker = b'["FHEND' + r + b'"'
        self.lat_re = re.compile(rb'\["FT' + r + rb":\d+ (\d+) ") if kind == "latency" else None
        self.rbuf = bytearray(RECV_BYTES)
        self.rview = memoryview(self.rbuf)
        self.tail = b""
        self.count = 0  # lines of this run received
        self.first_n = 0  # of which in the first read (excluded from the rate)
        self.t_first = 0  # time.time_ns() of the first and last read holding a line of the run
        self.t_last = 0
        self.skipped = 0  # lines roost said it skipped ("[roost] N console lines skipped")
        self.lat_ns: list[int] = []

    async def open(self, timeout_s: float) -> None:
        loop = asyncio.get_running_loop()
        self.sock = sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        async with asyncio.timeout(timeout_s):
            await loop.sock_connect(sock, self.addr)
            await loop.sock_sendall(sock, self.request)
            head = bytearray()
            while (end := head.find(b"\r\n\r\n")) < 0:
                chunk = await loop.sock_recv(sock, 65536)
                if not chunk or len(head) > 65536:
                    raise HandshakeError(0, "connection closed during the handshake")
                head += chunk
            parts = bytes(head[: head.find(b"\r\n")]).split(b" ", 2)
            status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
            if status != 101:
                raise HandshakeError(status, bytes(head[end + 4:end + 200]).decode(errors="replace"))
            await loop.sock_sendall(sock, self.auth)
            pre = bytearray(head[end + 4:])
            while b'"auth success"' not in pre:
                if b'"jwt error"' in pre:
                    raise HandshakeError(0, f"auth refused: {bytes(pre[-300:])!r}")
                chunk = await loop.sock_recv(sock, 65536)
                if not chunk:
                    raise HandshakeError(0, "connection closed before auth success")
                pre += chunk
        self._scan(bytes(pre))

    def pump(self) -> None:
        """Read until the kernel has nothing more for us."""
        while not self.closed:
            try:
                n = self.sock.recv_into(self.rbuf)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                n = 0
            if not n:
                self.closed = True
                self.stop_reading()
                return
            self._scan(self.tail + self.rview[:n])

    def start_reading(self) -> None:
        asyncio.get_running_loop().add_reader(self.sock.fileno(), self.pump)
        self.reading = True

    def stop_reading(self) -> None:
        if self.reading:
            self.reading = False
            asyncio.get_running_loop().remove_reader(self.sock.fileno())

    def _scan(self, buf: bytes) -> None:
        """`buf` is the previous read's tail + this read's bytes."""
        now = time.time_ns()
        tail = self.tail
        cut = len(tail)  # matches ending inside the tail were counted with the previous read
        if self.lat_re is None:
            n = buf.count(self.marker) - tail.count(self.marker)
        else:
            n = 0
            for m in self.lat_re.finditer(buf):
                if m.end() > cut:
                    self.lat_ns.append(now - int(m.group(1)))
                    n += 1
        if n:
            if not self.count:
                self.t_first = now
                self.first_n = n
            self.count += n
            self.t_last = now
        if b"lines skipped" in buf:
            for m in SKIP_RE.finditer(buf):
                if m.end() > cut:
                    self.skipped += int(m.group(1))
        if not self.done and self.end_marker in buf:
            self.done = True
        self.tail = buf[-TAIL_BYTES:]

    def close(self) -> None:
        self.stop_reading()
        if self.sock is not None:
            try:
                self.sock.send(client_frame(struct.pack("!H", 1000), opcode=0x8))
            except OSError:
                pass
            self.sock.close()

    def rate(self) -> float | None:
        """Lines/s over the span of reads that held the run's lines (the first read excluded)."""
        span = (self.t_last - self.t_first) / 1e9
        return (self.count - self.first_n) / span if span > 0.05 else None


# ---- CPU accounting --------------------------------------------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_cpu_s(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return 0.0


def find_pids(pred) -> list[int]:
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmd = f.read()
            with open(f"/proc/{name}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if pred(int(name), ppid, cmd):
            out.append(int(name))
    return out


def machine_cpu_s() -> tuple[float, float, float]:
    """CPU-seconds of all cores (from /proc/stat): processes (user+nice+system), interrupts
    (irq+softirq: much of loopback TCP runs there, charged to no process), and steal (the
    hypervisor gave the time to someone else)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]] + [0] * 8
    return (v[0] + v[1] + v[2]) / CLK_TCK, (v[5] + v[6]) / CLK_TCK, v[7] / CLK_TCK


def self_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


# ---- the two sides ---------------------------------------------------------------------------

class Side:
    name: str
    host = "127.0.0.1"
    port: int
    path: str
    token: str

    async def command(self, http: aiohttp.ClientSession, line: str) -> None:
        raise NotImplementedError

    def cpu_groups(self) -> dict[str, list[int]]:
        """Processes whose CPU time is reported, by column: server, holder, firehose."""
        raise NotImplementedError

    def log_mark(self) -> int:
        return 0

    def spool_dropped_bytes(self, mark: int) -> int:
        return 0


class RoostSide(Side):
    name = "roost"

    def __init__(self) -> None:
        self.node = Node({
            "throttles": {"enabled": False},  # measure the fan-out, not the throttle
            # The raw clients do not answer pings; no scenario lives long enough to need one.
            "roost": {"stop_timeout_s": 5, "websocket": {"ping_interval_s": 3600}},
        })
        self.home = str(self.node.home)
        self.sid = str(uuidlib.uuid4())
        doc = demo_definition(
            self.sid, name="firehose",
            invocation=f"exec python3 -u firehose.py --owner {self.home}",  # the tag lets cleanup find it
            build={"memory_limit": 0, "swap": 0, "io_weight": 500, "cpu_limit": 0, "disk_space": 0,
                   "threads": None, "oom_disabled": False},  # no limits: the baseline has none
        )
        doc["process_configuration"]["startup"]["done"] = ["firehose ready"]
        doc["process_configuration"]["stop"] = {"type": "command", "value": "stop"}
        data = Path(self.node.config["system"]["data"]) / self.sid
        data.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(FIREHOSE, data / "firehose.py")
        self.node.add_server(doc)
        self.port = self.node.port
        self.path = f"/api/servers/{self.sid}/ws"

    async def start(self, http: aiohttp.ClientSession, timeout_s: float = 30.0) -> None:
        await asyncio.to_thread(self.node.start)
        self.token = self.node.token(self.sid, ttl=3600)
        async with http.post(f"{self.node.url}/api/servers/{self.sid}/power", json={"action": "start"},
                             headers={"Authorization": f"Bearer {TOKEN}"}) as r:
            if r.status >= 300:
                raise RuntimeError(f"roost power start: HTTP {r.status} {await r.text()}")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            async with http.get(f"{self.node.url}/api/servers/{self.sid}",
                                headers={"Authorization": f"Bearer {TOKEN}"}) as r:
                if r.status == 200 and (await r.json())["state"] == "running":
                    return
            await asyncio.sleep(0.1)
        raise RuntimeError(f"roost server did not reach running; daemon log:\n{self.node.daemon_log()[-3000:]}")

    async def command(self, http: aiohttp.ClientSession, line: str) -> None:
        async with http.post(f"{self.node.url}/api/servers/{self.sid}/commands", json={"commands": [line]},
                             headers={"Authorization": f"Bearer {TOKEN}"}) as r:
            if r.status != 204:
                raise RuntimeError(f"roost command: HTTP {r.status} {await r.text()}")

    def daemon_pid(self) -> int:
        return self.node.proc.pid if self.node.proc else 0

    def holder_pids(self) -> list[int]:
        home = self.home.encode()
        return find_pids(lambda pid, ppid, cmd: b"roost.runtimes.process.holder" in cmd and home in cmd)

    def cpu_groups(self) -> dict[str, list[int]]:
        home = self.home.encode()
        return {"server": [self.daemon_pid()], "holder": self.holder_pids(),
                "firehose": find_pids(lambda pid, ppid, cmd: b"firehose.py" in cmd and home in cmd)}

    def log_mark(self) -> int:
        try:
            return self.node.log_path.stat().st_size
        except OSError:
            return 0

    def spool_dropped_bytes(self, mark: int) -> int:
        try:
            with open(self.node.log_path, "rb") as f:
                f.seek(mark)
                text = f.read().decode(errors="replace")
        except OSError:
            return 0
        return sum(int(n) for n in re.findall(r"(\d+) bytes of output were dropped", text))

    def cleanup(self) -> None:
        self.node.cleanup()  # stops the daemon, then pkills everything under its home dir


class BaselineSide(Side):
    name = "baseline"

    def __init__(self) -> None:
        self.port = free_port()
        self.path = "/ws"
        self.token = "baseline-accepts-any-token"
        self.logdir = tempfile.mkdtemp(prefix="fanout-baseline-")
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 15.0) -> None:
        self._log = open(os.path.join(self.logdir, "baseline.log"), "wb")
        self.proc = subprocess.Popen(
            [sys.executable, str(BASELINE), "--port", str(self.port), "--firehose", str(FIREHOSE)],
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"baseline exited: {self.log_text()[-2000:]}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("baseline did not start listening")

    def log_text(self) -> str:
        try:
            return Path(self.logdir, "baseline.log").read_text(errors="replace")
        except OSError:
            return ""

    async def command(self, http: aiohttp.ClientSession, line: str) -> None:
        async with http.post(f"http://{self.host}:{self.port}/command", json={"line": line}) as r:
            if r.status != 204:
                raise RuntimeError(f"baseline command: HTTP {r.status} {await r.text()}")

    def cpu_groups(self) -> dict[str, list[int]]:
        if not self.proc:
            return {}
        return {"server": [self.proc.pid],
                "firehose": find_pids(lambda pid, ppid, cmd: b"firehose.py" in cmd and ppid == self.proc.pid)}

    def cleanup(self) -> None:
        if self.proc is not None:
            for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
                try:
                    os.killpg(self.proc.pid, sig)  # its own session: the baseline and its firehose
                except ProcessLookupError:
                    break
                try:
                    self.proc.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
            try:  # the firehose may outlive its parent by a moment
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if hasattr(self, "_log"):
            self._log.close()
        shutil.rmtree(self.logdir, ignore_errors=True)


# ---- one scenario ----------------------------------------------------------------------------

@dataclass
class Result:
    side: str
    sc: Scenario
    counts: list[int] = field(default_factory=list)
    rates: list[float] = field(default_factory=list)
    complete: int = 0  # sockets that saw the end marker
    skipped: int = 0  # lines roost reported skipped (sum over sockets)
    spool_dropped_bytes: int = 0
    lat_ms: list[float] = field(default_factory=list)  # p50, p99, max
    capped: bool = False
    error: str = ""
    wall_s: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)  # % of one core
    profile: Path | None = None  # py-spy raw output for the roost daemon

    @property
    def all_complete(self) -> bool:
        return not self.error and self.complete == self.sc.sockets

    def lost(self) -> tuple[int, int] | None:
        """(total over sockets, worst socket), or None when the run did not finish."""
        if not self.all_complete:
            return None
        per = [max(0, self.sc.lines - c) for c in self.counts]
        return sum(per), max(per)


async def connect(side: Side, run: str, kind: str, deadline: float) -> RawClient:
    while True:
        client = RawClient(side.host, side.port, side.path, side.token, run, kind)
        try:
            await client.open(10.0)
            return client
        except HandshakeError as e:
            client.close()
            # 400: roost has not yet released the previous scenario's sockets (30 max)
            if e.status != 400 or time.monotonic() > deadline:
                raise
        except (OSError, TimeoutError):
            client.close()
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.2)


async def sweep(clients: list[RawClient]) -> None:
    """Throughput runs: read every socket, then sleep; cancelled at the end of the run."""
    while True:
        for c in clients:
            c.pump()
        await asyncio.sleep(SWEEP_S)


class Profiler:
    """py-spy sampling one process for the length of a scenario (raw collapsed stacks)."""

    def __init__(self, exe: str, pid: int, out: Path):
        self.out = out
        self.proc = subprocess.Popen(
            [exe, "record", "--pid", str(pid), "--rate", "250", "--nonblocking", "--format", "raw",
             "--output", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def stop(self) -> str:
        """Stop sampling; returns an error text, or '' when the profile was written."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        try:
            _, err = self.proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate(timeout=5)
        return "" if self.out.exists() else (err or b"").decode(errors="replace").strip()[-300:]


def summarize_profile(path: Path, top: int = 10) -> list[str]:
    """Self and inclusive time per function from py-spy's raw output (idle samples excluded)."""
    self_t: dict[str, int] = {}
    incl: dict[str, int] = {}
    total = 0
    for row in path.read_text(errors="replace").splitlines():
        stack, _, n = row.rpartition(" ")
        if not n.isdigit():
            continue
        k = int(n)
        total += k
        frames = [re.sub(r":\d+\)$", ")", f.strip()) for f in stack.split(";")[1:]]  # drop the thread frame
        if frames:
            self_t[frames[-1]] = self_t.get(frames[-1], 0) + k
        for f in set(frames):
            incl[f] = incl.get(f, 0) + k
    if not total:
        return ["    (no samples)"]
    out = [f"    {total} samples (250 Hz); self time (native code is charged to the Python frame calling it):"]
    out += [f"      {100 * v / total:5.1f}%  {f}" for f, v in sorted(self_t.items(), key=lambda x: -x[1])[:top]]
    out.append("    inclusive time, roost and aiohttp frames:")
    mine = [(f, v) for f, v in incl.items()
            if ("roost/" in f or "aiohttp/" in f) and "roost/cli/" not in f and "roost/__main__" not in f]
    out += [f"      {100 * v / total:5.1f}%  {f}" for f, v in sorted(mine, key=lambda x: -x[1])[:top]]
    return out


async def run_scenario(side: Side, sc: Scenario, run: str, http: aiohttp.ClientSession,
                       profile_dir: Path | None = None) -> Result:
    res = Result(side.name, sc)
    deadline = time.monotonic() + CONNECT_TIMEOUT_S
    got = await asyncio.gather(*(connect(side, run, sc.kind, deadline) for _ in range(sc.sockets)),
                               return_exceptions=True)
    clients = [c for c in got if isinstance(c, RawClient)]
    sweeper: asyncio.Task | None = None
    try:
        errors = [e for e in got if not isinstance(e, RawClient)]
        if errors:
            res.error = f"{len(errors)} of {sc.sockets} sockets failed to connect: {errors[0]!r}"
            return res
        groups = side.cpu_groups()
        mark = side.log_mark()

        def cpu_now() -> tuple[dict[str, float], tuple[float, float, float], float]:
            own = {k: sum(map(proc_cpu_s, pids)) for k, pids in groups.items()}
            own["client"] = self_cpu_s()
            return own, machine_cpu_s(), time.monotonic()

        profiler = None
        if profile_dir is not None and isinstance(side, RoostSide):
            profiler = Profiler(PY_SPY, side.daemon_pid(), profile_dir / f"roost-{sc.key}.txt")
            await asyncio.sleep(0.5)  # let py-spy attach before the run starts
        cpu0, m0, t0 = cpu_now()
        if sc.kind == "latency":
            for c in clients:
                c.start_reading()
        else:
            sweeper = asyncio.create_task(sweep(clients))
        await side.command(http, sc.command(run))
        first_deadline = time.monotonic() + FIRST_LINE_TIMEOUT_S
        while True:  # bounded: by FIRST_LINE_TIMEOUT_S, then by the scenario's cap
            await asyncio.sleep(0.02)
            if all(c.done or c.closed for c in clients):
                break
            firsts = [c.t_first for c in clients if c.count]
            if not firsts:
                if time.monotonic() > first_deadline:
                    res.error = "no line of the run arrived"
                    break
            elif time.time_ns() > min(firsts) + sc.cap_s * 1e9:
                res.capped = True
                break
        cpu1, m1, t1 = cpu_now()
        if profiler is not None:
            err = await asyncio.to_thread(profiler.stop)
            res.profile = profiler.out if not err else None
            if err:
                print(f" [py-spy: {err}]", end="")
        wall = res.wall_s = t1 - t0
        res.cpu = {k: 100 * (cpu1[k] - cpu0[k]) / wall for k in cpu0}
        res.cpu["other"] = max(0.0, 100 * (m1[0] - m0[0]) / wall - sum(res.cpu.values()))
        res.cpu["irq"] = 100 * (m1[1] - m0[1]) / wall
        res.cpu["steal"] = 100 * (m1[2] - m0[2]) / wall
        res.counts = [c.count for c in clients]
        res.rates = [r for c in clients if (r := c.rate()) is not None]
        res.complete = sum(c.done for c in clients)
        res.skipped = sum(c.skipped for c in clients)
        res.spool_dropped_bytes = side.spool_dropped_bytes(mark)
        if sc.kind == "latency":
            lat = sorted(x for c in clients for x in c.lat_ns)
            if lat:
                res.lat_ms = [lat[int(q * (len(lat) - 1))] / 1e6 for q in (0.5, 0.99)] + [lat[-1] / 1e6]
        closed_early = sum(c.closed and not c.done for c in clients)
        if closed_early and not res.error:
            res.error = f"{closed_early} sockets were closed by the server before the end"
        return res
    finally:
        if sweeper is not None:
            sweeper.cancel()
        for c in clients:
            c.close()
        await asyncio.sleep(0.2)  # let the servers notice, so the next scenario's 30 fit in


# ---- report ----------------------------------------------------------------------------------

def fmt_rate(r: Result, how: str = "min") -> str:
    if r.error and not r.rates:
        return "error"
    if not r.rates:
        return "-"
    v = min(r.rates) if how == "min" else statistics.median(r.rates)
    return f"{v:,.0f}" + ("*" if r.capped else "")


def rate_value(r: Result, how: str = "min") -> float | None:
    if not r.rates:
        return None
    return min(r.rates) if how == "min" else statistics.median(r.rates)


def fmt_lost(r: Result) -> str:
    lost = r.lost()
    if lost is None:
        if r.error:
            return "error"
        got = sum(r.counts) / (r.sc.lines * r.sc.sockets) if r.counts else 0
        return f"n/a: {got:.0%} delivered by cap"
    total, worst = lost
    if r.sc.sockets == 1:
        return f"{total:,}"
    return f"{total:,} (worst socket {worst:,})"


def ratio(a: float | None, b: float | None) -> str:
    if not a or not b:
        return "-"
    return f"{a / b:.2f}x"


def report(results: dict[tuple[str, str], Result], scs: list[Scenario], profile_name: str, elapsed: float) -> list[str]:
    out: list[str] = []
    rows: list[tuple[str, str, str, str]] = []
    for sc in scs:
        R, B = results.get(("roost", sc.key)), results.get(("baseline", sc.key))
        if R is None or B is None:
            continue
        if sc.kind in ("burst", "paced"):
            if sc.sockets == 1:
                rows.append((f"{sc.title}: lines/s", fmt_rate(R), fmt_rate(B), ratio(rate_value(R), rate_value(B))))
            else:
                rows.append((f"{sc.title}: lines/s per socket, min", fmt_rate(R), fmt_rate(B),
                             ratio(rate_value(R), rate_value(B))))
                rows.append((f"{sc.title}: lines/s per socket, median", fmt_rate(R, "median"), fmt_rate(B, "median"),
                             ratio(rate_value(R, "median"), rate_value(B, "median"))))
        else:
            for i, q in enumerate(("p50", "p99", "max")):
                rv = R.lat_ms[i] if R.lat_ms else None
                bv = B.lat_ms[i] if B.lat_ms else None
                rows.append((f"{sc.title}: {q} ms", f"{rv:.2f}" if rv is not None else "error",
                             f"{bv:.2f}" if bv is not None else "error", ratio(bv, rv)))
        rows.append((f"{sc.title}: lines lost", fmt_lost(R), fmt_lost(B), ""))
    w = [max(len(r[i]) for r in rows + [("scenario", "roost", "baseline", "ratio")]) for i in range(4)]
    line = lambda r: " | ".join(s.ljust(w[i]) if i == 0 else s.rjust(w[i]) for i, s in enumerate(r))  # noqa: E731
    out.append(f"roost console fan-out vs bare aiohttp broadcast ({profile_name} run, {elapsed:.0f} s)")
    out.append("ratio = roost/baseline for lines/s, baseline/roost for latency: > 1 means roost is better")
    out.append("")
    out.append(line(("scenario", "roost", "baseline", "ratio")))
    out.append("-+-".join("-" * x for x in w))
    out.extend(line(r) for r in rows)
    out.append("* the run was cut at its time cap; the rate is over what arrived by then. The baseline never drops")
    out.append("  a line: send_str waits for the socket, so the firehose blocks on its pipe instead (hence n/a)")

    out.append("")
    out.append(f"CPU, % of one core ({os.cpu_count()} cores = {100 * (os.cpu_count() or 1)}%), while each scenario ran. "
               "server: the roost daemon, or the baseline;")
    out.append("holder: roost's per-server output relay; other: every other process on the machine; irq: interrupts and softirqs (loopback TCP, "
               "ours included); steal: taken by the hypervisor")
    cols = ("server", "holder", "firehose", "client", "other", "irq", "steal")
    hdr = ("scenario", "side", "wall s", *cols, "notes")
    cpu_rows = []
    for sc in scs:
        for name in ("roost", "baseline"):
            r = results.get((name, sc.key))
            if r is None:
                continue
            notes = []
            if r.error:
                notes.append(r.error)
            if r.skipped:
                notes.append(f"roost reported {r.skipped:,} lines skipped by slow sockets")
            if r.spool_dropped_bytes:
                notes.append(f"holder spool overran: {r.spool_dropped_bytes:,} bytes dropped before the daemon read them")
            if r.cpu.get("client", 0) > CLIENT_CPU_WARN:
                notes.append("CLIENT NEAR SATURATION: it may be the limit")
            if r.cpu.get("other", 0) + r.cpu.get("steal", 0) > OTHER_LOAD_WARN:
                notes.append("machine busy with other work")
            c = r.cpu
            cpu_rows.append((sc.title, name, f"{r.wall_s:.1f}", *(f"{c[k]:.0f}" if k in c else "-" for k in cols),
                             "; ".join(notes)))
    w2 = [max(len(r[i]) for r in cpu_rows + [hdr]) for i in range(len(hdr))]
    out.append(" | ".join(s.ljust(w2[i]) for i, s in enumerate(hdr)).rstrip())
    out.append("-+-".join("-" * x for x in w2))
    out.extend(" | ".join(s.ljust(w2[i]) for i, s in enumerate(r)).rstrip() for r in cpu_rows)
    busiest = max((r for r in results.values() if r.cpu), key=lambda r: r.cpu["client"], default=None)
    if busiest is not None:
        peak = busiest.cpu["client"]
        verdict = ("it may be what limits that run" if peak > CLIENT_CPU_WARN else
                   "well below one core, so the client is not the limit")
        out.append(f"Client check: the client process (one asyncio thread, all sockets) peaked at {peak:.0f}% of one core "
                   f"({busiest.side}, {busiest.sc.title}): {verdict}.")

    out.append("")
    out.append(f"Targets: {TARGET_RATE:,} lines/s to each of {TARGET_SOCKETS} sockets with none lost; "
               f"p99 < {TARGET_P99_MS:g} ms at 1,000 lines/s with {TARGET_SOCKETS} sockets")
    for sc in scs:
        for name in ("roost", "baseline"):
            r = results.get((name, sc.key))
            if r is None or sc.sockets != TARGET_SOCKETS:
                continue
            if sc.kind in ("burst", "paced"):
                v = rate_value(r)
                lost = r.lost()
                # a paced run cannot go faster than its pace: allow 5% for pacing jitter
                need = TARGET_RATE * (0.95 if sc.kind == "paced" else 1.0)
                ok = v is not None and v >= need and lost is not None and lost[0] == 0
                out.append(f"  {name:8} {sc.title}: min {v or 0:,.0f} lines/s per socket, lost "
                           f"{fmt_lost(r)} -> {'MET' if ok else 'MISSED'}")
            else:
                ok = bool(r.lat_ms) and r.lat_ms[1] < TARGET_P99_MS
                p99 = f"{r.lat_ms[1]:.2f} ms" if r.lat_ms else "n/a"
                out.append(f"  {name:8} {sc.title}: p99 {p99}, lost {fmt_lost(r)} -> {'MET' if ok else 'MISSED'}")
    return out


def to_json(results: dict[tuple[str, str], Result]) -> list[dict]:
    return [{"side": r.side, "scenario": r.sc.key, "sockets": r.sc.sockets, "lines": r.sc.lines,
             "rate_min": rate_value(r), "rate_median": rate_value(r, "median"), "lost": r.lost(),
             "complete_sockets": r.complete, "capped": r.capped, "skipped": r.skipped,
             "spool_dropped_bytes": r.spool_dropped_bytes, "latency_ms_p50_p99_max": r.lat_ms,
             "cpu_pct": r.cpu, "wall_s": r.wall_s, "error": r.error} for r in results.values()]


# ---- main ------------------------------------------------------------------------------------

async def bench(roost: RoostSide, base: BaselineSide, scs: list[Scenario], profile_dir: Path | None) -> dict:
    results: dict[tuple[str, str], Result] = {}
    timeout = aiohttp.ClientTimeout(total=15)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        await roost.start(http)
        await asyncio.to_thread(base.start)
        run = 0
        for i, sc in enumerate(scs):
            order = (roost, base) if i % 2 == 0 else (base, roost)  # alternate who goes first
            for side in order:
                run += 1
                print(f"  {sc.title:34} {side.name:8} ...", end="", flush=True)
                res = await run_scenario(side, sc, f"{run:02d}", http, profile_dir)
                results[(side.name, sc.key)] = res
                summary = (f"p99 {res.lat_ms[1]:.2f} ms" if res.lat_ms else
                           f"min {rate_value(res) or 0:,.0f} lines/s") + f", lost {fmt_lost(res)}"
                print(f" {res.wall_s:5.1f} s  {summary}{'  ERROR ' + res.error if res.error else ''}", flush=True)
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="short smoke run (< 30 s) for CI")
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    ap.add_argument("--burst-batch", type=int, default=1, metavar="B",
                    help="lines per write in the burst runs (default 1: one write per line)")
    ap.add_argument("--profile", metavar="DIR", type=Path,
                    help="sample the roost daemon with py-spy during each roost run; raw stacks go to DIR "
                         "and a summary is printed (py-spy must be installed, e.g. in the venv)")
    args = ap.parse_args()
    profile_name = "quick" if args.quick else "full"
    scs = scenarios(PROFILES[profile_name], max(1, args.burst_batch))
    if args.profile is not None:
        if not PY_SPY:
            ap.error("--profile needs py-spy (pip install py-spy)")
        args.profile.mkdir(parents=True, exist_ok=True)

    def bail(signum, _frame):
        raise SystemExit(f"fanout: {signal.Signals(signum).name}, cleaning up")

    signal.signal(signal.SIGTERM, bail)
    signal.signal(signal.SIGALRM, bail)
    signal.alarm(90 if args.quick else 600)  # a hung run still cleans up and fails

    started = time.monotonic()
    roost = base = None
    try:
        roost = RoostSide()
        base = BaselineSide()
        print(f"fanout benchmark ({profile_name}): roost home {roost.home}, baseline port {base.port}", flush=True)
        results = asyncio.run(bench(roost, base, scs, args.profile))
    finally:
        signal.alarm(0)
        for side in (base, roost):
            if side is not None:
                try:
                    side.cleanup()
                except Exception as e:  # keep cleaning the other side
                    print(f"cleanup of {side.name} failed: {e!r}", file=sys.stderr)
        if roost is not None:
            left = find_pids(lambda pid, ppid, cmd: roost.home.encode() in cmd)
            if left:
                print(f"warning: processes left under {roost.home}: {left}", file=sys.stderr)
    print()
    print("\n".join(report(results, scs, profile_name, time.monotonic() - started)))
    for sc in scs:
        r = results.get(("roost", sc.key))
        if r is not None and r.profile is not None:
            print(f"\npy-spy, roost daemon, {sc.title} ({r.profile}):")
            print("\n".join(summarize_profile(r.profile)))
    if args.json:
        Path(args.json).write_text(json.dumps(to_json(results), indent=2))
    failed = [r for r in results.values() if r.error]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
