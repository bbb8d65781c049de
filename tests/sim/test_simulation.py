"""The whole conversation under faults: 2,000 seeds of the simulated hub and edges, each
checked after every step (``make sim`` runs more; any seed replays with ``make sim SEED=S``)."""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor

from tests.sim.world import Violation, World

SEEDS = int(os.environ.get("EDGEWARD_SIM_SEEDS", "2000"))


def _first_failure(seeds: range) -> str | None:
    for seed in seeds:
        try:
            World(seed).run()
        except Violation as exc:
            return f"seed {seed}: {exc}\nreplay it with: make sim SEED={seed}"
    return None


def test_every_invariant_holds_for_two_thousand_seeds() -> None:
    """Each edge's cache matches what the hub routed to it, every report stored on an edge
    reaches the hub exactly once (or is superseded, or rejected), no session is left stuck
    and no buffer outgrows its bound — whatever the drops, duplicates, crashes, failed
    commits, compactions and clock jumps of the seed."""
    workers = max(1, min(4, os.cpu_count() or 1))
    chunks = [range(start, SEEDS, workers) for start in range(workers)]
    with ProcessPoolExecutor(workers) as pool:
        failures = [f for f in pool.map(_first_failure, chunks) if f is not None]
    assert not failures, failures[0]


def test_a_seed_replays_exactly() -> None:
    """Two runs of one seed make the same conversation: a failing seed can be replayed."""
    first, second = World(1234), World(1234)
    first.run()
    second.run()
    assert first.logs == second.logs
    assert first.hub.head == second.hub.head
    assert [e.disk.outbox for e in first.edges] == [e.disk.outbox for e in second.edges]
