"""What a session core asks its I/O shell to do: small frozen values, nothing that runs.

A core's methods take an event (a frame, a store result, a feed wake-up) and
return a list of commands, in the order they are to be carried out. The shell
carries out each one; a *job* (a store read or write) ends with the shell
calling the core's matching result method — or ``job_failed`` — with what
the job returned, which may give more commands.

::

    Command
     ├── Send(message)            write one frame
     ├── Close(code, reason)      close the websocket; the session is over
     ├── Log(level, text)         one line for the daemon's log
     ├── InstallCertificate(pem)  edge: put the renewed certificate in place
     └── Job                      a store operation; its result goes back to the core
          ├── hub:  Register, ReadLog, ReadSnapshot, PersistReports, SignCertificate
          └── edge: AlignOutbox, ApplyChanges, StageSnapshot, ReadOutbox, DeleteAcked
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgeward.protocol import Change, Message, Rejected, ReportItem

#: Log levels, as the logging module numbers them.
DEBUG, INFO, WARNING, ERROR = 10, 20, 30, 40


class Command:
    """Base of everything a core returns."""


@dataclass(frozen=True)
class Send(Command):
    message: Message


@dataclass(frozen=True)
class Close(Command):
    """Close the connection with ``code`` (protocol.CLOSE_*); nothing is sent after it."""

    code: int
    reason: str


@dataclass(frozen=True)
class Log(Command):
    level: int
    text: str


@dataclass(frozen=True)
class InstallCertificate(Command):
    """The hub renewed this node's certificate (for the key of the last renew)."""

    certificate: str


class Job(Command):
    """A store operation; the shell reports its outcome back to the core."""


# -- the hub's jobs ------------------------------------------------------------------


@dataclass(frozen=True)
class Register(Job):
    """Create or refresh the Node and mark it Ready → ``HubSession.registered(report_seq)``,
    the highest outbox seq the hub holds for the node."""

    node: str
    node_info: dict[str, Any]


@dataclass(frozen=True)
class SignCertificate(Job):
    """Sign ``csr`` for the session's node and record the certificate →
    ``HubSession.certificate_signed(pem)``; a CSR the CA refuses →
    ``HubSession.certificate_refused(reason)``."""

    csr: str


@dataclass(frozen=True)
class ReadLog(Job):
    """Change-log rows for the node after ``after``, at most ``limit``, with the log's
    bounds, in one read → ``HubSession.log_read(rows, compacted, head)``."""

    after: int
    limit: int


@dataclass(frozen=True)
class ReadSnapshot(Job):
    """Up to ``limit`` objects routed to the node whose key (kind, namespace, name) sorts
    after ``after_key`` (None: from the start), in key order, and the hub's head at that
    read → ``HubSession.snapshot_read(objects, head)``."""

    after_key: tuple[str, str, str] | None
    limit: int


@dataclass(frozen=True)
class PersistReports(Job):
    """Persist outbox rows (replays of rows the hub holds are skipped) and record the edge's
    acknowledged revision → ``HubSession.reports_persisted(high, rejected)``."""

    items: tuple[ReportItem, ...]
    acked_revision: int


# -- the edge's jobs ------------------------------------------------------------------


@dataclass(frozen=True)
class AlignOutbox(Job):
    """Reconcile the outbox with the highest seq the hub holds: delete rows up to it, or
    renumber pending rows above it when the hub knows seqs this cache never issued
    → ``EdgeSession.aligned()``."""

    report_seq: int


@dataclass(frozen=True)
class ApplyChanges(Job):
    """Apply changes and record ``revision``, in one transaction → ``EdgeSession.applied()``."""

    revision: int
    items: tuple[Change, ...]


@dataclass(frozen=True)
class StageSnapshot(Job):
    """Keep one snapshot frame's objects aside (``first``: drop what an earlier snapshot left
    there); with ``final``, replace the whole cache with what is staged and record
    ``revision``, in one transaction → ``EdgeSession.applied()``."""

    revision: int
    items: tuple[Change, ...]
    first: bool
    final: bool


@dataclass(frozen=True)
class ReadOutbox(Job):
    """Pending outbox rows after seq ``after``, oldest first, a frame's worth
    → ``EdgeSession.outbox_read(items)``."""

    after: int


@dataclass(frozen=True)
class DeleteAcked(Job):
    """The hub is done with every row up to ``seq``: delete them → ``EdgeSession.deleted()``."""

    seq: int
    rejected: tuple[Rejected, ...] = ()
