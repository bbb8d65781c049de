"""The device-twin loop end to end: real hub, edgecore, Mosquitto, and a mapper on MQTT."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.certs import make_pki
from tests.support.mosquitto import Mosquitto
from tests.support.mqtt import FakeMapper
from tests.support.procs import BIN, Edge, Hub, wait_for

NS = "/api/v1/namespaces/default"
D = "$hw/events/device/default"


def model() -> dict[str, Any]:
    return {
        "apiVersion": "devices.kubeedge.io/v1beta1",
        "kind": "DeviceModel",
        "metadata": {"name": "thermostat"},
        "spec": {
            "properties": [
                {"name": "target", "type": "INT", "accessMode": "ReadWrite"},
                {"name": "temperature", "type": "FLOAT", "accessMode": "ReadOnly"},
            ]
        },
    }


def device(name: str, node: str | None, target: str | None = "21") -> dict[str, Any]:
    props: list[dict[str, Any]] = [{"name": "temperature"}]
    if target is not None:
        props.insert(0, {"name": "target", "desired": {"value": target}})
    spec: dict[str, Any] = {"deviceModelRef": {"name": "thermostat"}, "properties": props}
    if node:
        spec["nodeName"] = node
    return {
        "apiVersion": "devices.kubeedge.io/v1beta1",
        "kind": "Device",
        "metadata": {"name": name},
        "spec": spec,
    }


def cli(hub: Hub, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "edgeward"), "--hub", hub.api, *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


def twins_of(hub: Hub, name: str) -> dict[str, dict[str, Any]]:
    status, body = hub.request("GET", f"{NS}/devices/{name}")
    assert status == 200, body
    return {t["propertyName"]: t for t in body.get("status", {}).get("twins", [])}


def reported(hub: Hub, name: str, prop: str) -> str | None:
    return twins_of(hub, name).get(prop, {}).get("reported", {}).get("value")


def update(event: str, **actual: str) -> dict[str, Any]:
    return {
        "event_id": event,
        "timestamp": 0,
        "twin": {k: {"actual": {"value": v}} for k, v in actual.items()},
    }


@pytest.fixture
def setup(hub: Hub, start_edge: Any, mqtt_broker: Mosquitto) -> Iterator[tuple[Hub, Edge]]:
    assert hub.request("POST", f"{NS}/devicemodels", model())[0] == 201
    edge = start_edge("edge1", mqtt=mqtt_broker)
    yield hub, edge


def test_desired_reaches_the_mapper_and_reported_reaches_the_hub(
    setup: tuple[Hub, Edge], mqtt_broker: Mosquitto
) -> None:
    """twin set → hub → edge → expected + delta on MQTT → the mapper reports actual → result
    and document on MQTT → hub: twin get shows desired, reported and observedDesired, and the
    device is in sync."""
    hub, _edge = setup
    mapper = FakeMapper(mqtt_broker, f"{D}/thermo/twin/update/#")
    try:
        assert hub.request("POST", f"{NS}/devices", device("thermo", "edge1"))[0] == 201
        delta = mapper.expect(f"{D}/thermo/twin/update/delta")
        assert delta["delta"] == {"target": "21"}
        assert delta["twin"]["target"]["expected"]["value"] == "21"
        assert "expected_version" not in delta["twin"]["target"], "versions leak to mappers"

        assert cli(hub, "twin", "set", "thermo", "target=23").returncode == 0
        delta = mapper.expect(
            f"{D}/thermo/twin/update/delta", where=lambda b: b["delta"].get("target") == "23"
        )
        mapper.publish(f"{D}/thermo/twin/update", update("r1", target="23", temperature="20.5"))
        result = mapper.expect(f"{D}/thermo/twin/update/result")
        assert result["event_id"] == "r1"
        assert result["twin"]["target"]["actual"]["value"] == "23"
        document = mapper.expect(
            f"{D}/thermo/twin/update/document", where=lambda b: b["event_id"] == "r1"
        )
        assert document["twin"]["temperature"]["current"]["actual"]["value"] == "20.5"
        assert "actual" not in document["twin"]["temperature"]["last"]

        wait_for(
            lambda: reported(hub, "thermo", "temperature") == "20.5",
            10,
            "the reported value to reach the hub",
        )
        twin = twins_of(hub, "thermo")["target"]
        assert twin["reported"]["value"] == "23"
        assert twin["observedDesired"]["value"] == "23"
        assert int(twin["reported"]["metadata"]["timestamp"]) > 0
        shown = cli(hub, "twin", "get", "thermo")
        assert shown.returncode == 0
        row = next(line.split() for line in shown.stdout.splitlines() if line.startswith("target"))
        assert row[1:4] == ["23", "23", "23"]
        wide = cli(hub, "get", "devices", "-o", "wide").stdout.splitlines()[1].split()
        assert wide[-1] == "yes"
    finally:
        mapper.close()


def test_device_state_reaches_the_device_status(
    setup: tuple[Hub, Edge], mqtt_broker: Mosquitto
) -> None:
    """A mapper's state/update is answered on MQTT and shows in the Device's status."""
    hub, _edge = setup
    mapper = FakeMapper(mqtt_broker, f"{D}/fan/state/update/result")
    try:
        assert hub.request("POST", f"{NS}/devices", device("fan", "edge1"))[0] == 201
        wait_for(lambda: hub.request("GET", "/api/v1/nodes/edge1")[0] == 200, 10, "the node")

        def answered() -> bool:
            mapper.publish(
                f"{D}/fan/state/update", {"event_id": "s1", "timestamp": 0, "state": "online"}
            )
            reply = mapper.expect(f"{D}/fan/state/update/result", timeout=2)
            return reply["device"]["state"] == "online"

        wait_for(answered, 15, "the edge to know the device and answer")
        wait_for(
            lambda: hub.request("GET", f"{NS}/devices/fan")[1]["status"].get("state") == "online",
            10,
            "the state to reach the hub",
        )
        status = hub.request("GET", f"{NS}/devices/fan")[1]["status"]
        assert status["lastOnlineTime"].endswith("Z")
    finally:
        mapper.close()


def test_membership_follows_binding(setup: tuple[Hub, Edge], mqtt_broker: Mosquitto) -> None:
    """Mappers get membership/updated when a device is bound to or unbound from the node, and
    membership/get answers from the cache."""
    hub, _edge = setup
    mapper = FakeMapper(mqtt_broker, "$hw/events/node/edge1/membership/#")
    try:
        assert hub.request("POST", f"{NS}/devices", device("member", "edge1"))[0] == 201
        added = mapper.expect("$hw/events/node/edge1/membership/updated")
        assert [d["id"] for d in added["added_devices"]] == ["default/member"]

        mapper.publish("$hw/events/node/anything/membership/get", {"event_id": "m1"})
        got = mapper.expect("$hw/events/node/edge1/membership/get/result")
        assert got["event_id"] == "m1"
        assert [d["id"] for d in got["devices"]] == ["default/member"]

        status, body = hub.request("PUT", f"{NS}/devices/member", device("member", "other"))
        assert status == 200, body
        removed = mapper.expect("$hw/events/node/edge1/membership/updated")
        assert [d["id"] for d in removed["removed_devices"]] == ["default/member"]
    finally:
        mapper.close()


def test_reports_made_while_the_hub_is_down_arrive_later(
    setup: tuple[Hub, Edge], mqtt_broker: Mosquitto
) -> None:
    """Reported values measured while the hub is unreachable are kept in the outbox and reach
    the hub after it returns (KubeEdge drops them)."""
    hub, _edge = setup
    mapper = FakeMapper(mqtt_broker, f"{D}/offline/twin/update/result")
    try:
        assert hub.request("POST", f"{NS}/devices", device("offline", "edge1"))[0] == 201
        wait_for(
            lambda: twins_of(hub, "offline").get("target", {}).get("observedDesired"),
            10,
            "the edge to take the device",
        )
        hub.kill()
        for i in range(5):
            mapper.publish(f"{D}/offline/twin/update", update(f"o{i}", temperature=f"1{i}.5"))
            assert mapper.expect(f"{D}/offline/twin/update/result")["event_id"] == f"o{i}"
        hub.start()
        wait_for(
            lambda: reported(hub, "offline", "temperature") == "14.5",
            20,
            "the offline report to reach the restarted hub",
        )
    finally:
        mapper.close()


def test_mapper_reports_while_edgecore_is_down_are_not_lost(
    setup: tuple[Hub, Edge], mqtt_broker: Mosquitto
) -> None:
    """edgecore keeps a persistent MQTT session: what a mapper publishes while edgecore is
    restarting is delivered when it comes back, and reaches the hub."""
    hub, edge = setup
    mapper = FakeMapper(mqtt_broker)
    try:
        assert hub.request("POST", f"{NS}/devices", device("durable", "edge1"))[0] == 201
        wait_for(
            lambda: twins_of(hub, "durable").get("target", {}).get("observedDesired"),
            10,
            "the edge to take the device",
        )
        edge.kill()
        mapper.publish(f"{D}/durable/twin/update", update("while-down", temperature="30.5"))
        edge.start()
        wait_for(
            lambda: reported(hub, "durable", "temperature") == "30.5",
            20,
            "the report made while edgecore was down",
        )
    finally:
        mapper.close()


def test_a_burst_is_answered_stored_and_acknowledged_in_full(
    setup: tuple[Hub, Edge], mqtt_broker: Mosquitto
) -> None:
    """Updates queued while edgecore was down arrive together and are handled in batches: each
    gets its result, the last value is what the hub ends up with, and every message was
    acknowledged to the broker (a restarted edgecore is not handed any of them again)."""
    hub, edge = setup
    mapper = FakeMapper(mqtt_broker, f"{D}/burst/twin/update/result", f"{D}/burst/twin/get/result")
    try:
        assert hub.request("POST", f"{NS}/devices", device("burst", "edge1"))[0] == 201
        wait_for(
            lambda: twins_of(hub, "burst").get("target", {}).get("observedDesired"),
            10,
            "the edge to take the device",
        )
        edge.kill()
        for i in range(30):
            mapper.publish(f"{D}/burst/twin/update", update(f"b{i}", temperature=f"{i}.5"))
        edge.start()
        for i in range(30):
            assert mapper.expect(f"{D}/burst/twin/update/result")["event_id"] == f"b{i}"
        wait_for(
            lambda: reported(hub, "burst", "temperature") == "29.5",
            20,
            "the last value of the burst to reach the hub",
        )
        edge.stop()
        edge.start()
        # a get answered after the restart comes after anything the broker redelivered
        mapper.publish(f"{D}/burst/twin/get", {"event_id": "after-restart"})
        got = mapper.expect(f"{D}/burst/twin/get/result", timeout=20)
        assert got["twin"]["temperature"]["actual"]["value"] == "29.5"
        assert mapper.drain() == [], "messages were handed to edgecore again"
    finally:
        mapper.close()


def test_edgecore_reconnects_to_a_restarted_broker(
    hub: Hub, start_edge: Any, own_broker: Mosquitto
) -> None:
    """After the broker restarts, edgecore reconnects and re-subscribes by itself."""
    assert hub.request("POST", f"{NS}/devicemodels", model())[0] == 201
    edge = start_edge("edge1", mqtt=own_broker)
    assert hub.request("POST", f"{NS}/devices", device("bounce", "edge1"))[0] == 201
    wait_for(lambda: "MQTT: connected" in edge.log(), 10, "the first MQTT connection")
    own_broker.restart()
    mapper = FakeMapper(own_broker, f"{D}/bounce/twin/update/result")
    try:

        def answered() -> bool:
            mapper.publish(f"{D}/bounce/twin/update", update("b", temperature="1.5"))
            return mapper.expect(f"{D}/bounce/twin/update/result", timeout=1)["event_id"] == "b"

        wait_for(answered, 30, "edgecore to answer through the restarted broker")
        assert edge.log().count("MQTT: connected") >= 2
    finally:
        mapper.close()


def test_bad_payloads_get_kubeedge_errors_and_change_nothing(
    setup: tuple[Hub, Edge], mqtt_broker: Mosquitto
) -> None:
    """Garbage on the twin topics is answered with KubeEdge's error results, and the device
    keeps working."""
    hub, _edge = setup
    mapper = FakeMapper(
        mqtt_broker,
        "$hw/events/device/+/+/twin/update/result",
        "$hw/events/device//twin/update/result",
    )
    try:
        assert hub.request("POST", f"{NS}/devices", device("sturdy", "edge1"))[0] == 201
        wait_for(
            lambda: twins_of(hub, "sturdy").get("target", {}).get("observedDesired"),
            10,
            "the edge to take the device",
        )
        mapper.publish(f"{D}/sturdy/twin/update", b"\x00not json")
        err = mapper.expect("$hw/events/device//twin/update/result")
        assert err["code"] == 400
        mapper.publish(f"{D}/sturdy/twin/update", update("t", target="warm"))
        err = mapper.expect(f"{D}/sturdy/twin/update/result")
        assert (err["code"], err["reason"]) == (400, "the value is not int or integer")
        mapper.publish(f"{D}/ghost/twin/update", update("g", target="1"))
        err = mapper.expect(f"{D}/ghost/twin/update/result")
        assert err["code"] == 404
        mapper.publish(f"{D}/sturdy/twin/update", update("ok", temperature="2.5"))
        assert mapper.expect(f"{D}/sturdy/twin/update/result")["event_id"] == "ok"
        wait_for(lambda: reported(hub, "sturdy", "temperature") == "2.5", 10, "the good report")
        assert reported(hub, "sturdy", "target") is None
    finally:
        mapper.close()


def test_operator_write_after_a_local_change_wins_and_the_local_value_is_reported(
    setup: tuple[Hub, Edge], mqtt_broker: Mosquitto
) -> None:
    """A mapper changing expected locally is reported to the hub as observedDesired; a later
    operator write is still accepted at the edge (KubeEdge before 1.15 refused it), even one
    that re-asserts the value the spec already holds."""
    hub, _edge = setup
    mapper = FakeMapper(mqtt_broker, f"{D}/local/twin/update/#")
    try:
        assert hub.request("POST", f"{NS}/devices", device("local", "edge1"))[0] == 201
        mapper.expect(f"{D}/local/twin/update/delta")
        mapper.publish(
            f"{D}/local/twin/update",
            {"event_id": "l", "timestamp": 0, "twin": {"target": {"expected": {"value": "18"}}}},
        )
        mapper.expect(f"{D}/local/twin/update/result")
        wait_for(
            lambda: (
                twins_of(hub, "local")["target"].get("observedDesired", {}).get("value") == "18"
            ),
            10,
            "the local change to be reported",
        )
        assert cli(hub, "twin", "set", "local", "target=21").returncode == 0
        delta = mapper.expect(
            f"{D}/local/twin/update/delta", where=lambda b: b["delta"].get("target") == "21"
        )
        assert delta["twin"]["target"]["expected"]["value"] == "21"
        wait_for(
            lambda: twins_of(hub, "local")["target"]["observedDesired"]["value"] == "21",
            10,
            "the operator's value to be applied at the edge",
        )
    finally:
        mapper.close()


def test_desired_value_of_the_wrong_type_is_refused_by_the_api(setup: tuple[Hub, Edge]) -> None:
    """A desired value that does not fit its DeviceModel type is a 422, before any edge."""
    hub, _edge = setup
    status, body = hub.request("POST", f"{NS}/devices", device("typed", "edge1", target="warm"))
    assert status == 422, body
    assert "the value is not int or integer" in body["message"]
    assert hub.request("POST", f"{NS}/devices", device("typed", "edge1", target="19"))[0] == 201
    result = cli(hub, "twin", "set", "typed", "target=1.5")
    assert result.returncode == 1
    assert "not int" in result.stderr


@pytest.mark.parametrize("form", ["host and port", "ssl:// URL"])
def test_edgecore_talks_to_a_broker_over_tls_with_a_client_certificate(
    hub: Hub, tmp_path: Path, form: str
) -> None:
    """With mqtt.tls_* set, edgecore verifies the broker and presents its certificate; a broker
    that demands client certificates serves it. The broker may be given as KubeEdge writes
    it (mqtt.broker: ssl://HOST:PORT)."""
    pki = make_pki(tmp_path / "pki")
    broker = Mosquitto(
        extra_config=(
            f"cafile {pki.ca}\ncertfile {pki.server_cert}\nkeyfile {pki.server_key}\n"
            "require_certificate true\n"
        )
    )
    broker.start()
    config = tmp_path / "edge.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "mqtt": {
                    **(
                        {"host": broker.host, "port": broker.port}
                        if form == "host and port"
                        else {"broker": f"ssl://{broker.host}:{broker.port}"}
                    ),
                    "tls_ca_file": str(pki.ca),
                    "tls_cert_file": str(pki.client_cert),
                    "tls_key_file": str(pki.client_key),
                }
            }
        )
    )
    edge = Edge(
        tmp_path / "tls-edge",
        "tls-edge",
        hub.edge,
        "--config",
        str(config),
        "--status-interval",
        "0.5",
    )
    try:
        assert hub.request("POST", f"{NS}/devicemodels", model())[0] == 201
        assert hub.request("POST", f"{NS}/devices", device("secure", "tls-edge"))[0] == 201
        edge.start()
        wait_for(lambda: "MQTT: connected" in edge.log(), 15, "a TLS connection to the broker")
        wait_for(
            lambda: twins_of(hub, "secure").get("target", {}).get("observedDesired"),
            10,
            "the edge to take the device",
        )
    finally:
        edge.kill()
        broker.cleanup()


