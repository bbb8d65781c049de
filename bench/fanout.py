"""Scenario 3: desired-state fan-out.

1,000 devices spread over 100 simulated nodes (the fleet simulator, with a
simulated mapper per device on a real Mosquitto). One merge-patch API call
per device sets a new desired value (4 calls in flight); the figure is the
time from the first call to the last edge ack, and to the last mapper
receiving its delta. Per device: API call start → its node's ack of that
revision (p50/p99); per node: time until it has acked all of its devices
(p99). Baseline: the same number of messages (frames of the same size) from
a bare websockets server to 100 clients that answer each with an ack.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

from bench.baselines import latency_ms, ws_fanout
from bench.core import Figure, Options, percentile
from bench.fleet import Fleet, FleetConfig
from bench.procs import NS, Api, BenchHub, Mosquitto, create_many, device, model, workdir

NAME = "fanout"
NODES = 100


def _patch(api: Api, name: str, value: str) -> tuple[float, int]:
    began = time.monotonic()
    body = {"spec": {"properties": [{"name": "temperature", "desired": {"value": value}}]}}
    written = api.ok("PATCH", f"{NS}/devices/{name}", body, "application/merge-patch+json")
    return began, int(written["metadata"]["resourceVersion"])


def run(opts: Options) -> list[Figure]:
    per_node = opts.size(10, 2)
    devices = NODES * per_node
    with workdir(NAME) as tmp:
        broker = Mosquitto()
        broker.start()
        hub = BenchHub(tmp / "hub")
        fleet: Fleet | None = None
        try:
            hub.start()
            api = Api(hub.api)
            api.ok("POST", f"{NS}/devicemodels", model("fanout", 1))
            cfg = FleetConfig(
                hub=(hub.edge,),
                nodes=NODES,
                processes=1,
                prefix="fan",
                devices_per_node=per_node,
                mqtt=f"{broker.host}:{broker.port}",
            )
            owner = {d: n for n in cfg.node_names() for d in cfg.devices_of(n)}
            created = create_many(api, [device(d, n, "fanout", 1) for d, n in owner.items()],
                                  f"{NS}/devices")  # fmt: skip
            fleet = Fleet(cfg)
            fleet.start()
            if fleet.wait(lambda s: s["connected"] == NODES, 60) is None:
                raise RuntimeError("the simulated nodes did not connect")
            if not _all_acked(fleet, {n: created for n in cfg.node_names()}, 60):
                raise RuntimeError("the simulated nodes did not receive their devices")
            deltas_before = fleet.stats()["deltas"]
            start = time.monotonic()
            value = str(int(time.time()) % 1000)
            with ThreadPoolExecutor(4) as pool:
                calls = list(pool.map(lambda d: _patch(api, d, value), owner))
            api_done = time.monotonic()
            last_rev = {n: 0 for n in cfg.node_names()}
            for d, (_t, rev) in zip(owner, calls, strict=True):
                last_rev[owner[d]] = max(last_rev[owner[d]], rev)
            if not _all_acked(fleet, last_rev, 120):
                raise RuntimeError("not every node acked its desired values")
            fleet.wait(lambda s: s["deltas"] - deltas_before >= devices, 60)
            stats = fleet.stats()
            log = fleet.ack_log()
        finally:
            if fleet is not None:
                fleet.stop()
            hub.stop()
            broker.cleanup()
    per_device = [
        _ack_time(log[owner[d]], rev) - began for d, (began, rev) in zip(owner, calls, strict=True)
    ]
    per_node = [_ack_time(log[n], rev) - start for n, rev in last_rev.items()]
    all_acked = max(per_node)
    deltas = stats["deltas"] - deltas_before
    frame = _frame_like(owner)
    base_total, base_lat = ws_fanout(NODES, devices, frame)
    common = {"scenario": NAME, "baseline_name": f"ws echo, {devices} frames"}
    return [
        Figure(name=f"{devices} desired writes: all edges acked", value=all_acked, unit="s",
               baseline=base_total, note=f"API calls took {api_done - start:.2f} s "
               f"({devices / (api_done - start):.0f}/s)", **common),
        Figure(name="all mapper deltas received", value=stats["last_delta"] - start, unit="s",
               note=f"{deltas} of {devices} deltas (simulated nodes' MQTT bridge)",
               scenario=NAME),
        Figure(name="per device: API call -> edge ack p50", value=latency_ms(per_device, 50),
               unit="ms", baseline=latency_ms(base_lat, 50), **common),
        Figure(name="per device: API call -> edge ack p99", value=latency_ms(per_device, 99),
               unit="ms", baseline=latency_ms(base_lat, 99), **common),
        Figure(name="per node: all its devices acked p99", value=percentile(per_node, 99),
               unit="s", scenario=NAME),
    ]  # fmt: skip


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
