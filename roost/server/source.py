"""Where server configurations come from: one interface, several implementations.

The daemon never asks "is there a panel?": it holds a `ServerSource`. This module has the
local directory implementation; the remote panel and the built-in token service implement
the same protocol (http-api §2 shapes), so the daemon has one code path.
"""
from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, Protocol

import yaml
from pydantic import ValidationError

from .definition import ServerDefinition


class SourceError(Exception):
    """The source could not give a configuration (message is safe to log)."""


class UnknownServer(SourceError):
    pass


class ServerSource(Protocol):
    async def list_servers(self) -> list[ServerDefinition]:
        """Every server on this node (boot)."""

    async def get_server(self, uuid: str) -> ServerDefinition:
        """One server's current configuration (before every start). Raises UnknownServer."""

    async def reset_states(self) -> None:
        """Boot: clear stale installing/restoring flags held by the source."""

    # Optional (looked up with getattr): sources that keep backup records take the results.
    # async def report_backup(self, backup: str, *, successful: bool, checksum: str, size: int) -> None
    # async def report_restore(self, backup: str, *, successful: bool) -> None


def parse_definition(doc: Any, origin: str) -> ServerDefinition:
    if not isinstance(doc, dict):
        raise SourceError(f"{origin}: expected a mapping with `settings` and `process_configuration`")
    try:
        return ServerDefinition.model_validate(doc)
    except ValidationError as e:
        fields = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors())
        raise SourceError(f"{origin}: {fields}") from None


class DirectorySource:
    """Server definitions as YAML or JSON files in one folder (one server per file).

    Files are read on every call (cheap, and an edit applies at the next start, as with a
    panel). A broken file is reported and skipped at boot, never fatal to the other servers.
    """

    SUFFIXES = (".yml", ".yaml", ".json")

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.errors: list[str] = []

    def _read(self, path: Path) -> ServerDefinition:
        try:
            text = path.read_text()
            doc = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        except (OSError, ValueError, yaml.YAMLError) as e:
            raise SourceError(f"{path}: {e}") from None
        return parse_definition(doc, str(path))

    def _scan(self) -> list[ServerDefinition]:
        self.errors = []
        found: dict[str, ServerDefinition] = {}
        if not self.directory.is_dir():
            return []
        for path in sorted(self.directory.iterdir()):
            if path.suffix not in self.SUFFIXES or path.name.startswith("."):
                continue
            try:
                d = self._read(path)
            except SourceError as e:
                self.errors.append(str(e))
                continue
            if d.uuid in found:
                self.errors.append(f"{path}: duplicate server uuid {d.uuid}")
                continue
            found[d.uuid] = d
        return list(found.values())

    async def list_servers(self) -> list[ServerDefinition]:
        return await asyncio.to_thread(self._scan)

    async def get_server(self, uuid: str) -> ServerDefinition:
        for d in await self.list_servers():
            if d.uuid == uuid:
                return d
        raise UnknownServer(f"server {uuid} is not defined in {self.directory}")

    async def reset_states(self) -> None:
        return None
