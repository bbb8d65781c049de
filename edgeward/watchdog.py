"""What a daemon tells systemd while it runs: a current STATUS line, and watchdog pings
that stop when the daemon hangs (docs/DESIGN.md, "systemd's watchdog").

A ping must prove two things: the event loop runs (the pings are sent from it)
and the database side makes progress. For the latter the daemon gives a
*probe*: a coroutine that hands a small job to its database thread (edgecore's
StoreThread, cloudhub's group writer) and returns what the job read. A probe
is started every ping interval — half of systemd's ``WatchdogSec=`` — and a
ping is sent only when the previous probe has completed, so a thread stuck in
a database call, or a database that hangs, stops the pings within one
interval and systemd restarts the daemon one interval later. A probe that
fails with an error still proves progress: the database answered, and
restarting the daemon would not mend it; the error goes to the status line.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from edgeward.sdnotify import Notifier

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Seconds between looks at the status line (sent only when it changed).
REFRESH = 1.0
#: Seconds between probes when systemd runs no watchdog (they keep the counts current).
PROBE_INTERVAL = 10.0


class Watchdog(Generic[T]):
    """Keeps systemd's STATUS current and pings its watchdog while the daemon makes progress.

    ``describe(last)`` builds the status line from the last probe's result (None
    before the first answer); it is called every second, so it reads memory only.
    """

    def __init__(
        self,
        notifier: Notifier,
        probe: Callable[[], Awaitable[T]],
        describe: Callable[[T | None], str],
        refresh: float = REFRESH,
        probe_interval: float = PROBE_INTERVAL,
    ) -> None:
        self.notifier = notifier
        self.probe = probe
        self.describe = describe
        timeout = notifier.watchdog_timeout
        #: Seconds between probes, and between pings while the probes complete.
        self.interval = probe_interval if timeout is None else timeout / 2
        self.refresh = min(refresh, self.interval)
        self.last: T | None = None
        self.error: str | None = None
        self._sent = ""

    def status(self, late_by: float | None = None) -> str:
        """The status line: the daemon's own, after a word on a probe that is late."""
        text = self.describe(self.last)
        if self.error is not None:
            text = f"{text}; database error: {self.error}"
        if late_by is not None:
            text = f"database not answering for {late_by:.0f} s; {text}"
        return text

    async def check(self) -> None:
        """Run one probe and keep what it read: the daemon does so before it is ready."""
        try:
            result = await self.probe()
        except Exception as exc:
            self._failed(exc)
        else:
            self._answered(result)

    def ready(self) -> None:
        """Tell systemd the daemon serves, with its status line."""
        self._sent = self.status()
        self.notifier.ready(self._sent)

    def stopping(self) -> None:
        self.notifier.stopping("stopping")

    async def run(self) -> None:
        """Probe, ping and refresh the status until cancelled."""
        loop = asyncio.get_running_loop()
        # a whole number of ticks per interval, on a fixed schedule: a ping is never put
        # off to the tick after the one it was due at
        step = self.interval / max(1, math.ceil(self.interval / self.refresh))
        due = started = loop.time()
        probe = asyncio.ensure_future(self.probe())
        answered = late = False
        try:
            while True:
                due += step
                await asyncio.sleep(due - loop.time())
                now = loop.time()
                if now - due > step:
                    due = now  # the loop was held up: go on from now, without a burst
                if probe.done() and not answered:
                    if late:
                        log.warning("the database answered again after %.0f s", now - started)
                    self._settle(probe)
                    answered, late = True, False
                if now - started > self.interval - step / 2:
                    if answered:
                        if self.notifier.watchdog_timeout is not None:
                            self.notifier.ping()
                        started, answered = now, False
                        probe = asyncio.ensure_future(self.probe())
                    elif not late:
                        late = True
                        log.warning(
                            "the database has not answered for %.0f s: watchdog pings stop "
                            "until it does",
                            now - started,
                        )
                self._send(self.status(now - started if late else None))
        finally:
            probe.cancel()

    def _send(self, text: str) -> None:
        if text != self._sent:
            self._sent = text
            self.notifier.status(text)

    def _settle(self, probe: asyncio.Future[T]) -> None:
        error = probe.exception()
        if error is None:
            self._answered(probe.result())
        else:
            self._failed(error)

    def _answered(self, result: T) -> None:
        self.last = result
        if self.error is not None:
            log.info("the database check works again")
        self.error = None

    def _failed(self, exc: BaseException) -> None:
        text = str(exc).strip()
        reason = text.splitlines()[0][:200] if text else type(exc).__name__
        if reason != self.error:
            log.warning("the database check failed: %s", reason)
        self.error = reason


def counted(n: int, noun: str) -> str:
    """``n`` with thousands separators and the noun, plural unless one: "12,031 nodes"."""
    return f"{n:,} {noun}{'' if n == 1 else 's'}"
