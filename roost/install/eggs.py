"""Pterodactyl/Pelican eggs (`PTDL_v1`, `PTDL_v2`): parse, check, and turn into a server.

An egg is the JSON recipe a panel imports: startup command, docker images, the `config` block
(`files`, `startup`, `logs` as JSON *strings*, and `stop`), the installation script, and the
user variables with Laravel validation rules. `parse_egg` reads one as panels do (tolerating
the quirks of real eggs: `images`/`image` instead of `docker_images`, an array of images, null
features, `file_denylist` as a string, `"[]"` for an empty `config.files`, rules as a list,
`{}` as rules, missing `field_type`, …) and refuses what cannot work with an `EggError` that
names the field. Harmless oddities become `Egg.warnings`.

`egg_to_definition` makes the panel's server definition (`settings` +
`process_configuration`, as `roost.server.definition.ServerDefinition` reads it) from an egg,
validating the variables against their rules.

Sans-I/O except `load_egg`, which only reads the file.
"""
from __future__ import annotations

import json
import os
import re
import uuid as uuidlib
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..server.configfiles import PARSERS, configs_from_egg_files
from .rules import (
    MISSING,
    Rule,
    RuleFailure,
    ValidationResult,
    VariableValidationError,
    parse_rules,
    rule_problems,
    validate_value,
)

__all__ = [
    "EggError",
    "Egg",
    "EggVariable",
    "InstallScript",
    "VERSIONS",
    "RESERVED_ENV_NAMES",
    "parse_egg",
    "load_egg",
    "stop_config",
    "validate_environment",
    "egg_to_definition",
]

VERSIONS = ("PTDL_v1", "PTDL_v2")
# Names the panel refuses for new variables (they collide with what the daemon sets).
RESERVED_ENV_NAMES = frozenset({"SERVER_MEMORY", "SERVER_IP", "SERVER_PORT", "ENV", "HOME", "USER",
                                "STARTUP", "SERVER_UUID", "UUID"})
_ENV_NAME = re.compile(r"[A-Za-z0-9_]{1,191}")
_PLACEHOLDER = re.compile(r"\{\{\s*([\w.\-]+)\s*\}\}")
_BROKEN_PLACEHOLDER = re.compile(r"\{\{(?![\s\w.\-]+\}\})[^{}\n]{0,80}")
# `{{server.X}}` paths the panel's structures provide (beyond build.env.* / environment.*)
_SERVER_KEYS = re.compile(
    r"server\.(?:uuid|suspended|invocation|skip_egg_scripts|rebuild|meta\.(?:name|description)"
    r"|build\.(?:default\.(?:ip|port)|memory|memory_limit|swap|io|io_weight|cpu|cpu_limit|threads|disk"
    r"|disk_space|image|oom_disabled|oom_killer|ports(?:\.[\w.\-]+)?)"
    r"|container\.image|allocations\.(?:default\.(?:ip|port)|force_outgoing_ip|mappings(?:\.[\w.\-]+)?)"
    r"|egg\.id|service\.(?:egg|skip_scripts))"
)
_DAEMON_ENV = frozenset({"SERVER_MEMORY", "SERVER_IP", "SERVER_PORT", "P_SERVER_UUID", "STARTUP",
                         "P_SERVER_LOCATION", "P_SERVER_ALLOCATION_LIMIT", "TZ"})


class EggError(ValueError):
    """A malformed egg; `field` names the offending field (e.g. `variables[2].env_variable`)."""

    def __init__(self, field: str, message: str, *, source: str = ""):
        self.field = field
        self.reason = message
        self.source = source
        prefix = f"{source}: " if source else ""
        super().__init__(f"{prefix}{field}: {message}" if field else f"{prefix}{message}")


@dataclass(frozen=True)
class EggVariable:
    name: str
    env_variable: str
    description: str = ""
    default_value: str = ""
    user_viewable: bool = False
    user_editable: bool = False
    rules: Any = ""  # as written in the egg: a string or a list of strings
    field_type: str = "text"
    sort: int | None = None

    @property
    def parsed_rules(self) -> list[Rule]:
        return parse_rules(self.rules)


