"""Apps' uploads end to end: a mapper publishes on $hw/events/upload/…, edgecore queues them,
the hub keeps them, and an operator reads them with the REST API and `edgeward events`."""

from __future__ import annotations

import base64
import json
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.support.mosquitto import Mosquitto
from tests.support.mqtt import FakeMapper
from tests.support.procs import BIN, Hub, wait_for


def events(hub: Hub, query: str = "", token: str | None = None) -> tuple[int, Any]:
    return hub.request("GET", f"/api/v1/events{query}", token=token)


def listening(hub: Hub, mapper: FakeMapper) -> None:
    """Publish a probe until the hub has it: edgecore is then subscribed (an upload published
    before that reaches no subscriber; MQTT keeps nothing for a new session)."""

    def arrived() -> bool:
        mapper.publish("$hw/events/upload/probe", "probe")
        return bool(events(hub, "?device=probe")[1]["items"])

    wait_for(arrived, 20, "edgecore to take uploads")


def cli(hub: Hub, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "edgeward"), "--hub", hub.api, "events", *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_uploads_reach_the_hub_and_are_listed_and_followed(
    hub: Hub, start_edge: Any, own_broker: Mosquitto
) -> None:
    start_edge("edge-ev", mqtt=own_broker)
    mapper = FakeMapper(own_broker)
    try:
        listening(hub, mapper)
        mapper.publish("$hw/events/upload/meter-7", "reading 1")
        mapper.publish("$hw/events/upload/default/pump-1", "pressure 2.5")
        mapper.client.publish(
            "$hw/events/upload/meter-7", b"\xff\xfe raw", qos=1
        ).wait_for_publish()

        def uploads() -> list[dict[str, Any]]:
            status, listing = events(hub)
            assert status == 200 and listing["kind"] == "EventList"
            return [e for e in listing["items"] if e["device"] != "probe"]

        wait_for(lambda: len(uploads()) == 3, 20, "three uploads at the hub")
        first, second, third = uploads()
        assert (first["node"], first["device"], first["payload"]) == (
            "edge-ev",
            "meter-7",
            "reading 1",
        )
        assert second["device"] == "default/pump-1"
        assert base64.b64decode(third["payload"]) == b"\xff\xfe raw"
        assert third["encoding"] == "base64"
        assert first["seq"] < second["seq"] < third["seq"]

        table = cli(hub, "--device", "meter-7")
        assert table.returncode == 0, table.stderr
        lines = table.stdout.splitlines()
        assert lines[0].split() == ["TIME", "NODE", "SEQ", "DEVICE", "PAYLOAD"]
        assert len(lines) == 3 and "reading 1" in lines[1] and "base64:" in lines[2]

        follower = subprocess.Popen(
            [str(BIN / "edgeward"), "--hub", hub.api, "events", "-w", "-o", "json", "--limit", "1"],
            stdout=subprocess.PIPE,
            text=True,
        )
        seen: list[dict[str, Any]] = []
        reader = threading.Thread(
            target=lambda: seen.extend(json.loads(line) for line in follower.stdout or [])
        )
        reader.start()
        try:
            wait_for(lambda: len(seen) == 1, 20, "the listing's newest upload")
            mapper.publish("$hw/events/upload/meter-7", "reading 2")
            wait_for(lambda: len(seen) == 2, 20, "the new upload to be followed")
            assert seen[1]["payload"] == "reading 2" and seen[1]["id"] > seen[0]["id"]
        finally:
            follower.terminate()
            follower.wait(timeout=10)
            reader.join(timeout=10)
    finally:
        mapper.close()


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("?limit=0", "limit must be from 1 to 1000"),
        ("?limit=abc", "limit must be an integer"),
        ("?after=-1", "after must be from 0"),
        ("?after=99999999999999999999", "after must be from 0"),
        ("?node=a%00b", "node must be 1 to 253 printable characters"),
        ("?device=" + "d" * 600, "device must be 1 to 512"),
        ("?node=", "node must be 1 to 253"),
    ],
)
def test_a_bad_query_is_one_clear_400(hub: Hub, query: str, says: str) -> None:
    status, body = events(hub, query)
    assert status == 400
    assert body["reason"] == "BadRequest" and says in body["message"]


def test_a_node_token_reads_its_own_events_only(tmp_path: Path) -> None:
    hub = Hub(tmp_path / "hub", secure=True)
    hub.start()
    try:
        status, body = hub.request(
            "POST", "/api/v1/tokens", {"role": "node", "node": "gw-1", "singleUse": False}
        )
        assert status == 201, body
        node_token = body["token"]
        assert events(hub, "?node=gw-1", token=node_token)[0] == 200
        status, refused = events(hub, "?node=gw-2", token=node_token)
        assert status == 403 and "its own node's events only" in refused["message"]
        assert events(hub, "", token=node_token)[0] == 403
        assert events(hub, "", token="")[0] == 401
        status, viewer = hub.request("POST", "/api/v1/tokens", {"role": "viewer"})
        assert events(hub, "", token=viewer["token"])[0] == 200
    finally:
        hub.kill()


def test_retention_applies_when_the_hub_starts(
    tmp_path: Path, hub: Hub, start_edge: Any, own_broker: Mosquitto
) -> None:
    start_edge("edge-old", mqtt=own_broker)
    mapper = FakeMapper(own_broker)
    try:
        listening(hub, mapper)
    finally:
        mapper.close()
    hub.stop()
    hub.extra += ["--event-retention", "0.001"]
    hub.start()
    wait_for(lambda: events(hub)[1]["items"] == [], 20, "the hub to delete the old upload")
    assert "uploads older than 0.001 s (event_retention)" in (tmp_path / "hub.log").read_text()


def test_event_watches_count_against_max_watches(tmp_path: Path) -> None:
    """An events watch holds one of the hub's watch slots like any watch: past
    max_watches the next is a 429, and a slot comes back when its watch ends."""
    import http.client

    hub = Hub(tmp_path / "hub", "--max-watches", "1")
    hub.start()
    try:
        host, port = hub.api.removeprefix("http://").rsplit(":", 1)
        held = http.client.HTTPConnection(host, int(port), timeout=10)
        held.request("GET", "/api/v1/events?watch=1")
        assert held.getresponse().status == 200
        status, body = events(hub, "?watch=1")
        assert status == 429 and "max_watches" in body["message"]
        held.close()
        wait_for(
            lambda: hub.request("GET", "/healthz")[1]["watches"]["open"] == 0,
            20,
            "the slot to come back",
        )
    finally:
        hub.kill()
