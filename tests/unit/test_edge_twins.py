"""edgecore's twin service against a real edge.db: state and outbox rows commit together."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from edgecore.store import Applied, EdgeStore
from edgecore.twins import Inbound, TwinService
from edgeward.protocol import Change

DEVICE = {
    "apiVersion": "devices.kubeedge.io/v1beta1",
    "kind": "Device",
    "metadata": {"name": "thermo", "namespace": "default", "resourceVersion": "3"},
    "spec": {"nodeName": "edge1", "properties": [{"name": "target", "desired": {"value": "21"}}]},
}
UPDATE = (
    "$hw/events/device/default/thermo/twin/update",
    json.dumps(
        {"event_id": "e1", "timestamp": 0, "twin": {"temperature": {"actual": {"value": "20.5"}}}}
    ).encode(),
)


@pytest.fixture
def service(tmp_path: Path) -> TwinService:
    store = EdgeStore(tmp_path / "edge.db")
    store.claim("edge1")
    twins = TwinService(store, "edge1", clock_ms=lambda: 1_700_000_000_000, new_id=lambda: "id")
    with store.transaction():
        batch = twins.on_hub_changes([Applied("Device", "default", "thermo", None, DEVICE)])
    twins.adopt(batch)
    return twins


def test_a_mapper_update_stores_twin_state_and_its_report_together(service: TwinService) -> None:
    """A mapper's reported value lands in the twin state and in the outbox, and a restarted
    edgecore reads the same state back."""
    replies = service.handle_messages([Inbound(*UPDATE)])
    assert any(r.topic.endswith("/twin/update/result") for r in replies)
    twin = service.twin("default/thermo")
    assert twin is not None and twin.twins["temperature"].actual.value == "20.5"
    rows = service.store.pending(0)
    report = [r for r in rows if r.topic == "twin/reported"][-1]
    assert report.body["twins"]["temperature"]["reported"]["value"] == "20.5"
    again = TwinService(service.store, "edge1")
    assert again.twin("default/thermo") == twin


def test_when_the_outbox_write_fails_the_twin_state_is_not_kept(service: TwinService) -> None:
    """All or nothing: if the report cannot be queued, the twin change is rolled back in the
    database and in memory (and the batch fails, so the eventbus does not acknowledge it)."""
    before = service.twin("default/thermo")
    service.store.db.execute("DROP TABLE outbox")  # the next outbox write fails
    with pytest.raises(sqlite3.OperationalError):
        service.handle_messages([Inbound(*UPDATE)])
    assert service.twin("default/thermo") == before
    stored = service.store.twins()["default/thermo"]
    assert "actual" not in json.dumps(stored["twins"].get("temperature", {}))


def _update(event_id: str, value: str) -> Inbound:
    body = {"event_id": event_id, "twin": {"temperature": {"actual": {"value": value}}}}
    return Inbound(UPDATE[0], json.dumps(body).encode())


def test_a_batch_writes_each_device_once_with_its_last_state(service: TwinService) -> None:
    """Several updates of one device in one batch: each sees the one before it (versions
    count every update) and gets its own result, but the stored state and the single
    twin/reported row are the batch's last, and events in between are all kept."""
    upload = Inbound("$hw/events/upload/readings", b"raw")
    replies = service.handle_messages(
        [_update("e1", "1.5"), upload, _update("e2", "2.5"), _update("e3", "3.5")]
    )
    results = [
        json.loads(r.payload)["event_id"]
        for r in replies
        if r.topic.endswith("/twin/update/result")
    ]
    assert results == ["e1", "e2", "e3"]
    twin = service.twin("default/thermo")
    assert twin is not None
    temperature = twin.twins["temperature"]
    assert (temperature.actual.value, temperature.actual_version.edge) == ("3.5", 3)
    assert service.store.twins()["default/thermo"] == twin.to_dict()
    rows = service.store.pending(0)
    reported = [r for r in rows if r.topic == "twin/reported"]
    assert len(reported) == 1
    assert reported[0].body["twins"]["temperature"]["reported"]["value"] == "3.5"
    assert [r.topic for r in rows] == ["upload", "twin/reported"]


def test_a_device_removed_by_the_hub_loses_its_stored_state(service: TwinService) -> None:
    """A hub batch that unbinds a device deletes its twin state row with the batch."""
    with service.store.transaction():
        batch = service.on_hub_changes([Applied("Device", "default", "thermo", DEVICE, None)])
    service.adopt(batch)
    assert service.twin("default/thermo") is None
    assert "default/thermo" not in service.store.twins()


