"""``python -m tests.chaos [--seed S] [--faults N] [--edges E] [--replicas R]``: one chaos
run and its audit line (tests/chaos/scenario.py; with ``--replicas``, R hub replicas on
PostgreSQL behind HAProxy, tests/chaos/replicas.py); exit 1 when anything was lost,
duplicated or drifted, or a replica check failed. ``make chaos`` and ``make chaos-ha`` run
it long."""

from __future__ import annotations

import argparse
import random
import sys
import time

from tests.chaos.replicas import ReplicaScenario
from tests.chaos.scenario import Scenario


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    parser.add_argument("--seed", type=int, help="replay this run (default: a new seed)")
    parser.add_argument("--faults", type=int, default=1000, help="faults to inject (1000)")
    parser.add_argument("--edges", type=int, default=2, help="edge nodes (2)")
    parser.add_argument(
        "--replicas",
        type=int,
        default=0,
        help="hub replicas on a throwaway PostgreSQL behind HAProxy (0: one hub on SQLite)",
    )
    parser.add_argument(
        "--insecure", action="store_true", help="replicas without TLS and tokens (--replicas)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="print each fault")
    parser.add_argument(
        "--no-disk-full",
        action="store_true",
        help="leave out the full-disk fault (it needs root, to mount a tmpfs for one edge)",
    )
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(2**31)
    disk_full = not args.no_disk_full
    scenario: Scenario
    if args.replicas:
        scenario = ReplicaScenario(
            seed, args.faults, args.edges, disk_full=disk_full, replicas=args.replicas,
            secure=not args.insecure,
        )  # fmt: skip
    else:
        scenario = Scenario(seed, args.faults, args.edges, disk_full=disk_full)
    started = time.monotonic()
    hubs = f", {args.replicas} replicas" if args.replicas else ""
    print(
        f"chaos seed={seed}: {args.faults} faults on {args.edges} edges{hubs} in {scenario.base}",
        flush=True,
    )
    progress = 0
    every = 10 if args.replicas else 50

    def log(line: str) -> None:
        nonlocal progress
        if args.verbose:
            print(line, flush=True)
        elif scenario.audit.faults >= progress + every:
            progress = scenario.audit.faults
            print(f"  {progress} faults, {time.monotonic() - started:.0f} s", flush=True)

    scenario.log = log
    audit = scenario.run()
    print(f"{audit.line()} ({time.monotonic() - started:.0f} s)", flush=True)
    for what in audit.findings:
        print(f"  {what}", flush=True)
    return 0 if audit.clean else 1


if __name__ == "__main__":
    sys.exit(main())
