"""A deterministic simulation of a hub and its edges, in the manner of FoundationDB's simulation
testing and TigerBeetle's VOPR.

The real session cores (``edgeward.session``: HubSession, EdgeSession, the reconnect policy),
the real protocol codec (every frame is encoded and decoded as text) and the real sync
bookkeeping run against a simulated network, simulated stores and a virtual clock, driven by
one seeded scheduler. While operators write and mappers report, faults strike at random:
connections drop mid-conversation, frames arrive twice, either side crashes and loses what it
had not committed, commits fail, the change log is compacted, the clock jumps. Invariants are
checked after every step and at the end; any failing seed replays exactly.

The stores are models of edge.db and the hub's database with the same semantics (commit is
the moment a job completes; a crash cancels what had not completed). The shells follow the
real ones: a frame's job is awaited before the next frame; the change feed's rows wait in a
small bounded buffer while a read is under way; the outbox is drained within its window.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from edgeward.backoff import backoff
from edgeward.kinds import ALL_NODES
from edgeward.protocol import Change, Rejected, ReportItem
from edgeward.session import Cause, EdgeSession, Ended, HubSession, classify
from edgeward.session.commands import (
    AlignOutbox,
    ApplyChanges,
    Close,
    Command,
    DeleteAcked,
    Job,
    Log,
    PersistReports,
    ReadLog,
    ReadOutbox,
    ReadSnapshot,
    Register,
    Send,
    SignCertificate,
    StageSnapshot,
)
from edgeward.sync import ChangeRow

Key = tuple[str, str, str]

NS = "default"
DEVICES = tuple(f"d{i}" for i in range(8))
MODELS = ("m0", "m1")
STATE_KEYS = ("twin/a", "twin/b", "state/a")
#: Rows on this topic are refused by the simulated hub (rejected, never retried).
BAD_TOPIC = "bad/topic"

HELLO_TIMEOUT = 10.0
WELCOME_TIMEOUT = 10.0
PROGRESS_INTERVAL = 30.0
SUB_MAX = 3  # the change feed's per-session buffer, small so that it overflows
OUTBOX_PAGE = 3  # rows per report frame, small so that the window fills


#: What the simulated CA answers a renew with.
SIGNED = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


class Violation(AssertionError):
    """An invariant does not hold."""


@dataclass
class Faults:
    """Probabilities per opportunity; all zero once the chaos phase is over."""

    drop: float = 0.02  # a connection dies, at an operator's or a mapper's step
    duplicate: float = 0.03  # a data frame is delivered twice
    job_fails: float = 0.02  # a store commit fails
    crash_hub: float = 0.005
    crash_edge: float = 0.01
    compact: float = 0.03
    clock_jump: float = 0.005

    @classmethod
    def none(cls) -> Faults:
        return cls(0, 0, 0, 0, 0, 0, 0)


# -- the scheduler ------------------------------------------------------------------------


class Scheduler:
    """Events at virtual times; ties broken by the order they were scheduled."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.now = 0.0
        self._queue: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()

    def at(self, delay: float, event: Callable[[], None]) -> None:
        heapq.heappush(self._queue, (self.now + delay, next(self._seq), event))

    def step(self) -> bool:
        if not self._queue:
            return False
        when, _, event = heapq.heappop(self._queue)
        self.now = max(self.now, when)
        event()
        return True

    def next_time(self) -> float:
        return self._queue[0][0] if self._queue else float("inf")

    def jump(self, seconds: float) -> None:
        """The clock jumps: everything scheduled within ``seconds`` is due at once."""
        self.now += seconds


# -- the network --------------------------------------------------------------------------


