"""`roost user|key|server|subuser|node ...`: manage the token service's store from a shell.

Each command works on the SQLite store in a data directory (`--home`, the same default as
`roost up`). Output is a table, or JSON with `--json`. Commands that must tell a node
something (subuser change/remove → ws/deny, suspend/unsuspend → sync, delete → DELETE,
create → POST /api/servers) do so with a timeout; when the node cannot be told, the store
change still stands, the command says so, and exits with status 3.

Exit status: 0 done; 1 refused (nothing changed); 2 usage; 3 done in the store, a node not told.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable

import yaml
from rich.console import Console
from rich.table import Table

EXIT_REFUSED = 1
EXIT_NODE_NOT_TOLD = 3


from .up import default_home  # noqa: E402  (one definition of where `roost up` lives)


class Refused(Exception):
    pass


# ---- output -------------------------------------------------------------------------------------


class Out:
    def __init__(self, as_json: bool):
        self.json = as_json
        self.console = Console(soft_wrap=True)
        self.err = Console(stderr=True, soft_wrap=True)

    def emit(self, doc: Any, table: Callable[[], Any] | None = None, message: str | None = None) -> None:
        if self.json:
            print(json.dumps(doc, indent=None, sort_keys=False))
            return
        if table is not None:
            self.console.print(table())
        if message:
            self.console.print(message)

    def nodes(self, outcomes) -> int:
        """Report what the nodes were told; the exit status."""
        failed = [o for o in outcomes if not o.ok]
        if not self.json:
            for o in outcomes:
                if o.ok:
                    self.console.print(f"[green]node {o.node}: {o.action} done[/]")
                else:
                    self.err.print(f"node {o.node}: {o.action} FAILED ({o.error})", style="bold red",
                                   markup=False, highlight=False)
                    self.err.print(f"  The change is saved in the store all the same; {o.consequence}.",
                                   markup=False, highlight=False)
        return EXIT_NODE_NOT_TOLD if failed else 0


def _table(title: str, columns: list[str], rows: list[list[Any]]) -> Callable[[], Table]:
    def build() -> Table:
        t = Table(title=title, show_lines=False)
        for c in columns:
            t.add_column(c, overflow="fold")
        for r in rows:
            t.add_row(*["" if v is None else str(v) for v in r])
        return t
    return build


def _yes(b: bool) -> str:
    return "yes" if b else "no"


# ---- plumbing -----------------------------------------------------------------------------------


def _store(args: argparse.Namespace, *, create: bool = False):
    from ..tokenservice.store import DB_FILENAME, Store

    home = Path(args.home)
    if not create and not (home / DB_FILENAME).exists():
        raise Refused(f"no token service store in {home} (run `roost up --home {home}` or a create command first)")
    return Store.open(home)


def _service(args: argparse.Namespace, store):
    from ..tokenservice.service import TokenService

    return TokenService(store, node_timeout_s=args.timeout)


def _run_async(args: argparse.Namespace, store, fn):
    async def go():
        svc = _service(args, store)
        try:
            return await fn(svc)
        finally:
            await svc.close()
    return asyncio.run(go())


def _perms(raw: str) -> list[str]:
    return [p.strip() for p in raw.split(",") if p.strip()]


# ---- users --------------------------------------------------------------------------------------


def user_row(u) -> list[Any]:
    return [u.id, u.username, u.email, f"{u.first_name} {u.last_name}".strip(), u.language, _yes(u.admin), u.uuid]


USER_COLUMNS = ["id", "username", "email", "name", "language", "admin", "uuid"]


def cmd_user_create(args, out: Out) -> int:
    store = _store(args, create=True)
    u = store.create_user(args.username, args.email, first_name=args.first_name, last_name=args.last_name,
                          language=args.language, admin=args.admin)
    out.emit(u.public(), _table("user created", USER_COLUMNS, [user_row(u)]))
    return 0


def cmd_user_list(args, out: Out) -> int:
    users = _store(args).list_users()
    out.emit([u.public() for u in users], _table("users", USER_COLUMNS, [user_row(u) for u in users]))
    return 0


def cmd_user_delete(args, out: Out) -> int:
    store = _store(args)
    result = _run_async(args, store, lambda svc: svc.delete_user(args.user))
    out.emit({"deleted": result.record.public(), "nodes": [o.public() for o in result.nodes]},
             message=f"user {result.record.username} deleted")
    return out.nodes(result.nodes)


# ---- keys ---------------------------------------------------------------------------------------


KEY_COLUMNS = ["identifier", "user", "memo", "created", "last used", "revoked"]


def cmd_key_create(args, out: Out) -> int:
    store = _store(args, create=True)
    record, key = store.create_api_key(args.user, args.memo)
    doc = {**record.public(), "key": key}
    if out.json:
        out.emit(doc)
    else:
        out.console.print(f"client API key for user {args.user} (shown once, store it now):")
        out.console.print(key, markup=False, highlight=False)
    return 0


def cmd_key_list(args, out: Out) -> int:
    store = _store(args)
    keys = store.list_api_keys(args.user)
    names = {u.id: u.username for u in store.list_users()}
    rows = [[k.identifier, names.get(k.user_id, k.user_id), k.memo, k.created_at, k.last_used_at, _yes(k.revoked)]
            for k in keys]
    out.emit([k.public() for k in keys], _table("client API keys", KEY_COLUMNS, rows))
    return 0


def cmd_key_revoke(args, out: Out) -> int:
    k = _store(args).revoke_api_key(args.identifier)
    out.emit(k.public(), message=f"key {k.identifier} revoked")
    return 0


# ---- servers ------------------------------------------------------------------------------------


SERVER_COLUMNS = ["identifier", "name", "owner", "node", "suspended", "status", "uuid"]


def _server_rows(store, servers) -> list[list[Any]]:
    users = {u.id: u.username for u in store.list_users()}
    nodes = {n.id: n.name for n in store.list_nodes()}
    return [[s.identifier, s.name, users.get(s.owner_id, s.owner_id), nodes.get(s.node_id, s.node_id),
             _yes(s.suspended), s.status or "", s.uuid] for s in servers]


def _load_definition(path: str) -> dict:
    try:
        text = Path(path).read_text()
        doc = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as e:
        raise Refused(f"cannot read the definition {path}: {e}") from None
    if not isinstance(doc, dict):
        raise Refused(f"{path}: expected a mapping with `settings` and `process_configuration`")
    return doc


def _default_owner(store) -> int:
    admins = [u for u in store.list_users() if u.admin]
    if not admins:
        raise Refused("no --owner given and there is no admin user to default to")
    return admins[0].id


def cmd_server_create(args, out: Out) -> int:
    store = _store(args, create=True)
    definition = _load_definition(args.definition)
    owner = args.owner if args.owner is not None else _default_owner(store)
    result = _run_async(args, store, lambda svc: svc.create_server(
        definition, owner=owner, node=args.node, name=args.name, description=args.description, uuid=args.uuid,
        notify=not args.no_notify, start_on_completion=args.start))
    s = result.record
    out.emit({**s.public(), "nodes": [o.public() for o in result.nodes]},
             _table("server created", SERVER_COLUMNS, _server_rows(store, [s])))
    return out.nodes(result.nodes)


def cmd_egg_import(args, out: Out) -> int:
    """An egg becomes a server: variables validated against the egg's rules first."""
    import uuid as uuidlib

    from ..install.eggs import EggError, egg_to_definition, load_egg
    from ..install.rules import VariableValidationError

    try:
        egg = load_egg(args.file)
    except (EggError, OSError, ValueError) as e:
        raise Refused(f"egg refused: {e}") from None
    env = {}
    for item in args.env or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise Refused(f"--env {item!r}: expected NAME=VALUE")
        env[key] = value
    try:
        definition = egg_to_definition(
            egg, uuid=args.uuid or str(uuidlib.uuid4()), name=args.name or egg.name,
            environment_overrides=env, port=args.port, memory_limit=args.memory)
    except VariableValidationError as e:
        raise Refused(f"variables refused: {e}") from None
    if args.definition_only:
        out.emit(definition, message=json.dumps(definition, indent=2))
        return 0
    store = _store(args, create=True)
    owner = args.owner if args.owner is not None else _default_owner(store)
    result = _run_async(args, store, lambda svc: svc.create_server(
        definition, owner=owner, node=args.node, name=args.name or egg.name, notify=not args.no_notify,
        start_on_completion=args.start))
    s = result.record
    out.emit({**s.public(), "egg": egg.name, "nodes": [o.public() for o in result.nodes]},
             _table(f"server created from egg {egg.name}", SERVER_COLUMNS, _server_rows(store, [s])))
    return out.nodes(result.nodes)


