"""`roost up`: one command from nothing to a running node with a demo server.

First start creates the home directory (config with a fresh node token, the demo server
definition); later starts reuse it. Until the token service exists, it prints a
ready-to-paste token and websocket URL.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import secrets
import uuid as uuidlib
from pathlib import Path

import yaml
from rich.console import Console

from ..config import load_config
from ..demo.definition import demo_definition, install_demo_files
from ..tokenservice.issuer import ADMIN_PERMISSIONS, mint_websocket_token

DEMO_UUID_FILE = "demo-server-uuid"


def ensure_home(home: Path, host: str, port: int) -> tuple[Path, str]:
    home.mkdir(parents=True, exist_ok=True)
    # Servers run as an unprivileged user, who must be able to reach <home>/volumes/<uuid>.
    home.chmod(0o755)
    config_path = home / "config.yml"
    if not config_path.exists():
        doc = {
            "app_name": "roost",
            "uuid": str(uuidlib.uuid4()),
            "token_id": secrets.token_hex(8),
            "token": secrets.token_urlsafe(48),
            "remote": f"http://{host}:{port}",
            "allowed_origins": ["*"],
            "api": {"host": host, "port": port},
            "system": {
                "root_directory": str(home),
                "data": str(home / "volumes"),
                "log_directory": str(home / "logs"),
            },
            "roost": {"runtime": "process", "servers_directory": str(home / "servers"),
                      "state_directory": str(home / "run"),
                      # `roost up` is interactive: Ctrl-C stops the servers by their stop command.
                      "shutdown_stops_servers": True},
        }
        config_path.write_text(yaml.safe_dump(doc, sort_keys=False))
        config_path.chmod(0o600)
    uuid_file = home / DEMO_UUID_FILE
    if not uuid_file.exists():
        uuid_file.write_text(str(uuidlib.uuid4()))
    demo_uuid = uuid_file.read_text().strip()
    servers = home / "servers"
    servers.mkdir(exist_ok=True)
    definition = servers / "demo.yml"
    if not definition.exists():
        definition.write_text(yaml.safe_dump(demo_definition(demo_uuid), sort_keys=False))
    return config_path, demo_uuid


def run_up(args: argparse.Namespace) -> int:
    from ..daemon import serve

    home = Path(args.home)
    config_path, demo_uuid = ensure_home(home, args.host, args.port)
    config = load_config(config_path)
    install_demo_files(Path(config.system.data) / demo_uuid)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    console = Console(soft_wrap=True)  # URLs and tokens must stay copy-pasteable

    async def ready(manager) -> None:
        server = manager.servers.get(demo_uuid)
        if server is not None and str(server.state) == "offline":
            server.spawn(server.power("start"))
        token = mint_websocket_token(
            secret=config.token, server_uuid=demo_uuid, user_uuid=str(uuidlib.UUID(int=1)), user_id=1,
            permissions=ADMIN_PERMISSIONS, issuer=config.remote, node_url=config.remote, ttl_s=3600,
        )
        url = f"ws://{config.api.host}:{config.api.port}/api/servers/{demo_uuid}/ws"
        console.print(f"[bold green]roost is up[/] (home: {home})")
        console.print(f"  node API:      http://{config.api.host}:{config.api.port}/api/system  (Bearer token in {config_path})")
        console.print(f"  demo server:   {demo_uuid}")
        console.print(f"  console URL:   {url}")
        console.print(f"  token (1 h):   {token}")
        console.print("  attach with any websocket client, e.g.:")
        console.print(f"    python3 -m websockets {url}", soft_wrap=True)
        console.print(f'    then send: {{"event":"auth","args":["<token>"]}} and {{"event":"send logs"}}', soft_wrap=True)
        console.print("  Ctrl-C stops the node (servers keep running unless roost.shutdown_stops_servers is set).")

    try:
        asyncio.run(serve(config, ready=ready))
    except KeyboardInterrupt:
        pass
    return 0
