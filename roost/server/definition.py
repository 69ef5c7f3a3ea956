"""A server definition in the panel's shape: `settings` + `process_configuration` (http-api §2).

Real panels send nulls, omit empty lists, and Pelican says `oom_killer` where Pterodactyl says
`oom_disabled`: the models accept all of these and normalise them.
"""
from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow")


class Meta(_Model):
    name: str = ""
    description: str = ""


class Allocation(_Model):
    ip: str = "0.0.0.0"
    port: int = 0


class Allocations(_Model):
    force_outgoing_ip: bool = False
    default: Allocation = Field(default_factory=Allocation)
    mappings: dict[str, list[int]] = Field(default_factory=dict)

    @field_validator("mappings", mode="before")
    @classmethod
    def _none_is_empty(cls, v: Any) -> Any:
        return v or {}


class Build(_Model):
    memory_limit: int = 0  # MiB, 0 = unlimited
    swap: int = 0  # MiB; -1 = unlimited
    io_weight: int = 500
    cpu_limit: int = 0  # percent of one core
    disk_space: int = 0  # MiB
    threads: str | None = None
    oom_disabled: bool = False

    @model_validator(mode="before")
    @classmethod
    def _normalise(cls, v: Any) -> Any:
        if isinstance(v, dict):
            v = {k: val for k, val in v.items() if val is not None}
            if "oom_killer" in v and "oom_disabled" not in v:
                v["oom_disabled"] = not bool(v["oom_killer"])
        return v


class Container(_Model):
    image: str = ""


class Egg(_Model):
    id: str = ""
    file_denylist: list[str] = Field(default_factory=list)


class Settings(_Model):
    uuid: str
    meta: Meta = Field(default_factory=Meta)
    suspended: bool = False
    invocation: str = ""
    skip_egg_scripts: bool = False
    environment: dict[str, Any] = Field(default_factory=dict)
    allocations: Allocations = Field(default_factory=Allocations)
    build: Build = Field(default_factory=Build)
    container: Container = Field(default_factory=Container)
    egg: Egg = Field(default_factory=Egg)
    crash_detection_enabled: bool | None = None
    mounts: list[Any] = Field(default_factory=list)

    @field_validator("uuid")
    @classmethod
    def _uuid_shape(cls, v: str) -> str:
        if not re.fullmatch(r"[0-9a-fA-F-]{8,36}", v):
            raise ValueError("must be a uuid")
        return v.lower()

    @field_validator("environment", mode="before")
    @classmethod
    def _no_env_is_empty(cls, v: Any) -> Any:
        return {} if v is None else v

    @field_validator("mounts", mode="before")
    @classmethod
    def _no_mounts_is_empty(cls, v: Any) -> Any:
        return [] if v is None else v


class Startup(_Model):
    done: list[str] = Field(default_factory=list)
    user_interaction: list[str] = Field(default_factory=list)
    strip_ansi: bool = False

    @field_validator("done", "user_interaction", mode="before")
    @classmethod
    def _listify(cls, v: Any) -> Any:
        if v is None:
            return []
        if isinstance(v, str):
            return [v]
        return v


class StopConfig(_Model):
    type: Literal["command", "signal", "stop"] = "stop"
    value: str | None = None


class ProcessConfiguration(_Model):
    startup: Startup = Field(default_factory=Startup)
    stop: StopConfig = Field(default_factory=StopConfig)
    configs: list[Any] = Field(default_factory=list)

    @field_validator("configs", mode="before")
    @classmethod
    def _none_is_empty(cls, v: Any) -> Any:
        return v or []


class ServerDefinition(_Model):
    settings: Settings
    process_configuration: ProcessConfiguration = Field(default_factory=ProcessConfiguration)
    # roost: per-server runtime override ("process" | "docker"); None = the node's setting.
    runtime: Literal["process", "docker"] | None = None

    @property
    def uuid(self) -> str:
        return self.settings.uuid

    def environment(self) -> dict[str, str]:
        """The process environment: the server's variables plus what Wings always adds."""
        s = self.settings
        env = {str(k): "" if v is None else str(v).lower() if isinstance(v, bool) else str(v)
               for k, v in s.environment.items()}
        env.setdefault("SERVER_MEMORY", str(s.build.memory_limit))
        env.setdefault("SERVER_IP", s.allocations.default.ip)
        env.setdefault("SERVER_PORT", str(s.allocations.default.port))
        env.setdefault("P_SERVER_UUID", s.uuid)
        env["STARTUP"] = s.invocation
        return env

    def startup_command(self) -> str:
        """The invocation with `{{VAR}}` and `${VAR}` replaced from the environment."""
        return substitute(self.settings.invocation, self.environment())


_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_.]*)\s*\}\}|\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def substitute(text: str, env: dict[str, str]) -> str:
    """Replace `{{VAR}}`/`${VAR}` with env values; unknown names are left as they were."""

    def repl(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        if name.startswith("env."):
            name = name[4:]
        return env.get(name, m.group(0))

    return _PLACEHOLDER.sub(repl, text)
