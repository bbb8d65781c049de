"""The replica chaos run's short form, in `make test` (serial phase): a fixed seed, a few
faults (replicas killed and stopped, their PostgreSQL connections terminated, edges' links
and edgecores broken) on three secure replicas behind HAProxy, then the audit: nothing
lost, duplicated or drifted, every connected node Ready on every replica with one owner,
one leader. `make chaos-ha` runs a longer one."""

from __future__ import annotations

import os
from pathlib import Path

from tests.chaos.replicas import ReplicaScenario
from tests.support.postgres import PostgresCluster

#: CHAOS_HA_SEED replays a run; CHAOS_HA_FAULTS lengthens it.
SEED = int(os.environ.get("CHAOS_HA_SEED", "20261222"))
FAULTS = int(os.environ.get("CHAOS_HA_FAULTS", "6"))


def test_replicas_lose_nothing_and_leave_no_node_stuck_under_random_faults(
    tmp_path: Path, postgres: PostgresCluster
) -> None:
    lines: list[str] = []
    scenario = ReplicaScenario(SEED, FAULTS, edges=2, base=tmp_path, postgres=postgres)
    scenario.log = lines.append
    audit = scenario.run()
    print(audit.line())
    assert audit.faults == FAULTS
    assert audit.writes and audit.reports and audit.uploads
    assert audit.clean, "\n".join([audit.line(), *audit.findings, "faults:", *lines])
