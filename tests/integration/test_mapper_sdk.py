"""The mapper SDK against a real Mosquitto, with a raw paho client playing edgecore's side."""

from __future__ import annotations

import itertools
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from edgeward.mapper import DesiredRefused, Mapper, Twin, TwinGetError
from edgeward.mapper.thermostat import Thermostat
from tests.support.mosquitto import Mosquitto
from tests.support.procs import wait_for

pytestmark = pytest.mark.integration

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def new_device() -> str:
    return f"default/dev-{uuid.uuid4().hex[:10]}"


def topic(device_id: str, suffix: str) -> str:
    return f"$hw/events/device/{device_id}/{suffix}"


class EdgeSide:
    """A plain paho client standing in for edgecore: publishes, and records what arrives."""

    def __init__(self, broker: Mosquitto, *subscriptions: str) -> None:
        self.subscriptions = list(subscriptions)
        self.received: list[tuple[str, bytes]] = []
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.client.reconnect_delay_set(0.1, 0.5)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *args: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert self.subscribed.wait(10), "the edge side could not subscribe"

    def _on_connect(self, client: mqtt.Client, *args: Any) -> None:
        self.subscribed.clear()
        client.subscribe([(t, 1) for t in self.subscriptions])

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.received.append((msg.topic, msg.payload))

    def publish(self, topic: str, body: dict[str, Any] | bytes) -> None:
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.client.publish(topic, payload, qos=1).wait_for_publish(10)

    def bodies(self, topic: str) -> list[dict[str, Any]]:
        with self.lock:
            return [json.loads(p) for t, p in self.received if t == topic]

    def wait_body(
        self, topic: str, check: Callable[[dict[str, Any]], bool] = bool, timeout: float = 10
    ) -> dict[str, Any]:
        return wait_for(
            lambda: next((b for b in self.bodies(topic) if check(b)), None),
            timeout,
            f"a message on {topic}",
        )

    def reported(self, device_id: str) -> dict[str, str]:
        """The latest actual value of each key the mapper reported for ``device_id``."""
        latest: dict[str, str] = {}
        for body in self.bodies(topic(device_id, "twin/update")):
            for key, twin in body["twin"].items():
                latest[key] = twin["actual"]["value"]
        return latest

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def delta(**wanted: str) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "timestamp": int(time.time() * 1000),
        "twin": {k: {"expected": {"value": v}} for k, v in wanted.items()},
        "delta": wanted,
    }


def get_result(event_id: str, twins: dict[str, tuple[str | None, str | None]]) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for key, (expected, actual) in twins.items():
        twin: dict[str, Any] = {"metadata": {"type": "string"}, "optional": True}
        if expected is not None:
            twin["expected"] = {"value": expected, "metadata": {"timestamp": 1}}
        if actual is not None:
            twin["actual"] = {"value": actual, "metadata": {"timestamp": 1}}
        body[key] = twin
    return {"event_id": event_id, "timestamp": int(time.time() * 1000), "twin": body}


