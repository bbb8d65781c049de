"""What the edge refused to keep: counted by reason, logged at a limited rate.

A peer can repeat bad input as fast as it likes (a mapper publishing oversized
messages in a loop); one log line per refusal would flood the log and the disk
of a small gateway. Each reason is logged at most once per ``interval``; the
next line says how many went unlogged in between. The counts are kept for the
node to report.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

#: Seconds between two log lines for the same reason.
LOG_INTERVAL = 60.0


class Drops:
    """Counts of refused things by reason (``counts``), each reason logged at a limited rate."""

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = LOG_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.counts: dict[str, int] = {}
        self._log = logger
        self._interval = interval
        self._clock = clock
        self._logged_at: dict[str, tuple[float, int]] = {}  # reason → (when, count then)

    def count(self, reason: str, n: int = 1) -> int:
        """Count ``n`` more refusals for ``reason`` (the caller logs them); returns the count."""
        total = self.counts[reason] = self.counts.get(reason, 0) + n
        return total

    def add(self, reason: str, message: str, n: int = 1) -> None:
        """Count ``n`` refusals and log ``message``, unless ``reason`` was logged lately."""
        total = self.count(reason, n)
        now = self._clock()
        last = self._logged_at.get(reason)
        if last is not None and now - last[0] < self._interval:
            return
        unlogged = 0 if last is None else total - last[1] - n
        self._logged_at[reason] = (now, total)
        if unlogged:
            message += f" ({unlogged} more since the last such line)"
        self._log.warning("%s", message)
