"""The only writer of a server's state (design note 2)."""
from __future__ import annotations

from typing import Callable

from .states import TRANSITIONS, ServerState


class IllegalTransition(Exception):
    def __init__(self, old: ServerState, new: ServerState, cause: str):
        super().__init__(f"illegal transition {old} -> {new} ({cause})")
        self.old, self.new, self.cause = old, new, cause


class StateMachine:
    """Holds the state; `change_state` checks the predecessor and notifies on real changes."""

    def __init__(
        self,
        on_change: Callable[[ServerState, ServerState, str], None],
        initial: ServerState = ServerState.OFFLINE,
    ):
        self._state = initial
        self._on_change = on_change

    @property
    def state(self) -> ServerState:
        return self._state

    def change_state(self, new: ServerState, *, cause: str) -> bool:
        """Move to `new`. Returns False (and notifies nobody) when already there."""
        old = self._state
        if new == old:
            return False
        if old not in TRANSITIONS[new]:
            raise IllegalTransition(old, new, cause)
        self._state = new
        self._on_change(old, new, cause)
        return True