@pytest.mark.parametrize("scheme", ["tcp", "mqtt"])
def test_edgecore_takes_the_broker_url_kubeedge_writes(
    hub: Hub, tmp_path: Path, mqtt_broker: Mosquitto, scheme: str
) -> None:
    """--mqtt tcp://HOST:PORT (KubeEdge's mqttServerExternal, its mappers' configs) and
    mqtt://HOST:PORT reach the broker, and the edge serves its devices through it."""
    node = f"url-{scheme}"
    edge = Edge(
        tmp_path / node,
        node,
        hub.edge,
        "--mqtt",
        f"{scheme}://{mqtt_broker.host}:{mqtt_broker.port}",
        "--status-interval",
        "0.5",
    )
    mapper = FakeMapper(mqtt_broker, f"{D}/by-{scheme}/twin/update/result")
    try:
        assert hub.request("POST", f"{NS}/devicemodels", model())[0] in (201, 409)
        assert hub.request("POST", f"{NS}/devices", device(f"by-{scheme}", node))[0] == 201
        edge.start()
        connected = f"MQTT: connected to {mqtt_broker.host}:{mqtt_broker.port}"
        wait_for(lambda: connected in edge.log(), 15, "the broker named by the URL")
        wait_for(
            lambda: twins_of(hub, f"by-{scheme}").get("target", {}).get("observedDesired"),
            10,
            "the edge to take the device",
        )
        mapper.publish(f"{D}/by-{scheme}/twin/update", update("u1", target="19"))
        assert mapper.expect(f"{D}/by-{scheme}/twin/update/result")["event_id"] == "u1"
    finally:
        mapper.close()
        edge.kill()


