"""DMI, KubeEdge's gRPC mapper API, through a real edgecore's unix socket, a real hub and a
mapper speaking the same protocol definitions (tests/support/dmimapper.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml
from google.protobuf import wrappers_pb2
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from tests.support.dmimapper import DmiMapper
from tests.support.mosquitto import Mosquitto
from tests.support.mqtt import FakeMapper
from tests.support.procs import Edge, Hub, set_desired, wait_for

pytestmark = pytest.mark.integration
NS = "/api/v1/namespaces/default"
NODE = "dmi-edge"
PROTOCOL = "modbus-dmi"


def model() -> dict[str, Any]:
    return {
        "apiVersion": "devices.kubeedge.io/v1beta1",
        "kind": "DeviceModel",
        "metadata": {"name": "pump-model"},
        "spec": {
            "properties": [
                {"name": "speed", "type": "INT", "accessMode": "ReadWrite",
                 "minimum": "0", "maximum": "3000", "unit": "rpm"},
                {"name": "temperature", "type": "INT", "accessMode": "ReadOnly"},
            ]
        },
    }  # fmt: skip


def device(name: str, protocol: str = PROTOCOL, speed: str | None = "1200") -> dict[str, Any]:
    props: list[dict[str, Any]] = [
        {"name": "speed", "visitors": {"protocolName": protocol,
                                       "configData": {"register": "HoldingRegister", "offset": 2}}},
        {"name": "temperature"},  # no desired value, no visitors: sent with empty ones
    ]  # fmt: skip
    if speed is not None:
        props[0]["desired"] = {"value": speed}
    return {
        "apiVersion": "devices.kubeedge.io/v1beta1",
        "kind": "Device",
        "metadata": {"name": name},
        "spec": {
            "nodeName": NODE,
            "deviceModelRef": {"name": "pump-model"},
            "protocol": {"protocolName": protocol,
                         "configData": {"slaveID": 1, "baudRate": 9600.5, "parity": "even",
                                        "swap": True}},
            "properties": props,
        },
    }  # fmt: skip


@pytest.fixture
def world(hub: Hub, tmp_path: Path, mqtt_broker: Mosquitto) -> Iterator[tuple[Hub, Edge, Path]]:
    socket = tmp_path / "kubeedge" / "dmi.sock"
    config = tmp_path / "edgecore.yaml"
    config.write_text(yaml.safe_dump({"dmi": {"enabled": True, "socket": str(socket)}}))
    assert hub.request("POST", f"{NS}/devicemodels", model())[0] == 201
    edge = Edge(
        tmp_path / NODE, NODE, hub.edge, "--config", str(config),
        "--mqtt", f"{mqtt_broker.host}:{mqtt_broker.port}", "--status-interval", "0.5",
    )  # fmt: skip
    edge.start()
    try:
        wait_for(lambda: socket.is_socket(), 20, "edgecore's DMI socket")
        yield hub, edge, socket
    finally:
        edge.kill()


def unpacked(value: Any) -> object:
    for kind in (wrappers_pb2.StringValue, wrappers_pb2.Int64Value, wrappers_pb2.DoubleValue,
                 wrappers_pb2.BoolValue):  # fmt: skip
        if value.Is(kind.DESCRIPTOR):
            message = kind()
            value.Unpack(message)
            return message.value
    raise AssertionError(f"not a wrapper type: {value.type_url}")


def twins_of(hub: Hub, name: str) -> dict[str, Any]:
    body = hub.request("GET", f"{NS}/devices/{name}")[1]
    return {t["propertyName"]: t for t in body.get("status", {}).get("twins", [])}


def test_a_framework_mapper_registers_reports_and_gets_desired_values(
    world: tuple[Hub, Edge, Path], tmp_path: Path, mqtt_broker: Mosquitto
) -> None:
    hub, edge, socket = world
    assert hub.request("POST", f"{NS}/devices", device("pump-1"))[0] == 201
    assert hub.request("POST", f"{NS}/devices", device("other-1", protocol="opcua"))[0] == 201
    wait_for(lambda: ("default", "other-1") in edge.cached(), 15, "the devices at the edge")
    mapper = DmiMapper(socket, tmp_path / "modbus.sock", PROTOCOL)
    mqtt = FakeMapper(mqtt_broker, "$hw/events/device/default/pump-1/twin/update/result")
    try:
        mapper.serve()
        answer = mapper.register()
        # only its protocol's devices, and their models
        assert [d.name for d in answer.deviceList] == ["pump-1"]
        assert [(m.name, m.namespace) for m in answer.modelList] == [("pump-model", "default")]
        assert [p.name for p in answer.modelList[0].spec.properties] == ["speed", "temperature"]
        [pump] = answer.deviceList
        assert pump.namespace == "default" and pump.spec.deviceModelReference == "pump-model"
        assert pump.spec.protocol.protocolName == PROTOCOL
        config = {k: unpacked(v) for k, v in pump.spec.protocol.configData.data.items()}
        assert config == {"slaveID": 1, "baudRate": 9600.5, "parity": "even", "swap": True}
        speed, temperature = pump.spec.properties
        assert speed.desired.value == "1200"
        assert {k: unpacked(v) for k, v in speed.visitors.configData.data.items()} == {
            "register": "HoldingRegister",
            "offset": 2,
        }
        # what a framework mapper dereferences without checking is always there
        assert temperature.HasField("desired") and temperature.HasField("visitors")
        assert temperature.visitors.HasField("configData")

        # reports go into the twin state and the outbox like MQTT reports
        mapper.report("pump-1", {"speed": "1190", "temperature": "41"})
        wait_for(
            lambda: (
                twins_of(hub, "pump-1").get("temperature", {}).get("reported", {}).get("value")
                == "41"
            ),
            10,
            "the reported temperature at the hub",
        )
        mapper.report_state("pump-1", "ok")
        wait_for(
            lambda: (
                hub.request("GET", f"{NS}/devices/pump-1")[1]["status"].get("state") == "online"
            ),
            10,
            "the state at the hub",
        )
        # refusals are gRPC statuses with the twin rules' reasons
        with pytest.raises(GRPCError) as refused:
            mapper.report("ghost", {"speed": "1"})
        assert refused.value.status is Status.NOT_FOUND
        with pytest.raises(GRPCError) as refused:
            mapper.report_state("pump-1", "sleeping")
        assert refused.value.status is Status.INVALID_ARGUMENT
        assert "the state must be" in (refused.value.message or "")
        with pytest.raises(GRPCError) as refused:
            mapper.report("Bad_Name", {"speed": "1"})
        assert refused.value.status is Status.INVALID_ARGUMENT

        # one path at a time: MQTT messages about a DMI-served device are refused
        mqtt.publish(
            "$hw/events/device/default/pump-1/twin/update",
            {"event_id": "m1", "twin": {"speed": {"actual": {"value": "5"}}}},
        )
        result = mqtt.expect("$hw/events/device/default/pump-1/twin/update/result")
        assert result["code"] == 409 and "DMI mapper" in result["reason"]

        # a desired value set at the hub reaches the mapper as UpdateDevice
        set_speed(hub, "pump-1", "1500")
        wait_for(lambda: desired_in(mapper, "UpdateDevice", "pump-1") == "1500", 10, "UpdateDevice")
        # a device bound later: RegisterDevice (its model is known to the mapper already)
        assert hub.request("POST", f"{NS}/devices", device("pump-2", speed="900"))[0] == 201
        wait_for(lambda: desired_in(mapper, "RegisterDevice", "pump-2") == "900", 10, "Register")
        assert mapper.calls_named("CreateDeviceModel") == []
        # a device that goes: RemoveDevice; a model that goes: RemoveDeviceModel
        assert hub.request("DELETE", f"{NS}/devices/pump-2")[0] == 200
        wait_for(lambda: mapper.calls_named("RemoveDevice"), 10, "RemoveDevice")
        assert mapper.calls_named("RemoveDevice")[0].deviceName == "pump-2"

        # the mapper goes away; edgecore drops it when a call fails, and serves the device
        # over MQTT again; the mapper comes back, registers again and has the newest values
        mapper.stop_serving()
        set_speed(hub, "pump-1", "1700")
        wait_for(lambda: "cannot be reached" in edge.log(), 15, "the mapper dropped")
        mqtt.publish(
            "$hw/events/device/default/pump-1/twin/update",
            {"event_id": "m2", "twin": {"temperature": {"actual": {"value": "44"}}}},
        )
        result = mqtt.expect(
            "$hw/events/device/default/pump-1/twin/update/result",
            where=lambda b: b.get("event_id") == "m2",
        )
        assert "code" not in result
        mapper.serve()
        again = mapper.register()
        assert [d.name for d in again.deviceList] == ["pump-1"]
        assert again.deviceList[0].spec.properties[0].desired.value == "1700"
        assert hub.request("DELETE", f"{NS}/devicemodels/pump-model")[0] == 200
        wait_for(lambda: mapper.calls_named("RemoveDeviceModel"), 10, "RemoveDeviceModel")
        assert mapper.calls_named("RemoveDeviceModel")[0].modelName == "pump-model"
    finally:
        mqtt.close()
        mapper.close()


def test_bad_registrations_are_refused_and_change_nothing(
    world: tuple[Hub, Edge, Path], tmp_path: Path
) -> None:
    _hub, edge, socket = world
    for address in ("relative.sock", "/" + "x" * 200):
        mapper = DmiMapper(socket, Path(address), PROTOCOL)
        try:
            with pytest.raises(GRPCError) as refused:
                mapper.register()
            assert refused.value.status is Status.INVALID_ARGUMENT
        finally:
            mapper.close()
    empty = DmiMapper(socket, tmp_path / "m.sock", "")
    try:
        with pytest.raises(GRPCError):
            empty.register()
    finally:
        empty.close()
    # one registration per protocol, 64 at most: each holds a channel
    mappers = [DmiMapper(socket, tmp_path / f"m{i}.sock", f"proto-{i}") for i in range(65)]
    try:
        for mapper in mappers[:64]:
            mapper.register()
        mappers[0].register()  # again: it replaces its own registration
        with pytest.raises(GRPCError) as refused:
            mappers[64].register()
        assert refused.value.status is Status.RESOURCE_EXHAUSTED
    finally:
        for mapper in mappers:
            mapper.close()
    assert edge.running


def test_an_oversized_request_is_refused_unread(
    world: tuple[Hub, Edge, Path], tmp_path: Path
) -> None:
    """A report past 4 MiB is refused from its length prefix, before edgecore reads it: the
    hostile sender grows nothing, and edgecore goes on serving."""
    hub, edge, socket = world
    assert hub.request("POST", f"{NS}/devices", device("pump-big"))[0] == 201
    wait_for(lambda: ("default", "pump-big") in edge.cached(), 15, "the device at the edge")
    mapper = DmiMapper(socket, tmp_path / "big.sock", PROTOCOL)
    assert edge.proc is not None
    try:
        before = psutil.Process(edge.proc.pid).memory_info().rss
        for _ in range(3):
            with pytest.raises(GRPCError) as refused:
                mapper.report("pump-big", {"speed": "9" * (64 * 1024 * 1024)})
            assert refused.value.status is Status.RESOURCE_EXHAUSTED
        assert psutil.Process(edge.proc.pid).memory_info().rss - before < 32 * 1024 * 1024
        mapper.report("pump-big", {"temperature": "40"})  # the socket still serves
    finally:
        mapper.close()
    assert edge.running


def set_speed(hub: Hub, name: str, value: str) -> None:
    set_desired(hub, f"{NS}/devices/{name}", speed=value)


def desired_in(mapper: DmiMapper, call: str, name: str) -> str | None:
    found = [r.device for r in mapper.calls_named(call) if r.device.name == name]
    return found[-1].spec.properties[0].desired.value if found else None


def test_a_socket_that_cannot_be_made_leaves_edgecore_running(hub: Hub, tmp_path: Path) -> None:
    """A DMI socket edgecore cannot create (its directory is a file) is one error line; the
    node keeps syncing without DMI."""
    (tmp_path / "not-a-dir").write_text("")
    edge = Edge(
        tmp_path / "dmi-ro", "dmi-ro", hub.edge, "--no-mqtt",
        "--dmi-socket", str(tmp_path / "not-a-dir" / "dmi.sock"),
    )  # fmt: skip
    try:
        edge.start()
        wait_for(lambda: "DMI: cannot serve on" in edge.log(), 20, "the error line")
        wait_for(lambda: hub.request("GET", "/api/v1/nodes/dmi-ro")[0] == 200, 20, "the node")
        assert edge.running
    finally:
        edge.kill()
