"""The mapper-side twin rules of KUBEEDGE-MQTT.md: versions, optional, delete, revive, delta."""

from __future__ import annotations

import pytest

from devicetwin import Twin, TwinValue, Version
from tests.unit.devicetwin.support import T0, D, Edge, published, wire


def test_new_key_starts_at_edge_version_one_and_optional(thermo: Edge) -> None:
    """A new key's sent fields start at {cloud:0, edge:1}; the twin is optional by default."""
    thermo.update({"temp": {"actual": {"value": "23"}, "metadata": {"type": "int"}}})
    assert thermo.twin("temp") == Twin(
        type="int",
        optional=True,
        actual=TwinValue("23", T0),
        actual_version=Version(0, 1),
    )


def test_identical_values_still_count_as_changes(thermo: Edge) -> None:
    """Re-sending the same value bumps its edge version and produces a result and a document."""
    thermo.update({"temp": {"expected": {"value": "1"}, "actual": {"value": "1"}}})
    thermo.now_ms = T0 + 1
    outcome = thermo.update({"temp": {"expected": {"value": "1"}, "actual": {"value": "1"}}})
    twin = thermo.twin("temp")
    assert (twin.expected_version, twin.actual_version) == (Version(0, 2), Version(0, 2))
    assert twin.expected == TwinValue("1", T0 + 1)
    assert f"{D}/twin/update/document" in published(outcome)
    assert published(outcome)[f"{D}/twin/update/result"]["twin"]["temp"]["actual"] == {
        "value": "1",
        "metadata": {"timestamp": T0 + 1},
    }


def test_only_the_sent_field_is_bumped_and_shown(thermo: Edge) -> None:
    """Sending only actual bumps actual's version; the result shows actual, not expected."""
    thermo.update({"temp": {"expected": {"value": "5"}}})
    result = published(thermo.update({"temp": {"actual": {"value": "4"}}}))
    twin = thermo.twin("temp")
    assert (twin.expected_version, twin.actual_version) == (Version(0, 1), Version(0, 1))
    assert result[f"{D}/twin/update/result"]["twin"] == {
        "temp": {
            "actual": {"value": "4", "metadata": {"timestamp": T0}},
            "optional": True,
            "metadata": {"type": "string"},
        }
    }


def test_edge_timestamp_replaces_the_mappers(thermo: Edge) -> None:
    """A timestamp sent by the mapper is ignored: values carry the edge clock's time."""
    thermo.update({"temp": {"actual": {"value": "1", "metadata": {"timestamp": 42}}}})
    assert thermo.twin("temp").actual == TwinValue("1", T0)


def test_mapper_versions_are_ignored(thermo: Edge) -> None:
    """Versions sent by a mapper are parsed but never trusted."""
    thermo.update(
        {
            "temp": {
                "actual": {"value": "1"},
                "actual_version": {"cloud": 9, "edge": 9},
                "expected_version": {"cloud": 9, "edge": 9},
            }
        }
    )
    twin = thermo.twin("temp")
    assert (twin.expected_version, twin.actual_version) == (Version(0, 0), Version(0, 1))


def test_optional_goes_from_true_to_false_only(thermo: Edge) -> None:
    """optional true→false is a change; false→true is ignored."""
    thermo.update({"temp": {}})
    outcome = thermo.update({"temp": {"optional": False}})
    assert thermo.twin("temp").optional is False
    assert published(outcome)[f"{D}/twin/update/result"]["twin"] == {
        "temp": {"optional": False, "metadata": {"type": "string"}}
    }
    outcome = thermo.update({"temp": {"optional": True}})
    assert thermo.twin("temp").optional is False
    assert published(outcome)[f"{D}/twin/update/result"]["twin"] == {}
    assert outcome.updated == ()


def test_new_twin_may_start_non_optional(thermo: Edge) -> None:
    """A new twin created with optional false is not optional."""
    thermo.update({"temp": {"optional": False, "actual": {"value": "1"}}})
    assert thermo.twin("temp").optional is False


def test_type_is_fixed_when_the_twin_is_created(thermo: Edge) -> None:
    """A later metadata.type does not change a twin's type; values are checked against the first."""
    thermo.update({"temp": {"actual": {"value": "1"}, "metadata": {"type": "integer"}}})
    thermo.update({"temp": {"actual": {"value": "2"}, "metadata": {"type": "string"}}})
    assert thermo.twin("temp").type == "int"
    outcome = thermo.update({"temp": {"actual": {"value": "x"}, "metadata": {"type": "string"}}})
    assert outcome.error is not None and outcome.error.reason == "the value is not int or integer"


