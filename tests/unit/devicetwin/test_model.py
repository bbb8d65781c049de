"""The stored twin state: immutable, valid by construction, and round-tripping through JSON."""

from __future__ import annotations

import json

import pytest

from devicetwin import DeviceTwin, Twin, TwinValue, Version


def sample() -> DeviceTwin:
    return DeviceTwin(
        id="default/thermo",
        name="thermo",
        namespace="default",
        description="hall",
        state="online",
        last_online="2024-05-01T12:00:00Z",
        twins={
            "temp": Twin(
                type="int",
                optional=False,
                expected=TwinValue("21", 5),
                actual=TwinValue("20", 6),
                expected_version=Version(2, 1),
                actual_version=Version(0, 3),
                cloud_desired=("21", None),
            ),
            "gone": Twin(type="string", deleted=True, cloud_desired=("x", "17")),
        },
    )


def test_round_trip_through_json() -> None:
    """to_dict is JSON-able and from_dict reads it back equal."""
    device = sample()
    assert DeviceTwin.from_dict(json.loads(json.dumps(device.to_dict()))) == device


def test_twins_are_read_only() -> None:
    """A DeviceTwin's twins cannot be changed in place, even through the dict it was built from."""
    twins = {"a": Twin(type="string")}
    device = DeviceTwin(id="d/a", name="a", namespace="d", twins=twins)
    twins["b"] = Twin(type="int")
    assert set(device.twins) == {"a"}
    with pytest.raises(TypeError):
        device.twins["c"] = Twin(type="int")  # type: ignore[index]


def test_twin_type_must_be_normalized() -> None:
    """A Twin's type is one of string, int, float, boolean."""
    with pytest.raises(ValueError, match="twin type"):
        Twin(type="integer")


def test_defaults() -> None:
    """A new Twin is optional, empty and at version zero; a DeviceTwin starts with no twins."""
    assert Twin(type="string") == Twin(
        type="string",
        optional=True,
        expected=None,
        actual=None,
        expected_version=Version(0, 0),
        actual_version=Version(0, 0),
        deleted=False,
        cloud_desired=None,
    )
    assert DeviceTwin(id="d/a", name="a", namespace="d").twins == {}
