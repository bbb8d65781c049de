"""The edge's side of its link to the hub, as a pure state machine (no sockets, no database).

edgecore/hublink.py owns the websocket and edge.db; it hands every frame and
store result to an :class:`EdgeSession` and carries out the commands it
returns (``edgeward.session.commands``). Every rule about what the hub may
send and what the edge owes it lives here, once.

States (``EdgeState``)::

    AWAITING_WELCOME ──welcome──▶ ALIGNING ──aligned──▶ LIVE ──▶ CLOSED
        │  an error frame: the hub refused us (kept, for the reconnect policy)
        └─ anything else: a protocol violation ──▶ CLOSED

Rules:

- The shell awaits every job a frame produced before it hands over the next
  frame (``receive`` refuses to run meanwhile: that is a bug in the shell).
  Frames are therefore applied one at a time, in order, each durably
  (changes and their revision in one transaction) before it is acknowledged.
- Changes never go back: a frame older than the revision the edge holds is a
  replay and is ignored; an item newer than its frame's revision is refused.
- A snapshot is staged in edge.db frame by frame (memory does not grow with
  the node's desired state) and replaces the cache, in one transaction, on
  its final frame. One is accepted when the welcome announced it, or when it
  is newer than what the edge holds (a resync after the hub's log moved on).
- A frame the edge cannot read, or that would make it skip or reorder
  changes, ends the session as a protocol violation: the reconnect policy
  stops rather than loop on it. Other bad frames get an error frame; ten of
  them end the session.
- Reports: at most ``OutboxCursor.window`` frames unacknowledged; an ack
  beyond what was sent is refused; rows the hub rejected are logged and
  deleted with the rest (sending them again could only be refused again).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Any

from edgeward import protocol
from edgeward.errors import ProtocolError
from edgeward.session.commands import (
    DEBUG,
    ERROR,
    INFO,
    WARNING,
    AlignOutbox,
    ApplyChanges,
    Close,
    Command,
    DeleteAcked,
    InstallCertificate,
    Job,
    Log,
    ReadOutbox,
    Send,
    StageSnapshot,
)
from edgeward.session.retry import Cause, Ended
from edgeward.sync import OutboxCursor

#: End a session after this many refused frames.
MAX_BAD_FRAMES = 10

#: Frames that must be applied in order: one the edge cannot read ends the session.
_ORDERED = frozenset({protocol.Welcome.type, protocol.Changes.type, protocol.Snapshot.type})


class EdgeState(enum.Enum):
    AWAITING_WELCOME = "awaiting welcome"
    ALIGNING = "aligning the outbox"
    LIVE = "live"
    CLOSED = "closed"


class ShellError(RuntimeError):
    """The shell broke the core's contract (a bug in edgecore, not the hub's fault)."""


class EdgeSession:
    """One connection of an edge to the hub. Not thread-safe: call it from one task at a time."""

    def __init__(
        self,
        node: str,
        revision: int,
        agent: str = "",
        node_info: dict[str, Any] | None = None,
    ) -> None:
        self.node = node
        #: The last hub revision applied durably.
        self.revision = revision
        self.agent = agent
        self.node_info = node_info or {}
        self.state = EdgeState.AWAITING_WELCOME
        self.welcome: protocol.Welcome | None = None
        #: The error frame the hub sent before welcoming us, if it refused us.
        self.refusal: protocol.Error | None = None
        #: Why we ended the session: the hub sent what we cannot accept.
        self.violation: str | None = None
        #: Why we ended the session: our own store failed.
        self.store_failure: str | None = None
        self.cursor = OutboxCursor(acked=0)
        self.bad_frames = 0
        #: A renew was sent and its certificate has not come yet.
        self.renewing = False
        self._job: Job | None = None
        self._reading_outbox = False
        self._staging: int | None = None
        self._snapshot_owed = False

    @property
    def closed(self) -> bool:
        return self.state is EdgeState.CLOSED

    @property
    def welcomed(self) -> bool:
        return self.welcome is not None

    def start(self) -> list[Command]:
        """The connection is open: say hello."""
        hello = protocol.Hello(
            node=self.node, revision=self.revision, agent=self.agent, node_info=self.node_info
        )
        return [Send(hello)]

    # -- frames ----------------------------------------------------------------------

    def receive(self, frame: str | bytes) -> list[Command]:
        """A frame from the hub."""
        if self.closed:
            return []
        if self._job is not None:
            raise ShellError(f"a frame arrived while {type(self._job).__name__} is under way")
        try:
            msg = protocol.decode(frame)
            if self.state is EdgeState.AWAITING_WELCOME:
                return self._before_welcome(msg)
            if isinstance(msg, protocol.Changes):
                return self._on_changes(msg)
            if isinstance(msg, protocol.Snapshot):
                return self._on_snapshot(msg)
            if isinstance(msg, protocol.ReportAck):
                return self._on_report_ack(msg)
            if isinstance(msg, protocol.Error):
                return [Log(WARNING, f"the hub refused a frame: {msg.code}: {msg.reason}")]
            if isinstance(msg, protocol.Certificate):
                return self._on_certificate(msg)
            raise ProtocolError(
                protocol.UNEXPECTED, f"{msg.type} is not accepted from the hub", msg.type
            )
        except ProtocolError as exc:
            return self._refuse(exc)

    def renew(self, csr: str) -> list[Command]:
        """Ask the hub for a new certificate; nothing while not yet live (ask again later)."""
        if self.state is not EdgeState.LIVE or self.renewing:
            return []
        self.renewing = True
        return [Send(protocol.Renew(csr))]

    def _on_certificate(self, msg: protocol.Certificate) -> list[Command]:
        if not self.renewing:
            raise ProtocolError(
                protocol.UNEXPECTED, "a certificate this edge did not ask for", msg.type
            )
        self.renewing = False
        return [InstallCertificate(msg.certificate)]

    def _refuse(self, exc: ProtocolError) -> list[Command]:
        if self.state is EdgeState.AWAITING_WELCOME or exc.message_type in _ORDERED:
            return self._violation(str(exc), exc)
        self.bad_frames += 1
        out: list[Command] = [
            Log(WARNING, f"refused a frame from the hub: {exc}"),
            Send(protocol.Error.of(exc)),
        ]
        if self.bad_frames >= MAX_BAD_FRAMES:
            out.extend(self._violation("too many bad frames", None))
        return out

    def _violation(self, reason: str, exc: ProtocolError | None) -> list[Command]:
        self.violation = reason
        out: list[Command] = [
            Log(ERROR, f"the hub sent what this edgecore cannot accept: {reason}")
        ]
        if exc is not None:
            out.append(Send(protocol.Error.of(exc)))
        return [*out, self._close(protocol.CLOSE_POLICY, reason[:120])]

    def _close(self, code: int, reason: str) -> Close:
        self.state = EdgeState.CLOSED
        self._job = None
        return Close(code, reason)

    def _before_welcome(self, msg: protocol.Message) -> list[Command]:
        if isinstance(msg, protocol.Error):
            self.refusal = msg
            return [Log(ERROR, f"the hub refused node {self.node}: {msg.code}: {msg.reason}")]
        if not isinstance(msg, protocol.Welcome):
            raise ProtocolError(protocol.UNEXPECTED, f"expected welcome, got {msg.type}", msg.type)
        self.welcome = msg
        self.state = EdgeState.ALIGNING
        self._snapshot_owed = msg.mode == "snapshot"
        self._job = AlignOutbox(msg.report_seq)
        return [
            Log(INFO, f"connected at revision {self.revision} (hub at {msg.head}, {msg.mode})"),
            self._job,
        ]

    def _on_changes(self, msg: protocol.Changes) -> list[Command]:
        if self._staging is not None and msg.revision >= self._staging:
            raise ProtocolError(
                protocol.UNEXPECTED, "changes in the middle of a snapshot", msg.type
            )
        if msg.revision < self.revision or self._staging is not None:
            return [Log(DEBUG, f"ignored a replayed changes frame at {msg.revision}")]
        if any(item.resource_version > msg.revision for item in msg.items):
            raise ProtocolError(
                protocol.BAD_MESSAGE,
                f"changes: an item is newer than revision {msg.revision}",
                msg.type,
            )
        self._job = ApplyChanges(msg.revision, msg.items)
        return [self._job]

    def _on_snapshot(self, msg: protocol.Snapshot) -> list[Command]:
        continues = msg.revision == self._staging
        if not (continues or self._snapshot_owed or msg.revision > self.revision):
            return [Log(DEBUG, f"ignored a replayed snapshot frame at {msg.revision}")]
        self._job = StageSnapshot(msg.revision, msg.items, first=not continues, final=msg.final)
        return [self._job]

    def _on_report_ack(self, msg: protocol.ReportAck) -> list[Command]:
        try:
            fresh = self.cursor.acknowledged(msg.seq)
        except ValueError as exc:
            raise ProtocolError(protocol.BAD_MESSAGE, str(exc)) from None
        if not fresh:
            return []
        out: list[Command] = []
        if msg.rejected:
            first = msg.rejected[0]
            out.append(
                Log(
                    WARNING,
                    f"the hub rejected {len(msg.rejected)} report row(s), "
                    f"e.g. seq {first.seq}: {first.reason}",
                )
            )
        self._job = DeleteAcked(msg.seq, msg.rejected)
        return [*out, self._job]

    # -- job results -------------------------------------------------------------------

    def _finish(self, kind: type[Job]) -> Job | None:
        job, self._job = self._job, None
        return job if isinstance(job, kind) else None

    def aligned(self) -> list[Command]:
        """AlignOutbox committed: the outbox agrees with the hub; reports may flow."""
        job = self._finish(AlignOutbox)
        if job is None or self.closed:
            return []
        assert isinstance(job, AlignOutbox)
        self.cursor = OutboxCursor(acked=job.report_seq)
        self.state = EdgeState.LIVE
        return []

    def applied(self) -> list[Command]:
        """ApplyChanges or StageSnapshot committed."""
        job = self._job
        self._job = None
        if self.closed:
            return []
        if isinstance(job, StageSnapshot) and not job.final:
            self._staging = job.revision
            return []
        if isinstance(job, StageSnapshot):
            self._staging = None
            self._snapshot_owed = False
        elif not isinstance(job, ApplyChanges):
            return []
        self.revision = job.revision
        return [Send(protocol.Ack(job.revision))]

    def deleted(self) -> list[Command]:
        """DeleteAcked committed."""
        self._finish(DeleteAcked)
        return []

    def job_failed(self, job: Job, reason: str) -> list[Command]:
        """A job raised (a full disk, an I/O error): end the session; nothing is acknowledged
        that was not stored, and the hub sends it again next time."""
        if isinstance(job, ReadOutbox):
            self._reading_outbox = False
        else:
            self._job = None
        if self.closed:
            return []
        self.store_failure = f"{type(job).__name__}: {reason}"
        return [
            Log(ERROR, f"local database: {self.store_failure}; reconnecting later"),
            self._close(protocol.CLOSE_INTERNAL, "edge store failed"),
        ]

    # -- the outbox -----------------------------------------------------------------------

    def outbox_request(self) -> ReadOutbox | None:
        """The next read of pending rows, when the window has room (None: wait)."""
        if self.state is not EdgeState.LIVE or self._reading_outbox or not self.cursor.can_send:
            return None
        self._reading_outbox = True
        return ReadOutbox(self.cursor.sent)

    def outbox_read(self, items: Sequence[protocol.ReportItem]) -> list[Command]:
        """ReadOutbox's rows (oldest first, none already sent)."""
        self._reading_outbox = False
        if self.state is not EdgeState.LIVE or not items:
            return []
        self.cursor.sending(items[-1].seq)
        return [Send(protocol.Report(tuple(items)))]

    # -- the end -------------------------------------------------------------------------

    def ended(self, close_code: int | None, close_reason: str = "", lived: float = 0.0) -> Ended:
        """How this session ended, for the reconnect policy."""
        self.state = EdgeState.CLOSED
        if self.violation is not None:
            return Ended(Cause.PROTOCOL_VIOLATION, self.violation, welcomed=self.welcomed)
        if self.store_failure is not None:
            return Ended(Cause.LOCAL_STORE, self.store_failure, welcomed=self.welcomed)
        return Ended(
            Cause.CLOSED,
            close_code=close_code,
            close_reason=close_reason,
            refusal=self.refusal,
            welcomed=self.welcomed,
            lived=lived,
        )
