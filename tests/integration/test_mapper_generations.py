"""KubeEdge mappers of every generation against a real edgecore, Mosquitto and hub: the
payloads here are what those mappers send, verbatim (issue 13; docs/KUBEEDGE-MQTT.md)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.support.mosquitto import Mosquitto
from tests.support.mqtt import FakeMapper
from tests.support.procs import Edge, Hub, wait_for

pytestmark = pytest.mark.integration
NS = "/api/v1/namespaces/default"
D = "$hw/events/device/default/modbus-dev"

#: KubeEdge v1.6.2's modbus-go mapper, verbatim, at start and with its device unreachable.
MODBUS_TWIN = (
    '{"event_id":"","timestamp":1795999961739,"twin":{"switch":{"actual":{"value":"0",'
    '"metadata":{}},"metadata":{"type":"int"}}}}'
)
MODBUS_OK = '{"event_id":"","timestamp":1795999961740,"state":"OK","attributes":null}'
MODBUS_DISCONNECTED = (
    '{"event_id":"","timestamp":1796000222274,"state":"DISCONNECTED","attributes":null}'
)


def modbus_device(node: str) -> dict[str, Any]:
    return {
        "apiVersion": "devices.kubeedge.io/v1beta1",
        "kind": "Device",
        "metadata": {"name": "modbus-dev"},
        "spec": {"nodeName": node, "properties": [{"name": "switch"}]},
    }


def hub_state(hub: Hub) -> str | None:
    return hub.request("GET", f"{NS}/devices/modbus-dev")[1].get("status", {}).get("state")


def test_every_state_vocabulary_reaches_the_hub_as_its_state(
    hub: Hub, mqtt_broker: Mosquitto, start_edge: Callable[..., Edge]
) -> None:
    """KubeEdge 1.6's modbus mapper's OK and DISCONNECTED, 1.6's online/offline/unknown and
    1.18's unhealthy and disconnected, in any case, are the hub's online, offline, unhealthy
    and unknown; the mapper's reading reaches the hub; a state edgecore does not know gets
    an error result and one log line however often it is sent, and changes nothing."""
    assert hub.request("POST", f"{NS}/devices", modbus_device("gen-edge"))[0] == 201
    edge = start_edge("gen-edge", mqtt=mqtt_broker)
    mapper = FakeMapper(mqtt_broker, f"{D}/#")
    try:
        wait_for(lambda: ("default", "modbus-dev") in edge.cached(), 15, "the device at the edge")
        mapper.publish(f"{D}/twin/update", MODBUS_TWIN)
        mapper.publish(f"{D}/state/update", MODBUS_OK)
        assert mapper.expect(f"{D}/state/update/result")["device"]["state"] == "OK"
        wait_for(lambda: hub_state(hub) == "online", 10, "OK to reach the hub as online")

        def reported_switch() -> Any:
            twins = hub.request("GET", f"{NS}/devices/modbus-dev")[1]["status"].get("twins", [])
            return [t["reported"]["value"] for t in twins if t["propertyName"] == "switch"]

        wait_for(lambda: reported_switch() == ["0"], 10, "the mapper's reading at the hub")

        for _ in range(5):
            mapper.publish(f"{D}/state/update", MODBUS_DISCONNECTED)
        wait_for(lambda: hub_state(hub) == "offline", 10, "DISCONNECTED as offline")
        for sent, meant in (
            ("online", "online"),
            ("unhealthy", "unhealthy"),
            ("Unknown", "unknown"),
            ("disconnected", "offline"),
            ("ok", "online"),
        ):
            mapper.publish(f"{D}/state/update", {"event_id": sent, "state": sent})
            mapper.expect(  # the result echoes the mapper's spelling
                f"{D}/state/update/result",
                where=lambda b, s=sent: b.get("device", {}).get("state") == s,
            )
            wait_for(lambda m=meant: hub_state(hub) == m, 10, f"{sent} as {meant}")

        for i in range(30):
            mapper.publish(f"{D}/state/update", {"event_id": f"z{i}", "state": "sleeping"})
        refusal = mapper.expect(f"{D}/state/update/result", where=lambda b: b.get("code"))
        assert refusal["code"] == 400 and refusal["event_id"] == "z0"
        assert "disconnected" in refusal["reason"]
        for i in range(1, 30):
            refusal = mapper.expect(f"{D}/state/update/result", where=lambda b: "code" in b)
            assert refusal["event_id"] == f"z{i}"
        assert hub_state(hub) == "online"
        lines = [line for line in edge.log().splitlines() if f"refused {D}/state/update" in line]
        assert len(lines) == 1, lines
        assert "the state must be" in lines[0]
    finally:
        mapper.close()
