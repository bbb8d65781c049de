"""`make demo`'s MQTT broker: an existing one, a started Mosquitto, or the embedded amqtt."""

from __future__ import annotations

import os
import subprocess
import threading
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from edgeward.brokers import (
    NoBrokerError,
    amqtt_binary,
    free_port,
    mqtt_answers,
    start_demo_broker,
)
from tests.support.mosquitto import Mosquitto
from tests.support.mqtt import FakeMapper
from tests.support.procs import Edge, Hub, wait_for

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def round_trip(host: str, port: int) -> None:
    """Subscribe, publish with QoS 1 and receive it back, through the broker at host:port."""
    topic = f"edgeward/test/{uuid.uuid4().hex}"
    got = threading.Event()
    received: list[tuple[bytes, int]] = []
    subscribed = threading.Event()

    def on_message(client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        received.append((msg.payload, msg.qos))
        got.set()

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client.on_message = on_message
    client.on_subscribe = lambda *args: subscribed.set()
    client.connect(host, port)
    client.loop_start()
    try:
        client.subscribe(topic, qos=1)
        assert subscribed.wait(10), "no SUBACK"
        client.publish(topic, b"hello", qos=1).wait_for_publish(10)
        assert got.wait(10), "the message did not come back"
        assert received == [(b"hello", 1)]
    finally:
        client.disconnect()
        client.loop_stop()


def test_a_running_broker_is_used_and_left_running(tmp_path: Path, own_broker: Mosquitto) -> None:
    """A broker that answers CONNACK at the probed address is used as is; stop() leaves it up."""
    handle = start_demo_broker(tmp_path, probe=(own_broker.host, own_broker.port))
    assert (handle.kind, handle.host, handle.port) == ("running", own_broker.host, own_broker.port)
    handle.stop()
    round_trip(handle.host, handle.port)


def test_mosquitto_is_started_when_nothing_runs(tmp_path: Path) -> None:
    """With nothing at the probed address, Mosquitto is started on a free port with its files in
    the work directory, carries a QoS 1 round trip, and stop() ends it."""
    nothing = ("127.0.0.1", free_port())
    handle = start_demo_broker(tmp_path, probe=nothing, prefer=("running", "mosquitto"))
    try:
        assert handle.kind == "mosquitto"
        assert handle.port != nothing[1]
        round_trip(handle.host, handle.port)
        conf = (tmp_path / "mosquitto.conf").read_text()
        assert "set_tcp_nodelay true" in conf and f"listener {handle.port} 127.0.0.1" in conf
    finally:
        handle.stop()
    assert handle.process is not None and handle.process.poll() is not None
    assert not mqtt_answers(handle.host, handle.port)


@pytest.fixture(scope="session")
def broker_venv() -> Path:
    """.venv-broker made by scripts/broker-venv (slow the first time: it installs amqtt)."""
    result = subprocess.run(
        [str(REPO / "scripts" / "broker-venv")],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    venv = REPO / ".venv-broker"
    assert amqtt_binary(venv) == venv / "bin" / "amqtt"
    return venv


def test_broker_venv_is_idempotent(broker_venv: Path) -> None:
    """A second run of scripts/broker-venv finds amqtt and changes nothing."""
    before = (broker_venv / "bin" / "amqtt").stat().st_mtime_ns
    result = subprocess.run(
        [str(REPO / "scripts" / "broker-venv")], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and result.stderr == ""
    assert (broker_venv / "bin" / "amqtt").stat().st_mtime_ns == before


def test_the_embedded_amqtt_broker_carries_a_qos1_round_trip(
    tmp_path: Path, broker_venv: Path
) -> None:
    """The embedded path runs amqtt from .venv-broker on a free port with a generated config;
    it carries a QoS 1 publish/subscribe round trip and stop() ends it."""
    handle = start_demo_broker(tmp_path, prefer=("embedded",), broker_venv=broker_venv)
    try:
        assert handle.kind == "embedded"
        assert f"bind: 127.0.0.1:{handle.port}" in (tmp_path / "amqtt.yaml").read_text()
        round_trip(handle.host, handle.port)
    finally:
        handle.stop()
    assert handle.process is not None and handle.process.poll() is not None


def test_the_environment_variable_chooses_the_embedded_broker(
    tmp_path: Path, broker_venv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EDGEWARD_DEMO_BROKER=embedded and EDGEWARD_BROKER_VENV select amqtt without code changes."""
    monkeypatch.setenv("EDGEWARD_DEMO_BROKER", "embedded")
    monkeypatch.setenv("EDGEWARD_BROKER_VENV", str(broker_venv))
    with start_demo_broker(tmp_path) as handle:
        assert handle.kind == "embedded"
        assert mqtt_answers(handle.host, handle.port)


def test_without_any_broker_the_error_says_how_to_get_one(tmp_path: Path) -> None:
    """When no kind works the error names what each found and how to install a broker."""
    with pytest.raises(NoBrokerError) as raised:
        start_demo_broker(
            tmp_path,
            prefer=("running", "embedded"),
            probe=("127.0.0.1", free_port()),
            broker_venv=tmp_path / "no-such-venv",
        )
    message = str(raised.value)
    assert "apt-get install mosquitto" in message
    assert "scripts/broker-venv" in message
    assert "no-such-venv" in message


def test_an_unknown_broker_kind_is_refused(tmp_path: Path) -> None:
    """A typo in the preferred kinds is an error, not a silent fallback."""
    with pytest.raises(ValueError, match="choose from running, mosquitto, embedded"):
        start_demo_broker(tmp_path, prefer=("mosquito",))


def test_the_broker_venv_script_is_posix_sh() -> None:
    """scripts/broker-venv is an executable POSIX sh script that parses."""
    script = REPO / "scripts" / "broker-venv"
    assert os.access(script, os.X_OK)
    assert script.read_text().startswith("#!/bin/sh\n")
    subprocess.run(["sh", "-n", str(script)], check=True)


def test_edgecore_serves_twins_through_the_embedded_broker(
    tmp_path: Path, broker_venv: Path, hub: Hub
) -> None:
    """On a machine without Mosquitto the demo's embedded amqtt carries the whole twin loop:
    edgecore subscribes, answers a mapper's update and forwards the report to the hub."""
    handle = start_demo_broker(tmp_path / "broker", prefer=("embedded",), broker_venv=broker_venv)
    edge = Edge(
        tmp_path / "edge",
        "embedded-edge",
        hub.edge,
        "--mqtt",
        handle.address,
        "--status-interval",
        "0.5",
    )
    mapper = None
    try:
        device = {
            "metadata": {"name": "thermo"},
            "spec": {"nodeName": "embedded-edge", "properties": [{"name": "temperature"}]},
        }
        assert hub.request("POST", "/api/v1/namespaces/default/devices", device)[0] == 201
        edge.start()
        wait_for(lambda: "MQTT: connected" in edge.log(), 20, "edgecore to connect to amqtt")
        mapper = FakeMapper(handle, "$hw/events/device/default/thermo/twin/update/result")

        def answered() -> bool:
            mapper.publish(
                "$hw/events/device/default/thermo/twin/update",
                {
                    "event_id": "e",
                    "timestamp": 0,
                    "twin": {"temperature": {"actual": {"value": "21.5"}}},
                },
            )
            result = mapper.expect("$hw/events/device/default/thermo/twin/update/result", timeout=2)
            return "code" not in result  # a 404 until the device has reached the edge

        wait_for(answered, 30, "edgecore to answer through amqtt")

        def reported() -> str | None:
            body = hub.request("GET", "/api/v1/namespaces/default/devices/thermo")[1]
            twins = {t["propertyName"]: t for t in body["status"].get("twins", [])}
            return twins.get("temperature", {}).get("reported", {}).get("value")

        wait_for(lambda: reported() == "21.5", 15, "the report to reach the hub")
    finally:
        if mapper is not None:
            mapper.close()
        edge.kill()
        handle.stop()
