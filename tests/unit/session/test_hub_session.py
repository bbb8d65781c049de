"""The hub's session core, driven event by event: every rule about what an edge may send and
what it is owed, without a socket or a database."""

from __future__ import annotations

import pytest

from edgeward import protocol
from edgeward.session import HubSession, HubState
from edgeward.session.commands import (
    PersistReports,
    ReadLog,
    ReadSnapshot,
    Register,
    SignCertificate,
)
from edgeward.session.hub import (
    MAX_BAD_FRAMES,
    MAX_LIVE_ROWS,
    MAX_QUEUED_REPORTS,
    MAX_SEQ_STEP,
    PAGE,
)
from tests.unit.session.helpers import (
    NODE,
    closes,
    device,
    errors,
    frame,
    hello,
    jobs,
    logs,
    report,
    row,
    sent,
    sent_types,
)


def live(revision: int = 0, head: int = 0, report_seq: int = 0) -> HubSession:
    """A session through hello, registration and an empty catch-up: LIVE at ``head``."""
    s = HubSession()
    assert jobs(s.receive(hello(revision=revision))) == [Register(NODE, {})]
    assert jobs(s.registered(report_seq)) == [ReadLog(revision, PAGE)]
    out = s.log_read([], 0, head)
    assert sent_types(out)[0] == "welcome"
    assert s.state is HubState.LIVE
    return s


# -- hello ------------------------------------------------------------------------


def test_a_hello_registers_the_node_then_resumes_from_its_revision() -> None:
    """hello → Register; registered → read the log after the edge's revision; the first page
    → welcome (changes) with the hub's report seq, then what the node is owed, through head."""
    s = HubSession()
    out = s.receive(hello(revision=3, node_info={"os": "linux"}))
    assert out == [Register(NODE, {"os": "linux"})]
    assert s.state is HubState.REGISTERING
    assert s.registered(7) == [ReadLog(3, PAGE)]
    out = s.log_read([row(4, "a"), row(5, "b")], 0, 9)
    welcome, changes = sent(out)
    assert welcome == protocol.Welcome("changes", 9, 7)
    assert isinstance(changes, protocol.Changes)
    assert (changes.revision, [c.name for c in changes.items]) == (9, ["a", "b"])
    assert (s.state, s.sent, s.acked, s.report_seq) == (HubState.LIVE, 9, 3, 7)
    assert "resuming at revision 3 (hub at 9): changes" in logs(out)


def test_a_resync_requested_by_an_operator_gives_a_snapshot_whatever_the_edge_holds() -> None:
    """The edge holds revision 5, within the log: without the request it would get changes;
    with it, a snapshot, and the log says why."""
    s = HubSession()
    s.receive(hello(revision=5))
    assert s.registered(2, resync=True) == [ReadLog(5, PAGE)]
    out = s.log_read([], 0, 9)
    assert sent(out)[0] == protocol.Welcome("snapshot", 9, 2)
    assert s.state is HubState.SNAPSHOTTING
    assert "snapshot, an operator asked for a resync" in logs(out)


@pytest.mark.parametrize(
    ("first", "code"),
    [
        ("garbage", protocol.BAD_FRAME),
        (frame(type="ack", revision=1), protocol.UNEXPECTED),
        (hello(node="Bad Name!"), protocol.BAD_MESSAGE),
        (hello(proto=2), protocol.UNSUPPORTED_PROTOCOL),
        (hello(revision=2**64), protocol.BAD_MESSAGE),
        (hello(node_info={"host": "\ud800"}), protocol.BAD_FRAME),
    ],
    ids=["garbage", "not-hello", "bad-name", "other-protocol", "revision-past-int64", "surrogate"],
)
def test_anything_but_a_valid_hello_first_is_refused_and_closed(first: str, code: str) -> None:
    """The first frame must be a valid hello: otherwise an error frame and a policy close."""
    s = HubSession()
    out = s.receive(first)
    assert [e.code for e in errors(out)] == [code]
    assert [c.code for c in closes(out)] == [protocol.CLOSE_POLICY]
    assert s.closed and not jobs(out)


