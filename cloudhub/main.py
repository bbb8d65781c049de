"""``cloudhub``: run the hub (REST API + edge endpoint) until SIGTERM or Ctrl-C."""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import logging
import os
import sys
import time
from collections.abc import Callable

import uvicorn
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

import edgeward
from cloudhub import credentials, events, history, transport
from cloudhub.api import create_app
from cloudhub.apiauth import Authenticator
from cloudhub.audit import AuditLog
from cloudhub.changefeed import ChangeFeed
from cloudhub.config import HubConfig
from cloudhub.credentials import Identity
from cloudhub.db import connect_params, open_engine
from cloudhub.drift import DriftChecker
from cloudhub.edgegate import EdgeGate
from cloudhub.edgeserver import EdgeServer
from cloudhub.groupwriter import GroupWriter
from cloudhub.intake import Intake
from cloudhub.joining import JoinService, JoinSettings
from cloudhub.leader import Leadership
from cloudhub.metrics import HubMetrics
from cloudhub.nodes import NodeRegistry
from cloudhub.pgnotify import APPLICATION_NAME, TIMEOUT, ChangeListener
from cloudhub.pki import Authority, pki_paths
from cloudhub.rebalance import Rebalancer
from cloudhub.replicas import REFRESH, ReplicaBook
from cloudhub.store import Store
from edgeward.configfile import add_flags, build, flag_values, merged, read_yaml, render_defaults
from edgeward.daemon import config_file, data_directory, run_daemon, stop_on_signals
from edgeward.errors import ConfigError, SchemaTooNew
from edgeward.sdnotify import Notifier
from edgeward.watchdog import Watchdog, counted

log = logging.getLogger("cloudhub")

DEFAULT_CONFIG = "/etc/edgeward/cloudhub.yaml"
FLAGS = (
    "api_bind",
    "api_port",
    "edge_bind",
    "edge_port",
    "data_dir",
    "database",
    "node_grace_period",
    "leader_timeout",
    "rebalance_interval",
    "edge_ping_interval",
    "edge_ping_timeout",
    "edge_handshake_limit",
    "edge_handshake_timeout",
    "change_log_retention",
    "change_poll_interval",
    "event_retention",
    "history_retention",
    "history_max_per_property",
    "drift_check_interval",
    "max_watches",
    "node_certificate_days",
    "node_frames_per_second",
    "log_level",
)
COMPACT_INTERVAL = 60.0


def build_parser() -> argparse.ArgumentParser:
    """The command line, also rendered as the manual page (packaging/deb/manpage.py)."""
    parser = argparse.ArgumentParser(
        prog="cloudhub",
        description="The Edgeward hub: holds the fleet's desired state, serves the REST API "
        "and the edge nodes' websocket endpoint. Flags override the config file.",
    )
    parser.add_argument(
        "--config",
        metavar="FILE",
        help=f"YAML config file (default: {DEFAULT_CONFIG} when it exists)",
    )
    parser.add_argument(
        "--print-default-config",
        action="store_true",
        help="print a commented config with every default and exit",
    )
    add_flags(parser, HubConfig, FLAGS)
    parser.add_argument(
        "--insecure",
        action="store_true",
        default=None,
        help="serve plain HTTP and ws:// with no authentication, for a local experiment "
        "(never on a network); without it, run 'cloudhub init' first",
    )
    parser.add_argument(
        "--migrate",
        action="store_true",
        help="bring the database's schema up to date and exit; the Debian package runs it "
        "on upgrade, with the service stopped",
    )
    parser.add_argument("--version", action="version", version=f"cloudhub {edgeward.__version__}")
    return parser


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def load_config(args: argparse.Namespace) -> HubConfig:
    path = config_file(args.config, DEFAULT_CONFIG)
    data = read_yaml(path) if path else {}
    return build(HubConfig, merged(data, flag_values(args, (*FLAGS, "insecure"))))


#: glibc's mallopt parameter for the size from which a block is mmapped (malloc.h).
_M_MMAP_THRESHOLD = -3