def cmd_server_list(args, out: Out) -> int:
    store = _store(args)
    servers = store.list_servers(node=args.node, owner=args.owner)
    out.emit([s.public() for s in servers], _table("servers", SERVER_COLUMNS, _server_rows(store, servers)))
    return 0


def cmd_server_delete(args, out: Out) -> int:
    store = _store(args)
    result = _run_async(args, store, lambda svc: svc.delete_server(args.server))
    out.emit({"deleted": result.record.public(), "nodes": [o.public() for o in result.nodes]},
             message=f"server {result.record.identifier} deleted from the store")
    return out.nodes(result.nodes)


def _suspend(args, out: Out, suspended: bool) -> int:
    store = _store(args)
    result = _run_async(args, store, lambda svc: svc.set_suspended(args.server, suspended))
    out.emit({**result.record.public(), "nodes": [o.public() for o in result.nodes]},
             message=f"server {result.record.identifier} {'suspended' if suspended else 'unsuspended'}")
    return out.nodes(result.nodes)


def cmd_server_suspend(args, out: Out) -> int:
    return _suspend(args, out, True)


def cmd_server_unsuspend(args, out: Out) -> int:
    return _suspend(args, out, False)


# ---- subusers -----------------------------------------------------------------------------------


SUBUSER_COLUMNS = ["server", "user", "permissions", "updated"]


