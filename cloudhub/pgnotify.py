"""Change notification between hub replicas on one PostgreSQL: LISTEN, wake the feed.

Every hub write transaction that moves the revision head notifies the channel
``cloudhub.store.CHANGES_CHANNEL`` with the new head (``Store.writing``);
PostgreSQL delivers it to every listening session once the transaction has
committed, and folds duplicates within one transaction. Each replica keeps one
dedicated connection of its own (not from the engine's pool, named
``cloudhub-notify`` in ``pg_stat_activity``) that LISTENs there and hands each
head to the change feed, so a write through one replica reaches the edges and
watches served by another without waiting for the poll.

Notifications sent while a replica was not listening are lost, never queued:
after every (re)connect the listener wakes the feed once, which reads
whatever it missed, and the feed's poll (``change_poll_interval``) stays the
fallback for anything else. A lost connection (PostgreSQL restarted, the
backend terminated, the network gone) is retried with jittered backoff; the
log gets one line when listening stops and one when it resumes, not one per
attempt. An idle connection is probed every ``PROBE_INTERVAL`` seconds, so a
link that died silently is found and replaced.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from contextlib import aclosing
from typing import Any

import psycopg

from cloudhub.changefeed import ChangeFeed
from cloudhub.store import CHANGES_CHANNEL, SESSIONS_CHANNEL
from edgeward.backoff import backoff

log = logging.getLogger(__name__)

#: The listening connection's application_name, as pg_stat_activity shows it.
APPLICATION_NAME = "cloudhub-notify"
#: Seconds without a notification after which the connection is probed (SELECT 1).
PROBE_INTERVAL = 30.0
#: Seconds a connection attempt, a LISTEN or a probe may take before the link counts as lost.
TIMEOUT = 10.0


class ChangeListener:
    """One LISTENing connection that wakes ``feed``; ``run`` until cancelled."""

    def __init__(
        self,
        params: dict[str, Any],
        feed: ChangeFeed,
        poll_interval: float,
        delays: Callable[[], Iterator[float]] = lambda: backoff(initial=0.2, cap=10.0),
        on_session_request: Callable[[str], None] = lambda payload: None,
    ) -> None:
        """``on_session_request(payload)`` gets each SESSIONS_CHANNEL notification."""
        self._params = params
        self._on_session_request = on_session_request
        self._feed = feed
        self._poll = poll_interval
        self._delays = delays
        #: Whether the feed hears other replicas' commits at once (for tests and metrics).
        self.listening = False
        #: Notifications received, and connections made (the first included).
        self.received = 0
        self.connects = 0

    async def run(self) -> None:
        delays: Iterator[float] | None = None
        lost = False
        while True:
            try:
                conn = await self._connect()
                try:
                    self.listening = True
                    self.connects += 1
                    if lost:
                        log.info("change notification: listening again on %s", CHANGES_CHANNEL)
                    lost, delays = False, None
                    # what was committed while no one listened is only in the log
                    self._feed.wake()
                    await self._listen(conn)
                finally:
                    # close, never roll back: on a dead link that would wait forever
                    await conn.close()
            except (psycopg.Error, OSError, TimeoutError) as exc:
                self.listening = False
                if not lost:
                    log.warning(
                        "change notification: not listening (%s); changes made through other "
                        "replicas arrive by polling every %g s until it reconnects",
                        _one_line(exc),
                        self._poll,
                    )
                    lost = True
                delays = delays or self._delays()
                await asyncio.sleep(next(delays))
            finally:
                self.listening = False

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        async with asyncio.timeout(TIMEOUT):
            conn = await psycopg.AsyncConnection.connect(**self._params, autocommit=True)
            try:
                await conn.execute(f"LISTEN {CHANGES_CHANNEL}")
                await conn.execute(f"LISTEN {SESSIONS_CHANNEL}")
            except BaseException:
                await conn.close()
                raise
            return conn

    async def _listen(self, conn: psycopg.AsyncConnection[Any]) -> None:
        while True:
            async with aclosing(conn.notifies(timeout=PROBE_INTERVAL)) as notes:
                async for note in notes:
                    self.received += 1
                    if note.channel == SESSIONS_CHANNEL:
                        self._on_session_request(note.payload)
                        continue
                    try:
                        head = int(note.payload)
                    except ValueError:
                        self._feed.wake()  # not ours to parse: read the log anyway
                    else:
                        self._feed.notify(head)
            async with asyncio.timeout(TIMEOUT):
                await conn.execute("SELECT 1")


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")
