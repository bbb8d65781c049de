"""A chaos run: a real hub, real edgecores, a real Mosquitto, a fault-injecting proxy on
each edge's link, random faults during a steady load, then an audit.

The load, all the time: operators set desired values through the REST API, mappers report
values and publish uploads over MQTT. The faults, one after another (the seed decides which,
where and for how long): a link blackholed, delayed, throttled, reset or dropped; the hub
killed with SIGKILL and restarted; an edgecore killed and restarted; the disk of one edge
filled to the last byte and freed (run as root: that edge's data is on a tmpfs of its own).
Then everything heals,
the fleet is given time to converge, and the audit compares what each side acknowledged
with what the others hold:

- **lost**: a desired value the API acknowledged that the hub or the edge's cache does not
  end with; a reported value edgecore acknowledged to the mapper that the hub does not end
  with; an upload the broker took that the hub does not hold;
- **duplicated**: an upload the hub holds more than once;
- **refused**: uploads made while an edge's disk was full that the hub does not hold, which
  that edge counted and reported as refused (``usage.mqttUnstored.uploads``); more
  missing than it counted are lost;
- **drifted**: an edge whose cache digest differs from what the hub routes to it.

One line says it all, with the seed to replay a failing run: ``python -m tests.chaos --seed S``.
Values only grow (each write and report carries a counter), so a value applied twice or out
of order shows up as a final value other than the last acknowledged one.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import subprocess
import tempfile
import threading
import time
import urllib.error
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from edgeward.sync import cache_digest
from tests.support.faultproxy import FaultProxy
from tests.support.mosquitto import Mosquitto
from tests.support.procs import Edge, Hub, wait_for

NS = "/api/v1/namespaces/default"
D = "$hw/events/device/default"
DEVICES_PER_EDGE = 3
FAULTS = ("blackhole", "delay", "throttle", "reset", "drop", "kill-hub", "kill-edge")
#: Faults of an edge's link (its FaultProxy) and of the edge itself, whatever the hubs are.
LINK_FAULTS = ("blackhole", "delay", "throttle", "reset", "drop")
#: How the hubs run: a node is NotReady after 5 s of silence, links are pinged every second.
HUB_ARGS = (
    "--node-grace-period",
    "5",
    "--edge-ping-interval",
    "1",
    "--edge-ping-timeout",
    "2",
    "--drift-check-interval",
    "0.5",
)
#: Only where a tmpfs can be mounted (root): the disk of the first edge fills up.
DISK_FULL = "disk-full"


@dataclass
class Audit:
    seed: int
    writes: int = 0
    reports: int = 0
    uploads: int = 0
    faults: int = 0
    refused: int = 0
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    drifted: list[str] = field(default_factory=list)
    #: hub replicas (0: one hub, no replica checks, and the line says nothing of them)
    replicas: int = 0
    #: replica checks that failed after convergence: a connected node NotReady on some
    #: replica's API, a node without its one owner, not exactly one leader
    stuck: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.lost or self.duplicated or self.drifted or self.stuck)

    @property
    def findings(self) -> list[str]:
        return [*self.lost, *self.duplicated, *self.drifted, *self.stuck]

    def line(self) -> str:
        return (
            f"chaos seed={self.seed}: {self.writes} writes, {self.reports} reports, "
            f"{self.uploads} uploads, {self.faults} faults injected; "
            f"refused {self.refused} (counted), lost {len(self.lost)}, "
            f"duplicated {len(self.duplicated)}, "
            f"drifted {len(self.drifted)}"
            + (f"; {self.replicas} replicas: stuck {len(self.stuck)}" if self.replicas else "")
        )


class Mapper:
    """A device mapper for one edge's devices: reports numbered values and uploads, and
    remembers which reports edgecore acknowledged (a result without an error)."""

    def __init__(self, broker: Mosquitto, edge: str, devices: list[str]) -> None:
        self.edge = edge
        self.devices = devices
        self.acked: dict[str, int] = {}  # device → last value edgecore said it stored
        self.maybe: dict[str, list[int]] = {d: [] for d in devices}  # sent, no answer seen
        self.uploads: list[str] = []  # taken by the broker (PUBACK)
        self.refusable: list[str] = []  # taken by the broker while the edge's disk was full
        self.disk_full = False
        self._waiting: dict[str, tuple[str, int]] = {}  # event id → (device, value)
        self._lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"chaos-{edge}")
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.subscribe([(f"{D}/{d}/twin/update/result", 1) for d in devices])
        self.client.loop_start()

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            body = json.loads(msg.payload)
        except ValueError:
            return
        with self._lock:
            waited = self._waiting.pop(str(body.get("event_id")), None)
            if waited is None:
                return
            device, value = waited
            if "code" not in body:  # stored
                self.acked[device] = max(self.acked.get(device, 0), value)

    def report(self, device: str, value: int) -> None:
        event = f"{device}-{value}"
        with self._lock:
            self._waiting[event] = (device, value)
            self.maybe[device].append(value)
        body = {
            "event_id": event,
            "timestamp": 0,
            "twin": {"temperature": {"actual": {"value": f"{value}.5"}}},
        }
        self.client.publish(f"{D}/{device}/twin/update", json.dumps(body), qos=1)

    def upload(self, n: int) -> None:
        payload = f"{self.edge}-{n}"
        info = self.client.publish(f"$hw/events/upload/{self.edge}", payload, qos=1)
        try:
            info.wait_for_publish(5)
        except (RuntimeError, ValueError):
            return
        if info.is_published():
            (self.refusable if self.disk_full else self.uploads).append(payload)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class Scenario:
    """One hub, ``edges`` edges. :class:`tests.chaos.replicas.ReplicaScenario` runs the same
    load, convergence and audit against hub replicas: the hooks marked "hubs" below are
    what it replaces."""

    #: the faults :meth:`inject` draws from, in this order (a seed picks by index)
    FAULTS: tuple[str, ...] = FAULTS

    def __init__(
        self,
        seed: int,
        faults: int,
        edges: int = 2,
        base: Path | None = None,
        disk_full: bool = False,
    ) -> None:
        self.seed = seed
        # Faults draw from their own generator, so a seed replays the same faults in the same
        # order however much load the timing let through between them.
        self.rng = random.Random(seed)
        self.load_rng = random.Random(f"load-{seed}")
        self.fault_budget = faults
        self.disk_full = disk_full  # and run as root: a tmpfs is mounted for the first edge
        self.n_edges = edges
        self.base = base or Path(tempfile.mkdtemp(prefix=f"edgeward-chaos-{seed}-"))
        self.audit = Audit(seed)
        self.desired_acked: dict[str, int] = {}
        self.desired_maybe: dict[str, list[int]] = {}
        self.counter = 0
        self.log: Callable[[str], None] = lambda line: None

    # -- the fleet ----------------------------------------------------------------------

    # hubs: where they run, what edges connect to, how they end

    def start_hubs(self) -> None:
        """Start the hubs; ``self.hub`` is then what the API load and the audit talk to."""
        self.hub = Hub(self.base / "hub", *HUB_ARGS)
        self.hub.start()

    def hub_edge_port(self) -> int:
        """The loopback port the edges' fault proxies forward to."""
        return self.hub.edge_port

    def edge_url(self, proxy: FaultProxy) -> str:
        """The hub URL an edge is given: its fault proxy."""
        return f"ws://127.0.0.1:{proxy.port}"

    def prepare_edge(self, name: str, data_dir: Path) -> None:
        """Credentials for a new edge (none: the single hub runs --insecure)."""

    def stop_hubs(self) -> None:
        if hasattr(self, "hub"):
            self.hub.kill()

    def start(self) -> None:
        self.brokers: dict[str, Mosquitto] = {}
        self.start_hubs()
        model = {
            "apiVersion": "devices.kubeedge.io/v1beta1",
            "kind": "DeviceModel",
            "metadata": {"name": "chaos"},
            "spec": {
                "properties": [
                    {"name": "target", "type": "INT", "accessMode": "ReadWrite"},
                    {"name": "temperature", "type": "FLOAT", "accessMode": "ReadOnly"},
                ]
            },
        }
        assert self.hub.request("POST", f"{NS}/devicemodels", model)[0] == 201
        config = self.base / "edge.yaml"
        config.write_text(
            "status_interval: 1\n"
            "hub:\n  ping_interval: 1\n  ping_timeout: 2\n"
            "  reconnect_initial_delay: 0.1\n  reconnect_max_delay: 1\n"
        )
        self.edges: dict[str, Edge] = {}
        self.disk: Path | None = None
        if self.disk_full and os.geteuid() == 0:
            self.disk = self.base / "disk"
            self.disk.mkdir()
            subprocess.run(
                ["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(self.disk)], check=True
            )
        self.proxies: dict[str, FaultProxy] = {}
        self.mappers: dict[str, Mapper] = {}
        for e in range(self.n_edges):
            name = f"chaos-{e}"
            devices = [f"{name}-d{k}" for k in range(DEVICES_PER_EDGE)]
            for device in devices:
                body = {
                    "apiVersion": "devices.kubeedge.io/v1beta1",
                    "kind": "Device",
                    "metadata": {"name": device},
                    "spec": {
                        "deviceModelRef": {"name": "chaos"},
                        "nodeName": name,
                        "properties": [{"name": "target"}, {"name": "temperature"}],
                    },
                }
                assert self.hub.request("POST", f"{NS}/devices", body)[0] == 201
                self.desired_maybe[device] = []
            # each gateway has a broker of its own, as in the field
            broker = self.brokers[name] = Mosquitto()
            broker.start()
            proxy = FaultProxy("127.0.0.1", self.hub_edge_port())
            on_disk = self.disk is not None and e == 0
            data_dir = (self.disk if on_disk else self.base) / name  # type: ignore[operator]
            self.prepare_edge(name, data_dir)
            edge = Edge(
                data_dir,
                name,
                self.edge_url(proxy),
                "--mqtt",
                f"{broker.host}:{broker.port}",
                "--config",
                str(config),
            )
            edge.log_path = self.base / f"{name}.log"  # off the disk that fills up
            edge.start()
            self.proxies[name], self.edges[name] = proxy, edge
        for name in self.edges:
            wait_for(lambda n=name: self._twins_ready(n), 30, f"{name} to take its devices")
            self.mappers[name] = Mapper(
                self.brokers[name], name, [f"{name}-d{k}" for k in range(DEVICES_PER_EDGE)]
            )

    def _twins_ready(self, edge: str) -> bool:
        db = self.edges[edge].db()
        try:
            return db.execute("SELECT count(*) FROM twins").fetchone()[0] == DEVICES_PER_EDGE
        except sqlite3.Error:
            return False
        finally:
            db.close()

    def stop(self) -> None:
        for mapper in getattr(self, "mappers", {}).values():
            mapper.close()
        for edge in getattr(self, "edges", {}).values():
            edge.kill()
        for proxy in getattr(self, "proxies", {}).values():
            proxy.close()
        self.stop_hubs()
        for broker in getattr(self, "brokers", {}).values():
            broker.cleanup()
        if getattr(self, "disk", None) is not None:
            subprocess.run(["umount", "-l", str(self.disk)], check=False)

    # -- load -----------------------------------------------------------------------------

    def load(self, seconds: float) -> None:
        """Writes, reports and uploads for ``seconds``."""
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            self.counter += 1
            edge = self.load_rng.choice(sorted(self.edges))
            device = f"{edge}-d{self.load_rng.randrange(DEVICES_PER_EDGE)}"
            what = self.load_rng.random()
            if what < 0.4:
                self._write(device, self.counter)
            elif what < 0.8:
                self.mappers[edge].report(device, self.counter)
                self.audit.reports += 1
            else:
                self.mappers[edge].upload(self.counter)
                self.audit.uploads += 1
            time.sleep(0.02)

    def _write(self, device: str, value: int) -> None:
        patch = {"spec": {"properties": [{"name": "target", "desired": {"value": str(value)}}]}}
        # a merge patch replaces the properties list: keep temperature in it
        patch["spec"]["properties"].append({"name": "temperature"})
        self.audit.writes += 1
        self.desired_maybe[device].append(value)
        try:
            status, _ = self.hub.request(
                "PATCH", f"{NS}/devices/{device}", patch, "application/merge-patch+json"
            )
        except (OSError, urllib.error.URLError):
            return  # the hub is down: not acknowledged (it may or may not have applied it)
        if status == 200:
            self.desired_acked[device] = value

    # -- faults -----------------------------------------------------------------------------

    def inject(self) -> None:
        fault = self.rng.choice(self.FAULTS + ((DISK_FULL,) if self.disk is not None else ()))
        edge = self.rng.choice(sorted(self.edges))
        seconds = self.rng.uniform(0.3, 2.5)
        if fault == DISK_FULL:  # long enough to outlast the room left in SQLite's WAL
            edge, seconds = min(self.edges), seconds + 3
        self.audit.faults += 1
        on_edge = fault in LINK_FAULTS or fault in ("kill-edge", DISK_FULL)
        self.log(f"fault {self.audit.faults}: {fault} {edge if on_edge else ''} {seconds:.1f}s")
        proxy = self.proxies[edge]
        if fault in ("blackhole", "delay", "throttle"):
            proxy.set(fault, delay=self.rng.uniform(0.1, 1.0), rate=2048)
            self.load(seconds)
            proxy.set("pass")
        elif fault == "reset":
            proxy.reset()
            self.load(seconds)
        elif fault == "drop":
            proxy.drop()
            self.load(seconds)
        elif fault == DISK_FULL:
            self.fill_disk(seconds)
        elif fault == "kill-edge":
            self.edges[edge].kill()
            self.load(seconds)
            self.edges[edge].start()
        else:
            self.hub_fault(fault, seconds)
        self.load(self.rng.uniform(0.2, 1.0))

    def hub_fault(self, fault: str, seconds: float) -> None:
        """hubs: inject ``fault`` (one of :attr:`FAULTS` that is not an edge's), under load."""
        assert fault == "kill-hub", fault
        self.hub.kill()
        self.load(seconds)
        self.hub.start()

    def fill_disk(self, seconds: float) -> None:
        """Take every free byte of the first edge's disk for ``seconds`` of load, then give
        them back."""
        assert self.disk is not None
        mapper = self.mappers[min(self.edges)]
        filler = self.disk / "filler"
        out = filler.open("wb", buffering=0)  # unbuffered: nothing left to flush at close
        try:
            while True:
                out.write(b"\0" * 65536)
        except OSError:
            pass
        finally:
            out.close()
        mapper.disk_full = True
        try:
            self.load(seconds)
        finally:
            filler.unlink()
            mapper.disk_full = False

    def run(self) -> Audit:
        self.start()
        try:
            self.load(1.0)
            for _ in range(self.fault_budget):
                self.inject()
            for proxy in self.proxies.values():
                proxy.set("pass")
            self.converge()
            self.check()
        finally:
            self.stop()
        return self.audit

    # -- the audit ----------------------------------------------------------------------------

    def converge(self, timeout: float = 90) -> None:
        """Every outbox drained and every edge at the hub's head, or the timeout."""

        def settled() -> bool:
            for name, edge in self.edges.items():
                db = edge.db()
                try:
                    outbox = db.execute(
                        "SELECT count(*) FROM outbox WHERE topic != 'node/status'"
                    ).fetchone()[0]
                finally:
                    db.close()
                if outbox or self._cache_difference(name, edge) is not None:
                    return False
            return not self.hub_findings()

        try:
            wait_for(settled, timeout, "the fleet to converge")
        except AssertionError:
            self.log("did not converge within the timeout; auditing what there is")
        time.sleep(1.5)  # the last MQTT results and status reports

    def check(self) -> None:
        audit = self.audit
        for edge_name, edge in self.edges.items():
            mapper = self.mappers[edge_name]
            for device in mapper.devices:
                status, body = self.hub.request("GET", f"{NS}/devices/{device}")
                props = {p["name"]: p for p in body.get("spec", {}).get("properties", [])}
                desired = props.get("target", {}).get("desired", {}).get("value")
                twins = {t["propertyName"]: t for t in body.get("status", {}).get("twins", [])}
                reported = twins.get("temperature", {}).get("reported", {}).get("value")
                self._check_final(
                    f"desired {device}",
                    desired,
                    self.desired_acked.get(device),
                    self.desired_maybe[device],
                    audit.lost,
                )
                acked = mapper.acked.get(device)
                want = None if acked is None else acked
                got = None if reported is None else int(float(reported) - 0.5)
                self._check_final(f"reported {device}", got, want, mapper.maybe[device], audit.lost)
            self._check_cache(edge_name, edge)
        audit.stuck.extend(self.hub_findings())
        held: dict[str, int] = {}
        after = 0
        while True:
            status, page = self.hub.request("GET", f"/api/v1/events?after={after}&limit=1000")
            if status != 200 or not page["items"]:
                break
            for item in page["items"]:
                held[item["payload"]] = held.get(item["payload"], 0) + 1
            after = page["metadata"]["last"]
        for name, mapper in self.mappers.items():
            for payload in mapper.uploads:
                if payload not in held:
                    audit.lost.append(f"upload {payload}")
            missing = [p for p in mapper.refusable if p not in held]
            counted = self._refused_count(name)
            audit.refused += min(len(missing), counted)
            audit.lost.extend(
                f"upload {p} (made on a full disk; {counted} refusals counted)"
                for p in missing[counted:]
            )
        audit.duplicated.extend(f"upload {p} x{n}" for p, n in held.items() if n > 1)

    def hub_findings(self) -> list[str]:
        """hubs: what is wrong with the hubs themselves once converged (one hub: nothing)."""
        return []

    def _refused_count(self, node: str) -> int:
        """The uploads ``node`` reported it refused because edge.db could not store them."""
        _status, body = self.hub.request("GET", f"/api/v1/nodes/{node}")
        usage = body.get("status", {}).get("usage", {})
        return int(usage.get("mqttUnstored", {}).get("uploads", 0))

    @staticmethod
    def _check_final(
        what: str, final: Any, acked: int | None, maybe: list[int], lost: list[str]
    ) -> None:
        """The final value is the last acknowledged one, or one sent after it whose answer
        was lost in a fault (it may have been applied): anything else lost an update."""
        if acked is None:
            return
        allowed = {str(acked)} | {str(v) for v in maybe if v > acked}
        if final is None or str(int(final)) not in allowed:
            lost.append(f"{what}: ends at {final}, acknowledged {acked}")

    def _check_cache(self, name: str, edge: Edge) -> None:
        difference = self._cache_difference(name, edge)
        if difference is not None:
            self.audit.drifted.append(difference)

    def _cache_difference(self, name: str, edge: Edge) -> str | None:
        """None when the edge's cache holds what the hub routes to it (as drift detection
        compares them: bodies without status and resourceVersion)."""
        db = edge.db()
        try:
            cached = [
                (k, ns, n, json.loads(b))
                for k, ns, n, b in db.execute("SELECT kind, namespace, name, body FROM objects")
            ]
        finally:
            db.close()
        _, listing = self.hub.request("GET", f"{NS}/devices")
        _, models = self.hub.request("GET", f"{NS}/devicemodels")
        routed = [
            ("Device", "default", d["metadata"]["name"], d)
            for d in listing.get("items", [])
            if d.get("spec", {}).get("nodeName") == name
        ] + [("DeviceModel", "default", m["metadata"]["name"], m) for m in models["items"]]
        if cache_digest(cached) == cache_digest(routed):
            return None

        def versions(objects: list[Any]) -> list[tuple[str, str]]:
            return sorted((o[2], o[3]["metadata"]["resourceVersion"]) for o in objects)

        return f"{name}: the cache holds {versions(cached)}, the hub routes {versions(routed)}"