def return_large_blocks() -> None:
    """Have glibc mmap every block of 128 KiB or more, so freeing it returns it to the OS.

    glibc starts with this threshold but raises it to the size of each mmapped block
    freed, up to 32 MiB; from then on the hub's large transient blocks (objects' JSON
    text, request bodies) come from heaps that fragment and are rarely given back.
    Fixing the threshold keeps that memory returnable (docs/DESIGN.md, Watches).
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return  # no mallopt (not glibc): nothing to tune
    mallopt(_M_MMAP_THRESHOLD, 128 * 1024)


async def run_hub(config: HubConfig, notifier: Notifier) -> None:
    return_large_blocks()
    data_dir = data_directory(config.data_dir)
    engine = open_engine(config.database_url(), config.idle_transaction_timeout())
    store = Store(engine)
    try:
        await asyncio.to_thread(store.migrate)
    except (SQLAlchemyError, SchemaTooNew) as exc:
        engine.dispose()
        reason = str(exc.orig if isinstance(exc, DBAPIError) else exc).strip().splitlines()[0]
        raise ConfigError(
            [f"cannot open the database {engine.url.render_as_string()}: {reason}"]
        ) from None
    store.twin_history = config.history_max_per_property > 0
    feed = ChangeFeed(
        store.log_page,
        start=await asyncio.to_thread(store.head),
        poll_interval=config.change_poll_interval,
    )
    store.on_commit(feed.notify)
    listener = (  # other replicas' commits, at once (the poll is the fallback)
        ChangeListener(
            connect_params(engine, APPLICATION_NAME, TIMEOUT),
            feed,
            config.change_poll_interval,
            # defined below, with the edge server; the listener starts after it
            on_session_request=lambda payload: session_request(payload),
        )
        if engine.dialect.name == "postgresql"
        else None
    )
    leadership = Leadership(engine, config.leader_timeout)
    metrics = HubMetrics(
        store,
        sessions=lambda: len(edge.sessions),
        leading=leadership.leading,
        turned_away=lambda: turned_away(),  # defined below, with the edge server
        history_waiting=lambda: history.waiting(engine),
    )
    writer = GroupWriter(store, on_commit=metrics.committed)
    nodes = NodeRegistry(store, config.node_grace_period, writer)
    nodes.leading = leadership.leading
    replicas = ReplicaBook(engine, nodes.replica)
    #: Replicas share a PostgreSQL database; a SQLite file serves one hub process.
    shared = engine.dialect.name == "postgresql"
    drift = DriftChecker(store, nodes.leases, config.drift_check_interval)
    audit = AuditLog(data_dir / "audit.log")
    authority = None if config.insecure else Authority(pki_paths(data_dir))
    gate = None if authority is None else EdgeGate(store, audit)
    edge = EdgeServer(
        store,
        feed,
        nodes,
        writer,
        gate,
        config.node_frames_per_second,
        metrics=metrics,
        hello_timeout=config.edge_handshake_timeout,
    )
    handshakes = transport.HandshakeWatch(config.edge_handshake_timeout)
    intake = Intake(config.edge_handshake_limit, timeout=handshakes.timeout)

    def turned_away() -> dict[str, int]:
        """The edge port's refusals and time-outs since start, by reason (/metrics)."""
        return {
            "tls_refused": handshakes.failures,
            "handshake_timeout": handshakes.timeouts + intake.timeouts,
            "hello_timeout": edge.hello_timeouts,
            "refused": 0 if gate is None else gate.refused,
        }

    def edge_stats() -> dict[str, int]:
        """The edge port's counters for /healthz: who is connected and who was turned away."""
        away = turned_away()
        return {
            "sessions": len(edge.sessions),
            "refused": away["refused"],
            "helloTimeouts": away["hello_timeout"],
            "handshakeTimeouts": away["handshake_timeout"],
            "handshakeFailures": away["tls_refused"],
            "handshaking": intake.in_turn,
            "waitingToHandshake": intake.waiting,
            "abandonedWaiting": intake.abandoned,
        }

    def replica_stats() -> dict[str, object]:
        """Which replica answers, and whether it leads fleet-wide duties (docs/ha.md)."""
        return {"id": nodes.replica, "leader": leadership.leading()}

    def node_deleted(name: str, revision: int | None = None) -> None:
        nodes.forget(name)
        drift.forget(name)
        edge.node_deleted(name, revision)

    feed.on_node_deleted = node_deleted  # deletions through other replicas too

    def resync(name: str) -> tuple[bool, bool]:
        """Record a resync for ``name``; (known to the hub, connected to a replica)."""
        known, served = nodes.request_resync(name)
        drift.forget(name)
        return known, edge.resync(name) or served

    def session_request(payload: str) -> None:
        """Another replica (or this one) asks the replica serving a node to act on it."""
        what, _, name = payload.partition(" ")
        if what == "resync" and name:
            drift.forget(name)
            edge.resync(name)

    api_sock = transport.listen(config.api_address(), config.api_port)
    edge_sock = transport.listen(config.edge_address(), config.edge_port)
    auth = join = None
    if authority is not None:
        if await asyncio.to_thread(authority.renew_server_if_due):
            log.info("renewed the hub's server certificate (two thirds of its life had passed)")
        auth = Authenticator(lambda token: _check_token(store, token))
        join = JoinService(
            store,
            authority,
            JoinSettings(
                config.node_certificate_days,
                edge_sock.getsockname()[1],
                config.edge_advertise,
            ),
            lambda name: name in edge.sessions,
        )
        edge.signer = join.renew
    else:
        log.warning(
            "running --insecure: no TLS and no authentication; anyone who reaches %s:%d or "
            "%s:%d controls the fleet",
            config.api_address(),
            config.api_port,
            config.edge_address(),
            config.edge_port,
        )
    app = create_app(
        store,
        feed,
        writer,
        config.max_watches,
        on_node_deleted=node_deleted,
        auth=auth,
        join=join,
        audit=audit,
        edge_stats=edge_stats,
        replica_stats=replica_stats,
        on_resync=resync,
        metrics=metrics,
    )
    api_server = transport.api_server(app, None if authority is None else authority)

    def status(_: object) -> str:
        return f"{counted(len(edge.sessions), 'node')} connected, revision {feed.last:,}"

    # the probe is a no-op job for the group writer: it completes when its batch commits,
    # having taken the revision lock, so only while the writer and the database make progress
    watchdog = Watchdog(notifier, lambda: writer.submit(_nothing), status)
    stop = stop_on_signals()
    async with (
        transport.edge_endpoint(
            edge.handle,
            edge_sock,
            authority,
            gate,
            handshakes,
            (config.edge_ping_interval, config.edge_ping_timeout),
            intake,
        ) as ws_server,
        asyncio.TaskGroup() as tg,
    ):
        tasks = [
            tg.create_task(feed.run()),
            tg.create_task(writer.run()),
            tg.create_task(nodes.run_expiry()),
            tg.create_task(_compact_forever(store, config.change_log_retention, leadership)),
            tg.create_task(_expire_events_forever(store, config.event_retention, leadership)),
            tg.create_task(_prune_history_forever(store, config, leadership)),
            tg.create_task(history.merge_forever(store, leadership.leading)),
            tg.create_task(drift.run()),
        ]
        if listener is not None:
            tasks.append(tg.create_task(listener.run()))
        if shared:  # replicas: one leader, each one's row, and rebalancing (docs/ha.md)
            rebalancer = Rebalancer(
                replicas, edge.session_ages, edge.move, config.rebalance_interval, time.time
            )
            tasks += [
                tg.create_task(leadership.run()),
                tg.create_task(
                    _refresh_replica_forever(
                        replicas,
                        lambda: len(edge.sessions),
                        leadership,
                        lambda: nodes.flushed_through,
                    )
                ),
                tg.create_task(rebalancer.run()),
            ]
        api_task = tg.create_task(api_server.serve(sockets=[api_sock]))
        await _started(api_server, api_task)
        await watchdog.check()
        watching = tg.create_task(watchdog.run())
        secure = authority is not None
        api_scheme, edge_scheme = ("https", "wss") if secure else ("http", "ws")
        address = {  # for scripts and tests on this machine: addresses they can connect to
            "api": transport.url(api_scheme, api_sock, connectable=True),
            "edge": transport.url(edge_scheme, edge_sock, connectable=True),
            "pid": os.getpid(),
        }
        (data_dir / "cloudhub.json").write_text(json.dumps(address) + "\n")
        log.info(
            "cloudhub %s serving the REST API on %s and edges on %s (database %s)",
            edgeward.__version__,
            transport.url(api_scheme, api_sock),
            transport.url(edge_scheme, edge_sock),
            engine.url.render_as_string(),
        )
        if not api_task.done():
            watchdog.ready()
        stop_task = tg.create_task(stop.wait())
        await asyncio.wait([stop_task, api_task], return_when=asyncio.FIRST_COMPLETED)
        log.info("cloudhub shutting down")
        watchdog.stopping()
        watching.cancel()
        feed.close()
        api_server.should_exit = True
        ws_server.close()
        # sessions may still be waiting on the group writer: let them end first
        await ws_server.wait_closed()
        await asyncio.wait([api_task])  # requests in flight may still need the writer
        await _flush_leases(nodes)  # a group-writer job: the writer still runs
        if shared:
            await _leave(replicas)
        for task in (*tasks, stop_task):
            task.cancel()
    audit.close()
    engine.dispose()


