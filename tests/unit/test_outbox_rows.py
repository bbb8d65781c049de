"""Outbox rows: the cheap checks refuse exactly what the hub could not take, and measure a row
exactly as it is sent."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from edgecore import outboxrows
from edgecore.outboxrows import TOO_LARGE, UNSTORABLE, Refused
from edgeward import storable
from edgeward.storable import INT64_MAX, INT64_MIN, MAX_DEPTH, MAX_REPORT_BYTES


def nested(depth: int, leaf: Any = 1) -> Any:
    value = leaf
    for n in range(depth):
        value = {"a": value} if n % 2 else [value]
    return value


def hub_view(text: str | bytes) -> tuple[dict[str, Any], int] | None:
    """What the hub makes of a row's text: the body and its size as sent, or None when it
    could not take it (the slow, obvious way)."""
    try:
        body = storable.loads(text)
    except storable.Unstorable:
        return None
    size = len(storable.dumps(body).encode())
    if not isinstance(body, dict) or size > MAX_REPORT_BYTES:
        return None
    return body, size


strings = st.text() | st.sampled_from(["\ud800", "a\udfffb", "1e5", '"[[{', "\\u0041", "é"])
numbers = (
    st.integers(min_value=-(2**70), max_value=2**70)
    | st.sampled_from([INT64_MAX, INT64_MIN, INT64_MAX + 1, INT64_MIN - 1, 10**15, 10**16])
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from([1e5, 1.5e-7, 12345678901234567.0, 0.1, 1e300])
)
json_values = st.recursive(
    st.none() | st.booleans() | numbers | strings,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(strings, inner, max_size=4),
    max_leaves=20,
)


@given(st.dictionaries(strings, json_values, max_size=4))
@example({"deep": nested(MAX_DEPTH - 1)})
@example({"deep": nested(MAX_DEPTH)})
@example({"deep": nested(MAX_DEPTH - 1, "[[[[]]]]")})
@example({"deep": nested(MAX_DEPTH - 1, '\\"[')})
@example({"wide": [[1]] * 100})
@example({"big": "x" * MAX_REPORT_BYTES})
@example({"big": "x" * (MAX_REPORT_BYTES - 10)})
def test_a_row_is_written_exactly_when_the_hub_could_take_it(body: dict[str, Any]) -> None:
    """encode's cheap checks accept a body exactly when the hub could take its JSON text, and
    the text is what the hub reads."""
    try:
        text = storable.dumps(body)
        text.encode()
    except (ValueError, UnicodeEncodeError):
        expected = None
    else:
        expected = hub_view(text)
    try:
        written = outboxrows.encode(body)
    except Refused:
        assert expected is None
    else:
        assert expected is not None
        assert json.loads(written) == expected[0]
        assert len(written.encode()) == expected[1]


def spellings(body: dict[str, Any]) -> list[tuple[bytes, bool]]:
    """The ways an edgecore (this one, an older one) or a hand may have stored ``body``, each
    with whether it is spelled exactly as it is sent."""
    out = []
    for ascii_only, indent in ((False, None), (True, None), (False, 1)):
        try:
            text = json.dumps(body, separators=(",", ":"), ensure_ascii=ascii_only, indent=indent)
            out.append((text.encode(), not ascii_only and indent is None))
        except (ValueError, UnicodeEncodeError):
            pass
    return out


@given(st.dictionaries(strings, json_values, max_size=4))
@example({"deep": nested(MAX_DEPTH)})
@example({"x": float("nan")})
@example({"escaped": "é" * (MAX_REPORT_BYTES // 2 - 20)})
def test_a_stored_row_is_sent_exactly_when_the_hub_could_take_it(body: dict[str, Any]) -> None:
    """decode takes a stored body however it was written and refuses it exactly when the hub
    could not take it; its size bounds the body as sent, and is exact for this edgecore's rows."""
    for raw, as_sent in spellings(body):
        expected = hub_view(raw)
        try:
            got, size = outboxrows.decode(raw)
        except Refused:
            assert expected is None, raw[:200]
        else:
            assert expected is not None, raw[:200]
            assert got == expected[0]
            assert size == expected[1] if as_sent else size >= expected[1]


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"not json", UNSTORABLE),
        (b"\xff\xfe{}", UNSTORABLE),
        (b"[1, 2]", UNSTORABLE),
        (b'{"x": NaN}', UNSTORABLE),
        (b'{"x": 1e400}', UNSTORABLE),
        (b'{"x": "\\ud800"}', UNSTORABLE),
        (b'{"x": 9223372036854775808}', UNSTORABLE),
        (b'{"x": "' + b"y" * MAX_REPORT_BYTES + b'"}', TOO_LARGE),
        (b'{"x": "' + b"y" * 4 * MAX_REPORT_BYTES + b'"}', TOO_LARGE),
        # written short, sent long: 1e5 is sent as 100000.0
        (b'{"x":[' + b",".join([b"1e5"] * (MAX_REPORT_BYTES // 4)) + b"]}", TOO_LARGE),
    ],
)
def test_stored_rows_the_hub_could_not_take_are_refused_with_a_reason(
    raw: bytes, reason: str
) -> None:
    """Each kind of row an older edgecore or a hand could leave is refused, by its reason."""
    with pytest.raises(Refused) as refused:
        outboxrows.decode(raw)
    assert refused.value.reason == reason


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ([1], UNSTORABLE),
        ({"x": float("nan")}, UNSTORABLE),
        ({"x": {1, 2}}, UNSTORABLE),
        ({"x": "\ud800"}, UNSTORABLE),
        ({"x": INT64_MAX + 1}, UNSTORABLE),
        ({"x": nested(MAX_DEPTH)}, UNSTORABLE),
        ({"x": "y" * MAX_REPORT_BYTES}, TOO_LARGE),
    ],
)
def test_bodies_the_hub_could_not_take_are_refused_with_a_reason(body: Any, reason: str) -> None:
    """Each kind of body the hub could not take is refused when written, by its reason."""
    with pytest.raises(Refused) as refused:
        outboxrows.encode(body)
    assert refused.value.reason == reason


@given(st.text() | st.none())
def test_a_topic_or_key_never_takes_more_than_its_bound(value: str | None) -> None:
    """text_bytes bounds a topic or key as it is sent, whatever characters it holds."""
    try:
        sent = len(storable.dumps(value).encode())
    except UnicodeEncodeError:
        return  # a lone surrogate cannot come out of SQLite as text
    assert sent <= outboxrows.text_bytes(value)
