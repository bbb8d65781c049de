"""Hellos registered in bursts: a few statements for a whole batch of nodes.

When a fleet comes up, or a replica dies and its nodes move to the others, thousands
of nodes say hello within seconds. One at a time, a hello costs about five statements
(a Ready node coming back, without the revision lock) or nine (a new or NotReady node,
under it), each a round trip the writer thread waits for — and then waits again for the
GIL while the event loop is busy with the other nodes' TLS handshakes. Measured on real
PostgreSQL: 500 first hellos held the revision lock, which every write in the fleet
takes, for 1.2 s in a quiet process and for 70 s beside one busy thread.

:class:`HelloBatcher` gathers the hellos that arrive while its previous batch is being
written and registers them together (:func:`register_many`): one statement per table
for the batch, first in a lock-free transaction for the nodes that change no object,
then under the revision lock for the rest. When a batch fails, each of its hellos is
registered again alone (``NodeRegistry.register_in``), so one node's bad hello fails
only itself.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from typing import Any, NamedTuple

from sqlalchemy import bindparam, insert, select, update

from cloudhub.groupwriter import GroupWriter, WriterStopped
from cloudhub.nodes import NodeRegistry, Registration, mark_ready, new_node
from cloudhub.schema import node_leases, node_sync, objects
from cloudhub.store import Tx
from edgeward.kinds import NODE

log = logging.getLogger(__name__)

#: Hellos per batch at most (IN lists stay short; one batch's failure stays small).
MAX_HELLOS = 500


class Hello(NamedTuple):
    node: str
    node_info: dict[str, Any]


_NAMES = bindparam("b_names", expanding=True)
_GET_NODES = select(objects.c.name, objects.c.body).where(
    objects.c.kind == NODE.name, objects.c.namespace == "", objects.c.name.in_(_NAMES)
)


def _take_sessions_statement(ready_only: bool) -> Any:
    # The rows are locked in name order first: two replicas' batches that share nodes
    # then wait for each other instead of deadlocking.
    locked = select(node_leases.c.node).where(node_leases.c.node.in_(_NAMES))
    if ready_only:
        locked = locked.where(node_leases.c.ready.is_(True))
    statement = update(node_leases).where(
        node_leases.c.node.in_(locked.order_by(node_leases.c.node).with_for_update())
    )
    if ready_only:
        statement = statement.where(node_leases.c.ready.is_(True))
    return statement.values(
        heartbeat=bindparam("b_beat"),
        ready=True,
        owner=bindparam("b_owner"),
        session=node_leases.c.session + 1,
    ).returning(node_leases.c.node, node_leases.c.session)


# A Ready node's lease only, without the revision lock (NodeRegistry._take_session).
_TAKE_READY_SESSIONS = _take_sessions_statement(ready_only=True)
_TAKE_SESSIONS = _take_sessions_statement(ready_only=False)
_GET_POSITIONS = select(node_sync.c.node, node_sync.c.report_seq, node_sync.c.resync).where(
    node_sync.c.node.in_(_NAMES)
)
_CLEAR_RESYNC = update(node_sync).where(node_sync.c.node.in_(_NAMES)).values(resync=False)


def register_many(
    tx: Tx, replica: str, hellos: list[Hello]
) -> tuple[dict[str, Registration], list[Hello]]:
    """``NodeRegistry.register_in`` for hellos of distinct nodes: their registrations,
    and the hellos left for a transaction that holds the revision lock (in a lock-free
    one: new nodes, NotReady ones and those whose nodeInfo changed; in a locking one,
    none)."""
    info = {hello.node: hello.node_info for hello in hellos}
    names = sorted(info)
    stored = {
        row.name: json.loads(row.body) for row in tx.conn.execute(_GET_NODES, {"b_names": names})
    }
    statuses: dict[str, dict[str, Any]] = {}
    changed = []
    for name in names:
        node = stored.get(name)
        if node is None:
            continue
        status = mark_ready({**node.get("status", {}), "nodeInfo": info[name]}, tx.now)
        statuses[name] = status
        if status != node.get("status"):
            changed.append(name)
    params = {"b_beat": tx.now, "b_owner": replica}
    if tx.locked:
        tx.create_all(NODE, [new_node(name, info[name], tx.now) for name in names
                             if name not in stored])  # fmt: skip
        tx.replace_status_all(NODE, [(stored[name], statuses[name]) for name in changed])
        sessions = _take_sessions(tx, _TAKE_SESSIONS, names, params)
        new_leases = [name for name in names if name not in sessions]
        if new_leases:
            tx.conn.execute(
                insert(node_leases),
                [
                    {"node": name, "heartbeat": tx.now, "ready": True, "usage": "{}",
                     "owner": replica, "session": 1}
                    for name in new_leases
                ],
            )  # fmt: skip
            sessions.update(dict.fromkeys(new_leases, 1))
    else:
        unchanged = [name for name in names if name in stored and name not in changed]
        sessions = _take_sessions(tx, _TAKE_READY_SESSIONS, unchanged, params)
    positions = _take_positions(tx, sorted(sessions))
    registrations = {}
    for name, session in sessions.items():
        status = statuses.get(name, {})
        report_seq, resync = positions[name]
        registrations[name] = Registration(
            report_seq,
            status.get("capacity"),
            status.get("outbox"),
            resync,
            session,
            tx.head,
        )
    return registrations, [hello for hello in hellos if hello.node not in registrations]


def _take_sessions(
    tx: Tx, statement: Any, names: list[str], params: dict[str, Any]
) -> dict[str, int]:
    if not names:
        return {}
    rows = tx.conn.execute(statement, {**params, "b_names": names})
    return {row.node: int(row.session) for row in rows}


def _take_positions(tx: Tx, names: list[str]) -> dict[str, tuple[int, bool]]:
    """Each node's (report seq, resync requested), its row made where it has none; a
    resync request is cleared (this session starts with the snapshot it asked for)."""
    if not names:
        return {}
    found = {
        row.node: (int(row.report_seq), bool(row.resync))
        for row in tx.conn.execute(_GET_POSITIONS, {"b_names": names})
    }
    missing = [name for name in names if name not in found]
    if missing:
        tx.conn.execute(
            insert(node_sync),
            [{"node": n, "report_seq": 0, "acked_revision": 0, "resync": False} for n in missing],
        )
        found.update(dict.fromkeys(missing, (0, False)))
    resyncs = [name for name, (_, resync) in found.items() if resync]
    if resyncs:
        tx.conn.execute(_CLEAR_RESYNC, {"b_names": resyncs})
    return found


class HelloBatcher:
    """Registers hellos in batches: those that arrive while a batch is written make the
    next one (group commit's rule, one level up: a burst gets few, large batches; a lone
    hello is written at once)."""

    def __init__(self, nodes: NodeRegistry, writer: GroupWriter, max_batch: int = MAX_HELLOS):
        self.nodes = nodes
        self.writer = writer
        self.max_batch = max_batch
        self._waiting: list[tuple[Hello, asyncio.Future[Registration]]] = []
        self._drainer: asyncio.Task[None] | None = None
        #: Batches written, and batches that failed and were registered one hello at a time.
        self.batches = 0
        self.failed_batches = 0

    async def register(self, node: str, node_info: dict[str, Any]) -> Registration:
        """Register ``node``'s hello; returns once it has committed."""
        future: asyncio.Future[Registration] = asyncio.get_running_loop().create_future()
        self._waiting.append((Hello(node, node_info), future))
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        while self._waiting:
            await self._register(self._take())

    def _take(self) -> list[tuple[Hello, asyncio.Future[Registration]]]:
        """The next batch: one hello per node (a node's second hello waits for the next
        batch, its session follows the first's), those still awaited only."""
        batch: dict[str, tuple[Hello, asyncio.Future[Registration]]] = {}
        later = []
        for hello, future in self._waiting:
            if future.done():
                continue
            if hello.node in batch or len(batch) >= self.max_batch:
                later.append((hello, future))
            else:
                batch[hello.node] = (hello, future)
        self._waiting = later
        return list(batch.values())

    async def _register(self, batch: list[tuple[Hello, asyncio.Future[Registration]]]) -> None:
        futures = {hello.node: future for hello, future in batch}
        left = [hello for hello, _ in batch]
        self.batches += 1
        try:
            for lock_free in (True, False):
                if not left:
                    break
                done, left = await self.writer.submit(
                    functools.partial(register_many, replica=self.nodes.replica, hellos=left),
                    lock_free=lock_free,
                )
                for name, registration in done.items():
                    if not futures[name].done():
                        futures[name].set_result(registration)
        except WriterStopped as exc:
            for hello in left:
                if not futures[hello.node].done():
                    futures[hello.node].set_exception(exc)
            return
        except Exception as exc:  # left: those the failed transaction was to register
            self.failed_batches += 1
            log.warning(
                "registering %d hellos together failed (%s: %s); registering each alone",
                len(left),
                type(exc).__name__,
                (str(exc).strip().splitlines() or [""])[0],
            )
        await asyncio.gather(*(self._register_alone(h, futures[h.node]) for h in left))

    async def _register_alone(self, hello: Hello, future: asyncio.Future[Registration]) -> None:
        try:
            registration = await self.writer.submit(
                lambda tx: self.nodes.register_in(tx, hello.node, hello.node_info), lock_free=True
            )
        except Exception as exc:
            if not future.done():
                future.set_exception(exc)
        else:
            if not future.done():
                future.set_result(registration)