def test_type_defaults_to_string(thermo: Edge) -> None:
    """Without metadata, or with an empty type, a new twin is a string."""
    thermo.update(
        {"a": {"actual": {"value": "x"}}, "b": {"metadata": {}}, "c": {"metadata": {"type": ""}}}
    )
    assert {thermo.twin(k).type for k in "abc"} == {"string"}


def test_delete_of_optional_twin_is_soft(thermo: Edge) -> None:
    """Deleting an optional twin keeps its type and counters, drops its values, hides it."""
    thermo.update(
        {
            "temp": {
                "expected": {"value": "1"},
                "actual": {"value": "2"},
                "metadata": {"type": "int"},
            }
        }
    )
    outcome = thermo.update({"temp": None})
    twin = thermo.twin("temp")
    assert twin == Twin(
        type="int",
        deleted=True,
        expected_version=Version(0, 2),
        actual_version=Version(0, 2),
    )
    assert thermo.get()["twin"] == {}
    assert len(outcome.reports) == 1


def test_delete_bumps_only_fields_that_held_a_value(thermo: Edge) -> None:
    """A delete counts as an edge change of each field it clears, and of nothing else."""
    thermo.update({"temp": {"actual": {"value": "2"}}})
    thermo.update({"temp": None})
    twin = thermo.twin("temp")
    assert (twin.expected_version, twin.actual_version) == (Version(0, 0), Version(0, 2))


def test_deleted_twin_is_revived_with_its_counters(thermo: Edge) -> None:
    """A later update revives a deleted twin: counters go on, last is null in the document."""
    thermo.update({"temp": {"actual": {"value": "2"}, "metadata": {"type": "int"}}})
    thermo.update({"temp": None})
    out = published(thermo.update({"temp": {"expected": {"value": "3"}}}))
    twin = thermo.twin("temp")
    assert twin.deleted is False and twin.type == "int"
    assert (twin.expected_version, twin.actual_version) == (Version(0, 1), Version(0, 2))
    shown = {
        "expected": {"value": "3", "metadata": {"timestamp": T0}},
        "optional": True,
        "metadata": {"type": "int"},
    }
    assert out[f"{D}/twin/update/result"]["twin"] == {"temp": shown}
    assert out[f"{D}/twin/update/document"]["twin"] == {"temp": {"last": None, "current": shown}}


def test_an_empty_update_revives_a_deleted_twin(thermo: Edge) -> None:
    """Any update of a deleted twin, even without values, brings it back."""
    thermo.update({"temp": {"actual": {"value": "2"}}})
    thermo.update({"temp": None})
    thermo.update({"temp": {}})
    assert thermo.get()["twin"] == {"temp": {"optional": True, "metadata": {"type": "string"}}}


def test_delete_of_non_optional_twin_changes_nothing(thermo: Edge) -> None:
    """A non-optional twin is not deleted: the result is {} and nothing is stored."""
    thermo.update({"temp": {"optional": False, "actual": {"value": "1"}}})
    before = thermo.devices["default/thermo"]
    outcome = thermo.update({"temp": None})
    assert published(outcome) == {
        f"{D}/twin/update/result": {"event_id": "e1", "timestamp": T0, "twin": {}}
    }
    assert thermo.devices["default/thermo"] == before


def test_deleting_twice_or_an_unknown_key_changes_nothing(thermo: Edge) -> None:
    """Deleting a deleted twin, or a key that never existed, is not a change."""
    thermo.update({"temp": {"actual": {"value": "1"}}})
    thermo.update({"temp": None})
    before = thermo.devices["default/thermo"]
    outcome = thermo.update({"temp": None, "never": None})
    assert outcome.updated == () and published(outcome)[f"{D}/twin/update/result"]["twin"] == {}
    assert thermo.devices["default/thermo"] == before


def test_unchanged_twin_in_a_request_is_left_out_of_the_result(thermo: Edge) -> None:
    """Only the twins a request changed appear in its result and document."""
    thermo.update({"a": {}, "b": {}})
    out = published(thermo.update({"a": {}, "b": {"actual": {"value": "1"}}}))
    assert set(out[f"{D}/twin/update/result"]["twin"]) == {"b"}
    assert set(out[f"{D}/twin/update/document"]["twin"]) == {"b"}


def test_delta_is_recomputed_for_the_whole_device(thermo: Edge) -> None:
    """A change to one twin publishes the delta of every twin of the device."""
    thermo.update({"a": {"expected": {"value": "1"}}})
    out = published(thermo.update({"b": {"actual": {"value": "2"}}}))
    assert out[f"{D}/twin/update/delta"]["delta"] == {"a": "1"}


