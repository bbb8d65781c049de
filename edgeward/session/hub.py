"""The hub's side of one edge connection, as a pure state machine (no sockets, no database).

cloudhub/edgeserver.py owns the websocket, the change feed and the store; it
hands every event to a :class:`HubSession` and carries out the commands it
returns (``edgeward.session.commands``). Every rule about what an edge may
send and what it is owed lives here, once.

States (``HubState``) and what moves between them::

    AWAITING_HELLO ──hello──▶ REGISTERING ──registered──▶ RESUMING ──log_read──┬─▶ CATCHING_UP
          │ anything else, a bad name,          (Register)          (ReadLog)   └─▶ SNAPSHOTTING
          │                                                        (or an operator's resync)
          │ another protocol, another identity,                                         │
          ▼ no hello in time                    CATCHING_UP ──last page──▶ LIVE ◀──last page
        CLOSED ◀── close: replaced, node deleted, resync, hub stopping, a job failed,│  ▲
                   a report it cannot read, too many bad frames                 ▼  │
                                              feed overflowed: re-read from `sent` (CATCHING_UP,
                                              or SNAPSHOTTING when the log was compacted past it)

Rules, each checked where the input enters:

- The first frame is a hello for a valid node name, in our protocol, for the
  identity the connection may speak for (``identity``; None: any, until nodes
  authenticate). Anything else: an error frame and a policy close.
- The edge is owed, after its revision, every change routed to it: read from
  the change log in pages (each with the log's compaction bound, read at the
  same time), or a snapshot when the log no longer holds what it is owed —
  at the start, between two pages, or after the live feed overflowed. Rows
  compacted away are never skipped silently.
- ``sent`` only grows; an ack beyond it is refused. The edge's acknowledged
  revision comes only from acks (a hello's revision may be ahead of the hub,
  after a restore: that edge gets a snapshot, and its claim is not kept).
- Report frames are persisted one at a time, in order, at most
  :data:`MAX_QUEUED_REPORTS` waiting. A seq beyond what the node could have
  issued (``report_seq + MAX_SEQ_STEP``) closes the session: the hub never
  keeps a position the edge cannot follow. A report frame that cannot be
  read closes the session too: its rows cannot be acknowledged, and a later
  acknowledgement would cover them — lost without a word.
- Other bad frames get an error frame; :data:`MAX_BAD_FRAMES` of them close
  the session. A failed job closes it with 1011: the edge tries again later.
- Memory per session is bounded: live rows waiting while a read is under
  way (:data:`MAX_LIVE_ROWS`; past it they are dropped and re-read from the
  log), queued reports, one page of the log or of the snapshot.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Any

from edgeward import protocol
from edgeward.errors import ProtocolError
from edgeward.kinds import dns_subdomain_problem, object_key
from edgeward.session.commands import (
    DEBUG,
    INFO,
    WARNING,
    Close,
    Command,
    Job,
    Log,
    PersistReports,
    ReadLog,
    ReadSnapshot,
    Register,
    Send,
    SignCertificate,
)
from edgeward.sync import ChangeRow, NodeBacklog, change_batches, snapshot_frames

#: Close a session after this many refused frames.
MAX_BAD_FRAMES = 10
#: Change-log rows, and snapshot objects, read at a time.
PAGE = 1000
#: Live rows kept while a read is under way; past this they are dropped and re-read.
MAX_LIVE_ROWS = 10_000
#: Report frames waiting to be persisted (the edge keeps at most 4 unacknowledged).
MAX_QUEUED_REPORTS = 8
#: How far past the seq the hub holds a report may go. An edge numbers rows one by one;
#: 2^40 is a year of 30,000 rows a second.
MAX_SEQ_STEP = 2**40


class HubState(enum.Enum):
    AWAITING_HELLO = "awaiting hello"
    REGISTERING = "registering"
    RESUMING = "resuming"
    CATCHING_UP = "catching up"
    SNAPSHOTTING = "snapshotting"
    LIVE = "live"
    CLOSED = "closed"


#: What the edge may send in each state; anything else is refused as unexpected.
ACCEPTS: dict[HubState, frozenset[type[protocol.Message]]] = {
    HubState.AWAITING_HELLO: frozenset({protocol.Hello}),
    HubState.REGISTERING: frozenset({protocol.Error}),
    HubState.RESUMING: frozenset({protocol.Error}),
    HubState.CATCHING_UP: frozenset({protocol.Ack, protocol.Report, protocol.Error}),
    HubState.SNAPSHOTTING: frozenset({protocol.Ack, protocol.Report, protocol.Error}),
    HubState.LIVE: frozenset({protocol.Ack, protocol.Report, protocol.Error, protocol.Renew}),
    HubState.CLOSED: frozenset(),
}


class HubSession:
    """One edge connection on the hub. Not thread-safe: call it from one task at a time."""

    # one per connected node: a hub holds ten thousand of them
    __slots__ = (
        "_catch_up",
        "_live",
        "_live_overflowed",
        "_read_after",
        "_reports",
        "_resync",
        "_snapshot_head",
        "acked",
        "bad_frames",
        "hello",
        "identity",
        "max_live_rows",
        "node",
        "page",
        "renewed",
        "report_seq",
        "sent",
        "state",
    )

    def __init__(
        self, identity: str | None = None, page: int = PAGE, max_live_rows: int = MAX_LIVE_ROWS
    ) -> None:
        #: The node name this connection may speak for (from its certificate); None: any.
        self.identity = identity
        self.page = page
        self.max_live_rows = max_live_rows
        self.state = HubState.AWAITING_HELLO
        self.node = ""
        self.hello: protocol.Hello | None = None
        #: Highest revision whose changes have been sent; only grows.
        self.sent = 0
        #: Highest revision the edge acknowledged in this session (0: none yet).
        self.acked = 0
        #: Highest outbox seq the hub holds for the node.
        self.report_seq = 0
        self.bad_frames = 0
        #: Whether this session asked for a certificate already (one renewal per session).
        self.renewed = False
        self._live: list[ChangeRow] = []
        self._live_overflowed = False
        self._read_after = 0
        self._catch_up = NodeBacklog("")
        self._snapshot_head = 0
        self._resync = False
        self._reports: list[protocol.Report] = []

    @property
    def closed(self) -> bool:
        return self.state is HubState.CLOSED

    @property
    def buffered(self) -> dict[str, int]:
        """What the session holds in memory, for bounds checks."""
        return {
            "live_rows": len(self._live),
            "queued_reports": len(self._reports),
            "catch_up_objects": len(self._catch_up),
        }

    # -- frames -------------------------------------------------------------------

    def receive(self, frame: str | bytes) -> list[Command]:
        """A frame from the edge."""
        if self.closed:
            return []
        try:
            msg = protocol.decode(frame)
            if type(msg) not in ACCEPTS[self.state]:
                raise ProtocolError(
                    protocol.UNEXPECTED,
                    f"{msg.type} is not accepted {self._when()}",
                    message_type=msg.type,
                )
            if isinstance(msg, protocol.Hello):
                return self._on_hello(msg)
            if isinstance(msg, protocol.Ack):
                return self._on_ack(msg)
            if isinstance(msg, protocol.Report):
                return self._on_report(msg)
            if isinstance(msg, protocol.Renew):
                return self._on_renew(msg)
            assert isinstance(msg, protocol.Error)
            return [Log(WARNING, f"the edge reports an error: {msg.code}: {msg.reason}")]
        except ProtocolError as exc:
            return self._refuse(exc)

    def _when(self) -> str:
        if self.state is HubState.AWAITING_HELLO:
            return "before hello"
        return "from an edge" if self.state is HubState.LIVE else f"while {self.state.value}"

    def _refuse(self, exc: ProtocolError) -> list[Command]:
        error = Send(protocol.Error.of(exc))
        if self.state is HubState.AWAITING_HELLO:
            return [
                Log(WARNING, f"refused: {exc}"),
                error,
                self._close(protocol.CLOSE_POLICY, exc.code),
            ]
        self.bad_frames += 1
        out: list[Command] = [Log(WARNING, f"refused a frame: {exc}"), error]
        if exc.message_type == protocol.Report.type:
            # Rows we cannot read cannot be acknowledged, and the next acknowledgement would
            # cover them: end the session, so the edge sends them again or stops.
            out.append(self._close(protocol.CLOSE_POLICY, "a report that cannot be read"))
        elif self.bad_frames >= MAX_BAD_FRAMES:
            out.append(self._close(protocol.CLOSE_POLICY, "too many bad frames"))
        return out

    def _close(self, code: int, reason: str) -> Close:
        self.state = HubState.CLOSED
        self._live.clear()
        self._reports.clear()
        return Close(code, reason)

    def _on_hello(self, hello: protocol.Hello) -> list[Command]:
        if hello.protocol != protocol.PROTOCOL_VERSION:
            raise ProtocolError(
                protocol.UNSUPPORTED_PROTOCOL,
                f"protocol {hello.protocol} is not supported "
                f"(this hub speaks {protocol.PROTOCOL_VERSION})",
            )
        if (problem := dns_subdomain_problem(hello.node)) is not None:
            raise ProtocolError(protocol.BAD_MESSAGE, f"hello: node name {problem}")
        if self.identity is not None and hello.node != self.identity:
            raise ProtocolError(
                protocol.FORBIDDEN,
                f"hello as node {hello.node}: this connection may speak for node "
                f"{self.identity} only",
            )
        self.hello, self.node = hello, hello.node
        self.state = HubState.REGISTERING
        return [Register(hello.node, hello.node_info)]

    def _on_ack(self, ack: protocol.Ack) -> list[Command]:
        if ack.revision > self.sent:
            raise ProtocolError(
                protocol.BAD_MESSAGE, f"ack for revision {ack.revision} beyond {self.sent} sent"
            )
        self.acked = max(self.acked, ack.revision)
        return []

    def _on_report(self, report: protocol.Report) -> list[Command]:
        ceiling = min(protocol.MAX_SEQ, self.report_seq + MAX_SEQ_STEP)
        last = report.items[-1].seq
        if last > ceiling:
            reason = (
                f"report seq {last} is beyond what node {self.node} could have issued "
                f"(the hub holds {self.report_seq}); move the edge's data directory aside "
                "to start a new outbox"
            )
            return [
                Log(WARNING, reason),
                Send(protocol.Error(protocol.BAD_MESSAGE, reason)),
                self._close(protocol.CLOSE_POLICY, "report seq out of range"),
            ]
        if len(self._reports) >= MAX_QUEUED_REPORTS:
            reason = f"more than {MAX_QUEUED_REPORTS} report frames unacknowledged"
            return [
                Send(protocol.Error(protocol.UNEXPECTED, reason)),
                self._close(protocol.CLOSE_POLICY, reason),
            ]
        self._reports.append(report)
        if len(self._reports) == 1:
            return [PersistReports(report.items, self.acked)]
        return []

    # -- timers and the connection -------------------------------------------------

    def hello_timed_out(self) -> list[Command]:
        if self.state is not HubState.AWAITING_HELLO:
            return []
        return self._refuse(ProtocolError(protocol.UNEXPECTED, "no hello received in time"))

    def replaced(self, by: str) -> list[Command]:
        """A newer connection for the same node took over."""
        if self.closed:
            return []
        return [
            Log(INFO, f"a newer connection from {by} replaces this one"),
            self._close(protocol.CLOSE_REPLACED, "replaced by a newer connection"),
        ]

    def node_deleted(self) -> list[Command]:
        """An operator deleted the Node: the edge registers again, from seq 0."""
        if self.closed:
            return []
        return [self._close(protocol.CLOSE_NODE_DELETED, "the Node was deleted; register again")]

    def resync_requested(self) -> list[Command]:
        """An operator asked for a resync (it is recorded for the next hello): close, so the
        edge reconnects at once."""
        if self.closed:
            return []
        return [self._close(protocol.CLOSE_RESYNC, "resync requested; reconnect for a snapshot")]

    def move(self) -> list[Command]:
        """Rebalancing: this hub replica serves more than its share of the fleet; the edge
        reconnects, through its load balancer or to its next endpoint (docs/ha.md)."""
        if self.closed:
            return []
        return [
            Log(INFO, "asked to move to another hub replica (rebalancing)"),
            self._close(protocol.CLOSE_MOVE, "rebalancing: reconnect to another hub replica"),
        ]

    def stopping(self) -> list[Command]:
        if self.closed:
            return []
        return [self._close(protocol.CLOSE_GOING_AWAY, "the hub is stopping")]

    def connection_lost(self) -> list[Command]:
        self.state = HubState.CLOSED
        self._live.clear()
        self._reports.clear()
        return []

    # -- job results ----------------------------------------------------------------

    def _on_renew(self, msg: protocol.Renew) -> list[Command]:
        if self.identity is None:
            raise ProtocolError(
                protocol.FORBIDDEN, "this hub runs without TLS and issues no certificates"
            )
        if self.renewed:
            raise ProtocolError(protocol.FORBIDDEN, "one certificate renewal per session")
        self.renewed = True
        return [SignCertificate(msg.csr)]

    def certificate_signed(self, pem: str) -> list[Command]:
        """The renewed certificate is recorded: hand it to the edge."""
        if self.closed:
            return []
        return [Log(INFO, "renewed its certificate"), Send(protocol.Certificate(pem))]

    def certificate_refused(self, reason: str) -> list[Command]:
        """The CA would not sign the CSR: tell the edge; its current certificate still works."""
        if self.closed:
            return []
        return [
            Log(WARNING, f"refused a certificate renewal: {reason}"),
            Send(protocol.Error(protocol.BAD_MESSAGE, f"renew: {reason}")),
        ]

    def job_failed(self, job: Job, reason: str) -> list[Command]:
        """A job raised: the session cannot go on; the edge tries again later."""
        if self.closed:
            return []
        what = type(job).__name__
        return [
            Log(WARNING, f"{what} failed: {reason}; closing the session (the edge retries)"),
            self._close(protocol.CLOSE_INTERNAL, f"the hub failed: {what}"),
        ]

    def registered(self, report_seq: int, resync: bool = False) -> list[Command]:
        """Register committed; the hub holds the node's outbox up to ``report_seq``.
        ``resync``: an operator asked for one, so the node gets a snapshot whatever it holds."""
        if self.state is not HubState.REGISTERING:
            return []
        self.report_seq = report_seq
        self._resync = resync
        self.state = HubState.RESUMING
        assert self.hello is not None
        return [ReadLog(self.hello.revision, self.page)]

    def log_read(self, rows: Sequence[ChangeRow], compacted: int, head: int) -> list[Command]:
        """A page of the change log after the position asked for, read with its bounds."""
        if self.state is HubState.RESUMING:
            return self._resume(rows, compacted, head)
        if self.state is not HubState.CATCHING_UP:
            return []
        if compacted > self._read_after:
            return self._start_snapshot(f"the change log was compacted past {self._read_after}")
        return self._catch_up_page(rows, head)

    def _resume(self, rows: Sequence[ChangeRow], compacted: int, head: int) -> list[Command]:
        assert self.hello is not None
        revision = self.hello.revision
        if self._resync or revision < compacted or revision > head:
            why = (
                "an operator asked for a resync"
                if self._resync
                else "older than the change log"
                if revision < compacted
                else "ahead of the hub"
            )
            return [
                Log(INFO, f"resuming at revision {revision} (hub at {head}): snapshot, {why}"),
                Send(protocol.Welcome("snapshot", head, self.report_seq)),
                *self._start_snapshot(None),
            ]
        self.sent = self.acked = revision
        self.state = HubState.CATCHING_UP
        self._read_after = revision
        self._catch_up = NodeBacklog(self.node)
        return [
            Log(INFO, f"resuming at revision {revision} (hub at {head}): changes"),
            Send(protocol.Welcome("changes", head, self.report_seq)),
            *self._catch_up_page(rows, head),
        ]

    def _catch_up_page(self, rows: Sequence[ChangeRow], head: int) -> list[Command]:
        self._catch_up.add(rows)
        if rows:
            self._read_after = rows[-1].revision
        if len(rows) >= self.page:
            return [ReadLog(self._read_after, self.page)]
        through = max(head, self._read_after)
        out: list[Command] = []
        if through > self.sent:
            out.extend(Send(f) for f in change_batches(self._catch_up.take(), through))
            self.sent = through
        self._catch_up = NodeBacklog(self.node)
        return out + self._read_done()

    def _start_snapshot(self, why: str | None) -> list[Command]:
        self.state = HubState.SNAPSHOTTING
        self._snapshot_head = -1
        self._catch_up = NodeBacklog(self.node)
        out: list[Command] = [] if why is None else [Log(INFO, f"resync by snapshot: {why}")]
        return [*out, ReadSnapshot(None, self.page)]

    def snapshot_read(self, objects: Sequence[dict[str, Any]], head: int) -> list[Command]:
        """A page of the node's objects in key order; the first page's head is the snapshot's
        revision (objects read later may be newer: the changes after it bring them again)."""
        if self.state is not HubState.SNAPSHOTTING:
            return []
        if self._snapshot_head < 0:
            self._snapshot_head = head
        last = len(objects) < self.page
        frames = snapshot_frames(list(objects), self._snapshot_head, final=last)
        out: list[Command] = [Send(f) for f in frames]
        if not last:
            return [*out, ReadSnapshot(object_key(objects[-1]), self.page)]
        self.sent = max(self.sent, self._snapshot_head)
        return out + self._read_done()

    def _read_done(self) -> list[Command]:
        """A catch-up or a snapshot is complete: fold in what the feed brought meanwhile."""
        self.state = HubState.LIVE
        if self._live_overflowed:
            self._live_overflowed = False
            self._live.clear()
            return self._reread("the live feed overflowed")
        rows, self._live = self._live, []
        return self._send_live(rows)

    def _reread(self, why: str) -> list[Command]:
        self.state = HubState.CATCHING_UP
        self._read_after = self.sent
        self._catch_up = NodeBacklog(self.node)
        return [
            Log(DEBUG, f"{why}: reading the change log after {self.sent}"),
            ReadLog(self.sent, self.page),
        ]

    def reports_persisted(self, high: int, rejected: Sequence[protocol.Rejected]) -> list[Command]:
        """The oldest queued report frame is persisted up to ``high``; ``rejected`` rows were
        refused for good (acknowledged all the same, so they are never resent)."""
        if self.closed or not self._reports:
            return []
        self._reports.pop(0)
        self.report_seq = max(self.report_seq, high)
        out: list[Command] = []
        if rejected:
            first = rejected[0]
            out.append(
                Log(
                    WARNING,
                    f"rejected {len(rejected)} report row(s), e.g. seq {first.seq}: {first.reason}",
                )
            )
        out.append(Send(protocol.ReportAck(self.report_seq, tuple(rejected))))
        if self._reports:
            out.append(PersistReports(self._reports[0].items, self.acked))
        return out

    # -- the live feed ----------------------------------------------------------------

    def rows_published(self, rows: Sequence[ChangeRow]) -> list[Command]:
        """Change-log rows touching this node, as the feed read them (revision order)."""
        if self.closed or not rows:
            return []
        if self.state is HubState.LIVE:
            return self._send_live(rows)
        if len(self._live) + len(rows) > self.max_live_rows:
            self._live.clear()
            self._live_overflowed = True
        elif not self._live_overflowed:
            self._live.extend(rows)
        return []

    def _send_live(self, rows: Sequence[ChangeRow]) -> list[Command]:
        fresh = [r for r in rows if r.revision > self.sent]
        if not fresh:
            return []
        backlog = NodeBacklog(self.node)
        backlog.add(fresh)
        through = fresh[-1].revision
        self.sent = through
        return [Send(f) for f in change_batches(backlog.take(), through)]

    def feed_overflowed(self) -> list[Command]:
        """The feed dropped rows for this session: read them again from the log."""
        if self.closed:
            return []
        if self.state is HubState.LIVE:
            return self._reread("the live feed overflowed")
        self._live.clear()
        self._live_overflowed = True
        return []

    def idle(self, feed_head: int) -> list[Command]:
        """Nothing arrived for a while and the feed has read up to ``feed_head``: tell the edge
        how far the log has moved, so an idle edge stays inside it."""
        if self.state is not HubState.LIVE or feed_head <= self.sent:
            return []
        self.sent = feed_head
        return [Send(protocol.Changes(feed_head, ()))]
