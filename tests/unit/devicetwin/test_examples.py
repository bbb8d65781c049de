"""Every example and topic of KUBEEDGE-MQTT.md, compared as parsed JSON."""

from __future__ import annotations

import base64

import pytest

from devicetwin import SUBSCRIPTIONS, Outcome
from tests.unit.devicetwin.support import NODE, T0, D, Edge, device, published, wire

UPDATE_EXAMPLE = {
    "event_id": "e1",
    "timestamp": 0,
    "twin": {"temp": {"actual": {"value": "23"}, "metadata": {"type": "int"}}},
}
TEMP_23 = {
    "actual": {"value": "23", "metadata": {"timestamp": T0}},
    "optional": True,
    "metadata": {"type": "int"},
}


def test_update_request_example_gets_result_and_document(thermo: Edge) -> None:
    """The spec's update request creates the twin and answers with a result and a document."""
    out = published(thermo.mqtt(f"{D}/twin/update", UPDATE_EXAMPLE))
    assert out == {
        f"{D}/twin/update/result": {"event_id": "e1", "timestamp": T0, "twin": {"temp": TEMP_23}},
        f"{D}/twin/update/document": {
            "event_id": "e1",
            "timestamp": T0,
            "twin": {"temp": {"last": None, "current": TEMP_23}},
        },
    }


def test_update_result_is_empty_when_nothing_changed(thermo: Edge) -> None:
    """An update that changes nothing is answered with ``"twin": {}`` and nothing else."""
    outcome = thermo.update({"gone": None})
    assert published(outcome) == {
        f"{D}/twin/update/result": {"event_id": "e1", "timestamp": T0, "twin": {}}
    }
    assert outcome.updated == () and outcome.reports == ()


def test_update_result_shows_null_for_a_deleted_twin(thermo: Edge) -> None:
    """A twin deleted by the request shows as null in the result, and current null in the doc."""
    thermo.update({"temp": {"actual": {"value": "23"}, "metadata": {"type": "int"}}})
    out = published(thermo.update({"temp": None}, event_id="e2"))
    assert out[f"{D}/twin/update/result"] == {
        "event_id": "e2",
        "timestamp": T0,
        "twin": {"temp": None},
    }
    assert out[f"{D}/twin/update/document"]["twin"] == {"temp": {"last": TEMP_23, "current": None}}


def test_error_result_example_when_unparseable(thermo: Edge) -> None:
    """An unparseable body gets the error result with an empty event_id on the empty-id topic."""
    out = published(thermo.mqtt(f"{D}/twin/update", b"{not json"))
    assert out == {
        "$hw/events/device//twin/update/result": {
            "event_id": "",
            "timestamp": T0,
            "code": 400,
            "reason": "Unmarshal update request body failed, please check the request",
        }
    }


def test_delta_example(thermo: Edge) -> None:
    """The delta shows live twins with an expected value and lists those whose actual differs."""
    thermo.update(
        {
            "met": {"expected": {"value": "1"}, "actual": {"value": "1"}},
            "unmet": {"expected": {"value": "on"}},
            "no-expected": {"actual": {"value": "5"}},
            "empty": {"expected": {"value": ""}},
            "deleted": {"expected": {"value": "x"}},
        }
    )
    out = published(thermo.update({"deleted": None, "met": {"actual": {"value": "2"}}}))
    ts = {"metadata": {"timestamp": T0}}
    assert out[f"{D}/twin/update/delta"] == {
        "event_id": "uuid-2",
        "timestamp": T0,
        "twin": {
            "met": {
                "expected": {"value": "1", **ts},
                "actual": {"value": "2", **ts},
                "optional": True,
                "metadata": {"type": "string"},
            },
            "unmet": {
                "expected": {"value": "on", **ts},
                "optional": True,
                "metadata": {"type": "string"},
            },
        },
        "delta": {"met": "1", "unmet": "on"},
    }


