"""Backups: the archive engine (create / restore .tar.gz of a server's data directory)."""
from .archive import (
    BackupCancelled,
    BackupError,
    BackupResult,
    ChecksumMismatch,
    InvalidArchive,
    RestoreResult,
    UnsafeArchive,
    create_backup,
    create_backup_async,
    remove_partial_backups,
    restore_backup,
    restore_backup_async,
)

__all__ = [
    "BackupCancelled",
    "BackupError",
    "BackupResult",
    "ChecksumMismatch",
    "InvalidArchive",
    "RestoreResult",
    "UnsafeArchive",
    "create_backup",
    "create_backup_async",
    "remove_partial_backups",
    "restore_backup",
    "restore_backup_async",
]