@dataclass(frozen=True)
class InstallScript:
    script: str
    container: str
    entrypoint: str

    def remote_shape(self) -> dict[str, str]:
        """What the panel answers on `GET /api/remote/servers/{uuid}/install` (http-api §2)."""
        return {"container_image": self.container, "entrypoint": self.entrypoint,
                "script": self.script.replace("\r\n", "\n")}


@dataclass(frozen=True)
class Egg:
    version: str
    name: str
    author: str
    description: str
    uuid: str | None
    update_url: str | None
    features: tuple[str, ...]
    docker_images: dict[str, str]  # label → image
    file_denylist: tuple[str, ...]
    startup: str
    done: tuple[str, ...]
    user_interaction: tuple[str, ...]
    strip_ansi: bool
    stop: str  # as written; see `stop_config`
    config_files: dict[str, dict[str, Any]]  # decoded `config.files`: file → {parser, find, …}
    config_logs: dict[str, Any]
    install: InstallScript | None
    variables: tuple[EggVariable, ...]
    warnings: tuple[str, ...] = ()
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def stop_config(self) -> dict[str, Any]:
        return stop_config(self.stop)

    @property
    def default_image(self) -> str:
        return next(iter(self.docker_images.values()), "")

    @property
    def egg_id(self) -> str:
        """The egg's uuid, or a stable one derived from its name and author."""
        return self.uuid or str(uuidlib.uuid5(uuidlib.NAMESPACE_URL, f"roost-egg:{self.author}:{self.name}"))

    def variable(self, env_name: str) -> EggVariable | None:
        return next((v for v in self.variables if v.env_variable == env_name), None)

    def defaults(self) -> dict[str, str]:
        return {v.env_variable: v.default_value for v in self.variables}

    def configs(self) -> list[dict[str, Any]]:
        """`process_configuration.configs` in the Wings shape, placeholders kept."""
        return configs_from_egg_files(self.config_files)

    def process_configuration(self) -> dict[str, Any]:
        """`process_configuration` as the panel sends it (configs with placeholders kept)."""
        return {
            "startup": {"done": list(self.done), "user_interaction": [], "strip_ansi": self.strip_ansi},
            "stop": self.stop_config,
            "configs": self.configs(),
        }


def stop_config(stop: str | None) -> dict[str, Any]:
    """An egg's `config.stop` as the panel converts it (wire-protocol §7).

    `^C` (any case) → `{"type": "stop"}` (graceful, as `docker stop`); another `^X` →
    `{"type": "signal", "value": "X"}` upper-cased (so `^^C` → signal `^C`, which Wings, and
    roost, treat as an unknown name: SIGKILL); anything else is a console command. An empty
    stop is a graceful stop.
    """
    if not stop:
        return {"type": "stop", "value": None}
    if not stop.startswith("^"):
        return {"type": "command", "value": stop}
    sig = stop[1:].upper()
    if sig == "C":
        return {"type": "stop", "value": None}
    return {"type": "signal", "value": sig}


# ---------------------------------------------------------------------------------------------
# Parsing


def _json_field(value: Any, field_name: str, source: str) -> Any:
    """Decode a JSON-in-a-string field (already-decoded objects are accepted too)."""
    if value is None:
        return None
    if isinstance(value, (dict, list)):
        return value
    if not isinstance(value, str):
        raise EggError(field_name, f"expected a JSON string, got {type(value).__name__}", source=source)
    if value.strip() == "":
        return None
    try:
        return json.loads(value)
    except json.JSONDecodeError as e:
        raise EggError(field_name, f"is not valid JSON ({e.msg} at line {e.lineno} column {e.colno})",
                       source=source) from None


