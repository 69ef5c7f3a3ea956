"""Local backups of a server's data directory (node API `/backup`, wire-protocol §8).

Archives live in `system.backup_directory` as `<backup uuid>.tar.gz`, with the SHA-1 taken
when the archive was written next to it in `<backup uuid>.tar.gz.sha1`: a restore verifies the
archive against it before touching the data directory (the engine does the checking).
Results go to the socket (`backup completed` only for `backup.read`; restore progress as
`daemon message`) and to the configuration source when it takes reports (`report_backup`,
`report_restore`, both optional on a `ServerSource`).
"""
from __future__ import annotations

import asyncio
import logging
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from .. import limits
from ..fsutil import write_atomic
from ..backups import BackupError, create_backup_async, remove_partial_backups, restore_backup_async
from ..protocol import events
from ..protocol.permissions import BACKUP_READ
from .power import PowerError
from .states import Busy, ServerState

if TYPE_CHECKING:
    from ..config import NodeConfig
    from .server import Server
    from .source import ServerSource

log = logging.getLogger("roost.backups")

ADAPTER = "wings"  # the only adapter served: archives on this node's disk
RESTORE_DONE = "Completed server restoration from local backup."
_UUID = re.compile(r"^[0-9a-fA-F-]{36}$")


class BackupRefused(Exception):
    """The request cannot be served; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class Backups:
    def __init__(self, config: "NodeConfig", source: "ServerSource", owner: tuple[int, int] | None = None):
        self.directory = Path(config.system.backup_directory)
        self.source = source
        self.owner = owner  # restored files are given to the user servers run as
        self._running: set[str] = set()  # backup uuids being written

    # ---- files -------------------------------------------------------------------------------

    def archive(self, backup: str) -> Path:
        if not _UUID.match(backup):
            raise BackupRefused(404, "The requested backup was not found on this instance.")
        return self.directory / f"{backup.lower()}.tar.gz"

    def existing(self, backup: str) -> Path:
        path = self.archive(backup)
        if not path.is_file():
            raise BackupRefused(404, "The requested backup was not found on this instance.")
        return path

    @staticmethod
    def _sidecar(path: Path) -> Path:
        return path.with_name(path.name + ".sha1")

    def cleanup(self) -> None:
        """Boot: remove archives a killed daemon left half-written."""
        for name in remove_partial_backups(self.directory):
            log.info("removed partial backup %s", name)

    def delete(self, backup: str) -> None:
        path = self.existing(backup)
        for p in (path, self._sidecar(path)):
            try:
                p.unlink()
            except FileNotFoundError:
                pass

    # ---- backup ------------------------------------------------------------------------------

    def start_backup(self, server: "Server", backup: str, ignore: str = "") -> None:
        """Validate, then write the archive in the background (a running server is fine)."""
        dest = self.archive(backup)
        key = dest.name
        if key in self._running:
            raise BackupRefused(409, "A backup with this uuid is already being created.")
        self._running.add(key)
        task = server.spawn(self._backup(server, backup.lower(), dest, ignore))
        task.add_done_callback(lambda _t: self._running.discard(key))

    async def _backup(self, server: "Server", backup: str, dest: Path, ignore: str) -> None:
        sidecar = self._sidecar(dest)
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            result = await create_backup_async(server.data_dir, dest, ignore=ignore)
            await asyncio.to_thread(write_atomic, sidecar, (result.sha1 + "\n").encode())
            checksum, size, ok = result.sha1, result.size, True
            log.info("server %s: backup %s written (%d bytes, sha1 %s)", server.uuid, backup, size, checksum)
        except asyncio.CancelledError:
            _unlink(dest, sidecar)
            raise
        except Exception as e:
            log.error("server %s: backup %s failed: %s", server.uuid, backup, e)
            _unlink(dest, sidecar)
            checksum, size, ok = "", 0, False
        await self._report("report_backup", backup, successful=ok, checksum=checksum, size=size)
        doc = {"checksum": checksum, "checksum_type": "sha1", "file_size": size,
               "is_successful": ok, "uuid": backup}
        server.publish(events.frame(events.BACKUP_COMPLETED, events.dumps(doc)), BACKUP_READ)

    # ---- restore -----------------------------------------------------------------------------

    def start_restore(self, server: "Server", backup: str, truncate: bool = False) -> None:
        """Mark the server restoring (power actions refused from now on) and restore in the
        background: stop it, verify the archive, extract, announce, report."""
        path = self.existing(backup)
        if server.busy is not Busy.NONE:
            raise BackupRefused(409, f"server is busy ({server.busy.value})")
        server.busy = Busy.RESTORING
        try:
            server.spawn(self._restore(server, backup.lower(), path, truncate))
        except BaseException:
            server.busy = Busy.NONE
            raise

    async def _restore(self, server: "Server", backup: str, path: Path, truncate: bool) -> None:
        ok = False
        try:
            if server.state is not ServerState.OFFLINE:
                # busy refuses new power actions; wait for one in flight, then stop.
                async with server.power_lock.hold(limits.RUNTIME_CALL_TIMEOUT_S):
                    await server._stop()
            try:
                expected = (await asyncio.to_thread(self._sidecar(path).read_text)).strip()
            except FileNotFoundError:
                raise BackupError("the archive's checksum is unknown; refusing to restore it") from None

            def restoring(rel: str) -> None:
                server.publish(events.frame(events.DAEMON_MESSAGE, f"(restoring): {rel}"))

            server.data_dir.mkdir(parents=True, exist_ok=True)
            await restore_backup_async(path, server.data_dir, expected_sha1=expected, truncate=truncate,
                                       progress=restoring, chown_to=self.owner)
            ok = True
            server.publish(events.frame(events.DAEMON_MESSAGE, RESTORE_DONE))
        except asyncio.CancelledError:
            raise
        except (BackupError, PowerError, OSError) as e:
            log.error("server %s: restore of backup %s failed: %s", server.uuid, backup, e)
            server.publish(events.frame(events.DAEMON_MESSAGE, f"Server restoration from local backup failed: {e}"))
        except Exception:
            log.exception("server %s: restore of backup %s failed", server.uuid, backup)
            server.publish(events.frame(events.DAEMON_MESSAGE, "Server restoration from local backup failed."))
        finally:
            server.busy = Busy.NONE
        # As Wings: the panel reloads on this event, whatever the outcome.
        server.publish(events.frame(events.BACKUP_RESTORE_COMPLETED))
        await self._report("report_restore", backup, successful=ok)

    # ---- source ------------------------------------------------------------------------------

    async def _report(self, method: str, backup: str, **kwargs) -> None:
        report = getattr(self.source, method, None)
        if report is None:
            return
        try:
            await report(backup, **kwargs)
        except Exception as e:  # the source is down: the result is logged, the node carries on
            log.warning("could not report backup %s to the source (%s): %s", backup, method, e)


def _unlink(*paths: Path) -> None:
    for p in paths:
        try:
            p.unlink()
        except FileNotFoundError:
            pass
        except OSError as e:
            log.warning("could not remove %s: %s", p, e)