def test_a_connection_speaks_only_for_its_own_identity() -> None:
    """With an identity (from a certificate), a hello for another node is refused."""
    s = HubSession(identity="edge-2")
    out = s.receive(hello())
    assert [e.code for e in errors(out)] == [protocol.FORBIDDEN]
    assert s.closed
    assert jobs(HubSession(identity=NODE).receive(hello())) == [Register(NODE, {})]


def test_no_hello_in_time_closes_the_connection() -> None:
    """A connection that says nothing is refused when its hello timer fires, and only then."""
    s = HubSession()
    out = s.hello_timed_out()
    assert errors(out)[0].code == protocol.UNEXPECTED
    assert s.closed
    assert live().hello_timed_out() == []


def test_frames_before_the_welcome_are_unexpected() -> None:
    """While registering, an ack is refused; a report closes the session (it cannot be
    acknowledged); an error frame from the edge is only logged."""
    s = HubSession()
    s.receive(hello())
    assert "the edge reports an error" in logs(s.receive(frame(type="error", code="x", reason="y")))
    out = s.receive(frame(type="ack", revision=0))
    assert errors(out)[0].code == protocol.UNEXPECTED and not s.closed
    out = s.receive(report(1))
    assert closes(out) and s.closed


# -- resume: changes, pages, snapshots ----------------------------------------------


def test_a_long_catch_up_is_read_a_page_at_a_time() -> None:
    """A full page asks for the next one; the last page sends everything owed, each object
    once, in revision order, through the newest revision read."""
    s = HubSession()
    s.receive(hello())
    s.registered(0)
    page = [row(r, f"d{r % 3}") for r in range(1, PAGE + 1)]
    out = s.log_read(page, 0, PAGE + 5)
    assert sent_types(out) == ["welcome"]
    assert jobs(out) == [ReadLog(PAGE, PAGE)]
    out = s.log_read([row(PAGE + 1, "d0")], 0, PAGE + 5)
    (changes,) = sent(out)
    assert isinstance(changes, protocol.Changes)
    assert [(c.name, c.resource_version) for c in changes.items] == [
        ("d2", PAGE - 2),
        ("d1", PAGE),
        ("d0", PAGE + 1),
    ]
    assert changes.revision == s.sent == PAGE + 5


def test_an_edge_behind_the_log_or_ahead_of_the_hub_gets_a_snapshot() -> None:
    """Older than the compacted log, or ahead of the hub (a restored database): a snapshot,
    and the edge's claimed revision is not taken as acknowledged."""
    for revision, compacted, head, why in ((2, 5, 9, "older than"), (50, 0, 9, "ahead of")):
        s = HubSession()
        s.receive(hello(revision=revision))
        s.registered(0)
        out = s.log_read([], compacted, head)
        assert sent(out) == [protocol.Welcome("snapshot", head, 0)]
        assert jobs(out) == [ReadSnapshot(None, PAGE)]
        assert why in logs(out)
        assert s.state is HubState.SNAPSHOTTING and s.acked == 0


def test_a_snapshot_is_read_and_sent_a_page_at_a_time() -> None:
    """Each page of objects becomes snapshot frames at the first page's head; only the last
    frame of the last page is final; then the session is live at that head."""
    s = HubSession()
    s.receive(hello(revision=99))
    s.registered(0)
    s.log_read([], 0, 10)
    first = [device(f"d{i:04}", NODE, 5) for i in range(PAGE)]
    out = s.snapshot_read(first, 10)
    assert jobs(out) == [ReadSnapshot(("Device", "default", f"d{PAGE - 1:04}"), PAGE)]
    frames = sent(out)
    assert all(isinstance(f, protocol.Snapshot) and not f.final for f in frames)
    assert sum(len(f.items) for f in frames) == PAGE  # type: ignore[attr-defined]
    out = s.snapshot_read([device("z", NODE, 12)], 12)
    (last,) = sent(out)
    assert isinstance(last, protocol.Snapshot)
    assert (last.revision, last.final, len(last.items)) == (10, True, 1)
    assert (s.state, s.sent) == (HubState.LIVE, 10)