def _as_object(value: Any, field_name: str, source: str) -> dict[str, Any]:
    """A decoded object; `[]` (PHP's empty array) and null are an empty object."""
    if value is None or value == []:
        return {}
    if not isinstance(value, dict):
        raise EggError(field_name, f"expected an object, got {type(value).__name__}", source=source)
    return value


def _text(value: Any, field_name: str, source: str, *, required: bool = False) -> str:
    if value is None:
        if required:
            raise EggError(field_name, "is missing", source=source)
        return ""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise EggError(field_name, f"expected a string, got {type(value).__name__}", source=source)
    return value if isinstance(value, str) else json.dumps(value)


def _flag(value: Any, field_name: str, source: str) -> bool:
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value in ("0", "1", "true", "false", ""):
        return value in ("1", "true")
    raise EggError(field_name, f"expected true or false, got {value!r}", source=source)


def _string_list(value: Any, field_name: str, source: str, *, lines: bool = False) -> tuple[str, ...]:
    if value is None or value == {} or value == "":
        return ()
    if isinstance(value, str) and lines:  # file_denylist stored as text, one pattern a line
        return tuple(x for x in value.splitlines() if x.strip())
    if not isinstance(value, list):
        raise EggError(field_name, f"expected a list of strings, got {type(value).__name__}", source=source)
    out = []
    for i, x in enumerate(value):
        if x is None or x == "":
            continue
        if not isinstance(x, str):
            raise EggError(f"{field_name}[{i}]", f"expected a string, got {type(x).__name__}", source=source)
        out.append(x)
    return tuple(out)


def _images(egg: dict[str, Any], source: str, warnings: list[str]) -> dict[str, str]:
    raw = egg.get("docker_images")
    where = "docker_images"
    if raw is None or raw == [] or raw == {}:
        if egg.get("images") not in (None, [], {}):
            raw, where = egg["images"], "images"
        elif egg.get("image") not in (None, ""):
            raw, where = [egg["image"]], "image"
    images: dict[str, str] = {}
    if raw is None or raw == [] or raw == {}:
        warnings.append("no docker image: the egg can only run on the process runtime")
        return images
    if isinstance(raw, dict):
        for label, image in raw.items():
            if not isinstance(image, str) or not image.strip():
                raise EggError(f"{where}[{label!r}]", "expected an image name", source=source)
            images[str(label)] = image.strip()
    elif isinstance(raw, list):
        for i, image in enumerate(raw):
            if not isinstance(image, str) or not image.strip():
                raise EggError(f"{where}[{i}]", "expected an image name", source=source)
            images[image.strip()] = image.strip()
    else:
        raise EggError(where, f"expected an object of label → image, got {type(raw).__name__}", source=source)
    return images


