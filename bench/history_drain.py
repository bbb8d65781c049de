"""An experiment, not a scenario: the twin-row drain (scenario 6) with twin history on and
off in turn, on one hub and edgecore, printing each drain's rate and the hub's CPU a row.

Scenario 9 sets history's cost, measured in process, against the drain's time a row; this
checks that the drain pays that cost (docs/performance.md §9). The hub is restarted with
``--history-max-per-property 0`` for "off"; each pair runs in the opposite order to the one
before, so a machine slowing down does not favour either.

    python -m bench.history_drain [--rows 50000] [--pairs 3]
"""

from __future__ import annotations

import argparse
import sys
import time

from bench import drain
from bench.procs import cpu_seconds
from bench.stack import Stack, edge_stack
from edgeward.protocol import TOPIC_TWIN_REPORTED

#: Seconds after a drain for the last history merge (every second) to be counted.
MERGE_WAIT = 1.2


def _drain(stack: Stack, history: bool, hub_flags: list[str], rows: int) -> tuple[float, float]:
    """(rows/s, hub CPU microseconds a row) of one drain of ``rows`` twin rows."""
    stack.hub.stop()
    stack.hub.extra = hub_flags + ([] if history else ["--history-max-per-property", "0"])
    stack.hub.start()
    time.sleep(1)
    stack.edge.stop()
    assert stack.hub.proc is not None
    before = cpu_seconds(stack.hub.proc.pid)
    rate, _ = drain.drain_rows(stack, TOPIC_TWIN_REPORTED, rows, 600)
    time.sleep(MERGE_WAIT)
    return rate, (cpu_seconds(stack.hub.proc.pid) - before) / rows * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.history_drain",
        description="The twin-row drain with twin history on and off in turn: rows/s and "
        "the hub's CPU a row of each.",
    )
    parser.add_argument("--rows", type=int, default=50_000, help="twin rows a drain (50000)")
    parser.add_argument("--pairs", type=int, default=3, help="on/off pairs (3)")
    args = parser.parse_args(argv)
    if args.rows < 1 or args.pairs < 1:
        parser.error("--rows and --pairs must be at least 1")
    config = drain.edge_config()
    try:
        with edge_stack("history-drain", drain.DEVICES, 1, True, "--config", str(config)) as stack:
            flags = list(stack.hub.extra)
            for pair in range(args.pairs):
                order = (False, True) if pair % 2 == 0 else (True, False)
                for history in order:
                    rate, cpu = _drain(stack, history, flags, args.rows)
                    print(
                        f"history {'on ' if history else 'off'}: {rate:,.0f} rows/s, "
                        f"hub CPU {cpu:.1f} us a row",
                        flush=True,
                    )
    finally:
        config.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
