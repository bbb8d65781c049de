"""The sync protocol codecs: every message round-trips, every bad frame is refused with its code."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeward.errors import ProtocolError
from edgeward.protocol import (
    BAD_FRAME,
    BAD_MESSAGE,
    MAX_FRAME_BYTES,
    MAX_SEQ,
    MESSAGE_TYPES,
    PROTOCOL_VERSION,
    UNKNOWN_TYPE,
    Ack,
    Certificate,
    Change,
    Changes,
    Error,
    Hello,
    Message,
    Rejected,
    Renew,
    Report,
    ReportAck,
    ReportItem,
    Snapshot,
    Welcome,
    decode,
)

DEVICE = {
    "apiVersion": "devices.kubeedge.io/v1beta1",
    "kind": "Device",
    "metadata": {"name": "thermo-1", "namespace": "default", "resourceVersion": "7"},
    "spec": {"nodeName": "edge-1", "properties": [{"name": "temp", "desired": {"value": "21"}}]},
}

PUT = Change("put", "Device", "default", "thermo-1", 7, DEVICE)
DELETE = Change("delete", "Device", "default", "thermo-0", 5)

EXAMPLES: list[Message] = [
    Hello(node="edge-1", revision=0),
    Hello(
        node="edge-1",
        revision=42,
        protocol=PROTOCOL_VERSION,
        agent="edgecore/0.1.0",
        node_info={"arch": "arm64", "cpus": 4, "labels": {"site": "plant-3"}},
    ),
    Welcome(mode="changes", head=42, report_seq=0),
    Welcome(mode="snapshot", head=9000, report_seq=17),
    Changes(revision=42, items=()),
    Changes(revision=42, items=(DELETE, PUT)),
    Snapshot(revision=42, items=(), final=True),
    Snapshot(revision=42, items=(PUT,), final=False),
    Ack(revision=0),
    Ack(revision=42),
    Report(items=(ReportItem(1, "node/status", "edge-1", {"ready": True}),)),
    Report(
        items=(
            ReportItem(3, "twin/reported", "default/thermo-1", {"temp": "21.5"}),
            ReportItem(4, "device/event", None, {"message": "door opened"}),
            ReportItem(9, "node/status", "edge-1", {}),
        )
    ),
    ReportAck(seq=0),
    ReportAck(seq=9),
    ReportAck(seq=12, rejected=(Rejected(seq=11, reason="device default/x is not bound here"),)),
    Error(code=BAD_MESSAGE, reason="hello: revision must be a non-negative integer"),
    Renew(csr="-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n"),
    Certificate(certificate="-----BEGIN CERTIFICATE-----\nMIIC\n-----END CERTIFICATE-----\n"),
]


def frame(**fields: Any) -> str:
    """A text frame holding exactly ``fields``."""
    return json.dumps(fields)


def refused(text: str | bytes) -> ProtocolError:
    """The ProtocolError decode raises for ``text`` (fails the test when it accepts it)."""
    with pytest.raises(ProtocolError) as info:
        decode(text)
    return info.value


# -- round trips ---------------------------------------------------------------


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: type(m).__name__)
def test_every_message_round_trips(message: Message) -> None:
    """Decoding an encoded message gives back an equal message of the same type."""
    back = decode(message.encode())
    assert type(back) is type(message)
    assert back == message


def test_every_message_type_has_an_example() -> None:
    """The round-trip examples cover every registered message type."""
    assert {type(m) for m in EXAMPLES} == set(MESSAGE_TYPES.values())


def test_encoded_frame_is_compact_json_with_its_type() -> None:
    """A frame is one compact JSON object whose ``type`` names the message."""
    text = Ack(revision=3).encode()
    assert text == '{"type":"ack","revision":3}'
    for message in EXAMPLES:
        assert json.loads(message.encode())["type"] == message.type


def test_change_wire_form_uses_rv_and_omits_object_of_a_delete() -> None:
    """A change carries its revision as ``rv``; a delete carries no object."""
    assert DELETE.to_wire() == {
        "op": "delete",
        "kind": "Device",
        "namespace": "default",
        "name": "thermo-0",
        "rv": 5,
    }
    assert PUT.to_wire()["object"] == DEVICE
    assert PUT.key == ("Device", "default", "thermo-1")


def test_delete_with_an_object_drops_the_object() -> None:
    """A delete that carries an object anyway is decoded without it."""
    wire = {**DELETE.to_wire(), "object": {"stale": True}}
    decoded = decode(frame(type="changes", revision=5, items=[wire]))
    assert isinstance(decoded, Changes)
    assert decoded.items == (DELETE,)


def test_hello_optional_fields_default() -> None:
    """A minimal hello gets the default agent and an empty node_info."""
    decoded = decode(frame(type="hello", node="edge-1", revision=3, protocol=1))
    assert decoded == Hello(node="edge-1", revision=3, protocol=1, agent="", node_info={})


def test_huge_but_valid_frame_decodes() -> None:
    """A frame of several megabytes (under MAX_FRAME_BYTES) decodes like a small one."""
    body = {"blob": "x" * 1024}
    items = tuple(Change("put", "Device", "default", f"d-{i}", i + 1, body) for i in range(2500))
    message = Changes(revision=2500, items=items)
    text = message.encode()
    assert 2 * 1024 * 1024 < len(text) < MAX_FRAME_BYTES
    assert decode(text) == message


def test_error_of_copies_code_and_reason() -> None:
    """Error.of turns a ProtocolError into the error frame that reports it."""
    exc = ProtocolError(UNKNOWN_TYPE, "unknown message type 'x'")
    assert Error.of(exc) == Error(code=UNKNOWN_TYPE, reason="unknown message type 'x'")


# -- bad frames ----------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        b'{"type":"ack","revision":1}',
        b"",
    ],
    ids=["json-bytes", "empty-bytes"],
)
def test_binary_frames_are_refused(text: bytes) -> None:
    """Binary frames are refused as bad frames, even when they hold valid JSON."""
    assert refused(text).code == BAD_FRAME


@pytest.mark.parametrize(
    "text",
    ["", "   ", "{", '{"type": "ack"', "ack", "{'type': 'ack'}", '{"type":"ack",}', "\x00"],
)
def test_non_json_is_a_bad_frame(text: str) -> None:
    """Text that is not JSON is refused as a bad frame."""
    assert refused(text).code == BAD_FRAME


@pytest.mark.parametrize("text", ["[]", "[1, 2]", '"ack"', "42", "true", "null", "1.5"])
def test_json_that_is_not_an_object_is_a_bad_frame(text: str) -> None:
    """A JSON value that is not an object is refused as a bad frame."""
    assert refused(text).code == BAD_FRAME


@pytest.mark.parametrize(
    "text",
    [
        "[" * 100_000,
        "{" * 100_000,
        '{"a":' * 100_000,
        '{"type":"hello","node":"e","revision":0,"node_info":'
        + '{"a":' * 100_000
        + "1"
        + "}" * 100_001,
    ],
    ids=["lists", "open-braces", "objects", "inside-hello"],
)
def test_deeply_nested_json_is_a_bad_frame(text: str) -> None:
    """JSON nested past the parser's recursion limit is refused, not a RecursionError."""
    assert refused(text).code == BAD_FRAME


