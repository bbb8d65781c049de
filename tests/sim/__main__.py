"""``python -m tests.sim``: run the simulation over many seeds, or replay one.

    python -m tests.sim --seeds 20000          # seeds 0..19999
    python -m tests.sim --seed 1234 --verbose  # replay one, with every session's log

It ends with ``N seeds, 0 invariant violations`` or with the first failing seed and the
command that replays it exactly.
"""

from __future__ import annotations

import argparse
import sys
import time

from tests.sim.world import Violation, World


def run_seed(seed: int) -> World:
    """Run one seed to its end; raises Violation (with the seed in its message) on failure."""
    world = World(seed)
    try:
        world.run()
    except Violation as exc:
        raise Violation(f"seed {seed}: {exc}") from exc
    return world


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.sim",
        description="Deterministic simulation of a hub and its edges under faults: the real "
        "session cores over a simulated network, stores and clock, one seed per run.",
    )
    parser.add_argument("--seeds", type=int, default=2000, help="run seeds 0..N-1 (default 2000)")
    parser.add_argument("--first", type=int, default=0, help="the first seed (default 0)")
    parser.add_argument("--seed", type=int, help="replay this one seed")
    parser.add_argument("--verbose", action="store_true", help="print the sessions' logs")
    args = parser.parse_args(argv)
    seeds = [args.seed] if args.seed is not None else range(args.first, args.first + args.seeds)
    started = time.monotonic()
    for n, seed in enumerate(seeds, start=1):
        try:
            world = run_seed(seed)
        except Violation as exc:
            print(f"FAILED {exc}", file=sys.stderr)
            print(f"replay it with: make sim SEED={seed}", file=sys.stderr)
            return 1
        if args.verbose:
            print("\n".join(world.logs))
        if n % 1000 == 0 and args.seed is None:
            print(f"{n} seeds … {time.monotonic() - started:.0f}s", file=sys.stderr)
    print(f"{len(seeds)} seeds, 0 invariant violations")
    return 0


if __name__ == "__main__":
    sys.exit(main())
