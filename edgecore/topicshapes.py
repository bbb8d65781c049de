"""Which topic shape each device's mapper speaks: the namespaced id, or the bare id.

KubeEdge up to 1.16 wrote a device's bare name into its mapper's config, so every mapper
deployed on those versions publishes ``$hw/events/device/<name>/…``; 1.17 on, and
Edgeward's mapper SDK, publish ``$hw/events/device/<namespace>/<name>/…``. edgecore
serves both (docs/KUBEEDGE-MQTT.md, "Bare device ids"):

- A bare id names the device of that name in one namespace, ``mqtt.bare_id_namespace``
  (``default``; empty turns bare ids off). A name bound to this node in that namespace
  and in another is a conflict: the bare id keeps meaning the configured namespace's
  device, and each bare message for it is logged (at most once a minute) until one of
  them is renamed or moved.
- Replies go to the shape the request came in.
- What the edge sends unasked (deltas, and ids in membership lists) goes to the shape the
  device's mapper last spoke: learned from its messages, per device, in memory. Until its
  mapper has spoken since edgecore started, a device of the bare namespace gets its deltas
  in both shapes (a mapper that only listens still hears them) and is listed by its
  namespaced id.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from devicetwin import Publish
from devicetwin.topics import DEVICE_PREFIX, NODE_PREFIX, device_of, from_bare, to_bare
from edgecore.drops import Drops

log = logging.getLogger(__name__)

#: The membership payloads' lists of devices, each entry with an ``id``.
_MEMBER_LISTS = ("devices", "added_devices", "removed_devices")


class TopicShapes:
    """Told of the devices bound to this node (:meth:`bound`, :meth:`forget`)."""

    def __init__(self, namespace: str, conflicts: Drops | None = None) -> None:
        self.namespace = namespace
        self._conflicts = conflicts or Drops(log)
        #: device id → whether its mapper last spoke bare ids (devices bound here only).
        self.bare: dict[str, bool] = {}
        #: name → the ids of the devices of that name bound here (one, but for conflicts).
        self._by_name: dict[str, set[str]] = {}

    def bound(self, device_id: str) -> None:
        """A device is bound to this node (again: harmless)."""
        self._by_name.setdefault(device_id.split("/", 1)[-1], set()).add(device_id)

    def forget(self, device_id: str) -> None:
        """A device is no longer bound here."""
        self.bare.pop(device_id, None)
        name = device_id.split("/", 1)[-1]
        ids = self._by_name.get(name)
        if ids is not None:
            ids.discard(device_id)
            if not ids:
                del self._by_name[name]

    def _known(self, device_id: str) -> bool:
        return device_id in self._by_name.get(device_id.split("/", 1)[-1], ())

    def incoming(self, topic: str) -> tuple[str, str | None]:
        """The topic to handle a mapper's message as, and the device id when it came with a
        bare id (its replies go back bare)."""
        found = from_bare(topic, self.namespace) if self.namespace else None
        if found is None:
            spoken = device_of(topic)
            device_id = spoken[0] if spoken is not None else None
            # learned once: a known namespaced speaker costs a dict read per message
            if device_id and self.bare.get(device_id) is not False and self._known(device_id):
                self.bare[device_id] = False
            return topic, None
        namespaced, device_id = found
        if self._known(device_id):
            self.bare[device_id] = True
            self._check_conflict(device_id)
        return namespaced, device_id

    def replies(self, publish: tuple[Publish, ...], bare_id: str | None) -> tuple[Publish, ...]:
        """The replies to a request, in its shape (``publish`` itself when that is so already:
        the common case, which allocates nothing)."""
        if bare_id is None and not any(p.topic.startswith(NODE_PREFIX) for p in publish):
            return publish
        prefix = f"{DEVICE_PREFIX}{bare_id}/"
        out = []
        for p in publish:
            if p.topic.startswith(NODE_PREFIX):
                out.append(self._members(p))  # a membership list
            elif bare_id is not None and p.topic.startswith(prefix):
                out.append(Publish(to_bare(bare_id, p.topic[len(prefix) :]), p.payload))
            else:
                out.append(p)
        return tuple(out)

    def outgoing(self, publish: Iterable[Publish]) -> list[Publish]:
        """What the edge sends unasked, in the shape each device's mapper speaks."""
        out: list[Publish] = []
        for p in publish:
            if p.topic.startswith(NODE_PREFIX):
                out.append(self._members(p))
                continue
            found = device_of(p.topic)
            speaks = None if found is None else self.bare.get(found[0])
            if found is None or speaks is False:
                out.append(p)
            elif speaks:
                out.append(Publish(to_bare(*found), p.payload))
            elif found[0].split("/", 1)[0] == self.namespace:  # not heard yet: both shapes
                out.extend((p, Publish(to_bare(*found), p.payload)))
            else:
                out.append(p)
        return out

    def _members(self, p: Publish) -> Publish:
        """A membership list with the ids of bare-speaking devices bare."""
        if not any(self.bare.values()):
            return p
        payload = dict(p.payload)
        for key in _MEMBER_LISTS:
            entries = payload.get(key)
            if isinstance(entries, list):
                payload[key] = [self._member(e) for e in entries]
        return Publish(p.topic, payload)

    def _member(self, entry: object) -> object:
        if isinstance(entry, dict) and self.bare.get(str(entry.get("id"))):
            return {**entry, "id": str(entry["id"]).split("/", 1)[-1]}
        return entry

    def _check_conflict(self, device_id: str) -> None:
        name = device_id.split("/", 1)[1]
        others = sorted(self._by_name.get(name, set()) - {device_id})
        if others:
            self._conflicts.add(
                f"bare id {name}",
                f"MQTT: the bare device id {name!r} means {device_id} (mqtt.bare_id_namespace), "
                f"but {', '.join(others)} is bound to this node too: its mapper must use the "
                "namespaced id; rename or move one of them to end the conflict",
            )