def test_integer_too_long_to_convert_is_a_bad_frame() -> None:
    """An integer literal beyond Python's int conversion limit is refused as a bad frame."""
    assert refused('{"type":"ack","revision":' + "1" * 5000 + "}").code == BAD_FRAME


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_standard_json_constants_are_a_bad_frame(constant: str) -> None:
    """NaN and Infinity are not JSON (RFC 8259) and are refused as bad frames."""
    text = (
        '{"type":"hello","node":"e","revision":0,"protocol":1,"node_info":{"load":'
        + constant
        + "}}"
    )
    assert refused(text).code == BAD_FRAME


@pytest.mark.parametrize(
    "fields",
    [{}, {"type": None}, {"type": 1}, {"type": ["ack"]}, {"type": "ACK"}, {"type": "bye"}],
    ids=["missing", "null", "number", "list", "upper-case", "unknown"],
)
def test_missing_or_unknown_type_is_refused(fields: dict[str, Any]) -> None:
    """A frame without a known string ``type`` is refused as an unknown type."""
    assert refused(frame(**fields, revision=1)).code == UNKNOWN_TYPE


def test_unknown_type_reason_does_not_echo_long_types() -> None:
    """The reason quotes a short unknown type but never a long one (it is peer input)."""
    assert "'bye'" in refused(frame(type="bye")).reason
    long = "x" * 500
    assert long not in refused(frame(type=long)).reason