def test_a_hub_batch_that_does_not_commit_leaves_the_twins_as_the_disk_has_them(
    service: TwinService,
) -> None:
    """A batch of hub changes whose transaction fails (a full disk, here a table that cannot
    be written) changes nothing in memory either: the hub's replay of the same change then
    produces the delta the mapper is owed, instead of nothing because memory already had it."""
    store = service.store
    desired = json.loads(json.dumps(DEVICE))
    desired["metadata"]["resourceVersion"] = "4"
    desired["spec"]["properties"][0]["desired"] = {"value": "25"}
    change = Change("put", "Device", "default", "thermo", 4, desired)
    store.db.execute("ALTER TABLE outbox RENAME TO outbox_away")  # the next outbox write fails
    with pytest.raises(sqlite3.OperationalError):
        store.apply_changes(4, [change], service.on_hub_changes)
    assert service.twin("default/thermo").twins["target"].expected.value == "21"
    assert store.revision() == 0
    store.db.execute("ALTER TABLE outbox_away RENAME TO outbox")
    batch = store.apply_changes(4, [change], service.on_hub_changes)
    service.adopt(batch)
    deltas = [
        json.loads(p.payload) for p in batch.publish if p.topic.endswith("/twin/update/delta")
    ]
    assert deltas and deltas[-1]["delta"] == {"target": "25"}
    assert service.twin("default/thermo").twins["target"].expected.value == "25"


def test_a_batch_the_broker_redelivers_after_a_crash_is_not_stored_twice(
    tmp_path: Path,
) -> None:
    """Killed between a batch's commit and its PUBACK, edgecore gets the batch again (DUP
    set, same packet ids) when it restarts: those are acknowledged, not stored again. The
    first new message ends the check, so a later id that happens to match is stored."""

    def upload(mid: int, text: str, dup: bool = False) -> Inbound:
        return Inbound("$hw/events/upload/meter", text.encode(), mid=mid, dup=dup)

    def uploads(store: EdgeStore) -> list[str]:
        rows = store.db.execute("SELECT body FROM outbox WHERE topic = 'upload' ORDER BY seq")
        return [json.loads(body)["payload"] for (body,) in rows]

    store = EdgeStore(tmp_path / "edge.db")
    store.claim("edge1")
    TwinService(store, "edge1").handle_messages([upload(7, "a"), upload(8, "b")])
    store.close()  # the crash: no PUBACK went out

    store = EdgeStore(tmp_path / "edge.db")
    service = TwinService(store, "edge1")
    service.handle_messages([upload(7, "a", dup=True), upload(8, "b", dup=True)])
    assert uploads(store) == ["a", "b"]
    service.handle_messages([upload(9, "c")])
    service.handle_messages([upload(7, "d", dup=True)])  # a retransmission of a new message
    assert uploads(store) == ["a", "b", "c", "d"]


def test_refusals_on_a_full_disk_are_counted_by_kind_and_kept_by_the_next_hub_batch(
    service: TwinService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a full disk refused is counted by kind (an upload is not an update: nothing
    asks the app again), and the first transaction stored afterwards keeps the counts, even
    when it is a batch from the hub, so a restart goes on reporting them."""
    upload = Inbound("$hw/events/upload/app", b'{"reading": 1}')
    get = Inbound("$hw/events/device/default/thermo/twin/get", b'{"event_id": "g"}')

    def full(_messages: object) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    with monkeypatch.context() as m:
        m.setattr(service, "_apply_messages", full)
        replies = service.handle_messages([Inbound(*UPDATE), upload, Inbound(*UPDATE), get])
    assert [r.topic.rsplit("/", 2)[-2:] for r in replies] == [
        ["update", "result"],
        ["update", "result"],
        ["get", "result"],
    ]
    assert service.unstored_kinds == {"updates": 2, "uploads": 1}
    assert service.unstored.counts == {"storage": 3}
    assert TwinService(service.store, "edge1").unstored_kinds == {}, "not stored yet"

    changed = {**DEVICE, "metadata": {**DEVICE["metadata"], "resourceVersion": "4"}}
    with service.store.transaction():
        batch = service.on_hub_changes([Applied("Device", "default", "thermo", DEVICE, changed)])
    service.adopt(batch)
    again = TwinService(service.store, "edge1")
    assert again.unstored_kinds == {"updates": 2, "uploads": 1}
    assert again.unstored.counts == {"storage": 3}


def test_a_refusal_count_recorded_before_the_split_by_kind_still_loads(tmp_path: Path) -> None:
    store = EdgeStore(tmp_path / "edge.db")
    store.claim("edge1")
    with store.transaction():
        store._set_meta("unstored", "7")
    assert TwinService(store, "edge1").unstored_kinds == {"updates": 7}
    for garbage, loaded in (
        ("[1, 2]", {}),
        ("{not json", {}),
        ('{"uploads": "x", "updates": 2}', {"updates": 2}),
    ):
        with store.transaction():
            store._set_meta("unstored", garbage)
        assert TwinService(store, "edge1").unstored_kinds == loaded
