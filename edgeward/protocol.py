"""The hub ↔ edge sync protocol: one message per websocket text frame.

Every frame is a JSON object with a ``type``. Each message is a frozen
dataclass that owns its codec: :func:`decode` turns a frame into a message or
raises :class:`~edgeward.errors.ProtocolError` with a stable code, and
``encode()`` turns a message into a frame. No sockets here: the hub's edge
endpoint and the edge's hub link both call into this module.

The conversation::

    edge                                   hub
     │ hello{node, revision, protocol}  ──▶ │  registers the node, marks it Ready
     │ ◀── welcome{mode, head, report_seq}  │  mode "changes" or "snapshot"
     │ ◀── changes{revision, items} …       │  or snapshot{revision, items, final} …
     │ ack{revision}                    ──▶ │  after the batch is committed on the edge
     │ report{items[seq, topic, key, body]} ──▶  outbox rows, in seq order
     │ ◀── report_ack{seq, rejected?}       │  after the hub has persisted them
     │ ◀──────────── error{code, reason} ──▶│  a frame was refused

``docs/DESIGN.md`` holds the same conversation as a table with each
message's guarantee.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from edgeward import storable
from edgeward.errors import ProtocolError

PROTOCOL_VERSION = 1

#: Largest frame either side accepts, in bytes (edgeward.storable holds every limit).
MAX_FRAME_BYTES = storable.MAX_FRAME_BYTES
#: Largest node description (hello's node_info, a status report's parts) the hub keeps.
MAX_NODE_INFO_BYTES = 16 * 1024
#: Highest outbox seq a node may use. An edge numbers its rows from 1 (SQLite's
#: AUTOINCREMENT): at 10,000 rows a second it would take 14 million years to get here.
#: Half of int64, so that renumbering pending rows above a seq the hub holds
#: (Welcome.report_seq) never overflows.
MAX_SEQ = 2**62 - 1

# Error codes carried by error frames.
BAD_FRAME = "bad_frame"
UNKNOWN_TYPE = "unknown_type"
BAD_MESSAGE = "bad_message"
UNEXPECTED = "unexpected"
UNSUPPORTED_PROTOCOL = "unsupported_protocol"
REPLACED = "replaced"
INTERNAL = "internal"
#: The session may not speak for the node named in hello (identity, later certificates).
FORBIDDEN = "forbidden"

# Close codes. The edge's reconnect policy (edgeward.session.retry) reads them: a policy
# close means "this will not work by trying again"; the others are retried after a backoff.
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001  # the hub is stopping
CLOSE_POLICY = 1008  # refused: a bad hello, another protocol, a frame that cannot be taken
CLOSE_TOO_BIG = 1009  # a frame over MAX_FRAME_BYTES
CLOSE_INTERNAL = 1011  # the hub failed to serve the session; try again later
CLOSE_REPLACED = 4000  # a newer connection of the same node took over
CLOSE_NODE_DELETED = 4001  # an operator deleted the Node: register again
CLOSE_RESYNC = 4002  # an operator asked for a resync: reconnect and take a snapshot
CLOSE_MOVE = 4003  # rebalancing: reconnect, to another hub replica when there is a choice

Op = Literal["put", "delete"]

# Report topics: what an outbox row carries. The hub has one handler per topic.
# devicetwin (which imports nothing of ours) spells the twin topics itself; a test
# holds the two spellings together.
TOPIC_NODE_STATUS = "node/status"
TOPIC_TWIN_REPORTED = "twin/reported"
TOPIC_DEVICE_STATE = "device/state"
TOPIC_UPLOAD = "upload"
TOPIC_NODE_OUTAGE = "node/outage"


def _want(body: dict[str, Any], name: str, kind: type | tuple[type, ...], what: str) -> Any:
    value = body.get(name)
    # bool is an int subclass; a count or revision is never a bool
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ProtocolError(BAD_MESSAGE, f"{body.get('type')}: {name} must be {what}")
    return value


def _want_count(body: dict[str, Any], name: str) -> int:
    value = _want(body, name, int, "a non-negative integer")
    if not 0 <= value <= storable.INT64_MAX:
        raise ProtocolError(
            BAD_MESSAGE, f"{body.get('type')}: {name} must be an integer from 0 to 2^63-1"
        )
    return value


def _want_list(body: dict[str, Any], name: str) -> list[Any]:
    return _want(body, name, list, "a list")


class Message:
    """Base of every sync message."""

    type: ClassVar[str]

    def to_wire(self) -> dict[str, Any]:
        raise NotImplementedError

    def encode(self) -> str:
        return storable.dumps(self.to_wire())


@dataclass(frozen=True)
class Hello(Message):
    """edge → hub, first frame: who I am and the last revision I applied durably."""

    type: ClassVar[str] = "hello"
    node: str
    revision: int
    protocol: int = PROTOCOL_VERSION
    agent: str = ""
    node_info: dict[str, Any] = field(default_factory=dict)

    def to_wire(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "node": self.node,
            "revision": self.revision,
            "protocol": self.protocol,
            "agent": self.agent,
            "node_info": self.node_info,
        }

    @classmethod
    def from_wire(cls, body: dict[str, Any]) -> Hello:
        node = _want(body, "node", str, "a node name")
        if not node or len(node) > 253:
            raise ProtocolError(BAD_MESSAGE, "hello: node must be 1 to 253 characters")
        info = body.get("node_info", {})
        if not isinstance(info, dict):
            raise ProtocolError(BAD_MESSAGE, "hello: node_info must be an object")
        try:
            storable.check(info, MAX_NODE_INFO_BYTES, "hello: node_info")
        except storable.Unstorable as exc:
            raise ProtocolError(BAD_MESSAGE, str(exc)) from None
        agent = body.get("agent", "")
        if not isinstance(agent, str):
            raise ProtocolError(BAD_MESSAGE, "hello: agent must be a string")
        return cls(
            node=node,
            revision=_want_count(body, "revision"),
            protocol=_want_count(body, "protocol"),
            agent=agent,
            node_info=info,
        )


@dataclass(frozen=True)
class Welcome(Message):
    """hub → edge, reply to hello.

    ``mode`` says whether changes or a snapshot follow; ``head`` is the hub's
    revision when it answered; ``report_seq`` is the highest outbox sequence
    the hub has persisted for this node (the edge may drop rows up to it).
    """

    type: ClassVar[str] = "welcome"
    mode: Literal["changes", "snapshot"]
    head: int
    report_seq: int

    def to_wire(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "mode": self.mode,
            "head": self.head,
            "report_seq": self.report_seq,
        }

    @classmethod
    def from_wire(cls, body: dict[str, Any]) -> Welcome:
        mode = body.get("mode")
        if mode not in ("changes", "snapshot"):
            raise ProtocolError(BAD_MESSAGE, 'welcome: mode must be "changes" or "snapshot"')
        report_seq = _want_count(body, "report_seq")
        if report_seq > MAX_SEQ:
            raise ProtocolError(BAD_MESSAGE, f"welcome: report_seq must be at most {MAX_SEQ}")
        return cls(mode=mode, head=_want_count(body, "head"), report_seq=report_seq)


@dataclass(frozen=True)
class Change:
    """One object's new state for a node: put it (with its body) or delete it."""

    op: Op
    kind: str
    namespace: str
    name: str
    resource_version: int
    object: dict[str, Any] | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        return self.kind, self.namespace, self.name

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "op": self.op,
            "kind": self.kind,
            "namespace": self.namespace,
            "name": self.name,
            "rv": self.resource_version,
        }
        if self.object is not None:
            out["object"] = self.object
        return out

    @classmethod
    def from_wire(cls, body: object) -> Change:
        if not isinstance(body, dict):
            raise ProtocolError(BAD_MESSAGE, "change: each item must be an object")
        op = body.get("op")
        if op not in ("put", "delete"):
            raise ProtocolError(BAD_MESSAGE, 'change: op must be "put" or "delete"')
        obj = body.get("object")
        if op == "put" and not isinstance(obj, dict):
            raise ProtocolError(BAD_MESSAGE, "change: a put carries its object")
        for name in ("kind", "namespace", "name"):
            if not isinstance(body.get(name), str):
                raise ProtocolError(BAD_MESSAGE, f"change: {name} must be a string")
        rv = body.get("rv")
        if not storable.is_int64(rv) or rv < 0:
            raise ProtocolError(BAD_MESSAGE, "change: rv must be an integer from 0 to 2^63-1")
        return cls(
            op=op,
            kind=body["kind"],
            namespace=body["namespace"],
            name=body["name"],
            resource_version=rv,
            object=obj if op == "put" else None,
        )


