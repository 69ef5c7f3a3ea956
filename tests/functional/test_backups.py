"""Backups and restore through the node API and the socket, against a real daemon."""
import asyncio
import hashlib
import json
import shutil
import tarfile
import uuid as uuidlib
from pathlib import Path

import pytest
from aiohttp import web

from roost.demo.definition import demo_definition, install_demo_files
from roost.tokenservice.issuer import OWNER_PERMISSIONS

from .test_remote_source import StandInPanel, remote_node

pytestmark = pytest.mark.asyncio

RESTORE_DONE = "Completed server restoration from local backup."


@pytest.fixture
def node(make_node):
    n = make_node()
    n.config["system"]["backup_directory"] = str(n.home / "backups")
    n.demo = n.add_server()
    n.data = Path(n.config["system"]["data"]) / n.demo
    n.backups = n.home / "backups"
    return n.start()


def is_backup_done(e):
    return e["event"] == "backup completed"


async def backup(node, c, ignore: str = "") -> tuple[str, dict]:
    bid = str(uuidlib.uuid4())
    status, _, _ = await node.http("POST", f"/api/servers/{node.demo}/backup",
                                   json_body={"adapter": "wings", "uuid": bid, "ignore": ignore})
    assert status == 202
    done = await c.expect(is_backup_done, 30)
    return bid, json.loads(done["args"][0])


async def restore(node, bid: str, truncate: bool = False) -> int:
    status, _, _ = await node.http("POST", f"/api/servers/{node.demo}/backup/{bid}/restore",
                                   json_body={"adapter": "wings", "truncate_directory": truncate})
    return status


def messages(events):
    return [e["args"][0] for e in events if e["event"] == "daemon message"]


async def test_backup_completed_with_checksum_and_size_only_for_backup_read(node):
    (node.data / "world").mkdir()
    (node.data / "world" / "level.dat").write_bytes(b"\x00level" * 1000)
    (node.data / "cache.tmp").write_text("skip me")
    c = await node.client(node.demo)
    blind = await node.client(node.demo, token=node.token(node.demo, permissions=["websocket.connect"]))
    owner = await node.client(node.demo, token=node.token(node.demo, permissions=OWNER_PERMISSIONS))
    bid, doc = await backup(node, c, ignore="*.tmp\n")
    archive = node.backups / f"{bid}.tar.gz"
    data = archive.read_bytes()
    assert doc == {"checksum": hashlib.sha1(data).hexdigest(), "checksum_type": "sha1", "file_size": len(data),
                   "is_successful": True, "uuid": bid}
    names = tarfile.open(archive).getnames()
    assert any(n.endswith("level.dat") for n in names) and not any(n.endswith("cache.tmp") for n in names)
    # "*" grants backup.read; a token without it never sees the event
    assert json.loads((await owner.expect(is_backup_done))["args"][0])["uuid"] == bid
    assert not any(is_backup_done(e) for e in await blind.quiet(0.5))


async def test_backup_of_a_running_server_and_failure_leaves_nothing(node):
    c = await node.client(node.demo)
    await c.send("set state", "start")
    await c.expect_status("running", 15)
    _, doc = await backup(node, c)
    assert doc["is_successful"] is True and doc["file_size"] > 0
    # the data directory vanishes: a failed backup, no archive left behind
    await c.send("set state", "kill")
    await c.expect_status("offline")
    shutil.rmtree(node.data)
    bid, doc = await backup(node, c)
    assert doc == {"checksum": "", "checksum_type": "sha1", "file_size": 0, "is_successful": False, "uuid": bid}
    assert not (node.backups / f"{bid}.tar.gz").exists()
    assert [p for p in node.backups.iterdir() if bid in p.name] == []


async def test_bad_adapter_and_body_422(node):
    for body in ({"adapter": "s3", "uuid": str(uuidlib.uuid4())}, {"adapter": "wings", "uuid": "../x"}, {}):
        status, _, _ = await node.http("POST", f"/api/servers/{node.demo}/backup", json_body=body)
        assert status == 422
    status, _, _ = await node.http("POST", f"/api/servers/{node.demo}/backup/{uuidlib.uuid4()}/restore",
                                   json_body={"adapter": "s3"})
    assert status == 422


async def test_delete_204_then_404_and_restore_missing_404(node):
    c = await node.client(node.demo)
    bid, _ = await backup(node, c)
    status, _, _ = await node.http("DELETE", f"/api/servers/{node.demo}/backup/{bid}")
    assert status == 204
    assert list(node.backups.glob(f"{bid}*")) == []
    status, _, _ = await node.http("DELETE", f"/api/servers/{node.demo}/backup/{bid}")
    assert status == 404
    assert await restore(node, bid) == 404
    status, _, _ = await node.http("DELETE", f"/api/servers/{node.demo}/backup/..%2F..%2Fconfig.yml")
    assert status == 404


