"""``python -m tests.sim``: run the fault simulation over many seeds, or replay one.

    python -m tests.sim --seeds 20000          # seeds 0..19999, on every core
    python -m tests.sim --seed 1234 --verbose  # replay one, printing every session's log

It ends with ``N seeds, 0 invariant violations``, or with the first failing seed and the
command that replays it exactly.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor

from tests.sim.world import Violation, World

#: Seeds a worker runs before it reports back (progress, and the first failure found).
CHUNK = 500


def run_seeds(seeds: range) -> tuple[int, str] | None:
    """The first failing seed in ``seeds`` and what failed, or None."""
    for seed in seeds:
        try:
            World(seed).run()
        except Violation as exc:
            return seed, str(exc)
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.sim",
        description="Deterministic simulation of a hub and its edges under faults: the real "
        "session cores over a simulated network, stores and clock, one seed per run.",
    )
    parser.add_argument("--seeds", type=int, default=2000, help="run seeds FIRST..FIRST+N-1")
    parser.add_argument("--first", type=int, default=0, help="the first seed (default 0)")
    parser.add_argument("--seed", type=int, help="replay this one seed")
    parser.add_argument("--verbose", action="store_true", help="print the sessions' logs")
    args = parser.parse_args(argv)
    if args.seed is not None:
        world = World(args.seed)
        try:
            world.run()
        except Violation as exc:
            print(f"FAILED seed {args.seed}: {exc}", file=sys.stderr)
            return 1
        finally:
            if args.verbose:
                print("\n".join(world.logs))
        print("1 seeds, 0 invariant violations")
        return 0
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")
    started = time.monotonic()
    end = args.first + args.seeds
    chunks = [range(s, min(s + CHUNK, end)) for s in range(args.first, end, CHUNK)]
    failures: list[tuple[int, str]] = []
    done = 0
    with ProcessPoolExecutor(os.cpu_count() or 1) as pool:
        for chunk, failure in zip(chunks, pool.map(run_seeds, chunks), strict=True):
            done += len(chunk)
            if failure is not None:
                failures.append(failure)
            print(f"{done} seeds … {time.monotonic() - started:.0f}s", file=sys.stderr)
    if failures:
        seed, what = min(failures)
        print(f"FAILED seed {seed}: {what}", file=sys.stderr)
        print(f"first failing seed {seed}; replay it with: make sim SEED={seed}")
        return 1
    print(f"{args.seeds} seeds, 0 invariant violations")
    return 0


if __name__ == "__main__":
    sys.exit(main())
