"""``edgecore``: run the edge daemon until SIGTERM or Ctrl-C.

RSS is the edge's budget (45 MB with 1,000 devices of 10 properties), so the
daemon's parts — websockets, paho, psutil, the twin engine — are imported by
:func:`run_edge`, after :data:`DEFERRED_IMPORTS` are deferred, and not at the
top: ``--help``, ``--print-default-config`` and a bad config never load them.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import socket
import sys
from typing import TYPE_CHECKING, Any

import edgeward
from edgecore import memory
from edgecore.config import EdgeConfig, expand_broker
from edgecore.credentials import check_credentials
from edgeward.configfile import add_flags, build, flag_values, merged, read_yaml, render_defaults
from edgeward.daemon import (
    config_file,
    data_directory,
    defer_imports,
    run_daemon,
    stop_on_signals,
)
from edgeward.errors import ConfigError
from edgeward.kinds import dns_subdomain_problem
from edgeward.sdnotify import Notifier
from edgeward.watchdog import Watchdog, counted

if TYPE_CHECKING:
    from edgecore.store import CacheCounts

log = logging.getLogger("edgecore")

DEFAULT_CONFIG = "/etc/edgeward/edgecore.yaml"
FLAGS = ("data_dir", "status_interval", "log_level")

#: Imported at the top of websockets and paho but used only on paths edgecore never
#: takes (a development checkout's version lookup; proxy lookups, which the hub link
#: turns off and paho does only with PySocks installed): run only if one is used.
#: Measured: 2.5 MB less RSS after the imports (they pull in http.client, email, zipfile,
#: csv and tempfile).
DEFERRED_IMPORTS = ("importlib.metadata", "urllib.request")


def build_parser() -> argparse.ArgumentParser:
    """The command line, also rendered as the manual page (packaging/deb/manpage.py)."""
    parser = argparse.ArgumentParser(
        prog="edgecore",
        description="The Edgeward edge daemon: keeps a local cache of the desired state bound "
        "to this node, syncs with the hub and keeps working when the link is down. "
        "Flags override the config file.",
        epilog="example: edgecore --node edge-1 --hub ws://hub.example:10000 "
        "--data-dir /var/lib/edgeward/edge",
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
    parser.add_argument(
        "--node",
        dest="node_name",
        metavar="NAME",
        help="this node's name (default: the machine's hostname)",
    )
    parser.add_argument(
        "--hub",
        dest="endpoints",
        action="append",
        metavar="URL",
        help="hub edge endpoint, e.g. wss://hub.example:10000; repeat for fallbacks",
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="allow a ws:// hub endpoint (no TLS, no certificate): only for a hub run "
        "--insecure on a machine you trust",
    )
    parser.add_argument(
        "--mqtt",
        dest="mqtt_broker",
        metavar="URL",
        help="the MQTT broker mappers use: HOST:PORT, or tcp://, ssl://, mqtt:// or mqtts:// "
        "HOST:PORT as KubeEdge writes it (default: 127.0.0.1:1883)",
    )
    parser.add_argument(
        "--no-mqtt",
        action="store_true",
        help="do not bridge mappers over MQTT (the hub link still runs)",
    )
    parser.add_argument(
        "--metrics-listen",
        metavar="ADDR",
        help="serve Prometheus metrics at http://ADDR/metrics: PORT (on 127.0.0.1) or IP:PORT "
        "(default: off; an address other than loopback needs metrics.allow_remote)",
    )
    parser.add_argument(
        "--dmi-socket",
        metavar="PATH",
        help="serve KubeEdge's DMI (gRPC) to mapper-framework mappers on this unix socket, "
        "e.g. /etc/kubeedge/dmi.sock (default: off; docs/dmi.md)",
    )
    add_flags(parser, EdgeConfig, FLAGS)
    parser.add_argument(
        "--migrate",
        action="store_true",
        help="bring the cache's schema (edge.db) up to date and exit; the Debian package "
        "runs it on upgrade, with the service stopped",
    )
    parser.add_argument("--version", action="version", version=f"edgecore {edgeward.__version__}")
    return parser


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def load_config(args: argparse.Namespace) -> EdgeConfig:
    config = load_settings(args)
    if config.hub.uses_tls:
        check_credentials(config.hub, config.node_name)
    return config


def load_settings(args: argparse.Namespace) -> EdgeConfig:
    """The config from the file and flags, without checking the node's credentials."""
    path = config_file(args.config, DEFAULT_CONFIG)
    data = read_yaml(path) if path else {}
    flags: dict[str, Any] = flag_values(args, (*FLAGS, "node_name"))
    hub: dict[str, Any] = {}
    if args.endpoints:
        hub["endpoints"] = args.endpoints
    if args.insecure:
        hub["insecure"] = True
    if hub:
        flags["hub"] = hub
    if isinstance(data, dict):
        expand_broker(data.get("mqtt"), "mqtt.broker")
    mqtt: dict[str, Any] = {}
    if args.mqtt_broker:
        mqtt["broker"] = args.mqtt_broker
        expand_broker(mqtt, "--mqtt")
    if args.no_mqtt:
        mqtt["enabled"] = False
    if mqtt:
        flags["mqtt"] = mqtt
    if args.metrics_listen is not None:
        flags["metrics"] = {"listen": args.metrics_listen}
    if args.dmi_socket is not None:
        flags["dmi"] = {"enabled": True, "socket": args.dmi_socket}
    config = build(EdgeConfig, merged(data, flags))
    if not config.node_name:
        host = socket.gethostname().lower()
        if (problem := dns_subdomain_problem(host)) is not None:
            raise ConfigError([f"the hostname {host!r} cannot name a node ({problem}): set --node"])
        config = build(EdgeConfig, merged(merged(data, flags), {"node_name": host}))
    return dataclasses.replace(config, hub=config.hub.with_files_in(config.data_dir))


