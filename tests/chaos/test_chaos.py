"""The chaos suite's short form, in `make test`: a fixed seed, a dozen faults (hub and
edge crashes, blackholed, delayed, throttled, reset and dropped links, and, as root, a full
disk) under load, then the audit: nothing lost, nothing duplicated, no cache drifted.
`make chaos` runs 1,000 faults."""

from __future__ import annotations

import os
from pathlib import Path

from tests.chaos.scenario import Scenario

#: CHAOS_SEED replays a run; CHAOS_FAULTS lengthens it.
SEED = int(os.environ.get("CHAOS_SEED", "20261130"))
FAULTS = int(os.environ.get("CHAOS_FAULTS", "12"))


def test_nothing_is_lost_duplicated_or_drifted_under_random_faults(tmp_path: Path) -> None:
    lines: list[str] = []
    scenario = Scenario(SEED, FAULTS, edges=2, base=tmp_path, disk_full=True)  # as root
    scenario.log = lines.append
    audit = scenario.run()
    print(audit.line())
    assert audit.faults == FAULTS
    assert audit.writes and audit.reports and audit.uploads
    assert audit.clean, "\n".join(
        [audit.line(), *audit.lost, *audit.duplicated, *audit.drifted, "faults:", *lines]
    )
