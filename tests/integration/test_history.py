"""Twin history: each reported value the hub receives is kept with its time, read back by
the REST API and `edgeward twin history`, and bounded by age and count per property. The
store on SQLite and PostgreSQL; the API and CLI against a real hub, edgecore and broker."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import threading
import urllib.parse
from typing import Any

import pytest
from sqlalchemy import func, select, text

from cloudhub import history
from cloudhub.schema import twin_history, twin_history_recent
from cloudhub.store import Store
from tests.integration.test_cli import assert_one_error, run
from tests.integration.test_twins import NS, D, device, model, reported, update
from tests.support.clock import T0, ManualClock
from tests.support.mosquitto import Mosquitto
from tests.support.mqtt import FakeMapper
from tests.support.procs import Hub, wait_for


def thermo(store: Store) -> dict[str, Any]:
    body = {
        "apiVersion": "devices.kubeedge.io/v1beta1",
        "kind": "Device",
        "metadata": {"name": "thermo", "namespace": "default"},
        "spec": {"nodeName": "edge-1", "properties": [{"name": "temperature"}]},
    }
    from edgeward.kinds import DEVICE

    store.create(DEVICE, body)
    return store.get(DEVICE, "default", "thermo")


def entry(value: str, stamp_ms: int) -> dict[str, Any]:
    meta = {"timestamp": str(stamp_ms)}
    return {"propertyName": "temperature", "reported": {"value": value, "metadata": meta}}


def test_changed_values_are_kept_and_read_back_newest_last(store: Store) -> None:
    current = thermo(store)
    with store.writing() as tx:
        assert history.record(tx, current, [entry("20.5", int(T0 * 1000) - 2000)]) == 1
    current["status"] = {"twins": [entry("20.5", int(T0 * 1000) - 2000)]}
    with store.writing() as tx:  # the same value and time again: nothing new
        assert history.record(tx, current, [entry("20.5", int(T0 * 1000) - 2000)]) == 0
        assert history.record(tx, current, [entry("21.5", int(T0 * 1000) - 1000)]) == 1
        # a clock never set (1970) or far ahead: the hub's time instead
        assert history.record(tx, current, [entry("22.5", 5)]) == 1
        assert history.record(tx, current, [entry("23.5", int(T0 * 1000) + 10**9)]) == 1
    read = history.read(store.engine, history.Query("default", "thermo", "temperature"))
    assert [i["value"] for i in read] == ["20.5", "21.5", "22.5", "23.5"]
    assert read[0]["time"] == "2023-11-14T22:13:18.000Z"
    assert read[2]["time"] == read[3]["time"] == "2023-11-14T22:13:20.000Z"
    newest = history.read(store.engine, history.Query("default", "thermo", "temperature", limit=1))
    assert [i["value"] for i in newest] == ["23.5"]
    since = history.Query("default", "thermo", "temperature", since=T0 - 1)
    assert [i["value"] for i in history.read(store.engine, since)] == ["21.5", "22.5", "23.5"]
    other = history.Query("default", "thermo", "humidity")
    assert history.read(store.engine, other) == []


def test_values_not_yet_merged_are_read_with_the_merged_ones(store: Store) -> None:
    """The report path appends to an unindexed table that the leader merges into the
    indexed one: a read sees both, in one order, before and after the merge, and a value
    is moved once."""
    current = thermo(store)
    stamp = int(T0 * 1000)
    with store.writing() as tx:  # two values with one timestamp: the later one is newer
        history.record(tx, current, [entry("20.5", stamp)])
        history.record(tx, current, [entry("21.5", stamp)])
    query = history.Query("default", "thermo", "temperature")
    assert [i["value"] for i in history.read(store.engine, query)] == ["20.5", "21.5"]
    assert history.merge(store) == 2
    with store.writing() as tx:
        history.record(tx, current, [entry("22.5", stamp)])
        history.record(tx, current, [entry("23.5", stamp - 1000)])
    both = [i["value"] for i in history.read(store.engine, query)]
    assert both == ["23.5", "20.5", "21.5", "22.5"]
    newest = history.Query("default", "thermo", "temperature", limit=2)
    assert [i["value"] for i in history.read(store.engine, newest)] == ["21.5", "22.5"]
    assert history.merge(store) == 2
    assert history.merge(store) == 0
    assert [i["value"] for i in history.read(store.engine, query)] == both
    with store.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(twin_history)).scalar() == 4
        assert conn.execute(select(func.count()).select_from(twin_history_recent)).scalar() == 0
    assert history.waiting(store.engine) == 0


def test_the_values_waiting_for_a_merge_are_counted_up_to_a_bound(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    current = thermo(store)
    assert history.waiting(store.engine) == 0
    with store.writing() as tx:
        history.record(tx, current, [entry("1.5", int(T0 * 1000))])
    with store.writing() as tx:
        history.record(tx, current, [entry("2.5", int(T0 * 1000) + 1)])
    assert history.waiting(store.engine) == 2
    monkeypatch.setattr(history, "MAX_COUNTED", 1)
    assert history.waiting(store.engine) == 1
    history.merge(store)
    assert history.waiting(store.engine) == 0


def test_merges_racing_each_other_and_the_reports_move_every_value_once(store: Store) -> None:
    """Two replicas' leaders may overlap for a moment: merges running at once, while values
    keep arriving, lose none and move none twice."""
    current = thermo(store)
    written = 400
    done = threading.Event()
    failures: list[Exception] = []

    def keep_merging() -> None:
        while not done.is_set():
            try:
                history.merge(store)
            except Exception as exc:  # the test reports it
                failures.append(exc)
                return

    mergers = [threading.Thread(target=keep_merging) for _ in range(2)]
    for thread in mergers:
        thread.start()
    try:
        for i in range(0, written, 10):
            with store.writing() as tx:
                for j in range(i, i + 10):
                    history.record(tx, current, [entry(f"{j}.5", int(T0 * 1000) + j)])
    finally:
        done.set()
        for thread in mergers:
            thread.join()
    assert failures == []
    history.merge(store)
    query = history.Query("default", "thermo", "temperature", limit=written + 1)
    values = [i["value"] for i in history.read(store.engine, query)]
    assert values == [f"{j}.5" for j in range(written)]
    with store.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(twin_history)).scalar() == written


def test_merges_that_keep_failing_lose_nothing_and_are_logged_once_a_while(
    store: Store, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A merge failing every second (a full disk) must not write a traceback every second,
    and the values it could not move wait for the first merge that works."""
    current = thermo(store)
    with store.writing() as tx:
        history.record(tx, current, [entry("1.5", int(T0 * 1000))])
    monkeypatch.setattr(history, "FAILURES_PER_LINE", 5)
    rename = "ALTER TABLE {} RENAME TO {}"
    with store.engine.begin() as conn:  # every merge now fails
        conn.execute(text(rename.format("twin_history", "twin_history_away")))
    calls = 0

    def leading() -> bool:  # 12 failing merges, then the table back and one that works
        nonlocal calls
        calls += 1
        if calls == 13:
            with store.engine.begin() as conn:
                conn.execute(text(rename.format("twin_history_away", "twin_history")))
        return calls <= 13

    async def merge_a_while() -> None:
        task = asyncio.create_task(history.merge_forever(store, leading, interval=0.001))
        while calls <= 14:
            await asyncio.sleep(0.001)
        task.cancel()

    with caplog.at_level(logging.INFO, logger="cloudhub.history"):
        asyncio.run(merge_a_while())
    lines = [(r.levelno, r.getMessage(), r.exc_info is not None) for r in caplog.records]
    assert [(level, traced) for level, _, traced in lines] == [
        (logging.ERROR, True),
        (logging.ERROR, False),
        (logging.ERROR, False),
        (logging.WARNING, False),
    ], lines
    assert "(5 times in a row; 1 value waiting)" in lines[1][1]
    assert "(10 times in a row; 1 value waiting)" in lines[2][1]
    assert "after 12 failures" in lines[3][1]
    query = history.Query("default", "thermo", "temperature")
    assert [i["value"] for i in history.read(store.engine, query)] == ["1.5"]
    with store.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(twin_history)).scalar() == 1
        assert conn.execute(select(func.count()).select_from(twin_history_recent)).scalar() == 0


