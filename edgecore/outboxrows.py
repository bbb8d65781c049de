"""Outbox rows the hub can take: storable JSON objects of at most storable.MAX_REPORT_BYTES.

A row is checked where it is written (:func:`encode`), so that nothing the hub
would refuse is queued, and again where it is read for sending (:func:`decode`):
rows an older edgecore wrote were never checked, and one the hub cannot read
(larger than a frame, not JSON) would stop the outbox behind it for good.

Both run for every row, so both are cheap. ``storable.check`` walks every value
of a row, which costs about twice as much as encoding it; encoding and parsing
already refuse most of what is not storable (NaN, values that are not JSON, lone
surrogates), and a look at the JSON text rules out the rest for almost every
row (:func:`_needs_walk`). Only the others are parsed and walked, as the hub
would read them.
"""

from __future__ import annotations

from typing import Any

from edgeward import storable

#: Reasons a row is refused, as counted.
TOO_LARGE = "too_large"
UNSTORABLE = "unstorable"

#: Bytes of JSON a row's seq, the field names and the punctuation around its topic, key and body
#: take in a report frame (the seq at its longest), and the frame's own envelope.
ITEM_OVERHEAD = 64
FRAME_OVERHEAD = 64

#: A \\u escape takes 6 bytes for a character of at least 2 in UTF-8 (12 for a surrogate pair
#: of 4): stored text shrinks at most 3 times when re-encoded.
_MOST_SHRINK = 3

#: 16 digits in a row: an integer outside int64 has 19 or more; a float written with 17 or
#: more may re-encode longer (12345678901234567.0 → 1.2345678901234568e+16), as may one with
#: an exponent (a digit then e: 1e5 → 100000.0).
_LONG_NUMBER = b"0" * 16
_EXPONENT = b"0e"
#: Digits become 0, e and E become e, everything else a dot.
_NUMBER_SHAPES = bytes(
    ord("0") if chr(i) in "0123456789" else ord("e") if chr(i) in "eE" else ord(".")
    for i in range(256)
)
_NOT_BRACKETS = bytes(i for i in range(256) if chr(i) not in "[]{}")
_AS_PARENTHESES = bytes.maketrans(b"[]{}", b"()()")


class Refused(Exception):
    """A row the hub could not take: ``reason`` (TOO_LARGE or UNSTORABLE) and what is wrong."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def encode(body: Any) -> str:
    """The text to store for a row's body; raises Refused when the hub could not take it.

    What counts is the JSON text, as the hub reads it: a tuple is sent as a list, an
    integer key as a string.
    """
    if type(body) is not dict:
        raise Refused(UNSTORABLE, f"the body is not a JSON object ({type(body).__name__})")
    try:
        text = storable.dumps(body)  # refuses NaN, Infinity, values that are not JSON
        data = text.encode("utf-8")  # refuses lone surrogates
    except (ValueError, TypeError, UnicodeEncodeError, RecursionError) as exc:
        raise Refused(UNSTORABLE, f"the body is not storable JSON: {exc}") from None
    _check_size(len(data))
    if _needs_walk(data):
        _parse(data, full=True)
    return text


def decode(raw: bytes) -> tuple[dict[str, Any], int]:
    """A stored body (as UTF-8 bytes) and its size as sent; raises Refused when the hub could
    not take it."""
    size = len(raw)
    if size > _MOST_SHRINK * storable.MAX_REPORT_BYTES:
        raise Refused(TOO_LARGE, _too_large(size))  # not even parsed
    if size <= storable.MAX_REPORT_BYTES and not _needs_walk(raw):
        body = _parse(raw, full=False)
    else:  # stored another way than it is sent (by an older edgecore): measure it as sent
        body = _parse(raw, full=True)
        size = len(storable.dumps(body).encode("utf-8"))
        _check_size(size)
    if type(body) is not dict:
        raise Refused(UNSTORABLE, f"the body is not a JSON object ({type(body).__name__})")
    return body, size


def text_bytes(value: str | None) -> int:
    """The most bytes ``value`` (a topic or a key) takes as a JSON string; 4 for null."""
    return 4 if value is None else 6 * len(value.encode("utf-8")) + 2


def _check_size(size: int) -> None:
    if size > storable.MAX_REPORT_BYTES:
        raise Refused(TOO_LARGE, _too_large(size))


def _too_large(size: int) -> str:
    return f"the body is {size} bytes, more than {storable.MAX_REPORT_BYTES}"


def _parse(data: bytes, full: bool) -> Any:
    try:
        return storable.loads(data, full=full)
    except storable.Unstorable as exc:
        raise Refused(UNSTORABLE, f"the body is not storable JSON: {exc}") from None


def _needs_walk(data: bytes) -> bool:
    """False when compact JSON text ``data`` surely holds no integer outside int64, nests at
    most storable.MAX_DEPTH deep, and re-encodes to no more bytes than it has."""
    shapes = data.translate(_NUMBER_SHAPES)
    if _LONG_NUMBER in shapes or _EXPONENT in shapes:
        return True
    if data.count(b"{") + data.count(b"[") <= storable.MAX_DEPTH:
        return False
    return not _nests_at_most(data, storable.MAX_DEPTH)


def _nests_at_most(data: bytes, depth: int) -> bool:
    """True when JSON text ``data`` nests at most ``depth`` containers deep; False when it
    nests deeper or its strings hold an escaped quote (then it cannot tell)."""
    if b'\\"' in data:
        return False
    # outside strings (every other piece between quotes), only the brackets, all as ( and )
    brackets = b"".join(data.split(b'"')[::2]).translate(_AS_PARENTHESES, _NOT_BRACKETS)
    for _ in range(depth):  # one pass removes the innermost containers, one level
        if not brackets:
            return True
        brackets = brackets.replace(b"()", b"")
    return not brackets