@dataclass(frozen=True)
class Changes(Message):
    """hub → edge: the latest state of changed objects; apply them, then record ``revision``."""

    type: ClassVar[str] = "changes"
    revision: int
    items: tuple[Change, ...]

    def to_wire(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "revision": self.revision,
            "items": [c.to_wire() for c in self.items],
        }

    @classmethod
    def from_wire(cls, body: dict[str, Any]) -> Changes:
        items = tuple(Change.from_wire(i) for i in _want_list(body, "items"))
        return cls(revision=_want_count(body, "revision"), items=items)


@dataclass(frozen=True)
class Snapshot(Message):
    """hub → edge: part of the whole desired state; the final part replaces the cache."""

    type: ClassVar[str] = "snapshot"
    revision: int
    items: tuple[Change, ...]
    final: bool

    def to_wire(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "revision": self.revision,
            "items": [c.to_wire() for c in self.items],
            "final": self.final,
        }

    @classmethod
    def from_wire(cls, body: dict[str, Any]) -> Snapshot:
        items = tuple(Change.from_wire(i) for i in _want_list(body, "items"))
        if any(c.op != "put" for c in items):
            raise ProtocolError(BAD_MESSAGE, "snapshot: every item is a put")
        return cls(
            revision=_want_count(body, "revision"),
            items=items,
            final=_want(body, "final", bool, "true or false"),
        )