class Link:
    """One websocket: frames in order each way, a close after what was sent before it."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.id = next(world.link_ids)
        self.alive = True
        self.hub_end: HubConn | None = None
        self.edge_end: EdgeConn | None = None
        self._last = {"hub": 0.0, "edge": 0.0}

    def _deliver(self, to: str, event: Callable[[], None]) -> None:
        sched = self.world.sched
        when = max(self._last[to], sched.now + sched.rng.uniform(0.0005, 0.005))
        self._last[to] = when
        sched.at(when - sched.now, event)

    def send(self, to: str, text: str) -> None:
        if not self.alive:
            return
        copies = 2 if self._duplicable(text) and self.world.chance("duplicate") else 1
        for _ in range(copies):
            self._deliver(to, lambda: self._arrive(to, text))

    @staticmethod
    def _duplicable(text: str) -> bool:
        # TCP never duplicates; data frames are made to arrive twice to prove replays are
        # harmless. A second hello or welcome would only be a counted bad frame.
        return not text.startswith(('{"type":"hello"', '{"type":"welcome"'))

    def _arrive(self, to: str, text: str) -> None:
        if not self.alive:
            return
        end = self.hub_end if to == "hub" else self.edge_end
        if end is not None:
            end.frame(text)

    def close(self, by: str, code: int, reason: str) -> None:
        """A close frame: the other end learns of it after the frames sent before it."""
        if not self.alive:
            return
        to = "edge" if by == "hub" else "hub"
        self._deliver(to, lambda: self.end(code, reason))

    def end(self, code: int | None, reason: str = "") -> None:
        """The connection is over for both ends (``code`` None: it died without a close)."""
        if not self.alive:
            return
        self.alive = False
        if self.hub_end is not None:
            self.hub_end.gone()
        if self.edge_end is not None:
            self.edge_end.gone(code, reason)


# -- the hub ------------------------------------------------------------------------------


@dataclass
class StoredObject:
    rv: int
    body: dict[str, Any]
    route: str | None


@dataclass
class NodeReports:
    """What the hub holds of one node's outbox."""

    report_seq: int = 0
    acked_revision: int = 0
    state: dict[str, tuple[int, int]] = field(default_factory=dict)  # key → (seq, version)
    events: list[int] = field(default_factory=list)
    rejected: list[int] = field(default_factory=list)


