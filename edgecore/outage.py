"""The node's time alone: from the moment its link to the hub was lost (or, after a power
cut, from the last moment it was known live) until the hub welcomes it again.

While an outage is open the edge counts what it did alone — reports buffered and
coalesced, events expired or dropped by the outbox's bounds, twin messages answered to
mappers from its cache — and how many times edgecore started in between. When the link
is back the outage is closed and, if it lasted at least ``min_seconds`` (the edge's
``hub.outage_min_seconds``, :data:`MIN_SECONDS` by default), queued as one
``node/outage`` report row keyed by its start (a state row: the outbox quota never drops
it). The hub keeps the last few on the Node (``status.outages``).

The open outage lives in edge.db's meta table (``outage``, JSON), written in the same
transaction as what it counts: a kill -9 loses neither the outage nor a count. That costs
one more row write per report, only while the node is alone.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from edgeward.protocol import TOPIC_NODE_OUTAGE

log = logging.getLogger(__name__)

#: Shorter outages (a reconnect, a hub restart) are not reported, unless set otherwise.
MIN_SECONDS = 10.0
TOPIC = TOPIC_NODE_OUTAGE
COUNTERS = ("buffered", "coalesced", "expired", "dropped", "servedLocally")


class OutageLog:
    """The open outage, if any; ``meta_get``/``meta_set`` read and write edge.db's meta."""

    def __init__(
        self,
        meta_get: Callable[[str], str | None],
        meta_set: Callable[[str, str], None],
        clock: Callable[[], float],
    ) -> None:
        self._get = meta_get
        self._set = meta_set
        self._clock = clock
        #: Outages shorter than this many seconds are not reported.
        self.min_seconds = MIN_SECONDS
        self.open: dict[str, Any] | None = None
        raw = meta_get("outage")
        if raw:
            try:
                loaded = json.loads(raw)
            except ValueError:
                loaded = None
            if isinstance(loaded, dict) and isinstance(loaded.get("start"), int | float):
                self.open = loaded

    def count(self, counter: str, n: int = 1) -> None:
        """Count what the edge did alone (nothing while the link is up), in the caller's
        transaction: the count is on disk exactly when what it counts is."""
        if self.open is not None and n:
            self.open[counter] = self.open.get(counter, 0) + n
            self.save()

    def started(self) -> None:
        """edgecore started: an open outage goes on (one more restart); otherwise one opens
        at the last moment the node was known live, or now."""
        if self.open is not None:
            self.open["restarts"] = self.open.get("restarts", 0) + 1
        else:
            last_live = self._get("last_live")
            start = float(last_live) if last_live else self._clock()
            self.open = {"start": start, "restarts": 0 if not last_live else 1}
        self.save()

    def lost(self) -> None:
        """The link was lost: an outage opens now (unless one is open)."""
        if self.open is None:
            self.open = {"start": self._clock(), "restarts": 0}
            self.save()

    def live(self) -> None:
        """The node is live: remember when, for an outage a power cut would start."""
        self._set("last_live", repr(self._clock()))

    def close(self) -> dict[str, Any] | None:
        """The hub welcomed the node: the outage ends; its report body when worth one."""
        self.live()
        if self.open is None:
            return None
        outage, self.open = self.open, None
        self._set("outage", "")
        end = self._clock()
        duration = end - float(outage["start"])
        if duration < self.min_seconds:
            return None
        report = {
            "start": float(outage["start"]),
            "end": end,
            "restarts": int(outage.get("restarts", 0)),
            **{counter: int(outage.get(counter, 0)) for counter in COUNTERS},
        }
        log.info(
            "back online after %.0f s alone: %d restarts, %d reports buffered "
            "(%d coalesced), %d expired, %d dropped, %d twin messages served locally",
            duration,
            report["restarts"],
            report["buffered"],
            report["coalesced"],
            report["expired"],
            report["dropped"],
            report["servedLocally"],
        )
        return report

    def save(self) -> None:
        """Write the open outage (its counters) to meta, in the caller's transaction."""
        if self.open is not None:
            self._set("outage", json.dumps(self.open))