@dataclass(frozen=True)
class Ack(Message):
    """edge → hub: everything up to ``revision`` is durably applied."""

    type: ClassVar[str] = "ack"
    revision: int

    def to_wire(self) -> dict[str, Any]:
        return {"type": self.type, "revision": self.revision}

    @classmethod
    def from_wire(cls, body: dict[str, Any]) -> Ack:
        return cls(revision=_want_count(body, "revision"))


@dataclass(frozen=True)
class ReportItem:
    """One outbox row: ``topic`` says what it is, ``key`` is set for state rows."""

    seq: int
    topic: str
    key: str | None
    body: dict[str, Any]

    def to_wire(self) -> dict[str, Any]:
        return {"seq": self.seq, "topic": self.topic, "key": self.key, "body": self.body}

    @classmethod
    def from_wire(cls, body: object) -> ReportItem:
        if not isinstance(body, dict):
            raise ProtocolError(BAD_MESSAGE, "report: each item must be an object")
        seq = body.get("seq")
        if not isinstance(seq, int) or isinstance(seq, bool) or not 0 < seq <= MAX_SEQ:
            raise ProtocolError(BAD_MESSAGE, f"report: seq must be an integer from 1 to {MAX_SEQ}")
        topic = body.get("topic")
        if not isinstance(topic, str) or not topic:
            raise ProtocolError(BAD_MESSAGE, "report: topic must be a non-empty string")
        key = body.get("key")
        if key is not None and not isinstance(key, str):
            raise ProtocolError(BAD_MESSAGE, "report: key must be a string or null")
        payload = body.get("body")
        if not isinstance(payload, dict):
            raise ProtocolError(BAD_MESSAGE, "report: body must be an object")
        return cls(seq=seq, topic=topic, key=key, body=payload)


@dataclass(frozen=True)
class Report(Message):
    """edge → hub: outbox rows in increasing seq order."""

    type: ClassVar[str] = "report"
    items: tuple[ReportItem, ...]

    def to_wire(self) -> dict[str, Any]:
        return {"type": self.type, "items": [i.to_wire() for i in self.items]}

    @classmethod
    def from_wire(cls, body: dict[str, Any]) -> Report:
        items = tuple(ReportItem.from_wire(i) for i in _want_list(body, "items"))
        if not items:
            raise ProtocolError(BAD_MESSAGE, "report: items must not be empty")
        if any(b.seq <= a.seq for a, b in itertools.pairwise(items)):
            raise ProtocolError(BAD_MESSAGE, "report: seq must increase")
        return cls(items=items)


@dataclass(frozen=True)
class Rejected:
    """A report row the hub will never take, and why: acknowledged, not stored."""

    seq: int
    reason: str

    def to_wire(self) -> dict[str, Any]:
        return {"seq": self.seq, "reason": self.reason}

    @classmethod
    def from_wire(cls, body: object) -> Rejected:
        if not isinstance(body, dict):
            raise ProtocolError(BAD_MESSAGE, "report_ack: each rejected row must be an object")
        seq, reason = body.get("seq"), body.get("reason")
        if not isinstance(seq, int) or isinstance(seq, bool) or not 0 < seq <= MAX_SEQ:
            raise ProtocolError(BAD_MESSAGE, "report_ack: a rejected row's seq must be a seq")
        if not isinstance(reason, str):
            raise ProtocolError(BAD_MESSAGE, "report_ack: a rejected row's reason must be text")
        return cls(seq=seq, reason=reason)


