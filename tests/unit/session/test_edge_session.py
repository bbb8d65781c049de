"""The edge's session core, driven event by event: what the hub may send, what the edge owes
it, and how a session ends, without a socket or a database."""

from __future__ import annotations

import pytest

from edgeward import protocol
from edgeward.protocol import Change
from edgeward.session import Cause, EdgeSession, EdgeState
from edgeward.session.commands import (
    AlignOutbox,
    ApplyChanges,
    DeleteAcked,
    InstallCertificate,
    ReadOutbox,
    StageSnapshot,
)
from edgeward.session.edge import MAX_BAD_FRAMES, ShellError
from tests.unit.session.helpers import NODE, closes, device, errors, frame, jobs, logs, sent


def put(name: str, rv: int) -> Change:
    return Change("put", "Device", "default", name, rv, device(name, NODE, rv))


def changes(revision: int, *items: Change) -> str:
    return protocol.Changes(revision, items).encode()


def snapshot(revision: int, final: bool, *items: Change) -> str:
    return protocol.Snapshot(revision, items, final).encode()


def welcome(mode: str = "changes", head: int = 5, report_seq: int = 0) -> str:
    return frame(type="welcome", mode=mode, head=head, report_seq=report_seq)


def live(revision: int = 3, mode: str = "changes", report_seq: int = 0) -> EdgeSession:
    """A session through hello, welcome and the outbox alignment."""
    s = EdgeSession(NODE, revision, "0.1.0", {"os": "linux"})
    (hello,) = sent(s.start())
    assert hello == protocol.Hello(NODE, revision, 1, "0.1.0", {"os": "linux"})
    out = s.receive(welcome(mode, report_seq=report_seq))
    assert jobs(out) == [AlignOutbox(report_seq)]
    assert s.aligned() == []
    assert s.state is EdgeState.LIVE and s.welcomed
    return s


# -- welcome ---------------------------------------------------------------------------


def test_a_welcome_aligns_the_outbox_then_reports_may_flow() -> None:
    """Reports wait until the outbox agrees with the hub's seq; then the first read starts
    after that seq."""
    s = EdgeSession(NODE, 0)
    s.start()
    assert s.outbox_request() is None
    s.receive(welcome(report_seq=12))
    assert s.state is EdgeState.ALIGNING and s.outbox_request() is None
    s.aligned()
    assert s.outbox_request() == ReadOutbox(12)


def test_a_refusal_before_the_welcome_is_kept_for_the_reconnect_policy() -> None:
    """An error frame instead of a welcome is the hub refusing this node: logged, and kept
    so that the close that follows is classified by it."""
    s = EdgeSession(NODE, 0)
    out = s.receive(frame(type="error", code="unsupported_protocol", reason="speaks 2"))
    assert "refused node edge-1" in logs(out)
    ended = s.ended(protocol.CLOSE_POLICY, "unsupported_protocol")
    assert ended.cause is Cause.CLOSED
    assert ended.refusal == protocol.Error("unsupported_protocol", "speaks 2")
    assert not ended.welcomed


@pytest.mark.parametrize(
    "first", ["garbage", changes(4), frame(type="welcome", mode="sideways", head=1, report_seq=0)]
)
def test_anything_but_a_welcome_first_is_a_protocol_violation(first: str) -> None:
    """The hub's first answer must be a welcome (or a refusal): anything else ends the session
    as a violation, which the reconnect policy does not retry."""
    s = EdgeSession(NODE, 0)
    out = s.receive(first)
    assert [c.code for c in closes(out)] == [protocol.CLOSE_POLICY]
    assert s.ended(None).cause is Cause.PROTOCOL_VIOLATION


# -- changes ---------------------------------------------------------------------------


def test_changes_are_applied_then_acknowledged() -> None:
    """A changes frame becomes one ApplyChanges job; once it committed, the revision is
    acknowledged and becomes the edge's."""
    s = live()
    out = s.receive(changes(7, put("a", 6)))
    assert jobs(out) == [ApplyChanges(7, (put("a", 6),))]
    assert sent(s.applied()) == [protocol.Ack(7)]
    assert s.revision == 7
    assert s.applied() == []  # a result for no job changes nothing


