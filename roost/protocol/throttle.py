"""Per-server console throttle: at most N lines per fixed window reach sockets (spec §6)."""
from __future__ import annotations


class ConsoleThrottle:
    """Fixed window counter. `admit(now)` → (pass_line, announce_throttling).

    One announcement per throttling episode: the episode ends at the first window in which
    the server stays under the limit.
    """

    __slots__ = ("lines", "interval_s", "window_start", "count", "throttling", "enabled")

    def __init__(self, lines: int = 2000, interval_s: float = 0.1, enabled: bool = True):
        self.lines = lines
        self.interval_s = interval_s
        self.window_start = float("-inf")
        self.count = 0
        self.throttling = False
        self.enabled = enabled

    def admit(self, now: float) -> tuple[bool, bool]:
        if not self.enabled:
            return True, False
        if now - self.window_start >= self.interval_s:
            if self.throttling and self.count <= self.lines:
                self.throttling = False
            self.window_start = now
            self.count = 0
        self.count += 1
        if self.count <= self.lines:
            return True, False
        announce = not self.throttling
        self.throttling = True
        return False, announce
