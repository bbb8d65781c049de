"""A long outage against a small outbox quota: real hub, edgecore, Mosquitto and a mapper.
The oldest uploads go first, the edge never holds more than its quota, what went is counted
and reaches the hub with the node's status, and everything kept is delivered."""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import yaml

from edgecore.store import ROW_BYTES
from tests.support.mosquitto import Mosquitto
from tests.support.mqtt import FakeMapper
from tests.support.procs import BIN, Hub, wait_for

QUOTA_MB = 0.02  # 20,971 bytes: about 60 of the uploads below
UPLOADS = 300


def outbox(edge_dir: Path) -> tuple[int, list[int]]:
    """The bytes and the upload numbers waiting in edge.db, read with a connection of the
    test's own."""
    db = sqlite3.connect(f"file:{edge_dir / 'edge.db'}?mode=ro", uri=True, timeout=5)
    try:
        (size,) = db.execute(f"SELECT total({ROW_BYTES}) FROM outbox").fetchone()
        bodies = db.execute("SELECT body FROM outbox WHERE key IS NULL ORDER BY seq").fetchall()
    finally:
        db.close()
    numbers = [int(body.split("reading ")[1][:5]) for (body,) in bodies]
    return int(size), numbers


def node_outbox(hub: Hub, node: str) -> dict[str, Any]:
    status, body = hub.request("GET", f"/api/v1/nodes/{node}")
    return body.get("status", {}).get("outbox", {}) if status == 200 else {}


def test_a_long_outage_keeps_the_newest_uploads_within_the_quota_and_counts_the_rest(
    tmp_path: Path, hub: Hub, start_edge: Any, own_broker: Mosquitto
) -> None:
    config = tmp_path / "edge-q.yaml"
    config.write_text(yaml.safe_dump({"outbox": {"quota_mb": QUOTA_MB}}))
    edge = start_edge("edge-q", "--config", str(config), mqtt=own_broker)
    wait_for(lambda: node_outbox(hub, "edge-q").get("quotaBytes"), 20, "the first status")
    hub.kill()  # the outage
    mapper = FakeMapper(own_broker)
    try:
        for i in range(UPLOADS):
            mapper.publish("$hw/events/upload/meter-7", f"reading {i:05d} " + "x" * 300)
        wait_for(lambda: UPLOADS - 1 in outbox(edge.data_dir)[1], 30, "the last upload stored")
    finally:
        mapper.close()
    size, kept = outbox(edge.data_dir)
    quota = int(QUOTA_MB * 2**20)
    assert size <= quota
    assert 20 < len(kept) < UPLOADS
    assert kept == list(range(UPLOADS - len(kept), UPLOADS)), "the oldest must go first"
    log = (tmp_path / "edge-q.log").read_text()
    assert 1 <= log.count("over its quota") <= 2, "one line a minute, not one per upload"

    hub.start()
    dropped = UPLOADS - len(kept)
    wait_for(
        lambda: node_outbox(hub, "edge-q").get("dropped", {}).get("quota") == dropped,
        30,
        "the node to report what its quota deleted",
    )
    wait_for(lambda: outbox(edge.data_dir)[1] == [], 30, "the kept uploads to be delivered")
    status, listing = hub.request("GET", "/api/v1/events?node=edge-q&device=meter-7&limit=1000")
    assert status == 200
    delivered = [int(e["payload"].split()[1]) for e in listing["items"]]
    assert delivered == kept
    described = subprocess.run(
        [str(BIN / "edgeward"), "--hub", hub.api, "describe", "node", "edge-q"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert f"deleted unsent since edgecore started: quota {dropped}" in described.stdout
