"""A gateway whose disk fills up: edgecore keeps answering mappers from its cache, refuses
what it cannot store with an error result (one log line, not one per message), keeps its
MQTT session, and takes updates again by itself once there is room. Real edgecore, hub and
Mosquitto; edge.db on a small tmpfs of its own, filled to the last byte."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_broker_drops import usage
from tests.integration.test_twins import NS, D, device, model, reported, twins_of, update
from tests.support.mosquitto import Mosquitto
from tests.support.mqtt import FakeMapper
from tests.support.procs import Hub, wait_for

RESULT = f"{D}/full/twin/update/result"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs (mounting one needs root, as CI runs)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    where = tmp_path / "disk"
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(disk: Path) -> Path:
    """Take every free byte of ``disk``: the file to delete to give them back."""
    filler = disk / "filler"
    with filler.open("wb") as out:
        try:
            while True:
                out.write(b"\0" * 65536)
                out.flush()
        except OSError:
            pass
    return filler


def test_a_full_disk_is_survived_and_recovered_from_without_help(
    hub: Hub, start_edge: Any, own_broker: Mosquitto, small_disk: Path, tmp_path: Path
) -> None:
    assert hub.request("POST", f"{NS}/devicemodels", model())[0] == 201
    assert hub.request("POST", f"{NS}/devices", device("full", "edge-df"))[0] == 201
    # pings every second, 2 s to answer: a link whose frames stop being read ends quickly
    config = tmp_path / "edge.yaml"
    config.write_text("hub:\n  ping_interval: 1\n  ping_timeout: 2\n")
    edge = start_edge(
        "edge-df", "--data-dir", str(small_disk / "edge"), "--config", str(config), mqtt=own_broker
    )
    mapper = FakeMapper(
        own_broker,
        RESULT,
        f"{D}/full/twin/get/result",
        f"{D}/full/twin/update/delta",
        "$hw/events/node/edge-df/membership/get/result",
    )
    try:
        wait_for(
            lambda: twins_of(hub, "full").get("target", {}).get("observedDesired"),
            20,
            "the edge to take the device",
        )
        mapper.publish(f"{D}/full/twin/update", update("before", temperature="20.5"))
        assert "code" not in mapper.expect(RESULT)

        filler = fill(small_disk)
        refused = None
        for i in range(400):  # the WAL may hold room for a few: until one is refused
            mapper.publish(f"{D}/full/twin/update", update(f"full-{i}", temperature=f"{i}.5"))
            answer = mapper.expect(RESULT)
            if answer.get("code") == 500:
                refused = answer
                break
        assert refused is not None, "the full disk never refused an update"
        assert refused["event_id"].startswith("full-")
        assert "could not store this update" in refused["reason"]
        for i in range(20):  # more, all answered; none stored
            mapper.publish(f"{D}/full/twin/update", update(f"more-{i}", temperature="99.5"))
            assert mapper.expect(RESULT)["code"] == 500
        # reads are served from the cache meanwhile
        mapper.publish(f"{D}/full/twin/get", {"event_id": "g1", "timestamp": 0})
        got = mapper.expect(f"{D}/full/twin/get/result")
        assert got["event_id"] == "g1" and "temperature" in got["twin"]
        mapper.publish("$hw/events/node/edge-df/membership/get", {"event_id": "m1"})
        members = mapper.expect("$hw/events/node/edge-df/membership/get/result")
        assert [d["name"] for d in members["devices"]] == ["full"]
        # an app's upload cannot be stored either: no reply exists for it, so it is counted;
        # the node's status still reaches the hub (from memory), with the count and the disk
        mapper.publish("$hw/events/upload/app", {"reading": 1})
        wait_for(lambda: _unstored_at_hub(hub).get("uploads") == 1, 20, "the upload counted")
        assert usage(hub, "edge-df")["diskPercent"] == 100
        # a desired value from the hub cannot be stored either: the hub keeps it, the edge
        # tries it again, and the link stays up meanwhile
        patch = {"spec": {"properties": [{"name": "target", "desired": {"value": "25"}},
                                         {"name": "temperature"}]}}  # fmt: skip
        assert (
            hub.request("PATCH", f"{NS}/devices/full", patch, "application/merge-patch+json")[0]
            == 200
        )
        wait_for(lambda: "edge.db cannot store changes from the hub" in edge.log(), 20, "the try")
        for value in range(26, 56):  # more frames than websockets queues unread (16)
            patch["spec"]["properties"][0]["desired"]["value"] = str(value)
            status, _ = hub.request(
                "PATCH", f"{NS}/devices/full", patch, "application/merge-patch+json"
            )
            assert status == 200
        time.sleep(6)  # retries, and three times the ping timeout
        log = (tmp_path / "edge-df.log").read_text()
        assert log.count("edge.db cannot store mapper updates") == 1
        assert log.count("edge.db cannot store changes from the hub") == 1, "logged once"
        assert log.count("node status: edge.db cannot store reports") == 1, "logged once"
        assert "MQTT: connected" in log and log.count("MQTT: connected") == 1
        assert "hublink: reconnecting" not in log, "the hub link must stay up"

        filler.unlink()  # room again
        delta = mapper.expect(
            f"{D}/full/twin/update/delta", 30, where=lambda b: b["delta"].get("target") == "55"
        )
        assert delta["delta"]["target"] == "55", "every held change is applied, in order"
        assert "hublink: reconnecting" not in edge.log(), "the hub link stayed up throughout"
        assert "edge.db takes changes from the hub again" in edge.log()
        # the hub's batch is the first transaction stored after the refusals: their counts
        # are kept in edge.db with it, before any mapper batch is
        assert _recorded_in(small_disk / "edge") == {"updates": 21, "uploads": 1}
        wait_for(lambda: _refused_at_hub(hub) == 22, 20, "the refusals to be reported")
        assert _unstored_at_hub(hub) == {"updates": 21, "uploads": 1}
        wait_for(lambda: _stored(mapper, "after", "42.5"), 30, "an update to be stored again")
        # a restarted edgecore still reports them
        edge.kill()
        connections = edge.log().count("connected at revision")
        edge.start()
        wait_for(lambda: edge.log().count("connected at revision") > connections, 20, "back")
        time.sleep(2)  # status reports every 0.5 s, each replacing the node's usage
        assert _refused_at_hub(hub) == 22, "the count survived the restart"
        assert _unstored_at_hub(hub) == {"updates": 21, "uploads": 1}
        wait_for(lambda: _stored(mapper, "after", "42.5"), 30, "an update to be stored again")
        wait_for(lambda: reported(hub, "full", "temperature") == "42.5", 30, "it to reach the hub")
        assert "edge.db takes mapper updates again" in (tmp_path / "edge-df.log").read_text()
        assert edge.proc.poll() is None
    finally:
        mapper.close()


def _stored(mapper: FakeMapper, event: str, value: str) -> bool:
    mapper.publish(f"{D}/full/twin/update", update(event, temperature=value))
    return "code" not in mapper.expect(RESULT)


def _refused_at_hub(hub: Hub) -> int:
    return int(usage(hub, "edge-df").get("mqttDropped", {}).get("storage", 0))


def _recorded_in(data_dir: Path) -> dict[str, int]:
    """The refusal counts edge.db holds (what a restarted edgecore reports)."""
    db = sqlite3.connect(f"file:{data_dir / 'edge.db'}?mode=ro", uri=True, timeout=5)
    try:
        row = db.execute("SELECT value FROM meta WHERE key = 'unstored'").fetchone()
    finally:
        db.close()
    return json.loads(row[0]) if row else {}


def _unstored_at_hub(hub: Hub) -> dict[str, int]:
    return dict(usage(hub, "edge-df").get("mqttUnstored", {}))


def test_links_come_up_again_on_a_full_disk_and_the_hub_keeps_hearing_the_node(
    hub: Hub, start_edge: Any, own_broker: Mosquitto, small_disk: Path
) -> None:
    """While the disk is full, the hub restarts and then edgecore does: each time the link
    comes up again (nothing needs storing to align with the hub) and the node's status goes
    on reaching the hub from memory; once there is room, nothing was lost or sent twice."""
    assert hub.request("POST", f"{NS}/devicemodels", model())[0] == 201
    assert hub.request("POST", f"{NS}/devices", device("full", "edge-df"))[0] == 201
    edge = start_edge("edge-df", "--data-dir", str(small_disk / "edge"), mqtt=own_broker)
    mapper = FakeMapper(own_broker, RESULT)
    try:
        wait_for(lambda: twins_of(hub, "full").get("target"), 20, "the edge to take the device")
        for i in range(3):  # stored before the disk fills, acknowledged by the hub
            mapper.publish("$hw/events/upload/app", f"before-{i}")
        wait_for(lambda: len(_uploads(hub)) == 3, 20, "the uploads to reach the hub")
        filler = fill(small_disk)
        # until the WAL has no room left either
        assert any(not _stored(mapper, f"probe-{i}", "1.5") for i in range(400))

        def heard_since(moment: float) -> bool:
            body = hub.request("GET", "/api/v1/nodes/edge-df")[1]
            beat = body["status"].get("lastHeartbeatTime") or ""
            return beat > _iso(moment) and usage(hub, "edge-df").get("diskPercent") == 100

        connections = edge.log().count("connected at revision")
        hub.restart()
        wait_for(lambda: edge.log().count("connected at revision") > connections, 30, "relink")
        moment = time.time() + 1
        wait_for(lambda: heard_since(moment), 20, "the status after the hub restarted")
        edge.kill()
        edge.start()
        wait_for(lambda: edge.log().count("connected at revision") > connections + 1, 30, "back")
        moment = time.time() + 1
        wait_for(lambda: heard_since(moment), 20, "the status after edgecore restarted")
        assert edge.proc.poll() is None

        filler.unlink()
        wait_for(lambda: _stored(mapper, "after", "42.5"), 30, "an update to be stored again")
        mapper.publish("$hw/events/upload/app", "after")
        wait_for(lambda: "after" in _uploads(hub), 20, "a new upload to reach the hub")
        time.sleep(2)  # any row sent twice would have arrived by now
        assert sorted(_uploads(hub)) == ["after", "before-0", "before-1", "before-2"]
        wait_for(lambda: reported(hub, "full", "temperature") == "42.5", 30, "the report")
    finally:
        mapper.close()


def _uploads(hub: Hub) -> list[str]:
    page = hub.request("GET", "/api/v1/events?limit=1000")[1]
    return [str(item["payload"]) for item in page["items"]]


def _iso(moment: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(moment))
