"""Daemon CPU with many idle running servers (stats sampled at 1 Hz).

    .venv/bin/python benchmarks/idle.py [--servers 50] [--seconds 10] [--runtime process|docker|both]

Prints, per runtime, the CPU of the roost daemon beside the CPU of what runs the servers
(process runtime: the per-server holders; Docker: dockerd + containerd + shims), measured over
the same window. CPU is read from /proc (utime+stime), in percent of one core.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.functional.harness import Node  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_ticks(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total


def pids_matching(pattern: str) -> list[int]:
    out = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout.split()
    return [int(p) for p in out]


async def measure(runtime: str, servers: int, seconds: float) -> dict:
    n = Node({"roost": {"stats_interval_s": 1.0}}, runtime=runtime)
    try:
        # distinct ports: containers bind them
        ids = [n.add_server(name=f"idle {i}", allocations={"default": {"ip": "127.0.0.1", "port": 30000 + i}, "mappings": {}})
               for i in range(servers)]
        n.start()
        for sid in ids:
            await n.power(sid, "start")
        deadline = time.monotonic() + 600  # vfs copies the image for every container: slow
        while time.monotonic() < deadline:
            _, views, _ = await n.http("GET", "/api/servers")
            if sum(v["state"] == "running" for v in views) == servers:
                break
            await asyncio.sleep(1)
        else:
            states = [v["state"] for v in views]
            raise RuntimeError(f"servers did not all reach running: {sorted(set(states))} {states.count('running')}/{servers}")
        await asyncio.sleep(2)  # let start-up work settle
        daemon = [n.proc.pid]
        engine = (pids_matching(f"roost.runtimes.process.holder {n.home}") if runtime == "process"
                  else pids_matching("dockerd|containerd"))
        t0, d0, e0 = time.monotonic(), cpu_ticks(daemon), cpu_ticks(engine)
        await asyncio.sleep(seconds)
        wall = time.monotonic() - t0
        d1, e1 = cpu_ticks(daemon), cpu_ticks(engine)
        return {
            "runtime": runtime,
            "servers": servers,
            "daemon_pct": 100.0 * (d1 - d0) / TICKS / wall,
            "engine_pct": 100.0 * (e1 - e0) / TICKS / wall,
            "engine_procs": len(engine),
        }
    finally:
        n.cleanup()


def docker_available() -> bool:
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0 and \
        subprocess.run(["docker", "image", "inspect", "roost-test/fakegame:latest"], capture_output=True).returncode == 0


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--servers", type=int, default=50)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--runtime", choices=["process", "docker", "both"], default="both")
    args = p.parse_args()
    runtimes = ["process", "docker"] if args.runtime == "both" else [args.runtime]
    rows = []
    for rt in runtimes:
        if rt == "docker" and not docker_available():
            print("docker: skipped (no engine or no roost-test/fakegame image; run: sh scripts/docker.sh ensure)")
            continue
        rows.append(await measure(rt, args.servers, args.seconds))
    print(f"\n{'runtime':<8} | {'servers':>7} | {'daemon CPU % of one core':>24} | {'engine CPU %':>12} | engine is")
    print("-" * 8 + "-+-" + "-" * 7 + "-+-" + "-" * 24 + "-+-" + "-" * 12 + "-+-" + "-" * 30)
    for r in rows:
        what = f"{r['engine_procs']} holders" if r["runtime"] == "process" else "dockerd + containerd (+shims)"
        print(f"{r['runtime']:<8} | {r['servers']:>7} | {r['daemon_pct']:>24.1f} | {r['engine_pct']:>12.1f} | {what}")
    print("\nratio daemon/engine compares roost's own cost with the cost of what keeps the servers alive.")


if __name__ == "__main__":
    asyncio.run(main())