@dataclass(frozen=True)
class ReportAck(Message):
    """hub → edge: every outbox row up to ``seq`` is done with; delete them.

    Done means persisted, or ``rejected``: rows the hub will never take (a device
    not bound to the node, an unknown topic, a body it cannot store), listed with
    the reason so the edge can log and count them. A rejected row is never sent
    again: retrying would only be refused again.
    """

    type: ClassVar[str] = "report_ack"
    seq: int
    rejected: tuple[Rejected, ...] = ()

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type, "seq": self.seq}
        if self.rejected:
            out["rejected"] = [r.to_wire() for r in self.rejected]
        return out

    @classmethod
    def from_wire(cls, body: dict[str, Any]) -> ReportAck:
        rejected = body.get("rejected", [])
        if not isinstance(rejected, list):
            raise ProtocolError(BAD_MESSAGE, "report_ack: rejected must be a list")
        return cls(
            seq=_want_count(body, "seq"), rejected=tuple(Rejected.from_wire(r) for r in rejected)
        )


@dataclass(frozen=True)
class Error(Message):
    """either way: a frame was refused (``code`` is one of this module's codes)."""

    type: ClassVar[str] = "error"
    code: str
    reason: str

    def to_wire(self) -> dict[str, Any]:
        return {"type": self.type, "code": self.code, "reason": self.reason}

    @classmethod
    def from_wire(cls, body: dict[str, Any]) -> Error:
        return cls(
            code=_want(body, "code", str, "a string"), reason=_want(body, "reason", str, "a string")
        )

    @classmethod
    def of(cls, exc: ProtocolError) -> Error:
        return cls(code=exc.code, reason=exc.reason)


#: A PEM CSR or certificate of a P-256 key is under 1 KiB; anything this big is not one.
MAX_PEM_CHARS = 16 * 1024


def _want_pem(body: dict[str, Any], name: str, label: str) -> str:
    text = _want(body, name, str, f"a PEM {label}")
    if len(text) > MAX_PEM_CHARS or f"-----BEGIN {label.upper()}-----" not in text:
        raise ProtocolError(
            BAD_MESSAGE, f"{body.get('type')}: {name} must be a PEM {label} (at most 16 KiB)"
        )
    return text


@dataclass(frozen=True)
class Renew(Message):
    """edge → hub, once live: a CSR for this node's next certificate (a new key's)."""

    type: ClassVar[str] = "renew"
    csr: str

    def to_wire(self) -> dict[str, Any]:
        return {"type": self.type, "csr": self.csr}

    @classmethod
    def from_wire(cls, body: dict[str, Any]) -> Renew:
        return cls(csr=_want_pem(body, "csr", "certificate request"))


@dataclass(frozen=True)
class Certificate(Message):
    """hub → edge: the node's renewed certificate, for the key of its last ``renew``."""

    type: ClassVar[str] = "certificate"
    certificate: str

    def to_wire(self) -> dict[str, Any]:
        return {"type": self.type, "certificate": self.certificate}

    @classmethod
    def from_wire(cls, body: dict[str, Any]) -> Certificate:
        return cls(certificate=_want_pem(body, "certificate", "certificate"))


MESSAGE_TYPES: dict[str, type[Message]] = {
    m.type: m
    for m in (
        Hello,
        Welcome,
        Changes,
        Snapshot,
        Ack,
        Report,
        ReportAck,
        Error,
        Renew,
        Certificate,
    )
}


def decode(frame: str | bytes) -> Message:
    """Parse one frame; raises ProtocolError(code, reason) for anything we cannot accept."""
    if isinstance(frame, bytes):
        raise ProtocolError(BAD_FRAME, "binary frames are not accepted; send JSON text")
    try:
        body = storable.loads(frame, full=False)
    except storable.Unstorable as exc:
        raise ProtocolError(BAD_FRAME, str(exc)) from None
    if not isinstance(body, dict):
        raise ProtocolError(BAD_FRAME, "a frame must be a JSON object")
    kind = body.get("type")
    cls = MESSAGE_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        shown = kind if isinstance(kind, str) and len(kind) <= 40 else "?"
        raise ProtocolError(UNKNOWN_TYPE, f"unknown message type {shown!r}")
    try:
        return cls.from_wire(body)  # type: ignore[attr-defined, no-any-return]
    except ProtocolError as exc:
        exc.message_type = cls.type  # what the peer meant to send: some refusals end a session
        raise
