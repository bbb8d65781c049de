"""The sync session of each side, sans-I/O: hub ↔ edge conversation rules in one place.

As in the ``websockets`` and ``h11`` libraries, each core takes events — a
frame received, a store job's result, a wake-up from the change feed — and
returns commands (``commands.py``): send a frame, close, log, run a job.
It never touches a socket, a clock or a database. ``cloudhub/edgeserver.py``
and ``edgecore/hublink.py`` are the thin shells that pump events in and carry
commands out; ``tests/sim`` wires the two cores together in memory with a
simulated network and simulated stores to check the whole conversation under
faults, from one seed.

- ``hub.HubSession`` — one edge connection on the hub;
- ``edge.EdgeSession`` — one connection of an edge to the hub;
- ``retry.classify`` — the edge's reconnect policy: retry or stop, and why.

docs/DESIGN.md holds both state tables and the reasons behind them.
"""

from edgeward.session.edge import EdgeSession, EdgeState
from edgeward.session.hub import HubSession, HubState
from edgeward.session.retry import Cause, Ended, Verdict, classify

__all__ = [
    "Cause",
    "EdgeSession",
    "EdgeState",
    "Ended",
    "HubSession",
    "HubState",
    "Verdict",
    "classify",
]