async def test_restore_stops_server_refuses_power_and_announces_each_path(node):
    tree = node.data / "world"
    for d in range(20):
        (tree / f"region{d}").mkdir(parents=True)
        for f in range(100):
            (tree / f"region{d}" / f"r.{f}.mca").write_bytes(bytes([d, f]) * 2048)
    c = await node.client(node.demo)
    bid, doc = await backup(node, c)
    assert doc["is_successful"]
    shutil.rmtree(tree)
    (node.data / "junk.txt").write_text("gone after truncate")
    await c.send("set state", "start")
    await c.expect_status("running", 15)
    mark = len(c.events)
    assert await restore(node, bid, truncate=True) == 202
    # restoring from the moment the request is accepted: power actions refused
    assert await node.power(node.demo, "start") == 409
    await c.send("set state", "start")
    await c.expect(lambda e: e["event"] == "backup restore completed", 60)
    seen = c.events[mark:]
    kinds = [e["event"] for e in seen]
    assert kinds.index("status") < kinds.index("daemon message")  # stopped first
    assert ["offline"] in [e["args"] for e in seen if e["event"] == "status"]
    assert "daemon error" in kinds  # the socket's start was refused too
    msgs = messages(seen)
    restored = [m[len("(restoring): "):] for m in msgs if m.startswith("(restoring): ")]
    assert "world/region7/r.42.mca" in restored and len(restored) >= 2000
    assert msgs[-1] == RESTORE_DONE and msgs.index(RESTORE_DONE) > 0
    assert kinds[-1] == "backup restore completed"
    assert (tree / "region7" / "r.42.mca").read_bytes() == bytes([7, 42]) * 2048
    assert not (node.data / "junk.txt").exists()
    status, body, _ = await node.http("GET", f"/api/servers/{node.demo}")
    assert body["is_restoring"] is False
    assert await node.power(node.demo, "start") == 202
    await c.expect_status("running", 15)


async def test_restore_of_tampered_archive_refused_nothing_changed(node):
    (node.data / "save.dat").write_text("original")
    c = await node.client(node.demo)
    bid, _ = await backup(node, c)
    archive = node.backups / f"{bid}.tar.gz"
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    archive.write_bytes(bytes(data))
    (node.data / "save.dat").write_text("changed since")
    before = sorted(p.name for p in node.data.iterdir())
    mark = len(c.events)
    assert await restore(node, bid, truncate=True) == 202
    await c.expect(lambda e: e["event"] == "backup restore completed", 30)
    msgs = messages(c.events[mark:])
    assert not any(m.startswith("(restoring): ") for m in msgs) and RESTORE_DONE not in msgs
    assert any("failed" in m and "checksum" in m for m in msgs)
    assert (node.data / "save.dat").read_text() == "changed since"
    assert sorted(p.name for p in node.data.iterdir()) == before
    assert await node.power(node.demo, "start") == 202


class BackupPanel(StandInPanel):
    """The stand-in panel, also taking backup and restore reports."""

    def __init__(self, servers):
        super().__init__(servers)
        self.reports: list[tuple[str, dict]] = []

    def add_routes(self, app) -> None:
        app.router.add_post("/api/remote/backups/{backup}", self.report)
        app.router.add_post("/api/remote/backups/{backup}/restore", self.report)

    async def report(self, request):
        self._gate(request)
        self.reports.append((request.path, await request.json()))
        return web.Response(status=204)


async def test_results_reported_to_the_panel(make_node):
    a = str(uuidlib.uuid4())
    panel = await BackupPanel([demo_definition(a)]).start()
    try:
        n = remote_node(make_node, panel)
        n.config["system"]["backup_directory"] = str(n.home / "backups")
        install_demo_files(n.home / "volumes" / a)
        await asyncio.to_thread(n.start)  # the stand-in panel runs on this loop
        for _ in range(50):
            _, servers, _ = await n.http("GET", "/api/servers")
            if servers:
                break
            await asyncio.sleep(0.2)
        n.demo = a
        c = await n.client(a)
        bid, doc = await backup(n, c)
        for _ in range(50):
            if panel.reports:
                break
            await asyncio.sleep(0.1)
        assert panel.reports == [(f"/api/remote/backups/{bid}", {
            "checksum": doc["checksum"], "checksum_type": "sha1", "size": doc["file_size"],
            "successful": True, "parts": []})]
        assert await restore(n, bid) == 202
        await c.expect(lambda e: e["event"] == "backup restore completed", 30)
        for _ in range(50):
            if len(panel.reports) == 2:
                break
            await asyncio.sleep(0.1)
        assert panel.reports[1] == (f"/api/remote/backups/{bid}/restore", {"successful": True})
    finally:
        await panel.stop()