def test_the_shell_must_finish_a_job_before_the_next_frame() -> None:
    """Frames are applied one at a time: handing one over while a job is under way is a bug
    in the shell, refused loudly."""
    s = live()
    s.receive(changes(7))
    with pytest.raises(ShellError):
        s.receive(changes(8))


def test_changes_never_go_back() -> None:
    """A frame older than the revision the edge holds is a replay: ignored, not applied, not
    acknowledged; one with an item newer than its own revision is a violation."""
    s = live(revision=10)
    out = s.receive(changes(9, put("a", 9)))
    assert not jobs(out) and "ignored a replayed changes frame" in logs(out)
    assert jobs(s.receive(changes(10)))  # the same revision again is fine
    s.applied()
    out = s.receive(changes(11, put("a", 12)))
    assert closes(out) and s.violation and "newer than revision 11" in s.violation


# -- snapshots --------------------------------------------------------------------------


def test_a_snapshot_is_staged_frame_by_frame_and_applied_on_its_final_frame() -> None:
    """The first frame starts staging, the next ones continue it, the final one replaces the
    cache and is acknowledged; a snapshot announced by the welcome may be older than what the
    edge holds (the hub's database was restored)."""
    s = live(revision=50, mode="snapshot")
    out = s.receive(snapshot(20, False, put("a", 3)))
    assert jobs(out) == [StageSnapshot(20, (put("a", 3),), first=True, final=False)]
    assert s.applied() == []
    out = s.receive(snapshot(20, True, put("b", 4)))
    assert jobs(out) == [StageSnapshot(20, (put("b", 4),), first=False, final=True)]
    assert sent(s.applied()) == [protocol.Ack(20)]
    assert s.revision == 20


def test_a_stale_snapshot_is_ignored_and_a_newer_one_accepted() -> None:
    """After the announced snapshot, only a snapshot newer than what the edge holds is taken
    (a resync after the hub's log moved on); an older one is a replay."""
    s = live(revision=10)
    assert "ignored a replayed snapshot" in logs(s.receive(snapshot(10, True)))
    assert jobs(s.receive(snapshot(11, True))) == [StageSnapshot(11, (), True, True)]


def test_changes_in_the_middle_of_a_snapshot() -> None:
    """While a snapshot is staged, an older changes frame is a replay; one at or past the
    snapshot's revision is a violation (the hub sends a snapshot whole)."""
    s = live(revision=10)
    s.receive(snapshot(20, False))
    s.applied()
    assert "ignored" in logs(s.receive(changes(15)))
    out = s.receive(changes(20))
    assert closes(out) and "middle of a snapshot" in (s.violation or "")


# -- reports ----------------------------------------------------------------------------


def test_the_outbox_drains_within_its_window() -> None:
    """One read at a time; rows read are sent as one report; at most 4 frames unacknowledged;
    an empty read sends nothing."""
    s = live(report_seq=5)
    job = s.outbox_request()
    assert job == ReadOutbox(5)
    assert s.outbox_request() is None  # the read is under way
    items = [protocol.ReportItem(6, "node/status", "node-status", {})]
    assert sent(s.outbox_read(items)) == [protocol.Report(tuple(items))]
    for seq in (7, 8, 9):
        s.outbox_request()
        s.outbox_read([protocol.ReportItem(seq, "upload", None, {})])
    assert s.outbox_request() is None  # the window is full
    out = s.receive(frame(type="report_ack", seq=7))
    assert jobs(out) == [DeleteAcked(7, ())]
    assert s.deleted() == []
    assert s.outbox_request() == ReadOutbox(9)
    assert s.outbox_read([]) == []


def test_report_acks() -> None:
    """A fresh ack deletes rows and logs the rejected ones once; a replayed ack does nothing;
    an ack beyond what was sent is refused and the session goes on."""
    s = live()
    s.outbox_request()
    s.outbox_read([protocol.ReportItem(s2, "upload", None, {}) for s2 in (1, 2)])
    out = s.receive(
        frame(type="report_ack", seq=2, rejected=[{"seq": 1, "reason": "not bound here"}])
    )
    assert jobs(out) == [DeleteAcked(2, (protocol.Rejected(1, "not bound here"),))]
    assert "rejected 1 report row(s), e.g. seq 1: not bound here" in logs(out)
    s.deleted()
    assert s.receive(frame(type="report_ack", seq=2)) == []
    out = s.receive(frame(type="report_ack", seq=9))
    assert errors(out)[0].code == protocol.BAD_MESSAGE and not s.closed


