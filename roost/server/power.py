"""Power actions: the lock, and the errors they raise."""
from __future__ import annotations

import asyncio
import contextlib
from typing import AsyncIterator

from ..protocol import events

POWER_ACTIONS = ("start", "stop", "restart", "kill")


class PowerError(Exception):
    """A power action was refused; the message is shown in `daemon error` / HTTP bodies."""


class PowerLocked(PowerError):
    def __init__(self) -> None:
        super().__init__(events.POWER_LOCKED)


class PowerLock:
    """One per server. start/stop/restart take it (failing at once, or after `wait_s`);
    kill never does."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()

    @property
    def held(self) -> bool:
        return self._lock.locked()

    @contextlib.asynccontextmanager
    async def hold(self, wait_s: float = 0.0) -> AsyncIterator[None]:
        if self._lock.locked() and wait_s <= 0:
            raise PowerLocked()
        try:
            await asyncio.wait_for(self._lock.acquire(), timeout=max(wait_s, 0.001))
        except TimeoutError:
            raise PowerLocked() from None
        try:
            yield
        finally:
            self._lock.release()
