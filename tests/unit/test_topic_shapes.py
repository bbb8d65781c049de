"""Which topic shape edgecore answers and sends in, per device (edgecore/topicshapes.py)."""

from __future__ import annotations

import logging

import pytest

from devicetwin import Publish
from edgecore.drops import Drops
from edgecore.topicshapes import TopicShapes

DEV = "$hw/events/device"


def shapes(*ids: str, namespace: str = "default") -> TopicShapes:
    s = TopicShapes(namespace)
    for device_id in ids:
        s.bound(device_id)
    return s


def topics(published: list[Publish]) -> list[str]:
    return [p.topic for p in published]


def test_a_bare_request_is_handled_namespaced_and_answered_bare() -> None:
    s = shapes("default/thermo")
    assert s.incoming(f"{DEV}/thermo/twin/update") == (
        f"{DEV}/default/thermo/twin/update",
        "default/thermo",
    )
    replies = [
        Publish(f"{DEV}/default/thermo/twin/update/result", {"a": 1}),
        Publish(f"{DEV}/default/thermo/twin/update/document", {"b": 2}),
        Publish(f"{DEV}//twin/update/result", {"c": 3}),  # the empty-id error topic: as is
    ]
    assert s.replies(tuple(replies), "default/thermo") == (
        Publish(f"{DEV}/thermo/twin/update/result", {"a": 1}),
        Publish(f"{DEV}/thermo/twin/update/document", {"b": 2}),
        Publish(f"{DEV}//twin/update/result", {"c": 3}),
    )
    assert s.bare == {"default/thermo": True}


def test_deltas_follow_the_shape_the_mapper_last_spoke() -> None:
    s = shapes("default/thermo", "plant/press")
    delta = Publish(f"{DEV}/default/thermo/twin/update/delta", {"d": 1})
    other = Publish(f"{DEV}/plant/press/twin/update/delta", {"d": 2})
    # not heard from yet: a device of the bare namespace gets both shapes, others theirs
    assert topics(s.outgoing([delta, other])) == [
        f"{DEV}/default/thermo/twin/update/delta",
        f"{DEV}/thermo/twin/update/delta",
        f"{DEV}/plant/press/twin/update/delta",
    ]
    s.incoming(f"{DEV}/thermo/state/update")
    assert topics(s.outgoing([delta])) == [f"{DEV}/thermo/twin/update/delta"]
    s.incoming(f"{DEV}/default/thermo/twin/get")  # an upgraded mapper
    assert topics(s.outgoing([delta])) == [f"{DEV}/default/thermo/twin/update/delta"]


def test_unknown_devices_are_not_learned_and_a_forgotten_one_is_dropped() -> None:
    s = shapes("default/thermo")
    assert s.incoming(f"{DEV}/ghost/twin/update")[1] == "default/ghost"
    s.incoming(f"{DEV}/plant/ghost/twin/update")
    assert s.bare == {}
    s.incoming(f"{DEV}/thermo/twin/update")
    s.forget("default/thermo")
    s.forget("default/never-bound")
    assert s.bare == {}
    assert s.incoming(f"{DEV}/thermo/twin/update")[0] == f"{DEV}/default/thermo/twin/update"
    assert s.bare == {}


def test_membership_lists_bare_speakers_by_their_name() -> None:
    s = shapes("default/thermo", "default/fan")
    listing = Publish(
        "$hw/events/node/n1/membership/get/result",
        {"event_id": "m", "devices": [{"id": "default/thermo", "name": "thermo"},
                                      {"id": "default/fan", "name": "fan"}, "odd"]},
    )  # fmt: skip
    assert s.replies((listing,), None) == (listing,)  # nobody speaks bare yet
    plain = (Publish(f"{DEV}/default/fan/twin/get/result", {}),)
    assert s.replies(plain, None) is plain  # nothing to change: nothing allocated
    s.incoming(f"{DEV}/thermo/twin/update")
    [shown] = s.outgoing([listing])
    assert shown.payload["devices"] == [
        {"id": "thermo", "name": "thermo"},
        {"id": "default/fan", "name": "fan"},
        "odd",
    ]
    updated = Publish(
        "$hw/events/node/n1/membership/updated",
        {"added_devices": None, "removed_devices": [{"id": "default/thermo"}]},
    )
    assert s.replies((updated,), None)[0].payload["removed_devices"] == [{"id": "thermo"}]


def test_bare_ids_off_leaves_every_topic_alone() -> None:
    s = shapes("default/thermo", namespace="")
    assert s.incoming(f"{DEV}/thermo/twin/update") == (f"{DEV}/thermo/twin/update", None)
    delta = Publish(f"{DEV}/default/thermo/twin/update/delta", {})
    assert s.outgoing([delta]) == [delta]


def test_a_name_in_two_namespaces_is_a_logged_conflict(caplog: pytest.LogCaptureFixture) -> None:
    s = TopicShapes("default", Drops(logging.getLogger("t"), clock=lambda: 0.0))
    for device_id in ("default/thermo", "plant/thermo"):
        s.bound(device_id)
    with caplog.at_level(logging.WARNING):
        for _ in range(5):
            assert s.incoming(f"{DEV}/thermo/twin/update")[1] == "default/thermo"
    [line] = [r.getMessage() for r in caplog.records]
    assert "'thermo' means default/thermo" in line and "plant/thermo is bound" in line
    s.forget("plant/thermo")
    caplog.clear()
    s.incoming(f"{DEV}/thermo/twin/update")
    assert caplog.records == []