# -- bad frames and endings --------------------------------------------------------------


def test_bad_frames_get_error_frames_until_there_are_too_many() -> None:
    """Frames the hub should not send get an error frame each; an error frame from the hub is
    logged; the tenth bad frame ends the session as a violation."""
    s = live()
    assert "the hub refused a frame: x: y" in logs(
        s.receive(frame(type="error", code="x", reason="y"))
    )
    for _ in range(MAX_BAD_FRAMES - 1):
        out = s.receive(frame(type="ack", revision=1))
        assert errors(out) and not closes(out)
    out = s.receive(frame(type="report_ack", seq=-1))
    assert closes(out) and s.violation == "too many bad frames"
    assert s.receive(changes(9)) == []


def test_an_unreadable_changes_frame_is_a_violation() -> None:
    """A changes or snapshot frame the edge cannot read would make it skip changes: the
    session ends at once, with an error frame saying why."""
    s = live()
    out = s.receive(frame(type="changes", revision=4, items=[{"op": "put"}]))
    assert errors(out) and closes(out)
    assert s.ended(protocol.CLOSE_POLICY).cause is Cause.PROTOCOL_VIOLATION


def test_a_failed_store_job_ends_the_session_for_a_later_retry() -> None:
    """A job that raised (a full disk) ends the session: nothing unstored is acknowledged and
    the reconnect policy tries again later; an outbox read that failed may be retried."""
    s = live()
    s.receive(changes(7))
    out = s.job_failed(ApplyChanges(7, ()), "database or disk is full")
    assert [c.code for c in closes(out)] == [protocol.CLOSE_INTERNAL]
    ended = s.ended(None)
    assert (ended.cause, ended.detail) == (
        Cause.LOCAL_STORE,
        "ApplyChanges: database or disk is full",
    )
    assert s.job_failed(ReadOutbox(0), "x") == []
    assert s.applied() == [] and s.aligned() == []

    t = live()
    t.outbox_request()
    assert closes(t.job_failed(ReadOutbox(0), "disk I/O error"))
    assert t.outbox_request() is None


def test_results_after_the_end_are_ignored() -> None:
    """Once closed, results of jobs still under way change nothing and send nothing."""
    s = live()
    s.receive(changes(7))
    s.ended(1006)
    assert s.applied() == []
    assert s.outbox_read([protocol.ReportItem(1, "upload", None, {})]) == []
    assert s.revision == 3

    t = EdgeSession(NODE, 0)
    t.receive(welcome())
    t.ended(None)
    assert t.aligned() == [] and t.outbox_request() is None


def test_a_clean_end_reports_how_long_the_session_lived() -> None:
    """A session that ends by a close frame is classified by its code, its refusal, whether it
    was welcomed and how long it lived."""
    s = live()
    ended = s.ended(protocol.CLOSE_GOING_AWAY, "the hub is stopping", 42.0)
    assert (ended.cause, ended.close_code, ended.close_reason, ended.welcomed, ended.lived) == (
        Cause.CLOSED,
        1001,
        "the hub is stopping",
        True,
        42.0,
    )
    assert s.applied() == [] and s.deleted() == []


# -- certificate renewal ------------------------------------------------------------

CSR = "-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n"
CERT = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def test_a_live_edge_asks_for_a_certificate_and_installs_the_answer() -> None:
    s = live()
    assert sent(s.renew(CSR)) == [protocol.Renew(CSR)]
    assert s.renew(CSR) == []  # one at a time
    out = s.receive(frame(type="certificate", certificate=CERT))
    assert out == [InstallCertificate(CERT)]
    assert not s.renewing


def test_no_renewal_before_the_session_is_live() -> None:
    s = EdgeSession(NODE, 0)
    s.start()
    assert s.renew(CSR) == []


def test_a_certificate_nobody_asked_for_is_refused() -> None:
    """The hub may not push a certificate: only the answer to this edge's renew is installed."""
    s = live()
    out = s.receive(frame(type="certificate", certificate=CERT))
    assert not any(isinstance(c, InstallCertificate) for c in out)
    assert [m.code for m in sent(out) if isinstance(m, protocol.Error)] == [protocol.UNEXPECTED]