class SimHub:
    """The hub's database (survives crashes) and its process (sessions, feed; does not)."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.up = True
        self.generation = 0
        self.head = 0
        self.compacted = 0
        self.objects: dict[Key, StoredObject] = {}
        self.log: list[ChangeRow] = []
        self.reports: dict[str, NodeReports] = {}
        #: For the checker: per node, the last change that touched each object (never compacted).
        self.last_touch: dict[str, dict[Key, ChangeRow]] = {}
        self.conns: list[HubConn] = []
        self.sessions: dict[str, HubConn] = {}

    # -- the database ------------------------------------------------------------------

    def write(self, kind: str, name: str, spec: dict[str, Any] | None, status_only: bool) -> None:
        """An operator's write (``spec`` None: delete) or an edge-reported status write."""
        key = (kind, NS, name)
        current = self.objects.get(key)
        if (spec is None or status_only) and current is None:
            return
        self.head += 1
        rv = self.head
        if spec is None:
            assert current is not None
            body, route, op = current.body, None, "delete"
            prev, log_route = current.route, None
            del self.objects[key]
        else:
            if status_only:
                assert current is not None
                spec = current.body["spec"]
            status = {"n": rv} if status_only else (current.body["status"] if current else {})
            body = {
                "apiVersion": "devices.kubeedge.io/v1beta1",
                "kind": kind,
                "metadata": {"name": name, "namespace": NS, "resourceVersion": str(rv)},
                "spec": spec,
                "status": status,
            }
            route = ALL_NODES if kind == "DeviceModel" else spec.get("nodeName")
            op = "update" if current else "create"
            prev = None if status_only or current is None else current.route
            log_route = None if status_only else route
            self.objects[key] = StoredObject(rv, body, route)
        row = ChangeRow(rv, kind, NS, name, op, log_route, prev, body)  # type: ignore[arg-type]
        self.log.append(row)
        for node, touched in self.last_touch.items():
            if row.touches(node):
                touched[key] = row
        if self.up:
            for conn in list(self.conns):
                conn.published(row)

    def compact(self) -> None:
        keep = self.world.rng.randint(0, 6)
        bound = self.head - keep
        if bound > self.compacted:
            self.compacted = bound
            self.log = [r for r in self.log if r.revision > bound]

    def log_page(self, node: str, after: int, limit: int) -> tuple[list[ChangeRow], int, int]:
        rows = [r for r in self.log if r.revision > after and r.touches(node)][:limit]
        return rows, self.compacted, self.head

    def snapshot_page(
        self, node: str, after: Key | None, limit: int
    ) -> tuple[list[dict[str, Any]], int]:
        keys = sorted(
            k
            for k, o in self.objects.items()
            if o.route in (node, ALL_NODES) and (after is None or k > after)
        )
        return [self.objects[k].body for k in keys[:limit]], self.head

    def persist(
        self, node: str, items: tuple[ReportItem, ...], acked: int
    ) -> tuple[int, tuple[Rejected, ...]]:
        held = self.reports.setdefault(node, NodeReports())
        rejected = []
        for item in items:
            if item.seq <= held.report_seq:
                continue  # a replay
            ident, version = item.body.get("id"), item.body.get("version")
            if item.topic == BAD_TOPIC or not isinstance(
                ident if item.key is None else version, int
            ):
                rejected.append(Rejected(item.seq, "not a row this hub takes"))
                held.rejected.append(ident)
            elif item.key is not None:
                old = held.state.get(item.key)
                if old is not None and old[1] > version:
                    raise Violation(f"{node}: {item.key} went back from {old[1]} to {version}")
                held.state[item.key] = (item.seq, version)
                # a twin report writes the device's status: a status-only change
                device = item.body.get("device")
                if isinstance(device, str):
                    self.write("Device", device, {}, status_only=True)
            else:
                if ident in held.events:
                    raise Violation(f"{node}: event {ident} persisted twice")
                held.events.append(ident)
        held.report_seq = max(held.report_seq, items[-1].seq)
        held.acked_revision = max(held.acked_revision, acked)
        return held.report_seq, tuple(rejected)

    # -- the process -----------------------------------------------------------------

    def accept(self, link: Link, identity: str | None) -> HubConn:
        """A new connection; ``identity`` is the node its certificate names (None: any)."""
        conn = HubConn(self, link, identity)
        link.hub_end = conn
        self.conns.append(conn)
        return conn

    def crash(self) -> None:
        self.up = False
        self.generation += 1
        for conn in list(self.conns):
            conn.link.end(None)
        self.conns.clear()
        self.sessions.clear()
        self.world.sched.at(self.world.rng.uniform(0.5, 8), self.restart)

    def restart(self) -> None:
        self.up = True


class Shell:
    """What both simulated shells do with a core's commands, as the real ones do."""

    side: str  # "hub" or "edge": this end of the link
    world: World
    link: Link

    def label(self) -> str:
        raise NotImplementedError

    def _start(self, job: Job, lane: str) -> None:
        raise NotImplementedError

    def execute(self, commands: list[Command], lane: str) -> None:
        other = "edge" if self.side == "hub" else "hub"
        for i, command in enumerate(commands):
            if not self.link.alive:
                return
            if isinstance(command, Send):
                self.link.send(other, command.message.encode())
            elif isinstance(command, Close):
                self.link.close(self.side, command.code, command.reason)
            elif isinstance(command, Log):
                self.world.logs.append(f"{self.label()}: {command.text}")
            else:
                if i != len(commands) - 1:
                    raise Violation(f"a job is not the last command: {commands}")
                assert isinstance(command, Job)
                self._start(command, lane)


