"""Scenario 3: desired-state fan-out.

1,000 devices spread over 100 nodes: 98 simulated (the fleet simulator, with
a simulated mapper per device) and 2 real ``edgecore`` processes (1 with
--quick) whose devices each have a real mapper client subscribed to their
``…/twin/update/delta`` on a Mosquitto of its own, as on a gateway (the
simulated nodes share another). One merge-patch API call
per device sets a new desired value (4 calls in flight); the real nodes'
devices come at evenly spaced places in the call order. Figures, for the simulated
nodes: the time from the first call to the last edge ack and to the last
mapper receiving its delta; per device, API call start → its node's ack of
that revision (p50/p99); per node, the time until it has acked all of its
devices (p99). For the real edges: per device, API call start → delta
received by the mapper through edgecore (p50/p99), and the time until every
real mapper has its delta. Baseline: the same number of messages (frames of
the same size) from a bare websockets server to 100 clients that answer each
with an ack.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack

from bench.baselines import latency_ms, ws_fanout
from bench.core import Figure, Options, percentile
from bench.fleet import Fleet, FleetConfig
from bench.mqttload import DELTA, DEVICE_TOPIC, DeltaWatch
from bench.procs import NS, Api, BenchEdge, BenchHub, Mosquitto, create_many, device, model, workdir
from bench.stack import probe_twins, twins_ready

NAME = "fanout"
NODES = 100
#: How many of the NODES are real edgecore processes (the rest are simulated); --quick uses
#: at most 1; 0 runs the simulated nodes only.
REAL_EDGES = 2
#: Seconds a real edgecore has to connect, sync and serve its twins before the run fails.
EDGE_START_TIMEOUT = 60.0
#: Seconds after the last API call within which every real mapper must have its delta.
DELTA_WINDOW = 60.0


def _patch(api: Api, name: str, value: str) -> tuple[float, int]:
    began = time.monotonic()
    body = {"spec": {"properties": [{"name": "temperature", "desired": {"value": value}}]}}
    written = api.ok("PATCH", f"{NS}/devices/{name}", body, "application/merge-patch+json")
    return began, int(written["metadata"]["resourceVersion"])


def run(opts: Options) -> list[Figure]:
    per_node = opts.size(10, 2)
    real = min(REAL_EDGES, opts.size(REAL_EDGES, 1))
    devices = NODES * per_node
    if real:
        twins_ready()
    with workdir(NAME) as tmp, ExitStack() as cleanup:
        broker = Mosquitto()
        cleanup.callback(broker.cleanup)
        broker.start()
        hub = BenchHub(tmp / "hub")
        cleanup.callback(_stop, hub)
        hub.start()
        api = hub.api_client()
        cleanup.callback(api.close)
        api.ok("POST", f"{NS}/devicemodels", model("fanout", 1))
        cfg = FleetConfig(
            hub=(hub.edge,),
            nodes=NODES - real,
            processes=1,
            prefix="fan",
            devices_per_node=per_node,
            mqtt=f"{broker.host}:{broker.port}",
            tls_dir=str(tmp / "fleet-pki") if hub.secure else "",
        )
        if hub.secure:
            hub.enroll(cfg.node_names(), tmp / "fleet-pki")
        real_nodes = [f"{cfg.prefix}-real-{k}" for k in range(real)]
        order = _interleave(cfg.node_names(), real_nodes)
        owner = {d: n for n in order for d in cfg.devices_of(n)}
        created = create_many(api, [device(d, n, "fanout", 1) for d, n in owner.items()],
                              f"{NS}/devices")  # fmt: skip
        fleet = Fleet(cfg)
        cleanup.callback(fleet.stop)
        fleet.start()
        # Each real edge has its own broker, as on a gateway: on the simulator's, edgecore
        # would also get (and refuse) every simulated mapper's updates.
        brokers = [Mosquitto() for _ in real_nodes]
        for own in brokers:
            cleanup.callback(own.cleanup)
            own.start()
        edges = [
            BenchEdge(tmp / f"edge-{k}", n, hub.edge, own)
            for k, (n, own) in enumerate(zip(real_nodes, brokers, strict=True))
        ]
        for edge in edges:
            hub.enroll_edge(edge.data_dir, edge.node)
            cleanup.callback(_stop, edge)
            edge.start()
        if fleet.wait(lambda s: s["connected"] == cfg.nodes, 60) is None:
            raise RuntimeError("the simulated nodes did not connect")
        if not _all_acked(fleet, {n: created for n in cfg.node_names()}, 60):
            raise RuntimeError("the simulated nodes did not receive their devices")
        mappers: list[DeltaWatch] = []
        for edge, own in zip(edges, brokers, strict=True):
            _wait_synced(edge, created, EDGE_START_TIMEOUT)
            probe_twins(edge, own, cfg.devices_of(edge.node)[-1])
            ids = [f"{cfg.namespace}/{d}" for d in cfg.devices_of(edge.node)]
            mappers.append(DeltaWatch(f"mapper-{edge.node}", own.host, own.port, ids,
                                      reply=True))  # fmt: skip
            cleanup.callback(mappers[-1].close)
        # the simulated mappers' deltas, timed on their devices only
        simulated = [f"{cfg.namespace}/{d}" for d, n in owner.items() if n not in real_nodes]
        watch = DeltaWatch("fanout-watch", broker.host, broker.port, simulated,
                           filters=(f"{DEVICE_TOPIC}+/+{DELTA}",))  # fmt: skip
        cleanup.callback(watch.close)
        value = str(int(time.time()) % 1000)
        for w in (watch, *mappers):
            w.expect(value)
        start = time.monotonic()
        with ThreadPoolExecutor(4) as pool:
            calls = list(pool.map(lambda d: _patch(api, d, value), owner))
        api_done = time.monotonic()
        last_rev = {n: 0 for n in cfg.node_names()}
        for d, (_t, rev) in zip(owner, calls, strict=True):
            if owner[d] in last_rev:
                last_rev[owner[d]] = max(last_rev[owner[d]], rev)
        if not _all_acked(fleet, last_rev, 120):
            raise RuntimeError("not every simulated node acked its desired values")
        for edge, mapper in zip(edges, mappers, strict=True):
            _wait_deltas(edge, mapper, api_done + DELTA_WINDOW)
        watch.wait(60)
        log = fleet.ack_log()
        sim_deltas = watch.arrived()
        if not sim_deltas:
            raise RuntimeError("no simulated mapper received its delta within 60 s")
        real_deltas = {d: t for m in mappers for d, t in m.arrived().items()}
    by_device = dict(zip(owner, calls, strict=True))
    per_device = [_ack_time(log[owner[d]], rev) - began for d, (began, rev) in by_device.items()
                  if owner[d] not in real_nodes]  # fmt: skip
    node_done = [_ack_time(log[n], rev) - start for n, rev in last_rev.items()]
    all_acked = max(node_done)
    frame = _frame_like(owner)
    base_total, base_lat = ws_fanout(NODES, devices, frame)
    common = {"scenario": NAME, "baseline_name": f"ws echo, {devices} frames"}
    sim = f"{cfg.nodes} simulated nodes"
    figures = [
        Figure(name=f"{devices} desired writes: all edges acked", value=all_acked, unit="s",
               baseline=base_total, note=f"{sim}; API calls took {api_done - start:.2f} s "
               f"({devices / (api_done - start):.0f}/s)", **common),
        Figure(name="all mapper deltas received", value=max(sim_deltas.values()) - start,
               unit="s", note=f"{len(sim_deltas)} of {len(simulated)} deltas (simulated nodes' "
               "MQTT bridge)", scenario=NAME),
        Figure(name="per device: API call -> edge ack p50", value=latency_ms(per_device, 50),
               unit="ms", baseline=latency_ms(base_lat, 50), note=sim, **common),
        Figure(name="per device: API call -> edge ack p99", value=latency_ms(per_device, 99),
               unit="ms", baseline=latency_ms(base_lat, 99), **common),
        Figure(name="per node: all its devices acked p99", value=percentile(node_done, 99),
               unit="s", scenario=NAME),
    ]  # fmt: skip
    if real_deltas:
        through = [t - by_device[d.split("/", 1)[1]][0] for d, t in real_deltas.items()]
        last_call = max(by_device[d][0] for d, n in owner.items() if n in real_nodes) - start
        figures += [
            Figure(name="real edges: API call -> mapper delta p50", value=latency_ms(through, 50),
                   unit="ms", note=f"{len(through)} devices on {real} edgecore process(es)",
                   scenario=NAME),
            Figure(name="real edges: API call -> mapper delta p99", value=latency_ms(through, 99),
                   unit="ms", scenario=NAME),
            Figure(name="real edges: all mapper deltas received",
                   value=max(real_deltas.values()) - start, unit="s",
                   note=f"{len(real_deltas)} of {real * per_node} deltas; the last call to a "
                   f"real edge's device began at {last_call:.2f} s", scenario=NAME),
        ]  # fmt: skip
    return figures


def _interleave(simulated: list[str], real: list[str]) -> list[str]:
    """The real nodes at evenly spaced places among the simulated ones."""
    order = list(simulated)
    total = len(simulated) + len(real)
    for k, node in enumerate(real):
        order.insert((k + 1) * total // (len(real) + 1), node)
    return order


def _wait_synced(edge: BenchEdge, revision: int, timeout: float) -> None:
    """Until ``edge`` holds ``revision``; a clear error if it exits or takes longer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not edge.running:
            code = edge.proc.returncode if edge.proc is not None else None
            raise RuntimeError(f"edgecore {edge.node} exited ({code}): {_last_line(edge)}")
        with contextlib.suppress(sqlite3.Error, OSError):  # edge.db may not exist yet
            if edge.revision() >= revision:
                return
        time.sleep(0.05)
    raise RuntimeError(
        f"edgecore {edge.node} did not connect and sync to revision {revision} within "
        f"{timeout:.0f} s: {_last_line(edge)}"
    )


