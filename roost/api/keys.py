"""Typed application keys (aiohttp AppKey): app state is passed, never global."""
from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from ..protocol.tokens import TokenVerifier

if TYPE_CHECKING:
    from ..config import NodeConfig
    from ..server.manager import Manager

CONFIG: web.AppKey["NodeConfig"] = web.AppKey("config")
MANAGER: web.AppKey["Manager"] = web.AppKey("manager")
VERIFIER: web.AppKey[TokenVerifier] = web.AppKey("verifier", TokenVerifier)
