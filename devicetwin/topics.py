"""The ``$hw/events/...`` topics: which ones the edge listens to, and the ones it answers on.

A device id in a topic is ``<namespace>/<name>`` (two levels). ``match()``
turns a topic into a :class:`Route` or None (not ours: ignore it); the
``*_topic()`` helpers build the topics replies are published on.

Mappers configured by KubeEdge up to 1.16 name a device by its name alone (a bare id,
one level: ``$hw/events/device/<name>/twin/update``). :func:`from_bare` turns such a
topic into the namespaced one for a given namespace and :func:`to_bare` turns a
namespaced device topic back; which shape a device's mapper speaks is the edge's to
know (edgecore/topicshapes.py).
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


#: The same device topics with a bare id (KubeEdge's mappers up to 1.16).
BARE_SUBSCRIPTIONS: tuple[str, ...] = (
    "$hw/events/device/+/twin/update",
    "$hw/events/device/+/twin/get",
    "$hw/events/device/+/state/update",
    "$hw/events/device/+/twin/cloud_updated",
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


def from_bare(topic: str, namespace: str) -> tuple[str, str] | None:
    """A device topic with a bare id → (the topic with ``namespace/`` put before the id, the
    device id); None when ``topic`` is not one a bare subscription covers."""
    levels = topic.split("/")
    if len(levels) != 6 or not topic.startswith(DEVICE_PREFIX) or not levels[3]:
        return None
    if (levels[4], levels[5]) not in _DEVICE_ACTIONS:
        return None
    device_id = f"{namespace}/{levels[3]}"
    return device_topic(device_id, f"{levels[4]}/{levels[5]}"), device_id


def device_of(topic: str) -> tuple[str, str] | None:
    """(device id, what follows it) of a device topic with a namespaced id, as the edge builds
    them; None for another topic (a node's, the empty-id one)."""
    if not topic.startswith(DEVICE_PREFIX):
        return None
    parts = topic[len(DEVICE_PREFIX) :].split("/", 2)
    if len(parts) < 3 or not parts[0] or not parts[1]:
        return None
    return f"{parts[0]}/{parts[1]}", parts[2]


def to_bare(device_id: str, suffix: str) -> str:
    """``$hw/events/device/<name>/<suffix>``: a device topic with the id's name alone."""
    return f"{DEVICE_PREFIX}{device_id.split('/', 1)[-1]}/{suffix}"