class HubConn(Shell):
    """The hub's shell around one HubSession (cloudhub/edgeserver.py's SessionShell)."""

    side = "hub"

    def __init__(self, hub: SimHub, link: Link, identity: str | None) -> None:
        self.hub = hub
        self.world = hub.world
        self.link = link
        self.generation = hub.generation
        self.core = HubSession(identity, page=self.world.rng.choice((2, 3, 1000)))
        self.inbox: list[str] = []
        self.frame_job = False
        self.feed_job = False
        self.sub: list[ChangeRow] | None = None
        self.sub_overflowed = False
        self.world.sched.at(HELLO_TIMEOUT, self._hello_timer)

    @property
    def alive(self) -> bool:
        return self.link.alive and not self.core.closed and self.hub.generation == self.generation

    def label(self) -> str:
        return f"hub {self.core.node}"

    def _hello_timer(self) -> None:
        if self.alive:
            self.execute(self.core.hello_timed_out(), "frame")

    def frame(self, text: str) -> None:
        self.inbox.append(text)
        self.pump()

    def pump(self) -> None:
        while self.alive and self.inbox and not self.frame_job:
            self.execute(self.core.receive(self.inbox.pop(0)), "frame")

    def gone(self) -> None:
        self.core.connection_lost()
        if self in self.hub.conns:
            self.hub.conns.remove(self)
        if self.hub.sessions.get(self.core.node) is self:
            del self.hub.sessions[self.core.node]

    # -- the feed --------------------------------------------------------------------

    def published(self, row: ChangeRow) -> None:
        if self.sub is None or not self.alive or not row.touches(self.core.node):
            return
        if len(self.sub) >= SUB_MAX:
            self.sub.clear()
            self.sub_overflowed = True
        elif not self.sub_overflowed:
            self.sub.append(row)
        self.world.sched.at(0.0001, self.follow)

    def follow(self) -> None:
        if not self.alive or self.feed_job or self.sub is None:
            return
        if self.sub_overflowed:
            self.sub_overflowed = False
            self.execute(self.core.feed_overflowed(), "feed")
        elif self.sub:
            rows, self.sub[:] = list(self.sub), []
            self.execute(self.core.rows_published(rows), "feed")

    def idle_timer(self) -> None:
        if not self.alive:
            return
        if not self.feed_job and not self.sub and not self.sub_overflowed:
            self.execute(self.core.idle(self.hub.head), "feed")
        self.world.sched.at(PROGRESS_INTERVAL, self.idle_timer)

    # -- commands ----------------------------------------------------------------------

    def _start(self, job: Job, lane: str) -> None:
        if isinstance(job, Register):
            self.sub = []  # before the first read of the log, as the real shell subscribes
            previous = self.hub.sessions.get(job.node)
            self.hub.sessions[job.node] = self
            if previous is not None and previous is not self and previous.alive:
                previous.execute(previous.core.replaced(f"link-{self.link.id}"), "frame")
        setattr(self, f"{lane}_job", True)
        self.world.sched.at(self.world.latency(), lambda: self._complete(job, lane))

    def _complete(self, job: Job, lane: str) -> None:
        setattr(self, f"{lane}_job", False)
        if self.hub.generation != self.generation:
            return  # the hub crashed first: nothing was committed
        if self.world.chance("job_fails"):
            self.execute(self.core.job_failed(job, "simulated commit failure"), lane)
        else:
            self.execute(self._result(job), lane)
        self.pump()
        self.follow()

    def _result(self, job: Job) -> list[Command]:
        hub, node = self.hub, self.core.node
        if isinstance(job, Register):
            self.world.sched.at(PROGRESS_INTERVAL, self.idle_timer)
            return self.core.registered(hub.reports.setdefault(node, NodeReports()).report_seq)
        if isinstance(job, ReadLog):
            return self.core.log_read(*hub.log_page(node, job.after, job.limit))
        if isinstance(job, ReadSnapshot):
            return self.core.snapshot_read(*hub.snapshot_page(node, job.after_key, job.limit))
        if isinstance(job, SignCertificate):  # only a hostile client asks: real edges renew
            if self.world.chance("job_fails"):  # rarely, and tested through real processes
                return self.core.certificate_refused("the simulated CA refuses this CSR")
            return self.core.certificate_signed(SIGNED)
        assert isinstance(job, PersistReports)
        return self.core.reports_persisted(*hub.persist(node, job.items, job.acked_revision))


