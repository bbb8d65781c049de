"""Rebalancing: when replicas join or return, nodes spread over them gradually.

An edge reconnects to whichever replica its load balancer picks (HAProxy's
``leastconn``: the one with fewest connections) or, without one, to its next endpoint.
Nothing moves a connected node by itself, so a replica that returns after a failover
would stay idle while the others carry its nodes. Each replica therefore compares,
every ``interval`` seconds (jittered), the sessions it serves with its fair share of the
live replicas' total (``hub_replicas``, refreshed every few seconds) and, when it serves
more than its share plus a little slack, asks some of its nodes to move: their sessions
close with 4003, and the edges reconnect at once (edgeward.session.retry).

Never a storm: a round moves at most ``STEP`` of the replica's nodes (at least one), the
rounds are jittered so replicas do not act together, a round waits for every replica's
row to have been refreshed since the last move, and a node that arrived less than a
round ago is never asked to move again.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections.abc import Callable, Sequence

from cloudhub.replicas import REFRESH, ReplicaBook

log = logging.getLogger(__name__)

#: The largest part of its nodes a replica asks to move in one round.
STEP = 0.05
#: Sessions over the fair share a replica keeps without moving any, as a part of the share:
#: a fleet that is never exactly divisible must not shuffle forever.
SLACK = 0.05


def to_move(mine: int, live: dict[str, int], replica: str) -> int:
    """How many of its ``mine`` sessions ``replica`` asks to move this round, given each
    live replica's sessions as last written (this one's replaced by ``mine``)."""
    counts = {**live, replica: mine}
    share = math.ceil(sum(counts.values()) / len(counts))
    if mine <= share + math.floor(share * SLACK):
        return 0
    return min(mine - share, max(1, math.ceil(mine * STEP)))


class Rebalancer:
    """Asks nodes to move while this replica serves more than its share."""

    def __init__(
        self,
        replicas: ReplicaBook,
        sessions: Callable[[], Sequence[tuple[str, float]]],
        move: Callable[[str], None],
        interval: float,
        clock: Callable[[], float],
    ) -> None:
        """``sessions()``: this replica's (node, connected since) pairs; ``move(node)``
        closes that node's session with 4003."""
        self.replicas = replicas
        self.sessions = sessions
        self.move = move
        self.interval = interval
        self.clock = clock
        self.moved = 0

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval * random.uniform(0.5, 1.5))
            try:
                await self.round()
            except Exception:
                log.exception("rebalancing: a round failed; trying again later")

    async def round(self) -> int:
        """One round: ask as many nodes as :func:`to_move` says to move; returns how many."""
        live = await asyncio.to_thread(self.replicas.live)
        if len(live) < 2:
            return 0
        sessions = list(self.sessions())
        count = to_move(len(sessions), live, self.replicas.replica)
        settled = self.clock() - self.interval
        movable = [node for node, since in sessions if since <= settled]
        chosen = random.sample(movable, min(count, len(movable)))
        if not chosen:
            return 0
        share = math.ceil((sum(live.values()) - live.get(self.replicas.replica, 0)
                           + len(sessions)) / len(live))  # fmt: skip
        log.info(
            "rebalancing: serving %d nodes, %d more than a fair share over %d replicas; "
            "asking %d to move",
            len(sessions),
            len(sessions) - share,
            len(live),
            len(chosen),
        )
        for node in chosen:
            self.move(node)
        self.moved += len(chosen)
        # the rows must show where they went before the next round judges again
        await asyncio.sleep(2 * REFRESH)
        return len(chosen)
