"""`roost up`: one command from nothing to a panel-side token service, a node, and a demo
server whose console you can open.

First start creates the home directory: the node's config (fresh node token), the token
service's store with an admin user, a client API key, the local node and the demo server.
Later starts reuse all of it. The node gets its servers from the token service through the
remote API over HTTP, exactly as a node of a remote panel would (one code path).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import secrets
import signal
import uuid as uuidlib
from pathlib import Path

import yaml
from aiohttp import web
from rich.console import Console

from ..config import load_config
from ..demo.definition import demo_definition, install_demo_files

UP_FILE = "up.json"  # what `roost console` reads to find the panel and key of this home


def default_home() -> str:
    import os

    if os.environ.get("ROOST_HOME"):
        return os.environ["ROOST_HOME"]
    return "/var/lib/roost-up" if os.geteuid() == 0 else str(Path.home() / ".local/share/roost")


def ensure_node_config(home: Path, host: str, port: int, panel_url: str) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    # Servers run as an unprivileged user, who must be able to reach <home>/volumes/<uuid>.
    home.chmod(0o755)
    config_path = home / "config.yml"
    doc = yaml.safe_load(config_path.read_text()) if config_path.exists() else None
    if not isinstance(doc, dict):
        doc = {
            "app_name": "roost",
            "uuid": str(uuidlib.uuid4()),
            "token_id": secrets.token_hex(8),
            "token": secrets.token_urlsafe(48),
            "allowed_origins": ["*"],
            "system": {
                "root_directory": str(home),
                "data": str(home / "volumes"),
                "log_directory": str(home / "logs"),
            },
            "roost": {
                "runtime": "process",
                "state_directory": str(home / "run"),
                # `roost up` is interactive: Ctrl-C stops the servers by their stop command.
                "shutdown_stops_servers": True,
            },
        }
    doc["remote"] = panel_url  # servers come from the token service (remote API)
    doc.setdefault("api", {}).update({"host": host, "port": port})
    tmp = config_path.with_name(".config.yml.tmp")
    tmp.write_text(yaml.safe_dump(doc, sort_keys=False))
    tmp.chmod(0o600)
    tmp.replace(config_path)
    return config_path


def run_up(args: argparse.Namespace) -> int:
    from ..daemon import serve
    from ..tokenservice.app import build_token_service_app
    from ..tokenservice.service import bootstrap
    from ..tokenservice.store import Store

    home = Path(args.home)
    panel_url = f"http://{args.host}:{args.port}"
    node_port = args.node_port or args.port + 1
    node_url = f"http://{args.host}:{node_port}"
    config = load_config(ensure_node_config(home, args.host, node_port, panel_url))
    store = Store.open(home)
    boot = bootstrap(
        store, node_url=node_url, node_token_id=config.token_id, node_token=config.token,
        definition=demo_definition(str(uuidlib.uuid4()), "Demo server"), key_file=home / "api-key",
        server_name="Demo server",
    )
    server = boot.server
    install_demo_files(Path(config.system.data) / server.uuid)
    (home / UP_FILE).write_text(json.dumps({"panel_url": panel_url, "server": server.identifier}))
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    console = Console(soft_wrap=True)  # URLs and keys must stay copy-pasteable

    async def main() -> None:
        panel = web.AppRunner(
            build_token_service_app(store, public_url=panel_url, token_ttl_s=args.token_ttl), access_log=None,
            shutdown_timeout=2.0)
        await panel.setup()
        # The panel listens first: the node asks it for its servers while booting.
        await web.TCPSite(panel, args.host, args.port).start()

        async def ready(manager) -> None:
            srv = manager.servers.get(server.uuid)
            if srv is not None and str(srv.state) == "offline":
                srv.spawn(srv.power("start"))
            home_flag = "" if str(home) == default_home() else f" --home {home}"
            console.print(f"[bold green]roost is up[/] (home: {home})")
            console.print(f"  panel (client API): {panel_url}/api/client")
            console.print(f"  API key:            {boot.api_key or '(see ' + str(home / 'api-key') + ')'}")
            console.print(f"  node:               {node_url}")
            console.print(f"  demo server:        {server.identifier} ({server.uuid})")
            console.print(f"  open its console:   roost console {server.identifier}{home_flag}")
            console.print(f"                      (or: .venv/bin/roost console {server.identifier}{home_flag})")
            console.print("  Ctrl-C stops everything; servers stop by their stop command.")

        try:
            await serve(config, ready=ready)
        finally:
            await panel.cleanup()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
    return 0
