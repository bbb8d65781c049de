"""No silent loss at the broker: Mosquitto drops QoS 1 messages past a client's queue
(max_queued_messages) after acknowledging them to their publisher, and says so only in
$SYS. edgecore reads that count, logs it, and reports it with the node's usage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.support.mosquitto import running
from tests.support.mqtt import FakeMapper
from tests.support.procs import Hub, wait_for


def usage(hub: Hub, node: str) -> dict[str, Any]:
    status, body = hub.request("GET", f"/api/v1/nodes/{node}")
    return body.get("status", {}).get("usage", {}) if status == 200 else {}


def test_messages_the_broker_dropped_for_an_absent_edgecore_are_reported(
    tmp_path: Path, hub: Hub, start_edge: Any
) -> None:
    with running("max_queued_messages 10\nsys_interval 1\n") as broker:
        edge = start_edge("edge-q", mqtt=broker)
        mapper = FakeMapper(broker)
        try:

            def listening() -> bool:
                mapper.publish("$hw/events/upload/probe", "probe")
                return bool(hub.request("GET", "/api/v1/events?device=probe")[1]["items"])

            wait_for(listening, 20, "edgecore to take uploads")
            wait_for(lambda: usage(hub, "edge-q").get("brokerDropped") == 0, 20, "a count of 0")
            edge.kill()  # its persistent session stays: the broker queues for it, up to 10
            for i in range(60):
                mapper.publish("$hw/events/upload/meter", f"reading {i}")
            edge.start()
            wait_for(
                lambda: usage(hub, "edge-q").get("brokerDropped", 0) >= 50,
                30,
                "the broker's drops to reach the hub",
            )
        finally:
            mapper.close()
        # said as it grew, or, when the restarted edgecore first hears of it, as a total
        log = (tmp_path / "edge-q.log").read_text()
        assert "dropped 50 messages" in log and "max_queued_messages" in log
