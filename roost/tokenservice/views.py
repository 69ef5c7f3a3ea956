"""Client API documents (the panel's transformers) and request validation. Pure functions.

Envelopes (http-api §3): item `{"object":<type>,"attributes":{…}}`; list `{"object":"list",
"data":[…],"meta":{"pagination":{…}}}`.
"""
from __future__ import annotations

import math
import re
from typing import Any
from urllib.parse import urlencode

from . import errors as E
from .access import POWER_SIGNALS, STARTUP_READ, has
from .store import Node, ServerRecord, User

DEFAULT_PER_PAGE = 50
MAX_PER_PAGE = 100
LIST_TYPES = ("owner", "admin", "admin-all")


def item(obj: str, attributes: dict[str, Any], meta: dict[str, Any] | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {"object": obj, "attributes": attributes}
    if meta is not None:
        doc["meta"] = meta
    return doc


def list_of(data: list[dict[str, Any]], pagination: dict[str, Any] | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {"object": "list", "data": data}
    if pagination is not None:
        doc["meta"] = {"pagination": pagination}
    return doc


def pagination(*, total: int, count: int, per_page: int, page: int, url: str, query: dict[str, str]) -> dict[str, Any]:
    """Fractal's pagination block; `links` holds `previous`/`next` URLs when they exist."""
    total_pages = max(1, math.ceil(total / per_page)) if per_page else 1
    links: dict[str, str] = {}

    def page_url(n: int) -> str:
        q = {k: v for k, v in query.items() if k != "page"}
        q["page"] = str(n)
        return f"{url}?{urlencode(q)}"

    if page > 1:
        links["previous"] = page_url(page - 1)
    if page < total_pages:
        links["next"] = page_url(page + 1)
    return {"total": total, "count": count, "per_page": per_page, "current_page": page,
            "total_pages": total_pages, "links": links}


def account(user: User) -> dict[str, Any]:
    return item("user", {
        "id": user.id,
        "admin": user.admin,
        "username": user.username,
        "email": user.email,
        "first_name": user.first_name,
        "last_name": user.last_name,
        "language": user.language,
    })


def _status(server: ServerRecord) -> str | None:
    if server.suspended:
        return "suspended"
    return server.status


_VAR = re.compile(r"\{\{\s*([A-Za-z0-9_.]+)\s*\}\}")


def invocation(server: ServerRecord, settings: dict[str, Any], *, hide_values: bool) -> str:
    """The startup command with values filled in, as the panel shows it: the memory, ip and
    port always; the variables only to users who may read the startup settings."""
    build = settings.get("build") or {}
    default = (settings.get("allocations") or {}).get("default") or {}
    fixed = {"SERVER_MEMORY": str(build.get("memory_limit", 0)), "SERVER_IP": str(default.get("ip", "")),
             "SERVER_PORT": str(default.get("port", ""))}
    env = settings.get("environment") or {}

    def repl(m: re.Match[str]) -> str:
        name = m.group(1)
        if name.startswith("env."):
            name = name[4:]
        if name in fixed:
            return fixed[name]
        if name in env:
            if hide_values:
                return "[hidden]"
            v = env[name]
            return "" if v is None else str(v).lower() if isinstance(v, bool) else str(v)
        return m.group(0)

    return _VAR.sub(repl, str(settings.get("invocation") or ""))


def _allocations(settings: dict[str, Any]) -> list[dict[str, Any]]:
    allocations = settings.get("allocations") or {}
    default = allocations.get("default") or {}
    d_ip, d_port = str(default.get("ip", "0.0.0.0")), int(default.get("port", 0) or 0)
    pairs: list[tuple[str, int]] = [(d_ip, d_port)]
    for ip, ports in sorted((allocations.get("mappings") or {}).items()):
        for port in ports or []:
            if (str(ip), int(port)) not in pairs:
                pairs.append((str(ip), int(port)))
    return [
        item("allocation", {"id": i + 1, "ip": ip, "ip_alias": None, "port": port, "notes": None,
                            "is_default": (ip, port) == (d_ip, d_port)})
        for i, (ip, port) in enumerate(pairs)
    ]


def _variables(settings: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for name, value in (settings.get("environment") or {}).items():
        shown = "" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
        out.append(item("egg_variable", {
            "name": name, "description": "", "env_variable": name, "default_value": shown,
            "server_value": shown, "is_editable": False, "rules": "nullable|string",
        }))
    return out


def server_attributes(server: ServerRecord, node: Node, user: User, permissions: list[str]) -> dict[str, Any]:
    """Attributes S of a server for `user` (the panel's client ServerTransformer)."""
    settings = server.definition.get("settings") or {}
    build = settings.get("build") or {}
    egg = settings.get("egg") or {}
    can_read_startup = has(permissions, STARTUP_READ)
    oom_disabled = build.get("oom_disabled")
    if oom_disabled is None and "oom_killer" in build:
        oom_disabled = not bool(build.get("oom_killer"))
    features = egg.get("features")
    threads = build.get("threads")
    return {
        "server_owner": user.id == server.owner_id,
        "identifier": server.identifier,
        "internal_id": server.id,
        "uuid": server.uuid,
        "name": server.name,
        "node": node.name,
        "is_node_under_maintenance": node.maintenance,
        "sftp_details": {"ip": node.host.strip("[]"), "port": node.sftp_port},
        "description": server.description,
        "limits": {
            "memory": int(build.get("memory_limit") or 0),
            "swap": int(build.get("swap") or 0),
            "disk": int(build.get("disk_space") or 0),
            "io": int(build.get("io_weight") if build.get("io_weight") is not None else 500),
            "cpu": int(build.get("cpu_limit") or 0),
            "threads": None if threads in (None, "") else str(threads),
            "oom_disabled": bool(oom_disabled),
        },
        "invocation": invocation(server, settings, hide_values=not can_read_startup),
        "docker_image": str((settings.get("container") or {}).get("image") or ""),
        "egg_features": list(features) if isinstance(features, list) else [],
        "feature_limits": {"databases": 0, "allocations": 0, "backups": 0},
        "status": _status(server),
        "is_suspended": server.suspended,
        "is_installing": server.status in ("installing", "install_failed"),
        "is_transferring": server.transferring,
        "relationships": {
            "allocations": list_of(_allocations(settings)),
            "variables": list_of(_variables(settings) if can_read_startup else []),
        },
    }


def server(server: ServerRecord, node: Node, user: User, permissions: list[str], *, with_meta: bool) -> dict[str, Any]:
    meta = None
    if with_meta:
        meta = {"is_server_owner": user.id == server.owner_id, "user_permissions": list(permissions)}
    return item("server", server_attributes(server, node, user, permissions), meta)


def stats(node_view: dict[str, Any]) -> dict[str, Any]:
    """The node's `GET /api/servers/{uuid}` answer → the panel's stats object."""
    u = node_view.get("utilization") if isinstance(node_view.get("utilization"), dict) else {}
    net = u.get("network") if isinstance(u.get("network"), dict) else {}
    return item("stats", {
        "current_state": node_view.get("state") or "offline",
        "is_suspended": bool(node_view.get("is_suspended", False)),
        "resources": {
            "memory_bytes": u.get("memory_bytes", 0),
            "cpu_absolute": u.get("cpu_absolute", 0),
            "disk_bytes": u.get("disk_bytes", 0),
            "network_rx_bytes": net.get("rx_bytes", 0),
            "network_tx_bytes": net.get("tx_bytes", 0),
            "uptime": u.get("uptime", 0),
        },
    })


# ---- request validation ----------------------------------------------------------------------


def list_query(query: dict[str, str]) -> tuple[str | None, int, int]:
    """`?type=&page=&per_page=` of GET /api/client → (type, page, per_page), or 422.

    per_page defaults to 50 and is capped at 100; an unusable page means page 1 (as Laravel's
    paginator does); type, when given, must be one of owner, admin, admin-all.
    """
    fields: list[E.FieldError] = []
    kind = query.get("type") or None
    if kind is not None and kind not in LIST_TYPES:
        fields.append(E.invalid_choice("type"))
    per_page = DEFAULT_PER_PAGE
    raw = query.get("per_page")
    if raw not in (None, ""):
        try:
            per_page = int(raw)
        except ValueError:
            fields.append(E.must_be_integer("per_page"))
        else:
            if per_page < 1:
                fields.append(E.must_be_at_least("per_page", 1))
            per_page = min(per_page, MAX_PER_PAGE)
    if fields:
        raise E.ValidationFailed(fields)
    return kind, page_number(query.get("page")), per_page


def page_number(raw: str | None) -> int:
    try:
        page = int(raw) if raw is not None else 1
    except ValueError:
        return 1
    return page if page >= 1 else 1


def power_signal(body: dict[str, Any]) -> str:
    """`{"signal": "start|stop|restart|kill"}` → the signal, or 422."""
    v = body.get("signal")
    if v is None or v == "":
        raise E.ValidationFailed([E.required("signal")])
    if not isinstance(v, str):
        raise E.ValidationFailed([E.must_be_string("signal")])
    if v not in POWER_SIGNALS:
        raise E.ValidationFailed([E.invalid_choice("signal")])
    return v


def command_line(body: dict[str, Any]) -> str:
    """`{"command": "…"}` → the command, or 422."""
    v = body.get("command")
    if v is None or v == "":
        raise E.ValidationFailed([E.required("command")])
    if not isinstance(v, str):
        raise E.ValidationFailed([E.must_be_string("command")])
    if not v.strip():
        raise E.ValidationFailed([E.required("command")])
    return v


def _boolean(v: Any) -> bool | None:
    if isinstance(v, bool):
        return v
    if v in (1, "1", "true"):
        return True
    if v in (0, "0", "false"):
        return False
    return None


def install_report(body: dict[str, Any]) -> tuple[bool, bool]:
    """Remote `POST /servers/{uuid}/install` body → (successful, reinstall), or 422."""
    fields: list[E.FieldError] = []
    successful = reinstall = False
    if "successful" not in body:
        fields.append(E.must_be_present("successful"))
    else:
        b = _boolean(body["successful"])
        if b is None:
            fields.append(E.must_be_boolean("successful"))
        else:
            successful = b
    if "reinstall" in body:
        b = _boolean(body["reinstall"])
        if b is None:
            fields.append(E.must_be_boolean("reinstall"))
        else:
            reinstall = b
    if fields:
        raise E.ValidationFailed(fields)
    return successful, reinstall


def activity_batch(body: dict[str, Any]) -> list[dict[str, Any]]:
    """Remote `POST /activity` body → the entries, or 422 (one entry per bad field)."""
    data = body.get("data")
    if data is None:
        raise E.ValidationFailed([E.required("data")])
    if not isinstance(data, list):
        raise E.ValidationFailed([E.must_be_array("data")])
    fields: list[E.FieldError] = []
    out = []
    for i, entry in enumerate(data):
        if not isinstance(entry, dict):
            fields.append(E.must_be_array(f"data.{i}"))
            continue
        bad = False
        for key in ("server", "event", "timestamp"):
            v = entry.get(key)
            if v in (None, ""):
                fields.append(E.required(f"data.{i}.{key}"))
                bad = True
            elif not isinstance(v, str):
                fields.append(E.must_be_string(f"data.{i}.{key}"))
                bad = True
        if "metadata" in entry and entry["metadata"] is not None and not isinstance(entry["metadata"], (dict, list)):
            fields.append(E.must_be_array(f"data.{i}.metadata"))
            bad = True
        if not bad:
            out.append({"server": entry["server"], "event": entry["event"], "timestamp": entry["timestamp"],
                        "user": entry.get("user") if isinstance(entry.get("user"), str) else None,
                        "ip": entry.get("ip") if isinstance(entry.get("ip"), str) else None,
                        "metadata": entry.get("metadata")})
    if fields:
        raise E.ValidationFailed(fields)
    return out
