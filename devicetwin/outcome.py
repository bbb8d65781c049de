"""What the engine is given (a Context) and what it hands back (an Outcome).

The edge daemon persists ``updated``/``removed`` and the ``reports`` rows in
one transaction, then publishes ``publish`` in order (QoS 1, no retain).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from devicetwin.errors import TwinError
from devicetwin.model import DeviceTwin

#: HubReport topics.
TWIN_REPORTED = "twin/reported"
DEVICE_STATE = "device/state"
UPLOAD = "upload"


@dataclass(frozen=True)
class Context:
    """The world as the engine may see it: this node's name, the edge clock, an id source."""

    node: str
    now_ms: int
    new_id: Callable[[], str]


@dataclass(frozen=True)
class Publish:
    """A JSON-able MQTT message the edge publishes (QoS 1, no retain)."""

    topic: str
    payload: dict[str, Any]


@dataclass(frozen=True)
class HubReport:
    """An outbox row for the hub; rows with the same ``key`` coalesce (latest wins)."""

    topic: str
    key: str | None
    body: dict[str, Any]


@dataclass(frozen=True)
class Outcome:
    """The result of one message or cloud change; all empty when nothing is to be done."""

    updated: tuple[DeviceTwin, ...] = ()
    removed: tuple[str, ...] = ()
    publish: tuple[Publish, ...] = ()
    reports: tuple[HubReport, ...] = ()
    error: TwinError | None = None
