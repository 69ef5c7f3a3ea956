"""The `roost` command line."""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from pathlib import Path

from ..config import ConfigError, NodeConfig, load_config

DEFAULT_CONFIG = os.environ.get("ROOST_CONFIG", "/etc/roost/config.yml")


def _config(path: str) -> NodeConfig:
    try:
        return load_config(path)
    except ConfigError as e:
        sys.exit(f"roost: {e}")


def cmd_daemon(args: argparse.Namespace) -> int:
    from ..daemon import serve

    config = _config(args.config)
    logging.basicConfig(
        level=logging.DEBUG if (config.debug or args.debug) else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    asyncio.run(serve(config))
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    from ..tokenservice.issuer import ADMIN_PERMISSIONS, mint_websocket_token

    config = _config(args.config)
    if args.permissions:
        perms = [p.strip() for p in args.permissions.split(",") if p.strip()]
    else:
        perms = ADMIN_PERMISSIONS
    print(
        mint_websocket_token(
            secret=config.token,
            server_uuid=args.server,
            user_uuid=args.user,
            user_id=args.user_id,
            permissions=perms,
            issuer=config.remote or "roost",
            node_url=f"http://{config.api.host}:{config.api.port}",
            ttl_s=args.ttl,
        )
    )
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    from .up import run_up

    return run_up(args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="roost", description="A game-server daemon speaking the Wings protocol.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("daemon", help="run a node from a Wings-style config.yml")
    p.add_argument("--config", default=DEFAULT_CONFIG)
    p.add_argument("--debug", action="store_true")
    p.set_defaults(func=cmd_daemon)

    p = sub.add_parser("token", help="print a websocket JWT signed with the node token")
    p.add_argument("--config", default=DEFAULT_CONFIG)
    p.add_argument("--server", required=True, help="server uuid")
    p.add_argument("--user", default="00000000-0000-0000-0000-000000000001", help="user uuid")
    p.add_argument("--user-id", default="1", help="the panel's numeric user id (for the jti)")
    p.add_argument("--permissions", default="", help="comma separated; default: admin (all)")
    p.add_argument("--ttl", type=int, default=600, help="lifetime in seconds (default 600)")
    p.set_defaults(func=cmd_token)

    from .up import default_home

    p = sub.add_parser("up", help="start the token service, a node and a demo server, in one command")
    p.add_argument("--home", default=default_home(), help="data directory (default: $ROOST_HOME or /var/lib/roost-up)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080, help="panel (client API) port")
    p.add_argument("--node-port", type=int, default=0, help="node port (default: --port + 1)")
    p.add_argument("--token-ttl", type=int, default=600, help="websocket token lifetime in seconds")
    p.set_defaults(func=cmd_up)

    # The token service's store: user, key, server, subuser, node (roost/cli/manage.py).
    from .manage import register as register_manage

    register_manage(sub)

    # `roost console SERVER`: a terminal on a server's console, through the client API.
    from .console import register as register_console

    register_console(sub)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
