"""Node status: what the hub shows in `edgeward get nodes -o wide`, measured with psutil."""

from __future__ import annotations

import asyncio
import logging
import platform
import socket
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

import edgeward
from edgecore import memory
from edgecore.drops import Drops
from edgecore.store import StoreThread, is_storage_failure
from edgeward.protocol import TOPIC_NODE_STATUS

log = logging.getLogger(__name__)

NODE_STATUS_KEY = "node-status"


def node_info() -> dict[str, Any]:
    """What does not change while the daemon runs."""
    uname = platform.uname()
    return {
        "agentVersion": edgeward.__version__,
        "hostname": socket.gethostname(),
        "os": uname.system,
        "kernelVersion": uname.release,
        "architecture": uname.machine,
        "pythonVersion": platform.python_version(),
    }


def node_status(data_dir: Path) -> dict[str, Any]:
    """Capacity and current usage of CPU, memory and the data directory's disk."""
    memory = psutil.virtual_memory()
    disk = psutil.disk_usage(str(data_dir))
    return {
        "capacity": {
            "cpu": psutil.cpu_count() or 1,
            "memoryBytes": memory.total,
            "diskBytes": disk.total,
        },
        "usage": {
            # since the previous call: the first call after start-up reads 0.0
            "cpuPercent": psutil.cpu_percent(interval=None),
            "memoryBytes": memory.total - memory.available,
            "memoryPercent": memory.percent,
            "diskBytes": disk.used,
            "diskPercent": disk.percent,
        },
    }


async def report_forever(
    db: StoreThread,
    data_dir: Path,
    interval: float,
    outbox_wake: asyncio.Event,
    more_usage: Callable[[], dict[str, Any]] = dict,
) -> None:
    """Queue a node status report every ``interval`` seconds; only the latest is kept.
    Expired events leave the outbox first, so the report counts them."""
    problems = Drops(log)
    while True:
        try:
            status = await asyncio.to_thread(node_status, data_dir)
            try:
                await db.call(db.store.expire_events)
            except sqlite3.OperationalError as exc:  # they expire at the next report
                problems.add("expire", f"node status: could not delete expired events ({exc})")
            usage, status["outbox"] = await db.call(db.store.outbox_status)
            status["usage"].update(usage)
            # the hub compares it with what it routed to this node (drift detection)
            revision, digest = await db.call(db.store.cache_digest)
            status["usage"].update(cacheRevision=revision, cacheDigest=digest)
            status["usage"].update(more_usage())
            try:
                await db.call(db.store.report_state, TOPIC_NODE_STATUS, NODE_STATUS_KEY, status)
            except sqlite3.OperationalError as exc:
                if not is_storage_failure(exc):
                    raise
                # a full disk: the report goes from memory, so the hub still hears the node
                # (and sees its disk); one line a minute, not one per report
                await db.call(db.store.hold_state, TOPIC_NODE_STATUS, NODE_STATUS_KEY, status)
                problems.add(
                    "store",
                    f"node status: edge.db cannot store reports ({exc}); they are sent from "
                    "memory meanwhile",
                )
            outbox_wake.set()
            memory.trim()  # what a burst since the last report freed
        except sqlite3.OperationalError as exc:  # one line a minute, not a trace
            problems.add("store", f"node status: could not queue a report ({exc}); trying again")
        except Exception:
            log.exception("node status: could not queue a report; trying again next interval")
        await asyncio.sleep(interval)