def test_document_example(thermo: Edge) -> None:
    """The document shows last and current of each changed twin, without versions."""
    thermo.update({"temp": {"expected": {"value": "20"}}})
    thermo.now_ms = T0 + 5
    out = published(thermo.update({"temp": {"actual": {"value": "20"}}}, event_id="e2"))
    last = {
        "expected": {"value": "20", "metadata": {"timestamp": T0}},
        "optional": True,
        "metadata": {"type": "string"},
    }
    current = {**last, "actual": {"value": "20", "metadata": {"timestamp": T0 + 5}}}
    assert out[f"{D}/twin/update/document"] == {
        "event_id": "e2",
        "timestamp": T0 + 5,
        "twin": {"temp": {"last": last, "current": current}},
    }


def test_get_example(thermo: Edge) -> None:
    """twin/get {"event_id":"g1"} returns every twin that is not deleted."""
    thermo.update({"temp": {"actual": {"value": "23"}, "metadata": {"type": "int"}}, "old": {}})
    thermo.update({"old": None})
    assert thermo.get() == {"event_id": "g1", "timestamp": T0, "twin": {"temp": TEMP_23}}


def test_state_example(thermo: Edge) -> None:
    """The state example is answered with the device's name, state and lastOnlineTime."""
    outcome = thermo.mqtt(
        f"{D}/state/update", {"event_id": "s1", "timestamp": 0, "state": "online"}
    )
    assert published(outcome) == {
        f"{D}/state/update/result": {
            "event_id": "uuid-1",
            "timestamp": T0,
            "device": {
                "name": "thermo",
                "state": "online",
                "lastOnlineTime": "2024-05-01T12:00:00Z",
            },
        }
    }


def test_membership_get_example(thermo: Edge) -> None:
    """membership/get lists the node's devices (no twins) on the real node name's topic."""
    thermo.cloud(device(description="living room"))
    thermo.mqtt(f"{D}/state/update", {"event_id": "s1", "state": "online"})
    thermo.update({"temp": {"actual": {"value": "1"}}})
    outcome = thermo.mqtt("$hw/events/node/whatever/membership/get", {"event_id": "m1"})
    assert published(outcome) == {
        f"$hw/events/node/{NODE}/membership/get/result": {
            "event_id": "m1",
            "timestamp": T0,
            "devices": [
                {
                    "id": "default/thermo",
                    "name": "thermo",
                    "description": "living room",
                    "state": "online",
                    "last_online": "2024-05-01T12:00:00Z",
                }
            ],
        }
    }


def test_membership_get_with_no_devices(edge: Edge) -> None:
    """A node without devices answers membership/get with an empty list."""
    outcome = edge.mqtt(f"$hw/events/node/{NODE}/membership/get", {"event_id": "m1"})
    assert published(outcome) == {
        f"$hw/events/node/{NODE}/membership/get/result": {
            "event_id": "m1",
            "timestamp": T0,
            "devices": [],
        }
    }


def test_membership_updated_examples(edge: Edge) -> None:
    """A device bound to the node is announced in added_devices, an unbound one in removed."""
    added = published(edge.cloud(device(properties={"temp": "21"})))
    removed = published(edge.cloud(None))
    member = {
        "id": "default/thermo",
        "name": "thermo",
        "description": "",
        "state": "",
        "last_online": "",
    }
    twin = {
        "temp": {
            "expected": {"value": "21", "metadata": {"timestamp": T0}},
            "optional": True,
            "metadata": {"type": "string"},
        }
    }
    topic = f"$hw/events/node/{NODE}/membership/updated"
    assert added[topic] == {
        "event_id": "uuid-1",
        "timestamp": T0,
        "added_devices": [{**member, "twin": twin}],
        "removed_devices": None,
    }
    assert removed == {
        topic: {
            "event_id": "uuid-4",
            "timestamp": T0,
            "added_devices": None,
            "removed_devices": [member],
        }
    }