def test_edgecore_logs_in_with_a_password_and_says_when_it_is_refused(
    hub: Hub, tmp_path: Path
) -> None:
    """mqtt.username and password_file log edgecore in to a broker that refuses anonymous
    clients; a wrong password is logged as a refusal and retried, not a crash."""
    passwords = tmp_path / "passwd"
    subprocess.run(
        ["mosquitto_passwd", "-c", "-b", str(passwords), "edge", "s3cret"],
        check=True,
        capture_output=True,
    )
    passwords.chmod(0o644)
    broker = Mosquitto(extra_config=f"allow_anonymous false\npassword_file {passwords}\n")
    broker.start()
    edges = []
    try:
        for name, secret in (("good-login", "s3cret"), ("bad-login", "wrong")):
            secret_file = tmp_path / f"{name}.secret"
            secret_file.write_text(secret + "\n")
            config = tmp_path / f"{name}.yaml"
            config.write_text(
                yaml.safe_dump(
                    {
                        "mqtt": {
                            "host": broker.host,
                            "port": broker.port,
                            "username": "edge",
                            "password_file": str(secret_file),
                            "reconnect_max_delay": 1,
                        }
                    }
                )
            )
            edge = Edge(tmp_path / name, name, hub.edge, "--config", str(config))
            edge.start()
            edges.append(edge)
        good, bad = edges
        wait_for(lambda: "MQTT: connected" in good.log(), 15, "the good login")
        wait_for(lambda: bad.log().count("refused the connection") >= 2, 15, "refusals, retried")
        assert bad.running
        assert "MQTT: connected" not in bad.log()
    finally:
        for edge in edges:
            edge.kill()
        broker.cleanup()