def test_an_empty_snapshot_still_ends_with_a_final_frame() -> None:
    """A node with nothing bound to it gets one empty, final snapshot frame."""
    s = HubSession()
    s.receive(hello(revision=5))
    s.registered(0)
    s.log_read([], 0, 3)
    assert sent(s.snapshot_read([], 3)) == [protocol.Snapshot(3, (), True)]


def test_compaction_between_two_pages_turns_the_catch_up_into_a_snapshot() -> None:
    """If the log is compacted past the catch-up's position between two pages, the rows in
    between are gone: the session resyncs by snapshot instead of skipping them."""
    s = HubSession()
    s.receive(hello())
    s.registered(0)
    s.log_read([row(r, "d") for r in range(1, PAGE + 1)], 0, 2000)
    out = s.log_read([row(1500, "e")], 1200, 2000)
    assert jobs(out) == [ReadSnapshot(None, PAGE)]
    assert "compacted past 1000" in logs(out)
    assert s.state is HubState.SNAPSHOTTING


def test_results_for_a_state_the_session_has_left_are_ignored() -> None:
    """A job result that does not belong to the current state changes nothing."""
    s = live(head=4)
    assert s.registered(3) == []
    assert s.log_read([row(5, "x")], 0, 5) == []
    assert s.snapshot_read([], 5) == []
    assert s.sent == 4


# -- live -----------------------------------------------------------------------------


def test_live_rows_are_sent_once_in_order() -> None:
    """Rows from the feed become one changes frame through the newest row; rows at or below
    what was sent already are not sent again; an empty batch sends nothing."""
    s = live(head=4)
    out = s.rows_published([row(3, "old"), row(5, "a"), row(6, "a", "update")])
    (changes,) = sent(out)
    assert isinstance(changes, protocol.Changes)
    assert (changes.revision, [(c.name, c.resource_version) for c in changes.items]) == (
        6,
        [("a", 6)],
    )
    assert s.rows_published([row(6, "a")]) == []
    assert s.rows_published([]) == []


def test_rows_that_arrive_during_the_catch_up_follow_it() -> None:
    """The feed's rows that arrive before the session is live wait, and those newer than the
    catch-up are sent after it."""
    s = HubSession()
    s.receive(hello())
    assert s.rows_published([row(2, "early")]) == []
    s.registered(0)
    assert s.rows_published([row(3, "a"), row(4, "b")]) == []
    out = s.log_read([row(1, "x"), row(2, "early"), row(3, "a")], 0, 3)
    frames = sent(out)
    assert [f.type for f in frames] == ["welcome", "changes", "changes"]
    assert [c.name for c in frames[2].items] == ["b"]  # type: ignore[attr-defined]
    assert s.sent == 4


def test_an_overflowing_feed_is_read_again_from_the_log() -> None:
    """Live: a feed overflow re-reads the log after what was sent. Before live: the waiting
    rows are dropped, and the log is read again once the catch-up ends."""
    s = live(head=4)
    out = s.feed_overflowed()
    assert jobs(out) == [ReadLog(4, PAGE)] and s.state is HubState.CATCHING_UP
    assert s.rows_published([row(5, "a")]) == []  # waits for the read
    out = s.log_read([row(5, "a")], 0, 5)
    assert [c.name for c in sent(out)[0].items] == ["a"]  # type: ignore[attr-defined]
    assert s.state is HubState.LIVE

    s = HubSession()
    s.receive(hello())
    s.registered(0)
    s.rows_published([row(1, "a")])
    assert s.feed_overflowed() == []
    assert s.buffered["live_rows"] == 0
    assert s.rows_published([row(2, "b")]) == []  # dropped: the read after the catch-up has it
    out = s.log_read([], 0, 0)
    assert sent_types(out) == ["welcome"] and jobs(out) == [ReadLog(0, PAGE)]


def test_live_rows_waiting_for_a_read_are_bounded() -> None:
    """Past MAX_LIVE_ROWS waiting rows, they are dropped and the log is read again instead."""
    s = HubSession()
    s.receive(hello())
    s.registered(0)
    s.rows_published([row(r, "a") for r in range(1, MAX_LIVE_ROWS + 2)])
    assert s.buffered["live_rows"] == 0
    assert jobs(s.log_read([], 0, 0)) == [ReadLog(0, PAGE)]