def _subuser_doc(sub, server, user) -> dict:
    return {"server": server.identifier, "server_uuid": server.uuid, "user": user.username, "user_id": user.id,
            "permissions": list(sub.permissions), "created_at": sub.created_at, "updated_at": sub.updated_at}


def cmd_subuser_add(args, out: Out) -> int:
    store = _store(args)
    result = _run_async(args, store, lambda svc: svc.add_subuser(args.server, args.user, _perms(args.permissions)))
    sub = result.record
    server, user = store.find_server(sub.server_id), store.find_user(sub.user_id)
    out.emit(_subuser_doc(sub, server, user), _table("subuser added", SUBUSER_COLUMNS,
                                                     [[server.identifier, user.username, ",".join(sub.permissions),
                                                       sub.updated_at]]))
    return 0


def cmd_subuser_change(args, out: Out) -> int:
    store = _store(args)
    result = _run_async(args, store, lambda svc: svc.change_subuser(args.server, args.user, _perms(args.permissions)))
    sub = result.record
    server, user = store.find_server(sub.server_id), store.find_user(sub.user_id)
    out.emit({**_subuser_doc(sub, server, user), "nodes": [o.public() for o in result.nodes]},
             _table("subuser changed", SUBUSER_COLUMNS,
                    [[server.identifier, user.username, ",".join(sub.permissions), sub.updated_at]]))
    return out.nodes(result.nodes)


def cmd_subuser_remove(args, out: Out) -> int:
    store = _store(args)
    server = store.find_server(args.server)
    result = _run_async(args, store, lambda svc: svc.remove_subuser(args.server, args.user))
    out.emit({"server": server.identifier, "user": result.record.username, "removed": True,
              "nodes": [o.public() for o in result.nodes]},
             message=f"{result.record.username} is no longer a subuser of {server.identifier}")
    return out.nodes(result.nodes)


def cmd_subuser_list(args, out: Out) -> int:
    store = _store(args)
    rows = store.list_subusers(args.server)
    out.emit([_subuser_doc(sub, s, u) for sub, s, u in rows],
             _table("subusers", SUBUSER_COLUMNS,
                    [[s.identifier, u.username, ",".join(sub.permissions), sub.updated_at] for sub, s, u in rows]))
    return 0


# ---- nodes --------------------------------------------------------------------------------------


