"""Every refusal: its code, its exact reason, the topic it goes to, and that nothing is stored."""

from __future__ import annotations

import json
from typing import Any

import pytest

from devicetwin import BadRequest, NotFound, Outcome, ValueTypeError
from devicetwin.errors import BAD_STATE
from tests.unit.devicetwin.support import (
    EMPTY_ID_RESULT,
    NODE,
    T0,
    D,
    Edge,
    device,
    published,
    wire,
)

UNMARSHAL = "Unmarshal update request body failed, please check the request"
NO_TWIN = "Update twin error, key:twin does not exist"
BAD_KEY = (
    "The key of twin must only include upper or lowercase letters, number, english, "
    "and special letter - _ . , : / @ # and the length of key should be less than 128 bytes"
)
BAD_VALUE = (
    "The value of twin must only include upper or lowercase letters, number, english, "
    "and special letter - _ . , : / @ # and the length of value should be less than 512 bytes"
)
NOT_EXISTED = "update rejected due to the device is not existed"


def refused(
    edge: Edge, outcome: Outcome, topic: str, code: int, reason: str, event_id: str
) -> None:
    """The outcome is exactly one error result on ``topic``, and nothing was stored."""
    assert outcome.updated == () and outcome.removed == () and outcome.reports == ()
    assert [p.topic for p in outcome.publish] == [topic]
    assert wire(outcome.publish[0].payload) == {
        "event_id": event_id,
        "timestamp": T0,
        "code": code,
        "reason": reason,
    }
    assert outcome.error is not None
    assert (outcome.error.code, outcome.error.reason, outcome.error.reply_topic) == (
        code,
        reason,
        topic,
    )


@pytest.fixture
def edge_with_twin(thermo: Edge) -> Edge:
    """default/thermo with an int twin ``temp`` = 20 (expected and actual)."""
    thermo.update(
        {
            "temp": {
                "expected": {"value": "20"},
                "actual": {"value": "20"},
                "metadata": {"type": "int"},
            }
        }
    )
    thermo.forget()
    return thermo


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{",
        b"not json",
        b"[]",
        b'"twin"',
        b"5",
        b"true",
        b'{"event_id": "e1", "twin": {}} trailing',
        b'{"event_id": NaN, "twin": {}}',
        b'{"timestamp": Infinity, "twin": {}}',
        b"\xef\xbb\xbf{}",  # a byte order mark is not JSON either
        b"[" * 100_000,
    ],
)
def test_not_json_is_unparseable(edge_with_twin: Edge, body: bytes) -> None:
    """A body that is not a JSON object gets 400 Unmarshal… with an empty event_id."""
    before = dict(edge_with_twin.devices)
    outcome = edge_with_twin.mqtt(f"{D}/twin/update", body)
    refused(edge_with_twin, outcome, EMPTY_ID_RESULT, 400, UNMARSHAL, "")
    assert isinstance(outcome.error, BadRequest)
    assert edge_with_twin.devices == before


@pytest.mark.parametrize(
    "body",
    [
        {"event_id": 1, "twin": {}},
        {"event_id": True, "twin": {}},
        {"event_id": ["e1"], "twin": {}},
        {"event_id": "e1", "timestamp": "0", "twin": {}},
        {"event_id": "e1", "timestamp": 1.5, "twin": {}},
        {"event_id": "e1", "timestamp": 1.0, "twin": {}},
        {"event_id": "e1", "timestamp": 2**63, "twin": {}},
        {"event_id": "e1", "timestamp": False, "twin": {}},
        {"event_id": "e1", "twin": []},
        {"event_id": "e1", "twin": "temp"},
        {"event_id": "e1", "twin": {"temp": 1}},
        {"event_id": "e1", "twin": {"temp": []}},
        {"event_id": "e1", "twin": {"temp": {"expected": "21"}}},
        {"event_id": "e1", "twin": {"temp": {"actual": {"value": 21}}}},
        {"event_id": "e1", "twin": {"temp": {"actual": {"value": True}}}},
        {"event_id": "e1", "twin": {"temp": {"actual": {"value": "1", "metadata": []}}}},
        {
            "event_id": "e1",
            "twin": {"temp": {"actual": {"value": "1", "metadata": {"timestamp": "1"}}}},
        },
        {"event_id": "e1", "twin": {"temp": {"optional": "false"}}},
        {"event_id": "e1", "twin": {"temp": {"optional": 0}}},
        {"event_id": "e1", "twin": {"temp": {"metadata": "int"}}},
        {"event_id": "e1", "twin": {"temp": {"metadata": {"type": 1}}}},
        {"event_id": "e1", "twin": {"temp": {"expected_version": {"cloud": "1"}}}},
        {"event_id": "e1", "twin": {"temp": {"actual_version": []}}},
        # a type error in a field that a later duplicate would fix still spoils the body
        {"event_id": "e1", "twin": {"ok": {}, "temp": {"optional": 1}}},
    ],
)
def test_wrong_json_types_are_unparseable(edge_with_twin: Edge, body: dict[str, Any]) -> None:
    """A known field of the wrong JSON type makes the whole body unparseable (as Go decodes it)."""
    before = dict(edge_with_twin.devices)
    outcome = edge_with_twin.mqtt(f"{D}/twin/update", body)
    refused(edge_with_twin, outcome, EMPTY_ID_RESULT, 400, UNMARSHAL, "")
    assert edge_with_twin.devices == before


