"""The edge's device twins: devicetwin's pure rules, driven against edge.db.

Everything here runs on the store's thread (see :class:`edgecore.store.StoreThread`),
which owns both the database and the in-memory copy of every twin. A batch of
MQTT messages, or a batch of changes from the hub, is turned into new twin
states and outbox rows that commit in one transaction; the MQTT replies the
rules produced are returned to the caller to publish after that commit.

Within a batch each message sees the twins as the messages before it left
them (in memory), but each device's state is written once, as the batch left
it, and its outbox state rows (``twin/reported``, ``device/state``) coalesce
to the last one before they are written: the same rows one write per message
would leave, for a fraction of the JSON encoding and SQL.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from devicetwin import Context, DeviceTwin, Outcome, Publish, apply_cloud, handle_message
from edgecore.store import Applied, EdgeStore
from edgeward.kinds import DEVICE, DEVICE_MODEL

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Inbound:
    """One MQTT message from a mapper; ``ack`` confirms it to the broker once committed."""

    topic: str
    payload: bytes
    ack: Callable[[], None] = lambda: None


@dataclass
class _BatchWrites:
    """What a batch leaves to write: each device's last state (None: removed), and the
    outbox rows in order (the store coalesces rows of one key)."""

    twins: dict[str, DeviceTwin | None] = field(default_factory=dict)
    reports: list[tuple[str, str | None, dict[str, Any]]] = field(default_factory=list)


class TwinService:
    """Owns the twin states of the devices bound to this node."""

    def __init__(
        self,
        store: EdgeStore,
        node: str,
        clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
    ) -> None:
        self.store = store
        self.node = node
        self._clock_ms = clock_ms
        self._new_id = new_id
        self._twins: dict[str, DeviceTwin] = {}
        self.reload()

    def reload(self) -> None:
        """Read every twin state from the database (at start, and after a failed commit)."""
        self._twins = {k: DeviceTwin.from_dict(v) for k, v in self.store.iter_twins()}

    def _context(self) -> Context:
        return Context(node=self.node, now_ms=self._clock_ms(), new_id=self._new_id)

    def handle_messages(self, messages: Iterable[Inbound]) -> list[Publish]:
        """Apply mapper messages in one transaction; returns the replies to publish."""
        publish: list[Publish] = []
        writes = _BatchWrites()
        try:
            with self.store.transaction():
                for msg in messages:
                    outcome = handle_message(
                        msg.topic, msg.payload, self._context(), self._twins.get, self.members
                    )
                    if outcome.error is not None:
                        log.info("refused %s: %s", msg.topic, outcome.error)
                    self._absorb(outcome, writes)
                    publish.extend(outcome.publish)
                self._write(writes)
        except BaseException:
            self.reload()  # the cache must not keep what did not commit
            raise
        return publish

    def on_hub_changes(self, applied: list[Applied]) -> list[Publish]:
        """Inside the transaction that applied a hub batch: update the twins it touches."""
        publish: list[Publish] = []
        writes = _BatchWrites()
        ctx = self._context()
        try:
            for change in applied:
                for outcome in self._cloud_outcomes(change, ctx):
                    if outcome.error is not None:
                        log.warning(
                            "hub change to %s/%s: %s", change.namespace, change.name, outcome.error
                        )
                    self._absorb(outcome, writes)
                    publish.extend(outcome.publish)
            self._write(writes)
        except BaseException:
            self.reload()
            raise
        return publish

    def _cloud_outcomes(self, change: Applied, ctx: Context) -> list[Outcome]:
        if change.kind == DEVICE.name:
            device = change.after
            model = self._model_of(device) if device is not None else None
            current = self._twins.get(f"{change.namespace}/{change.name}")
            return [apply_cloud(current, device, model, ctx)]
        if change.kind == DEVICE_MODEL.name and change.after is not None:
            # re-apply the model's devices, so properties it adds get its types
            outcomes = []
            for twin in list(self._twins.values()):
                device = self.store.get_object(DEVICE.name, twin.namespace, twin.name)
                if (
                    twin.namespace == change.namespace
                    and device is not None
                    and _model_ref(device) == change.name
                ):
                    outcomes.append(apply_cloud(twin, device, change.after, ctx))
            return outcomes
        return []

    def _model_of(self, device: dict) -> dict | None:
        name = _model_ref(device)
        if not name:
            return None
        return self.store.get_object(DEVICE_MODEL.name, device["metadata"]["namespace"], name)

    def _absorb(self, outcome: Outcome, writes: _BatchWrites) -> None:
        """Take an outcome into the cache now, and into what the batch will write."""
        for twin in outcome.updated:
            self._twins[twin.id] = writes.twins[twin.id] = twin
        for device_id in outcome.removed:
            self._twins.pop(device_id, None)
            writes.twins[device_id] = None
        writes.reports.extend((r.topic, r.key, r.body) for r in outcome.reports)

    def _write(self, writes: _BatchWrites) -> None:
        saved = {i: twin.to_dict() for i, twin in writes.twins.items() if twin is not None}
        self.store.save_twins(saved)
        self.store.delete_twins(i for i, twin in writes.twins.items() if twin is None)
        self.store.report_many(writes.reports)

    def members(self) -> list[DeviceTwin]:
        return sorted(self._twins.values(), key=lambda t: t.id)

    def twin(self, device_id: str) -> DeviceTwin | None:
        return self._twins.get(device_id)


def _model_ref(device: dict) -> str | None:
    ref = device.get("spec", {}).get("deviceModelRef")
    return ref.get("name") if isinstance(ref, dict) else None
