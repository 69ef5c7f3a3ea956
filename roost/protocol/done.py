"""Startup "done" matchers: plain substring, or `regex:` prefix; ANSI optionally stripped."""
from __future__ import annotations

import re
from collections.abc import Iterable

# CSI and OSC sequences plus single-character escapes: what servers emit for colours.
_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])")


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


class DoneMatcher:
    def __init__(self, entries: Iterable[str], *, strip: bool = False):
        self._plain: list[str] = []
        self._regex: list[re.Pattern[str]] = []
        for e in entries:
            if not isinstance(e, str) or e == "":
                continue
            if e.startswith("regex:"):
                try:
                    self._regex.append(re.compile(e[len("regex:"):]))
                except re.error:
                    self._plain.append(e)  # a broken regex is matched literally, not fatal
            else:
                self._plain.append(e)
        self._strip = strip

    @property
    def empty(self) -> bool:
        return not self._plain and not self._regex

    def matches(self, line: str) -> bool:
        if self._strip:
            line = strip_ansi(line)
        return any(p in line for p in self._plain) or any(r.search(line) for r in self._regex)
