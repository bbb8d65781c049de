"""The fleet simulator: thousands of simulated edge nodes against one hub.

Each simulated node keeps one websocket to the hub (``websockets``, no
compression, no proxy) and speaks the real sync protocol through
``edgeward.protocol``: ``hello`` with the revision it holds, ``welcome``,
``changes``/``snapshot`` applied and ``ack``ed, an in-memory outbox of
``report`` rows with per-node sequence numbers and ``report_ack``, periodic
``node/status`` reports as heartbeats, websocket pings, and reconnects with
capped, fully jittered exponential backoff (edgecore's defaults). Nodes are
spread over a few processes, each running one asyncio loop.

With ``--devices-per-node`` every node also owns devices; with ``--mqtt``
each device gets a simulated mapper on a real MQTT broker: the mapper
publishes reported values on ``$hw/events/device/<ns>/<name>/twin/update``,
the simulated node answers on ``…/twin/update/result`` and queues a
``twin/reported`` row for the hub, and desired values from the hub reach the
mapper as a ``…/twin/update/delta``. Without ``--mqtt``, devices report
straight into their node's outbox. Give ``--api`` to create the devices (and
their DeviceModel) on the hub first, so that the hub accepts their reports.

Use it to size a hub: start one, point the simulator at it, and watch the
hub's memory and CPU while the fleet runs (``--duration``). The summary at
the end shows how many nodes connected, acks and reports, reconnects, and
latencies (p50/p99).

    python -m bench.fleet --hub ws://127.0.0.1:10000 --nodes 2000 --processes 2 \\
        --heartbeat 30 --duration 120
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import multiprocessing
import multiprocessing.connection
import random
import resource
import ssl
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from edgeward import protocol
from edgeward.backoff import backoff
from edgeward.errors import ProtocolError
from edgeward.sync import OutboxCursor

DEVICE_TOPIC = "$hw/events/device/"
NODE_STATUS = {
    "capacity": {"cpu": 2, "memoryBytes": 2 << 30, "diskBytes": 32 << 30},
    "usage": {"cpuPercent": 3.0, "memoryBytes": 300 << 20, "memoryPercent": 15.0,
              "diskBytes": 4 << 30, "diskPercent": 12.5},
}  # fmt: skip
NODE_INFO = {"agentVersion": "fleet-sim", "os": "Linux", "architecture": "sim"}
MAX_SAMPLES = 50_000


@dataclass(frozen=True)
class FleetConfig:
    hub: tuple[str, ...]
    nodes: int = 100
    processes: int = 1
    prefix: str = "sim"
    first: int = 0
    heartbeat: float = 30.0
    devices_per_node: int = 0
    report_interval: float = 0.0
    mqtt: str | None = None
    namespace: str = "default"
    ping_interval: float = 20.0
    ping_timeout: float = 20.0
    connect_concurrency: int = 64
    reconnect_initial: float = 0.5
    reconnect_max: float = 30.0
    #: A directory with ca.crt, node.key and <node>.crt per node: connect with mutual TLS.
    tls_dir: str = ""
    #: Several hubs (replicas, no balancer): node i tries them in the i-th of their orders
    #: (itertools.permutations, cycled), so each hub is first for an even share of the
    #: fleet, and the nodes of a hub that dies move evenly to the others. False: every
    #: node tries ``hub`` in the order given (fallbacks).
    spread: bool = False

    def hub_order(self, index: int) -> tuple[str, ...]:
        """The hubs node number ``index`` tries, in order."""
        if not self.spread or len(self.hub) < 2:
            return self.hub
        orders = list(itertools.permutations(self.hub))
        return orders[index % len(orders)]

    def node_names(self) -> list[str]:
        return [f"{self.prefix}-{i:05d}" for i in range(self.first, self.first + self.nodes)]

    def devices_of(self, node: str) -> list[str]:
        return [f"{node}-d{j}" for j in range(self.devices_per_node)]


@dataclass
class Stats:
    """Counters of one worker process (summed by the controller)."""

    nodes: int = 0
    connected: int = 0
    sessions: int = 0
    reconnects: int = 0
    failed_connects: int = 0
    changes: int = 0
    items: int = 0
    acks: int = 0
    reports: int = 0
    rows: int = 0
    report_acks: int = 0
    deltas: int = 0
    last_delta: float = 0.0
    mapper_updates: int = 0
    refused: int = 0
    connect_latency: deque[float] = field(default_factory=lambda: deque(maxlen=MAX_SAMPLES))
    report_latency: deque[float] = field(default_factory=lambda: deque(maxlen=MAX_SAMPLES))


class SimNode:
    """One simulated edge node: its revision and outbox live in memory."""

    def __init__(
        self,
        name: str,
        cfg: FleetConfig,
        stats: Stats,
        bridge: MqttBridge | None,
        hubs: tuple[str, ...] | None = None,
    ):
        self.name = name
        self.cfg = cfg
        self.hubs = hubs or cfg.hub
        self.stats = stats
        self.bridge = bridge
        self.revision = 0
        self.next_seq = 1
        self.outbox: dict[int, protocol.ReportItem] = {}
        self.keys: dict[str, int] = {}
        self.wake = asyncio.Event()
        self.welcomed_at = 0.0
        self.sessions = 0
        self.acked: list[tuple[int, float]] = []  # (revision, time) of acks of non-empty frames
        self.desired: dict[str, dict[str, str]] = {}
        self.tls = _client_tls(cfg.tls_dir, name) if cfg.tls_dir else None

    # -- the outbox -----------------------------------------------------------

    def report(self, topic: str, key: str | None, body: dict[str, Any]) -> None:
        if key is not None and key in self.keys:
            self.outbox.pop(self.keys[key], None)  # an unsent state row: latest wins
        seq = self.next_seq
        self.next_seq += 1
        self.outbox[seq] = protocol.ReportItem(seq, topic, key, body)
        if key is not None:
            self.keys[key] = seq
        self.wake.set()

    def _acknowledged(self, seq: int) -> None:
        for s in [s for s in self.outbox if s <= seq]:
            item = self.outbox.pop(s)
            if item.key is not None and self.keys.get(item.key) == s:
                del self.keys[item.key]

    def _align(self, hub_seq: int) -> None:
        if hub_seq >= self.next_seq:  # the hub knows seqs we never issued: renumber
            items = list(self.outbox.values())
            self.outbox.clear()
            self.keys.clear()
            self.next_seq = hub_seq + 1
            for item in items:
                self.report(item.topic, item.key, item.body)
        else:
            self._acknowledged(hub_seq)

    # -- the link ---------------------------------------------------------------

    async def run(self, gate: asyncio.Semaphore) -> None:
        delays = backoff(self.cfg.reconnect_initial, 2.0, self.cfg.reconnect_max)
        attempt = 0
        while True:
            url = self.hubs[attempt % len(self.hubs)]
            attempt += 1
            began = time.monotonic()
            try:
                async with gate:
                    ws = await connect(
                        url,
                        ssl=self.tls,
                        compression=None,
                        proxy=None,
                        open_timeout=30,
                        ping_interval=self.cfg.ping_interval,
                        ping_timeout=self.cfg.ping_timeout,
                        max_size=protocol.MAX_FRAME_BYTES,
                    )
                    try:
                        welcome = await self._hello(ws)
                    except BaseException:
                        # a hello the hub answered late would leave a session open there
                        # that this node no longer reads: close it
                        ws.transport.abort()
                        raise
                self.stats.connect_latency.append(time.monotonic() - began)
                delays = backoff(self.cfg.reconnect_initial, 2.0, self.cfg.reconnect_max)
                attempt -= 1
                await self._session(ws, welcome)
                if ws.close_code == protocol.CLOSE_MOVE:
                    attempt += 1  # rebalancing: the next hub, as edgecore does
            except (OSError, TimeoutError, InvalidHandshake, ConnectionClosed, ProtocolError):
                self.stats.failed_connects += 1
            await asyncio.sleep(next(delays))

    async def _hello(self, ws: ClientConnection) -> protocol.Welcome:
        hello = protocol.Hello(self.name, self.revision, agent="fleet-sim", node_info=NODE_INFO)
        await ws.send(hello.encode())
        async with asyncio.timeout(30):
            welcome = protocol.decode(await ws.recv())
        if not isinstance(welcome, protocol.Welcome):
            await ws.close()
            raise ProtocolError(protocol.UNEXPECTED, f"expected welcome, got {welcome.type}")
        return welcome

    async def _session(self, ws: ClientConnection, welcome: protocol.Welcome) -> None:
        self._align(welcome.report_seq)
        self.welcomed_at = time.monotonic()
        self.sessions += 1
        self.stats.sessions += 1
        self.stats.reconnects += self.sessions > 1
        self.stats.connected += 1
        cursor = OutboxCursor(acked=welcome.report_seq)
        sent_at: dict[int, float] = {}
        snapshot: list[protocol.Change] = []
        sender = asyncio.create_task(self._send_outbox(ws, cursor, sent_at))
        try:
            async for frame in ws:
                msg = protocol.decode(frame)
                if isinstance(msg, protocol.Changes):
                    await self._apply(ws, msg.revision, msg.items)
                elif isinstance(msg, protocol.Snapshot):
                    snapshot.extend(msg.items)
                    if msg.final:
                        await self._apply(ws, msg.revision, snapshot)
                        snapshot = []
                elif isinstance(msg, protocol.ReportAck):
                    if cursor.acknowledged(msg.seq):
                        now = time.monotonic()
                        for last in [s for s in sent_at if s <= msg.seq]:
                            self.stats.report_latency.append(now - sent_at.pop(last))
                        self._acknowledged(msg.seq)
                        self.stats.report_acks += 1
                        self.wake.set()
                elif isinstance(msg, protocol.Error):
                    self.stats.refused += 1
        except ConnectionClosed:
            pass
        finally:
            self.stats.connected -= 1
            sender.cancel()

    async def _apply(
        self, ws: ClientConnection, revision: int, items: tuple[protocol.Change, ...] | list[Any]
    ) -> None:
        self.stats.changes += 1
        self.stats.items += len(items)
        for change in items:
            if change.kind == "Device" and change.op == "put" and self.bridge is not None:
                self._desired(change)
        self.revision = revision
        await ws.send(protocol.Ack(revision).encode())
        self.stats.acks += 1
        if items:
            self.acked.append((revision, time.monotonic()))
            del self.acked[:-1000]

    def _desired(self, change: protocol.Change) -> None:
        assert change.object is not None and self.bridge is not None
        device_id = f"{change.namespace}/{change.name}"
        desired = {
            p["name"]: p["desired"]["value"]
            for p in change.object.get("spec", {}).get("properties", [])
            if isinstance(p.get("desired"), dict) and "value" in p["desired"]
        }
        if desired and desired != self.desired.get(device_id):
            self.desired[device_id] = desired
            self.bridge.delta(device_id, desired)

    async def _send_outbox(
        self, ws: ClientConnection, cursor: OutboxCursor, sent_at: dict[int, float]
    ) -> None:
        with contextlib.suppress(ConnectionClosed):
            await self._send_loop(ws, cursor, sent_at)

    async def _send_loop(
        self, ws: ClientConnection, cursor: OutboxCursor, sent_at: dict[int, float]
    ) -> None:
        while True:
            self.wake.clear()
            if cursor.can_send:
                items = [i for s, i in self.outbox.items() if s > cursor.sent][:500]
                if items:
                    await ws.send(protocol.Report(tuple(items)).encode())
                    cursor.sending(items[-1].seq)
                    sent_at[items[-1].seq] = time.monotonic()
                    self.stats.reports += 1
                    self.stats.rows += len(items)
                    continue
            await self.wake.wait()

    async def heartbeat(self) -> None:
        await asyncio.sleep(random.uniform(0, self.cfg.heartbeat))
        while True:
            self.report(protocol.TOPIC_NODE_STATUS, "node-status", NODE_STATUS)
            await asyncio.sleep(self.cfg.heartbeat)

    async def devices_report(self) -> None:
        """Without MQTT: each device's reported twin straight into the outbox."""
        await asyncio.sleep(random.uniform(0, self.cfg.report_interval))
        n = 0
        while True:
            n += 1
            for device in self.cfg.devices_of(self.name):
                device_id = f"{self.cfg.namespace}/{device}"
                self.report(protocol.TOPIC_TWIN_REPORTED, f"twin/{device_id}",
                            twin_body(device_id, str(n % 100)))  # fmt: skip
            await asyncio.sleep(self.cfg.report_interval)


