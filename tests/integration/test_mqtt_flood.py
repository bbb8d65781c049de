"""A mapper flooding the broker with QoS 0 updates: edgecore drops what it cannot take, counts
every drop and reports it, stays connected, and a well-behaved device's QoS 1 updates all go
through meanwhile. Real hub, edgecore, Mosquitto and mappers."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from tests.integration.test_broker_drops import usage
from tests.integration.test_edge_limits import bound
from tests.integration.test_twins import NS, D, model, update
from tests.support.mosquitto import Mosquitto, running
from tests.support.mqtt import FakeMapper
from tests.support.procs import Hub, wait_for

FLOOD = 20_000


class ResultCounter:
    """Counts ``twin/update/result`` replies on ``topic`` (QoS 1: the broker queues them all)."""

    def __init__(self, broker: Mosquitto, topic: str) -> None:
        self.count = 0
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="flood-results")
        self.client.on_message = self._on_message
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *_a: subscribed.set()
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        self.client.subscribe(topic, 1)
        assert subscribed.wait(10)

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        if json.loads(msg.payload).get("event_id", "").startswith("flood-"):
            with self.lock:
                self.count += 1

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def test_a_qos0_flood_is_dropped_with_a_count_and_other_devices_keep_flowing(
    tmp_path: Path, hub: Hub, start_edge: Any
) -> None:
    # no queue limit at the broker: every message it took reaches edgecore or the counter,
    # so what edgecore did not store is exactly what it says it dropped
    with running("max_queued_messages 0\n") as broker:
        flood(hub, start_edge, broker)


def flood(hub: Hub, start_edge: Any, broker: Mosquitto) -> None:
    assert hub.request("POST", f"{NS}/devicemodels", model())[0] == 201
    edge = start_edge("edge1", mqtt=broker)
    bound(hub, "flooder")
    bound(hub, "steady")
    results = ResultCounter(broker, f"{D}/flooder/twin/update/result")
    steady = FakeMapper(broker, f"{D}/steady/twin/update/result")
    flooder = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="flooder")
    flooder.connect(broker.host, broker.port)
    flooder.loop_start()
    try:
        # stopped, edgecore reads nothing: the flood waits at the broker and then comes in
        # at once, far faster than it can be stored, whatever this machine's speed
        os.kill(edge.proc.pid, signal.SIGSTOP)
        for i in range(FLOOD):
            payload = json.dumps(update(f"flood-{i}", temperature=str(i)))
            flooder.publish(f"{D}/flooder/twin/update", payload, qos=0)
            if i % 2000 == 0:  # a QoS 1 device keeps being served during the flood
                steady.publish(f"{D}/steady/twin/update", update(f"s{i}", temperature="1"))
        flooder.publish(f"{D}/flooder/twin/update", "{}", qos=1).wait_for_publish(30)
        # and for a few seconds after it wakes, edge.db is locked: edgecore reads the flood
        # but cannot store any of it, however fast this machine stores (on a busy machine
        # it could otherwise keep up and drop nothing, which would prove nothing)
        blocker = sqlite3.connect(edge.data_dir / "edge.db", timeout=30)
        blocker.execute("BEGIN IMMEDIATE")
        os.kill(edge.proc.pid, signal.SIGCONT)
        time.sleep(3)
        blocker.rollback()
        blocker.close()
        for i in range(0, FLOOD, 2000):
            assert steady.expect(f"{D}/steady/twin/update/result", 30)["event_id"] == f"s{i}"

        def accounted() -> bool:
            dropped = usage(hub, "edge1").get("mqttDropped", {}).get("overload", 0)
            return results.count + dropped == FLOOD

        wait_for(accounted, 60, "every flood message stored or counted as dropped")
    finally:
        flooder.loop_stop()
        flooder.disconnect()
        steady.close()
        results.close()
    dropped = usage(hub, "edge1")["mqttDropped"]["overload"]
    assert 0 < dropped < FLOOD, "a flood larger than the queue is partly dropped, not all"
    log = edge.log()
    assert "dropped a QoS 0 message on $hw/events/device/default/flooder" in log
    assert log.count("dropped a QoS 0 message") <= 2, "logged at a limited rate"
    assert "disconnected from the broker" not in log
    assert edge.running