def _variables(raw: Any, source: str, warnings: list[str]) -> tuple[EggVariable, ...]:
    if raw is None:
        return ()
    if isinstance(raw, dict):  # a PHP array with gaps exported as an object
        raw = list(raw.values())
    if not isinstance(raw, list):
        raise EggError("variables", f"expected a list, got {type(raw).__name__}", source=source)
    out: list[EggVariable] = []
    seen: dict[str, int] = {}
    for i, v in enumerate(raw):
        where = f"variables[{i}]"
        if not isinstance(v, dict):
            raise EggError(where, f"expected an object, got {type(v).__name__}", source=source)
        env = v.get("env_variable")
        if not isinstance(env, str) or not env:
            raise EggError(f"{where}.env_variable", "is missing", source=source)
        if not _ENV_NAME.fullmatch(env):
            raise EggError(f"{where}.env_variable", f"{env!r} is not a valid environment variable name",
                           source=source)
        if env in seen:
            # panels keep both rows; the environment and the validation rules are keyed by
            # name, so the last declaration wins there: do the same, and say so
            warnings.append(f"{where}: {env} is declared again (first in variables[{seen[env]}]); "
                            "the last declaration is used, as panels do")
        seen[env] = i
        if env.upper() in RESERVED_ENV_NAMES:
            warnings.append(f"{where}: {env} is a name the daemon sets itself; the egg's value wins")
        default = v.get("default_value")
        if isinstance(default, bool):
            default = "1" if default else "0"
        default = _text(default, f"{where}.default_value", source)
        rules = v.get("rules")
        if rules is None or rules == {} or rules == []:
            rules = ""
        elif isinstance(rules, list):
            for j, r in enumerate(rules):
                if not isinstance(r, str):
                    raise EggError(f"{where}.rules[{j}]", f"expected a rule string, got {type(r).__name__}",
                                   source=source)
        elif not isinstance(rules, str):
            raise EggError(f"{where}.rules", f"expected a string or a list of strings, got {type(rules).__name__}",
                           source=source)
        for problem in rule_problems(rules):
            warnings.append(f"{where}.rules ({env}): not checked by roost: {problem}")
        sort = v.get("sort")
        out.append(EggVariable(
            name=_text(v.get("name"), f"{where}.name", source) or env,
            env_variable=env,
            description=_text(v.get("description"), f"{where}.description", source),
            default_value=default,
            user_viewable=_flag(v.get("user_viewable"), f"{where}.user_viewable", source),
            user_editable=_flag(v.get("user_editable"), f"{where}.user_editable", source),
            rules=list(rules) if isinstance(rules, list) else rules,
            field_type=_text(v.get("field_type"), f"{where}.field_type", source) or "text",
            sort=sort if isinstance(sort, int) and not isinstance(sort, bool) else None,
        ))
    last = {v.env_variable: v for v in out}
    return tuple(v for v in out if last[v.env_variable] is v)


def _config_files(raw: Any, source: str) -> dict[str, dict[str, Any]]:
    decoded = _json_field(raw, "config.files", source)
    if decoded is None or decoded == [] or decoded == {}:
        return {}
    if not isinstance(decoded, dict):
        raise EggError("config.files", f"expected a JSON object of file → {{parser, find}}, got "
                       f"{type(decoded).__name__}", source=source)
    out: dict[str, dict[str, Any]] = {}
    for name, spec in decoded.items():
        where = f"config.files[{name!r}]"
        if not name.strip():
            raise EggError(where, "empty file name", source=source)
        if not isinstance(spec, dict):
            raise EggError(where, f"expected an object with `parser` and `find`, got {type(spec).__name__}",
                           source=source)
        parser = spec.get("parser")
        if not isinstance(parser, str) or parser.lower() not in PARSERS:
            raise EggError(f"{where}.parser", f"unknown parser {parser!r} (expected one of "
                           f"{', '.join(sorted(PARSERS))})", source=source)
        find = spec.get("find")
        if find == []:
            find = {}
        if not isinstance(find, dict):
            raise EggError(f"{where}.find", f"expected an object of key → value, got {type(find).__name__}",
                           source=source)
        for key, value in find.items():
            if isinstance(value, dict):
                for match, rep in value.items():
                    if isinstance(rep, (dict, list)):
                        raise EggError(f"{where}.find[{key!r}][{match!r}]", "expected a value", source=source)
            elif isinstance(value, list):
                raise EggError(f"{where}.find[{key!r}]", "expected a value or an object of if_value → value",
                               source=source)
        out[name] = dict(spec, parser=parser.lower(), find=find)
    return out