class FakeDevice(Mapper):
    """A device in memory: desired values land in ``values``; ``poll`` reads them back."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lock = threading.Lock()
        self.values: dict[str, dict[str, str]] = {}
        self.calls: list[tuple[str, str, str]] = []

    def on_desired(self, device_id: str, name: str, value: str) -> None:
        with self.lock:
            self.calls.append((device_id, name, value))
        if value == "refuse":
            raise DesiredRefused("the device does not take 'refuse'")
        if value == "boom":
            raise RuntimeError("the bus timed out")
        with self.lock:
            self.values.setdefault(device_id, {})[name] = value

    def poll(self, device_id: str) -> dict[str, str]:
        with self.lock:
            return dict(self.values.get(device_id, {}))

    def called(self, device_id: str, name: str, value: str) -> bool:
        with self.lock:
            return (device_id, name, value) in self.calls


@pytest.fixture
def start_mapper() -> Iterator[Callable[..., Mapper]]:
    """Start mappers (``start_mapper(FakeDevice, broker, devices=[...])``); stop them after."""
    started: list[Mapper] = []

    def start(cls: type[Mapper], broker: Mosquitto, **kwargs: Any) -> Mapper:
        kwargs.setdefault("poll_interval", None)
        kwargs.setdefault("reconnect_delay", (0.1, 1.0))
        mapper = cls(broker.host, broker.port, **kwargs)
        mapper.start()
        started.append(mapper)
        return mapper

    yield start
    for mapper in started:
        mapper.stop()


@pytest.fixture
def edge_for(mqtt_broker: Mosquitto) -> Iterator[Callable[..., EdgeSide]]:
    """An EdgeSide on the session broker subscribed to everything about the given devices."""
    sides: list[EdgeSide] = []

    def make(*device_ids: str, broker: Mosquitto = mqtt_broker, extra: tuple[str, ...] = ()):
        side = EdgeSide(broker, *[f"$hw/events/device/{d}/#" for d in device_ids], *extra)
        sides.append(side)
        return side

    yield make
    for side in sides:
        side.close()


def wait_ready(edge: EdgeSide, device_id: str) -> dict[str, Any]:
    """The mapper asks twin/get once it has subscribed: after that it hears deltas."""
    return edge.wait_body(topic(device_id, "twin/get"))


def test_delta_calls_on_desired_and_reports_a_valid_actual_update(
    mqtt_broker: Mosquitto, edge_for: Callable[..., EdgeSide], start_mapper: Callable[..., Mapper]
) -> None:
    """A delta reaches on_desired per key, and the value comes back as a KubeEdge update request
    with a string event_id, an integer timestamp and twin.<key>.actual.value."""
    dev = new_device()
    edge = edge_for(dev)
    mapper = start_mapper(FakeDevice, mqtt_broker, devices=[dev])
    wait_ready(edge, dev)

    edge.publish(topic(dev, "twin/update/delta"), delta(speed="3", mode="eco"))

    body = edge.wait_body(topic(dev, "twin/update"), lambda b: "speed" in b["twin"])
    assert isinstance(body["event_id"], str) and body["event_id"]
    assert isinstance(body["timestamp"], int) and not isinstance(body["timestamp"], bool)
    assert body["twin"]["speed"]["actual"]["value"] == "3"
    assert body["twin"]["mode"]["actual"]["value"] == "eco"
    assert mapper.called(dev, "speed", "3") and mapper.called(dev, "mode", "eco")


def test_poll_values_are_reported_every_interval(
    mqtt_broker: Mosquitto, edge_for: Callable[..., EdgeSide], start_mapper: Callable[..., Mapper]
) -> None:
    """poll() runs every poll interval and what it returns is reported as actual values."""

    class Counter(Mapper):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.count = 0

        def poll(self, device_id: str) -> dict[str, str]:
            self.count += 1
            return {"count": str(self.count), "unit": "ticks"}

    dev = new_device()
    edge = edge_for(dev)
    start_mapper(Counter, mqtt_broker, devices=[dev], poll_interval=0.05)

    edge.wait_body(
        topic(dev, "twin/update"), lambda b: int(b["twin"]["count"]["actual"]["value"]) >= 3
    )
    counts = [
        int(b["twin"]["count"]["actual"]["value"]) for b in edge.bodies(topic(dev, "twin/update"))
    ]
    assert counts[:3] == [1, 2, 3]
    assert edge.reported(dev)["unit"] == "ticks"


def test_poll_values_outside_the_alphabet_are_logged_and_not_sent(
    mqtt_broker: Mosquitto,
    edge_for: Callable[..., EdgeSide],
    start_mapper: Callable[..., Mapper],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A polled value with spaces, quotes or a non-string type is left out (and logged);
    the valid values of the same poll are still reported."""

    class Sloppy(Mapper):
        def poll(self, device_id: str) -> dict[str, Any]:
            return {"ok": "1", "spaced": "a b", "quoted": '"x"', "number": 5, "bad key": "1"}

    caplog.set_level(logging.WARNING, "edgeward.mapper")
    dev = new_device()
    edge = edge_for(dev)
    start_mapper(Sloppy, mqtt_broker, devices=[dev], poll_interval=0.05)

    edge.wait_body(topic(dev, "twin/update"))
    wait_for(lambda: "'number'" in caplog.text or "number=5" in caplog.text, what="a log line")
    for body in edge.bodies(topic(dev, "twin/update")):
        assert set(body["twin"]) == {"ok"}
    assert "spaced" in caplog.text and "quoted" in caplog.text and "bad key" in caplog.text