NODE_COLUMNS = ["id", "name", "url", "sftp port", "token id", "maintenance", "servers"]


def cmd_node_add(args, out: Out) -> int:
    store = _store(args, create=True)
    node = store.add_node(args.name, args.url, token_id=args.token_id, token=args.token, sftp_port=args.sftp_port,
                          maintenance=args.maintenance)
    doc = {**node.public(), "token": node.token}
    if out.json:
        out.emit(doc)
        return 0
    out.emit(doc, _table("node added", NODE_COLUMNS, [[node.id, node.name, node.url, node.sftp_port, node.token_id,
                                                       _yes(node.maintenance), 0]]))
    if not args.token:
        out.console.print("Put these in the node's config.yml (the token is shown once):")
        out.console.print(f"  token_id: {node.token_id}\n  token: {node.token}", markup=False, highlight=False)
        out.console.print("  remote: <this token service's URL>\n  (and leave roost.servers_directory unset)",
                          markup=False, highlight=False)
    return 0


def cmd_node_list(args, out: Out) -> int:
    store = _store(args)
    nodes = store.list_nodes()
    counts: dict[int, int] = {}
    for s in store.list_servers():
        counts[s.node_id] = counts.get(s.node_id, 0) + 1
    out.emit([{**n.public(), "servers": counts.get(n.id, 0)} for n in nodes],
             _table("nodes", NODE_COLUMNS, [[n.id, n.name, n.url, n.sftp_port, n.token_id, _yes(n.maintenance),
                                              counts.get(n.id, 0)] for n in nodes]))
    return 0


def cmd_node_remove(args, out: Out) -> int:
    node = _store(args).remove_node(args.node)
    out.emit({"removed": node.public()}, message=f"node {node.name} removed")
    return 0


def cmd_node_maintenance(args, out: Out) -> int:
    node = _store(args).update_node(args.node, maintenance=args.state == "on")
    out.emit(node.public(), message=f"node {node.name}: maintenance {'on' if node.maintenance else 'off'}")
    return 0


# ---- the command table --------------------------------------------------------------------------


def _common() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--home", default=None, help="data directory (default: $ROOST_HOME, or as `roost up`)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for a node (default 10)")
    return p


