"""Making a server's image available: local images (`~name`) or pulls with progress lines.

An image name starting with `~` is local: it is used as it is (without the `~`) and never
pulled; a missing one is an error. Any other image is pulled before every start, as Wings
does, so a moved tag is followed; when the pull fails but a copy exists locally, that copy
is used (and the failure is said in a progress line), again as Wings does.

The engine reports pull progress as a stream of JSON messages, many per second per layer.
`PullProgress` turns them into console-sized lines: one per layer status change, and for the
repeating "Downloading"/"Extracting" updates at most one per layer every
`PROGRESS_INTERVAL_S`.
"""
from __future__ import annotations

import asyncio
import time

import aiohttp
from typing import Callable

from aiodocker.exceptions import DockerError

from roost.runtimes.base import RuntimeError_
from roost.runtimes.docker.engine import Engine, EngineError

LOCAL_PREFIX = "~"
PROGRESS_INTERVAL_S = 2.0
REPEATING = ("Downloading", "Extracting", "Waiting")


def local_name(image: str) -> str | None:
    """The local image name for a `~`-prefixed image, else None."""
    if image.startswith(LOCAL_PREFIX):
        return image[len(LOCAL_PREFIX):]
    return None


class PullProgress:
    """Engine pull messages → progress lines (sans-I/O; the clock is passed in)."""

    def __init__(self, interval_s: float = PROGRESS_INTERVAL_S) -> None:
        self._interval_s = interval_s
        self._last: dict[str, tuple[str, float]] = {}  # layer id -> (status, when emitted)

    def feed(self, message: dict, now: float) -> str | None:
        """The line to show for one message, or None to skip it. Raises RuntimeError_ for
        an error message."""
        if message.get("error") or message.get("errorDetail"):
            detail = message.get("errorDetail") or {}
            raise RuntimeError_(str(message.get("error") or detail.get("message") or detail))
        status = str(message.get("status") or "").strip()
        if not status:
            return None
        layer = str(message.get("id") or "")
        progress = str(message.get("progress") or "").strip()
        if layer and status in REPEATING:
            previous = self._last.get(layer)
            if previous is not None and previous[0] == status and \
                    now - previous[1] < self._interval_s:
                return None
        if layer:
            self._last[layer] = (status, now)
        text = f"{layer}: {status}" if layer else status
        return f"{text} {progress}" if progress else text


async def ensure_image(engine: Engine, image: str, progress: Callable[[str], None],
                       timeout_s: float) -> str:
    """The image reference to create the container from, pulling it when it is not local.

    `progress` receives human lines while pulling. Raises RuntimeError_ when there is no
    usable image.
    """
    if not image:
        raise RuntimeError_("the server has no container image")
    local = local_name(image)
    if local is not None:
        try:
            if await engine.image_exists(local):
                return local
        except EngineError as exc:
            raise RuntimeError_(str(exc)) from exc
        raise RuntimeError_(f"local image {local} does not exist (images starting with "
                            f"{LOCAL_PREFIX} are never pulled)")
    lines = PullProgress()
    progress(f"Pulling image {image}")
    try:
        async with asyncio.timeout(timeout_s):
            async for message in engine.pull(image):
                line = lines.feed(message, time.monotonic())
                if line:
                    progress(line)
        return image
    except (RuntimeError_, DockerError, TimeoutError, OSError, aiohttp.ClientError) as exc:
        reason = (f"no answer within {timeout_s:.0f}s" if isinstance(exc, TimeoutError)
                  else getattr(exc, "message", None) or str(exc))
        try:
            exists = await engine.image_exists(image)
        except EngineError:
            exists = False
        if exists:
            progress(f"Image pull failed ({reason}); using the local copy of {image}")
            return image
        raise RuntimeError_(f"cannot pull image {image}: {reason}") from exc