def _wait_deltas(edge: BenchEdge, mapper: DeltaWatch, deadline: float) -> None:
    """Until ``mapper`` has every delta; a clear error if ``edge`` exits or the window ends."""
    while not mapper.wait(min(0.5, deadline - time.monotonic())):
        if not edge.running:
            code = edge.proc.returncode if edge.proc is not None else None
            raise RuntimeError(f"edgecore {edge.node} exited ({code}): {_last_line(edge)}")
        if time.monotonic() >= deadline:
            missing = mapper.missing()
            raise RuntimeError(
                f"real edge {edge.node}: {len(missing)} of {len(mapper.devices)} deltas did not "
                f"reach its mapper within {DELTA_WINDOW:.0f} s of the last API call (first: "
                f"{missing[0]}); edge log: {_last_line(edge)}"
            )


def _last_line(edge: BenchEdge) -> str:
    lines = edge.log().strip().splitlines()
    return lines[-1] if lines else "(empty log)"


def _stop(proc: BenchHub | BenchEdge) -> None:
    if proc.running:
        proc.stop()


def _ack_time(acks: list[tuple[int, float]], revision: int) -> float:
    return next(t for r, t in acks if r >= revision)


def _all_acked(fleet: Fleet, wanted: dict[str, int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = fleet.ack_log()
        if all(any(r >= rev for r, _ in log.get(n, [])) for n, rev in wanted.items()):
            return True
        time.sleep(0.1)
    return False


def _frame_like(owner: dict[str, str]) -> str:
    """A changes frame carrying one Device, as the hub sends it (with ``"revision":0``)."""
    name, node = next(iter(owner.items()))
    body = device(name, node, "fanout", 1, desired="42")
    body["metadata"].update(namespace="default", uid="0" * 36, resourceVersion="1",
                            creationTimestamp="2024-01-01T00:00:00Z")  # fmt: skip
    item = {"op": "put", "kind": "Device", "namespace": "default", "name": name, "rv": 1,
            "object": body}  # fmt: skip
    return json.dumps({"type": "changes", "revision": 0, "items": [item]}, separators=(",", ":"))
