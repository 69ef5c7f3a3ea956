"""Config file rewrites before a start: an egg's `config.files`, applied as Wings applies them.

An egg lists files to rewrite before every start, each with a parser and `find` entries:

    {"server.properties": {"parser": "properties",
                           "find": {"server-port": "{{server.build.default.port}}"}}}

A panel turns that into the daemon's `process_configuration.configs` (Wings shape):

    [{"file": "server.properties", "parser": "properties",
      "replace": [{"match": "server-port", "replace_with": "25565"}]}]

resolving `{{server.…}}` and `{{env.…}}` placeholders itself and leaving `{{config.…}}`
(values of the node's own configuration, e.g. `{{config.docker.interface}}`) to the daemon.
roost accepts both shapes and resolves every placeholder against the server's current
settings when it applies them, so a definition may keep the placeholders (see
`configs_from_egg_files`) and `render_configs` does the panel's half for a real Wings.

Parsers: `properties`, `ini`, `yaml` (alias `yml`), `json`, `xml`, `file`. Unlike Wings, which
re-serialises the whole file (dropping comments, reordering JSON/YAML keys, re-indenting XML),
roost edits the text in place: only the values it sets change; comments, order, quoting,
indentation and line endings stay as they were. Keys that are missing are added where the
format expects them (end of the mapping/section/element, in the file's own indentation).

Key paths (`find` keys): dotted, `a.b.c`. JSON/YAML: `*` matches every child of a mapping or
list (more than one wildcard allowed), `name[0]` or a numeric segment indexes a list, `~1`
stands for a literal `.` (as in gabs), and a literal dotted key that exists (`"a.b": 1`) is
found too. INI: the first dot splits section and key (`[A.B].key` for sections with dots);
no dot means the part before any section. XML: the first segment is the root element, `*`
matches any element, and a value `[name='value']` sets an attribute. `properties` and `file`
use the key as written (`file`: line prefix; the longest matching prefix wins).

Placeholders: `{{server.X}}` (the panel's server structure, legacy and current keys:
`server.build.default.port`, `server.build.default.ip`, `server.build.memory`,
`server.build.env.NAME`, `server.environment.NAME`, `server.allocations.default.port`, …),
`{{env.NAME}}`, `{{config.X}}` (looked up in the node config mapping passed in;
`config.docker.interface` also tries `docker.network.interface`), missing values become "" as
in the panel/Wings; roost also resolves a bare `{{NAME}}` that is one of the server's
variables (a panel leaves those as they are). Substituted values are kept on one line in the
line-based parsers (`file`, `ini`), so a variable cannot add lines to a file.

Files are rewritten atomically (temporary file, fsync, rename, directory fsync) keeping mode
and owner, and never outside the data directory: a leading `/` means the data directory's
root (as in Wings), `..` is refused, and symlinks are followed only while they stay inside.

The rewrite functions (`rewrite_*`, `rewrite`) are pure: text in, text out.
"""
from __future__ import annotations

import copy
import errno
import json
import os
import re
import secrets
import stat
import xml.parsers.expat
from dataclasses import dataclass, field
from json.decoder import scanstring
from typing import Any, Callable, Mapping, Sequence

import yaml

__all__ = [
    "PARSERS",
    "MAX_CONFIG_FILE_BYTES",
    "ConfigFileError",
    "UnsafePath",
    "Replacement",
    "ConfigFile",
    "FileResult",
    "configs_from_egg_files",
    "parse_configs",
    "placeholder_structure",
    "server_environment",
    "substitute_placeholders",
    "render_configs",
    "rewrite",
    "rewrite_properties",
    "rewrite_ini",
    "rewrite_json",
    "rewrite_yaml",
    "rewrite_xml",
    "rewrite_file",
    "apply_config_files",
]

PARSERS = frozenset({"file", "yaml", "yml", "properties", "ini", "json", "xml"})
# A config file bigger than this is left alone (Wings' cap is 64 MiB; game configs are KiBs).
MAX_CONFIG_FILE_BYTES = 16 * 1024 * 1024
# Deepest JSON nesting the in-place editor follows.
_MAX_JSON_DEPTH = 400


class ConfigFileError(Exception):
    """A config file could not be rewritten (bad content, bad path, I/O): reported per file."""


class UnsafePath(ConfigFileError):
    """The configured file name would leave the server's data directory."""


@dataclass(frozen=True)
class Replacement:
    """One `find` entry: set `match` to `value` (JSON-typed), only when it equals `if_value`.

    `if_value` starting with `regex:` replaces the pattern's matches in the current value,
    with `$1`/`${name}` in `value` expanding groups (Go's regexp syntax, as in Wings).
    """

    match: str
    value: Any
    if_value: str | None = None


@dataclass(frozen=True)
class ConfigFile:
    file: str
    parser: str
    replace: tuple[Replacement, ...]
    create_file: bool = True  # Pelican's `create_file`; the `file` parser never creates


@dataclass
class FileResult:
    file: str
    parser: str
    status: str  # "updated", "created", "unchanged", "skipped" or "error"
    detail: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status != "error"


# =============================================================================================
# Egg `config.files` → Wings `configs`, and reading `configs`