def test_retention_keeps_the_newest_values_within_age_and_count(
    store: Store, clock: ManualClock
) -> None:
    current = thermo(store)
    for i in range(10):  # received a second apart, 100 s ago and after
        clock.now = T0 - 100 + i
        with store.writing() as tx:
            history.record(tx, current, [entry(f"{i}.5", int(clock.now * 1000))])
    assert history.prune(store, before=T0 - 95, max_per_property=100) == 5
    assert history.prune(store, before=0, max_per_property=3) == 2
    kept = history.read(store.engine, history.Query("default", "thermo", "temperature"))
    assert [i["value"] for i in kept] == ["7.5", "8.5", "9.5"]
    assert history.prune(store, before=0, max_per_property=3) == 0
    assert history.prune(store, before=T0 + 1, max_per_property=3) == 3
    assert history.prune(store, before=T0 + 1, max_per_property=3) == 0  # empty


# -- the API and the CLI, end to end -------------------------------------------------------


@pytest.fixture
def reporting(hub: Hub, start_edge: Any, own_broker: Mosquitto) -> FakeMapper:
    assert hub.request("POST", f"{NS}/devicemodels", model())[0] == 201
    assert hub.request("POST", f"{NS}/devices", device("hist", "edge-h"))[0] == 201
    start_edge("edge-h", mqtt=own_broker)
    mapper = FakeMapper(own_broker, f"{D}/hist/twin/update/result")
    wait_for(lambda: reported(hub, "hist", "target") is None and _bound(hub), 20, "the edge")
    for value in ("20.5", "21.5", "22.5"):  # each reaches the hub before the next is sent
        mapper.publish(f"{D}/hist/twin/update", update(f"e{value}", temperature=value))
        wait_for(lambda v=value: reported(hub, "hist", "temperature") == v, 20, value)
    yield mapper
    mapper.close()


