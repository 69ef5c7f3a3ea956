"""Parse inbound `{"event": ..., "args": [...]}` envelopes.

Malformed input is never an error to the client: the spec says drop it silently and keep
the socket open, so the parser returns None instead of raising.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

MAX_DECODED_MESSAGE_BYTES = 32768  # spec §1: larger decoded messages are dropped silently


@dataclass(frozen=True, slots=True)
class Envelope:
    event: str
    # Inbound args are concatenated into one string (Wings joins them).
    arg: str


def parse(text: str) -> Envelope | None:
    """Return the envelope, or None when the frame must be dropped silently."""
    if len(text) > MAX_DECODED_MESSAGE_BYTES or len(text.encode("utf-8", "surrogatepass")) > MAX_DECODED_MESSAGE_BYTES:
        return None
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(doc, dict):
        return None
    event = doc.get("event")
    if not isinstance(event, str):
        return None
    args = doc.get("args", [])
    if args is None:
        args = []
    if not isinstance(args, list):
        return None
    parts: list[str] = []
    for a in args:
        if a is None:  # clients send [null] for argument-less events
            continue
        if not isinstance(a, str):
            return None
        parts.append(a)
    return Envelope(event=event, arg="".join(parts))
