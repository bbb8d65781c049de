"""A whole edge on this machine: Mosquitto, a hub, one edgecore with devices bound to it."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.core import Skipped
from bench.procs import (
    NS,
    Api,
    BenchEdge,
    BenchHub,
    Mosquitto,
    create_many,
    device,
    model,
    wait_for,
    workdir,
)
from tests.support.mqtt import FakeMapper

NODE = "edge-1"
MODEL = "bench-model"
D = "$hw/events/device/default"


def twins_ready() -> None:
    """Skip unless the twin side of edgecore is in this checkout."""
    for module in ("devicetwin", "edgecore.eventbus", "edgecore.twins"):
        if importlib.util.find_spec(module) is None:
            raise Skipped(f"{module} is not in this checkout (the MQTT twin flow has not landed)")


@dataclass
class Stack:
    tmp: Path
    broker: Mosquitto
    hub: BenchHub
    edge: BenchEdge
    api: Api
    devices: list[str]

    def mapper(self, *filters: str) -> FakeMapper:
        return FakeMapper(self.broker, *filters)


def start_edge(stack: Stack, revision: int, timeout: float = 120) -> None:
    """(Re)start the stack's edgecore and wait until it holds ``revision`` and serves twins."""
    stack.edge.start()
    wait_for(lambda: stack.edge.revision() >= revision, timeout, "the edge to sync")
    if stack.devices:
        probe_twins(stack.edge, stack.broker, stack.devices[-1])


def probe_twins(edge: BenchEdge, broker: Mosquitto, device: str) -> None:
    """Wait until ``edge`` answers a ``twin/get`` of ``device`` (namespace default) over MQTT.

    Gives up after 100 one-second tries, with the tail of the edge's log.
    """
    probe = FakeMapper(broker, f"{D}/{device}/twin/get/result")
    try:
        for _ in range(100):
            probe.publish(f"{D}/{device}/twin/get", {"event_id": "probe"})
            try:
                body = probe.expect(f"{D}/{device}/twin/get/result", 1)
            except AssertionError:
                continue
            if "twin" in body:
                return
        raise RuntimeError(f"edgecore {edge.node} does not serve twins:\n{edge.log()[-2000:]}")
    finally:
        probe.close()


@contextmanager
def edge_stack(
    name: str,
    devices: int,
    properties: int = 1,
    mqtt: bool = True,
    *edge_flags: str,
    broker_config: str = "",
    hub_flags: tuple[str, ...] = (),
) -> Iterator[Stack]:
    """Mosquitto + hub (started with ``hub_flags``) + one edgecore with ``devices`` devices
    (``properties`` each) bound."""
    if mqtt:
        twins_ready()
    with workdir(name) as tmp:
        broker = Mosquitto(extra_config=broker_config)
        broker.start()
        hub = BenchHub(tmp / "hub", *hub_flags)
        edge = BenchEdge(tmp / "edge", NODE, "", broker if mqtt else None, *edge_flags)
        try:
            hub.start()
            hub.enroll_edge(tmp / "edge", NODE)
            edge.set_hub(hub.edge)
            api = hub.api_client()
            revision = api.ok("POST", f"{NS}/devicemodels", model(MODEL, properties))
            revision = int(revision["metadata"]["resourceVersion"])
            names = [f"dev-{i}" for i in range(devices)]
            if names:
                bodies = [device(n, NODE, MODEL, properties) for n in names]
                revision = create_many(api, bodies, f"{NS}/devices")
            stack = Stack(tmp, broker, hub, edge, api, names if mqtt else [])
            start_edge(stack, revision)
            yield stack
        finally:
            for proc in (edge, hub):
                if proc.proc is not None:
                    proc.stop() if proc.running else None
            broker.cleanup()