HELLO = {"type": "hello", "node": "edge-1", "revision": 3, "protocol": 1}
WELCOME = {"type": "welcome", "mode": "changes", "head": 3, "report_seq": 0}
CHANGES = {"type": "changes", "revision": 7, "items": [PUT.to_wire(), DELETE.to_wire()]}
SNAPSHOT = {"type": "snapshot", "revision": 7, "items": [PUT.to_wire()], "final": True}
REPORT = {
    "type": "report",
    "items": [
        {"seq": 1, "topic": "node/status", "key": "edge-1", "body": {}},
        {"seq": 2, "topic": "device/event", "key": None, "body": {"m": 1}},
    ],
}


def with_item(message: dict[str, Any], index: int, **fields: Any) -> dict[str, Any]:
    """``message`` with item ``index`` changed by ``fields`` (a field set to ... is removed)."""
    items = [dict(i) for i in message["items"]]
    items[index].update(fields)
    items[index] = {k: v for k, v in items[index].items() if v is not ...}
    return {**message, "items": items}


def without(message: dict[str, Any], name: str) -> dict[str, Any]:
    return {k: v for k, v in message.items() if k != name}


BAD_MESSAGES = {
    # hello
    "hello-no-node": without(HELLO, "node"),
    "hello-empty-node": {**HELLO, "node": ""},
    "hello-node-too-long": {**HELLO, "node": "n" * 254},
    "hello-node-number": {**HELLO, "node": 7},
    "hello-no-revision": without(HELLO, "revision"),
    "hello-bool-revision": {**HELLO, "revision": True},
    "hello-negative-revision": {**HELLO, "revision": -1},
    "hello-float-revision": {**HELLO, "revision": 3.0},
    "hello-string-revision": {**HELLO, "revision": "3"},
    "hello-no-protocol": without(HELLO, "protocol"),
    "hello-bool-protocol": {**HELLO, "protocol": False},
    "hello-node-info-list": {**HELLO, "node_info": []},
    "hello-node-info-null": {**HELLO, "node_info": None},
    "hello-agent-number": {**HELLO, "agent": 1},
    # welcome
    "welcome-bad-mode": {**WELCOME, "mode": "full"},
    "welcome-no-mode": without(WELCOME, "mode"),
    "welcome-list-mode": {**WELCOME, "mode": ["changes"]},
    "welcome-negative-head": {**WELCOME, "head": -5},
    "welcome-bool-report-seq": {**WELCOME, "report_seq": True},
    "welcome-no-report-seq": without(WELCOME, "report_seq"),
    # changes
    "changes-no-items": without(CHANGES, "items"),
    "changes-items-object": {**CHANGES, "items": {"0": PUT.to_wire()}},
    "changes-items-string": {**CHANGES, "items": "put"},
    "changes-negative-revision": {**CHANGES, "revision": -1},
    "changes-bool-revision": {**CHANGES, "revision": True},
    "changes-item-not-object": {**CHANGES, "items": ["put"]},
    "changes-item-bad-op": with_item(CHANGES, 0, op="patch"),
    "changes-item-no-op": with_item(CHANGES, 0, op=...),
    "changes-put-without-object": with_item(CHANGES, 0, object=...),
    "changes-put-null-object": with_item(CHANGES, 0, object=None),
    "changes-put-list-object": with_item(CHANGES, 0, object=[1]),
    "changes-item-kind-number": with_item(CHANGES, 1, kind=1),
    "changes-item-no-namespace": with_item(CHANGES, 1, namespace=...),
    "changes-item-name-null": with_item(CHANGES, 1, name=None),
    "changes-item-negative-rv": with_item(CHANGES, 1, rv=-1),
    "changes-item-bool-rv": with_item(CHANGES, 1, rv=True),
    "changes-item-string-rv": with_item(CHANGES, 1, rv="5"),
    "changes-item-no-rv": with_item(CHANGES, 1, rv=...),
    # snapshot
    "snapshot-with-delete": {**SNAPSHOT, "items": [DELETE.to_wire()]},
    "snapshot-no-final": without(SNAPSHOT, "final"),
    "snapshot-int-final": {**SNAPSHOT, "final": 1},
    "snapshot-string-final": {**SNAPSHOT, "final": "true"},
    "snapshot-negative-revision": {**SNAPSHOT, "revision": -2},
    # ack
    "ack-no-revision": {"type": "ack"},
    "ack-negative-revision": {"type": "ack", "revision": -1},
    "ack-bool-revision": {"type": "ack", "revision": False},
    "ack-float-revision": {"type": "ack", "revision": 1.5},
    "ack-null-revision": {"type": "ack", "revision": None},
    # report
    "report-empty": {"type": "report", "items": []},
    "report-no-items": {"type": "report"},
    "report-items-object": {"type": "report", "items": {"seq": 1}},
    "report-item-not-object": {"type": "report", "items": [1]},
    "report-string-seq": with_item(REPORT, 0, seq="1"),
    "report-bool-seq": with_item(REPORT, 0, seq=True),
    "report-zero-seq": with_item(REPORT, 0, seq=0),
    "report-negative-seq": with_item(REPORT, 0, seq=-3),
    "report-no-seq": with_item(REPORT, 0, seq=...),
    "report-seq-repeats": with_item(REPORT, 1, seq=1),
    "report-seq-decreases": {
        "type": "report",
        "items": [
            {"seq": 5, "topic": "t", "key": None, "body": {}},
            {"seq": 6, "topic": "t", "key": None, "body": {}},
            {"seq": 4, "topic": "t", "key": None, "body": {}},
        ],
    },
    "report-empty-topic": with_item(REPORT, 0, topic=""),
    "report-no-topic": with_item(REPORT, 0, topic=...),
    "report-key-number": with_item(REPORT, 0, key=7),
    "report-body-list": with_item(REPORT, 0, body=[]),
    "report-no-body": with_item(REPORT, 0, body=...),
    # report_ack
    "report-ack-no-seq": {"type": "report_ack"},
    "report-ack-negative-seq": {"type": "report_ack", "seq": -1},
    "report-ack-string-seq": {"type": "report_ack", "seq": "9"},
    "report-ack-bool-seq": {"type": "report_ack", "seq": True},
    "report-ack-rejected-object": {"type": "report_ack", "seq": 2, "rejected": {"seq": 1}},
    "report-ack-rejected-number": {"type": "report_ack", "seq": 2, "rejected": [1]},
    "report-ack-rejected-no-reason": {"type": "report_ack", "seq": 2, "rejected": [{"seq": 1}]},
    "report-ack-rejected-zero-seq": {
        "type": "report_ack",
        "seq": 2,
        "rejected": [{"seq": 0, "reason": "x"}],
    },
    "report-seq-past-max": with_item(REPORT, 0, seq=MAX_SEQ + 1),
    "welcome-report-seq-past-max": {**WELCOME, "report_seq": MAX_SEQ + 1},
    # error
    "error-no-code": {"type": "error", "reason": "x"},
    "error-number-code": {"type": "error", "code": 1, "reason": "x"},
    "error-no-reason": {"type": "error", "code": BAD_FRAME},
}