def configs_from_egg_files(files: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Turn an egg's decoded `config.files` into the daemon's `configs` list (Wings shape).

    Placeholders are kept; a `find` value that is an object becomes one replacement per
    entry with `if_value` (its key) as the panel does. Entries without a `find` object are
    skipped, as the panel skips them.
    """
    out: list[dict[str, Any]] = []
    for name, data in (files or {}).items():
        if not isinstance(data, Mapping) or not isinstance(data.get("find"), Mapping):
            continue
        replace: list[dict[str, Any]] = []
        for match, rep in data["find"].items():
            if isinstance(rep, Mapping):
                for if_value, with_ in rep.items():
                    replace.append({"match": match, "if_value": if_value, "replace_with": copy.deepcopy(with_)})
            else:
                replace.append({"match": match, "replace_with": copy.deepcopy(rep)})
        entry = {k: copy.deepcopy(v) for k, v in data.items() if k != "find"}
        entry.update({"file": name, "replace": replace})
        out.append(entry)
    return out


def parse_configs(configs: Any) -> tuple[list[ConfigFile], list[str]]:
    """Read `process_configuration.configs` (or an egg's `config.files` mapping).

    Returns the config files and a list of problems with entries that were skipped.
    """
    problems: list[str] = []
    if configs is None:
        return [], problems
    if isinstance(configs, Mapping):
        configs = configs_from_egg_files(configs)
    if not isinstance(configs, (list, tuple)):
        return [], [f"configs: expected a list, got {type(configs).__name__}"]
    out: list[ConfigFile] = []
    for i, entry in enumerate(configs):
        where = f"configs[{i}]"
        if not isinstance(entry, Mapping):
            problems.append(f"{where}: not an object")
            continue
        name, parser = entry.get("file"), entry.get("parser")
        if not isinstance(name, str) or not name:
            problems.append(f"{where}.file: missing")
            continue
        if not isinstance(parser, str) or parser.lower() not in PARSERS:
            problems.append(f"{where} ({name}).parser: unknown parser {parser!r}")
            continue
        reps: list[Replacement] = []
        raw = entry.get("replace") or []
        if not isinstance(raw, (list, tuple)):
            problems.append(f"{where} ({name}).replace: not a list")
            raw = []
        for j, r in enumerate(raw):
            if not isinstance(r, Mapping) or not isinstance(r.get("match"), str):
                problems.append(f"{where} ({name}).replace[{j}]: needs a string `match`")
                continue
            if "replace_with" in r:
                value = r["replace_with"]
            elif "value" in r:  # eggs from before Wings renamed the key
                value = r["value"]
            else:
                problems.append(f"{where} ({name}).replace[{j}]: needs `replace_with`")
                continue
            iv = r.get("if_value")
            if iv is not None and not isinstance(iv, str):
                iv = json.dumps(iv)
            reps.append(Replacement(r["match"], value, iv or None))
        create = entry.get("create_file", True)
        out.append(ConfigFile(name, parser.lower(), tuple(reps), create_file=create is not False))
    return out, problems


# =============================================================================================
# Placeholders

_PLACEHOLDER = re.compile(r"\{\{\s*([\w.\-]+)\s*\}\}")
_LEGACY = {
    "config.docker.interface": "config.docker.network.interface",
    "server.build.env.SERVER_MEMORY": "server.build.memory",
    "env.SERVER_MEMORY": "server.build.memory",
    "server.build.env.SERVER_IP": "server.build.default.ip",
    "env.SERVER_IP": "server.build.default.ip",
    "server.build.env.SERVER_PORT": "server.build.default.port",
    "env.SERVER_PORT": "server.build.default.port",
}


def _definition(settings: Any) -> Any:
    from .definition import ServerDefinition, Settings

    if isinstance(settings, ServerDefinition):
        return settings
    if isinstance(settings, Settings):
        return ServerDefinition(settings=settings)
    if isinstance(settings, Mapping):
        if "settings" in settings:
            return ServerDefinition.model_validate(dict(settings))
        return ServerDefinition(settings=Settings.model_validate(dict(settings)))
    raise TypeError(f"settings: expected a ServerDefinition, Settings or mapping, not {type(settings).__name__}")


def server_environment(settings: Any) -> dict[str, str]:
    """The server's variables as the process sees them (strings, SERVER_* added)."""
    return _definition(settings).environment()


def placeholder_structure(settings: Any) -> dict[str, Any]:
    """What `{{server.X}}` looks up: the panel's current and legacy server structures merged."""
    d = _definition(settings)
    s = d.settings
    env = d.environment()
    alloc = s.allocations
    default = {"ip": alloc.default.ip, "port": alloc.default.port}
    build = s.build.model_dump()
    build.update({
        "oom_killer": not s.build.oom_disabled,
        # the legacy (Wings ≤ 1.0 / panel "legacy") names
        "default": default,
        "ports": {k: list(v) for k, v in alloc.mappings.items()},
        "env": env,
        "memory": s.build.memory_limit,
        "io": s.build.io_weight,
        "cpu": s.build.cpu_limit,
        "disk": s.build.disk_space,
        "image": s.container.image,
    })
    return {
        "uuid": s.uuid,
        "meta": s.meta.model_dump(),
        "suspended": s.suspended,
        "environment": env,
        "invocation": s.invocation,
        "skip_egg_scripts": s.skip_egg_scripts,
        "build": build,
        "container": s.container.model_dump(),
        "allocations": {"force_outgoing_ip": alloc.force_outgoing_ip, "default": default,
                        "mappings": {k: list(v) for k, v in alloc.mappings.items()}},
        "egg": s.egg.model_dump(),
        "service": {"egg": s.egg.id, "skip_scripts": s.skip_egg_scripts},
        "rebuild": False,
        "mounts": list(s.mounts),
    }


def _php_text(v: Any) -> str:
    """How the panel turns a looked-up value into text (PHP string conversion)."""
    if v is None:
        return ""
    if isinstance(v, bool):
        return "1" if v else ""
    if isinstance(v, (list, dict, tuple)):
        return "Array"
    if isinstance(v, float):
        return str(int(v)) if v.is_integer() and abs(v) < 1e15 else repr(v)
    return str(v)


_MISSING = object()


def _dig(data: Any, path: str) -> Any:
    if isinstance(data, Mapping) and path in data:
        return data[path]
    cur = data
    for seg in path.split("."):
        if isinstance(cur, Mapping) and seg in cur:
            cur = cur[seg]
        elif isinstance(cur, (list, tuple)) and seg.isdigit() and int(seg) < len(cur):
            cur = cur[int(seg)]
        else:
            return _MISSING
    return cur


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


def _dig_config(cfg: Any, path: str) -> Any:
    if cfg is None:
        return _MISSING
    if hasattr(cfg, "model_dump"):
        cfg = cfg.model_dump()
    cur = cfg
    for seg in path.split("."):
        if isinstance(cur, Mapping):
            for k in (seg, _snake(seg), seg.lower()):
                if k in cur:
                    cur = cur[k]
                    break
            else:
                return _MISSING
        elif hasattr(cur, seg):
            cur = getattr(cur, seg)
        else:
            return _MISSING
    return cur


def substitute_placeholders(
    text: str,
    *,
    structure: Mapping[str, Any] | None = None,
    environment: Mapping[str, str] | None = None,
    node_config: Any = None,
    scopes: Sequence[str] = ("server", "env", "config", "bare"),
    single_line: bool = False,
) -> str:
    """Replace `{{…}}` placeholders in `text`.

    Args:
        structure: `placeholder_structure(settings)`; needed for `server`.
        environment: the server's variables; needed for `env` and `bare`.
        node_config: nested mapping (or pydantic model) of the node's config for `config`.
        scopes: which kinds to resolve (`render_configs` leaves `config` and `bare`).
        single_line: turn line breaks inside substituted values into spaces.

    Unknown `server.`/`env.`/`config.` keys become "" (as in the panel and Wings); other
    unknown placeholders stay as they were.
    """
    env = environment or {}

    def repl(m: re.Match[str]) -> str:
        key = _LEGACY.get(m.group(1), m.group(1))
        value: Any
        if key.startswith("server.") and "server" in scopes:
            value = _dig(structure or {}, key[len("server."):])
            value = "" if value is _MISSING else _php_text(value)
        elif key.startswith("env.") and "env" in scopes:
            value = _php_text(env.get(key[len("env."):], ""))
        elif key.startswith("config.") and "config" in scopes:
            path = key[len("config."):]
            value = _dig_config(node_config, path)
            if value is _MISSING and path == "docker.network.interface":  # either spelling
                value = _dig_config(node_config, "docker.interface")
            value = "" if value is _MISSING else _php_text(value)
        elif "." not in key and "bare" in scopes and key in env:
            value = _php_text(env[key])
        else:
            return m.group(0)
        if single_line:
            value = re.sub(r"\r\n|[\r\n]", " ", value)
        return value

    return _PLACEHOLDER.sub(repl, text)


def _substitute_tree(value: Any, fn: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, list):
        return [_substitute_tree(v, fn) for v in value]
    if isinstance(value, dict):
        return {k: _substitute_tree(v, fn) for k, v in value.items()}
    return value


def render_configs(configs: Any, settings: Any) -> list[dict[str, Any]]:
    """Do the panel's half: resolve `{{server.…}}`/`{{env.…}}` in `replace_with` values.

    Accepts Wings-shaped `configs` or an egg's `config.files`; returns Wings-shaped configs
    with `{{config.…}}` left for the daemon, as a panel sends them.
    """
    if isinstance(configs, Mapping):
        configs = configs_from_egg_files(configs)
    structure = placeholder_structure(settings)
    env = structure["environment"]

    def fn(s: str) -> str:
        return substitute_placeholders(s, structure=structure, environment=env, scopes=("server", "env"))

    out = []
    for entry in configs or []:
        entry = copy.deepcopy(entry)
        if isinstance(entry, dict):
            for r in entry.get("replace") or []:
                if isinstance(r, dict):
                    for k in ("replace_with", "value"):
                        if k in r:
                            r[k] = _substitute_tree(r[k], fn)
        out.append(entry)
    return out


# =============================================================================================
# Values

_GO_ATOI = re.compile(r"[+-]?[0-9]+")


def _atoi(s: str) -> int | None:
    if _GO_ATOI.fullmatch(s):
        v = int(s)
        if -(2**63) <= v < 2**63:
            return v
    return None


def _as_text(value: Any) -> str:
    """A replacement value as text, for the line-based parsers and XML."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return json.dumps(value)
    return json.dumps(value, ensure_ascii=False)


_NO_EXISTING = object()


def _typed(value: Any, existing: Any = _NO_EXISTING) -> Any:
    """A replacement value as JSON/YAML data.

    Wings: a JSON boolean stays a boolean, a string that is an integer becomes a number,
    anything else a string. roost also keeps the type already in the file: a string stays a
    string, "true"/"false" set on a boolean stay booleans, a number string on a number is a
    number.
    """
    if not isinstance(value, str):
        return value
    if existing is not _NO_EXISTING and existing is not None:
        if isinstance(existing, bool):
            if value.lower() in ("true", "false"):
                return value.lower() == "true"
            return value
        if isinstance(existing, (int, float)):
            i = _atoi(value)
            if i is not None:
                return i
            if _J_NUMBER.fullmatch(value):
                f = float(value)
                if f not in (float("inf"), float("-inf")):
                    return f
            return value
        if isinstance(existing, str):
            return value
    i = _atoi(value)
    return i if i is not None else value


def _go_expand(template: str, m: re.Match[str]) -> str:
    """Go's Regexp.Expand: `$1`, `${1}`, `$name`, `${name}`, `$$`; unknown groups → ""."""
    out: list[str] = []
    i = 0
    while i < len(template):
        c = template[i]
        if c != "$" or i + 1 >= len(template):
            out.append(c)
            i += 1
            continue
        nxt = template[i + 1]
        if nxt == "$":
            out.append("$")
            i += 2
            continue
        if nxt == "{":
            end = template.find("}", i + 2)
            name = template[i + 2:end] if end > 0 else ""
            if end < 0 or not re.fullmatch(r"\w+", name):
                out.append(c)
                i += 1
                continue
            i = end + 1
        else:
            nm = re.match(r"\w+", template[i + 1:])
            if not nm:
                out.append(c)
                i += 1
                continue
            name = nm.group(0)
            i += 1 + len(name)
        try:
            g = m.group(int(name)) if name.isdigit() else m.group(name)
        except IndexError:
            g = None
        out.append(g or "")
    return "".join(out)


def _apply_if_value(rep: Replacement, current: Any, exists: bool) -> tuple[bool, Any]:
    """Whether to set, and the value to set, given the current value (for if_value)."""
    if not rep.if_value:
        return True, rep.value
    if not exists:
        return False, None
    cur_text = current if isinstance(current, str) else _as_text(current)
    if rep.if_value.startswith("regex:"):
        try:
            pattern = re.compile(rep.if_value[len("regex:"):])
        except re.error:
            return False, None
        if not pattern.search(cur_text):
            return False, None
        template = _as_text(rep.value)
        return True, pattern.sub(lambda m: _go_expand(template, m), cur_text)
    return cur_text == rep.if_value, rep.value


# =============================================================================================
# Text helpers


def _eol_of(text: str) -> str:
    crlf = text.count("\r\n")
    return "\r\n" if crlf and crlf >= text.count("\n") - crlf else "\n"


def _lines(text: str) -> list[tuple[int, int, int]]:
    """Physical lines as (start, content end, end incl. line break) on \\n, \\r\\n or \\r."""
    out = []
    i, n = 0, len(text)
    while i < n:
        j = i
        while j < n and text[j] not in "\r\n":
            j += 1
        if j < n and text[j] == "\r" and j + 1 < n and text[j + 1] == "\n":
            e = j + 2
        elif j < n:
            e = j + 1
        else:
            e = j
        out.append((i, j, e))
        i = e
    return out


def _line_start(text: str, pos: int) -> int:
    return max(text.rfind("\n", 0, pos), text.rfind("\r", 0, pos)) + 1


def _indent_at(text: str, pos: int) -> str:
    start = _line_start(text, pos)
    m = re.match(r"[ \t]*", text[start:pos])
    return m.group(0) if m else ""


def _splice(text: str, edits: list[tuple[int, int, str]]) -> str:
    for start, end, new in sorted(edits, key=lambda e: (e[0], e[1]), reverse=True):
        text = text[:start] + new + text[end:]
    return text


def _append_line(text: str, line: str) -> str:
    eol = _eol_of(text)
    if text and not text.endswith(("\n", "\r")):
        text += eol
    return text + line + eol


# =============================================================================================
# properties (Java .properties, also used by eggs for .env/.txt/.cfg files)


def _prop_unescape(s: str) -> str:
    out = []
    i = 0
    while i < len(s):
        c = s[i]
        if c != "\\" or i + 1 >= len(s):
            out.append(c)
            i += 1
            continue
        n = s[i + 1]
        if n == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", s[i + 2:i + 6] or ""):
            out.append(chr(int(s[i + 2:i + 6], 16)))
            i += 6
            continue
        out.append({"t": "\t", "n": "\n", "r": "\r", "f": "\f"}.get(n, n))
        i += 2
    joined = "".join(out)
    try:  # surrogate pairs written as two \\u escapes
        return joined.encode("utf-16", "surrogatepass").decode("utf-16")
    except UnicodeDecodeError:
        return joined


def _prop_escape(s: str, *, key: bool = False) -> str:
    out = []
    for i, ch in enumerate(s):
        o = ord(ch)
        if ch == "\\":
            out.append("\\\\")
        elif ch in "\t\n\r\f":
            out.append({"\t": "\\t", "\n": "\\n", "\r": "\\r", "\f": "\\f"}[ch])
        elif ch == " " and (key or i == 0):
            out.append("\\ ")
        elif key and ch in "=:#!":
            out.append("\\" + ch)
        elif o < 0x20 or o == 0x7F or o > 0x7E:
            # as Wings writes them: non-ASCII as \\uXXXX (UTF-16 units)
            for unit in ch.encode("utf-16-be", "surrogatepass").hex(" ", 2).split():
                out.append("\\u" + unit)
        else:
            out.append(ch)
    return "".join(out)


@dataclass
class _PropEntry:
    key: str  # unescaped
    value_start: int
    value_end: int  # content end of the last physical line
    raw_value: str
    sep: str


def _prop_entries(text: str) -> list[_PropEntry]:
    lines = _lines(text)
    out: list[_PropEntry] = []
    i = 0
    while i < len(lines):
        s, ce, _ = lines[i]
        content = text[s:ce]
        stripped = content.lstrip(" \t\f")
        if not stripped or stripped[0] in "#!":
            i += 1
            continue
        # logical line: continue while the physical line ends in an odd number of backslashes
        last = i
        while True:
            ls, lce, _ = lines[last]
            tail = len(text[ls:lce]) - len(text[ls:lce].rstrip("\\"))
            if tail % 2 == 1 and last + 1 < len(lines):
                last += 1
                continue
            break
        logical_end = lines[last][1]
        p = s + (len(content) - len(stripped))
        k0 = p
        while p < ce:
            ch = text[p]
            if ch == "\\":
                p += 2
                continue
            if ch in "=: \t\f":
                break
            p += 1
        p = min(p, ce)
        key_raw = text[k0:p]
        q = p
        while q < ce and text[q] in " \t\f":
            q += 1
        if q < ce and text[q] in "=:":
            q += 1
            while q < ce and text[q] in " \t\f":
                q += 1
        raw_value = text[q:logical_end]
        value = re.sub(r"\\(\r\n|\r|\n)[ \t\f]*", "", raw_value)
        out.append(_PropEntry(_prop_unescape(key_raw), q, logical_end, _prop_unescape(value), text[p:q]))
        i = last + 1
    return out


def rewrite_properties(text: str, reps: Sequence[Replacement]) -> tuple[str, list[str]]:
    """Set keys in a Java properties file, keeping comments, order and everything else."""
    notes: list[str] = []
    for rep in reps:
        entries = _prop_entries(text)
        found = [e for e in entries if e.key == rep.match]
        if not found:
            if rep.if_value:
                continue
            sep = next((e.sep for e in entries if "=" in e.sep or ":" in e.sep), "=") if entries else "="
            text = _append_line(text, _prop_escape(rep.match, key=True) + sep + _prop_escape(_as_text(rep.value)))
            notes.append(f"{rep.match}: added")
            continue
        edits = []
        for e in found:
            do, value = _apply_if_value(rep, e.raw_value, True)
            if do:
                edits.append((e.value_start, e.value_end, _prop_escape(_as_text(value))))
        text = _splice(text, edits)
    return text, notes


# =============================================================================================
# ini


def _ini_path(match: str) -> tuple[str, str]:
    """Wings' split: the first dot outside brackets separates section and key."""
    path: list[str] = []
    cur: list[str] = []
    depth = 0
    for c in match:
        if c == "[":
            depth += 1
        elif c == "]":
            depth -= 1
        elif c == "." and depth <= 0 and not path:
            path.append("".join(cur))
            cur = []
        else:
            cur.append(c)
    path.append("".join(cur))
    if len(path) == 2:
        return path[0], path[1]
    return "", path[0]


_INI_SECTION = re.compile(r"[ \t]*\[([^\]\r\n]*)\][ \t]*(?:[;#].*)?")
_INI_KEY = re.compile(r"([ \t]*)([^=:;#\s\[][^=:]*?)([ \t]*[=:][ \t]*)(.*)")


@dataclass
class _IniLine:
    kind: str  # "section", "key", "other"
    start: int
    end: int  # content end
    section: str
    key: str = ""
    value_start: int = 0
    sep: str = ""


def _ini_lines(text: str) -> list[_IniLine]:
    out = []
    section = ""
    for s, ce, _ in _lines(text):
        content = text[s:ce]
        m = _INI_SECTION.fullmatch(content)
        if m:
            section = m.group(1).strip()
            out.append(_IniLine("section", s, ce, section))
            continue
        m = _INI_KEY.fullmatch(content)
        if m and m.group(2).strip():
            out.append(_IniLine("key", s, ce, section, m.group(2).strip(), s + m.end(3), m.group(3)))
            continue
        out.append(_IniLine("other", s, ce, section))
    return out


def _ini_value_text(value: Any, old: str) -> str:
    """The value as written: quoted when the old value was and the new one brings no quotes."""
    v = re.sub(r"\r\n|[\r\n]", " ", _as_text(value))
    o = old.strip()
    already = len(v) >= 2 and v[0] == v[-1] == '"'
    if len(o) >= 2 and o[0] == o[-1] == '"' and not already:
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return v


def rewrite_ini(text: str, reps: Sequence[Replacement]) -> tuple[str, list[str]]:
    """Set `section.key` (or a key before any section) in an INI file, keeping the rest."""
    notes: list[str] = []
    for rep in reps:
        section, key = _ini_path(rep.match)
        lines = _ini_lines(text)
        hits = [ln for ln in lines if ln.kind == "key" and ln.section == section and ln.key == key]
        if not hits:  # games usually read INI case-insensitively
            hits = [ln for ln in lines if ln.kind == "key" and ln.section.lower() == section.lower()
                    and ln.key.lower() == key.lower()]
        if hits:
            edits = []
            for ln in hits:
                old = text[ln.value_start:ln.end]
                cur = old.strip()
                if len(cur) >= 2 and cur[0] == cur[-1] == '"':
                    cur = cur[1:-1]
                do, value = _apply_if_value(rep, cur, True)
                if do:
                    edits.append((ln.value_start, ln.end, _ini_value_text(value, old)))
            text = _splice(text, edits)
            continue
        if rep.if_value:
            continue
        seps = [ln.sep for ln in lines if ln.kind == "key" and ln.section == section] or \
               [ln.sep for ln in lines if ln.kind == "key"] or ["="]
        new_line = key + seps[0] + _ini_value_text(rep.value, "")
        eol = _eol_of(text)
        headers = [ln for ln in lines if ln.kind == "section" and ln.section == section] or \
                  [ln for ln in lines if ln.kind == "section" and ln.section.lower() == section.lower()]
        if section and not headers:
            if text.strip():
                text = _append_line(text, "") + f"[{section}]" + eol + new_line + eol
            else:
                text = f"[{section}]" + eol + new_line + eol
            notes.append(f"{rep.match}: added with a new section [{section}]")
            continue
        if section:
            # after the last key of the section's last block (or after its header)
            header = headers[-1]
            nxt = next((ln for ln in lines if ln.kind == "section" and ln.start > header.start), None)
            block = [ln for ln in lines if ln.start > header.start and (nxt is None or ln.start < nxt.start)]
            anchor = ([ln for ln in block if ln.kind == "key"] or [header])[-1]
        else:
            first = next((ln for ln in lines if ln.kind == "section"), None)
            keys = [ln for ln in lines if ln.kind == "key" and (first is None or ln.start < first.start)]
            if not keys:
                text = new_line + eol + text
                notes.append(f"{rep.match}: added")
                continue
            anchor = keys[-1]
        _, ce, e = next(t for t in _lines(text) if t[0] == anchor.start)
        if e == ce:  # the last line, without a line break
            text = text[:ce] + eol + new_line + text[ce:]
        else:
            text = text[:e] + new_line + eol + text[e:]
        notes.append(f"{rep.match}: added")
    return text, notes


# =============================================================================================
# file (line prefix)


def rewrite_file(text: str, reps: Sequence[Replacement]) -> tuple[str, list[str]]:
    """Replace each whole line that starts with a `match` by the replacement's value.

    As Wings' `file` parser, except that when several matches fit a line the longest wins
    (Wings writes all of them), line endings are kept, and an empty match is ignored.
    """
    notes: list[str] = []
    usable = [r for r in reps if r.match]
    if len(usable) != len(reps):
        notes.append("an empty match was ignored")
    out: list[str] = []
    for s, ce, e in _lines(text):
        line = text[s:ce]
        best = None
        for r in usable:
            if line.startswith(r.match) and (best is None or len(r.match) > len(best.match)):
                best = r
        out.append((_as_text(best.value) if best else line) + text[ce:e])
    return "".join(out), notes


# =============================================================================================
# Path handling shared by JSON and YAML

_INDEXED = re.compile(r"(.*?)((?:\[\d+\])+)")


def _split_path(match: str) -> list[str | int]:
    out: list[str | int] = []
    for part in match.split("."):
        part = part.replace("~1", ".").replace("~0", "~")
        m = _INDEXED.fullmatch(part)
        if m and m.group(1):
            out.append(m.group(1))
            out.extend(int(x) for x in re.findall(r"\[(\d+)\]", m.group(2)))
        elif m:
            out.extend(int(x) for x in re.findall(r"\[(\d+)\]", m.group(2)))
        else:
            out.append(part)
    return out


class _Tree:
    """Adapter over a parsed document for path resolution."""

    def kind(self, node: Any) -> str:  # "map", "seq", "scalar"
        raise NotImplementedError

    def get(self, node: Any, key: str) -> Any:
        raise NotImplementedError

    def children(self, node: Any) -> list[Any]:
        raise NotImplementedError


def _resolve(tree: _Tree, root: Any, segs: list[str | int]) -> tuple[list[Any], list[tuple[Any, list[str | int]]], list[str]]:
    """Find targets: (existing nodes, (mapping, missing path) to create, problems)."""
    found: list[Any] = []
    create: list[tuple[Any, list[str | int]]] = []
    problems: list[str] = []

    def walk(node: Any, i: int) -> None:
        if i == len(segs):
            found.append(node)
            return
        seg = segs[i]
        kind = tree.kind(node)
        if seg == "*":
            if kind in ("map", "seq"):
                for c in tree.children(node):
                    walk(c, i + 1)
            return
        if kind == "map":
            key = str(seg)
            child = tree.get(node, key)
            if child is not None:
                walk(child, i + 1)
                return
            # a literal key holding dots ("a.b": …)
            for k in range(len(segs), i + 1, -1):
                part = segs[i:k]
                if all(isinstance(p, str) and p != "*" for p in part):
                    child = tree.get(node, ".".join(str(p) for p in part))
                    if child is not None:
                        walk(child, k)
                        return
            rest = segs[i:]
            if "*" in rest:
                return
            create.append((node, rest))
            return
        if kind == "seq":
            if isinstance(seg, int) or (isinstance(seg, str) and seg.isdigit()):
                items = tree.children(node)
                idx = int(seg)
                if idx < len(items):
                    walk(items[idx], i + 1)
                else:
                    problems.append(f"index {idx} is past the end of the list")
                return
            problems.append(f"`{seg}` is looked up in a list")
            return
        problems.append(f"cannot look up `{seg}` inside a {kind}")

    walk(root, 0)
    return found, create, problems


def _nested(segs: list[str | int], leaf: Any) -> Any:
    """The data to create for a missing path below an existing mapping."""
    value = leaf
    for seg in reversed(segs[1:]):
        if isinstance(seg, int):
            if seg != 0:
                raise ConfigFileError(f"cannot create list element {seg} (only [0])")
            value = [value]
        else:
            value = {seg: value}
    return value


# =============================================================================================
# JSON (in place)


class _J:
    __slots__ = ("kind", "start", "end", "value", "members", "items")

    def __init__(self, kind: str, start: int):
        self.kind = kind  # "map", "seq", "scalar"
        self.start = start
        self.end = start
        self.value: Any = None
        self.members: list[tuple[str, int, int, _J]] = []  # key, key start, key end, node
        self.items: list[_J] = []


_J_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?")


class _JsonParser:
    """JSON with positions; also reads // and /* */ comments and trailing commas."""

    def __init__(self, text: str):
        self.t = text

    def err(self, pos: int, msg: str) -> ConfigFileError:
        line = self.t.count("\n", 0, pos) + 1
        col = pos - self.t.rfind("\n", 0, pos)
        return ConfigFileError(f"invalid JSON at line {line} column {col}: {msg}")

    def ws(self, i: int) -> int:
        t, n = self.t, len(self.t)
        while i < n:
            c = t[i]
            if c in " \t\r\n\ufeff":
                i += 1
            elif c == "/" and i + 1 < n and t[i + 1] == "/":
                j = t.find("\n", i)
                i = n if j < 0 else j + 1
            elif c == "/" and i + 1 < n and t[i + 1] == "*":
                j = t.find("*/", i + 2)
                if j < 0:
                    raise self.err(i, "unterminated comment")
                i = j + 2
            else:
                break
        return i

    def parse(self) -> _J | None:
        i = self.ws(0)
        if i >= len(self.t):
            return None
        node, i = self.value(i, 0)
        i = self.ws(i)
        if i != len(self.t):
            raise self.err(i, "extra data after the document")
        return node

    def string(self, i: int) -> tuple[str, int]:
        try:
            return scanstring(self.t, i + 1, True)
        except ValueError as e:
            raise self.err(i, str(e)) from None

    def value(self, i: int, depth: int) -> tuple[_J, int]:
        if depth > _MAX_JSON_DEPTH:
            raise self.err(i, "nested too deeply")
        t = self.t
        if i >= len(t):
            raise self.err(i, "unexpected end")
        c = t[i]
        if c == "{":
            node = _J("map", i)
            i = self.ws(i + 1)
            while i < len(t) and t[i] != "}":
                if t[i] != '"':
                    raise self.err(i, "expected a key")
                ks = i
                key, i = self.string(i)
                ke = i
                i = self.ws(i)
                if i >= len(t) or t[i] != ":":
                    raise self.err(i, "expected ':'")
                child, i = self.value(self.ws(i + 1), depth + 1)
                node.members.append((key, ks, ke, child))
                i = self.ws(i)
                if i < len(t) and t[i] == ",":
                    i = self.ws(i + 1)
                elif i < len(t) and t[i] != "}":
                    raise self.err(i, "expected ',' or '}'")
            if i >= len(t):
                raise self.err(i, "unterminated object")
            node.end = i + 1
            return node, i + 1
        if c == "[":
            node = _J("seq", i)
            i = self.ws(i + 1)
            while i < len(t) and t[i] != "]":
                child, i = self.value(i, depth + 1)
                node.items.append(child)
                i = self.ws(i)
                if i < len(t) and t[i] == ",":
                    i = self.ws(i + 1)
                elif i < len(t) and t[i] != "]":
                    raise self.err(i, "expected ',' or ']'")
            if i >= len(t):
                raise self.err(i, "unterminated array")
            node.end = i + 1
            return node, i + 1
        node = _J("scalar", i)
        if c == '"':
            node.value, i = self.string(i)
        elif t.startswith("true", i):
            node.value, i = True, i + 4
        elif t.startswith("false", i):
            node.value, i = False, i + 5
        elif t.startswith("null", i):
            node.value, i = None, i + 4
        else:
            m = _J_NUMBER.match(t, i)
            if not m:
                raise self.err(i, "unexpected character")
            node.value = json.loads(m.group(0))
            i = m.end()
        node.end = i
        return node, i


class _JTree(_Tree):
    def kind(self, node: _J) -> str:
        return node.kind

    def get(self, node: _J, key: str) -> _J | None:
        hit = None
        for k, _, _, child in node.members:
            if k == key:
                hit = child
        return hit

    def children(self, node: _J) -> list[_J]:
        return [m[3] for m in node.members] if node.kind == "map" else list(node.items)


def _json_indent_unit(text: str) -> str:
    for s, ce, _ in _lines(text):
        m = re.match(r"([ \t]+)[\"{\[\]}\w-]", text[s:ce])
        if m:
            return m.group(1)
    return "    "


def _json_dump(value: Any, indent: str, base: str, eol: str) -> str:
    if isinstance(value, (dict, list)) and value:
        s = json.dumps(value, ensure_ascii=False, indent=indent)
        return s.replace("\n", eol + base)
    return json.dumps(value, ensure_ascii=False)


def _json_insert(text: str, node: _J, segs: list[str | int], leaf: Any) -> str:
    key = str(segs[0])
    data = _nested(segs, leaf)
    eol = _eol_of(text)
    unit = _json_indent_unit(text)
    own = _indent_at(text, node.start)
    if node.members:
        k0, ks0, ke0, v0 = node.members[0]
        sep = text[ke0:v0.start]
        between = text[node.start + 1:ks0]
        multiline = "\n" in between or "\r" in between
        member_indent = _indent_at(text, ks0) if multiline else ""
        last = node.members[-1][3]
        member = json.dumps(key, ensure_ascii=False) + sep + _json_dump(data, unit, member_indent, eol)
        j = _JsonParser(text).ws(last.end)
        if j < len(text) and text[j] == ",":  # a trailing comma already there
            return text[:j + 1] + (eol + member_indent if multiline else " ") + member + "," + text[j + 1:]
        return text[:last.end] + "," + (eol + member_indent if multiline else " ") + member + text[last.end:]
    inner = own + unit
    member = json.dumps(key, ensure_ascii=False) + ": " + _json_dump(data, unit, inner, eol)
    return text[:node.start + 1] + eol + inner + member + eol + own + text[node.end - 1:]


def rewrite_json(text: str, reps: Sequence[Replacement]) -> tuple[str, list[str]]:
    """Set values at key paths in a JSON document, keeping its formatting and order."""
    notes: list[str] = []
    bom = text.startswith("\ufeff")
    if bom:
        text = text[1:]
    for rep in reps:
        root = _JsonParser(text).parse()
        if root is None:  # empty (or only comments): start an object
            if rep.if_value:
                continue
            text = (text.rstrip() + _eol_of(text) if text.strip() else "") + "{}" + _eol_of(text)
            root = _JsonParser(text).parse()
            assert root is not None
        segs = _split_path(rep.match)
        found, create, problems = _resolve(_JTree(), root, segs)
        notes.extend(f"{rep.match}: {p}" for p in problems)
        edits = []
        for node in found:
            current = node.value if node.kind == "scalar" else None
            do, value = _apply_if_value(rep, current if node.kind == "scalar" else text[node.start:node.end], True)
            if not do:
                continue
            new = _typed(value, current if node.kind == "scalar" else _NO_EXISTING)
            edits.append((node.start, node.end, json.dumps(new, ensure_ascii=False)))
        text = _splice(text, edits)
        if create and not rep.if_value:
            # one insert at a time, re-parsing in between (positions move)
            for _ in range(len(create)):
                root = _JsonParser(text).parse()
                _, create_now, _ = _resolve(_JTree(), root, segs)
                if not create_now:
                    break
                node, rest = create_now[0]
                try:
                    text = _json_insert(text, node, rest, _typed(rep.value))
                except ConfigFileError as e:
                    notes.append(f"{rep.match}: {e}")
                    break
                notes.append(f"{rep.match}: added")
    return ("\ufeff" if bom else "") + text, notes


# =============================================================================================
# YAML (in place, using PyYAML's node positions)


class _YTree(_Tree):
    def kind(self, node: Any) -> str:
        if isinstance(node, yaml.MappingNode):
            return "map"
        if isinstance(node, yaml.SequenceNode):
            return "seq"
        return "scalar"

    def get(self, node: Any, key: str) -> Any:
        hit = None
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode) and k.value == key:
                hit = v
        return hit

    def children(self, node: Any) -> list[Any]:
        if isinstance(node, yaml.MappingNode):
            return [v for _, v in node.value]
        return list(node.value)


_YAML_STR = "tag:yaml.org,2002:str"
_RESOLVER = yaml.resolver.Resolver()


def _yaml_existing(node: Any) -> Any:
    if not isinstance(node, yaml.ScalarNode):
        return _NO_EXISTING
    if node.style in ("'", '"', "|", ">"):
        return node.value
    try:
        return yaml.SafeLoader("").construct_object(node, deep=True)
    except Exception:
        return node.value


def _yaml_plain_ok(s: str, flow: bool) -> bool:
    if not s or s != s.strip() or any(ch in s for ch in "\r\n\t") or not s.isprintable():
        return False
    if s[0] in "-?:,[]{}#&*!|>'\"%@`" or ": " in s or " #" in s or s.endswith(":"):
        return False
    if flow and any(ch in s for ch in ",[]{}"):
        return False
    return _RESOLVER.resolve(yaml.ScalarNode, s, (True, False)) == _YAML_STR


def _yaml_scalar(value: Any, *, style: str | None = None, flow: bool = False) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value:
            return ".nan"
        if value in (float("inf"), float("-inf")):
            return ".inf" if value > 0 else "-.inf"
        return repr(value)
    if not isinstance(value, str):
        return json.dumps(value, ensure_ascii=True)
    if style == "'" and "\n" not in value and "\r" not in value and value.isprintable():
        return "'" + value.replace("'", "''") + "'"
    if style != '"' and _yaml_plain_ok(value, flow):
        return value
    return _yaml_dq(value)


_YAML_PRINTABLE = re.compile("[\t\n\r\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _yaml_dq(s: str) -> str:
    """A YAML double-quoted scalar (JSON escapes, plus escapes for what YAML forbids raw)."""
    out = []
    for ch in json.dumps(s, ensure_ascii=False)[1:-1]:
        if _YAML_PRINTABLE.fullmatch(ch):
            out.append(ch)
        else:
            o = ord(ch)
            out.append(f"\\u{o:04x}" if o <= 0xFFFF else f"\\U{o:08x}")
    return '"' + "".join(out) + '"'


def _yaml_key(key: str, flow: bool = False) -> str:
    return key if _yaml_plain_ok(key, flow) else _yaml_dq(key)


def _yaml_end(node: Any, text: str) -> int:
    """Where a node's own text ends (not counting trailing comments or blank lines)."""
    if isinstance(node, yaml.ScalarNode):
        end = node.end_mark.index
        if node.style in ("|", ">"):
            while end > node.start_mark.index + 1 and text[end - 1] in " \t\r\n":
                end -= 1
        return end
    if getattr(node, "flow_style", False) or not node.value:
        return node.end_mark.index
    last = node.value[-1]
    return _yaml_end(last[1] if isinstance(node, yaml.MappingNode) else last, text)


def _yaml_block(data: Any, indent: str, unit: str, eol: str) -> str:
    """Block YAML for `data` (a value after `key:`), starting right after the colon."""
    if isinstance(data, dict) and data:
        parts = []
        for k, v in data.items():
            parts.append(eol + indent + _yaml_key(str(k)) + ":" + _yaml_block(v, indent + unit, unit, eol))
        return "".join(parts)
    if isinstance(data, list) and data:
        parts = []
        for v in data:
            if isinstance(v, dict) and v:
                inner = _yaml_block(v, indent + "  ", unit, eol)
                parts.append(eol + indent + "- " + inner[len(eol) + len(indent) + 2:])
            else:
                parts.append(eol + indent + "-" + _yaml_block(v, indent + unit, unit, eol))
        return "".join(parts)
    if isinstance(data, dict):
        return " {}"
    if isinstance(data, list):
        return " []"
    return " " + _yaml_scalar(data)


def _yaml_insert(text: str, node: Any, segs: list[str | int], leaf: Any) -> str:
    key = str(segs[0])
    data = _nested(segs, leaf)
    eol = _eol_of(text)
    unit = "  "
    if node is None:  # empty document
        body = _yaml_key(key) + ":" + _yaml_block(data, unit, unit, eol)
        return _append_line(text, body)
    if node.flow_style:
        flow_value = json.dumps(data, ensure_ascii=True) if isinstance(data, (dict, list)) \
            else _yaml_scalar(data, flow=True)
        member = _yaml_key(key, True) + ": " + flow_value
        close = node.end_mark.index - 1
        if node.value:
            last_end = _yaml_end(node.value[-1][1], text)
            return text[:last_end] + ", " + member + text[last_end:]
        return text[:close] + member + text[close:]
    col = node.value[0][0].start_mark.column
    indent = " " * col
    # nested mappings in this file: guess the indentation step from the first nested key
    for _, v in node.value:
        if isinstance(v, yaml.MappingNode) and not v.flow_style and v.value:
            step = v.value[0][0].start_mark.column - col
            if step > 0:
                unit = " " * step
            break
    entry = indent + _yaml_key(key) + ":" + _yaml_block(data, indent + unit, unit, eol)
    end = _yaml_end(node.value[-1][1], text)
    line_end = end
    while line_end < len(text) and text[line_end] not in "\r\n":
        line_end += 1
    return text[:line_end] + eol + entry + text[line_end:]


def _yaml_root(text: str) -> Any:
    try:
        docs = yaml.compose_all(text, Loader=yaml.SafeLoader)
        return next(iter(docs), None)
    except yaml.YAMLError as e:
        raise ConfigFileError(f"invalid YAML: {e}") from None


def _in_flow(root: Any, target: Any) -> bool:
    """Whether `target` sits inside a flow collection."""
    stack = [(root, False)]
    seen = set()
    while stack:
        node, flow = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if node is target:
            return flow
        if isinstance(node, yaml.MappingNode):
            f = flow or bool(node.flow_style)
            for k, v in node.value:
                stack.append((v, f))
        elif isinstance(node, yaml.SequenceNode):
            f = flow or bool(node.flow_style)
            for v in node.value:
                stack.append((v, f))
    return False


def rewrite_yaml(text: str, reps: Sequence[Replacement]) -> tuple[str, list[str]]:
    """Set values at key paths in a YAML document (the first one), keeping the rest as is."""
    notes: list[str] = []
    for rep in reps:
        root = _yaml_root(text)
        segs = _split_path(rep.match)
        if root is None:
            if rep.if_value:
                continue
            try:
                text = _yaml_insert(text, None, segs, _typed(rep.value))
                notes.append(f"{rep.match}: added")
            except ConfigFileError as e:
                notes.append(f"{rep.match}: {e}")
            continue
        found, create, problems = _resolve(_YTree(), root, segs)
        notes.extend(f"{rep.match}: {p}" for p in problems)
        edits = []
        seen: set[int] = set()
        for node in found:
            if id(node) in seen:
                continue
            seen.add(id(node))
            existing = _yaml_existing(node)
            current = existing if existing is not _NO_EXISTING else None
            do, value = _apply_if_value(rep, current, isinstance(node, yaml.ScalarNode))
            if not do:
                continue
            new = _typed(value, existing)
            style = node.style if isinstance(node, yaml.ScalarNode) and node.style in ("'", '"') else None
            start = node.start_mark.index
            end = _yaml_end(node, text)
            scalar = _yaml_scalar(new, style=style, flow=_in_flow(root, node))
            if not isinstance(node, yaml.ScalarNode) and not node.flow_style:
                # a block collection replaced by a scalar: put it after the key's colon
                back = start
                while back > 0 and text[back - 1] in " \t\r\n":
                    back -= 1
                if back > 0 and text[back - 1] == ":":
                    start, scalar = back, " " + scalar
            edits.append((start, end, scalar))
        text = _splice(text, edits)
        if create and not rep.if_value:
            for _ in range(len(create)):
                root = _yaml_root(text)
                _, create_now, _ = _resolve(_YTree(), root, segs)
                if not create_now:
                    break
                node, rest = create_now[0]
                try:
                    text = _yaml_insert(text, node, rest, _typed(rep.value))
                except ConfigFileError as e:
                    notes.append(f"{rep.match}: {e}")
                    break
                notes.append(f"{rep.match}: added")
    return text, notes


# =============================================================================================
# XML (in place, using expat's byte positions)

_XML_ATTR_VALUE = re.compile(r"^\[(\w+)='(.*)'\]$", re.S)


class _X:
    __slots__ = ("tag", "start", "stag_end", "end_start", "end", "children", "self_closing")

    def __init__(self, tag: str, start: int, stag_end: int, self_closing: bool):
        self.tag = tag
        self.start = start
        self.stag_end = stag_end
        self.self_closing = self_closing
        self.end_start = stag_end
        self.end = stag_end
        self.children: list[_X] = []


def _tag_end(data: bytes, i: int) -> int:
    """Index just past the `>` closing the tag that starts at `i`."""
    quote = 0
    n = len(data)
    while i < n:
        c = data[i]
        if quote:
            if c == quote:
                quote = 0
        elif c in (0x22, 0x27):
            quote = c
        elif c == 0x3E:
            return i + 1
        i += 1
    return n


def _xml_parse(data: bytes) -> tuple[_X | None, str]:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ConfigFileError("UTF-16 XML files are not supported")
    p = xml.parsers.expat.ParserCreate()
    stack: list[_X] = []
    root: list[_X] = []
    enc = ["utf-8"]

    def start(name: str, attrs: Any) -> None:
        i = p.CurrentByteIndex
        e = _tag_end(data, i)
        node = _X(name, i, e, data[e - 2:e] == b"/>")
        if stack:
            stack[-1].children.append(node)
        else:
            root.append(node)
        stack.append(node)

    def end(name: str) -> None:
        node = stack.pop()
        if node.self_closing:
            node.end_start = node.end = node.stag_end
        else:
            i = p.CurrentByteIndex
            node.end_start = i
            node.end = _tag_end(data, i)

    def decl(version: str, encoding: str | None, standalone: int) -> None:
        if encoding:
            enc[0] = encoding

    p.StartElementHandler = start
    p.EndElementHandler = end
    p.XmlDeclHandler = decl
    try:
        p.Parse(data, True)
    except xml.parsers.expat.ExpatError as e:
        no_elements = xml.parsers.expat.errors.codes[xml.parsers.expat.errors.XML_ERROR_NO_ELEMENTS]
        if e.code == no_elements and not root:
            return None, enc[0]
        raise ConfigFileError(f"invalid XML: {e}") from None
    try:
        "".encode(enc[0])
    except LookupError:
        enc[0] = "utf-8"
    return (root[0] if root else None), enc[0]


_XML_BAD_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _xml_text(s: str) -> str:
    s = _XML_BAD_CHARS.sub("", s)
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _xml_attr(s: str, quote: str = '"') -> str:
    s = _xml_text(s)
    return s.replace('"', "&quot;") if quote == '"' else s.replace("'", "&apos;")


def _xml_line_indent(data: bytes, pos: int) -> bytes:
    start = data.rfind(b"\n", 0, pos) + 1
    m = re.match(rb"[ \t]*", data[start:pos])
    return m.group(0) if m else b""


def _xml_elem_text(tag: str, value: str | None, attr: tuple[str, str] | None) -> str:
    if attr:
        return f'<{tag} {attr[0]}="{_xml_attr(attr[1])}"/>'
    return f"<{tag}>{_xml_text(value or '')}</{tag}>"


def _xml_set(data: bytes, node: _X, value: str, enc: str) -> bytes:
    m = _XML_ATTR_VALUE.match(value)
    if m:
        name, val = m.group(1), m.group(2)
        stag = data[node.start:node.stag_end].decode(enc, "replace")
        am = re.search(r"(\s)(" + re.escape(name) + r")(\s*=\s*)(\"([^\"]*)\"|'([^']*)')", stag)
        if am:
            q = am.group(4)[0]
            new = am.group(1) + name + am.group(3) + q + _xml_attr(val, q) + q
            stag2 = stag[:am.start()] + new + stag[am.end():]
        else:
            e = len(stag) - 1
            if stag[e - 1] == "/":
                e -= 1
            while e > 0 and stag[e - 1] in " \t\r\n":
                e -= 1
            stag2 = stag[:e] + f' {name}="{_xml_attr(val)}"' + stag[e:]
        return data[:node.start] + stag2.encode(enc, "xmlcharrefreplace") + data[node.stag_end:]
    text = _xml_text(value).encode(enc, "xmlcharrefreplace")
    if node.self_closing:
        slash = data.rfind(b"/", node.start, node.stag_end)
        while data[slash - 1:slash] in (b" ", b"\t", b"\r", b"\n"):
            slash -= 1
        return data[:slash] + b">" + text + f"</{node.tag}>".encode(enc) + data[node.stag_end:]
    stop = node.children[0].start if node.children else node.end_start
    return data[:node.stag_end] + text + data[stop:]


def _xml_insert(data: bytes, parent: _X, missing: list[str], value: str, enc: str) -> bytes:
    m = _XML_ATTR_VALUE.match(value)
    attr = (m.group(1), m.group(2)) if m else None
    eol = b"\r\n" if b"\r\n" in data else b"\n"
    parent_indent = _xml_line_indent(data, parent.start)
    if parent.children:
        last = parent.children[-1]
        child_indent = _xml_line_indent(data, last.start)
    else:
        child_indent = parent_indent + b"  "
    # build the nested element text, innermost first
    inner = _xml_elem_text(missing[-1], value if not attr else None, attr)
    for i in range(len(missing) - 2, -1, -1):
        ind = (child_indent + b"  " * (i + 1)).decode(enc, "replace")
        outer_ind = (child_indent + b"  " * i).decode(enc, "replace")
        e = eol.decode()
        inner = f"<{missing[i]}>{e}{ind}{inner}{e}{outer_ind}</{missing[i]}>"
    new = inner.encode(enc, "xmlcharrefreplace")
    if parent.children:
        pos = parent.children[-1].end
        return data[:pos] + eol + child_indent + new + data[pos:]
    if parent.self_closing:
        slash = data.rfind(b"/", parent.start, parent.stag_end)
        while data[slash - 1:slash] in (b" ", b"\t", b"\r", b"\n"):
            slash -= 1
        return (data[:slash] + b">" + eol + child_indent + new + eol + parent_indent
                + f"</{parent.tag}>".encode(enc) + data[parent.stag_end:])
    content = data[parent.stag_end:parent.end_start]
    if not content.strip():
        return data[:parent.stag_end] + eol + child_indent + new + eol + parent_indent + data[parent.end_start:]
    return data[:parent.end_start] + new + data[parent.end_start:]


def _xml_find(node: _X, segs: list[str]) -> list[_X]:
    out = [node]
    for seg in segs:
        out = [c for n in out for c in n.children if seg == "*" or c.tag == seg]
    return out


def rewrite_xml(data: bytes, reps: Sequence[Replacement]) -> tuple[bytes, list[str]]:
    """Set element text (or an attribute, value `[name='v']`) at dotted paths in XML."""
    notes: list[str] = []
    for rep in reps:
        segs = rep.match.split(".")
        if not rep.match or any(not s for s in segs):
            notes.append(f"{rep.match!r}: not a path")
            continue
        value = _as_text(rep.value)
        root, enc = _xml_parse(data)
        if root is None:  # empty, or only a declaration/comments: create the root element
            if segs[0] == "*" or rep.if_value:
                notes.append(f"{rep.match}: the document has no root element")
                continue
            eol = b"\r\n" if b"\r\n" in data else b"\n"
            head = data.rstrip() + eol if data.strip(b" \t\r\n\xef\xbb\xbf") else b'<?xml version="1.0" encoding="utf-8"?>\n'
            element = _xml_elem_text(segs[0], value, None) if len(segs) == 1 else f"<{segs[0]}></{segs[0]}>"
            data = head + element.encode(enc, "xmlcharrefreplace") + eol
            if len(segs) == 1:
                notes.append(f"{rep.match}: added")
                continue
            root, enc = _xml_parse(data)
            assert root is not None
        if segs[0] not in ("*", root.tag):
            notes.append(f"{rep.match}: the root element is <{root.tag}>, not <{segs[0]}>")
            continue
        rest = segs[1:]
        if "*" not in rest and not rep.if_value:
            # create what is missing, as Wings does for paths without wildcards
            node, created = root, False
            for i, seg in enumerate(rest):
                nxt = next((c for c in node.children if c.tag == seg), None)
                if nxt is None:
                    try:
                        data = _xml_insert(data, node, rest[i:], value, enc)
                        notes.append(f"{rep.match}: added")
                    except UnicodeEncodeError as e:
                        notes.append(f"{rep.match}: {e}")
                    created = True
                    break
                node = nxt
            if created:
                continue
        targets = _xml_find(root, rest)
        for node in sorted(targets, key=lambda n: n.start, reverse=True):
            current = data[node.stag_end:node.end_start].decode(enc, "replace") if not node.children else ""
            do, new_value = _apply_if_value(rep, current, True)
            if do:
                data = _xml_set(data, node, _as_text(new_value), enc)
    return data, notes


# =============================================================================================
# Dispatch


def _decode(data: bytes) -> tuple[str, bool]:
    bom = data.startswith(b"\xef\xbb\xbf")
    return (data[3:] if bom else data).decode("utf-8", "surrogateescape"), bom


def _encode(text: str, bom: bool) -> bytes:
    return (b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8", "surrogateescape")


def rewrite(parser: str, data: bytes, reps: Sequence[Replacement]) -> tuple[bytes, list[str]]:
    """Rewrite file content `data` with `reps` (placeholders already resolved)."""
    parser = parser.lower()
    if parser == "xml":
        return rewrite_xml(data, reps)
    text, bom = _decode(data)
    fn = {
        "properties": rewrite_properties,
        "ini": rewrite_ini,
        "json": rewrite_json,
        "yaml": rewrite_yaml,
        "yml": rewrite_yaml,
        "file": rewrite_file,
    }.get(parser)
    if fn is None:
        raise ConfigFileError(f"unknown parser {parser!r}")
    new, notes = fn(text, reps)
    return _encode(new, bom), notes


# =============================================================================================
# Files


def _relative_parts(name: str, env: Mapping[str, str]) -> list[str]:
    if "{" in name:  # Pelican: variables in the file name
        for k, v in env.items():
            name = name.replace("{{" + k + "}}", v).replace("${" + k + "}", v)
    if "\0" in name:
        raise UnsafePath(f"{name!r}: NUL in the file name")
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    if not parts:
        raise UnsafePath(f"{name!r}: not a file name")
    if ".." in parts:
        raise UnsafePath(f"{name!r}: `..` is not allowed")
    return parts


_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


def _open_parent(root_fd: int, root_real: str, parts: list[str], create: bool,
                 owner: tuple[int, int] | None) -> tuple[int, str]:
    """Open the directory that holds the file; returns (dir fd, final name).

    Symlinks are resolved and must stay inside the root; the walk itself never follows one,
    so a symlink swapped in afterwards makes it fail rather than escape.
    """
    joined = os.path.join(root_real, *parts)
    real = os.path.realpath(joined)
    if real != root_real and not real.startswith(root_real.rstrip(os.sep) + os.sep):
        raise UnsafePath(f"{'/'.join(parts)}: resolves outside the data directory")
    rel = os.path.relpath(real, root_real)
    rparts = [p for p in rel.split(os.sep) if p not in ("", ".")]
    if not rparts or ".." in rparts:
        raise UnsafePath(f"{'/'.join(parts)}: not a file inside the data directory")
    fd = os.dup(root_fd)
    try:
        for comp in rparts[:-1]:
            try:
                nfd = os.open(comp, _OPEN_DIR, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                os.mkdir(comp, 0o755, dir_fd=fd)
                nfd = os.open(comp, _OPEN_DIR, dir_fd=fd)
                try:
                    os.fchown(nfd, *(owner or _dir_owner(fd)))
                except PermissionError:
                    pass
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise UnsafePath(f"{'/'.join(parts)}: {comp} is not a directory inside the data directory") from None
                raise
            os.close(fd)
            fd = nfd
        return fd, rparts[-1]
    except BaseException:
        os.close(fd)
        raise


def _write_atomic(dir_fd: int, name: str, data: bytes, mode: int, owner: tuple[int, int] | None) -> None:
    tmp = f".{name[:200]}.roost-{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0),
                 0o600, dir_fd=dir_fd)
    try:
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            os.fchmod(fd, stat.S_IMODE(mode))
            if owner is not None:
                st = os.fstat(fd)
                if (st.st_uid, st.st_gid) != owner:
                    try:
                        os.fchown(fd, *owner)
                    except PermissionError:
                        pass  # not root: the file stays ours, as the original was
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        try:
            os.unlink(tmp, dir_fd=dir_fd)
        except OSError:
            pass
        raise
    try:
        os.fsync(dir_fd)
    except OSError:
        pass


def _resolve_replacements(cf: ConfigFile, structure: Mapping[str, Any], env: Mapping[str, str],
                          node_config: Any) -> list[Replacement]:
    single = cf.parser in ("file", "ini")

    def fn(s: str) -> str:
        return substitute_placeholders(s, structure=structure, environment=env, node_config=node_config,
                                       single_line=single)

    return [Replacement(r.match, _substitute_tree(r.value, fn), r.if_value) for r in cf.replace]


def apply_config_files(
    data_dir: str | os.PathLike[str],
    configs: Any,
    *,
    settings: Any,
    node_config: Any = None,
    owner: tuple[int, int] | None = None,
) -> list[FileResult]:
    """Rewrite the configured files inside `data_dir` before a start. Blocking I/O.

    Args:
        data_dir: the server's data directory.
        configs: `process_configuration.configs` (Wings shape) or an egg's `config.files`.
        settings: the server's definition/settings (for `{{server.…}}`/`{{env.…}}`).
        node_config: the node's config as a nested mapping for `{{config.…}}`, e.g.
            `{"docker": {"network": {"interface": "172.18.0.1"}}}`.
        owner: (uid, gid) for files and directories this creates; default: the owner of the
            directory they are created in.

    Returns one result per config file (malformed entries first); a failure in one file
    never stops the others and nothing is raised for file problems (see
    `FileResult.status`/`detail`). Raises OSError only when `data_dir` cannot be opened.
    Call it from a thread (`asyncio.to_thread`): it reads, writes and fsyncs.
    """
    files, problems = parse_configs(configs)
    results = [FileResult(p.split(":")[0], "?", "error", p) for p in problems]
    if not files:
        return results
    structure = placeholder_structure(settings)
    env = structure["environment"]
    root_real = os.path.realpath(os.fspath(data_dir))
    root_fd = os.open(root_real, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
    try:
        for cf in files:
            res = FileResult(cf.file, cf.parser, "error")
            results.append(res)
            try:
                _apply_one(root_fd, root_real, cf, _resolve_replacements(cf, structure, env, node_config), env, owner, res)
            except UnsafePath as e:
                res.status, res.detail = "error", str(e)
            except ConfigFileError as e:
                res.status, res.detail = "error", str(e)
            except OSError as e:
                res.status, res.detail = "error", f"{e.strerror or e}"
            except (RecursionError, ValueError, UnicodeError) as e:
                res.status, res.detail = "error", str(e)
    finally:
        os.close(root_fd)
    return results


def _apply_one(root_fd: int, root_real: str, cf: ConfigFile, reps: list[Replacement],
               env: Mapping[str, str], owner: tuple[int, int] | None, res: FileResult) -> None:
    parts = _relative_parts(cf.file, env)
    create = cf.parser != "file" and cf.create_file
    try:
        dir_fd, name = _open_parent(root_fd, root_real, parts, create, owner)
    except FileNotFoundError:
        res.status, res.detail = "skipped", "its directory does not exist"
        return
    try:
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0),
                         dir_fd=dir_fd)
        except FileNotFoundError:
            fd = -1
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise UnsafePath(f"{cf.file}: is a symlink") from None
            raise
        if fd < 0:
            if not create:
                res.status, res.detail = "skipped", "does not exist"
                return
            old = b""
            mode = 0o644
            new_owner = owner or _dir_owner(dir_fd)
            created = True
        else:
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):
                    raise ConfigFileError(f"{cf.file}: not a regular file")
                if st.st_size > MAX_CONFIG_FILE_BYTES:
                    raise ConfigFileError(f"{cf.file}: larger than {MAX_CONFIG_FILE_BYTES} bytes, left alone")
                chunks = []
                while True:
                    b = os.read(fd, 1 << 20)
                    if not b:
                        break
                    chunks.append(b)
                old = b"".join(chunks)
                mode = st.st_mode
                new_owner = (st.st_uid, st.st_gid)
            finally:
                os.close(fd)
            created = False
        new, notes = rewrite(cf.parser, old, reps)
        res.notes = notes
        if new == old and not created:
            res.status = "unchanged"
            return
        _write_atomic(dir_fd, name, new, mode, new_owner)
        res.status = "created" if created else "updated"
    finally:
        os.close(dir_fd)


def _dir_owner(dir_fd: int) -> tuple[int, int]:
    st = os.fstat(dir_fd)
    return st.st_uid, st.st_gid