async def _started(api_server: uvicorn.Server, api_task: asyncio.Task[None]) -> None:
    """Wait until the REST API serves (or failed to start: the task group reports it)."""
    while not api_server.started and not api_task.done():
        await asyncio.sleep(0.01)


def _nothing(_tx: object) -> None:
    return None


def _check_token(store: Store, token: str) -> Identity:
    with store.reading() as conn:
        return credentials.check_token(conn, token)


async def _flush_leases(nodes: NodeRegistry) -> None:
    try:
        await nodes.flush_async()
    except Exception:
        log.exception("writing the last heartbeats failed; nodes may show an older heartbeat")


async def _refresh_replica_forever(
    replicas: ReplicaBook,
    sessions: Callable[[], int],
    leadership: Leadership,
    flushed: Callable[[], float | None],
) -> None:
    """This replica's row in hub_replicas; the leader forgets rows of replicas long gone."""
    while True:
        try:
            leading = leadership.leading()
            await asyncio.to_thread(replicas.refresh, sessions(), leading, flushed())
            if leading:
                await asyncio.to_thread(replicas.forget_gone)
        except Exception:
            log.exception("writing this replica's row failed; retrying")
        await asyncio.sleep(REFRESH)


async def _leave(replicas: ReplicaBook) -> None:
    try:
        await asyncio.to_thread(replicas.remove)
    except Exception:
        log.exception("removing this replica's row failed; the others see it stale soon")