def test_repeated_key_of_wrong_type_is_unparseable(edge_with_twin: Edge) -> None:
    """Go reports a type error even when a later repeat of the key is well typed."""
    body = b'{"event_id": 1, "event_id": "e1", "twin": {}}'
    outcome = edge_with_twin.mqtt(f"{D}/twin/update", body)
    refused(edge_with_twin, outcome, EMPTY_ID_RESULT, 400, UNMARSHAL, "")


@pytest.mark.parametrize(
    ("body", "event_id"),
    [
        ({"event_id": "e1", "timestamp": 0}, "e1"),
        ({"event_id": "e1", "twin": None}, "e1"),
        ({"EVENT_ID": "e2"}, "e2"),
        ({}, ""),
        (None, ""),  # a JSON null fills nothing in Go: no twin either
    ],
)
def test_missing_twin(edge_with_twin: Edge, body: Any, event_id: str) -> None:
    """A body without ``twin`` gets 400 key:twin does not exist on the empty-id topic."""
    outcome = edge_with_twin.mqtt(f"{D}/twin/update", json.dumps(body))
    refused(edge_with_twin, outcome, EMPTY_ID_RESULT, 400, NO_TWIN, event_id)


@pytest.mark.parametrize("key", ["", "a b", "a+b", 'a"b', "{k}", "é", "k" * 129, "a\nb"])
def test_bad_key(edge_with_twin: Edge, key: str) -> None:
    """A key outside the twin alphabet or longer than 128 gets 400 on the empty-id topic."""
    outcome = edge_with_twin.update({"temp": {"actual": {"value": "21"}}, key: {}})
    refused(edge_with_twin, outcome, EMPTY_ID_RESULT, 400, BAD_KEY, "e1")


def test_bad_key_of_a_delete(edge_with_twin: Edge) -> None:
    """Keys are checked for deletes too."""
    outcome = edge_with_twin.update({"a b": None})
    refused(edge_with_twin, outcome, EMPTY_ID_RESULT, 400, BAD_KEY, "e1")


def test_longest_key_and_value_are_accepted(thermo: Edge) -> None:
    """128-character keys and 512-character values are within the limits."""
    key, value = "k" * 128, "v" * 512
    outcome = thermo.update({key: {"actual": {"value": value}}})
    assert outcome.error is None and thermo.twin(key).actual.value == value


@pytest.mark.parametrize("value", ["a b", "21°", "{x}", "'q'", "a+b", "v" * 513, "tab\t"])
@pytest.mark.parametrize("field", ["expected", "actual"])
def test_bad_value(edge_with_twin: Edge, field: str, value: str) -> None:
    """A value outside the twin alphabet or longer than 512 gets 400 on the empty-id topic."""
    outcome = edge_with_twin.update({"temp": {field: {"value": value}}})
    refused(edge_with_twin, outcome, EMPTY_ID_RESULT, 400, BAD_VALUE, "e1")


def test_unknown_device_on_update(edge: Edge) -> None:
    """An update of a device this node does not have gets 404 on that device's result topic."""
    outcome = edge.update({"temp": {"actual": {"value": "1"}}}, event_id="e9")
    refused(edge, outcome, f"{D}/twin/update/result", 404, NOT_EXISTED, "e9")
    assert isinstance(outcome.error, NotFound)


def test_body_is_validated_before_the_device_is_looked_up(edge: Edge) -> None:
    """An invalid body for an unknown device is refused as invalid, on the empty-id topic."""
    outcome = edge.update({"a b": {}})
    refused(edge, outcome, EMPTY_ID_RESULT, 400, BAD_KEY, "e1")


