"""kill -9 at any point: edge.db opens consistent every time, and every upload the broker
acknowledged to the mapper reaches the hub exactly once. Real hub, edgecore, Mosquitto and
a mapper publishing all along; the kills land at random points of its work (a fixed seed)."""

from __future__ import annotations

import random
import shutil
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from tests.support.mosquitto import Mosquitto, running
from tests.support.procs import Edge, Hub, wait_for

KILLS = 6


def opens_consistent(edge: Edge, scratch: Path) -> None:
    """Copy the files a power cut would leave (the database and its WAL) and open them as a
    restarted edgecore would: SQLite replays the WAL; the result must check out whole."""
    scratch.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal"):
        source = edge.data_dir / f"edge.db{suffix}"
        if source.exists():
            shutil.copyfile(source, scratch / f"edge.db{suffix}")
    conn = sqlite3.connect(scratch / "edge.db")
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        seqs = [s for (s,) in conn.execute("SELECT seq FROM outbox ORDER BY seq")]
        assert len(seqs) == len(set(seqs))
    finally:
        conn.close()
    shutil.rmtree(scratch)


def hub_events(hub: Hub) -> list[str]:
    payloads: list[str] = []
    after = 0
    while True:
        status, body = hub.request("GET", f"/api/v1/events?device=meter&after={after}&limit=1000")
        assert status == 200, body
        payloads += [item["payload"] for item in body["items"]]
        if not body["items"]:
            return payloads
        after = body["items"][-1]["id"]


def test_kill_9_at_random_points_loses_and_repeats_nothing(
    tmp_path: Path, hub: Hub, start_edge: Any
) -> None:
    # the broker queues what the mapper sends while edgecore is down (as shipped: 100,000)
    with running("max_queued_messages 100000\n") as broker:
        run_with_kills(tmp_path, hub, start_edge("edge1", mqtt=broker), broker)


def run_with_kills(tmp_path: Path, hub: Hub, edge: Edge, broker: Mosquitto) -> None:
    wait_for(lambda: "MQTT: connected" in edge.log(), 20, "edgecore on the broker")
    sent: list[str] = []
    stop = threading.Event()
    mapper = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="meter-mapper")
    mapper.connect(broker.host, broker.port)
    mapper.loop_start()

    def publish() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            # acknowledged by the broker: from here on the reading is owed to the hub
            mapper.publish("$hw/events/upload/meter", f"reading {n}", qos=1).wait_for_publish(10)
            sent.append(f"reading {n}")
            time.sleep(0.001)

    publisher = threading.Thread(target=publish)
    publisher.start()
    rng = random.Random(20261130)
    try:
        for kill in range(KILLS):
            time.sleep(rng.uniform(0.3, 1.5))
            edge.kill()
            opens_consistent(edge, tmp_path / f"after-kill-{kill}")
            connections = edge.log().count("MQTT: connected")
            edge.start()
            wait_for(lambda n=connections: edge.log().count("MQTT: connected") > n, 20,
                     "edgecore back on the broker")  # fmt: skip
    finally:
        stop.set()
        publisher.join()
        mapper.loop_stop()
        mapper.disconnect()
    assert len(sent) > 100, "the kills landed while the mapper was busy"
    wait_for(lambda: len(hub_events(hub)) >= len(sent), 60, "every upload at the hub")
    time.sleep(1)  # a duplicate would arrive after the last original
    received = hub_events(hub)
    assert sorted(received) == sorted(sent), "each upload exactly once"
    opens_consistent(edge, tmp_path / "at-the-end")
