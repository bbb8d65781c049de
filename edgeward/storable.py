"""Storable JSON: the one definition of what the hub and the edge accept from a peer and keep.

A value that decodes is not yet a value that can be kept. It must also fit
the column it lands in, encode back to JSON, and be accepted by whoever
reads it next — the REST API's clients, the other side of the sync link.
Every entrance (edge frames, REST bodies, MQTT payloads, rows the edge
writes to its outbox) applies the rules below, and the hub's store checks
every object it writes once more, so nothing it stores can fail to be
served:

- JSON values only: objects with string keys, arrays, strings, finite
  numbers, true, false, null (no NaN or Infinity);
- integers within int64, [-2^63, 2^63 - 1] (a BIGINT column; what Go,
  PostgreSQL and every JSON library with 64-bit integers read);
- strings that are valid Unicode: JSON's ``"\\ud800"`` escape decodes to a
  lone surrogate, which UTF-8 cannot encode (serving it back fails);
- nesting at most :data:`MAX_DEPTH` levels.

And the sizes, each checked where the value enters (numbers in bytes of
compact UTF-8 JSON):

=============================  ===========  ==============================================
what                           limit        why
=============================  ===========  ==============================================
a sync frame                   4 MiB        ``protocol.MAX_FRAME_BYTES``; both sides refuse more
a stored object                3 MiB        a spec (1 MiB) plus the largest status a report
                                            can write, with room; always fits one frame
an object's spec and metadata  1 MiB        the REST API's body limit, also after merge patches
an outbox row's body           1 MiB        the edge refuses larger rows before it
                                            acknowledges them to a device; fits one frame
twin properties of a device    1,000        on the edge (a mapper's update) and the hub (a
                                            Device or DeviceModel spec) alike
=============================  ===========  ==============================================

Kubernetes caps an object near 1.5 MB (etcd's request limit). Ours is
larger because a Device carries the status its edge reports (up to 1,000
properties with their reported and desired values) beside its spec; the
test suite builds the largest spec and the largest status and checks that
together they fit :data:`MAX_OBJECT_BYTES`, and that the largest object
fits a frame.
"""

from __future__ import annotations

import json
import math
from typing import Any

from edgeward.errors import EdgewardError

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
MAX_DEPTH = 64

MAX_FRAME_BYTES = 4 * 1024 * 1024
MAX_OBJECT_BYTES = 3 * 1024 * 1024
MAX_SPEC_BYTES = 1024 * 1024
MAX_REPORT_BYTES = 1024 * 1024
MAX_TWINS = 1000


class Unstorable(EdgewardError):
    """A value that cannot be kept: ``path`` says where (``""``: the whole value)."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}" if path else reason)


def is_int64(value: object) -> bool:
    """True for an int (not a bool) that fits a BIGINT column."""
    return type(value) is int and INT64_MIN <= value <= INT64_MAX


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:20]} is out of range for a number")
    return value


#: One decoder for every call: json.loads with hooks builds a new one each time, which took
#: longer than parsing a small row.
_decoder = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float)


def _child(path: str, key: object) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def _bad_string(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def problem(value: Any, max_depth: int = MAX_DEPTH) -> Unstorable | None:
    """Why ``value`` (as json.loads returns it) cannot be stored, or None when it can.

    Iterative: a value nested deeper than Python's recursion limit is refused, not a
    RecursionError.
    """
    stack: list[tuple[Any, str, int]] = [(value, "", 0)]
    while stack:
        item, path, depth = stack.pop()
        kind = type(item)
        if kind is dict or kind is list:
            if depth >= max_depth:
                return Unstorable(path, f"nested more than {max_depth} levels deep")
            pairs = item.items() if kind is dict else enumerate(item)
            for key, child in pairs:
                if kind is dict and (type(key) is not str or _bad_string(key)):
                    return Unstorable(path, "has a key that is not valid Unicode text")
                stack.append((child, _child(path, key), depth + 1))
        elif kind is str:
            if _bad_string(item):
                return Unstorable(path, "is not valid Unicode (a lone surrogate)")
        elif kind is int:
            if not INT64_MIN <= item <= INT64_MAX:
                return Unstorable(path, "is an integer outside int64")
        elif kind is float:
            if not math.isfinite(item):
                return Unstorable(path, "is not a finite number")
        elif item is not None and kind is not bool:
            return Unstorable(path, f"is not a JSON value ({kind.__name__})")
    return None


def check(value: Any, max_bytes: int | None = None, what: str = "") -> int:
    """Raise Unstorable unless ``value`` is storable (and, given ``max_bytes``, at most that
    many bytes of compact JSON); returns its size in bytes (0 when not measured)."""
    found = problem(value)
    if found is not None:
        raise Unstorable(_child(what, found.path) if found.path else what, found.reason)
    if max_bytes is None:
        return 0
    size = len(dumps(value).encode("utf-8"))
    if size > max_bytes:
        raise Unstorable(what, f"is {size} bytes, more than {max_bytes}")
    return size


def loads(data: str | bytes, full: bool = True) -> Any:
    """Parse JSON text, refusing what cannot be stored; raises Unstorable.

    ``bytes`` must be UTF-8. With ``full`` every value is checked (:func:`problem`);
    without, only what the parser alone can be fooled by: NaN and Infinity, and lone
    surrogates — for sync frames, whose fields each message checks itself (a walk over
    a large report frame would cost as much as parsing it).
    """
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError:
            raise Unstorable("", "not UTF-8 text") from None
    try:
        value = _decoder.decode(data)
    except json.JSONDecodeError as exc:
        raise Unstorable("", f"not JSON: {exc.msg} at {exc.pos}") from None
    except ValueError as exc:  # NaN/Infinity, or an integer too long to convert
        raise Unstorable("", f"not JSON: {exc}") from None
    except RecursionError:
        raise Unstorable("", f"nested more than {MAX_DEPTH} levels deep") from None
    if full:
        check(value)
    elif "\\u" in data:  # only an escape can make a lone surrogate out of valid UTF-8
        try:
            dumps(value).encode("utf-8")
        except UnicodeEncodeError:
            found = problem(value, max_depth=10**9)
            raise found or Unstorable("", "not valid Unicode") from None
    return value


#: Compact JSON, non-ASCII kept as it is (callers encode it as UTF-8).
_encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def dumps(value: Any) -> str:
    """Compact JSON text of ``value`` (as stored and as sent)."""
    return _encoder.encode(value)
