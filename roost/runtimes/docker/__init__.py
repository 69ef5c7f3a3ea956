"""The Docker runtime: game servers in containers of a Docker-API engine (aiodocker)."""
from roost.runtimes.docker.runtime import DockerRuntimeFactory, DockerServerRuntime

__all__ = ["DockerRuntimeFactory", "DockerServerRuntime"]