@pytest.mark.parametrize(
    ("kind", "value", "reason"),
    [
        ("int", "1.5", "the value is not int or integer"),
        ("int", "", "the value is not int or integer"),
        ("int", "abc", "the value is not int or integer"),
        ("integer", "9223372036854775808", "the value is not int or integer"),
        ("float", "abc", "the value is not float"),
        ("float", "1e400", "the value is not float"),
        ("float", "", "the value is not float"),
        ("boolean", "True", "the bool value must be true or false"),
        ("boolean", "1", "the bool value must be true or false"),
        ("boolean", "", "the bool value must be true or false"),
        ("double", "1.5", "the value type is not allowed"),
        ("INT", "1", "the value type is not allowed"),
        ("bytes", "x", "the value type is not allowed"),
        ("deleted", "x", "the value type is not allowed"),
    ],
)
def test_type_mismatch_on_new_twin(thermo: Edge, kind: str, value: str, reason: str) -> None:
    """A value that does not fit the new twin's type gets 400 on the device's result topic."""
    outcome = thermo.update({"new": {"actual": {"value": value}, "metadata": {"type": kind}}})
    refused(thermo, outcome, f"{D}/twin/update/result", 400, reason, "e1")
    assert isinstance(outcome.error, ValueTypeError)
    assert "new" not in thermo.devices["default/thermo"].twins


def test_unknown_type_name_is_refused_even_without_a_value(edge_with_twin: Edge) -> None:
    """Another type name is refused, for a new twin and for an existing one."""
    for key in ("new", "temp"):
        outcome = edge_with_twin.update({key: {"metadata": {"type": "struct"}}})
        refused(
            edge_with_twin,
            outcome,
            f"{D}/twin/update/result",
            400,
            "the value type is not allowed",
            "e1",
        )


def test_type_mismatch_on_existing_twin(edge_with_twin: Edge) -> None:
    """An existing int twin refuses a non-int expected value; its stored state is unchanged."""
    before = edge_with_twin.twin("temp")
    outcome = edge_with_twin.update({"temp": {"expected": {"value": "warm"}}})
    refused(
        edge_with_twin,
        outcome,
        f"{D}/twin/update/result",
        400,
        "the value is not int or integer",
        "e1",
    )
    assert edge_with_twin.twin("temp") == before


def test_all_or_nothing(edge_with_twin: Edge) -> None:
    """One bad twin among good ones changes nothing: no twin, version or delete is stored."""
    edge_with_twin.update({"opt": {"actual": {"value": "1"}}})
    edge_with_twin.forget()
    before = edge_with_twin.devices["default/thermo"]
    outcome = edge_with_twin.update(
        {
            "opt": None,
            "new": {"actual": {"value": "ok"}},
            "temp": {"actual": {"value": "21"}},
            "bad": {"actual": {"value": "x"}, "metadata": {"type": "int"}},
            "later": {"expected": {"value": "1"}},
        }
    )
    refused(
        edge_with_twin,
        outcome,
        f"{D}/twin/update/result",
        400,
        "the value is not int or integer",
        "e1",
    )
    assert edge_with_twin.devices["default/thermo"] == before
    assert edge_with_twin.outbox == []


def test_get_of_unknown_device(edge: Edge) -> None:
    """twin/get of a device this node does not have gets 404 Device <id> not found…."""
    outcome = edge.mqtt("$hw/events/device/default/ghost/twin/get", {"event_id": "g1"})
    refused(
        edge,
        outcome,
        "$hw/events/device/default/ghost/twin/get/result",
        404,
        "Device default/ghost not found while getting twin",
        "g1",
    )


@pytest.mark.parametrize("body", [b"{", b"[]", b'{"event_id": 5}', b'{"timestamp": "1"}'])
def test_unparseable_get(thermo: Edge, body: bytes) -> None:
    """An unparseable twin/get gets 400 on the device's get result topic."""
    outcome = thermo.mqtt(f"{D}/twin/get", body)
    reason = "Unmarshal get request body failed, please check the request"
    refused(thermo, outcome, f"{D}/twin/get/result", 400, reason, "")


def test_get_tolerates_empty_and_null_fields(thermo: Edge) -> None:
    """A get body of ``{}`` or ``null`` fields is answered (event_id "")."""
    for body in (b"{}", b'{"event_id": null, "timestamp": null}', b"null"):
        outcome = thermo.mqtt(f"{D}/twin/get", body)
        assert outcome.error is None and wire(outcome.publish[0].payload)["event_id"] == ""