def _check_placeholders(egg: "Egg", warnings: list[str]) -> None:
    names = {v.env_variable for v in egg.variables} | _DAEMON_ENV

    def strings(value: Any):
        if isinstance(value, str):
            yield value
        elif isinstance(value, dict):
            for v in value.values():
                yield from strings(v)

    for file, spec in egg.config_files.items():
        for key, value in spec["find"].items():
            where = f"config.files[{file!r}].find[{key!r}]"
            for s in strings(value):
                for m in _PLACEHOLDER.finditer(s):
                    p = m.group(1)
                    env = None
                    for prefix in ("server.build.env.", "server.environment.", "env."):
                        if p.startswith(prefix):
                            env = p[len(prefix):]
                    if env is not None:
                        if env not in names:
                            warnings.append(f"{where}: {{{{{p}}}}} names no variable of this egg (becomes empty)")
                    elif p.startswith("config."):
                        continue
                    elif p.startswith("server."):
                        if not _SERVER_KEYS.fullmatch(p):
                            warnings.append(f"{where}: {{{{{p}}}}} is not a server value (becomes empty)")
                    elif p in names:
                        warnings.append(f"{where}: bare {{{{{p}}}}} (panels leave it as is; roost substitutes the variable)")
                    else:
                        warnings.append(f"{where}: unknown placeholder {{{{{p}}}}} (left as is)")
                rest = _PLACEHOLDER.sub("", s)
                for m in _BROKEN_PLACEHOLDER.finditer(rest):
                    warnings.append(f"{where}: malformed placeholder {m.group(0)!r} (left as is)")


def parse_egg(data: Any, *, source: str = "") -> Egg:
    """Parse an egg: a dict, or its JSON text (str/bytes).

    Raises `EggError` naming the field for a malformed egg; `source` (e.g. the file name)
    prefixes the message.
    """
    if isinstance(data, (bytes, bytearray)):
        try:
            data = bytes(data).decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise EggError("", f"not UTF-8 text ({e.reason} at byte {e.start})", source=source) from None
    if isinstance(data, str):
        try:
            data = json.loads(data.lstrip("\ufeff"))
        except json.JSONDecodeError as e:
            raise EggError("", f"not valid JSON ({e.msg} at line {e.lineno} column {e.colno})", source=source) from None
    if not isinstance(data, dict):
        raise EggError("", f"an egg is a JSON object, got {type(data).__name__}", source=source)
    egg: dict[str, Any] = data
    warnings: list[str] = []

    meta = egg.get("meta")
    if not isinstance(meta, dict):
        raise EggError("meta", "is missing (not a Pterodactyl egg export?)", source=source)
    version = meta.get("version")
    if version not in VERSIONS:
        if isinstance(version, str) and version.startswith("PLCN_"):
            raise EggError("meta.version", f"{version!r} is a Pelican-native export; export the egg for "
                           "Pterodactyl (PTDL_v2) to import it", source=source)
        raise EggError("meta.version", f"{version!r} is not a supported egg format (expected PTDL_v1 or PTDL_v2)",
                       source=source)
    name = _text(egg.get("name"), "name", source, required=True).strip()
    if not name:
        raise EggError("name", "is empty", source=source)
    startup = _text(egg.get("startup"), "startup", source, required=True)
    if not startup.strip():
        raise EggError("startup", "is empty: there is no command to start the server", source=source)

    features_raw = egg.get("features")
    features = _string_list(features_raw, "features", source)
    images = _images(egg, source, warnings)
    denylist = _string_list(egg.get("file_denylist"), "file_denylist", source, lines=True)

    config = egg.get("config")
    if config is None:
        config = {}
    if not isinstance(config, dict):
        raise EggError("config", f"expected an object, got {type(config).__name__}", source=source)
    files = _config_files(config.get("files"), source)

    startup_cfg = _as_object(_json_field(config.get("startup"), "config.startup", source), "config.startup", source)
    done_raw = startup_cfg.get("done")
    if done_raw is None:
        done: tuple[str, ...] = ()
    elif isinstance(done_raw, str):
        done = (done_raw,)
    elif isinstance(done_raw, list):
        for i, d in enumerate(done_raw):
            if not isinstance(d, str):
                raise EggError(f"config.startup.done[{i}]", f"expected a string, got {type(d).__name__}",
                               source=source)
        done = tuple(done_raw)
    else:
        raise EggError("config.startup.done", f"expected a string or a list of strings, got "
                       f"{type(done_raw).__name__}", source=source)
    if not any(done):
        warnings.append("config.startup.done is empty: the server will never be reported as running")
    for d in done:
        if d.startswith("regex:"):
            try:
                re.compile(d[len("regex:"):])
            except re.error as e:
                warnings.append(f"config.startup.done: {d!r} is not a valid regex ({e}); matched literally")
    ui = startup_cfg.get("userInteraction", startup_cfg.get("user_interaction"))
    user_interaction = _string_list(ui, "config.startup.userInteraction", source)
    strip_ansi = _flag(startup_cfg.get("strip_ansi"), "config.startup.strip_ansi", source)

    logs = _as_object(_json_field(config.get("logs"), "config.logs", source), "config.logs", source)
    stop = _text(config.get("stop"), "config.stop", source)
    if not stop:
        warnings.append("config.stop is empty: stopping sends SIGTERM")

    scripts = egg.get("scripts")
    install: InstallScript | None = None
    if scripts is not None:
        if not isinstance(scripts, dict):
            raise EggError("scripts", f"expected an object, got {type(scripts).__name__}", source=source)
        inst = scripts.get("installation")
        if inst is not None:
            if not isinstance(inst, dict):
                raise EggError("scripts.installation", f"expected an object, got {type(inst).__name__}",
                               source=source)
            script = _text(inst.get("script"), "scripts.installation.script", source)
            container = _text(inst.get("container"), "scripts.installation.container", source).strip()
            entrypoint = _text(inst.get("entrypoint"), "scripts.installation.entrypoint", source).strip() or "ash"
            if script.strip():
                if not container:
                    warnings.append("scripts.installation.container is empty: the Docker runtime cannot install")
                install = InstallScript(script, container, entrypoint)
    if install is None:
        warnings.append("no installation script: install only runs the config rewrites")

    variables = _variables(egg.get("variables"), source, warnings)
    for v in variables:
        res = validate_value(v.env_variable, v.default_value, v.rules)
        bad = [f for f in res.failures if not (f.rule.strip().lower() == "required" and not v.default_value.strip())]
        if bad:
            warnings.append(f"variables: the default of {v.env_variable} breaks its own rules: "
                            + "; ".join(f"{f.message} (`{f.rule}`)" for f in bad))

    uuid = egg.get("uuid") if isinstance(egg.get("uuid"), str) and egg.get("uuid") else None
    update_url = meta.get("update_url") if isinstance(meta.get("update_url"), str) else None
    result = Egg(
        version=version,
        name=name,
        author=_text(egg.get("author"), "author", source),
        description=_text(egg.get("description"), "description", source),
        uuid=uuid,
        update_url=update_url,
        features=features,
        docker_images=images,
        file_denylist=denylist,
        startup=startup,
        done=done,
        user_interaction=user_interaction,
        strip_ansi=strip_ansi,
        stop=stop,
        config_files=files,
        config_logs=logs,
        install=install,
        variables=variables,
        raw=egg,
    )
    _check_placeholders(result, warnings)
    return _replace_warnings(result, warnings)


