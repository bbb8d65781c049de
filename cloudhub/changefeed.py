"""The change feed: reads each new change-log row once and hands it to subscribers.

A commit in this process wakes the feed at once (``notify``); on PostgreSQL,
commits by other hub replicas sharing the database wake it through
LISTEN/NOTIFY (cloudhub/pgnotify.py), and the poll every ``poll_interval``
is the fallback for a notification that was missed. Subscribers
are node sessions (rows that touch one node) and API watches (every row).
A subscriber that falls more than ``max_buffered`` rows, or
``max_buffered_bytes`` of their stored JSON, behind is marked
``overflowed`` and drops its buffer: it re-reads what it missed from the
database, so a slow reader costs disk reads, never unbounded memory. The feed
itself reads with the log's compaction bound: if rows were compacted away
before it read them (a burst larger than the log's retention between two
reads), every subscriber is marked overflowed, and each re-reads from its own
position with the same check — so a gap is never passed on as if there were
none.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable

from cloudhub.store import LogPage
from edgeward.kinds import ALL_NODES, NODE
from edgeward.sync import ChangeRow

log = logging.getLogger(__name__)

#: Seconds between attempts to read the change log after a read failed (at most: a
#: shorter poll interval retries sooner).
RETRY_INTERVAL = 1.0


class Subscription:
    """Rows for one consumer, in revision order."""

    def __init__(
        self, feed: ChangeFeed, node: str | None, max_buffered: int, max_bytes: int
    ) -> None:
        self.node = node
        self._feed = feed
        self._rows: deque[ChangeRow] = deque()
        self._bytes = 0
        self._ready = asyncio.Event()
        self._max = max_buffered
        self._max_bytes = max_bytes
        self.overflowed = False
        self.closed = False
        #: Set by poke(): the consumer has something else to attend to.
        self.poked = False

    def poke(self) -> None:
        """Wake the consumer's wait() without rows (it has another event to handle)."""
        self.poked = True
        self._ready.set()

    def _push(self, row: ChangeRow) -> None:
        if self.overflowed:
            return
        if len(self._rows) >= self._max or self._bytes + row.size > self._max_bytes:
            self.overflowed = True
            self._rows.clear()
            self._bytes = 0
        else:
            self._rows.append(row)
            self._bytes += row.size
        self._ready.set()

    @property
    def has_news(self) -> bool:
        """Rows, an overflow, a close or a poke wait to be handled."""
        return bool(self._rows) or self.overflowed or self.closed or self.poked

    async def wait(self, timeout: float | None = None) -> bool:
        """Wait until rows (or an overflow, a close, a poke) are ready; False on timeout
        (news may have come as it ran out: check ``has_news``)."""
        if self.has_news:
            return True
        self._ready.clear()
        try:
            async with asyncio.timeout(timeout):
                await self._ready.wait()
        except TimeoutError:
            return False
        return True

    def take(self) -> list[ChangeRow]:
        """Buffered rows; call after ``wait``. Check ``overflowed`` first."""
        rows = list(self._rows)
        self._rows.clear()
        self._bytes = 0
        return rows

    def recovered(self) -> None:
        """The consumer re-read what it missed; buffer again from now on."""
        self.overflowed = False

    def close(self) -> None:
        self._feed._remove(self)


class ChangeFeed:
    """One reader of the change log per hub process, fanning rows out."""

    def __init__(
        self,
        read_after: Callable[[int, int], LogPage],
        start: int,
        poll_interval: float = 1.0,
        max_buffered: int = 10_000,
        max_buffered_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self._read_after = read_after
        self.last = start
        self._poll = poll_interval
        self._max = max_buffered
        self._max_bytes = max_buffered_bytes
        self._wake = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._by_node: dict[str, set[Subscription]] = {}
        #: Called with (name, revision) for each Node deletion read, whichever replica
        #: made it: the node's session here, if older, must end (a Node routes to no one).
        self.on_node_deleted: Callable[[str, int], None] = lambda name, revision: None
        self._all: set[Subscription] = set()

    def notify(self, head: int) -> None:
        """A commit reached ``head``; safe to call from any thread."""
        if head > self.last:
            self._loop.call_soon_threadsafe(self._wake.set)

    def wake(self) -> None:
        """Read the log now, whatever its head (e.g. notifications may have been lost);
        safe to call from any thread."""
        self._loop.call_soon_threadsafe(self._wake.set)

    def subscribe_node(self, node: str) -> Subscription:
        sub = Subscription(self, node, self._max, self._max_bytes)
        self._by_node.setdefault(node, set()).add(sub)
        return sub

    def subscribe_all(self) -> Subscription:
        sub = Subscription(self, None, self._max, self._max_bytes)
        self._all.add(sub)
        return sub

    def close(self) -> None:
        """The hub is stopping: wake every subscriber with ``closed`` set, so watches end."""
        for sub in [*self._all, *(s for subs in self._by_node.values() for s in subs)]:
            sub.closed = True
            sub._ready.set()

    def _remove(self, sub: Subscription) -> None:
        if sub.node is None:
            self._all.discard(sub)
            return
        subs = self._by_node.get(sub.node)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._by_node[sub.node]

    async def run(self) -> None:
        while True:
            try:
                async with asyncio.timeout(self._poll):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self._drain()
            except Exception:
                log.exception("change feed: reading the change log failed; retrying")
                await asyncio.sleep(min(self._poll, RETRY_INTERVAL))

    async def _drain(self) -> None:
        while True:
            page = await asyncio.to_thread(self._read_after, self.last, 1000)
            if not page.complete_after(self.last):
                log.warning(
                    "change feed: rows after %d were compacted before they were read; "
                    "every session and watch reads the log again",
                    self.last,
                )
                self._overflow_all()
                self.last = page.compacted
            rows = page.rows
            if not rows:
                return
            for row in rows:
                self._dispatch(row)
            self.last = rows[-1].revision
            if len(rows) < 1000:
                return

    def _overflow_all(self) -> None:
        for sub in [*self._all, *(s for subs in self._by_node.values() for s in subs)]:
            sub._rows.clear()
            sub._bytes = 0
            sub.overflowed = True
            sub._ready.set()

    def _dispatch(self, row: ChangeRow) -> None:
        if row.kind == NODE.name and row.op == "delete":
            self.on_node_deleted(row.name, row.revision)
        for sub in self._all:
            sub._push(row)
        if row.route == ALL_NODES:
            for subs in self._by_node.values():
                for sub in subs:
                    sub._push(row)
            return
        targets = {row.route, row.prev_route} - {None}
        for node in targets:
            for sub in self._by_node.get(node, ()):  # type: ignore[arg-type]
                sub._push(row)
