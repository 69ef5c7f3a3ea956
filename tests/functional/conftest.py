import pytest

from .harness import Node


@pytest.fixture
def make_node():
    nodes: list[Node] = []

    def factory(overrides: dict | None = None) -> Node:
        n = Node(overrides)
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
