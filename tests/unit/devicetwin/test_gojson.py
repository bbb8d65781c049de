"""Bodies are decoded as Go's encoding/json fills KubeEdge's structs."""

from __future__ import annotations

import pytest

from devicetwin import gojson
from devicetwin.gojson import Bool, Int64, Map, Str, Struct
from tests.unit.devicetwin.support import D, Edge

SCHEMA = Struct(
    {
        "event_id": Str(),
        "timestamp": Int64(),
        "ptr": Str(pointer=True),
        "flag": Bool(),
        "inner": Struct({"a": Str(), "b": Str()}),
        "items": Map(Struct({"a": Str()})),
    }
)


def decode(text: str) -> dict[str, object]:
    return SCHEMA.decode_body(text.encode())


def test_field_names_fold_case() -> None:
    """Field names match in any case, including Go's Unicode upper-case folding."""
    assert decode('{"EVENT_ID": "a", "TimeStamp": 3}') == {"event_id": "a", "timestamp": 3}
    # dotless i (U+0131) and long s (U+017F) upper-case to I and S in Go
    assert decode('{"event_\u0131d": "x", "time\u017ftamp": 4}') == {
        "event_id": "x",
        "timestamp": 4,
    }
    # "ß" upper-cases to two letters: it matches nothing
    assert decode('{"\u00df": 1}') == {}


def test_last_repeat_wins_across_spellings() -> None:
    """A field given several times (in any case) keeps its last value."""
    assert decode('{"event_id": "a", "EVENT_ID": "b", "event_id": "c"}') == {"event_id": "c"}


def test_unknown_fields_are_ignored_whatever_their_type() -> None:
    """Fields we do not know are skipped without looking at them."""
    assert decode('{"extra": [1, {"x": null}], "n": 1e999, "inner2": "x"}') == {}


def test_null_leaves_values_and_clears_pointers() -> None:
    """null leaves a plain value as it was and sets a pointer, struct or map to nil."""
    body = '{"event_id": "a", "event_id": null, "timestamp": null, "ptr": null, "flag": null,'
    body += ' "inner": null, "items": null}'
    assert decode(body) == {
        "event_id": "a",
        "timestamp": None,
        "ptr": None,
        "flag": None,
        "inner": None,
        "items": None,
    }


def test_repeated_objects_merge() -> None:
    """A repeated struct is decoded into the one already there; a repeated map keeps entries."""
    body = '{"inner": {"a": "1"}, "inner": {"b": "2"}, "items": {"x": {"a": "1"}},'
    body += ' "items": {"y": {}, "x": {}}}'
    assert decode(body) == {"inner": {"a": "1", "b": "2"}, "items": {"x": {}, "y": {}}}


def test_top_level_null_sets_nothing() -> None:
    """A body of null decodes to an empty struct, as Go leaves the target untouched."""
    assert decode("null") == {}


@pytest.mark.parametrize(
    "body",
    [
        '{"ptr": 1}',
        '{"flag": "true"}',
        '{"inner": []}',
        '{"items": [1]}',
        '{"timestamp": -9223372036854775809}',
    ],
)
def test_wrong_types_mismatch(body: str) -> None:
    """A known field of the wrong JSON type is a Mismatch."""
    with pytest.raises(gojson.Mismatch):
        decode(body)


def test_int64_bounds() -> None:
    """Both int64 bounds are accepted."""
    assert decode('{"timestamp": -9223372036854775808}') == {"timestamp": -(2**63)}
    assert decode('{"timestamp": 9223372036854775807}') == {"timestamp": 2**63 - 1}


def test_lone_surrogates_become_replacement_characters(thermo: Edge) -> None:
    """A lone UTF-16 surrogate escape is echoed back as U+FFFD, so replies stay valid UTF-8."""
    assert decode('{"event_id": "a\\ud800b"}') == {"event_id": "a\ufffdb"}
    outcome = thermo.mqtt(f"{D}/twin/update", b'{"event_id": "\\udc00", "twin": {}}')
    assert outcome.publish[0].payload["event_id"] == "\ufffd"
    outcome.publish[0].payload["event_id"].encode("utf-8")


def test_invalid_utf8_in_strings_is_replaced(thermo: Edge) -> None:
    """Invalid UTF-8 inside a string is read as U+FFFD, as Go does, not refused."""
    outcome = thermo.mqtt(f"{D}/twin/update", b'{"event_id": "e\xff", "twin": {}}')
    assert outcome.error is None and outcome.publish[0].payload["event_id"] == "e\ufffd"


def test_case_insensitive_update_body(thermo: Edge) -> None:
    """A whole update written in other cases is understood; twin keys keep their case."""
    body = '{"Event_ID": "e1", "TWIN": {"Temp": {"Actual": {"VALUE": "1"},'
    body += ' "MetaData": {"Type": "int"}, "OPTIONAL": false}}}'
    outcome = thermo.mqtt(f"{D}/twin/update", body)
    assert outcome.error is None
    twin = thermo.twin("Temp")
    assert (twin.type, twin.optional, twin.actual.value) == ("int", False, "1")


def test_null_fields_of_a_twin_mean_absent(thermo: Edge) -> None:
    """``"expected": null``, ``"optional": null`` and ``"metadata": null`` count as not sent."""
    body = {
        "event_id": "e1",
        "twin": {
            "temp": {"expected": None, "actual": {"value": "1"}, "optional": None, "metadata": None}
        },
    }
    outcome = thermo.mqtt(f"{D}/twin/update", body)
    twin = thermo.twin("temp")
    assert outcome.error is None and twin.expected is None and twin.optional is True