@pytest.mark.parametrize("body", [b"{", b'{"event_id": 5}', b'{"timestamp": 1.5}'])
def test_unparseable_membership_get(thermo: Edge, body: bytes) -> None:
    """An unparseable membership/get gets 400 on the node's result topic."""
    outcome = thermo.mqtt(f"$hw/events/node/{NODE}/membership/get", body)
    reason = "Unmarshal membership get request body failed, please check the request"
    refused(thermo, outcome, f"$hw/events/node/{NODE}/membership/get/result", 400, reason, "")


@pytest.mark.parametrize(
    ("body", "code", "reason"),
    [
        (b"{", 400, "Unmarshal state update request body failed, please check the request"),
        (
            b'{"state": 1}',
            400,
            "Unmarshal state update request body failed, please check the request",
        ),
        (
            b'{"state": "online", "attributes": 1}',
            400,
            "Unmarshal state update request body failed, please check the request",
        ),
    ],
)
def test_refused_state_updates_get_no_reply(
    thermo: Edge, body: bytes, code: int, reason: str
) -> None:
    """A state update that does not parse changes nothing and answers nothing (as KubeEdge)."""
    before = thermo.devices["default/thermo"]
    outcome = thermo.mqtt(f"{D}/state/update", body)
    assert (outcome.publish, outcome.updated, outcome.reports) == ((), (), ())
    assert outcome.error is not None and (outcome.error.code, outcome.error.reason) == (
        code,
        reason,
    )
    assert outcome.error.reply_topic is None
    assert thermo.devices["default/thermo"] == before


@pytest.mark.parametrize(
    "body",
    [
        b'{"event_id": "s9", "state": "sleeping"}',
        b'{"event_id": "s9", "state": ""}',
        b'{"event_id": "s9"}',
        '{"event_id": "s9", "state": "onl\u0130ne"}'.encode(),
        '{"event_id": "s9", "state": "un\u212anown"}'.encode(),
        b'{"event_id": "s9", "state": "online "}',
    ],
)
def test_a_state_edgecore_does_not_know_gets_an_error_result(thermo: Edge, body: bytes) -> None:
    """Not silence: a 400 on the state result topic, with the request's event id, naming the
    states there are; nothing changes."""
    before = thermo.devices["default/thermo"]
    outcome = thermo.mqtt(f"{D}/state/update", body)
    assert (outcome.updated, outcome.reports) == ((), ())
    assert published(outcome) == {
        f"{D}/state/update/result": {
            "event_id": "s9",
            "timestamp": T0,
            "code": 400,
            "reason": BAD_STATE,
        }
    }
    assert outcome.error is not None and outcome.error.reason == BAD_STATE
    assert thermo.devices["default/thermo"] == before


def test_state_update_of_unknown_device(edge: Edge) -> None:
    """A state update of a device this node does not have changes nothing and answers nothing."""
    outcome = edge.mqtt(f"{D}/state/update", {"event_id": "s1", "state": "online"})
    assert outcome.publish == () and outcome.updated == ()
    assert isinstance(outcome.error, NotFound)
    assert outcome.error.reason == "Device default/thermo not found while updating state"


def test_error_after_an_error_leaves_the_device_usable(edge_with_twin: Edge) -> None:
    """After a refused message the device accepts the next good one."""
    edge_with_twin.mqtt(f"{D}/twin/update", b"{")
    outcome = edge_with_twin.update({"temp": {"actual": {"value": "22"}}})
    assert outcome.error is None and edge_with_twin.twin("temp").actual.value == "22"


def test_device_with_empty_namespace_level_is_not_found(thermo: Edge) -> None:
    """A topic with an empty namespace names another device (``/thermo``), which is not ours."""
    outcome = thermo.mqtt("$hw/events/device//thermo/twin/update", {"event_id": "e", "twin": {}})
    refused(thermo, outcome, "$hw/events/device//thermo/twin/update/result", 404, NOT_EXISTED, "e")


def test_refusals_are_values(thermo: Edge) -> None:
    """TwinErrors compare by their fields and print their code and reason."""
    thermo.cloud(device())
    first = thermo.mqtt(f"{D}/twin/update", b"{").error
    second = thermo.mqtt(f"{D}/twin/update", b"[").error
    assert first == second and hash(first) == hash(second)
    assert first != NotFound(UNMARSHAL, "", EMPTY_ID_RESULT)
    assert first != "400"
    assert str(first) == f"400 {UNMARSHAL}"
    assert repr(first) == (
        f"BadRequest(code=400, reason={UNMARSHAL!r}, event_id='', reply_topic={EMPTY_ID_RESULT!r})"
    )