def test_mqtt_disconnects_are_clean_and_edgecore_still_answers_after_them(
    hub: Hub, start_edge: Any, own_broker: Mosquitto
) -> None:
    """A broker restart and edgecore's own stop close the MQTT socket without a traceback in the
    log: edgecore reconnects, answers a twin update through the restarted broker, and exits 0."""
    assert hub.request("POST", f"{NS}/devicemodels", model())[0] == 201
    edge = start_edge("edge1", mqtt=own_broker)
    assert hub.request("POST", f"{NS}/devices", device("clean", "edge1"))[0] == 201
    wait_for(lambda: "MQTT: connected" in edge.log(), 10, "the first MQTT connection")
    own_broker.restart()
    wait_for(lambda: edge.log().count("MQTT: connected") >= 2, 30, "a reconnection")
    mapper = FakeMapper(own_broker, f"{D}/clean/twin/update/result")
    try:

        def answered() -> bool:
            mapper.publish(f"{D}/clean/twin/update", update("c", temperature="1.5"))
            return mapper.expect(f"{D}/clean/twin/update/result", timeout=1)["event_id"] == "c"

        wait_for(answered, 30, "edgecore to answer through the restarted broker")
    finally:
        mapper.close()
    assert edge.stop() == 0
    log = edge.log()
    assert "Traceback" not in log, log
    assert "Exception in callback" not in log, log
