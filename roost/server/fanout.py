"""Fan-out of one server's events to its sockets, with per-socket bounded queues.

Producers call synchronous `offer_*` methods; each socket's single writer task calls `take()`
and writes the frames in one transport write. A socket that falls behind skips console lines
alone (counted, and announced once it catches up); control frames are never skipped, and a
socket that stops reading altogether is marked for closing instead of growing without bound.
"""
from __future__ import annotations

from collections import deque
from typing import Callable, Iterable

from .. import limits
from ..protocol import events
from ..protocol.wsframe import text_frame

# A queued frame: (bytes, console seq or 0 for control frames)
Queued = tuple[bytes, int]


def batch_bytes(items: list[Queued]) -> int:
    total = 0
    for b, _ in items:
        total += len(b)
    return total


class Subscriber:
    def __init__(
        self,
        *,
        may_receive: Callable[[str | None], bool],
        wake: Callable[[], None],
        skipped_notice: Callable[[int], bytes],
        roost_extensions: bool = False,
        owner: object = None,
        high: int = limits.SOCKET_QUEUE_HIGH,
        control_slack: int = limits.SOCKET_CONTROL_SLACK,
        high_bytes: int = limits.SOCKET_QUEUE_HIGH_BYTES,
    ):
        self.may_receive = may_receive
        self._wake = wake
        self._skipped_notice = skipped_notice
        self.roost_extensions = roost_extensions
        self.owner = owner  # the connection, for revocation and deletion
        self.queue: deque[Queued] = deque()
        self.queued_bytes = 0
        self.high = high
        self.low = high // 4
        self.high_bytes = high_bytes
        self.control_limit = high + control_slack
        self.control_limit_bytes = high_bytes * 2
        self.skipping = False
        self.skipped = 0
        self.total_skipped = 0
        self.overflowed = False  # not reading at all: the I/O layer closes it

    def _push(self, item: Queued) -> None:
        was_empty = not self.queue
        self.queue.append(item)
        self.queued_bytes += len(item[0])
        if was_empty:
            self._wake()

    def offer_console(self, items: list[Queued]) -> None:
        """Offer console frames (already filtered by the hub). Skips when over the watermark."""
        if self.skipping or len(self.queue) + len(items) > self.high or self.queued_bytes > self.high_bytes:
            room = max(0, self.high - len(self.queue)) if not self.skipping else 0
            if self.queued_bytes > self.high_bytes:
                room = 0
            for item in items[:room]:
                self._push(item)
            dropped = len(items) - room
            if dropped:
                self.skipping = True
                self.skipped += dropped
                self.total_skipped += dropped
            return
        was_empty = not self.queue
        self.queue.extend(items)
        self.queued_bytes += batch_bytes(items)
        if was_empty and items:
            self._wake()

    def offer_control(self, frame: bytes) -> None:
        if len(self.queue) >= self.control_limit or self.queued_bytes >= self.control_limit_bytes:
            self.overflowed = True
            self._wake()
            return
        self._push((frame, 0))

    def replace_console(self, items: list[Queued]) -> None:
        """Replay: drop queued console lines (the replay covers them), then queue `items`."""
        kept = [q for q in self.queue if q[1] == 0]
        self.queue = deque(kept)
        self.queued_bytes = sum(len(b) for b, _ in kept)
        for item in items:
            self._push(item)

    def take(self, max_bytes: int = 1 << 20) -> list[bytes]:
        """Frames to write now, oldest first (at most about `max_bytes`)."""
        out: list[bytes] = []
        size = 0
        q = self.queue
        while q and size < max_bytes:
            frame, _ = q.popleft()
            out.append(frame)
            size += len(frame)
        self.queued_bytes -= size
        if self.skipping and len(q) <= self.low:
            self.skipping = False
            q.append((self._skipped_notice(self.skipped), 0))
            self.queued_bytes += len(q[-1][0])
            self.skipped = 0
        return out


class Hub:
    """One per server: the set of subscribers and the publishing side."""

    def __init__(self, app_name: str):
        self._app_name = app_name
        self.subscribers: set[Subscriber] = set()

    def skipped_notice(self, n: int) -> bytes:
        line = events.daemon_console_line(self._app_name, f"[roost] {n} console lines skipped")
        return text_frame(events.frame(events.CONSOLE_OUTPUT, line))

    def subscribe(self, **kwargs) -> Subscriber:
        sub = Subscriber(skipped_notice=self.skipped_notice, **kwargs)
        self.subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)

    def __len__(self) -> int:
        return len(self.subscribers)

    def publish_console(self, lines: Iterable[tuple[int, str]]) -> None:
        """Publish console lines (seq, text). Each frame is encoded once for all sockets."""
        if not self.subscribers:
            return
        lines = list(lines)
        plain: list[Queued] | None = None
        with_seq: list[Queued] | None = None
        for sub in self.subscribers:
            if not sub.may_receive(None):
                continue
            if sub.roost_extensions:
                if with_seq is None:
                    with_seq = [(text_frame(events.console_frame_seq(t, s)), s) for s, t in lines]
                sub.offer_console(with_seq)
            else:
                if plain is None:
                    plain = [(text_frame(events.console_frame(t)), s) for s, t in lines]
                sub.offer_console(plain)

    def publish(self, frame: str, permission: str | None = None) -> None:
        """Publish a control event to every socket allowed to see it."""
        data: bytes | None = None
        for sub in self.subscribers:
            if sub.may_receive(permission):
                if data is None:
                    data = text_frame(frame)
                sub.offer_control(data)