def migrate(args: argparse.Namespace) -> int:
    """``--migrate``: run the cache's pending schema steps, say what was done, exit."""
    import sqlite3
    from pathlib import Path

    from edgecore.store import MIGRATIONS, open_store

    try:
        path = Path(load_settings(args).data_dir) / "edge.db"
        if not path.exists():
            print(f"edgecore: no cache at {path} yet: nothing to migrate")
            return 0
        try:
            with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
                before = db.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise ConfigError([f"cannot open the edge cache {path}: {exc}"]) from None
        open_store(path).close()
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"edgecore: {problem}", file=sys.stderr)
        return 2
    if before == len(MIGRATIONS):
        print(f"edgecore: {path} is at schema {before}, this version's")
    else:
        print(f"edgecore: {path} migrated from schema {before} to {len(MIGRATIONS)}")
    return 0


async def run_edge(config: EdgeConfig, notifier: Notifier) -> None:
    defer_imports(*DEFERRED_IMPORTS)
    from edgecore.eventbus import EventBus
    from edgecore.hublink import HubLink
    from edgecore.nodestatus import node_info, report_forever
    from edgecore.store import OutboxLimits, StoreThread, open_store
    from edgecore.twins import TwinService

    data_dir = data_directory(config.data_dir)
    limits = OutboxLimits(config.outbox.quota_bytes, config.outbox.event_ttl)
    store = open_store(data_dir / "edge.db", limits)
    try:
        store.claim(config.node_name)
    except ConfigError:
        store.close()
        raise
    store.outages.min_seconds = config.hub.outage_min_seconds
    store.outage_started()  # alone until the hub welcomes it (edgecore.outage)
    db = StoreThread(store)
    outbox_wake = asyncio.Event()
    twins = TwinService(store, config.node_name, bare_id_namespace=config.mqtt.bare_id_namespace)
    bus = (
        EventBus(config.mqtt, config.node_name, db, twins, outbox_wake)
        if config.mqtt.enabled
        else None
    )
    link = HubLink(
        config.hub,
        config.node_name,
        db,
        node_info(),
        outbox_wake,
        twins=twins,
        publish=bus.publish if bus is not None else None,
    )

    def status(counts: CacheCounts | None) -> str:
        text = link.summary()
        if counts is not None:
            text += f", {counted(counts.devices, 'device')}, outbox {counts.outbox:,}"
        if bus is not None and not bus.connected.is_set():
            text += ", MQTT broker not connected"
        if bus is not None and bus.broker_dropped:
            text += f", MQTT broker dropped {bus.broker_dropped:,}"
        if bus is not None and (bus.refused.counts or twins.unstored.counts):
            dropped = sum(bus.refused.counts.copy().values())
            dropped += sum(twins.unstored.counts.copy().values())
            text += f", MQTT messages dropped {dropped:,}"
        return text

    def broker_usage() -> dict[str, Any]:
        """What the broker dropped (absent: it has not said, or no MQTT) and what edgecore
        did not store of what it sent, by reason (``storage``: edge.db could not take it),
        for the hub."""
        if bus is None:
            return {}
        usage: dict[str, Any] = {}
        if bus.broker_dropped is not None:
            usage["brokerDropped"] = bus.broker_dropped
        # counted on the store's thread: dict.copy() takes them in one step
        dropped = {**bus.refused.counts.copy(), **twins.unstored.counts.copy()}
        if dropped:
            usage["mqttDropped"] = dropped
        unstored = twins.unstored_kinds.copy()
        if unstored:  # mqttDropped.storage, by what was refused
            usage["mqttUnstored"] = unstored
        return usage

    metrics = None
    if config.metrics.address is not None:
        from edgecore.metrics import EdgeMetrics
        from edgecore.metricserver import MetricsServer

        host, port = config.metrics.address
        metrics = MetricsServer(host, port, EdgeMetrics(store, link, twins, bus).render)

    dmi = None
    if config.dmi.enabled:  # gRPC is loaded only then: it costs memory (docs/dmi.md)
        from edgecore.dmi.service import DmiService

        dmi = DmiService(config.dmi.socket, db.call, twins, outbox_wake)

    watchdog = Watchdog(notifier, lambda: db.call(store.health), status)
    stop = stop_on_signals()
    log.info(
        "edgecore %s: node %s, cache %s at revision %d, hub %s",
        edgeward.__version__,
        config.node_name,
        store.path,
        store.revision(),
        ", ".join(config.hub.endpoints),
    )
    try:
        await watchdog.check()
        async with asyncio.TaskGroup() as tg:
            parts = [
                tg.create_task(link.run()),
                tg.create_task(
                    report_forever(db, data_dir, config.status_interval, outbox_wake, broker_usage)
                ),
                tg.create_task(watchdog.run()),
            ]
            if bus is not None:
                parts.append(tg.create_task(bus.run()))
            if metrics is not None:
                parts.append(tg.create_task(metrics.run()))
            if dmi is not None:
                parts.append(tg.create_task(dmi.run()))
            await asyncio.sleep(0)  # every part has taken its first step
            watchdog.ready()
            await stop.wait()
            log.info("edgecore shutting down")
            watchdog.stopping()
            for task in parts:
                task.cancel()
    finally:
        # also when the hub link stopped for good (LinkStopped ends the daemon, exit 1)
        if bus is not None:
            bus.close()
        db.close()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.print_default_config:
        sys.stdout.write(render_defaults(EdgeConfig, "edgecore configuration (edgecore.yaml)"))
        return 0
    if args.migrate:
        return migrate(args)
    memory.one_arena()
    return run_daemon("edgecore", lambda: load_config(args), run_edge)


if __name__ == "__main__":
    sys.exit(main())
