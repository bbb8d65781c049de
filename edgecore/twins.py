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

import json
import logging
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

from devicetwin import Context, DeviceTwin, Outcome, Publish, apply_cloud, handle_message, topics
from devicetwin.errors import TwinError
from devicetwin.payloads import ErrorResult
from edgecore.drops import Drops
from edgecore.store import Applied, EdgeStore, is_storage_failure
from edgecore.topicshapes import TopicShapes
from edgeward.kinds import DEVICE, DEVICE_MODEL
from edgeward.protocol import TOPIC_TWIN_REPORTED

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Inbound:
    """One MQTT message from a mapper; ``ack`` confirms it to the broker once committed."""

    topic: str
    payload: bytes
    ack: Callable[[], None] = lambda: None
    #: The broker's packet id, and whether this is a redelivery (MQTT's DUP flag).
    mid: int = 0
    dup: bool = False
    qos: int = 1
    #: A DMI mapper's report in its MQTT form (edgecore.dmi), not a message from the broker.
    via_dmi: bool = False


class Outgoing(NamedTuple):
    """An MQTT message to publish (QoS 1, not retained), its JSON already encoded."""

    topic: str
    payload: bytes


#: Compact JSON (json.dumps with options builds an encoder per call).
_encode = json.JSONEncoder(separators=(",", ":")).encode


@dataclass
class TwinBatch:
    """What a batch changes: each device's last state (None: removed), the outbox rows in
    order, and the MQTT messages to publish.

    The rows of one key coalesce as they come in (latest wins, at the place of its last
    occurrence) and messages are encoded as they come in: a batch holds one row per key
    and bytes, not the dicts of every message, which sets the edge's peak memory.

    Nothing here is in :class:`TwinService`'s memory until the batch's transaction has
    committed and :meth:`TwinService.adopt` takes it in: a batch whose commit fails (a
    full disk, an I/O error) leaves memory as it left the disk, so the hub's replay of the
    same change finds the old state and produces the delta the mapper is owed.
    """

    #: Encodes an outbox row; None when it is refused (EdgeStore.encode_row counts it).
    encode_row: Callable[[str, str | None, dict[str, Any]], str | None]
    twins: dict[str, DeviceTwin | None] = field(default_factory=dict)
    reports: dict[object, tuple[str, str | None, str]] = field(default_factory=dict)
    publish: list[Outgoing] = field(default_factory=list)
    #: The refusal counts this batch's transaction records (None: unchanged).
    unstored: dict[str, int] | None = None
    #: The hub's changes this batch applied (for DMI mappers, once it has committed).
    applied: list[Applied] = field(default_factory=list)
    _events: int = 0

    def report(self, topic: str, key: str | None, body: dict[str, Any]) -> None:
        text = self.encode_row(topic, key, body)
        if text is None:  # refused: an older row of its key stays
            return
        slot: object
        if key is None:  # events never share a slot
            slot, self._events = ("event", self._events), self._events + 1
        else:
            slot = key
            self.reports.pop(slot, None)
        self.reports[slot] = (topic, key, text)

    def send(self, messages: Iterable[Publish]) -> None:
        self.publish.extend(Outgoing(m.topic, _encode(m.payload).encode()) for m in messages)