def twin_body(device_id: str, value: str, stamp: int | None = None) -> dict[str, Any]:
    """A ``twin/reported`` row as edgecore writes it (one property, ``temperature``)."""
    stamp = stamp if stamp is not None else time.time_ns() // 1_000_000
    twin = {"reported": {"value": value, "timestamp": stamp}, "observedDesired": None,
            "deleted": False, "type": "float"}  # fmt: skip
    return {"device": device_id, "twins": {"temperature": twin}}


class MqttBridge:
    """Simulated mappers (one client) and the nodes' MQTT side (another), in one process."""

    def __init__(self, broker: str, nodes: dict[str, SimNode], cfg: FleetConfig) -> None:
        import paho.mqtt.client as mqtt

        from bench.mqttload import client

        self.mqtt = mqtt
        self.loop = asyncio.get_running_loop()
        self.cfg = cfg
        self.nodes = nodes
        self.owner = {f"{cfg.namespace}/{d}": n for n in nodes for d in cfg.devices_of(n)}
        host, _, port = broker.rpartition(":")
        self.edge = client("fleet-edge")
        self.mapper = client("fleet-mapper")
        self.edge.on_connect = lambda c, *_a: c.subscribe(f"{DEVICE_TOPIC}+/+/twin/update", 1)
        self.edge.on_message = self._on_update
        self.mapper.on_connect = lambda c, *_a: c.subscribe(
            f"{DEVICE_TOPIC}+/+/twin/update/delta", 1
        )
        self.mapper.on_message = self._on_delta
        self.stats: Stats | None = None
        for c in (self.edge, self.mapper):
            c.connect(host, int(port))
            c.loop_start()

    def delta(self, device_id: str, desired: dict[str, str]) -> None:
        body = {"event_id": "d", "timestamp": time.time_ns() // 1_000_000,
                "twin": {k: {"expected": {"value": v}} for k, v in desired.items()},
                "delta": desired}  # fmt: skip
        self.edge.publish(f"{DEVICE_TOPIC}{device_id}/twin/update/delta", json.dumps(body), 1)

    def _on_update(self, _c: Any, _u: Any, msg: Any) -> None:
        device_id = msg.topic[len(DEVICE_TOPIC) : -len("/twin/update")]
        node = self.owner.get(device_id)
        if node is None:
            return
        body = json.loads(msg.payload)
        value = body["twin"]["temperature"]["actual"]["value"]
        result = {"event_id": body.get("event_id", ""), "timestamp": 0, "twin": body["twin"]}
        self.edge.publish(msg.topic + "/result", json.dumps(result), 1)
        row = twin_body(device_id, value)
        sim = self.nodes[node]
        self.loop.call_soon_threadsafe(
            sim.report, protocol.TOPIC_TWIN_REPORTED, f"twin/{device_id}", row
        )

    def _on_delta(self, _c: Any, _u: Any, msg: Any) -> None:
        device_id = msg.topic[len(DEVICE_TOPIC) : -len("/twin/update/delta")]
        if device_id not in self.owner:
            return  # another edge's device on a shared broker: its own mapper answers
        if self.stats is not None:
            self.stats.deltas += 1
            self.stats.last_delta = time.monotonic()
        body = json.loads(msg.payload)
        value = next(iter(body.get("delta", {}).values()), "0")
        self.publish_update(device_id, value)

    def publish_update(self, device_id: str, value: str) -> None:
        body = {"event_id": "m", "timestamp": 0,
                "twin": {"temperature": {"actual": {"value": value}}}}  # fmt: skip
        self.mapper.publish(f"{DEVICE_TOPIC}{device_id}/twin/update", json.dumps(body), 1)

    async def mappers(self) -> None:
        """Every device's mapper publishes a reported value every ``report_interval``."""
        devices = list(self.owner)
        n = 0
        while True:
            n += 1
            for device_id in devices:
                self.publish_update(device_id, str(n % 100))
                if self.stats is not None:
                    self.stats.mapper_updates += 1
            await asyncio.sleep(self.cfg.report_interval)

    def close(self) -> None:
        for c in (self.edge, self.mapper):
            c.loop_stop()
            c.disconnect()