# -- an edge ------------------------------------------------------------------------------


@dataclass
class EdgeDisk:
    """edge.db: what survives a crash."""

    #: Set when the cache changes, so the checker looks at it again (constraints on a cache only
    #: grow when the cache changes: every new hub write is newer than every edge's revision).
    dirty: bool = True
    revision: int = 0
    objects: dict[Key, tuple[int, dict[str, Any]]] = field(default_factory=dict)
    staging: dict[Key, tuple[int, dict[str, Any]]] = field(default_factory=dict)
    outbox: dict[int, tuple[str, str | None, dict[str, Any]]] = field(default_factory=dict)
    high_seq: int = 0

    def apply(self, revision: int, items: tuple[Change, ...]) -> None:
        for c in items:
            stored = self.objects.get(c.key)
            if stored is not None and stored[0] > c.resource_version:
                continue
            if c.op == "put":
                assert c.object is not None
                self.objects[c.key] = (c.resource_version, c.object)
            else:
                self.objects.pop(c.key, None)
        self.revision = revision
        self.dirty = True

    def stage(self, job: StageSnapshot) -> None:
        if job.first:
            self.staging.clear()
        for c in job.items:
            assert c.object is not None
            self.staging[c.key] = (c.resource_version, c.object)
        if job.final:
            self.objects, self.staging = dict(self.staging), {}
            self.revision = job.revision
            self.dirty = True

    def append(self, topic: str, key: str | None, body: dict[str, Any]) -> None:
        if key is not None:
            for seq in [s for s, row in self.outbox.items() if row[1] == key]:
                del self.outbox[seq]
        self.high_seq += 1
        self.outbox[self.high_seq] = (topic, key, body)

    def pending(self, after: int) -> list[ReportItem]:
        seqs = sorted(s for s in self.outbox if s > after)[:OUTBOX_PAGE]
        return [ReportItem(s, *self.outbox[s]) for s in seqs]

    def acknowledge(self, seq: int) -> None:
        for s in [s for s in self.outbox if s <= seq]:
            del self.outbox[s]

    def align(self, hub_seq: int) -> None:
        if hub_seq <= self.high_seq:
            self.acknowledge(hub_seq)
            return
        if self.outbox:
            shift = hub_seq + 1 - min(self.outbox)
            self.outbox = {s + shift: row for s, row in self.outbox.items()}
            self.high_seq += shift
        self.high_seq = max(self.high_seq, hub_seq)


