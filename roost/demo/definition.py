"""The demo server: the fake game's definition in the panel's shape, and its files."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

FAKEGAME = Path(__file__).with_name("fakegame.py")


def demo_definition(uuid: str, name: str = "Demo server", **settings: Any) -> dict[str, Any]:
    """A definition (settings + process_configuration) that runs the fake game.

    The game is copied into the server's data directory and run by the system's python3,
    so it works as the unprivileged server user whatever the daemon's own install path is.
    """
    doc: dict[str, Any] = {
        "settings": {
            "uuid": uuid,
            "meta": {"name": name, "description": "roost's demo game server"},
            "suspended": False,
            "invocation": "exec python3 -u fakegame.py --name '{{SERVER_NAME}}'",
            "skip_egg_scripts": True,
            "environment": {"SERVER_NAME": name},
            "allocations": {"default": {"ip": "127.0.0.1", "port": 25565}, "mappings": {"127.0.0.1": [25565]}},
            "build": {"memory_limit": 256, "swap": 0, "io_weight": 500, "cpu_limit": 100, "disk_space": 1024,
                      "threads": None, "oom_disabled": False},
            "container": {"image": "~roost/demo"},
            "egg": {"id": "roost-demo"},
        },
        "process_configuration": {
            "startup": {"done": ["Done ("], "user_interaction": [], "strip_ansi": True},
            "stop": {"type": "command", "value": "stop"},
            "configs": [],
        },
    }
    doc["settings"].update(settings)
    return doc


def install_demo_files(data_dir: Path) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(FAKEGAME, data_dir / "fakegame.py")