def register(sub: argparse._SubParsersAction) -> None:
    """Add the management commands to `roost`'s subcommands."""
    common = _common()

    def group(name: str, help_text: str):
        g = sub.add_parser(name, help=help_text)
        return g.add_subparsers(dest=f"{name}_command", required=True, metavar="ACTION")

    def leaf(parent, name: str, func, help_text: str) -> argparse.ArgumentParser:
        p = parent.add_parser(name, help=help_text, parents=[common])
        p.set_defaults(func=lambda args: run(func, args))
        return p

    users = group("user", "token service users")
    p = leaf(users, "create", cmd_user_create, "create a user")
    p.add_argument("username")
    p.add_argument("--email")
    p.add_argument("--first-name", default="")
    p.add_argument("--last-name", default="")
    p.add_argument("--language", default="en")
    p.add_argument("--admin", action="store_true", help="a root admin (sees and controls every server)")
    leaf(users, "list", cmd_user_list, "list users")
    p = leaf(users, "delete", cmd_user_delete, "delete a user (not while they own servers)")
    p.add_argument("user", help="id, username, email or uuid")

    keys = group("key", "client API keys (ptlc_...)")
    p = leaf(keys, "create", cmd_key_create, "create a key for a user; prints the full key once")
    p.add_argument("user", help="id, username, email or uuid")
    p.add_argument("--memo", default="")
    p = leaf(keys, "list", cmd_key_list, "list keys (identifiers only)")
    p.add_argument("--user")
    p = leaf(keys, "revoke", cmd_key_revoke, "revoke a key")
    p.add_argument("identifier", help="the key's identifier (ptlc_ + 11 characters) or the full key")

    servers = group("server", "servers placed on nodes")
    p = leaf(servers, "create", cmd_server_create, "create a server from a definition file (YAML or JSON)")
    p.add_argument("--definition", required=True, help="settings + process_configuration, as a panel sends them")
    p.add_argument("--owner", help="id, username, email or uuid (default: the first admin)")
    p.add_argument("--node", help="node id or name (default: the first node)")
    p.add_argument("--name")
    p.add_argument("--description")
    p.add_argument("--uuid", help="default: the definition's settings.uuid, or a new one")
    p.add_argument("--no-notify", action="store_true", help="do not ask the node to create it now")
    p.add_argument("--start", action="store_true", help="ask the node to start it once created")
    p = leaf(servers, "list", cmd_server_list, "list servers")
    p.add_argument("--node")
    p.add_argument("--owner")
    for name, func, text in (("delete", cmd_server_delete, "delete a server (and from its node)"),
                             ("suspend", cmd_server_suspend, "suspend a server"),
                             ("unsuspend", cmd_server_unsuspend, "unsuspend a server")):
        p = leaf(servers, name, func, text)
        p.add_argument("server", help="identifier (8 characters), uuid or id")

    eggs = group("egg", "Pterodactyl/Pelican eggs")
    p = leaf(eggs, "import", cmd_egg_import, "create a server from an egg (PTDL_v1/v2 JSON)")
    p.add_argument("file", help="the egg's JSON file")
    p.add_argument("--name", help="server name (default: the egg's name)")
    p.add_argument("--env", action="append", metavar="NAME=VALUE", help="a variable value (repeatable)")
    p.add_argument("--port", type=int, default=0, help="the default allocation's port")
    p.add_argument("--memory", type=int, default=0, help="memory limit in MiB (0 = none)")
    p.add_argument("--owner", help="id, username, email or uuid (default: the first admin)")
    p.add_argument("--node", help="node id or name (default: the first node)")
    p.add_argument("--uuid")
    p.add_argument("--no-notify", action="store_true", help="do not ask the node to create it now")
    p.add_argument("--start", action="store_true", help="ask the node to start it once created")
    p.add_argument("--definition-only", action="store_true", help="print the server definition, store nothing")

    subusers = group("subuser", "subusers of a server and their permissions")
    for name, func, text in (("add", cmd_subuser_add, "make a user a subuser of a server"),
                             ("change", cmd_subuser_change, "change a subuser's permissions (revokes live tokens)")):
        p = leaf(subusers, name, func, text)
        p.add_argument("server")
        p.add_argument("user")
        p.add_argument("--permissions", required=True, help="comma separated, e.g. control.console,control.start")
    p = leaf(subusers, "remove", cmd_subuser_remove, "remove a subuser (revokes live tokens)")
    p.add_argument("server")
    p.add_argument("user")
    p = leaf(subusers, "list", cmd_subuser_list, "list subusers")
    p.add_argument("server", nargs="?")

    nodes = group("node", "nodes (daemons) the token service places servers on")
    p = leaf(nodes, "add", cmd_node_add, "register a node")
    p.add_argument("name")
    p.add_argument("--url", required=True, help="the node API, e.g. http://10.0.0.5:8080")
    p.add_argument("--token-id", help="the node's token_id (default: generated)")
    p.add_argument("--token", help="the node's token (default: generated)")
    p.add_argument("--sftp-port", type=int, default=2022)
    p.add_argument("--maintenance", action="store_true")
    leaf(nodes, "list", cmd_node_list, "list nodes (tokens are never shown)")
    p = leaf(nodes, "remove", cmd_node_remove, "remove a node (not while servers are placed on it)")
    p.add_argument("node")
    p = leaf(nodes, "maintenance", cmd_node_maintenance, "turn a node's maintenance mode on or off")
    p.add_argument("node")
    p.add_argument("state", choices=["on", "off"])


def run(func, args: argparse.Namespace) -> int:
    from ..tokenservice.store import StoreError

    if args.home is None:
        args.home = default_home()
    out = Out(args.json)
    try:
        return func(args, out)
    except (StoreError, Refused) as e:
        if args.json:
            print(json.dumps({"error": str(e)}))
        out.err.print(f"roost: {e}", markup=False, highlight=False)
        return EXIT_REFUSED


def main(argv: list[str] | None = None) -> int:
    """Standalone entry (the commands are also registered in `roost`)."""
    parser = argparse.ArgumentParser(prog="roost")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
