"""``python -m bench`` (``make bench``): run the benchmarks, print a table, write JSON.

Every figure is printed beside a baseline measured in the same run on the
same machine, with their ratio and whether the figure meets its target.
Results go to bench/results/latest.json. docs/performance.md explains each
scenario, the results on a reference machine, and what the profiles showed.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import textwrap
import time
import traceback

from bench import (
    drain,
    edge_footprint,
    fanout,
    flood,
    ha_notify,
    ha_scale,
    history_cost,
    hub_scale,
    twin_rtt,
    twin_throughput,
    watch_memory,
)
from bench.core import Figure, Options, Scenario, Skipped, merge_runs, render_table, write_results
from bench.procs import INSECURE_ENV


def _scenario(module: object, title: str) -> Scenario:
    doc = (module.__doc__ or "").strip()
    return Scenario(module.NAME, title, doc.split("\n\n", 1)[-1], module.run)  # type: ignore[attr-defined]


SCENARIOS = [
    _scenario(twin_rtt, "1. twin round trip at the edge"),
    _scenario(twin_throughput, "2. twin throughput at the edge"),
    _scenario(fanout, "3. desired-state fan-out"),
    _scenario(hub_scale, "4. hub scale"),
    _scenario(edge_footprint, "5. edge footprint"),
    _scenario(drain, "6. drain after an outage"),
    _scenario(watch_memory, "7. watch memory"),
    _scenario(flood, "8. a mapper flood"),
    _scenario(history_cost, "9. twin history on the hub's report path"),
    _scenario(ha_notify, "10. change notification between hub replicas"),
    _scenario(ha_scale, "11. a fleet over three hub replicas"),
]


def _help() -> str:
    parts = ["scenarios (--only NAME,NAME):"]
    for s in SCENARIOS:
        body = textwrap.fill(" ".join(s.help.split()), 92, initial_indent="      ",
                             subsequent_indent="      ")  # fmt: skip
        parts.append(f"  {s.name}  ({s.title})\n{body}")
    parts.append(
        "the fleet simulator alone: python -m bench.fleet --help\n"
        "results: bench/results/latest.json; explanations: docs/performance.md"
    )
    return "\n\n".join(parts)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    names = [s.name for s in SCENARIOS]
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Edgeward benchmarks: each figure with a baseline measured in the same run.",
        epilog=_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--only",
        metavar="SCENARIO[,...]",
        help=f"run only these scenarios, comma-separated: {', '.join(names)}",
    )
    p.add_argument(
        "--repeat", type=int, default=1, metavar="N", help="run each scenario N times; medians"
    )
    p.add_argument(
        "--quick", action="store_true", help="small sizes and short windows: a smoke run"
    )
    p.add_argument(
        "--insecure",
        action="store_true",
        help="run hubs and edges without TLS (plain ws:// and http://), to measure what TLS costs",
    )
    p.add_argument("--list", action="store_true", help="list the scenarios and exit")
    p.add_argument("-v", "--verbose", action="store_true", help="show tracebacks of failures")
    args = p.parse_args(argv)
    if args.only:
        unknown = set(args.only.split(",")) - set(names)
        if unknown:
            p.error(f"unknown scenario {', '.join(sorted(unknown))}; choose from {names}")
    if args.repeat < 1:
        p.error("--repeat must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        for s in SCENARIOS:
            print(f"{s.name:16} {s.title}")
        return 0
    logging.basicConfig(level=logging.WARNING)
    if args.insecure:
        os.environ[INSECURE_ENV] = "1"  # the scenarios' hubs and edges read it
    print(f"transport: {'plain (--insecure)' if args.insecure else 'TLS, mutual on the edge port'}")
    opts = Options(quick=args.quick, repeat=args.repeat, verbose=args.verbose)
    wanted = set(args.only.split(",")) if args.only else None
    figures: list[Figure] = []
    skipped: dict[str, str] = {}
    failed = False
    for scenario in SCENARIOS:
        if wanted is not None and scenario.name not in wanted:
            continue
        runs: list[list[Figure]] = []
        for i in range(opts.repeat):
            began = time.monotonic()
            print(f"== {scenario.title} (run {i + 1}/{opts.repeat})", file=sys.stderr, flush=True)
            try:
                runs.append(scenario.run(opts))
            except Skipped as exc:
                skipped[scenario.name] = str(exc)
                break
            except Exception as exc:
                failed = True
                skipped[scenario.name] = f"failed: {type(exc).__name__}: {exc}".splitlines()[0]
                if opts.verbose:
                    traceback.print_exc()
                break
            print(f"   {time.monotonic() - began:.0f} s", file=sys.stderr, flush=True)
        if runs:
            figures += merge_runs(runs)
    print(render_table(figures, skipped))
    path = write_results(figures, skipped, opts)
    print(f"\nresults: {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