def _replace_warnings(egg: Egg, warnings: list[str]) -> Egg:
    from dataclasses import replace

    return replace(egg, warnings=tuple(dict.fromkeys(warnings)))


def load_egg(path: str | os.PathLike[str]) -> Egg:
    """Read and parse an egg file; errors name the file."""
    p = os.fspath(path)
    with open(p, "rb") as f:
        data = f.read()
    return parse_egg(data, source=os.path.basename(p))


# ---------------------------------------------------------------------------------------------
# Variables and server definitions


def validate_environment(egg: Egg, values: Mapping[str, Any], *, admin: bool = True,
                         unknown: str = "error") -> list[ValidationResult]:
    """Validate variable values for a server of `egg` as the panel does.

    Args:
        values: env name → value; variables not given are validated with their default.
        admin: as a panel admin. Otherwise a variable that is not `user_editable` cannot be
            changed (rule `user_editable`) and is not validated.
        unknown: "error" (a name that is not a variable of the egg fails with rule
            `variable`) or "ignore".
    """
    results: list[ValidationResult] = []
    for v in egg.variables:
        given = v.env_variable in values
        value = values[v.env_variable] if given else v.default_value
        if not admin and not v.user_editable:
            r = ValidationResult(v.env_variable)
            if given and _env_text(value) != v.default_value:
                r.failures.append(RuleFailure(v.env_variable, "user_editable", "cannot be changed by users"))
            results.append(r)
            continue
        results.append(validate_value(v.env_variable, value, v.rules))
    if unknown == "error":
        for k in values:
            if egg.variable(k) is None:
                r = ValidationResult(k)
                r.failures.append(RuleFailure(k, "variable", f"is not a variable of the egg {egg.name!r}"))
                results.append(r)
    return results