def _bound(hub: Hub) -> bool:
    body = hub.request("GET", f"{NS}/devices/hist")[1]
    return any(t.get("observedDesired") for t in body.get("status", {}).get("twins", []))


def api(hub: Hub, query: str, name: str = "hist") -> tuple[int, Any]:
    return hub.request("GET", f"{NS}/devices/{name}/history?{query}")


def test_reported_values_are_served_by_the_api_and_the_cli(hub: Hub, reporting: Any) -> None:
    status, body = api(hub, "property=temperature")
    assert status == 200, body
    assert body["kind"] == "TwinHistory" and body["device"] == "default/hist"
    values = [i["value"] for i in body["items"]]
    assert values == ["20.5", "21.5", "22.5"]
    times = [i["time"] for i in body["items"]]
    assert times == sorted(times)
    since = urllib.parse.quote(times[1])
    assert [i["value"] for i in api(hub, f"property=temperature&since={since}")[1]["items"]] == [
        "21.5",
        "22.5",
    ]
    assert [i["value"] for i in api(hub, "property=temperature&limit=1")[1]["items"]] == ["22.5"]

    table = run("twin", "history", "hist", "temperature", hub=hub)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["TIME", "VALUE"]
    assert [line.split()[1] for line in lines[1:]] == ["20.5", "21.5", "22.5"]
    recent = run("twin", "history", "hist", "temperature", "--since", "1h", "-o", "json", hub=hub)
    assert [i["value"] for i in json.loads(recent.stdout)["items"]] == values
    none = run("twin", "history", "hist", "humidity", hub=hub)
    assert none.returncode == 0 and "no reported values of humidity" in none.stdout
    assert_one_error(run("twin", "history", "nope", "temperature", hub=hub), 1, "not found")
    assert_one_error(run("twin", "history", "hist", "bad prop", hub=hub), 1, "property")
    assert_one_error(run("twin", "history", "hist", "t", "--limit", "0", hub=hub), 2, "limit")


def test_the_hub_merges_new_values_into_the_indexed_history(hub: Hub, reporting: Any) -> None:
    db = sqlite3.connect(f"file:{hub.data_dir / 'hub.db'}?mode=ro", uri=True, timeout=5)
    try:

        def merged() -> bool:
            waiting = db.execute("SELECT count(*) FROM twin_history_recent").fetchone()[0]
            indexed = db.execute("SELECT value FROM twin_history ORDER BY id").fetchall()
            return waiting == 0 and [v for (v,) in indexed] == ["20.5", "21.5", "22.5"]

        wait_for(merged, 10, "the hub to merge the reported values")
    finally:
        db.close()


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("", "property must name a twin"),
        ("property=", "property must name a twin"),
        ("property=" + "p" * 129, "property must name a twin"),
        ("property=a%00b", "property must name a twin"),
        ("property=t&since=yesterday", "since must be an RFC 3339 time"),
        ("property=t&since=nan", "since must be from 0"),
        ("property=t&since=-1", "since must be from 0"),
        ("property=t&since=1e300", "since must be from 0"),
        ("property=t&since=2026-11-30T08:00:00", "since must name its time zone"),
        ("property=t&since=" + "9" * 5000, "since must be from 0"),
        ("property=t&limit=0", "limit must be from 1 to 10000"),
        ("property=t&limit=99999999999999999999999", "limit must be from 1 to 10000"),
        ("property=t&limit=x", "limit must be an integer"),
    ],
)
def test_a_bad_history_query_is_one_clear_400(hub: Hub, query: str, says: str) -> None:
    status, body = api(hub, query)
    assert status == 400, body
    assert says in body["message"]


