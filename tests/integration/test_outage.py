"""A node's time alone, end to end: the hub goes away, the gateway keeps buffering and is
restarted meanwhile, and when the hub is back the node reports the outage, which the hub
keeps on its Node and the CLI shows."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

from tests.support.mosquitto import Mosquitto
from tests.support.mqtt import FakeMapper
from tests.support.procs import BIN, Hub, wait_for

UPLOADS = 25
#: The edge's hub.outage_min_seconds here: shorter outages are not reported.
MIN_SECONDS = 3


def outages(hub: Hub, node: str) -> list[dict[str, Any]]:
    status, body = hub.request("GET", f"/api/v1/nodes/{node}")
    return body.get("status", {}).get("outages", []) if status == 200 else []


def test_an_outage_with_a_restart_is_reported_when_the_hub_is_back(
    tmp_path: Path, hub: Hub, start_edge: Any, own_broker: Mosquitto
) -> None:
    config = tmp_path / "edge-out.yaml"
    config.write_text(f"hub:\n  outage_min_seconds: {MIN_SECONDS}\n")
    edge = start_edge("edge-out", "--config", str(config), mqtt=own_broker)
    mapper = FakeMapper(own_broker)
    try:

        def listening() -> bool:
            mapper.publish("$hw/events/upload/probe", "probe")
            return bool(hub.request("GET", "/api/v1/events?device=probe")[1]["items"])

        wait_for(listening, 20, "edgecore to take uploads")
        time.sleep(1)  # an ack after the probe: the node was live until now
        hub.kill()
        began = time.time()
        wait_for(
            lambda: "reconnecting in" in (tmp_path / "edge-out.log").read_text(),
            20,
            "edgecore to notice it is alone",
        )
        for i in range(UPLOADS):
            mapper.publish("$hw/events/upload/meter", f"reading {i}")
        wait_for(
            lambda: (
                f"reading {UPLOADS - 1}".encode() in (edge.data_dir / "edge.db").read_bytes()
                or _in_wal(edge.data_dir, f"reading {UPLOADS - 1}")
            ),
            20,
            "the uploads to be buffered",
        )
        edge.kill()  # a crash while alone
        edge.start()
        time.sleep(max(0.0, MIN_SECONDS + 1 - (time.time() - began)))
        hub.start()
        (outage,) = wait_for(lambda: outages(hub, "edge-out"), 30, "the outage report")
    finally:
        mapper.close()
    assert outage["restarts"] == 1
    assert outage["buffered"] == UPLOADS
    assert outage["durationSeconds"] >= MIN_SECONDS
    described = _cli(hub, "describe", "node", "edge-out").stdout
    assert "Outages:" in described
    assert f"1 restart, {UPLOADS} reports, 0 dropped" in described
    wide = _cli(hub, "get", "nodes", "-o", "wide").stdout.splitlines()
    assert wide[0].split()[-1] == "LAST-OUTAGE" and wide[1].rstrip().endswith("ago")


def _in_wal(data_dir: Path, text: str) -> bool:
    wal = data_dir / "edge.db-wal"
    return wal.exists() and text.encode() in wal.read_bytes()


def _cli(hub: Hub, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "edgeward"), "--hub", hub.api, *args],
        capture_output=True,
        text=True,
        timeout=30,
    )
