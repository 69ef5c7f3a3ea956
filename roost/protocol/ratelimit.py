"""Per-socket token buckets (spec §5), with "throttled once per episode"."""
from __future__ import annotations

from dataclasses import dataclass

from . import events


@dataclass(frozen=True, slots=True)
class BucketSpec:
    burst: int
    refill_interval_s: float  # one token per interval


GLOBAL = BucketSpec(burst=10, refill_interval_s=0.2)
PER_EVENT = {
    events.AUTH: BucketSpec(2, 5.0),
    events.SEND_LOGS: BucketSpec(2, 5.0),
    events.SEND_COMMAND: BucketSpec(10, 1.0),
}
DEFAULT_EVENT = BucketSpec(4, 1.0)


class TokenBucket:
    __slots__ = ("spec", "tokens", "updated", "throttled")

    def __init__(self, spec: BucketSpec, now: float):
        self.spec = spec
        self.tokens = float(spec.burst)
        self.updated = now
        self.throttled = False  # inside an episode: `throttled` already sent

    def take(self, now: float) -> bool:
        elapsed = max(0.0, now - self.updated)
        self.tokens = min(float(self.spec.burst), self.tokens + elapsed / self.spec.refill_interval_s)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class RateLimiter:
    """`check(event, now)` → None when allowed, else the throttle name and whether to announce it."""

    def __init__(self, now: float):
        self._global = TokenBucket(GLOBAL, now)
        self._per_event: dict[str, TokenBucket] = {}
        self._now0 = now

    def check(self, event: str, now: float) -> tuple[str, bool] | None:
        g = self._global
        if not g.take(now):
            announce = not g.throttled
            g.throttled = True
            return ("global", announce)
        g.throttled = False
        # Unknown events share one bucket so they cannot grow the table without bound.
        key = event if event in KNOWN_INBOUND else "?"
        b = self._per_event.get(key)
        if b is None:
            b = self._per_event[key] = TokenBucket(PER_EVENT.get(event, DEFAULT_EVENT), now)
        if not b.take(now):
            announce = not b.throttled
            b.throttled = True
            return (event, announce)
        b.throttled = False
        return None


KNOWN_INBOUND = frozenset(
    {events.AUTH, events.SET_STATE, events.SEND_COMMAND, events.SEND_LOGS, events.SEND_STATS}
)