def test_history_of_a_device_that_does_not_exist_is_a_404(hub: Hub) -> None:
    status, body = api(hub, "property=temperature", name="ghost")
    assert status == 404 and "not found" in body["message"]
    assert api(hub, "property=temperature", name="Not_A_Label")[0] == 400


def test_who_may_read_a_history(tmp_path: Any) -> None:
    """Whoever may read the device: a viewer, or the node it is bound to; another node's
    token is refused, and no token is a 401."""
    hub = Hub(tmp_path / "hub", secure=True)
    hub.start()
    try:
        assert hub.request("POST", f"{NS}/devicemodels", model())[0] == 201
        for name, node in (("mine", "gw-1"), ("theirs", "gw-2")):
            assert hub.request("POST", f"{NS}/devices", device(name, node))[0] == 201
        status, node = hub.request(
            "POST", "/api/v1/tokens", {"role": "node", "node": "gw-1", "singleUse": False}
        )
        assert status == 201, node
        _, viewer = hub.request("POST", "/api/v1/tokens", {"role": "viewer"})
        path = f"{NS}/devices/%s/history?property=temperature"
        assert hub.request("GET", path % "mine", token=node["token"])[0] == 200
        status, refused = hub.request("GET", path % "theirs", token=node["token"])
        assert status == 403 and "not bound" in refused["message"]
        assert hub.request("GET", path % "theirs", token=viewer["token"])[0] == 200
        assert hub.request("GET", path % "theirs", token="")[0] == 401
    finally:
        hub.kill()


def test_a_refused_row_in_a_frame_leaves_the_others_history_once(store: Store) -> None:
    """A frame whose rows are retried one by one after one of them is refused: the history
    of the rows kept is written once, and the refused row's not at all."""
    from cloudhub.nodes import NodeRegistry
    from edgeward.kinds import DEVICE
    from edgeward.protocol import TOPIC_TWIN_REPORTED, ReportItem

    registry = NodeRegistry(store, grace_period=3600)
    registry.register("edge-1", {"agentVersion": "test"})
    thermo(store)  # bound to edge-1
    other = {"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "Device",
             "metadata": {"name": "other", "namespace": "default"},
             "spec": {"nodeName": "edge-2", "properties": [{"name": "temperature"}]}}  # fmt: skip
    store.create(DEVICE, other)

    def row(seq: int, device_id: str, value: str) -> ReportItem:
        twin = {"reported": {"value": value, "timestamp": int(T0 * 1000)}, "deleted": False}
        body = {"device": device_id, "twins": {"temperature": twin}}
        return ReportItem(seq=seq, topic=TOPIC_TWIN_REPORTED, key=None, body=body)

    frame = (row(1, "default/thermo", "20.5"), row(2, "default/other", "9.5"))
    outcome = registry.record_reports("edge-1", frame, 0)
    assert [r.seq for r in outcome.rejected] == [2]
    kept = history.read(store.engine, history.Query("default", "thermo", "temperature"))
    assert [i["value"] for i in kept] == ["20.5"]
    refused = history.Query("default", "other", "temperature")
    assert history.read(store.engine, refused) == []


@pytest.mark.parametrize("through", ["this replica", "another replica"])
def test_after_the_first_prune_only_properties_written_since_are_counted(
    store: Store, engine: Any, clock: ManualClock, through: str
) -> None:
    """The first prune holds every property to the limit; later ones look only at the
    properties given values since, and still cut them to the limit, whichever replica
    sharing the database the values came through."""
    current = thermo(store)
    assert history.prune(store, before=0, max_per_property=3) == 0  # the whole table: empty
    writer = store if through == "this replica" else Store(engine, clock=clock)
    for i in range(5):
        clock.now = T0 + i
        with writer.writing() as tx:
            history.record(tx, current, [entry(f"{i}.5", int(clock.now * 1000))])
    assert history.prune(store, before=0, max_per_property=3) == 2
    kept = history.read(store.engine, history.Query("default", "thermo", "temperature"))
    assert [i["value"] for i in kept] == ["2.5", "3.5", "4.5"]
    assert store.take_history_written() == set(), "the prune took them"
