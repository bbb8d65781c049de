"""The change feed's per-subscriber buffers: bounded by rows and by bytes, and a gap in the
log resyncs every subscriber."""

from __future__ import annotations

import asyncio

from cloudhub.changefeed import ChangeFeed
from cloudhub.store import LogPage
from edgeward.sync import ChangeRow


def row(revision: int, size: int) -> ChangeRow:
    body = {"kind": "Device", "metadata": {"name": "d", "namespace": "default"}}
    return ChangeRow(revision, "Device", "default", "d", "update", "edge-1", "edge-1", body, size)


def test_a_buffer_is_bounded_by_the_bytes_it_keeps_alive() -> None:
    """A stalled subscriber overflows once its rows hold more stored JSON than the bound,
    long before it holds max_buffered rows: 10,000 updates of a large object would otherwise
    be kept alive for one slow watcher."""

    async def run() -> None:
        pages: list[LogPage] = [LogPage([row(1, 400), row(2, 400), row(3, 400)], 0, 3)]
        feed = ChangeFeed(
            lambda after, limit: pages.pop(0) if pages else LogPage([], 0, 3),
            start=0,
            max_buffered=100,
            max_buffered_bytes=1000,
        )
        sub = feed.subscribe_all()
        other = feed.subscribe_node("edge-1")
        await feed._drain()
        assert sub.overflowed and other.overflowed
        assert sub.take() == []
        sub.recovered()
        feed._dispatch(row(4, 400))
        assert [r.revision for r in sub.take()] == [4]

    asyncio.run(run())


def test_a_gap_before_the_feed_read_resyncs_every_subscriber() -> None:
    """Rows compacted away before the feed read them mark every subscriber overflowed (each
    re-reads from its own position), and the feed carries on after the gap."""

    async def run() -> None:
        pages = [LogPage([row(9, 10)], 8, 9)]
        feed = ChangeFeed(
            lambda after, limit: pages.pop(0) if pages else LogPage([], 8, 9), start=2
        )
        sub = feed.subscribe_node("edge-1")
        await feed._drain()
        assert sub.overflowed
        assert feed.last == 9

    asyncio.run(run())


def test_rows_that_arrive_as_an_idle_wait_runs_out_go_before_any_progress_mark() -> None:
    """A session told "nothing for a while" marks the edge's progress up to the feed's
    position. Rows the feed pushed just as the wait ran out are below that position: sent
    after the mark, they would be taken for replays and never applied, so they go first."""
    from cloudhub.edgeserver import SessionShell

    class Core:
        def __init__(self) -> None:
            self.calls: list[tuple[str, object]] = []

        @property
        def closed(self) -> bool:
            return len(self.calls) >= 2

        def idle(self, head: int) -> list:
            self.calls.append(("idle", head))
            return []

        def rows_published(self, rows: list[ChangeRow]) -> list:
            self.calls.append(("rows", [r.revision for r in rows]))
            return []

    async def run() -> None:
        feed = ChangeFeed(lambda after, limit: LogPage([], 0, 0), start=0)
        sub = feed.subscribe_node("edge-1")
        waited = sub.wait

        async def runs_out(timeout: float | None = None) -> bool:
            if sub.has_news:
                return await waited(timeout)
            if feed.last < 7:
                feed._dispatch(row(7, 10))  # pushed as the timeout fired
                feed.last = 7
            return False

        sub.wait = runs_out  # type: ignore[method-assign]

        class Shell(SessionShell):
            async def _execute(self, commands: list, audit: bool = True) -> None:
                return None

        shell = object.__new__(Shell)
        shell.sub, shell.core, shell._requests = sub, Core(), []  # type: ignore[assignment]
        shell.server = type("Server", (), {"feed": feed})()
        await shell._follow()
        assert shell.core.calls == [("rows", [7]), ("idle", 7)]

    asyncio.run(run())
