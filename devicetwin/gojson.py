"""Decode a JSON body the way Go's encoding/json fills KubeEdge's structs.

Mappers are tested against KubeEdge, whose edgecore is written in Go, so we
accept exactly what ``json.Unmarshal`` accepts into its message structs:

- struct field names match case-insensitively (Go folds them to upper case);
  unknown fields are ignored, whatever their type;
- a value of the wrong JSON type anywhere in a known field makes the whole
  body unparseable (``"event_id": 1``, ``"timestamp": "1"``, ``1.5`` for an int);
- ``null`` sets a pointer, map or slice to nil and leaves any other value as
  it was; when a key repeats, the last one wins, and a repeated object is
  decoded into the one already there (struct fields merge);
- NaN and Infinity are not JSON; invalid UTF-8 in strings becomes U+FFFD.

A schema is built from :class:`Str`, :class:`Int64`, :class:`Bool`,
:class:`Struct` and :class:`Map` (each a :data:`Kind`); decoding returns
plain dicts holding only the fields that were set. Pointer fields decode
``null`` to None.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


class Mismatch(ValueError):
    """The body is not JSON, or a known field has the wrong JSON type."""


class Pairs(tuple[tuple[str, Any], ...]):
    """A JSON object as its (key, value) pairs in document order, repeats kept."""


def _refuse_constant(name: str) -> Any:
    raise Mismatch(f"{name} is not JSON")


#: One decoder for every body (json.loads with options builds a new one per call).
_DECODER = json.JSONDecoder(object_pairs_hook=Pairs, parse_constant=_refuse_constant)


def loads(payload: bytes) -> Any:
    """Parse ``payload`` keeping objects as :class:`Pairs`; raises Mismatch when it is not JSON."""
    text = payload.decode("utf-8", errors="replace")
    try:
        return _DECODER.decode(text)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise Mismatch(str(exc)) from None


def fold(name: str) -> str:
    """Go's case folding of a field name: ASCII and single-rune Unicode upper case."""
    if name.isascii():
        return name.upper()
    out = []
    for ch in name:
        up = ch.upper()
        out.append(up if len(up) == 1 else ch)
    return "".join(out)


def clean_text(text: str) -> str:
    """``text`` with lone surrogates (from ``\\ud800`` escapes) replaced as Go does."""
    if text.isascii():
        return text
    return "".join("\ufffd" if "\ud800" <= ch <= "\udfff" else ch for ch in text)


@dataclass(frozen=True)
class Str:
    """A Go ``string`` (``pointer=True``: ``*string``)."""

    pointer: bool = False

    def decode(self, value: Any, current: Any) -> Any:
        if value is None:
            return None if self.pointer else current
        if not isinstance(value, str):
            raise Mismatch("want a string")
        return clean_text(value)


@dataclass(frozen=True)
class Int64:
    """A Go ``int64``: a JSON integer in range; ``1.0`` and ``"1"`` are refused."""

    def decode(self, value: Any, current: Any) -> Any:
        if value is None:
            return current
        if isinstance(value, bool) or not isinstance(value, int):
            raise Mismatch("want an integer")
        if not INT64_MIN <= value <= INT64_MAX:
            raise Mismatch("integer out of range")
        return value


@dataclass(frozen=True)
class Bool:
    """A Go ``*bool``."""

    def decode(self, value: Any, current: Any) -> Any:
        if value is None:
            return None
        if not isinstance(value, bool):
            raise Mismatch("want true or false")
        return value


@dataclass(frozen=True)
class Struct:
    """A pointer to a Go struct whose fields are named (exact case) in ``fields``."""

    fields: Mapping[str, Kind]
    _names_by_fold: Mapping[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_names_by_fold", {fold(name): name for name in self.fields})

    def field_name(self, key: str) -> str | None:
        """The field a JSON key fills, or None when the struct has no such field."""
        if key in self.fields:  # the usual spelling: no folding needed
            return key
        return self._names_by_fold.get(fold(key))

    def decode(self, value: Any, current: Any) -> Any:
        if value is None:
            return None
        if not isinstance(value, Pairs):
            raise Mismatch("want an object")
        out: dict[str, Any] = dict(current) if current is not None else {}
        for key, item in value:
            name = self.field_name(key)
            if name is not None:
                out[name] = self.fields[name].decode(item, out.get(name))
        return out

    def decode_body(self, payload: bytes) -> dict[str, Any]:
        """Decode a whole message body into this struct (a value: a top-level null sets nothing)."""
        decoded = self.decode(loads(payload), None)
        return {} if decoded is None else decoded


@dataclass(frozen=True)
class Map:
    """A Go ``map[string]*T``: keys are case-sensitive; each element is decoded afresh."""

    element: Kind

    def decode(self, value: Any, current: Any) -> Any:
        if value is None:
            return None
        if not isinstance(value, Pairs):
            raise Mismatch("want an object")
        # Go keeps the entries of a map that is already there (a repeated key).
        out: dict[str, Any] = dict(current) if current is not None else {}
        for key, item in value:
            out[clean_text(key)] = self.element.decode(item, None)
        return out


#: How one field decodes: ``kind.decode(value, current)`` returns the field's new value.
Kind = Str | Int64 | Bool | Struct | Map
