"""The node configuration: Wings' config.yml keys, plus roost's own under `roost:`.

Loaded and validated once at start, then passed down (never read from a global).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError


class _Model(BaseModel):
    # Wings configs carry many keys roost does not use yet: keep them, don't refuse them.
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class SslConfig(_Model):
    enabled: bool = False
    cert: str = ""
    key: str = ""


class ApiConfig(_Model):
    host: str = "0.0.0.0"
    port: int = 8080
    ssl: SslConfig = Field(default_factory=SslConfig)
    upload_limit: int = 100


class CrashDetection(_Model):
    enabled: bool = True
    detect_clean_exit_as_crash: bool = True
    timeout: int = 60  # seconds between crashes below which no automatic restart happens


class UserConfig(_Model):
    uid: int | None = None
    gid: int | None = None


class SystemConfig(_Model):
    root_directory: str = "/var/lib/roost"
    log_directory: str = "/var/log/roost"
    data: str = "/var/lib/roost/volumes"
    archive_directory: str = "/var/lib/roost/archives"
    backup_directory: str = "/var/lib/roost/backups"
    username: str = "roost"
    user: UserConfig = Field(default_factory=UserConfig)
    timezone: str = "UTC"
    websocket_log_count: int = 150
    crash_detection: CrashDetection = Field(default_factory=CrashDetection)


class Throttles(_Model):
    enabled: bool = True
    lines: int = 2000
    line_reset_interval: int = 100  # milliseconds


class DockerNetwork(_Model):
    mode: str = "bridge"


class DockerConfig(_Model):
    """Wings' `docker:` section (the keys roost reads)."""

    socket: str | None = None  # engine API address; None = the default unix socket
    tmpfs_size: int = 100  # MiB for each container's /tmp
    network: DockerNetwork = Field(default_factory=DockerNetwork)
    # roost: extra labels on every container this node creates (e.g. to find test containers)
    labels: dict[str, str] = Field(default_factory=dict)


class WebsocketSettings(_Model):
    auth_timeout_s: float = 30.0
    expiring_notice_s: float = 60.0
    expired_grace_s: float = 60.0
    ping_interval_s: float = 25.0
    max_sockets_per_server: int = 30


class RoostSettings(_Model):
    """roost-only settings; documented in the README."""

    runtime: Literal["process", "docker"] = "process"
    # Where server definition files live (the directory configuration source).
    servers_directory: str | None = None
    # Short path for per-server runtime state (unix sockets need short paths).
    state_directory: str | None = None
    stop_timeout_s: float = 600.0
    # How long a call to the panel is retried on network errors and 5xx (never on 4xx).
    remote_retry_s: float = 30.0
    # cgroup (below each hierarchy's root) that holds the servers' cgroups: <parent>/<uuid>.
    cgroup_parent: str = "roost"
    # Process/thread limit per server (Wings' docker.container_pid_limit); 0 = none.
    pids_limit: int = 512
    stats_interval_s: float = 1.0
    require_scope: bool = False
    shutdown_stops_servers: bool = False
    websocket: WebsocketSettings = Field(default_factory=WebsocketSettings)


class NodeConfig(_Model):
    debug: bool = False
    app_name: str = "roost"
    uuid: str = ""
    token_id: str = ""
    token: str
    remote: str = ""
    allowed_origins: list[str] = Field(default_factory=list)
    api: ApiConfig = Field(default_factory=ApiConfig)
    system: SystemConfig = Field(default_factory=SystemConfig)
    throttles: Throttles = Field(default_factory=Throttles)
    docker: DockerConfig = Field(default_factory=DockerConfig)
    roost: RoostSettings = Field(default_factory=RoostSettings)

    @property
    def state_directory(self) -> Path:
        return Path(self.roost.state_directory or Path(self.system.root_directory) / "run")

    @property
    def servers_directory(self) -> Path:
        return Path(self.roost.servers_directory or Path(self.system.root_directory) / "servers")

    @property
    def console_directory(self) -> Path:
        return Path(self.system.root_directory) / "console"


class ConfigError(Exception):
    pass


def load_config(path: str | Path) -> NodeConfig:
    try:
        doc: Any = yaml.safe_load(Path(path).read_text())
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    try:
        return NodeConfig.model_validate(doc)
    except ValidationError as e:
        lines = [f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()]
        raise ConfigError(f"{path}: " + "; ".join(lines)) from None
