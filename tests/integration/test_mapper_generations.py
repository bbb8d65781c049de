"""KubeEdge mappers of every generation against a real edgecore, Mosquitto and hub: the
payloads here are what those mappers send, verbatim (issue 13; docs/KUBEEDGE-MQTT.md)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.support.mosquitto import Mosquitto
from tests.support.mqtt import FakeMapper
from tests.support.procs import Edge, Hub, set_desired, wait_for

pytestmark = pytest.mark.integration
NS = "/api/v1/namespaces/default"
#: The device's topics as each generation's mapper names it: KubeEdge up to 1.16 wrote
#: the bare name into mappers' configs, 1.17 on the namespaced id.
SHAPES = {
    "bare": "$hw/events/device/modbus-dev",
    "namespaced": "$hw/events/device/default/modbus-dev",
}

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


@pytest.mark.parametrize("shape", SHAPES)
def test_every_state_vocabulary_reaches_the_hub_as_its_state(
    hub: Hub, mqtt_broker: Mosquitto, start_edge: Callable[..., Edge], shape: str
) -> None:
    """KubeEdge 1.6's modbus mapper's OK and DISCONNECTED, 1.6's online/offline/unknown and
    1.18's unhealthy and disconnected, in any case, are the hub's online, offline, unhealthy
    and unknown; the mapper's reading reaches the hub; a state edgecore does not know gets
    an error result and one log line however often it is sent, and changes nothing. With the
    device named by its bare name or its namespaced id, every reply in the same shape."""
    D = SHAPES[shape]
    node = f"gen-{shape}"
    assert hub.request("POST", f"{NS}/devices", modbus_device(node))[0] == 201
    edge = start_edge(node, mqtt=mqtt_broker)
    mapper = FakeMapper(mqtt_broker, f"{D}/+/+/+")
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


def test_a_bare_id_mapper_gets_its_desired_values_and_its_membership(
    hub: Hub, mqtt_broker: Mosquitto, start_edge: Callable[..., Edge]
) -> None:
    """KubeEdge 1.6's modbus mapper, configured with modbus-dev: `twin set` reaches it as a
    delta on its bare topic (in both shapes before it has spoken, in its own after), and the
    node's membership lists it by the id it speaks."""
    bare = SHAPES["bare"]
    assert hub.request("POST", f"{NS}/devices", modbus_device("bare-edge"))[0] == 201
    edge = start_edge("bare-edge", mqtt=mqtt_broker)
    mapper = FakeMapper(
        mqtt_broker, f"{bare}/twin/update/delta", f"{SHAPES['namespaced']}/twin/update/delta",
        "$hw/events/node/bare-edge/membership/get/result",
    )  # fmt: skip
    try:
        wait_for(lambda: ("default", "modbus-dev") in edge.cached(), 15, "the device at the edge")
        set_switch(hub, "1")
        # not heard from yet: both shapes, so a mapper that only listens hears it
        assert mapper.expect(f"{bare}/twin/update/delta")["delta"] == {"switch": "1"}
        assert mapper.expect(f"{SHAPES['namespaced']}/twin/update/delta")["delta"] == {
            "switch": "1"
        }
        mapper.publish(f"{bare}/twin/update", MODBUS_TWIN)
        mapper.publish("$hw/events/node/bare-edge/membership/get", {"event_id": "m1"})
        listing = mapper.expect("$hw/events/node/bare-edge/membership/get/result")
        assert [d["id"] for d in listing["devices"]] == ["modbus-dev"]
        set_switch(hub, "0")
        mapper.publish(f"{bare}/twin/update", MODBUS_TWIN.replace('"0"', '"1"'))
        set_switch(hub, "1")
        delta = mapper.expect(
            f"{bare}/twin/update/delta", where=lambda b: b["delta"].get("switch") == "1"
        )
        assert delta["twin"]["switch"]["expected"]["value"] == "1"
        with pytest.raises(AssertionError):  # now only in the shape it speaks
            mapper.expect(f"{SHAPES['namespaced']}/twin/update/delta", timeout=1.5)
    finally:
        mapper.close()


def test_a_name_in_two_namespaces_is_an_explicit_conflict(
    hub: Hub, mqtt_broker: Mosquitto, start_edge: Callable[..., Edge]
) -> None:
    """modbus-dev in default and in plant on one node: the bare id keeps meaning the
    configured namespace's device, and the conflict is logged, once a minute at most."""
    for namespace in ("default", "plant"):
        device = modbus_device("twin-edge") | {"metadata": {"name": "modbus-dev"}}
        status, body = hub.request("POST", f"/api/v1/namespaces/{namespace}/devices", device)
        assert status == 201, body
    edge = start_edge("twin-edge", mqtt=mqtt_broker)
    mapper = FakeMapper(mqtt_broker, f"{SHAPES['bare']}/twin/update/result")
    try:
        wait_for(lambda: ("plant", "modbus-dev") in edge.cached(), 15, "both at the edge")
        for i in range(3):
            mapper.publish(f"{SHAPES['bare']}/twin/update", MODBUS_TWIN.replace('""', f'"c{i}"'))
            assert mapper.expect(f"{SHAPES['bare']}/twin/update/result")["event_id"] == f"c{i}"

        def reported(namespace: str) -> list[Any]:
            path = f"/api/v1/namespaces/{namespace}/devices/modbus-dev"
            twins = hub.request("GET", path)[1].get("status", {}).get("twins", [])
            return [t["reported"]["value"] for t in twins if "reported" in t]

        wait_for(lambda: reported("default") == ["0"], 10, "the report on default/modbus-dev")
        assert reported("plant") == []
        lines = [line for line in edge.log().splitlines() if "bare device id" in line]
        assert len(lines) == 1, lines
        assert "means default/modbus-dev" in lines[0] and "plant/modbus-dev" in lines[0]
    finally:
        mapper.close()


def set_switch(hub: Hub, value: str) -> None:
    set_desired(hub, f"{NS}/devices/modbus-dev", switch=value)
