"""A hand-driven clock, for code that takes its time from an injected callable."""

from __future__ import annotations

T0 = 1_700_000_000.0


class ManualClock:
    """Returns ``now`` until a test moves it: ``clock.now += 41``."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
