"""The twin state of one device, as the edge stores it: immutable values with a dict codec.

``DeviceTwin.to_dict()`` is JSON-able and ``DeviceTwin.from_dict()`` reads it
back equal, so the edge daemon can keep one JSON column per device.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from devicetwin.values import TWIN_TYPES


@dataclass(frozen=True, slots=True)
class Version:
    """A field's version vector: writes made by the cloud and by the edge, each counted."""

    cloud: int = 0
    edge: int = 0

    def to_dict(self) -> dict[str, int]:
        return {"cloud": self.cloud, "edge": self.edge}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Version:
        return cls(cloud=int(d["cloud"]), edge=int(d["edge"]))

    def bump_edge(self) -> Version:
        return Version(self.cloud, self.edge + 1)

    def bump_cloud(self) -> Version:
        return Version(self.cloud + 1, self.edge)


@dataclass(frozen=True, slots=True)
class TwinValue:
    """A value and when the edge stored it (ms since the epoch, edge clock)."""

    value: str
    timestamp: int

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "timestamp": self.timestamp}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TwinValue:
        return cls(value=str(d["value"]), timestamp=int(d["timestamp"]))


def _value_or_none(d: Mapping[str, Any] | None) -> TwinValue | None:
    return None if d is None else TwinValue.from_dict(d)


@dataclass(frozen=True, slots=True)
class Twin:
    """One property of a device: the expected (desired) and actual (reported) values.

    ``cloud_desired`` is the identity ``(value, stamp)`` of the last desired
    value the hub wrote, so that a Device re-sent unchanged is not a new write.
    A soft-deleted twin keeps its type and versions but no values.
    """

    type: str
    optional: bool = True
    expected: TwinValue | None = None
    actual: TwinValue | None = None
    expected_version: Version = Version()
    actual_version: Version = Version()
    deleted: bool = False
    cloud_desired: tuple[str, str | None] | None = None

    def __post_init__(self) -> None:
        if self.type not in TWIN_TYPES:
            raise ValueError(f"twin type must be one of {', '.join(TWIN_TYPES)}, not {self.type!r}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "optional": self.optional,
            "expected": None if self.expected is None else self.expected.to_dict(),
            "actual": None if self.actual is None else self.actual.to_dict(),
            "expected_version": self.expected_version.to_dict(),
            "actual_version": self.actual_version.to_dict(),
            "deleted": self.deleted,
            "cloud_desired": None if self.cloud_desired is None else list(self.cloud_desired),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Twin:
        desired = d["cloud_desired"]
        return cls(
            type=d["type"],
            optional=bool(d["optional"]),
            expected=_value_or_none(d["expected"]),
            actual=_value_or_none(d["actual"]),
            expected_version=Version.from_dict(d["expected_version"]),
            actual_version=Version.from_dict(d["actual_version"]),
            deleted=bool(d["deleted"]),
            cloud_desired=None if desired is None else (desired[0], desired[1]),
        )


@dataclass(frozen=True, slots=True)
class DeviceTwin:
    """A device bound to this node: its identity, its state as the mapper sent it, its twins."""

    id: str
    name: str
    namespace: str
    description: str = ""
    state: str | None = None
    last_online: str | None = None
    twins: Mapping[str, Twin] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Callers may pass a plain dict; keep a private read-only copy.
        object.__setattr__(self, "twins", MappingProxyType(dict(self.twins)))

    def with_twins(self, twins: Mapping[str, Twin]) -> DeviceTwin:
        return replace(self, twins=twins)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "namespace": self.namespace,
            "description": self.description,
            "state": self.state,
            "last_online": self.last_online,
            "twins": {key: twin.to_dict() for key, twin in self.twins.items()},
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DeviceTwin:
        return cls(
            id=d["id"],
            name=d["name"],
            namespace=d["namespace"],
            description=d["description"],
            state=d["state"],
            last_online=d["last_online"],
            twins={key: Twin.from_dict(t) for key, t in d["twins"].items()},
        )