class SimEdge:
    """An edge node: its disk, its mappers' reports, its link to the hub."""

    def __init__(self, world: World, node: str) -> None:
        self.world = world
        self.node = node
        self.disk = EdgeDisk()
        self.up = True
        self.generation = 0
        self.conn: EdgeConn | None = None
        self.delays = self._delays()
        self.stopped: str | None = None
        self.state_versions: dict[str, int] = {}  # what mappers were told is stored
        self.events: list[int] = []
        self.bad_events: list[int] = []
        self.world.sched.at(world.rng.uniform(0, 1), self.connect)

    def _delays(self) -> Iterator[float]:
        return backoff(0.5, 2.0, 5.0, rand=self.world.rng.random)

    def connect(self) -> None:
        if not self.up or self.conn is not None or self.stopped:
            return
        if not self.world.hub.up:
            self._retry(Ended(Cause.UNREACHABLE, "connection refused"), welcomed=False)
            return
        link = Link(self.world)
        self.world.hub.accept(link, self.node)
        self.conn = EdgeConn(self, link)
        link.edge_end = self.conn
        self.conn.execute(self.conn.core.start(), "frame")
        self.world.sched.at(WELCOME_TIMEOUT, self.conn.welcome_timer)

    def _retry(self, ended: Ended, welcomed: bool) -> None:
        verdict = classify(ended, self.node, "ws://hub")
        if not verdict.retry:
            self.stopped = verdict.message
            return
        if verdict.reset_backoff:
            self.delays = self._delays()
        self.world.sched.at(next(self.delays), self.connect)

    def ended(self, conn: EdgeConn, ended: Ended) -> None:
        if self.conn is conn:
            self.conn = None
            self._retry(ended, conn.core.welcomed)

    def report(self) -> None:
        """A mapper's report, stored (and so acknowledged to it) at once."""
        if not self.up:
            return
        rng = self.world.rng
        roll = rng.random()
        if roll < 0.6:
            key = rng.choice(STATE_KEYS)
            version = self.state_versions.get(key, 0) + 1
            body: dict[str, Any] = {"version": version}
            if key.startswith("twin/") and rng.random() < 0.3:
                body["device"] = rng.choice(DEVICES)
            self.disk.append("twin/reported", key, body)
            self.state_versions[key] = version
        else:
            ident = next(self.world.event_ids)
            bad = roll > 0.95
            self.disk.append(BAD_TOPIC if bad else "upload", None, {"id": ident})
            (self.bad_events if bad else self.events).append(ident)
        if self.conn is not None:
            self.conn.wake()

    def crash(self) -> None:
        if not self.up:
            return
        self.up = False
        self.generation += 1
        if self.conn is not None:
            conn, self.conn = self.conn, None
            conn.link.end(None)
        self.world.sched.at(self.world.rng.uniform(0.5, 5), self.restart)

    def restart(self) -> None:
        self.up = True
        self.delays = self._delays()
        self.connect()


class EdgeConn(Shell):
    """The edge's shell around one EdgeSession (edgecore/hublink.py)."""

    side = "edge"

    def __init__(self, edge: SimEdge, link: Link) -> None:
        self.edge = edge
        self.world = edge.world
        self.link = link
        self.generation = edge.generation
        self.core = EdgeSession(edge.node, edge.disk.revision)
        self.inbox: list[str] = []
        self.frame_job = False
        self.outbox_job = False
        self.woken = False
        self.live_since: float | None = None

    @property
    def alive(self) -> bool:
        return self.link.alive and self.edge.up and self.edge.generation == self.generation

    def frame(self, text: str) -> None:
        self.inbox.append(text)
        self.pump()

    def pump(self) -> None:
        while self.alive and self.inbox and not self.frame_job and not self.core.closed:
            self.execute(self.core.receive(self.inbox.pop(0)), "frame")

    def label(self) -> str:
        return f"edge {self.edge.node}"

    def welcome_timer(self) -> None:
        if self.alive and not self.core.welcomed and not self.core.closed:
            self.link.end(None)

    def gone(self, code: int | None, reason: str) -> None:
        if self.edge.generation != self.generation:
            return
        lived = 0.0 if self.live_since is None else self.world.sched.now - self.live_since
        if not self.core.welcomed and self.core.refusal is None and code is None:
            ended = Ended(Cause.UNREACHABLE, "connection lost before the welcome")
        else:
            ended = self.core.ended(code, reason, lived)
        self.edge.ended(self, ended)

    def wake(self) -> None:
        self.woken = True
        self.drain()

    def drain(self) -> None:
        if not self.alive or self.outbox_job:
            return
        self.woken = False
        job = self.core.outbox_request()
        if job is not None:
            self._start(job, "outbox")

    def _start(self, job: Job, lane: str) -> None:
        setattr(self, f"{lane}_job", True)
        self.world.sched.at(self.world.latency(), lambda: self._complete(job, lane))

    def _complete(self, job: Job, lane: str) -> None:
        setattr(self, f"{lane}_job", False)
        if not self.edge.up or self.edge.generation != self.generation:
            return  # the edge crashed first: nothing was committed
        if self.world.chance("job_fails") and not isinstance(job, ReadOutbox):
            self.execute(self.core.job_failed(job, "simulated disk full"), lane)
            return
        disk = self.edge.disk
        if isinstance(job, AlignOutbox):
            disk.align(job.report_seq)
            self.execute(self.core.aligned(), lane)
            self.live_since = self.world.sched.now
            self.woken = True
        elif isinstance(job, ApplyChanges):
            disk.apply(job.revision, job.items)
            self.execute(self.core.applied(), lane)
        elif isinstance(job, StageSnapshot):
            disk.stage(job)
            self.execute(self.core.applied(), lane)
        elif isinstance(job, DeleteAcked):
            disk.acknowledge(job.seq)
            self.execute(self.core.deleted(), lane)
            self.woken = True
        else:
            assert isinstance(job, ReadOutbox)
            commands = self.core.outbox_read(disk.pending(job.after))
            self.execute(commands, lane)
            self.woken = self.woken or bool(commands)  # sent a frame: look for more
        self.pump()
        if self.woken:
            self.drain()


