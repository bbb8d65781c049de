"""Watch streams: what a watch sends, read from the store and the change feed.

A watch from resourceVersion N sends every change after N from the change
log, in revision order. A watch without one first lists the current objects
as ADDED events, then the changes after the list's revision. Either way, if
the change log no longer holds a row the watch still has to send (it was
compacted while the watch fell behind, or while its list was read), the
stream ends with Kubernetes' in-stream error event (code 410, reason
``Expired``) instead of skipping it: the client lists again.

The initial list is sent from the stored JSON text, never decoded, and read
in pages of about one large object at most, each page its own short read
transaction: a watch holds about one object's text at a time, and a slow
client holds no database connection. Because the pages are read at different
revisions, :class:`Listing` decides what the list may send so that the events
still describe one consistent history: the list sends only objects unchanged
since its first page (revision ``start``); an object written after ``start``
before the list reached it is left to the change log, whose first event for
it is sent as ADDED (and a delete of an object the watcher never saw is not
sent at all). resourceVersions therefore never go backwards after the list.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from cloudhub.changefeed import ChangeFeed
from cloudhub.store import ObjectPage, Store
from edgeward.kinds import NODE, Kind
from edgeward.sync import ChangeRow

log = logging.getLogger(__name__)

WATCH_EVENTS = {"create": "ADDED", "update": "MODIFIED", "delete": "DELETED"}
LOG_PAGE = 1000
#: The initial list is sent in chunks of about this many bytes (characters of a large object).
CHUNK_BYTES = 64 * 1024

_ADDED_PREFIX = b'{"type":"ADDED","object":'
_EVENT_SUFFIX = b"}\n"

Key = tuple[str, str]  # (namespace, name); namespace "" for cluster-scoped kinds


class Expired(Exception):
    """The change log no longer holds rows this watch must send."""


class Listing:
    """What a watch's paged initial list sends, and how the changes after it are sent.

    Pure: fed the pages as the store read them, then every change-log row after
    :attr:`start` that the watch selects.
    """

    def __init__(self) -> None:
        #: The revision of the first page; the list shows the objects as they were then.
        self.start: int | None = None
        #: The revision of the last page read.
        self.read_through: int | None = None
        #: Objects written after ``start`` before the list reached them: the watcher
        #: has not seen them, so their first change is sent as ADDED.
        self.unseen: set[Key] = set()

    def page(self, page: ObjectPage) -> list[str]:
        """The JSON texts of ``page`` to send as ADDED; Expired when rows written since
        the previous page were compacted away (the list could not account for them)."""
        if self.start is None:
            self.start = page.head
        elif page.compacted > self.start:
            # the changes after start, which the watch sends next, are gone
            raise Expired(
                f"the change log was compacted past revision {self.start} while the list was read"
            )
        self.read_through = page.head
        for namespace, name, ahead in page.written:
            if ahead:
                self.unseen.add((namespace, name))
        texts = []
        for row in page.rows:
            if row.resource_version <= self.start:
                texts.append(row.text)
            else:  # written after start, so it is in unseen (its change rows say how)
                self.unseen.add((row.namespace, row.name))
        return texts

    def event_type(self, row: ChangeRow) -> str | None:
        """The event to send for a change after ``start`` (None: send nothing)."""
        key = (row.namespace, row.name)
        if key not in self.unseen:
            return WATCH_EVENTS[row.op]
        self.unseen.discard(key)
        return None if row.op == "delete" else "ADDED"


def event(kind: str, obj: dict[str, Any]) -> bytes:
    """One watch event line."""
    return (json.dumps({"type": kind, "object": obj}, separators=(",", ":")) + "\n").encode()


def expired_event(message: str) -> bytes:
    """Kubernetes' in-stream error: the watch ended; list again and watch from there."""
    status = {
        "apiVersion": "v1",
        "kind": "Status",
        "status": "Failure",
        "code": 410,
        "reason": "Expired",
        "message": message,
    }
    return event("ERROR", status)


def _selects(kind: Kind, namespace: str | None, name: str | None) -> Callable[[ChangeRow], bool]:
    def wanted(row: ChangeRow) -> bool:
        return (
            row.kind == kind.name
            and (namespace is None or not kind.namespaced or row.namespace == namespace)
            and (name is None or row.name == name)
        )

    return wanted


