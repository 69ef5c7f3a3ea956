import functools
import subprocess

import pytest

from .harness import Node

DOCKER_TEST_IMAGE = "roost-test/fakegame:latest"


@functools.cache
def docker_unavailable() -> str | None:
    """Why the Docker runtime cannot be tested here (None when it can)."""
    try:
        if subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode != 0:
            return "no Docker engine answers (scripts/test.sh starts one: sh scripts/docker.sh ensure)"
        if subprocess.run(["docker", "image", "inspect", DOCKER_TEST_IMAGE], capture_output=True, timeout=20).returncode != 0:
            return f"the test image {DOCKER_TEST_IMAGE} is missing (sh scripts/docker.sh ensure builds it)"
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"docker CLI unusable: {e}"
    return None


def pytest_generate_tests(metafunc):
    """Modules with BOTH_RUNTIMES = True run every daemon test on each runtime."""
    if getattr(metafunc.module, "BOTH_RUNTIMES", False) and (
        "node" in metafunc.fixturenames or "make_node" in metafunc.fixturenames
    ):
        metafunc.fixturenames.append("runtime") if "runtime" not in metafunc.fixturenames else None
        metafunc.parametrize("runtime", ["process", "docker"], indirect=True)


@pytest.fixture
def runtime(request):
    kind = getattr(request, "param", "process")
    if kind == "docker":
        reason = docker_unavailable()
        if reason:
            pytest.skip(reason)
    return kind


@pytest.fixture
def make_node(request):
    kind = request.getfixturevalue("runtime") if "runtime" in request.fixturenames else "process"
    nodes: list[Node] = []

    def factory(overrides: dict | None = None) -> Node:
        n = Node(overrides, runtime=kind)
        nodes.append(n)
        return n

    yield factory
    for n in nodes:
        n.cleanup()


@pytest.fixture
def node(make_node):
    """A started daemon with one demo server; `node.demo` is its uuid."""
    n = make_node()
    n.demo = n.add_server()
    return n.start()
