"""The watchdog logic on a real event loop, a real database thread and a real notify socket.

The probe stands for a daemon's database job: it runs on its own thread, as
edgecore's StoreThread and cloudhub's group writer run theirs.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from edgeward.sdnotify import Notifier
from edgeward.watchdog import Watchdog, counted
from tests.support.notify import NotifySocket

#: systemd's WatchdogSec= in these tests: pings every 0.2 s.
WATCHDOG = 0.4


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[NotifySocket]:
    sock = NotifySocket(tmp_path)
    yield sock
    sock.close()


class Database:
    """A one-thread pool whose jobs count how often they ran; ``hang`` makes them wait."""

    def __init__(self) -> None:
        self.pool = ThreadPoolExecutor(max_workers=1)
        self.answers = 0
        self.released = threading.Event()
        self.released.set()
        self.fail: str | None = None

    def hang(self) -> None:
        self.released.clear()

    def release(self) -> None:
        self.released.set()

    def _job(self) -> int:
        self.released.wait()
        if self.fail is not None:
            raise RuntimeError(self.fail)
        self.answers += 1
        return self.answers

    async def probe(self) -> int:
        return await asyncio.get_running_loop().run_in_executor(self.pool, self._job)

    def close(self) -> None:
        self.release()
        self.pool.shutdown()


@pytest.fixture
def database() -> Iterator[Database]:
    db = Database()
    yield db
    db.close()


async def until(condition: Callable[[], object], timeout: float = 10.0) -> None:
    """Let the loop run until ``condition()`` holds; fail after ``timeout``."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


def watching(listener: NotifySocket, database: Database, **kwargs: float) -> Watchdog[int]:
    notifier = Notifier.from_environ(listener.environ(watchdog=WATCHDOG))
    return Watchdog(notifier, database.probe, lambda n: f"{n} answers", **kwargs)


def test_pings_at_half_the_period_while_the_database_answers_and_status_follows(
    listener: NotifySocket, database: Database
) -> None:
    """READY carries the first probe's status; then a ping and a fresh status every half
    period; STOPPING at the end."""

    async def scenario() -> None:
        watchdog = watching(listener, database)
        assert watchdog.interval == WATCHDOG / 2
        await watchdog.check()
        watchdog.ready()
        task = asyncio.create_task(watchdog.run())
        await until(lambda: len(listener.having("WATCHDOG")) >= 4)
        task.cancel()
        watchdog.stopping()

    asyncio.run(scenario())
    listener.wait(lambda m: "STOPPING" in m.fields, "STOPPING=1")
    messages = listener.messages
    assert messages[0].fields == {"READY": "1", "STATUS": "1 answers"}
    statuses = listener.statuses(1)
    assert statuses[:3] == ["2 answers", "3 answers", "4 answers"]
    assert messages[-1].fields == {"STOPPING": "1", "STATUS": "stopping"}
    # the pings' pace (the median gap, which a busy machine's odd late tick does not move)
    pings = [m.at for m in listener.having("WATCHDOG")]
    gaps = sorted(b - a for a, b in itertools.pairwise(pings))
    assert WATCHDOG / 4 < gaps[len(gaps) // 2] < WATCHDOG * 3 / 4


def test_a_stuck_database_thread_stops_the_pings_while_the_loop_runs_on(
    listener: NotifySocket, database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """While a database job hangs, the loop keeps sending status lines that say so, and no
    ping: systemd would kill the daemon. When the job completes, the pings come back."""

    async def scenario() -> None:
        watchdog = watching(listener, database)
        task = asyncio.create_task(watchdog.run())
        await until(lambda: listener.having("WATCHDOG"))
        database.hang()
        # at least three times systemd's period, seen by a loop that kept running
        await until(lambda: any("not answering for 2 s" in s for s in listener.statuses()))
        database.release()
        await until(lambda: not listener.statuses()[-1].startswith("database not answering"))
        last = len(listener.messages)
        await until(lambda: listener.having("WATCHDOG", since=last))
        task.cancel()

    with caplog.at_level(logging.INFO, logger="edgeward.watchdog"):
        asyncio.run(scenario())
    stuck = [
        i for i, m in enumerate(listener.messages) if "not answering" in m.fields.get("STATUS", "")
    ]
    assert len(stuck) >= 3
    assert [m for m in listener.messages[stuck[0] : stuck[-1]] if "WATCHDOG" in m.fields] == []
    logged = [r.getMessage() for r in caplog.records]
    assert any("has not answered" in line and "pings stop" in line for line in logged)
    assert any("answered again" in line for line in logged)


def test_a_stalled_event_loop_sends_no_ping_although_the_database_answers(
    listener: NotifySocket, database: Database
) -> None:
    """Pings come from the event loop itself: while it is blocked nothing is sent, even with
    the database thread answering; once it runs again, so do the pings."""
    marker = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)

    def stall() -> None:
        marker.sendto(b"MARK=stalled", str(listener.path))
        done = database.pool.submit(database._job)
        time.sleep(3 * WATCHDOG)  # a blocking call on the loop's thread
        assert done.done()
        marker.sendto(b"MARK=running", str(listener.path))

    async def scenario() -> None:
        watchdog = watching(listener, database)
        task = asyncio.create_task(watchdog.run())
        await until(lambda: len(listener.having("WATCHDOG")) >= 2)
        stall()
        await until(lambda: listener.having("WATCHDOG", since=_index(listener, "running")))
        task.cancel()

    try:
        asyncio.run(scenario())
    finally:
        marker.close()
    stalled, running = _index(listener, "stalled"), _index(listener, "running")
    assert running is not None and stalled is not None
    assert listener.messages[stalled + 1 : running] == []


def _index(listener: NotifySocket, mark: str) -> int:
    for i, message in enumerate(listener.messages):
        if message.fields.get("MARK") == mark:
            return i
    return 10**9


def test_a_failing_database_still_pings_and_says_so(
    listener: NotifySocket, database: Database
) -> None:
    """An error is an answer: the thread makes progress and restarting would not mend the
    database, so the pings go on and the status line shows the error until it clears."""

    async def scenario() -> None:
        watchdog = watching(listener, database)
        task = asyncio.create_task(watchdog.run())
        await until(lambda: listener.having("WATCHDOG"))
        database.fail = "disk I/O error\nsecond line"
        await until(lambda: any("database error" in s for s in listener.statuses()))
        since = len(listener.messages)
        await until(lambda: len(listener.having("WATCHDOG", since)) >= 2)
        database.fail = None
        await until(lambda: "database error" not in listener.statuses()[-1])
        task.cancel()

    asyncio.run(scenario())
    errors = [s for s in listener.statuses() if "database error" in s]
    assert errors[0].endswith(" answers; database error: disk I/O error")


def test_without_a_watchdog_the_status_is_kept_current_and_nothing_pings(
    listener: NotifySocket, database: Database
) -> None:
    async def scenario() -> None:
        notifier = Notifier.from_environ(listener.environ())
        watchdog = Watchdog(notifier, database.probe, lambda n: f"{n} answers", probe_interval=0.1)
        task = asyncio.create_task(watchdog.run())
        await until(lambda: len(listener.statuses()) >= 3)
        task.cancel()

    asyncio.run(scenario())
    assert listener.having("WATCHDOG") == []


def test_counts_read_as_a_person_would_write_them() -> None:
    assert counted(12031, "node") == "12,031 nodes"
    assert counted(1, "device") == "1 device"
    assert counted(0, "device") == "0 devices"
