"""Twin keys, values and types: what KubeEdge's edgecore accepts, decided the way it decides.

Numbers are checked as Go's ``strconv`` parses them (KubeEdge's edgecore is
written in Go), not as Python does: ``1e5`` and ``0x1p-2`` are floats,
``1_0`` is an int only for Python, ``1e400`` is out of range.
"""

from __future__ import annotations

import math
import re

from devicetwin import errors

# The alphabets of KubeEdge's MQTT protocol (KUBEEDGE-MQTT.md); the same as edgeward.kinds,
# copied because devicetwin imports nothing of ours.
TWIN_KEY = re.compile(r"^[a-zA-Z0-9\-_.,:/@#]{1,128}\Z")
TWIN_VALUE = re.compile(r"^[a-zA-Z0-9\-_.,:/@#]{1,512}\Z")

#: The normalized twin types a Twin may have.
TWIN_TYPES = ("string", "int", "float", "boolean")

#: Type names a mapper may send in ``metadata.type``, and the twin type each means.
_TYPE_NAMES = {
    "": "string",
    "string": "string",
    "int": "int",
    "integer": "int",
    "float": "float",
    "boolean": "boolean",
}

#: DeviceModel property types (v1beta1) and the twin type each gets.
_MODEL_TYPES = {"INT": "int", "FLOAT": "float", "DOUBLE": "float", "BOOLEAN": "boolean"}

_INT64 = re.compile(r"[+-]?[0-9]+\Z")
# Go's float literal syntax (strconv.ParseFloat): underscores only between digits,
# hexadecimal mantissas need a p exponent. Infinity and NaN are spelled out below.
_DEC = r"[0-9](?:_?[0-9])*"
_HEX = r"[0-9a-fA-F](?:_?[0-9a-fA-F])*"
_DECIMAL_FLOAT = re.compile(rf"[+-]?(?:{_DEC}(?:\.(?:{_DEC})?)?|\.{_DEC})(?:[eE][+-]?{_DEC})?\Z")
_HEX_FLOAT = re.compile(rf"[+-]?0[xX](?:_?{_HEX}(?:\.(?:{_HEX})?)?|\.{_HEX})[pP][+-]?{_DEC}\Z")
_SPECIAL_FLOAT = re.compile(r"(?i:[+-]?inf(?:inity)?|nan)\Z")


def normalize_type(name: str) -> str | None:
    """The twin type a ``metadata.type`` name means, or None when it is not one we accept."""
    return _TYPE_NAMES.get(name)


def twin_type_of(model_type: str | None) -> str:
    """The twin type of a DeviceModel property type (INT, FLOAT, DOUBLE, BOOLEAN, else string)."""
    if model_type is None:
        return "string"
    return _MODEL_TYPES.get(model_type.upper(), "string")


def _is_int64(value: str) -> bool:
    return _INT64.match(value) is not None and -(2**63) <= int(value) < 2**63


def _is_go_float(value: str) -> bool:
    if _SPECIAL_FLOAT.match(value):
        return True
    if _DECIMAL_FLOAT.match(value):
        return math.isfinite(float(value))  # Go refuses what overflows to ±Inf
    if _HEX_FLOAT.match(value):
        try:
            float.fromhex(value.replace("_", ""))
        except OverflowError:
            return False
        return True
    return False


def check_value(twin_type: str, value: str) -> str | None:
    """None when ``value`` fits ``twin_type`` (a type name as a mapper sends it), else the reason.

    The reasons are KubeEdge's: ``the value is not int or integer``, ``the value
    is not float``, ``the bool value must be true or false``, ``the value type
    is not allowed``.
    """
    kind = normalize_type(twin_type)
    if kind is None:
        return errors.TYPE_NOT_ALLOWED
    if kind == "int" and not _is_int64(value):
        return errors.NOT_INT
    if kind == "float" and not _is_go_float(value):
        return errors.NOT_FLOAT
    if kind == "boolean" and value not in ("true", "false"):
        return errors.NOT_BOOL
    return None


def key_ok(key: str) -> bool:
    """True when ``key`` is a valid twin key."""
    return TWIN_KEY.match(key) is not None


def value_ok(value: str) -> bool:
    """True when ``value`` may be stored: empty, or within the twin value alphabet."""
    return value == "" or TWIN_VALUE.match(value) is not None


def go_number(twin_type: str, value: str) -> float | None:
    """The number a value of a numeric twin type holds, read as Go reads it; None when the
    type is not numeric or the value does not fit it (check_value says why)."""
    kind = normalize_type(twin_type)
    if kind == "int" and _is_int64(value):
        return float(int(value))
    if kind != "float" or not _is_go_float(value):
        return None
    if _HEX_FLOAT.match(value):
        return float.fromhex(value.replace("_", ""))
    return float(value.replace("_", ""))  # Python spells Inf and NaN as Go does


def range_problem(
    twin_type: str, value: str, minimum: str | None, maximum: str | None
) -> str | None:
    """Why a numeric value lies outside a DeviceModel property's ``minimum``/``maximum``
    (strings, as KubeEdge's model keeps them; one that is not a number bounds nothing), or
    None. NaN is outside every bound."""
    number = go_number(twin_type, value)
    if number is None:
        return None
    low, high = _bound(minimum), _bound(maximum)
    if low is not None and not number >= low:
        return f"{value} is below the minimum {minimum}"
    if high is not None and not number <= high:
        return f"{value} is above the maximum {maximum}"
    return None


def _bound(text: str | None) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        bound = float(text)
    except ValueError:
        return None
    return None if math.isnan(bound) else bound