def test_bad_message_fixtures_start_from_valid_messages() -> None:
    """The bases the bad messages are derived from are themselves accepted."""
    for base in (HELLO, WELCOME, CHANGES, SNAPSHOT, REPORT):
        assert isinstance(decode(json.dumps(base)), Message)


@pytest.mark.parametrize("body", list(BAD_MESSAGES.values()), ids=list(BAD_MESSAGES))
def test_wrong_fields_are_a_bad_message(body: dict[str, Any]) -> None:
    """A known message type with a missing or wrong-typed field is refused as a bad message."""
    error = refused(json.dumps(body))
    assert error.code == BAD_MESSAGE
    assert error.reason


def test_bad_message_reason_names_the_field() -> None:
    """The reason says which message and which field was wrong."""
    reason = refused(frame(type="ack", revision=True)).reason
    assert "ack" in reason
    assert "revision" in reason


def test_unknown_extra_fields_are_ignored() -> None:
    """Fields a message does not know are ignored (a newer peer may add some)."""
    assert decode(frame(type="ack", revision=3, extra={"x": 1})) == Ack(revision=3)


def test_report_seq_may_skip_numbers() -> None:
    """Report seqs must increase but need not be consecutive (coalesced rows leave gaps)."""
    decoded = decode(
        json.dumps(
            {
                "type": "report",
                "items": [
                    {"seq": 2, "topic": "t", "key": None, "body": {}},
                    {"seq": 10, "topic": "t", "key": None, "body": {}},
                ],
            }
        )
    )
    assert isinstance(decoded, Report)
    assert [i.seq for i in decoded.items] == [2, 10]


# -- properties ----------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)
json_objects = st.dictionaries(st.text(max_size=8), json_values, max_size=4)