def test_no_delta_when_every_expected_is_met(thermo: Edge) -> None:
    """When actual equals expected everywhere no delta is published."""
    thermo.update({"a": {"expected": {"value": "1"}}})
    out = published(thermo.update({"a": {"actual": {"value": "1"}}}))
    assert f"{D}/twin/update/delta" not in out


def test_twin_report_covers_every_twin(thermo: Edge) -> None:
    """After a change, the hub gets one keyed row with every twin of the device."""
    thermo.update({"a": {"expected": {"value": "1"}, "metadata": {"type": "int"}}, "b": {}})
    thermo.update({"b": None})
    thermo.update({"c": {"actual": {"value": "x"}}})
    [row] = thermo.outbox
    assert (row.topic, row.key) == ("twin/reported", "twin/default/thermo")
    assert wire(row.body) == {
        "device": "default/thermo",
        "twins": {
            "a": {
                "reported": None,
                "observedDesired": {
                    "value": "1",
                    "timestamp": T0,
                    "version": {"cloud": 0, "edge": 1},
                },
                "deleted": False,
                "type": "int",
            },
            "b": {"reported": None, "observedDesired": None, "deleted": True, "type": "string"},
            "c": {
                "reported": {"value": "x", "timestamp": T0},
                "observedDesired": None,
                "deleted": False,
                "type": "string",
            },
        },
    }


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        ("ONLINE", "online"),  # KubeEdge 1.6 (any case)
        ("OK", "online"),  # its mappers, and 1.18's ok
        ("ok", "online"),
        ("offline", "offline"),
        ("DISCONNECTED", "offline"),  # its mappers, and 1.15-1.18's disconnected
        ("Disconnected", "offline"),
        ("unhealthy", "unhealthy"),  # 1.18
        ("Unknown", "unknown"),
    ],
)
def test_state_update_stores_the_hubs_state(thermo: Edge, sent: str, stored: str) -> None:
    """Every state KubeEdge's mappers have sent matches case-insensitively and is stored and
    reported as the hub's state; the result echoes the mapper's spelling, as KubeEdge's does."""
    outcome = thermo.mqtt(f"{D}/state/update", {"event_id": "s1", "state": sent})
    device = thermo.devices["default/thermo"]
    online = "2024-05-01T12:00:00Z" if stored == "online" else None
    assert (device.state, device.last_online) == (stored, online)
    [row] = outcome.reports
    assert (row.topic, row.key) == ("device/state", "state/default/thermo")
    assert row.body == {"device": "default/thermo", "state": stored, "lastOnlineTime": online}
    result = published(outcome)[f"{D}/state/update/result"]
    assert result["device"]["state"] == sent


def test_last_online_moves_only_for_online_and_ok(thermo: Edge) -> None:
    """ok sets lastOnlineTime; offline, unknown and unhealthy keep the last one and omit it."""
    thermo.mqtt(f"{D}/state/update", {"event_id": "s1", "state": "ok"})
    thermo.now_ms = T0 + 60_000
    for state in ("offline", "Unknown", "unhealthy"):
        outcome = thermo.mqtt(f"{D}/state/update", {"event_id": "s", "state": state})
        result = published(outcome)[f"{D}/state/update/result"]
        assert result["device"] == {"name": "thermo", "state": state}  # as the mapper spelled it
        assert thermo.devices["default/thermo"].last_online == "2024-05-01T12:00:00Z"
        assert outcome.reports[0].body["lastOnlineTime"] == "2024-05-01T12:00:00Z"


def test_state_result_has_new_event_id(thermo: Edge) -> None:
    """The state result carries a fresh event id, not the request's."""
    outcome = thermo.mqtt(f"{D}/state/update", {"event_id": "s1", "state": "online"})
    assert published(outcome)[f"{D}/state/update/result"]["event_id"] == "uuid-1"


def test_get_echoes_event_id_and_is_read_only(thermo: Edge) -> None:
    """twin/get echoes the request's event id and changes nothing."""
    thermo.update({"temp": {"actual": {"value": "1"}}})
    outcome = thermo.mqtt(f"{D}/twin/get", {"event_id": "g7", "timestamp": 3})
    assert wire(outcome.publish[0].payload)["event_id"] == "g7"
    assert (outcome.updated, outcome.reports, outcome.error) == ((), (), None)


def test_twin_keys_are_case_sensitive(thermo: Edge) -> None:
    """Field names fold case, twin keys do not: Temp and temp are two twins."""
    thermo.update({"temp": {"actual": {"value": "1"}}, "Temp": {"actual": {"value": "2"}}})
    assert set(thermo.devices["default/thermo"].twins) == {"temp", "Temp"}