def _env_text(v: Any) -> str:
    if v is None or v is MISSING:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def egg_to_definition(
    egg: Egg,
    *,
    uuid: str,
    name: str,
    environment_overrides: Mapping[str, Any] | None = None,
    description: str = "",
    docker_image: str | None = None,
    startup: str | None = None,
    ip: str = "0.0.0.0",
    port: int = 0,
    mappings: Mapping[str, list[int]] | None = None,
    memory_limit: int = 0,
    swap: int = 0,
    disk_space: int = 0,
    io_weight: int = 500,
    cpu_limit: int = 0,
    threads: str | None = None,
    oom_disabled: bool = False,
    skip_egg_scripts: bool = False,
    admin: bool = True,
    validate: bool = True,
) -> dict[str, Any]:
    """A server definition (`settings` + `process_configuration`) for `egg`.

    The environment is the egg's defaults updated by `environment_overrides`; with
    `validate`, values are checked against the variables' rules first and a
    `VariableValidationError` lists every failure (variable and rule). `docker_image` must be
    one of the egg's images (by image or label) unless the egg lists none; default: the
    first. `process_configuration.configs` keeps the `{{…}}` placeholders, resolved against
    the current settings each time the files are rewritten (see
    `roost.server.configfiles.render_configs` to resolve them for a real Wings).
    """
    overrides = dict(environment_overrides or {})
    if validate:
        failures = [f for r in validate_environment(egg, overrides, admin=admin) for f in r.failures]
        if failures:
            raise VariableValidationError(failures)
    env: dict[str, Any] = egg.defaults()
    for k, v in overrides.items():
        if egg.variable(k) is not None or not validate:
            env[k] = _env_text(v) if not isinstance(v, str) else v

    image = egg.default_image
    if docker_image is not None:
        if egg.docker_images and docker_image not in egg.docker_images.values():
            if docker_image in egg.docker_images:
                docker_image = egg.docker_images[docker_image]
            else:
                raise VariableValidationError([RuleFailure(
                    "docker_image", "in", f"{docker_image!r} is not one of the egg's images: "
                    + ", ".join(egg.docker_images.values()))])
        image = docker_image

    allocation_map = {k: list(v) for k, v in (mappings or {}).items()}
    if port and ip not in allocation_map:
        allocation_map[ip] = [port]
    elif port and port not in allocation_map[ip]:
        allocation_map[ip].insert(0, port)

    return {
        "settings": {
            "uuid": uuid,
            "meta": {"name": name, "description": description},
            "suspended": False,
            "invocation": startup if startup is not None else egg.startup,
            "skip_egg_scripts": skip_egg_scripts,
            "environment": env,
            "allocations": {"force_outgoing_ip": False, "default": {"ip": ip, "port": port},
                            "mappings": allocation_map},
            "build": {"memory_limit": memory_limit, "swap": swap, "io_weight": io_weight,
                      "cpu_limit": cpu_limit, "threads": threads, "disk_space": disk_space,
                      "oom_disabled": oom_disabled},
            "container": {"image": image},
            "egg": {"id": egg.egg_id, "file_denylist": list(egg.file_denylist)},
            "mounts": [],
        },
        "process_configuration": egg.process_configuration(),
    }
