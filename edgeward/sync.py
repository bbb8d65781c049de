"""The sync bookkeeping, pure: what a node is owed and how it is batched.

The hub keeps a change log: one row per write, with the node the object is
routed to after the write (``route``) and before it (``prev_route``). A
node is owed, for every object a row touched since its revision, the
object's latest state: a put when the object still routes to it, a delete
when it was deleted or re-bound elsewhere. Both the hub's edge endpoint and
its tests drive these functions; none of them does I/O.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from edgeward.kinds import ALL_NODES
from edgeward.protocol import Change, Changes, Snapshot


@dataclass(frozen=True)
class ChangeRow:
    """One row of the hub's change log. ``body`` is the object after the write
    (for a delete, its last state)."""

    revision: int
    kind: str
    namespace: str
    name: str
    op: Literal["create", "update", "delete"]
    route: str | None
    prev_route: str | None
    body: dict[str, Any]
    #: Bytes of the body's stored JSON, for buffers bounded by size (0: not measured).
    size: int = 0

    @property
    def key(self) -> tuple[str, str, str]:
        return self.kind, self.namespace, self.name

    def touches(self, node: str) -> bool:
        return node in (self.route, self.prev_route) or self.route == ALL_NODES

    def change_for(self, node: str) -> Change:
        """What this row means to ``node``, given that it touches it."""
        if self.op != "delete" and self.route in (node, ALL_NODES):
            return Change("put", self.kind, self.namespace, self.name, self.revision, self.body)
        return Change("delete", self.kind, self.namespace, self.name, self.revision)


def resume_mode(edge_revision: int, compacted: int, head: int) -> Literal["changes", "snapshot"]:
    """Changes when the log still holds every row after ``edge_revision``, else a snapshot.

    An edge ahead of the hub (the hub's database was restored from an older
    backup) also gets a snapshot: the hub's state is the truth it resyncs to.
    """
    if edge_revision < compacted or edge_revision > head:
        return "snapshot"
    return "changes"


class NodeBacklog:
    """Accumulates change rows for one node, keeping only the latest per object."""

    def __init__(self, node: str) -> None:
        self.node = node
        self._latest: dict[tuple[str, str, str], Change] = {}

    def add(self, rows: Iterable[ChangeRow]) -> None:
        for row in rows:
            if row.touches(self.node):
                # re-insert so dict order follows the latest revision
                self._latest.pop(row.key, None)
                self._latest[row.key] = row.change_for(self.node)

    def __len__(self) -> int:
        return len(self._latest)

    def take(self) -> list[Change]:
        """The owed changes in revision order; empties the backlog."""
        changes = sorted(self._latest.values(), key=lambda c: c.resource_version)
        self._latest.clear()
        return changes


#: Most objects in one changes or snapshot frame, and about the most bytes of them.
#: The edge applies a changes frame in one transaction, holding the frame, its decoded
#: objects and the twin replies and reports they produce at once; that peak stays in
#: its RSS afterwards (Python's allocator keeps the arenas it fills). 100 objects /
#: 64 KiB took edgecore from 51.5 to 42 MB after a first sync of 1,000 devices of 10
#: properties (500 / 256 KiB before); smaller frames saved nothing more. The cost is
#: a few more frames, each one edge commit and ack, during a catch-up.
FRAME_MAX_ITEMS = 100
FRAME_MAX_BYTES = 64 * 1024


def _sized_groups(items: list[Change], max_items: int, max_bytes: int) -> Iterator[list[Change]]:
    group: list[Change] = []
    size = 0
    for change in items:
        cost = len(json.dumps(change.object, separators=(",", ":"))) if change.object else 64
        if group and (len(group) >= max_items or size + cost > max_bytes):
            yield group
            group, size = [], 0
        group.append(change)
        size += cost
    if group:
        yield group


def change_batches(
    changes: list[Change],
    through: int,
    max_items: int = FRAME_MAX_ITEMS,
    max_bytes: int = FRAME_MAX_BYTES,
) -> list[Changes]:
    """Split owed changes (in revision order) into frames.

    Every frame but the last records the revision of its newest change; the
    last records ``through``, the revision the backlog was read up to. An edge
    that stops after any frame resumes from its recorded revision and is owed
    exactly the objects whose latest change comes later.
    """
    groups = list(_sized_groups(changes, max_items, max_bytes))
    if not groups:
        return [Changes(revision=through, items=())]
    frames = [Changes(revision=g[-1].resource_version, items=tuple(g)) for g in groups[:-1]]
    frames.append(Changes(revision=through, items=tuple(groups[-1])))
    return frames


def snapshot_frames(
    objects: list[dict[str, Any]],
    revision: int,
    max_items: int = FRAME_MAX_ITEMS,
    max_bytes: int = FRAME_MAX_BYTES,
    final: bool = True,
) -> list[Snapshot]:
    """Objects of a node's desired state as snapshot frames; with ``final`` (the last part
    of the snapshot), the last frame is marked final."""
    puts = [
        Change(
            "put",
            o["kind"],
            o["metadata"].get("namespace", ""),
            o["metadata"]["name"],
            int(o["metadata"]["resourceVersion"]),
            o,
        )
        for o in objects
    ]
    groups = list(_sized_groups(puts, max_items, max_bytes)) or [[]]
    last = len(groups) - 1
    return [
        Snapshot(revision=revision, items=tuple(g), final=final and i == last)
        for i, g in enumerate(groups)
    ]


@dataclass
class OutboxCursor:
    """The edge's view of its outbox on one connection.

    ``sent`` is the highest seq handed to the link, ``acked`` the highest the
    hub confirmed. At most ``window`` report frames are unacknowledged at
    once, so a slow hub slows the edge instead of growing its memory.
    """

    acked: int
    window: int = 4
    sent: int = 0
    _in_flight: list[int] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self.sent = max(self.sent, self.acked)

    @property
    def can_send(self) -> bool:
        return len(self._in_flight) < self.window

    def sending(self, last_seq: int) -> None:
        """A report frame ending at ``last_seq`` goes out."""
        if not self.can_send:
            raise ValueError(f"the window of {self.window} unacknowledged frames is full")
        if last_seq <= self.sent:
            raise ValueError(f"seq {last_seq} was already sent (sent up to {self.sent})")
        self.sent = last_seq
        self._in_flight.append(last_seq)

    def acknowledged(self, seq: int) -> bool:
        """The hub persisted every row up to ``seq``; False when it says nothing new."""
        if seq <= self.acked:
            return False
        if seq > self.sent:
            raise ValueError(f"ack for seq {seq} beyond what was sent ({self.sent})")
        self.acked = seq
        self._in_flight = [s for s in self._in_flight if s > seq]
        return True


def cache_digest(objects: Iterable[tuple[str, str, str, dict[str, Any]]]) -> str:
    """The digest of what a node's cache holds: per object, in (kind, namespace, name)
    order, its key and a SHA-256 of its body as the edge acts on it — without ``status``
    (the hub does not echo to the edge a status it reported) and without
    ``metadata.resourceVersion`` (which such a status write moves). The edge computes it
    over its cache, the hub over the objects it routes to the node.

    ``objects`` may come in any order and is read one at a time: only each object's line
    is kept for sorting, never the bodies (all of them decoded at once were the largest
    peak of an edge's memory)."""
    lines = []
    for kind, namespace, name, body in objects:
        kept = {k: v for k, v in body.items() if k != "status"}
        meta = kept.get("metadata")
        if isinstance(meta, dict):
            kept["metadata"] = {k: v for k, v in meta.items() if k != "resourceVersion"}
        text = json.dumps(kept, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        body_hash = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
        lines.append(((kind, namespace, name), f"{kind}/{namespace}/{name}@{body_hash}\n"))
    lines.sort(key=lambda line: line[0])
    digest = hashlib.sha256()
    for _, line in lines:
        digest.update(line.encode())
    return digest.hexdigest()