def test_a_refused_desired_value_is_logged_and_the_mapper_keeps_serving(
    mqtt_broker: Mosquitto,
    edge_for: Callable[..., EdgeSide],
    start_mapper: Callable[..., Mapper],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """on_desired raising (DesiredRefused or any error) refuses that value only: nothing is
    reported for it, the refusal is logged, and later deltas and polls still work."""
    caplog.set_level(logging.INFO, "edgeward.mapper")
    dev = new_device()
    edge = edge_for(dev)
    mapper = start_mapper(FakeDevice, mqtt_broker, devices=[dev], poll_interval=0.05)
    wait_ready(edge, dev)

    edge.publish(topic(dev, "twin/update/delta"), delta(a="refuse", b="boom", c="ok"))
    edge.wait_body(topic(dev, "twin/update"), lambda b: "c" in b["twin"])
    wait_for(lambda: "the bus timed out" in caplog.text, what="the refusal in the log")
    assert "the device does not take 'refuse'" in caplog.text

    edge.publish(topic(dev, "twin/update/delta"), delta(a="fine"))
    wait_for(lambda: edge.reported(dev).get("a") == "fine", what="a later delta applied")
    reported_values = {
        twin["actual"]["value"]
        for body in edge.bodies(topic(dev, "twin/update"))
        for twin in body["twin"].values()
    }
    assert not reported_values & {"refuse", "boom"}
    assert mapper.connected


def test_startup_applies_expected_values_that_differ_from_actual(
    mqtt_broker: Mosquitto, edge_for: Callable[..., EdgeSide], start_mapper: Callable[..., Mapper]
) -> None:
    """A (re)started mapper asks twin/get and applies each expected value that differs from
    actual, so it converges without waiting for a new delta."""
    dev = new_device()
    edge = edge_for(dev)
    mapper = start_mapper(FakeDevice, mqtt_broker, devices=[dev])
    request = wait_ready(edge, dev)

    edge.publish(
        topic(dev, "twin/get/result"),
        get_result(
            request["event_id"],
            {
                "mode": ("eco", "boost"),
                "speed": ("2", None),
                "same": ("1", "1"),
                "rpm": (None, "9"),
            },
        ),
    )

    wait_for(lambda: edge.reported(dev).get("speed") == "2", what="speed applied")
    wait_for(lambda: edge.reported(dev).get("mode") == "eco", what="mode applied")
    assert not mapper.called(dev, "same", "1"), "a value already in sync is not re-applied"
    assert [c for c in mapper.calls if c[1] == "rpm"] == []


def test_get_twins_returns_the_twins_or_raises(
    mqtt_broker: Mosquitto, edge_for: Callable[..., EdgeSide], start_mapper: Callable[..., Mapper]
) -> None:
    """get_twins() answers from D/twin/get/result matched by event id, raises TwinGetError on an
    error answer and TimeoutError when nobody answers."""
    dev = new_device()
    edge = edge_for(dev)
    mapper = start_mapper(FakeDevice, mqtt_broker, devices=[dev])
    wait_ready(edge, dev)

    def answer(reply: Callable[[str], dict[str, Any]]) -> None:
        seen = len(edge.bodies(topic(dev, "twin/get")))
        wait_for(lambda: len(edge.bodies(topic(dev, "twin/get"))) > seen, what="twin/get")
        event_id = edge.bodies(topic(dev, "twin/get"))[-1]["event_id"]
        edge.publish(topic(dev, "twin/get/result"), {"event_id": "someone-else", "twin": {}})
        edge.publish(topic(dev, "twin/get/result"), reply(event_id))

    helper = threading.Thread(target=answer, args=(lambda e: get_result(e, {"k": ("1", "2")}),))
    helper.start()
    assert mapper.get_twins(dev, timeout=10) == {"k": Twin(expected="1", actual="2", type="string")}
    helper.join()

    error = {"code": 404, "reason": f"Device {dev} not found while getting twin"}
    helper = threading.Thread(target=answer, args=(lambda e: {"event_id": e, **error},))
    helper.start()
    with pytest.raises(TwinGetError) as raised:
        mapper.get_twins(dev, timeout=10)
    helper.join()
    assert raised.value.code == 404

    with pytest.raises(TimeoutError):
        mapper.get_twins(dev, timeout=0.3)


def test_membership_decides_which_devices_are_served(
    mqtt_broker: Mosquitto,
    edge_for: Callable[..., EdgeSide],
    start_mapper: Callable[..., Mapper],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Without a device list the mapper serves what membership/get returns and follows
    membership/updated; bad membership messages change nothing."""
    node = f"node-{uuid.uuid4().hex[:8]}"
    first, second = new_device(), new_device()
    membership = f"$hw/events/node/{node}/membership"
    edge = edge_for(first, second, extra=(f"{membership}/get",))
    mapper = start_mapper(FakeDevice, mqtt_broker, node=node)

    request = edge.wait_body(f"{membership}/get")
    assert isinstance(request["event_id"], str)
    edge.publish(f"{membership}/get/result", b"{not json")
    edge.publish(f"{membership}/get/result", {"event_id": "m", "devices": "all of them"})
    edge.publish(
        f"{membership}/get/result",
        {
            "event_id": request["event_id"],
            "timestamp": 1,
            "devices": [{"id": first, "name": first.split("/")[1], "state": "online"}],
        },
    )
    wait_ready(edge, first)
    assert mapper.devices == {first}
    edge.publish(topic(first, "twin/update/delta"), delta(x="1"))
    wait_for(lambda: edge.reported(first).get("x") == "1", what="first device served")

    edge.publish(
        f"{membership}/updated",
        {
            "event_id": "u1",
            "timestamp": 2,
            "added_devices": [{"id": second}],
            "removed_devices": None,
        },
    )
    wait_ready(edge, second)
    edge.publish(topic(second, "twin/update/delta"), delta(y="2"))
    wait_for(lambda: edge.reported(second).get("y") == "2", what="second device served")

    edge.publish(
        f"{membership}/updated",
        {
            "event_id": "u2",
            "timestamp": 3,
            "added_devices": None,
            "removed_devices": [{"id": first}],
        },
    )
    wait_for(lambda: mapper.devices == {second}, what="first device removed")
    edge.publish(topic(first, "twin/update/delta"), delta(x="gone"))
    edge.publish(topic(second, "twin/update/delta"), delta(y="3"))
    wait_for(lambda: edge.reported(second).get("y") == "3", what="second device still served")
    assert not mapper.called(first, "x", "gone")
    assert "ignoring a message" in caplog.text


HUGE = b'{"event_id":"h","delta":{"a":"' + b"x" * (2 << 20) + b'"}}'
DEEP = b'{"delta":' + b'{"a":' * 50_000 + b'"1"' + b"}" * 50_001
HOSTILE = [
    ("twin/update/delta", b"not json at all"),
    ("twin/update/delta", b"\xff\xfe\x00garbage"),
    ("twin/update/delta", b"[1, 2, 3]"),
    ("twin/update/delta", b'"just a string"'),
    ("twin/update/delta", b'{"event_id": 7, "delta": {"a": "1"}}'),
    ("twin/update/delta", b'{"timestamp": "now", "delta": {"a": "1"}}'),
    ("twin/update/delta", b'{"delta": ["a"]}'),
    ("twin/update/delta", b'{"delta": {"a": 1}}'),
    ("twin/update/delta", b'{"delta": {"a": null}}'),
    ("twin/update/delta", b'{"delta": {"a": {"value": "1"}}}'),
    ("twin/update/delta", b'{"delta": {"bad key": "1"}}'),
    ("twin/update/delta", b'{"delta": {"a": "x y"}}'),
    ("twin/update/delta", b'{"delta": {"a": "1"}, "twin": {"a": 5}}'),
    ("twin/update/delta", HUGE),
    ("twin/update/delta", DEEP),
    ("twin/update/delta", b"[" * 200_000),
    ("twin/update/delta", b'{"delta": {"unknown": "1"}}'),
    ("twin/update/delta", b""),
    ("twin/get/result", b"{}"),
    ("twin/get/result", b'{"event_id": "x", "twin": 5}'),
    ("twin/get/result", b'{"event_id": "x", "code": "404"}'),
    ("twin/update/result", b'{"code": true}'),
    ("twin/update/result", b'{"event_id": "x", "code": 500, "reason": ' + b"[]" + b"}"),
    ("twin/update/result", b"nonsense"),
]


def test_malformed_and_hostile_payloads_are_logged_and_ignored(
    mqtt_broker: Mosquitto,
    edge_for: Callable[..., EdgeSide],
    start_mapper: Callable[..., Mapper],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Garbage on the mapper's topics (not JSON, wrong types, huge, deeply nested, a delta for
    a key it does not write) is logged without a traceback and ignored; the mapper serves on."""

    class TwoKeys(FakeDevice):
        writable = frozenset({"a", "b"})

    caplog.set_level(logging.WARNING)
    dev = new_device()
    edge = edge_for(dev)
    mapper = start_mapper(TwoKeys, mqtt_broker, devices=[dev])
    wait_ready(edge, dev)

    for suffix, payload in HOSTILE:
        edge.publish(topic(dev, suffix), payload)
    edge.publish(topic(dev, "twin/update/delta"), delta(b="survived"))

    wait_for(lambda: edge.reported(dev).get("b") == "survived", what="a valid delta after garbage")
    assert mapper.calls == [(dev, "b", "survived")], "no garbage reached on_desired"
    assert "ignoring a message on" in caplog.text
    assert "not a writable property" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    assert not [r for r in caplog.records if r.exc_info], "garbage is not a crash"
    assert mapper.connected


def test_an_update_refused_by_edgecore_is_logged(
    mqtt_broker: Mosquitto,
    edge_for: Callable[..., EdgeSide],
    start_mapper: Callable[..., Mapper],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An error result for one of the mapper's own reports is logged with the keys it carried."""
    caplog.set_level(logging.WARNING, "edgeward.mapper")
    dev = new_device()
    edge = edge_for(dev)
    mapper = start_mapper(FakeDevice, mqtt_broker, devices=[dev])
    wait_ready(edge, dev)

    event_id = mapper.report(dev, {"temp": "hot"})
    assert event_id is not None
    edge.wait_body(topic(dev, "twin/update"), lambda b: b["event_id"] == event_id)
    edge.publish(
        topic(dev, "twin/update/result"),
        {"event_id": event_id, "timestamp": 1, "code": 400, "reason": "the value is not float"},
    )
    wait_for(lambda: "the value is not float" in caplog.text, what="the error in the log")
    assert "temp" in caplog.text


def test_the_mapper_reconnects_and_resubscribes_after_a_broker_restart(
    own_broker: Mosquitto,
    edge_for: Callable[..., EdgeSide],
    start_mapper: Callable[..., Mapper],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """When the broker restarts the mapper reconnects, subscribes again, re-syncs via twin/get
    and keeps applying deltas and reporting polls; a routine reconnect logs no error."""
    caplog.set_level(logging.DEBUG, "edgeward.mapper")
    dev = new_device()
    edge = edge_for(dev, broker=own_broker)
    mapper = start_mapper(FakeDevice, own_broker, devices=[dev], poll_interval=0.2)
    wait_ready(edge, dev)
    edge.publish(topic(dev, "twin/update/delta"), delta(a="1"))
    wait_for(lambda: edge.reported(dev).get("a") == "1", what="a delta before the restart")

    own_broker.restart()
    with edge.lock:
        edge.received.clear()
    assert edge.subscribed.wait(15), "the edge side did not come back"
    request = wait_ready(edge, dev)  # a fresh twin/get after reconnecting
    edge.publish(topic(dev, "twin/get/result"), get_result(request["event_id"], {"b": ("2", "")}))
    wait_for(lambda: edge.reported(dev).get("b") == "2", what="re-sync after the restart")

    edge.publish(topic(dev, "twin/update/delta"), delta(a="3"))
    wait_for(lambda: edge.reported(dev).get("a") == "3", what="a delta after the restart")
    assert mapper.connected
    assert "lost the broker" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


def test_the_thermostat_moves_toward_its_target_and_reports_both_properties(
    mqtt_broker: Mosquitto,
    edge_for: Callable[..., EdgeSide],
    start_mapper: Callable[..., Mapper],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The sample thermostat stores a desired target, moves its temperature 0.5 per poll from
    18.0 toward it, reports target and temperature each poll, refuses out-of-range targets,
    and says online at start and offline at stop."""
    dev = new_device()
    edge = edge_for(dev)
    thermostat = start_mapper(Thermostat, mqtt_broker, devices=[dev], poll_interval=0.05)
    assert isinstance(thermostat, Thermostat)
    edge.wait_body(topic(dev, "state/update"), lambda b: b["state"] == "online")
    wait_ready(edge, dev)

    edge.publish(topic(dev, "twin/update/delta"), delta(target="99"))
    edge.publish(topic(dev, "twin/update/delta"), delta(target="20"))
    edge.wait_body(
        topic(dev, "twin/update"),
        lambda b: b["twin"].get("temperature", {}).get("actual", {}).get("value") == "20.0",
    )
    polls = [
        b["twin"] for b in edge.bodies(topic(dev, "twin/update")) if "temperature" in b["twin"]
    ]
    assert all(set(twin) == {"target", "temperature"} for twin in polls)
    assert polls[0]["temperature"]["metadata"]["type"] == "float"
    assert polls[0]["target"]["metadata"]["type"] == "int"
    temperatures = [float(t["temperature"]["actual"]["value"]) for t in polls]
    assert temperatures[0] in (18.0, 18.5)
    steps = {round(b - a, 3) for a, b in itertools.pairwise(temperatures)}
    assert steps <= {0.0, 0.5}
    assert polls[-1]["target"]["actual"]["value"] == "20"
    assert "outside 5..30" in caplog.text
    assert thermostat.room(dev) is not None

    thermostat.stop()
    edge.wait_body(topic(dev, "state/update"), lambda b: b["state"] == "offline")


def test_the_thermostat_command_runs_until_sigterm(
    mqtt_broker: Mosquitto, edge_for: Callable[..., EdgeSide]
) -> None:
    """python -m edgeward.mapper.thermostat serves its device and, on SIGTERM, says offline and
    exits with status 0."""
    dev = new_device()
    edge = edge_for(dev)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edgeward.mapper.thermostat",
            "--broker",
            f"{mqtt_broker.host}:{mqtt_broker.port}",
            "--device",
            dev,
            "--interval",
            "0.1",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        edge.wait_body(topic(dev, "state/update"), lambda b: b["state"] == "online", timeout=20)
        wait_ready(edge, dev)
        edge.publish(topic(dev, "twin/update/delta"), delta(target="19"))
        wait_for(lambda: edge.reported(dev).get("temperature") == "19.0", what="it heats up")
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, output.decode(errors="replace")
    edge.wait_body(topic(dev, "state/update"), lambda b: b["state"] == "offline")
    assert b"SIGTERM" in output