async def _prune_history_forever(store: Store, config: HubConfig, leadership: Leadership) -> None:
    """Twin history's retention, by age and count per property, applied every minute."""
    while True:
        if not leadership.leading():
            await asyncio.sleep(COMPACT_INTERVAL)
            continue
        try:  # with history off (max 0), this empties what an earlier setting kept
            gone = await asyncio.to_thread(
                history.prune,
                store,
                time.time() - config.history_retention,
                config.history_max_per_property,
            )
            if gone:
                log.info("deleted %d reported twin values past the history's retention", gone)
        except Exception:
            log.exception("pruning the twin history failed; retrying")
        await asyncio.sleep(60)


async def _expire_events_forever(store: Store, retention: float, leadership: Leadership) -> None:
    while True:
        if not leadership.leading():
            await asyncio.sleep(COMPACT_INTERVAL)
            continue
        try:
            gone = await asyncio.to_thread(events.expire, store.engine, time.time() - retention)
            if gone:
                log.info("deleted %d uploads older than %g s (event_retention)", gone, retention)
        except Exception:
            log.exception("deleting expired uploads failed; retrying")
        await asyncio.sleep(COMPACT_INTERVAL)


async def _compact_forever(store: Store, keep: int, leadership: Leadership) -> None:
    while True:
        await asyncio.sleep(COMPACT_INTERVAL)
        if not leadership.leading():
            continue
        try:
            await asyncio.to_thread(store.compact, keep)
        except Exception:
            log.exception("compacting the change log failed; retrying")


def migrate(args: argparse.Namespace) -> int:
    """``--migrate``: run the database's pending schema steps, say so, exit."""
    try:
        config = load_config(args)
        engine = open_engine(config.database_url())
        try:
            version = Store(engine).migrate()
        except (SQLAlchemyError, SchemaTooNew) as exc:
            orig = exc.orig if isinstance(exc, DBAPIError) else exc
            reason = str(orig).strip().splitlines()[0]
            raise ConfigError(
                [f"cannot migrate the database {engine.url.render_as_string()}: {reason}"]
            ) from None
        finally:
            engine.dispose()
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"cloudhub: {problem}", file=sys.stderr)
        return 2
    print(f"cloudhub: {engine.url.render_as_string()} is at schema {version}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["init"]:
        from cloudhub.init import main as init_main

        return init_main(argv[1:])
    args = parse_args(argv)
    if args.print_default_config:
        sys.stdout.write(render_defaults(HubConfig, "cloudhub configuration (cloudhub.yaml)"))
        return 0
    if args.migrate:
        return migrate(args)
    return run_daemon("cloudhub", lambda: load_config(args), run_hub)


if __name__ == "__main__":
    sys.exit(main())
