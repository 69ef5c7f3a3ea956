"""A game server that prints console lines on command (stdlib only; run with `python3 -u`).

Used by benchmarks/fanout.py for both roost and the baseline, so both relay the same bytes.
It prints `firehose ready`, then reads commands from stdin, one per line:

  burst RUN N [B]   print N lines `FH<RUN>:<seq> ...` as fast as it can, B lines per write
                    (default 1: a game server whose logger flushes every line)
  paced RUN RATE N  print N lines `FT<RUN>:<seq> <time.time_ns()> ...` at RATE lines/s;
                    at most 1,000 lines/s one write per line, above that one write per ms
  stop              exit (roost's stop command); EOF on stdin also exits

After a run it prints `FHEND<RUN>` up to END_REPEATS times, 0.1 s apart, until the next
command arrives, so a client whose copy of the first one was skipped still learns that the run
is over. Every data line is LINE_BYTES long
(newline included), a typical game-server log line. Extra argv (e.g. `--owner <dir>`) is
ignored: it only tags the process so the benchmark's cleanup can find it.
"""
import os
import select
import sys
import time

LINE_BYTES = 100
END_REPEATS = 10
TEXT = "[12:34:56] [Server thread/INFO]: Preparing spawn area: 42% "


def write_all(data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(1, view)
        view = view[n:]


def line(prefix: str) -> str:
    body = prefix + TEXT
    return body + "x" * max(0, LINE_BYTES - 1 - len(body)) + "\n"


def burst(run: str, n: int, batch: int = 1) -> None:
    for start in range(0, n, batch):
        write_all("".join(line(f"FH{run}:{i:010d} ") for i in range(start, min(n, start + batch))).encode())


def paced(run: str, rate: float, n: int) -> None:
    per_write = max(1, round(rate / 1000))  # lines per write: one write per line up to 1 kHz
    t0 = time.monotonic()
    i = 0
    while i < n:
        delay = t0 + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        k = min(per_write, n - i)
        stamp = time.time_ns()
        write_all("".join(line(f"FT{run}:{j:010d} {stamp} ") for j in range(i, i + k)).encode())
        i += k


class Stdin:
    """Command lines from fd 0, read unbuffered so `waiting()` sees every pending byte."""

    def __init__(self) -> None:
        self.buf = b""

    def __iter__(self):
        while True:
            while b"\n" in self.buf:
                raw, self.buf = self.buf.split(b"\n", 1)
                yield raw.decode("utf-8", "replace")
            chunk = os.read(0, 65536)
            if not chunk:
                return
            self.buf += chunk

    def waiting(self, timeout: float) -> bool:
        return b"\n" in self.buf or bool(select.select([0], [], [], timeout)[0])


def main() -> None:
    write_all(b"firehose ready\n")
    stdin = Stdin()
    for raw in stdin:
        parts = raw.split()
        if not parts:
            continue
        if parts[0] == "stop":
            break
        try:
            if parts[0] == "burst":
                burst(parts[1], int(parts[2]), int(parts[3]) if len(parts) > 3 else 1)
            elif parts[0] == "paced":
                paced(parts[1], float(parts[2]), int(parts[3]))
            else:
                write_all(f"firehose: unknown command {parts[0]!r}\n".encode())
                continue
        except (IndexError, ValueError) as e:
            write_all(f"firehose: bad command {raw.strip()!r}: {e}\n".encode())
            continue
        # Repeat the end marker until the next command arrives (at most END_REPEATS times).
        for _ in range(END_REPEATS):
            write_all(f"FHEND{parts[1]}\n".encode())
            if stdin.waiting(0.1):
                break


if __name__ == "__main__":
    try:
        main()
    except (BrokenPipeError, KeyboardInterrupt):
        pass
