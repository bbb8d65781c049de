"""The ``$hw/events/...`` topics a mapper uses: building them and reading them back. Pure.

``D`` below is ``$hw/events/device/<namespace>/<name>`` (see KUBEEDGE-MQTT.md)::

    mapper publishes                      mapper subscribes (QoS 1)
    D/twin/update                         D/twin/update/delta
    D/twin/get                            D/twin/update/result
    D/state/update                        D/twin/get/result
    $hw/events/node/<node>/membership/get $hw/events/device//twin/update/result (errors)
                                          $hw/events/node/<node>/membership/get/result
                                          $hw/events/node/<node>/membership/updated
"""

from __future__ import annotations

import re

DEVICE_PREFIX = "$hw/events/device/"
NODE_PREFIX = "$hw/events/node/"

#: Where edgecore answers update bodies it cannot parse or validate (the empty device id).
UNPARSEABLE_UPDATE_RESULT = "$hw/events/device//twin/update/result"

TWIN_UPDATE = "twin/update"
TWIN_UPDATE_RESULT = "twin/update/result"
TWIN_UPDATE_DELTA = "twin/update/delta"
TWIN_GET = "twin/get"
TWIN_GET_RESULT = "twin/get/result"
STATE_UPDATE = "state/update"

#: What a mapper subscribes to for each device it serves.
DEVICE_SUBSCRIPTIONS = (TWIN_UPDATE_DELTA, TWIN_UPDATE_RESULT, TWIN_GET_RESULT)

# One namespace or name: no MQTT wildcards, separators or control characters. Names
# are DNS labels/subdomains in practice; this only keeps topics well-formed.
_SEGMENT = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,251}[A-Za-z0-9])?")


def check_device_id(device_id: object) -> str:
    """Return ``device_id`` if it is ``"<namespace>/<name>"``, else raise ValueError."""
    if not isinstance(device_id, str):
        raise ValueError(f"a device id is a string, not {type(device_id).__name__}")
    parts = device_id.split("/")
    if len(parts) != 2 or not all(_SEGMENT.fullmatch(p) for p in parts):
        raise ValueError(
            f"bad device id {device_id!r}: expected '<namespace>/<name>', e.g. 'default/thermo'"
        )
    return device_id


def check_node_name(node: object) -> str:
    """Return ``node`` if it can stand in a topic as a node name, else raise ValueError."""
    if not isinstance(node, str) or not _SEGMENT.fullmatch(node):
        raise ValueError(f"bad node name {node!r}: letters, digits, '.', '_' and '-' only")
    return node


def device_topic(device_id: str, suffix: str) -> str:
    """``device_topic("default/t", TWIN_GET)`` → ``$hw/events/device/default/t/twin/get``."""
    return f"{DEVICE_PREFIX}{device_id}/{suffix}"


def parse_device_topic(topic: str) -> tuple[str, str] | None:
    """Split a device topic into (device id, suffix); None if it is not one of ours.

    The empty-id error topic gives ``("", "twin/update/result")``.
    """
    if topic == UNPARSEABLE_UPDATE_RESULT:
        return "", TWIN_UPDATE_RESULT
    if not topic.startswith(DEVICE_PREFIX):
        return None
    parts = topic[len(DEVICE_PREFIX) :].split("/", 2)
    if len(parts) != 3:
        return None
    device_id = f"{parts[0]}/{parts[1]}"
    suffix = parts[2]
    if suffix not in (*DEVICE_SUBSCRIPTIONS, STATE_UPDATE, TWIN_UPDATE, TWIN_GET):
        return None
    try:
        check_device_id(device_id)
    except ValueError:
        return None
    return device_id, suffix


def membership_get(node: str) -> str:
    return f"{NODE_PREFIX}{node}/membership/get"


def membership_get_result(node: str) -> str:
    return f"{NODE_PREFIX}{node}/membership/get/result"


def membership_updated(node: str) -> str:
    return f"{NODE_PREFIX}{node}/membership/updated"