def test_an_idle_session_moves_the_edge_along_the_log() -> None:
    """With nothing to send, an empty changes frame at the feed's head keeps an idle edge
    inside the log; nothing when the edge is already there or the session is not live."""
    s = live(head=4)
    assert sent(s.idle(9)) == [protocol.Changes(9, ())]
    assert s.idle(9) == []
    t = HubSession()
    assert t.idle(9) == []


# -- acks and reports -----------------------------------------------------------------


def test_acks_up_to_what_was_sent_are_kept_and_beyond_refused() -> None:
    """An ack moves the acknowledged revision forward; an ack beyond what was sent is refused
    with an error frame and the session goes on."""
    s = live(head=6)
    assert s.receive(frame(type="ack", revision=5)) == []
    assert s.receive(frame(type="ack", revision=2)) == []
    assert s.acked == 5
    out = s.receive(frame(type="ack", revision=7))
    assert errors(out)[0].code == protocol.BAD_MESSAGE and not s.closed


def test_reports_are_persisted_one_frame_at_a_time_in_order() -> None:
    """A report is persisted with the edge's acked revision; the next waits for the first's
    result; each result acknowledges through the highest seq the hub holds."""
    s = live(revision=2, head=2)
    out = s.receive(report(1, 2))
    (job,) = jobs(out)
    assert isinstance(job, PersistReports)
    assert ([i.seq for i in job.items], job.acked_revision) == ([1, 2], 2)
    assert s.receive(report(3)) == []
    out = s.reports_persisted(2, ())
    assert sent(out) == [protocol.ReportAck(2)]
    assert [i.seq for i in jobs(out)[0].items] == [3]  # type: ignore[attr-defined]
    rejected = (protocol.Rejected(3, "no such device"),)
    out = s.reports_persisted(3, rejected)
    assert sent(out) == [protocol.ReportAck(3, rejected)]
    assert "rejected 1 report row(s), e.g. seq 3: no such device" in logs(out)
    assert s.reports_persisted(9, ()) == []  # nothing was waiting
    assert s.report_seq == 3


def test_report_frames_waiting_to_be_persisted_are_bounded() -> None:
    """An edge keeps at most 4 report frames unacknowledged; one that sends more than
    MAX_QUEUED_REPORTS without waiting is closed."""
    s = live()
    for seq in range(1, MAX_QUEUED_REPORTS + 1):
        s.receive(report(seq))
    out = s.receive(report(MAX_QUEUED_REPORTS + 1))
    assert [c.code for c in closes(out)] == [protocol.CLOSE_POLICY]
    assert s.buffered["queued_reports"] == 0


def test_a_seq_beyond_what_the_node_could_issue_closes_the_session() -> None:
    """A report seq more than MAX_SEQ_STEP past the hub's position is never persisted."""
    s = live(report_seq=10)
    out = s.receive(report(10 + MAX_SEQ_STEP + 1))
    assert not jobs(out)
    assert "could have issued (the hub holds 10)" in errors(out)[0].reason
    assert s.closed
    assert jobs(live(report_seq=10).receive(report(10 + MAX_SEQ_STEP)))


def test_a_report_that_cannot_be_read_closes_the_session() -> None:
    """Unreadable rows cannot be acknowledged, and a later acknowledgement would cover them:
    an error frame and a policy close, at the first one."""
    s = live()
    out = s.receive(frame(type="report", items=[]))
    assert errors(out)[0].code == protocol.BAD_MESSAGE
    assert [c.reason for c in closes(out)] == ["a report that cannot be read"]


def test_too_many_bad_frames_close_the_session() -> None:
    """Other bad frames get an error frame each; the MAX_BAD_FRAMES-th closes the session,
    after which nothing more is answered."""
    s = live()
    for _ in range(MAX_BAD_FRAMES - 1):
        out = s.receive("garbage")
        assert errors(out) and not closes(out)
    out = s.receive(hello())  # a second hello is a bad frame too
    assert [c.reason for c in closes(out)] == ["too many bad frames"]
    assert s.receive("garbage") == []


