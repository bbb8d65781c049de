"""An in-memory edge around the devicetwin engine, and builders for hub objects.

The Edge plays the daemon's part the way the daemon will: it persists
``updated``/``removed``, keeps the outbox rows (coalescing keyed rows) and
records what would be published, in order. Nothing here is mocked.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

from devicetwin import (
    Context,
    DeviceTwin,
    HubReport,
    Outcome,
    Publish,
    apply_cloud,
    handle_message,
)

#: 2024-05-01T12:00:00Z in ms.
T0 = 1_714_564_800_000
NODE = "edge-1"
D = "$hw/events/device/default/thermo"
EMPTY_ID_RESULT = "$hw/events/device//twin/update/result"


def wire(payload: dict[str, Any]) -> Any:
    """The payload as a mapper parses it (proves it is JSON-able)."""
    return json.loads(json.dumps(payload, allow_nan=False))


class Edge:
    """The engine with a dict for storage, a list for MQTT and an outbox for the hub."""

    def __init__(self, node: str = NODE, now_ms: int = T0) -> None:
        self.node = node
        self.now_ms = now_ms
        self.devices: dict[str, DeviceTwin] = {}
        self.published: list[Publish] = []
        self.outbox: list[HubReport] = []
        self._ids = itertools.count(1)

    def forget(self) -> None:
        """Forget what was published and reported so far, and restart the ids."""
        self.published.clear()
        self.outbox.clear()
        self._ids = itertools.count(1)

    def ctx(self) -> Context:
        return Context(self.node, self.now_ms, lambda: f"uuid-{next(self._ids)}")

    def apply(self, outcome: Outcome) -> Outcome:
        for device in outcome.updated:
            # what SQLite would hold: the JSON of to_dict()
            self.devices[device.id] = DeviceTwin.from_dict(wire(device.to_dict()))
        for device_id in outcome.removed:
            del self.devices[device_id]
        for report in outcome.reports:
            if report.key is not None:
                self.outbox = [r for r in self.outbox if r.key != report.key]
            self.outbox.append(report)
        self.published.extend(outcome.publish)
        return outcome

    def mqtt(self, topic: str, payload: dict[str, Any] | bytes | str) -> Outcome:
        if isinstance(payload, dict):
            payload = json.dumps(payload)
        if isinstance(payload, str):
            payload = payload.encode()
        outcome = handle_message(
            topic, payload, self.ctx(), self.devices.get, lambda: list(self.devices.values())
        )
        return self.apply(outcome)

    def cloud(
        self,
        device: dict[str, Any] | None,
        model: dict[str, Any] | None = None,
        device_id: str = "default/thermo",
    ) -> Outcome:
        current = self.devices.get(device_id)
        return self.apply(apply_cloud(current, device, model, self.ctx()))

    def update(self, twin: dict[str, Any], device: str = D, event_id: str = "e1") -> Outcome:
        return self.mqtt(
            f"{device}/twin/update", {"event_id": event_id, "timestamp": 0, "twin": twin}
        )

    def get(self, device: str = D, event_id: str = "g1") -> dict[str, Any]:
        outcome = self.mqtt(f"{device}/twin/get", {"event_id": event_id})
        return wire(outcome.publish[0].payload)

    def twin(self, key: str, device_id: str = "default/thermo") -> Any:
        return self.devices[device_id].twins[key]


def published(outcome: Outcome) -> dict[str, Any]:
    """Topic → parsed payload of everything the outcome publishes (topics are distinct)."""
    out = {p.topic: wire(p.payload) for p in outcome.publish}
    assert len(out) == len(outcome.publish)
    return out


def device(
    name: str = "thermo",
    properties: dict[str, str | tuple[str, Any] | None] | None = None,
    namespace: str = "default",
    status: dict[str, dict[str, int]] | None = None,
    description: str | None = None,
) -> dict[str, Any]:
    """A v1beta1 Device bound to NODE.

    ``properties`` maps a name to its desired value, to (value, timestamp), or
    to None (no desired value); ``status`` maps a name to the version vector
    the hub last saw in observedDesired.
    """
    props = []
    for prop, desired in (properties or {}).items():
        entry: dict[str, Any] = {"name": prop}
        if isinstance(desired, tuple):
            entry["desired"] = {"value": desired[0], "metadata": {"timestamp": desired[1]}}
        elif desired is not None:
            entry["desired"] = {"value": desired}
        props.append(entry)
    obj: dict[str, Any] = {
        "apiVersion": "devices.kubeedge.io/v1beta1",
        "kind": "Device",
        "metadata": {"name": name, "namespace": namespace, "labels": {"room": "a"}},
        "spec": {"nodeName": NODE, "deviceModelRef": {"name": "thermo-model"}, "properties": props},
    }
    if description is not None:
        obj["metadata"]["annotations"] = {"description": description}
    if status is not None:
        obj["status"] = {
            "twins": [
                {
                    "propertyName": prop,
                    "observedDesired": {"value": "x", "metadata": {"version": version}},
                }
                for prop, version in status.items()
            ]
        }
    return obj


def model(**types: str) -> dict[str, Any]:
    """A v1beta1 DeviceModel whose properties have the given types (INT, FLOAT, ...)."""
    return {
        "apiVersion": "devices.kubeedge.io/v1beta1",
        "kind": "DeviceModel",
        "metadata": {"name": "thermo-model", "namespace": "default"},
        "spec": {"properties": [{"name": n, "type": t} for n, t in types.items()]},
    }