def test_subscriptions_are_the_spec_topics() -> None:
    """The edge subscribes to exactly the spec's topics, two-segment device ids only."""
    assert set(SUBSCRIPTIONS) == {
        "$hw/events/device/+/+/twin/update",
        "$hw/events/device/+/+/twin/get",
        "$hw/events/device/+/+/state/update",
        "$hw/events/device/+/+/twin/cloud_updated",
        "$hw/events/node/+/membership/get",
        "$hw/events/upload/#",
        "SYS/dis/upload_records",
    }
    assert len(SUBSCRIPTIONS) == 7


@pytest.mark.parametrize(
    "topic",
    [
        "$hw/events/device/thermo/twin/update",  # a bare id: edgecore makes it namespaced first
        "$hw/events/device/thermo/twin/get",
        "$hw/events/device/thermo/state/update",
        "$hw/events/device/default/thermo/twin/update/result",  # our own replies
        "$hw/events/device//twin/update/result",
        "$hw/events/device/default/thermo/twin/update/delta",
        "$hw/events/device/default/thermo/twin/other",
        "$hw/events/node/edge-1/membership/updated",
        "$hw/events/node/edge-1/membership/get/result",
        "$hw/events/node/membership/get",
        "$ke/events/device/default/thermo/data/update",  # time series: for third parties
        "$hw/events/uploads",
        "SYS/dis/upload_records/x",
        "",
        "/",
    ],
)
def test_topics_that_are_not_ours_are_ignored(thermo: Edge, topic: str) -> None:
    """Messages on topics the edge does not serve change nothing and get no reply."""
    assert thermo.mqtt(topic, {"event_id": "e1", "twin": {"temp": {}}}) == Outcome()


@pytest.mark.parametrize(
    "topic", ["$hw/events/upload", "$hw/events/upload/app/1", "SYS/dis/upload_records"]
)
def test_uploads_are_forwarded_to_the_hub(edge: Edge, topic: str) -> None:
    """Upload topics are forwarded as an event row with the payload as text, nothing published."""
    outcome = edge.mqtt(topic, b'{"any": "thing"}')
    assert outcome.publish == () and outcome.updated == ()
    [report] = outcome.reports
    assert (report.topic, report.key) == ("upload", None)
    assert wire(report.body) == {"topic": topic, "payload": '{"any": "thing"}'}


def test_binary_uploads_are_forwarded_as_base64(edge: Edge) -> None:
    """A payload that is not UTF-8 reaches the hub intact, base64-encoded."""
    raw = b"\xff\x00\xfe"
    [report] = edge.mqtt("$hw/events/upload/cam", raw).reports
    assert wire(report.body) == {
        "topic": "$hw/events/upload/cam",
        "payload": base64.b64encode(raw).decode(),
        "encoding": "base64",
    }


def test_replies_are_published_in_order(thermo: Edge) -> None:
    """Result, document, then delta: the order KubeEdge publishes them."""
    outcome = thermo.update({"temp": {"expected": {"value": "1"}}})
    assert [p.topic for p in outcome.publish] == [
        f"{D}/twin/update/result",
        f"{D}/twin/update/document",
        f"{D}/twin/update/delta",
    ]


def test_versions_never_reach_mappers(thermo: Edge) -> None:
    """No payload published to mappers carries expected_version or actual_version."""
    thermo.cloud(device(properties={"temp": "1"}))
    thermo.update({"temp": {"expected": {"value": "2"}, "actual": {"value": "3"}}, "x": {}})
    thermo.get()
    thermo.mqtt(f"{D}/state/update", {"event_id": "s", "state": "ok"})
    thermo.mqtt(f"$hw/events/node/{NODE}/membership/get", {"event_id": "m"})
    thermo.cloud(None)
    text = repr([wire(p.payload) for p in thermo.published])
    assert "version" not in text
