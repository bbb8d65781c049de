"""Refusals are counted by reason and logged at a limited rate, saying how many went unlogged."""

from __future__ import annotations

import logging

import pytest

from edgecore.drops import Drops
from tests.support.clock import ManualClock


def test_each_reason_is_logged_once_a_minute_with_what_was_not_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The first refusal of a reason is logged; repeats within a minute are only counted, and
    the next line a minute later says how many there were."""
    clock = ManualClock()
    drops = Drops(logging.getLogger("test.drops"), interval=60, clock=clock)
    with caplog.at_level(logging.WARNING, "test.drops"):
        for n in range(5):
            drops.add("too_large", f"refused {n}")
        drops.add("unstorable", "refused other")
        clock.now += 59
        drops.add("too_large", "refused 5")
        clock.now += 1
        drops.add("too_large", "refused 6")
        drops.count("quarantined")
    assert drops.counts == {"too_large": 7, "unstorable": 1, "quarantined": 1}
    assert [r.getMessage() for r in caplog.records] == [
        "refused 0",
        "refused other",
        "refused 6 (5 more since the last such line)",
    ]
