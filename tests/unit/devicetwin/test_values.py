"""Value checks and type names, decided as KubeEdge's Go code decides them."""

from __future__ import annotations

import math

import pytest

from devicetwin import check_value, twin_type_of
from devicetwin.values import go_number, range_problem

NOT_INT = "the value is not int or integer"
NOT_FLOAT = "the value is not float"
NOT_BOOL = "the bool value must be true or false"
NOT_ALLOWED = "the value type is not allowed"


@pytest.mark.parametrize(
    ("model_type", "twin_type"),
    [
        ("INT", "int"),
        ("int", "int"),
        ("FLOAT", "float"),
        ("DOUBLE", "float"),
        ("BOOLEAN", "boolean"),
        ("STRING", "string"),
        ("BYTES", "string"),
        ("STREAM", "string"),
        ("OTHER", "string"),
        (None, "string"),
    ],
)
def test_twin_type_of(model_type: str | None, twin_type: str) -> None:
    """DeviceModel types map to twin types; anything unknown is a string."""
    assert twin_type_of(model_type) == twin_type


@pytest.mark.parametrize("value", ["", "x", "1.5", "a b", "{}"])
@pytest.mark.parametrize("kind", ["", "string"])
def test_strings_take_anything(kind: str, value: str) -> None:
    """A string twin (or an empty type) accepts every value."""
    assert check_value(kind, value) is None


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("0", True),
        ("-12", True),
        ("+7", True),
        ("007", True),
        ("9223372036854775807", True),
        ("-9223372036854775808", True),
        ("9223372036854775808", False),
        ("-9223372036854775809", False),
        ("1_000", False),
        ("1.0", False),
        ("1e3", False),
        ("0x10", False),
        ("", False),
        ("-", False),
        ("\u0661", False),  # an Arabic-Indic digit: Go's ParseInt wants ASCII
    ],
)
@pytest.mark.parametrize("kind", ["int", "integer"])
def test_int_is_go_parseint_base_10(kind: str, value: str, ok: bool) -> None:
    """int/integer values are base-10 int64, as strconv.ParseInt(value, 10, 64) reads them."""
    assert check_value(kind, value) == (None if ok else NOT_INT)


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("1", True),
        ("-1.5", True),
        (".5", True),
        ("5.", True),
        ("1e5", True),
        ("1E-5", True),
        ("1_000.5", True),
        ("1.7976931348623157e308", True),
        ("1e-400", True),  # underflows to zero, no error in Go
        ("inf", True),
        ("-Infinity", True),
        ("NaN", True),
        ("0x1p-2", True),
        ("0X1.8P1", True),
        ("0x_1p0", True),
        ("0x.8p1", True),
        ("1e400", False),  # out of range
        ("0x1p99999", False),
        ("-nan", False),
        ("infin", False),
        ("0x1", False),  # a hexadecimal mantissa needs a p exponent
        ("1__0", False),
        ("_1", False),
        ("1_", False),
        ("1e", False),
        (".", False),
        ("", False),
        ("1,5", False),
        ("abc", False),
    ],
)
def test_float_is_go_parsefloat(value: str, ok: bool) -> None:
    """float values are what strconv.ParseFloat(value, 64) reads without error."""
    assert check_value("float", value) == (None if ok else NOT_FLOAT)


@pytest.mark.parametrize(
    ("value", "ok"), [("true", True), ("false", True), ("True", False), ("1", False)]
)
def test_boolean_is_exactly_true_or_false(value: str, ok: bool) -> None:
    """boolean values are exactly true or false."""
    assert check_value("boolean", value) == (None if ok else NOT_BOOL)


@pytest.mark.parametrize("kind", ["double", "bytes", "INT", "Float", "bool", "deleted", "object"])
def test_other_type_names_are_not_allowed(kind: str) -> None:
    """Any other type name is refused with KubeEdge's reason."""
    assert check_value(kind, "1") == NOT_ALLOWED


@pytest.mark.parametrize(
    ("kind", "value", "number"),
    [
        ("int", "-12", -12.0),
        ("int", "1.5", None),
        ("float", "1e3", 1000.0),
        ("float", "1_0.5", 10.5),
        ("float", "0x1p-2", 0.25),
        ("float", "-Inf", float("-inf")),
        ("float", "abc", None),
        ("string", "5", None),
        ("boolean", "true", None),
    ],
)
def test_go_number_reads_numbers_as_go_does(kind: str, value: str, number: float | None) -> None:
    assert go_number(kind, value) == number


def test_go_number_of_nan_is_nan() -> None:
    assert math.isnan(go_number("float", "NaN") or 0.0)


@pytest.mark.parametrize(
    ("kind", "value", "low", "high", "problem"),
    [
        ("int", "21", "5", "30", None),
        ("int", "5", "5", "30", None),
        ("int", "30", "5", "30", None),
        ("int", "4", "5", "30", "4 is below the minimum 5"),
        ("int", "99", "5", "30", "99 is above the maximum 30"),
        ("float", "30.5", None, "30", "30.5 is above the maximum 30"),
        ("float", "-inf", "-10.5", None, "-inf is below the minimum -10.5"),
        ("float", "NaN", "0", None, "NaN is below the minimum 0"),
        ("float", "NaN", None, "1", "NaN is above the maximum 1"),
        ("float", "NaN", None, None, None),
        ("int", "99", "", "not a number", None),
        ("int", "99", "nan", None, None),
        ("int", "x", "5", "30", None),
        ("string", "99", "5", "30", None),
    ],
)
def test_range_problem_names_the_bound_a_value_passes(
    kind: str, value: str, low: str | None, high: str | None, problem: str | None
) -> None:
    assert range_problem(kind, value, low, high) == problem