class TwinService:
    """Owns the twin states of the devices bound to this node."""

    def __init__(
        self,
        store: EdgeStore,
        node: str,
        clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
        bare_id_namespace: str = "default",
    ) -> None:
        self.store = store
        self.node = node
        self._clock_ms = clock_ms
        self._new_id = new_id
        self._twins: dict[str, DeviceTwin] = {
            k: DeviceTwin.from_dict(v) for k, v in store.iter_twins()
        }
        #: Devices a DMI mapper serves (device id → mapper), written by edgecore.dmi: MQTT
        #: messages about them are refused and no MQTT deltas are sent for them.
        self.dmi_served: dict[str, str] = {}
        #: Called with a hub batch's changes once it has committed (edgecore.dmi).
        self.on_changes: Callable[[list[Applied]], None] | None = None
        #: Which topic shape each device's mapper speaks (bare ids: mqtt.bare_id_namespace).
        self.shapes = TopicShapes(bare_id_namespace)
        for device_id in self._twins:
            self.shapes.bound(device_id)
        #: Packet ids of the batch committed last before this process started.
        self._redelivered: set[int] = set(store.last_batch())
        #: Mapper messages refused because edge.db could not store them: ``counts`` has
        #: them by reason (``storage``) for the log, ``kinds`` by what they were (uploads,
        #: updates) for the hub. Kept in edge.db by the first transaction that can store
        #: again, mapper batch or hub batch, so a restart still reports them.
        self.unstored = Drops(log)
        #: Mapper messages refused (bad payloads, unknown devices or states): one log line
        #: per kind of refusal a minute, however fast a broken mapper repeats itself.
        self.refused = Drops(log)
        self.unstored_kinds: dict[str, int] = store.unstored()
        self._unstored_recorded = dict(self.unstored_kinds)
        if self.unstored_kinds:
            self.unstored.count("storage", sum(self.unstored_kinds.values()))
        self._unstored_since: int | None = None
        self._unstored_count = 0
        #: Mapper messages with reported values stored (a twin/reported row), since start.
        self.reported_updates = 0

    def _context(self) -> Context:
        return Context(node=self.node, now_ms=self._clock_ms(), new_id=self._new_id)

    def _lookup(self, batch: TwinBatch) -> Callable[[str], DeviceTwin | None]:
        """Twins as the batch has left them so far, over the committed ones."""

        def lookup(device_id: str) -> DeviceTwin | None:
            if device_id in batch.twins:
                return batch.twins[device_id]
            return self._twins.get(device_id)

        return lookup

    def _members(self, batch: TwinBatch) -> Callable[[], list[DeviceTwin]]:
        def members() -> list[DeviceTwin]:
            merged = {**self._twins, **batch.twins}
            return sorted((t for t in merged.values() if t is not None), key=lambda t: t.id)

        return members

    def handle_messages(self, messages: Iterable[Inbound]) -> list[Outgoing]:
        """Apply mapper messages in one transaction; returns the replies to publish.

        When edge.db cannot take the batch (a full disk, an I/O error), every message is
        still answered from memory: reads (twin get, membership) as always, and whatever
        would have been stored with an error result where the protocol has one; counted
        and logged once a minute (:meth:`_answer_unstored`). Each batch tries the disk
        first, so the edge takes updates again by itself once space returns.
        """
        messages = self._not_yet_stored(list(messages))
        try:
            replies = self._apply_messages(messages)
        except sqlite3.OperationalError as exc:
            if not is_storage_failure(exc):
                raise
            return self._answer_unstored(messages, str(exc))
        if self._unstored_since is not None:
            log.warning(
                "edge.db takes mapper updates again (after %d refused)", self._unstored_count
            )
            self._unstored_since = None
            self._unstored_count = 0
        return replies

    def _not_yet_stored(self, messages: list[Inbound]) -> list[Inbound]:
        """Leave out what the broker redelivers after a crash between the commit of a batch
        and its acknowledgement: MQTT QoS 1 is at-least-once, and a second copy of an
        upload or report would reach the hub. The last committed batch's packet ids are in
        edge.db (written with the batch); a redelivery carries the DUP flag and its old id.
        Redeliveries come first after a reconnect, so the first new message ends the check.
        """
        if not self._redelivered:
            return messages
        fresh = []
        for msg in messages:
            if msg.dup and msg.mid in self._redelivered:
                log.info("MQTT: a redelivered message (id %d) was stored before: skipped", msg.mid)
                continue
            if not msg.dup:
                self._redelivered = set()
            fresh.append(msg)
        return fresh

    def _served_elsewhere(self, msg: Inbound) -> Outcome | None:
        """The refusal of an MQTT message about a device a DMI mapper serves (None: not)."""
        if msg.via_dmi or not self.dmi_served:
            return None
        found = topics.device_of(msg.topic)
        mapper = self.dmi_served.get(found[0]) if found is not None else None
        if found is None or mapper is None or found[1] not in _ANSWERED:
            return None
        reason = f"device {found[0]} is served by the DMI mapper {mapper}, not over MQTT"
        try:
            event_id = json.loads(msg.payload).get("event_id", "")
        except (ValueError, AttributeError, UnicodeDecodeError):
            event_id = ""
        event_id = event_id if isinstance(event_id, str) else ""
        reply = ErrorResult(event_id, self._clock_ms(), 409, reason)
        result = f"{msg.topic}/result"
        return Outcome(
            publish=(Publish(result, reply.to_wire()),),
            error=TwinError(409, reason, event_id, result),
        )

    def _as_namespaced(self, msg: Inbound) -> tuple[Inbound, str | None]:
        """The message with a bare device id in its topic made namespaced, and that device's
        id when it was bare (its replies go back bare)."""
        topic, bare_id = self.shapes.incoming(msg.topic)
        return (msg if topic == msg.topic else replace(msg, topic=topic)), bare_id

    def _answer_unstored(self, messages: list[Inbound], reason: str) -> list[Outgoing]:
        batch = TwinBatch(self.store.encode_row)
        lookup, members = self._lookup(batch), self._members(batch)
        replies = TwinBatch(self.store.encode_row)
        refused = 0
        for msg in messages:
            msg, bare_id = self._as_namespaced(msg)
            outcome = handle_message(msg.topic, msg.payload, self._context(), lookup, members)
            if not (outcome.updated or outcome.removed or outcome.reports):
                # a read, or a refusal: nothing to store
                replies.send(self.shapes.replies(outcome.publish, bare_id))
                continue
            refused += 1
            kind = _unstored_kind(msg.topic)
            self.unstored_kinds[kind] = self.unstored_kinds.get(kind, 0) + 1
            reply = _not_stored(msg, self._clock_ms())
            if reply is not None:
                replies.send(self.shapes.replies((reply,), bare_id))
        if refused:
            if self._unstored_since is None:
                self._unstored_since = self._clock_ms()
            self._unstored_count += refused
            self.unstored.add(
                "storage",
                f"edge.db cannot store mapper updates ({reason}): {refused} answered with an "
                "error and not applied; twins and membership are still served from the "
                "cache, and updates are taken again once the disk has room",
                refused,
            )
        return replies.publish

    def _apply_messages(self, messages: list[Inbound]) -> list[Outgoing]:
        batch = TwinBatch(self.store.encode_row)
        lookup, members = self._lookup(batch), self._members(batch)
        reported = 0
        with self.store.transaction():
            for msg in messages:
                sent = msg.topic  # as the mapper wrote it, for the log
                msg, bare_id = self._as_namespaced(msg)
                outcome = self._served_elsewhere(msg) or handle_message(
                    msg.topic, msg.payload, self._context(), lookup, members
                )
                shaped = self.shapes.replies(outcome.publish, bare_id)
                if shaped is not outcome.publish:
                    outcome = replace(outcome, publish=shaped)
                if outcome.error is not None:
                    self.refused.add(
                        f"{_action(sent)} {outcome.error.code}",
                        f"refused {sent[:300]}: {outcome.error}",
                    )
                reported += any(r.topic == TOPIC_TWIN_REPORTED for r in outcome.reports)
                _absorb(outcome, batch)
            self._write(batch)
            self.store.outages.count("servedLocally", len(batch.publish))
            self.store.remember_batch([m.mid for m in messages if m.mid])
        self.adopt(batch)
        self.reported_updates += reported
        return batch.publish

    def on_hub_changes(self, applied: list[Applied]) -> TwinBatch:
        """Inside the transaction that applies a hub batch: the twins it touches, written in
        that transaction. Call :meth:`adopt` with the result once it has committed."""
        batch = TwinBatch(self.store.encode_row)
        ctx = self._context()
        batch.applied = applied
        for change in applied:
            for outcome in self._cloud_outcomes(change, ctx, batch):
                shaped = self.shapes.outgoing(p for p in outcome.publish if self._over_mqtt(p))
                outcome = replace(outcome, publish=tuple(shaped))
                if outcome.error is not None:
                    log.warning(
                        "hub change to %s/%s: %s", change.namespace, change.name, outcome.error
                    )
                _absorb(outcome, batch)
        self._write(batch)
        return batch

    def _over_mqtt(self, publish: Publish) -> bool:
        """Whether a message goes to MQTT mappers: not for a device a DMI mapper serves."""
        found = topics.device_of(publish.topic) if self.dmi_served else None
        return found is None or found[0] not in self.dmi_served

    def adopt(self, batch: TwinBatch) -> None:
        """``batch`` has committed: memory now holds what the disk holds."""
        if batch.unstored is not None:
            self._unstored_recorded = batch.unstored
        for device_id, twin in batch.twins.items():
            if twin is None:
                self._twins.pop(device_id, None)
                self.shapes.forget(device_id)
            else:
                self._twins[device_id] = twin
                self.shapes.bound(device_id)
        if batch.applied and self.on_changes is not None:
            self.on_changes(batch.applied)

    def _cloud_outcomes(self, change: Applied, ctx: Context, batch: TwinBatch) -> list[Outcome]:
        lookup = self._lookup(batch)
        if change.kind == DEVICE.name:
            device = change.after
            model = self._model_of(device) if device is not None else None
            current = lookup(f"{change.namespace}/{change.name}")
            return [apply_cloud(current, device, model, ctx)]
        if change.kind == DEVICE_MODEL.name and change.after is not None:
            # re-apply the model's devices, so properties it adds get its types
            outcomes = []
            for device_id in sorted({*self._twins, *batch.twins}):
                twin = lookup(device_id)
                if twin is None or twin.namespace != change.namespace:
                    continue
                device = self.store.get_object(DEVICE.name, twin.namespace, twin.name)
                if device is not None and _model_ref(device) == change.name:
                    outcomes.append(apply_cloud(twin, device, change.after, ctx))
            return outcomes
        return []

    def _model_of(self, device: dict) -> dict | None:
        name = _model_ref(device)
        if not name:
            return None
        return self.store.get_object(DEVICE_MODEL.name, device["metadata"]["namespace"], name)

    def _write(self, batch: TwinBatch) -> None:
        self.store.save_twins(
            (i, twin.to_dict()) for i, twin in batch.twins.items() if twin is not None
        )
        self.store.delete_twins(i for i, twin in batch.twins.items() if twin is None)
        self.store.write_rows(batch.reports.values())
        if self.unstored_kinds != self._unstored_recorded:
            batch.unstored = dict(self.unstored_kinds)
            self.store.remember_unstored(batch.unstored)

    def members(self) -> list[DeviceTwin]:
        return sorted(self._twins.values(), key=lambda t: t.id)

    def twin(self, device_id: str) -> DeviceTwin | None:
        return self._twins.get(device_id)


