"""Helpers for running real processes through the process runtime."""
from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import uuid
from typing import Callable

import pytest

import roost
from roost.runtimes.base import Attached, Exited, Fact, LaunchSpec, Limits, Output
from roost.runtimes.process.runtime import ProcessRuntimeFactory, ProcessServerRuntime

REPO = os.path.dirname(os.path.dirname(os.path.abspath(roost.__file__)))
# The venv's interpreter lives under /root (mode 700): an unprivileged server cannot run it.
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
FAKEGAME = f"{PYTHON} -m roost.demo.fakegame"
WAIT_S = 15.0
TEST_USER = "roosttest"


class Recorder:
    """A fact sink that tests can wait on."""

    def __init__(self) -> None:
        self.facts: list[Fact] = []
        self._changed = asyncio.Event()

    def __call__(self, fact: Fact) -> None:
        self.facts.append(fact)
        self._changed.set()

    def lines(self, stream: str | None = None) -> list[str]:
        return [f.line for f in self.facts
                if isinstance(f, Output) and (stream is None or f.stream == stream)]

    async def wait_for(self, predicate: Callable[[Fact], bool], timeout: float = WAIT_S,
                       start: int = 0) -> Fact:
        async def scan() -> Fact:
            seen = start
            while True:
                self._changed.clear()
                for fact in self.facts[seen:]:
                    if predicate(fact):
                        return fact
                seen = len(self.facts)
                await self._changed.wait()
        try:
            return await asyncio.wait_for(scan(), timeout)
        except TimeoutError:
            tail = "\n".join(map(repr, self.facts[-20:]))
            raise AssertionError(f"no matching fact within {timeout}s; last facts:\n{tail}")

    async def line(self, text: str, stream: str | None = None, timeout: float = WAIT_S) -> Output:
        return await self.wait_for(lambda f: isinstance(f, Output) and text in f.line
                                   and (stream is None or f.stream == stream), timeout)

    async def exited(self, timeout: float = WAIT_S) -> Exited:
        return await self.wait_for(lambda f: isinstance(f, Exited), timeout)

    def attached(self) -> Attached:
        return next(f for f in self.facts if isinstance(f, Attached))


class Harness:
    """Creates runtimes under short temp dirs and destroys whatever is left at the end."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.state_root = os.path.join(root, "run")
        self.cgroup_root = f"roost-test-{os.getpid()}"
        self.runtimes: list[ProcessServerRuntime] = []

    def factory(self, uid: int | None = None, gid: int | None = None,
                state_root: str | None = None, **kwargs) -> ProcessRuntimeFactory:
        return ProcessRuntimeFactory(state_root or self.state_root, uid, gid,
                                     self.cgroup_root, timeout_s=5.0, **kwargs)

    def runtime(self, factory: ProcessRuntimeFactory | None = None,
                server_uuid: str | None = None) -> tuple[ProcessServerRuntime, Recorder, str]:
        server_uuid = server_uuid or str(uuid.uuid4())
        recorder = Recorder()
        data_dir = os.path.join(self.root, "data", server_uuid)
        runtime = (factory or self.factory()).for_server(server_uuid, data_dir, recorder)
        self.runtimes.append(runtime)
        return runtime, recorder, data_dir

    @staticmethod
    def spec(runtime: ProcessServerRuntime, invocation: str, data_dir: str,
             limits: Limits = Limits(), **env: str) -> LaunchSpec:
        return LaunchSpec(server_uuid=runtime.server_uuid, invocation=invocation,
                          environment={"PYTHONPATH": REPO, **env}, data_dir=data_dir,
                          limits=limits)

    async def start(self, invocation: str = FAKEGAME, limits: Limits = Limits(),
                    factory: ProcessRuntimeFactory | None = None, ready: str | None = "Done (",
                    ) -> tuple[ProcessServerRuntime, Recorder, str]:
        runtime, recorder, data_dir = self.runtime(factory)
        await runtime.start(self.spec(runtime, invocation, data_dir, limits))
        if ready:
            await recorder.line(ready)
        return runtime, recorder, data_dir


@pytest.fixture
async def harness():
    root = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    os.chmod(root, 0o755)  # unprivileged servers must reach their data dir
    h = Harness(root)
    try:
        yield h
    finally:
        for runtime in h.runtimes:
            try:
                await runtime.destroy()
            except Exception as exc:  # keep cleaning up the others
                print(f"destroy failed: {exc!r}")
        for mount in ("memory", "cpu", "cpuacct", "pids", "unified"):
            try:
                os.rmdir(f"/sys/fs/cgroup/{mount}/{h.cgroup_root}")
            except OSError:
                pass
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def test_user() -> pwd.struct_passwd:
    """An unprivileged system user (created if missing; needs root)."""
    try:
        return pwd.getpwnam(TEST_USER)
    except KeyError:
        pass
    if os.geteuid() != 0:
        pytest.skip("creating a test user needs root")
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                    TEST_USER], check=True)
    return pwd.getpwnam(TEST_USER)


def pid_gone(pid: int) -> bool:
    """True when `pid` no longer runs (zombies count as gone: here init does not reap)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True