# ---- one worker process ---------------------------------------------------------------------


def _client_tls(directory: str, node: str) -> ssl.SSLContext:
    """The node's TLS context: the hub's CA, its own certificate (the fleet shares one key)."""
    ctx = ssl.create_default_context(cafile=f"{directory}/ca.crt")
    ctx.load_cert_chain(f"{directory}/{node}.crt", f"{directory}/node.key")
    return ctx


async def _worker_main(cfg: FleetConfig, conn: multiprocessing.connection.Connection) -> None:
    stats = Stats(nodes=cfg.nodes)
    nodes: dict[str, SimNode] = {}
    bridge = MqttBridge(cfg.mqtt, nodes, cfg) if cfg.mqtt else None
    for i, name in enumerate(cfg.node_names()):
        nodes[name] = SimNode(name, cfg, stats, bridge, cfg.hub_order(cfg.first + i))
    if bridge is not None:
        bridge.owner = {f"{cfg.namespace}/{d}": n for n in nodes for d in cfg.devices_of(n)}
        bridge.stats = stats
    gate = asyncio.Semaphore(cfg.connect_concurrency)
    tasks = [asyncio.create_task(n.run(gate)) for n in nodes.values()]
    tasks += [asyncio.create_task(n.heartbeat()) for n in nodes.values()]
    if cfg.devices_per_node and cfg.report_interval > 0:
        if bridge is not None:
            tasks.append(asyncio.create_task(bridge.mappers()))
        else:
            tasks += [asyncio.create_task(n.devices_report()) for n in nodes.values()]
    done = asyncio.Event()
    loop = asyncio.get_running_loop()

    def answer() -> None:
        try:
            cmd, arg = conn.recv()
        except EOFError:
            done.set()
            return
        conn.send(_command(cmd, arg, stats, nodes))
        if cmd == "stop":
            done.set()

    loop.add_reader(conn.fileno(), answer)
    conn.send("ready")
    await done.wait()
    loop.remove_reader(conn.fileno())
    for t in tasks:
        t.cancel()
    if bridge is not None:
        bridge.close()


