"""Storable JSON: what every entrance accepts is exactly what can be stored and served back."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgeward import storable
from edgeward.storable import INT64_MAX, INT64_MIN, MAX_DEPTH, Unstorable


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"a": value}
    return value


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        0,
        INT64_MAX,
        INT64_MIN,
        -1.5e300,
        "",
        "°C ünïcödé 温度 🌡",
        [],
        {},
        {"a": [1, {"b": None}]},
        nested(MAX_DEPTH),
    ],
)
def test_storable_values_pass(value: Any) -> None:
    """JSON values inside every limit are accepted as they are."""
    assert storable.problem(value) is None
    assert storable.loads(json.dumps(value)) == value


@pytest.mark.parametrize(
    ("value", "path", "reason"),
    [
        (INT64_MAX + 1, "", "outside int64"),
        ({"rev": 2**64}, "rev", "outside int64"),
        ([0, INT64_MIN - 1], "[1]", "outside int64"),
        ({"node_info": {"host": "\ud800"}}, "node_info.host", "lone surrogate"),
        ({"x": ["ok", "\udfff"]}, "x[1]", "lone surrogate"),
        ({"\ud800": 1}, "", "key that is not valid"),
        (nested(MAX_DEPTH + 1), ".".join(["a"] * MAX_DEPTH), "levels deep"),
        (float("nan"), "", "finite"),
        ({"f": float("inf")}, "f", "finite"),
        ({1: "x"}, "", "key that is not valid"),
        ({"s": {1, 2}}, "s", "not a JSON value"),
    ],
)
def test_unstorable_values_name_where_and_why(value: Any, path: str, reason: str) -> None:
    """Each unstorable value is refused with the path to the bad part and the rule it breaks."""
    found = storable.problem(value)
    assert found is not None
    assert found.path == path
    assert reason in found.reason
    with pytest.raises(Unstorable):
        storable.check(value)


def test_check_measures_and_bounds_the_size() -> None:
    """check() returns the compact UTF-8 size and refuses a value over its limit, naming it."""
    assert storable.check({"a": "é"}, max_bytes=100) == len('{"a":"é"}'.encode())
    with pytest.raises(Unstorable) as info:
        storable.check({"a": "x" * 100}, max_bytes=50, what="node_info")
    assert info.value.path == "node_info"
    assert "more than 50" in info.value.reason
    with pytest.raises(Unstorable) as info:
        storable.check({"a": "\ud800"}, what="body")
    assert info.value.path == "body.a"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (b"\xff\xfe{}", "not UTF-8"),
        (b'{"a": "\xed\xa0\x80"}', "not UTF-8"),  # a surrogate encoded in the bytes themselves
        ("{", "not JSON"),
        ('{"a": NaN}', "not JSON"),
        ('{"a": 1e999}', "not JSON"),
        ("[" * 100_000, "levels deep"),
        ('{"a": 18446744073709551616}', "outside int64"),
        ('{"a": "\\ud800"}', "lone surrogate"),
        ("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1), "levels deep"),
    ],
)
def test_loads_refuses_what_cannot_be_stored(text: str | bytes, reason: str) -> None:
    """loads() refuses text that is not JSON, and JSON that decodes but cannot be stored."""
    with pytest.raises(Unstorable) as info:
        storable.loads(text)
    assert reason in str(info.value)


def test_loads_for_frames_checks_unicode_but_leaves_fields_to_their_message() -> None:
    """Without ``full`` (sync frames), lone surrogates are still refused, anywhere in the frame;
    big integers and depth are left to each message's field checks (they cost a walk)."""
    with pytest.raises(Unstorable) as info:
        storable.loads('{"type":"report","items":[{"body":{"d":"\\udc00"}}]}', full=False)
    assert info.value.path == "items[0].body.d"
    assert storable.loads('{"seq": 18446744073709551616}', full=False) == {"seq": 2**64}
    assert storable.loads('{"a": "caf\\u00e9 \\ud83c\\udf21"}', full=False) == {"a": "café 🌡"}


def test_is_int64() -> None:
    """An int64 is an int within range, never a bool or a float."""
    assert storable.is_int64(INT64_MAX) and storable.is_int64(INT64_MIN)
    assert not storable.is_int64(INT64_MAX + 1)
    assert not storable.is_int64(True)
    assert not storable.is_int64(1.0)
    assert not storable.is_int64("1")


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@given(json_values)
def test_whatever_is_accepted_is_served_back_unchanged(value: Any) -> None:
    """Any value check() accepts encodes to UTF-8 JSON that loads() takes back equal; any value
    it refuses, loads() refuses too once encoded (when it can be encoded at all)."""
    found = storable.problem(value)
    try:
        text = json.dumps(value)  # escapes surrogates, writes NaN: what a peer could send
    except ValueError:
        return
    if found is None:
        served = storable.dumps(value).encode("utf-8")
        assert storable.loads(served) == value
        assert storable.loads(text) == value
    else:
        with pytest.raises(Unstorable):
            storable.loads(text)
