"""A pretend game server for demos and tests: `python -m roost.demo.fakegame`.

It behaves like the real ones where it matters to a daemon: startup noise on both streams, a
Minecraft-style ready line, a console on stdin, exit codes, signals, and memory it can be
told to eat. Stdlib only, so it runs under any python3 (e.g. as an unprivileged user).
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import time

HELP = [
    "help - this list",
    "list - players online",
    "say <text> - broadcast a message",
    "burst <N> [width] - print N numbered lines as fast as possible (padded to width)",
    "tick <N> <ms> - print N numbered lines, one every ms milliseconds, in the background",
    "crash [code] - exit with code (default 1)",
    "alloc <MiB> - allocate and touch memory",
    "stop - stop the server",
]
BURST_BATCH_LINES = 1000
_hoard: list[bytearray] = []  # alloc'd memory stays referenced


def out(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def err(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def burst(count: int, width: int = 0) -> None:
    for start in range(1, count + 1, BURST_BATCH_LINES):
        end = min(count, start + BURST_BATCH_LINES - 1)
        sys.stdout.write("".join(f"burst line {i} of {count}".ljust(width) + "\n" for i in range(start, end + 1)))
        sys.stdout.flush()


def tick(count: int, interval_ms: int) -> None:
    """Print `tick i of N` lines from a background thread while the console stays usable."""
    import threading

    def run() -> None:
        for i in range(1, count + 1):
            out(f"tick {i} of {count}")
            time.sleep(interval_ms / 1000.0)

    threading.Thread(target=run, daemon=True).start()


def alloc(mib: int) -> None:
    block = bytearray(mib * 1024 * 1024)
    for i in range(0, len(block), 4096):  # touch every page so it is really resident
        block[i] = 1
    _hoard.append(block)
    out(f"Allocated {mib} MiB")


def handle(command: str, name: str) -> None:
    verb, _, rest = command.strip().partition(" ")
    if not verb:
        return
    if verb == "help":
        for line in HELP:
            out(line)
    elif verb == "list":
        out(f"There are 0 of a max of 20 players online: ({name})")
    elif verb == "say":
        out(f"[Server] {rest}")
    elif verb == "burst" and rest.split() and all(p.isdigit() for p in rest.split()[:2]):
        parts = [int(p) for p in rest.split()[:2]]
        burst(parts[0], parts[1] if len(parts) > 1 else 0)
    elif verb == "tick" and len(rest.split()) == 2 and all(p.isdigit() for p in rest.split()):
        tick(*(int(p) for p in rest.split()))
    elif verb == "crash":
        code = int(rest) if rest.strip().lstrip("-").isdigit() else 1
        err(f"Crashing with exit code {code}")
        sys.exit(code)
    elif verb == "alloc" and rest.strip().isdigit():
        alloc(int(rest))
    elif verb == "stop":
        out("Stopping server")
        sys.exit(0)
    else:
        out('Unknown command. Type "help" for help.')


class Stopped(Exception):
    """Raised by the signal handler: printing from the handler itself could re-enter a
    stdout write that the signal interrupted."""


def on_signal(signum: int, _frame: object) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)  # one stop is enough
    raise Stopped(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name", default="fakegame")
    parser.add_argument("--startup-delay", type=float, default=0.0)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        run(args)
    except Stopped as stop:
        out(f"Received {stop}, stopping server")
        sys.exit(0)


def run(args: argparse.Namespace) -> None:
    began = time.monotonic()
    out(f"Starting {args.name} server version 1.0 (pid {os.getpid()})")
    err("WARN: this is not a real game server")
    out("Loading properties")
    time.sleep(args.startup_delay)
    out(f'Done ({time.monotonic() - began:.3f}s)! For help, type "help"')
    for line in sys.stdin:
        handle(line, args.name)
    # stdin closed: real servers keep running, so do we (until a signal).
    while True:
        signal.pause()


if __name__ == "__main__":
    main()
