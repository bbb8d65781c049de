"""The ``$hw/events/...`` topics: which ones the edge listens to, and the ones it answers on.

A device id in a topic is ``<namespace>/<name>`` (two levels). ``match()``
turns a topic into a :class:`Route` or None (not ours: ignore it); the
``*_topic()`` helpers build the topics replies are published on.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

DEVICE_PREFIX = "$hw/events/device/"
NODE_PREFIX = "$hw/events/node/"
UPLOAD_PREFIX = "$hw/events/upload"
UPLOAD_RECORDS = "SYS/dis/upload_records"

#: Where errors go for update bodies that cannot be parsed or validated (an empty device id).
EMPTY_ID_UPDATE_RESULT = "$hw/events/device//twin/update/result"


class Action(Enum):
    """What a message on a subscribed topic asks for."""

    TWIN_UPDATE = ("twin", "update")
    TWIN_GET = ("twin", "get")
    STATE_UPDATE = ("state", "update")
    CLOUD_UPDATED = ("twin", "cloud_updated")
    MEMBERSHIP_GET = ("membership", "get")
    UPLOAD = ("upload",)


_DEVICE_ACTIONS = {
    a.value: a
    for a in (Action.TWIN_UPDATE, Action.TWIN_GET, Action.STATE_UPDATE, Action.CLOUD_UPDATED)
}

#: The topic filters the edge subscribes to (QoS 1).
SUBSCRIPTIONS: tuple[str, ...] = (
    "$hw/events/device/+/+/twin/update",
    "$hw/events/device/+/+/twin/get",
    "$hw/events/device/+/+/state/update",
    "$hw/events/device/+/+/twin/cloud_updated",
    "$hw/events/node/+/membership/get",
    "$hw/events/upload/#",
    UPLOAD_RECORDS,
)


@dataclass(frozen=True)
class Route:
    """A message's action and, for device topics, the device id (``namespace/name``)."""

    action: Action
    device_id: str = ""


def match(topic: str) -> Route | None:
    """The route of a message received on ``topic``, or None when no subscription covers it."""
    if topic in (UPLOAD_RECORDS, UPLOAD_PREFIX) or topic.startswith(UPLOAD_PREFIX + "/"):
        return Route(Action.UPLOAD)
    levels = topic.split("/")
    if len(levels) == 7 and topic.startswith(DEVICE_PREFIX):
        action = _DEVICE_ACTIONS.get((levels[5], levels[6]))
        if action is not None:
            return Route(action, f"{levels[3]}/{levels[4]}")
    if len(levels) == 6 and topic.startswith(NODE_PREFIX) and levels[4:] == ["membership", "get"]:
        return Route(Action.MEMBERSHIP_GET)
    return None


def device_topic(device_id: str, suffix: str) -> str:
    """``$hw/events/device/<id>/<suffix>``, e.g. suffix ``twin/get/result``."""
    return f"{DEVICE_PREFIX}{device_id}/{suffix}"


def node_topic(node: str, suffix: str) -> str:
    """``$hw/events/node/<node>/<suffix>``."""
    return f"{NODE_PREFIX}{node}/{suffix}"