# -- endings --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "code"),
    [
        (lambda s: s.replaced("10.0.0.2:5000"), protocol.CLOSE_REPLACED),
        (lambda s: s.node_deleted(), protocol.CLOSE_NODE_DELETED),
        (lambda s: s.resync_requested(), protocol.CLOSE_RESYNC),
        (lambda s: s.stopping(), protocol.CLOSE_GOING_AWAY),
        (lambda s: s.move(), protocol.CLOSE_MOVE),
        (lambda s: s.job_failed(ReadLog(0, PAGE), "database is locked"), protocol.CLOSE_INTERNAL),
    ],
    ids=["replaced", "node-deleted", "resync", "stopping", "move", "job-failed"],
)
def test_a_session_ends_with_a_close_code_that_says_why(event, code: int) -> None:
    """Each ending closes with its own code (the edge's reconnect policy reads it); once
    closed, the session answers nothing more."""
    s = live(head=3)
    s.receive(report(1))
    assert [c.code for c in closes(event(s))] == [code]
    assert s.closed and s.buffered == {"live_rows": 0, "queued_reports": 0, "catch_up_objects": 0}
    assert event(s) == []
    assert s.receive(frame(type="ack", revision=1)) == []
    assert s.rows_published([row(4, "a")]) == []
    assert s.feed_overflowed() == []
    assert s.reports_persisted(1, ()) == []


def test_a_lost_connection_ends_the_session_silently() -> None:
    """When the connection drops, nothing is sent and late results are ignored."""
    s = live()
    assert s.connection_lost() == []
    assert s.closed and s.job_failed(ReadLog(0, PAGE), "x") == []


# -- certificate renewal ------------------------------------------------------------

CSR = "-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n"
CERT = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def codes(commands: list) -> list[str]:
    return [e.code for e in errors(commands)]


def live_with_identity() -> HubSession:
    s = HubSession(identity=NODE)
    s.receive(hello())
    s.registered(0)
    s.log_read([], 0, 0)
    assert s.state is HubState.LIVE
    return s


def test_a_live_node_renews_its_certificate_once_per_session() -> None:
    """renew → SignCertificate(csr); the signed certificate goes back to the edge; a second
    renew in the same session is refused (a node cannot make the CA sign in a loop)."""
    s = live_with_identity()
    assert jobs(s.receive(frame(type="renew", csr=CSR))) == [SignCertificate(CSR)]
    assert sent(s.certificate_signed(CERT)) == [protocol.Certificate(CERT)]
    out = s.receive(frame(type="renew", csr=CSR))
    assert jobs(out) == [] and codes(out) == [protocol.FORBIDDEN]
    assert not s.closed


def test_a_csr_the_ca_refuses_is_an_error_frame_not_the_end_of_the_session() -> None:
    s = live_with_identity()
    s.receive(frame(type="renew", csr=CSR))
    out = s.certificate_refused("the CSR's key must be ECDSA P-256")
    assert [m.reason for m in sent(out)] == ["renew: the CSR's key must be ECDSA P-256"]
    assert not s.closed


def test_renewal_is_refused_without_an_identity_and_before_live() -> None:
    """A hub without TLS signs nothing; a renew before the session is live is unexpected."""
    out = live().receive(frame(type="renew", csr=CSR))
    assert jobs(out) == [] and codes(out) == [protocol.FORBIDDEN]
    s = HubSession(identity=NODE)
    s.receive(hello())
    assert codes(s.receive(frame(type="renew", csr=CSR))) == [protocol.UNEXPECTED]


@pytest.mark.parametrize(
    "csr", ["not pem", "-----BEGIN CERTIFICATE REQUEST-----" + "A" * 20_000, 7]
)
def test_a_renew_without_a_usable_csr_is_refused(csr: object) -> None:
    out = live_with_identity().receive(frame(type="renew", csr=csr))
    assert jobs(out) == [] and codes(out) == [protocol.BAD_MESSAGE]


def test_a_signed_or_refused_certificate_after_the_session_closed_sends_nothing() -> None:
    s = live_with_identity()
    s.receive(frame(type="renew", csr=CSR))
    s.connection_lost()
    assert s.certificate_signed(CERT) == []
    assert s.certificate_refused("late") == []
