"""Crash detection (spec §7): is an exit a crash, and may we restart automatically?"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from .states import ServerState


@dataclass(frozen=True, slots=True)
class NotACrash:
    pass


@dataclass(frozen=True, slots=True)
class Restart:
    pass


@dataclass(frozen=True, slots=True)
class Abort:
    """A crash, but the previous one was too recent: no automatic restart."""

    timeout_s: int


Decision = Union[NotACrash, Restart, Abort]


def decide(
    *,
    previous_state: ServerState,
    exit_code: int,
    enabled: bool,
    detect_clean_exit_as_crash: bool,
    last_crash_at: float | None,
    now: float,
    timeout_s: int,
) -> Decision:
    """Leaving STARTING/RUNNING straight to OFFLINE is a crash (not via STOPPING)."""
    if previous_state not in (ServerState.STARTING, ServerState.RUNNING):
        return NotACrash()
    if exit_code == 0 and not detect_clean_exit_as_crash:
        return NotACrash()
    if not enabled:
        return NotACrash()
    if last_crash_at is not None and now - last_crash_at < timeout_s:
        return Abort(timeout_s)
    return Restart()