async def watch_events(
    store: Store,
    feed: ChangeFeed,
    kind: Kind,
    namespace: str | None,
    name: str | None,
    since: int | None,
) -> AsyncIterator[bytes]:
    """The event lines of one watch: after revision ``since``, or (None) list first."""
    wanted = _selects(kind, namespace, name)
    sub = feed.subscribe_all()  # before reading: nothing committed from now on is missed
    try:
        listing = None
        if since is None:
            listing = Listing()
            try:
                async for chunk in _initial_list(store, listing, kind, namespace, name):
                    yield chunk
            except Expired as exc:
                yield expired_event(f"{exc}; list again and watch from its revision")
                return
            assert listing.start is not None
            since = listing.start
        after = since
        from_database = True  # until caught up, and again after the feed's buffer overflowed
        while True:
            if from_database:
                page = await run_in_threadpool(store.log_page, after, LOG_PAGE)
                if not page.complete_after(after):
                    yield expired_event(
                        f"the change log no longer holds the changes after revision {after} "
                        f"(it starts after {page.compacted}); list again and watch from its "
                        "revision"
                    )
                    return
                rows = page.rows
                from_database = len(rows) == LOG_PAGE
            else:
                await sub.wait()
                if sub.closed:
                    return  # the hub is stopping
                if sub.overflowed:
                    sub.recovered()
                    from_database = True
                    continue
                rows = sub.take()
            for row in rows:
                if row.revision <= after:
                    continue  # read from the database already
                after = row.revision
                if not wanted(row):
                    continue
                kind_of_event = listing.event_type(row) if listing else WATCH_EVENTS[row.op]
                if kind_of_event is None:
                    continue
                body = row.body
                if kind is NODE:
                    body = await run_in_threadpool(store.decorate_node, body)
                yield event(kind_of_event, body)
    finally:
        sub.close()


async def _initial_list(
    store: Store, listing: Listing, kind: Kind, namespace: str | None, name: str | None
) -> AsyncIterator[bytes]:
    """ADDED events for the current objects, from their stored text, page by page."""
    after: Key | None = None
    done = False
    while not done:
        page = await run_in_threadpool(
            store.object_page, kind, namespace, name, after, listing.read_through
        )
        texts = listing.page(page)
        if page.rows:
            after = (page.rows[-1].namespace, page.rows[-1].name)
        done = page.done
        del page  # hold each text only until it is sent
        texts.reverse()
        chunk = bytearray()
        while texts:
            text = texts.pop()
            if len(text) >= CHUNK_BYTES:
                # A large object goes out in slices: no second copy of it, encoded or
                # waiting in the socket's buffer, and no large block for malloc to keep.
                if chunk:
                    yield bytes(chunk)
                    chunk.clear()
                yield _ADDED_PREFIX
                for i in range(0, len(text), CHUNK_BYTES):
                    yield text[i : i + CHUNK_BYTES].encode()
                yield _EVENT_SUFFIX
            else:
                chunk += _ADDED_PREFIX + text.encode() + _EVENT_SUFFIX
                if len(chunk) >= CHUNK_BYTES:
                    yield bytes(chunk)
                    chunk.clear()
            del text
        if chunk:
            yield bytes(chunk)


class WatchResponse(StreamingResponse):
    """A watch's streaming response; ``on_close`` runs once it ended, however it ended.

    Starlette stops a stream whose client went away by cancelling it, which can leave
    the event generator suspended: it is closed here so its subscription ends at once.
    """

    def __init__(self, events: AsyncIterator[bytes], on_close: Callable[[], None]) -> None:
        super().__init__(events, media_type="application/x-ndjson")
        self._events = events
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            try:
                await self._events.aclose()  # type: ignore[attr-defined]
            finally:
                self._on_close()


class WatchSlots:
    """Counts open watches against ``limit``; refusals are counted and logged (rate-limited)."""

    def __init__(self, limit: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.open = 0
        self.refused = 0
        self._clock = clock
        self._logged_at: float | None = None
        self._refused_at_log = 0

    def acquire(self) -> bool:
        """Take a slot; False (and counted) when ``limit`` watches are open."""
        if self.open >= self.limit:
            self.refused += 1
            now = self._clock()
            if self._logged_at is None or now - self._logged_at >= 60:
                log.warning(
                    "refused %d watch(es) since the last report: %d open, max_watches is %d",
                    self.refused - self._refused_at_log,
                    self.open,
                    self.limit,
                )
                self._logged_at = now
                self._refused_at_log = self.refused
            return False
        self.open += 1
        return True

    def release(self) -> None:
        self.open -= 1
