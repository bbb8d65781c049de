"""Hostile peers against the session cores, through the in-memory pair: hypothesis writes the
frames, the simulated world checks that nobody else is hurt and that nothing loops or grows."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeward import protocol
from edgeward.session import EdgeSession, HubSession
from edgeward.session.commands import (
    AlignOutbox,
    ApplyChanges,
    Close,
    Command,
    DeleteAcked,
    Job,
    PersistReports,
    ReadLog,
    ReadOutbox,
    ReadSnapshot,
    Register,
    Send,
    StageSnapshot,
)
from edgeward.session.hub import MAX_QUEUED_REPORTS
from tests.sim.world import EdgeDisk, Link, SimHub, World

# -- frames a hostile or broken peer may send ---------------------------------------------

ints = st.one_of(
    st.integers(min_value=-3, max_value=40),
    st.sampled_from([0, 2**31, 2**53, 2**62 - 1, 2**62, 2**63 - 1, 2**63, 2**64, -(2**63) - 1]),
)
texts = st.one_of(
    st.sampled_from(["", "n0", "n1", "intruder", "Bad Name!", "\ud800", "x" * 300]),
    st.text(max_size=12),
)
json_values = st.recursive(
    st.none() | st.booleans() | ints | st.floats(allow_nan=False) | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=8,
)
item = st.fixed_dictionaries(
    {},
    optional={
        "seq": ints,
        "topic": st.sampled_from(["node/status", "twin/reported", "upload", "bad/topic", ""]),
        "key": st.one_of(st.none(), texts),
        "body": st.one_of(st.dictionaries(texts, json_values, max_size=3), json_values),
        "op": st.sampled_from(["put", "delete", "x"]),
        "kind": texts,
        "namespace": texts,
        "name": texts,
        "rv": ints,
        "object": json_values,
        "reason": texts,
    },
)
shaped = st.fixed_dictionaries(
    {"type": st.sampled_from([*sorted(protocol.MESSAGE_TYPES), "nope"])},
    optional={
        "node": texts,
        "revision": ints,
        "protocol": st.sampled_from([1, 1, 2, 0, -1]),
        "node_info": json_values,
        "mode": st.sampled_from(["changes", "snapshot", "x"]),
        "head": ints,
        "report_seq": ints,
        "items": st.lists(item, max_size=4),
        "final": st.booleans(),
        "seq": ints,
        "rejected": st.lists(item, max_size=2),
        "code": texts,
        "reason": texts,
        "csr": st.sampled_from(["", "-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n", "x" * 20]),
        "certificate": st.sampled_from(["-----BEGIN CERTIFICATE-----\nMIIB\n", "nope"]),
    },
)
frames = st.one_of(
    shaped.map(json.dumps),
    st.text(max_size=30),
    st.binary(max_size=10),
    json_values.map(json.dumps),
)


def check_commands(commands: list[Command], closed_before: bool) -> None:
    """What a core returns is well formed: a job only last, nothing once closed, nothing after
    a close, and every frame it sends can be decoded by the other side."""
    if closed_before:
        assert commands == []
    for i, command in enumerate(commands):
        if isinstance(command, Job):
            assert i == len(commands) - 1
        if isinstance(command, Close):
            assert i == len(commands) - 1
        if isinstance(command, Send):
            protocol.decode(command.message.encode())


# -- a hostile client on the hub, among real edges -----------------------------------------


class Intruder:
    """A client that connects to the hub and sends whatever it was given, on a schedule."""

    def __init__(self, world: World, frames: list[str]) -> None:
        self.world = world
        self.frames = frames
        self.link: Link | None = None
        world.sched.at(0.3, self.connect)

    def connect(self) -> None:
        if not self.world.hub.up:
            self.world.sched.at(0.5, self.connect)
            return
        self.link = Link(self.world)
        self.link.edge_end = self  # type: ignore[assignment]
        self.conn = self.world.hub.accept(self.link, "intruder")
        for n, text in enumerate(self.frames):
            self.world.sched.at(0.001 * (n + 1), lambda t=text: self.send(t))

    def send(self, text: str) -> None:
        if self.link is not None:
            self.link.send("hub", text)

    def frame(self, text: str) -> None:
        protocol.decode(text)  # whatever the hub says can be read

    def gone(self, code: int | None, reason: str) -> None:
        self.link = None


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(frames, min_size=1, max_size=25), st.integers(min_value=0, max_value=10**6))
def test_a_hostile_client_hurts_no_other_node(hostile: list[str], seed: int) -> None:
    """Whatever another client sends the hub — garbage, valid-looking frames with values past
    every bound, hellos for other nodes (refused: its certificate names another), floods of
    reports — every real edge still converges, reports exactly once, and no buffer grows."""
    world = World(seed)
    Intruder(world, [text if isinstance(text, str) else text.decode("latin-1") for text in hostile])
    world.run()  # raises Violation when any real edge was hurt


# -- the hub's core, alone, driven by arbitrary events --------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            frames.map(lambda f: ("frame", f)),
            st.sampled_from(["job", "job", "job", "rows", "overflow", "idle", "fail", "timer"]).map(
                lambda e: (e, None)
            ),
        ),
        max_size=40,
    ),
    st.booleans(),
)
def test_the_hub_core_takes_any_sequence_of_events(
    events: list[tuple[str, Any]], from_live: bool
) -> None:
    """Any mix of frames, job results, feed wake-ups, failures and timers: the core never
    raises, never sends what the edge cannot decode, never moves `sent` back, acknowledges
    reports in order, and keeps its buffers bounded."""
    hub = SimHub(World(0))
    hub.world.hub = hub
    hub.up = False  # writes are not published to sessions here
    core = HubSession(page=2)
    pending: list[Job] = []
    last_ack = 0
    rev = 0
    if from_live:  # most frames only reach the deeper states after a good start
        core.receive(protocol.Hello("n0", 0).encode())
        core.registered(0)
        core.log_read([], 0, 0)

    def run(commands: list[Command], closed: bool) -> None:
        nonlocal last_ack
        check_commands(commands, closed)
        for c in commands:
            if isinstance(c, Job):
                pending.append(c)
            if isinstance(c, Send) and isinstance(c.message, protocol.ReportAck):
                assert c.message.seq >= last_ack
                last_ack = c.message.seq
            if isinstance(c, PersistReports):
                assert c.acked_revision <= core.sent

    for kind, value in events:
        closed, sent = core.closed, core.sent
        if kind == "frame":
            run(core.receive(value), closed)
        elif kind == "job" and pending:
            job = pending.pop(0)
            node = core.node
            if isinstance(job, Register):
                run(core.registered(0), closed)
            elif isinstance(job, ReadLog):
                run(core.log_read(*hub.log_page(node, job.after, job.limit)), closed)
            elif isinstance(job, ReadSnapshot):
                run(core.snapshot_read(*hub.snapshot_page(node, job.after_key, job.limit)), closed)
            else:
                assert isinstance(job, PersistReports)
                run(
                    core.reports_persisted(*hub.persist(node, job.items, job.acked_revision)),
                    closed,
                )
        elif kind == "rows":
            rev += 1
            hub.write("Device", f"d{rev % 3}", {"nodeName": core.node or "n0"}, False)
            run(core.rows_published(hub.log[-1:]), closed)
        elif kind == "overflow":
            run(core.feed_overflowed(), closed)
        elif kind == "idle":
            run(core.idle(hub.head), closed)
        elif kind == "fail" and pending:
            run(core.job_failed(pending.pop(0), "simulated"), closed)
        elif kind == "timer":
            run(core.hello_timed_out(), closed)
        assert core.sent >= sent
        assert core.acked <= core.sent
        assert core.buffered["queued_reports"] <= MAX_QUEUED_REPORTS


# -- the edge's core, alone, against a hostile hub -------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            frames.map(lambda f: ("frame", f)),
            st.sampled_from(["job", "job", "job", "outbox", "fail"]).map(lambda e: (e, None)),
        ),
        max_size=40,
    ),
    st.booleans(),
)
def test_the_edge_core_takes_anything_a_hub_sends(
    events: list[tuple[str, Any]], from_live: bool
) -> None:
    """Whatever a hub sends: the edge core never raises, acknowledges only revisions it has
    stored, never moves its revision back outside a snapshot the welcome announced, and
    never sends more than its window of reports."""
    disk = EdgeDisk()
    disk.append("upload", None, {"id": 1})
    core = EdgeSession("n0", 0)
    check_commands(core.start(), False)
    pending: Job | None = None
    outbox: ReadOutbox | None = None
    if from_live:  # most frames only reach the deeper states after a good start
        core.receive(protocol.Welcome("changes", 0, 0).encode())
        core.aligned()
    for kind, value in events:
        closed, before = core.closed, disk.revision
        commands: list[Command] = []
        if kind == "frame" and pending is None:
            commands = core.receive(value)
        elif kind == "job" and pending is not None:
            job, pending = pending, None
            if isinstance(job, AlignOutbox):
                disk.align(job.report_seq)
                commands = core.aligned()
            elif isinstance(job, ApplyChanges):
                disk.apply(job.revision, job.items)
                commands = core.applied()
            elif isinstance(job, StageSnapshot):
                disk.stage(job)
                commands = core.applied()
            else:
                assert isinstance(job, DeleteAcked)
                disk.acknowledge(job.seq)
                commands = core.deleted()
        elif kind == "outbox":
            if outbox is None:
                outbox = core.outbox_request()
            else:
                commands = core.outbox_read(disk.pending(outbox.after))
                outbox = None
        elif kind == "fail" and pending is not None:
            commands, pending = core.job_failed(pending, "simulated"), None
        check_commands(commands, closed)
        for c in commands:
            if isinstance(c, Job) and not isinstance(c, ReadOutbox):
                pending = c
            if isinstance(c, Send) and isinstance(c.message, protocol.Ack):
                assert c.message.revision == disk.revision
        if disk.revision < before:
            assert core.welcome is not None and core.welcome.mode == "snapshot"
        assert len(core.cursor._in_flight) <= core.cursor.window
