"""RemoteSource: server configurations from a panel (Pterodactyl, Pelican, or roost's own
token service) through the remote API. The daemon's one path for panel-driven nodes."""
from __future__ import annotations

from ..server.definition import ServerDefinition
from ..server.source import SourceError, UnknownServer, parse_definition
from .client import PanelClient, PanelError

MAX_PAGES = 10_000  # a bound on paging, far above any real node


class RemoteSource:
    def __init__(self, client: PanelClient):
        self.client = client
        self.errors: list[str] = []

    async def list_servers(self) -> list[ServerDefinition]:
        self.errors = []
        found: list[ServerDefinition] = []
        page, last = 1, 1
        while page <= last and page <= MAX_PAGES:
            try:
                doc = await self.client.servers_page(page)
            except PanelError as e:
                raise SourceError(str(e)) from None
            for item in (doc or {}).get("data") or []:
                try:
                    found.append(parse_definition(item, f"panel server {item.get('uuid', '?')}"))
                except SourceError as e:
                    self.errors.append(str(e))
            meta = (doc or {}).get("meta") or {}
            last = int(meta.get("last_page") or 1)
            page += 1
        return found

    async def get_server(self, uuid: str) -> ServerDefinition:
        try:
            doc = await self.client.server(uuid)
        except PanelError as e:
            if e.status == 404:
                raise UnknownServer(f"the panel does not know server {uuid}") from None
            raise SourceError(str(e)) from None
        return parse_definition(doc, f"panel server {uuid}")

    async def reset_states(self) -> None:
        try:
            await self.client.reset_servers()
        except PanelError as e:
            raise SourceError(str(e)) from None

    async def report_backup(self, backup: str, *, successful: bool, checksum: str, size: int) -> None:
        try:
            await self.client.report_backup(backup, successful=successful, checksum=checksum, size=size)
        except PanelError as e:
            raise SourceError(str(e)) from None

    async def report_restore(self, backup: str, *, successful: bool) -> None:
        try:
            await self.client.report_restore(backup, successful=successful)
        except PanelError as e:
            raise SourceError(str(e)) from None

    async def close(self) -> None:
        await self.client.close()