def _command(cmd: str, arg: Any, stats: Stats, nodes: dict[str, SimNode]) -> Any:
    if cmd in ("stats", "stop"):
        out = asdict(stats)
        out["connect_latency"] = list(stats.connect_latency)
        out["report_latency"] = list(stats.report_latency)
        out["rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return out
    if cmd == "acked":  # when each node first acked a revision >= arg (None: not yet)
        return {n.name: next((t for r, t in n.acked if r >= arg), None) for n in nodes.values()}
    if cmd == "ack_log":  # every node's (revision, time) acks of non-empty frames
        return {n.name: list(n.acked) for n in nodes.values()}
    if cmd == "welcomed_since":  # nodes welcomed (again) after monotonic time arg
        return sum(1 for n in nodes.values() if n.welcomed_at > arg)
    if cmd == "mapper_update":  # arg: (device_id, value): a mapper reports a value now
        for n in nodes.values():
            if n.bridge is not None:
                n.bridge.publish_update(*arg)
                break
        return True
    raise ValueError(f"unknown command {cmd}")


def _worker(cfg: FleetConfig, conn: multiprocessing.connection.Connection) -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_worker_main(cfg, conn))


# ---- the controller ---------------------------------------------------------------------------


class Fleet:
    """Starts the worker processes and asks them for their counters."""

    def __init__(self, cfg: FleetConfig) -> None:
        self.cfg = cfg
        self.workers: list[tuple[multiprocessing.process.BaseProcess, Any]] = []

    def start(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        per, extra = divmod(self.cfg.nodes, self.cfg.processes)
        first = self.cfg.first
        for i in range(self.cfg.processes):
            count = per + (i < extra)
            if count == 0:
                continue
            parent, child = ctx.Pipe()
            part = FleetConfig(**{**asdict(self.cfg), "nodes": count, "first": first})
            first += count
            proc = ctx.Process(target=_worker, args=(part, child), daemon=True)
            proc.start()
            child.close()
            self.workers.append((proc, parent))
        for _proc, conn in self.workers:
            if not conn.poll(60) or conn.recv() != "ready":
                raise RuntimeError("a fleet worker did not start")

    def ask(self, cmd: str, arg: Any = None) -> list[Any]:
        for _proc, conn in self.workers:
            conn.send((cmd, arg))
        return [conn.recv() for _proc, conn in self.workers]

    def stats(self) -> dict[str, Any]:
        return merge_stats(self.ask("stats"))

    def acked(self, revision: int) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for part in self.ask("acked", revision):
            out.update(part)
        return out

    def ack_log(self) -> dict[str, list[tuple[int, float]]]:
        out: dict[str, list[tuple[int, float]]] = {}
        for part in self.ask("ack_log"):
            out.update(part)
        return out

    def welcomed_since(self, when: float) -> int:
        return sum(self.ask("welcomed_since", when))

    def wait(self, predicate: Callable[[dict[str, Any]], bool], timeout: float) -> float | None:
        """Monotonic time when ``predicate(stats)`` first held (polled), None on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self.stats()):
                return time.monotonic()
            time.sleep(0.1)
        return None

    def pids(self) -> list[int]:
        return [p.pid for p, _ in self.workers if p.pid is not None]

    def stop(self) -> dict[str, Any]:
        try:
            final = merge_stats(self.ask("stop"))
        except (OSError, EOFError):
            final = {}
        for proc, _conn in self.workers:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
        self.workers = []
        return final


def merge_stats(parts: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for part in parts:
        for key, value in part.items():
            if isinstance(value, list):
                out.setdefault(key, []).extend(value)
            elif key == "last_delta":
                out[key] = max(out.get(key, 0.0), value)
            else:
                out[key] = out.get(key, 0) + value
    return out


def summary(stats: dict[str, Any]) -> str:
    from bench.core import percentile

    def ms(samples: list[float], q: float) -> str:
        return f"{percentile(samples, q) * 1000:.1f}" if samples else "-"

    lines = [
        f"nodes connected      {stats.get('connected', 0)} / {stats.get('nodes', 0)}",
        f"sessions (welcomes)  {stats.get('sessions', 0)}, reconnects {stats.get('reconnects', 0)}"
        f", failed connects {stats.get('failed_connects', 0)}",
        f"changes applied      {stats.get('changes', 0)} frames, {stats.get('items', 0)} objects,"
        f" {stats.get('acks', 0)} acks",
        f"reports              {stats.get('reports', 0)} frames, {stats.get('rows', 0)} rows,"
        f" {stats.get('report_acks', 0)} report_acks",
        f"connect latency      p50 {ms(stats.get('connect_latency', []), 50)} ms, "
        f"p99 {ms(stats.get('connect_latency', []), 99)} ms",
        f"report -> report_ack p50 {ms(stats.get('report_latency', []), 50)} ms, "
        f"p99 {ms(stats.get('report_latency', []), 99)} ms",
    ]
    if stats.get("mapper_updates") or stats.get("deltas"):
        lines.append(
            f"mqtt                 {stats.get('mapper_updates', 0)} mapper updates, "
            f"{stats.get('deltas', 0)} deltas received"
        )
    lines.append(f"simulator peak RSS   {stats.get('rss', 0) / 2**20:.0f} MiB (all processes)")
    return "\n".join(lines)


def create_devices(api_url: str, cfg: FleetConfig, token: str = "", ca: str | None = None) -> None:
    """A DeviceModel ``fleet-sim`` and every simulated device, bound to its node."""
    from pathlib import Path

    from bench.procs import NS, Api, create_many, device, model

    api = Api(api_url, token, Path(ca) if ca else None)
    status, _ = api.request("POST", f"{NS}/devicemodels", model("fleet-sim", 1))
    if status not in (201, 409):
        raise RuntimeError(f"cannot create the DeviceModel: HTTP {status}")
    bodies = [device(d, n, "fleet-sim", 1) for n in cfg.node_names() for d in cfg.devices_of(n)]
    create_many(api, bodies, f"{NS}/devices")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.fleet",
        description=__doc__.split("\n\n")[0] + " Size a hub before buying hardware: "
        "run a hub, point this at it, watch the hub's RSS and CPU.",
        epilog="example: python -m bench.fleet --hub ws://127.0.0.1:10000 --nodes 10000 "
        "--processes 4 --heartbeat 30 --duration 300",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--hub",
        action="append",
        required=True,
        metavar="URL",
        help="hub edge endpoint, e.g. ws://127.0.0.1:10000 (repeat for fallbacks)",
    )
    p.add_argument(
        "--spread",
        action="store_true",
        help="with several --hub (replicas): each node starts on its own hub, an even share "
        "on each, and falls back to the others in its own order",
    )
    p.add_argument("--nodes", type=int, default=100, help="simulated nodes")
    p.add_argument(
        "--processes",
        type=int,
        default=1,
        help="worker processes (one asyncio loop each); ~2,500 nodes per process is comfortable",
    )
    p.add_argument("--prefix", default="sim", help="node names are PREFIX-00000, PREFIX-00001, …")
    p.add_argument(
        "--heartbeat",
        type=float,
        default=30.0,
        help="seconds between node/status reports per node (edgecore's status_interval)",
    )
    p.add_argument(
        "--ping-interval", type=float, default=20.0, help="seconds between websocket pings"
    )
    p.add_argument("--devices-per-node", type=int, default=0, help="devices owned by each node")
    p.add_argument(
        "--report-interval",
        type=float,
        default=0.0,
        help="seconds between reported values per device (0: devices only answer desired values)",
    )
    p.add_argument(
        "--mqtt", metavar="HOST:PORT", help="simulate a mapper per device on this MQTT broker"
    )
    p.add_argument(
        "--api",
        metavar="URL",
        help="hub REST API (http://HOST:PORT): create the simulated devices first",
    )
    p.add_argument(
        "--connect-concurrency",
        type=int,
        default=64,
        help="opening handshakes in flight per process",
    )
    p.add_argument(
        "--duration",
        type=float,
        default=60.0,
        help="seconds to run before printing the summary (0: until Ctrl-C)",
    )
    p.add_argument(
        "--tls-dir",
        metavar="DIR",
        default="",
        help="connect with mutual TLS (wss:// hubs): DIR holds the hub's ca.crt, one node.key "
        "and a <node>.crt per simulated node, signed by the hub's CA and recorded by the hub "
        "(bench.procs.BenchHub.enroll makes them)",
    )
    p.add_argument("--token", default="", help="bearer token for --api (a hub with TLS)")
    p.add_argument("--ca", default=None, help="the hub's CA file for an https --api")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    return p.parse_args(argv)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = FleetConfig(
        hub=tuple(args.hub),
        nodes=args.nodes,
        processes=max(1, min(args.processes, args.nodes)),
        prefix=args.prefix,
        heartbeat=args.heartbeat,
        devices_per_node=args.devices_per_node,
        report_interval=args.report_interval,
        mqtt=args.mqtt,
        ping_interval=args.ping_interval,
        connect_concurrency=args.connect_concurrency,
        tls_dir=args.tls_dir,
        spread=args.spread,
    )
    if args.api and cfg.devices_per_node:
        create_devices(args.api, cfg, args.token, args.ca)
    fleet = Fleet(cfg)
    fleet.start()
    began = time.monotonic()
    try:
        while args.duration <= 0 or time.monotonic() - began < args.duration:
            time.sleep(min(5.0, max(0.1, args.duration - (time.monotonic() - began))))
            if not args.json:
                s = fleet.stats()
                print(f"[{time.monotonic() - began:6.0f}s] connected {s['connected']}/"
                      f"{cfg.nodes}, acks {s['acks']}, report_acks {s['report_acks']}, "
                      f"reconnects {s['reconnects']}", file=sys.stderr)  # fmt: skip
    except KeyboardInterrupt:
        pass
    final = fleet.stop()
    if args.json:
        from bench.core import percentile

        for key in ("connect_latency", "report_latency"):
            samples = final.pop(key, [])
            final[f"{key}_p50_ms"] = percentile(samples, 50) * 1000
            final[f"{key}_p99_ms"] = percentile(samples, 99) * 1000
        print(json.dumps(final))
    else:
        print(summary(final))
    return 0


if __name__ == "__main__":
    sys.exit(main())