# -- the world ------------------------------------------------------------------------------


class World:
    """One seeded run: a hub, its edges, operators and mappers, faults, invariants."""

    def __init__(
        self, seed: int, nodes: int = 3, chaos_seconds: float = 2.5, rate: float = 50.0
    ) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.sched = Scheduler(self.rng)
        self.faults = Faults()
        self.logs: list[str] = []
        self.event_ids = itertools.count(1)
        self.link_ids = itertools.count(1)
        self.chaos_seconds = chaos_seconds
        self.rate = rate
        self.steps = 0
        self.hub = SimHub(self)
        self.hub.last_touch = {f"n{i}": {} for i in range(nodes)}
        self.edges = [SimEdge(self, f"n{i}") for i in range(nodes)]
        self.sched.at(0.0, self._act)

    def chance(self, fault: str) -> bool:
        p = getattr(self.faults, fault)
        return p > 0 and self.rng.random() < p

    def latency(self) -> float:
        return self.rng.uniform(0.0005, 0.02)

    # -- actors ---------------------------------------------------------------------------

    def _act(self) -> None:
        """Operators write, mappers report, faults strike; then again a little later."""
        if self.faults == Faults.none():
            return
        rng = self.rng
        roll = rng.random()
        if roll < 0.05:
            for _ in range(rng.randint(3, 8)):  # an operator applies a whole manifest
                self._operator_write()
        elif roll < 0.35:
            self._operator_write()
        elif roll < 0.75:
            rng.choice(self.edges).report()
        if self.chance("drop"):
            links = [c.link for c in self.hub.conns if c.link.alive]
            if links:
                rng.choice(links).end(None)
        if self.chance("crash_hub") and self.hub.up:
            self.hub.crash()
        if self.chance("crash_edge"):
            rng.choice(self.edges).crash()
        if self.chance("compact"):
            self.hub.compact()
        if self.chance("clock_jump"):
            self.sched.jump(rng.choice((5.0, 15.0, 45.0)))
        self.sched.at(rng.expovariate(self.rate), self._act)

    def _operator_write(self) -> None:
        rng = self.rng
        if rng.random() < 0.15:
            spec = {"properties": [rng.randint(0, 9)]}
            self.hub.write("DeviceModel", rng.choice(MODELS), spec, False)
            return
        name = rng.choice(DEVICES)
        if rng.random() < 0.15:
            self.hub.write("Device", name, None, False)
            return
        node = rng.choice([*(e.node for e in self.edges), None])
        desired = {"value": str(rng.randint(0, 99))}
        spec: dict[str, Any] = {"properties": [{"name": "t", "desired": desired}]}
        if node is not None:
            spec["nodeName"] = node
        self.hub.write("Device", name, spec, False)

    # -- running ------------------------------------------------------------------------

    def run(self) -> None:
        """The chaos phase, then a quiet phase in which every session must settle."""
        while self.sched.now < self.chaos_seconds and self.sched.step():
            self.steps += 1
            self.check()
        self.chaos_steps = self.steps
        self.faults = Faults.none()
        if not self.hub.up:
            self.hub.restart()
        for edge in self.edges:
            if not edge.up:
                edge.restart()
        quiet_until = self.sched.now + 3 * PROGRESS_INTERVAL + 30
        while self.sched.next_time() <= quiet_until:
            self.sched.step()
            self.steps += 1
            self.check()
        self.check_settled()

    # -- invariants -----------------------------------------------------------------------

    def check(self) -> None:
        for edge in self.edges:
            if edge.disk.dirty:
                edge.disk.dirty = False
                self._check_cache(edge)
        for conn in self.hub.conns:
            buffered = conn.core.buffered
            if buffered["queued_reports"] > 8 or buffered["live_rows"] > conn.core.max_live_rows:
                raise Violation(f"hub session {conn.core.node} holds too much: {buffered}")
            if conn.sub is not None and len(conn.sub) > SUB_MAX:
                raise Violation(f"feed buffer of {conn.core.node} past its bound")
        for edge in self.edges:
            if edge.conn is not None and len(edge.conn.core.cursor._in_flight) > 4:
                raise Violation(f"{edge.node}: more than 4 report frames in flight")

    def _check_cache(self, edge: SimEdge) -> None:
        """Every object whose last change for this node is at or before the edge's revision is
        exactly as the hub routed it: present with its spec when routed here, else absent."""
        node, disk = edge.node, edge.disk
        last = self.hub.last_touch[node]
        for key in {*last, *disk.objects}:
            row = last.get(key)
            if row is not None and row.revision > disk.revision:
                continue
            routed = row is not None and row.op != "delete" and row.route in (node, ALL_NODES)
            held = disk.objects.get(key)
            if routed != (held is not None):
                raise Violation(
                    f"{node} at revision {disk.revision}: {key} should be "
                    f"{'present' if routed else 'absent'} (last change {row})"
                )
            if held is not None and row is not None and held[1]["spec"] != row.body["spec"]:
                raise Violation(
                    f"{node}: {key} holds {held[1]['spec']}, hub says {row.body['spec']}"
                )

    def check_settled(self) -> None:
        """After the quiet phase: every edge is live at the hub's head with an empty outbox,
        and everything its mappers were told is stored reached the hub exactly once (or was
        superseded by a later value of the same key, or rejected by the hub)."""
        for edge in self.edges:
            if edge.stopped:
                raise Violation(f"{edge.node} stopped: {edge.stopped}")
            conn = edge.conn
            if conn is None or not conn.core.welcomed or conn.core.closed:
                raise Violation(f"{edge.node} is not connected after the quiet phase")
            if edge.disk.revision != self.hub.head:
                raise Violation(
                    f"{edge.node} at revision {edge.disk.revision}, hub at {self.hub.head}"
                )
            if edge.disk.outbox:
                raise Violation(f"{edge.node}: outbox not drained: {sorted(edge.disk.outbox)}")
            held = self.hub.reports.get(edge.node, NodeReports())
            for key, version in edge.state_versions.items():
                got = held.state.get(key)
                if got is None or got[1] != version:
                    raise Violation(
                        f"{edge.node}: {key} at version {got} on the hub, {version} sent"
                    )
            if sorted(held.events) != sorted(edge.events):
                missing = sorted(set(edge.events) - set(held.events))
                raise Violation(f"{edge.node}: events differ; missing {missing[:5]}")
            if sorted(held.rejected) != sorted(edge.bad_events):
                raise Violation(f"{edge.node}: rejected rows differ")