def _absorb(outcome: Outcome, batch: TwinBatch) -> None:
    """Take an outcome into what the batch will write and publish."""
    for twin in outcome.updated:
        batch.twins[twin.id] = twin
    for device_id in outcome.removed:
        batch.twins[device_id] = None
    for r in outcome.reports:
        batch.report(r.topic, r.key, r.body)
    batch.send(outcome.publish)


#: What a mapper is told when an update could not be stored (ours: KubeEdge has none).
NOT_STORED = (
    "the edge could not store this update (its disk is full or failing); it was not "
    "applied: send it again later"
)


#: Requests a mapper makes about a device, each with a result topic to refuse it on.
_ANSWERED = ("twin/update", "twin/get", "state/update")
#: What a mapper's topic asks for, to group refusals by (a bounded set, whatever the topic).
_ACTIONS = ("twin/update", "twin/get", "state/update", "membership/get", "upload")


def _action(topic: str) -> str:
    return next((a for a in _ACTIONS if topic.endswith("/" + a)), "other")


def _unstored_kind(topic: str) -> str:
    """What a message edge.db could not store was, as the hub is told: ``uploads`` (apps'
    events, which the mapper cannot be asked to send again) or ``updates`` (the rest)."""
    route = topics.match(topic)
    return "uploads" if route is not None and route.action is topics.Action.UPLOAD else "updates"


def _not_stored(msg: Inbound, now_ms: int) -> Publish | None:
    """The error result for an update that was not stored, on the reply topic the protocol
    has for it (twin updates); None for messages KubeEdge answers with nothing."""
    route = topics.match(msg.topic)
    if route is None or route.action is not topics.Action.TWIN_UPDATE:
        return None
    try:
        event_id = json.loads(msg.payload).get("event_id", "")
    except (ValueError, AttributeError, UnicodeDecodeError):
        event_id = ""
    result = ErrorResult(event_id if isinstance(event_id, str) else "", now_ms, 500, NOT_STORED)
    return Publish(topics.device_topic(route.device_id, "twin/update/result"), result.to_wire())


def _model_ref(device: dict) -> str | None:
    ref = device.get("spec", {}).get("deviceModelRef")
    return ref.get("name") if isinstance(ref, dict) else None