# Field names of every message and item, so that the generated frames get past the type check.
FIELD_NAMES = sorted(
    {
        "node",
        "revision",
        "protocol",
        "agent",
        "node_info",
        "mode",
        "head",
        "report_seq",
        "items",
        "final",
        "seq",
        "code",
        "reason",
        "op",
        "kind",
        "namespace",
        "name",
        "rv",
        "object",
        "topic",
        "key",
        "body",
    }
)
type_names = st.sampled_from(sorted(MESSAGE_TYPES)) | st.text(max_size=10)


@st.composite
def frame_like(draw: st.DrawFn) -> dict[str, Any]:
    """A JSON object with a (mostly known) type and known field names with arbitrary values."""
    body = draw(st.dictionaries(st.sampled_from(FIELD_NAMES), json_values, max_size=6))
    if draw(st.booleans()):
        body["items"] = draw(
            st.lists(
                st.dictionaries(st.sampled_from(FIELD_NAMES), json_values, max_size=6)
                | json_values,
                max_size=4,
            )
        )
    body["type"] = draw(type_names)
    return body


def decodes_or_refuses(text: str) -> None:
    """decode returns a Message or raises ProtocolError; anything else propagates."""
    try:
        message = decode(text)
    except ProtocolError as exc:
        assert exc.code in (BAD_FRAME, UNKNOWN_TYPE, BAD_MESSAGE)
    else:
        assert isinstance(message, Message)
        assert decode(message.encode()) == message


@settings(max_examples=200, deadline=None)
@given(json_values | json_objects)
def test_any_json_value_decodes_or_is_refused(value: Any) -> None:
    """Any JSON value as a frame either decodes to a Message or is refused with ProtocolError."""
    decodes_or_refuses(json.dumps(value))


@settings(max_examples=200, deadline=None)
@given(frame_like())
def test_any_frame_shaped_object_decodes_or_is_refused(body: dict[str, Any]) -> None:
    """Objects with message types and field names but arbitrary values never crash decode."""
    decodes_or_refuses(json.dumps(body))


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_any_text_decodes_or_is_refused(text: str) -> None:
    """Arbitrary text never makes decode raise anything but ProtocolError."""
    decodes_or_refuses(text)


names = st.text(min_size=1, max_size=12)
revisions = st.integers(min_value=0, max_value=2**53)
bodies = st.dictionaries(st.text(max_size=8), json_values, max_size=3)


@st.composite
def changes_(draw: st.DrawFn, ops: tuple[str, ...] = ("put", "delete")) -> Change:
    op = draw(st.sampled_from(ops))
    return Change(
        op=op,
        kind=draw(st.sampled_from(["Device", "DeviceModel"])),
        namespace=draw(st.text(max_size=12)),
        name=draw(names),
        resource_version=draw(revisions),
        object=draw(bodies) if op == "put" else None,
    )


@st.composite
def reports(draw: st.DrawFn) -> Report:
    seqs = sorted(draw(st.sets(st.integers(min_value=1, max_value=2**53), min_size=1, max_size=6)))
    items = tuple(
        ReportItem(
            seq=seq,
            topic=draw(names),
            key=draw(st.none() | st.text(max_size=12)),
            body=draw(bodies),
        )
        for seq in seqs
    )
    return Report(items=items)


@settings(max_examples=200, deadline=None)
@given(revisions, st.lists(changes_(), max_size=6).map(tuple))
def test_any_valid_changes_round_trips(revision: int, items: tuple[Change, ...]) -> None:
    """Any well-formed changes frame decodes back to an equal message."""
    message = Changes(revision=revision, items=items)
    assert decode(message.encode()) == message


@settings(max_examples=200, deadline=None)
@given(reports())
def test_any_valid_report_round_trips(message: Report) -> None:
    """Any well-formed report frame decodes back to an equal message."""
    assert decode(message.encode()) == message


@settings(max_examples=100, deadline=None)
@given(revisions, st.lists(changes_(ops=("put",)), max_size=4), st.booleans())
def test_any_valid_snapshot_round_trips(revision: int, items: list[Change], final: bool) -> None:
    """Any well-formed snapshot frame decodes back to an equal message."""
    message = Snapshot(revision=revision, items=tuple(items), final=final)
    assert decode(message.encode()) == message


def test_a_refused_frame_says_what_type_it_claimed() -> None:
    """A frame refused for its fields keeps the type it claimed (a session ends on a report it
    cannot read: it cannot acknowledge rows it cannot see); garbage claims none."""
    assert refused(frame(type="report", items=[])).message_type == "report"
    assert refused(frame(type="ack", revision=-1)).message_type == "ack"
    assert refused("garbage").message_type is None
    assert refused(frame(type="nope")).message_type is None
