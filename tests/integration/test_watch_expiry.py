"""A watch the change log can no longer serve ends with 410 Expired, and the CLI lists again.

A cloudhub process cannot be made to overflow a watch's buffer at a chosen
moment, so these tests run the real app and change feed in this process
(tests/support/apphub.py): the feed's buffer holds one row, and it reads the
change log only when the test says so.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cloudhub.store import Store
from edgeward.kinds import DEVICE, normalize
from tests.support.apphub import AppHub
from tests.support.procs import wait_for
from tests.support.watching import DEADLINE, Watch

EDGEWARD = str(Path(sys.executable).parent / "edgeward")
COLL = "/api/v1/namespaces/default/devices"


@pytest.fixture
def app_hub(tmp_path: Path) -> Iterator[AppHub]:
    hub = AppHub(tmp_path / "hub", max_buffered=1)
    hub.start()
    try:
        yield hub
    finally:
        hub.stop()


def device(name: str, **spec: Any) -> dict[str, Any]:
    return normalize(DEVICE, {"metadata": {"name": name}, "spec": spec}, "default")


def overflow_past_compaction(store: Store, write: Any) -> int:
    """Commit ``write``'s changes (at least three) in one transaction, then compact the log
    to keep only its last two rows: the feed then hands a watch two rows at once, which
    overflows a one-row buffer, and the rows before them are gone. Returns the bound."""
    with store.writing() as tx:
        write(tx)
        assert tx.head - tx.start >= 3
    bound = store.compact(2)
    assert bound == store.head() - 2
    return bound


def test_watch_that_overflowed_past_compaction_gets_410_expired(app_hub: AppHub) -> None:
    """A watch whose buffer overflowed while the rows it missed were compacted away ends
    with the in-stream 410 Expired error, instead of silently skipping those rows."""
    store = app_hub.store
    w = Watch(app_hub, f"{COLL}?watch=1&resourceVersion={store.head()}")
    try:
        assert w.status == 200
        sentinel = store.create(DEVICE, device("sentinel"))
        app_hub.deliver()
        assert w.take(1) == [{"type": "ADDED", "object": sentinel}]

        def write(tx: Any) -> None:
            for name in ("a", "b", "c", "d", "e"):
                tx.create(DEVICE, device(name))

        bound = overflow_past_compaction(store, write)
        app_hub.deliver()
        (error,) = w.take(1)
        assert error["type"] == "ERROR", error
        status = error["object"]
        message = status.pop("message")
        assert status == {
            "apiVersion": "v1",
            "kind": "Status",
            "status": "Failure",
            "code": 410,
            "reason": "Expired",
        }
        assert f"after revision {sentinel['metadata']['resourceVersion']}" in message
        assert f"starts after {bound}" in message
        assert w.ended()
    finally:
        w.close()


def test_rows_compacted_before_the_feed_read_them_expire_every_watch(tmp_path: Path) -> None:
    """If the log is compacted past rows the change feed had not read yet (a burst larger than
    the log's retention between two reads), no subscriber is handed the rows after the gap
    as if there were none: each reads the log again and, here, gets 410 Expired."""
    hub = AppHub(tmp_path / "hub", max_buffered=1000)  # no subscriber overflows on its own
    hub.start()
    store = hub.store
    w = Watch(hub, f"{COLL}?watch=1&resourceVersion={store.head()}")
    try:
        assert w.status == 200
        sentinel = store.create(DEVICE, device("sentinel"))
        hub.deliver()
        assert w.take(1) == [{"type": "ADDED", "object": sentinel}]
        for name in ("a", "b", "c", "d"):
            store.create(DEVICE, device(name))
        store.compact(2)  # "a" and "b" are gone before the feed reads
        hub.deliver()
        (event,) = w.take(1)
        assert event["type"] == "ERROR" and event["object"]["code"] == 410, event
        assert w.ended()
    finally:
        w.close()
        hub.stop()


class CliWatch:
    """``edgeward ARGS`` left running against ``hub``; stdout lines read with a deadline."""

    def __init__(self, hub: AppHub, *args: str) -> None:
        env = {**os.environ, "EDGEWARD_HUB": hub.api, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [EDGEWARD, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def events(self, n: int) -> list[tuple[str, str]]:
        """The next ``n`` JSON events printed, as (type, name)."""
        got = []
        for _ in range(n):
            try:
                event = json.loads(self.lines.get(timeout=DEADLINE))
            except queue.Empty:
                raise AssertionError(f"the CLI printed {got} and then nothing") from None
            got.append((event["type"], event["object"]["metadata"]["name"]))
        return got

    def interrupt(self) -> tuple[int, str]:
        """Ctrl-C: the exit status and stderr."""
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(DEADLINE)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
        assert self.proc.stderr is not None
        return self.proc.returncode, self.proc.stderr.read()


def open_watches(hub: AppHub) -> int:
    return hub.request("GET", "/healthz")[1]["watches"]["open"]


def test_cli_watch_lists_again_after_410_and_carries_on(app_hub: AppHub) -> None:
    """`edgeward get -w` whose watch expires says so in one line on stderr, lists again,
    prints what changed meanwhile (deletions included) and goes on watching."""
    store = app_hub.store
    for name in ("a", "b"):
        store.create(DEVICE, device(name))
    cli = CliWatch(app_hub, "get", "devices", "-w", "-o", "json")
    try:
        assert cli.events(2) == [("ADDED", "a"), ("ADDED", "b")]
        wait_for(lambda: open_watches(app_hub) == 1, DEADLINE, "the CLI's watch")
        store.create(DEVICE, device("c"))
        app_hub.deliver()
        assert cli.events(1) == [("ADDED", "c")]

        def write(tx: Any) -> None:
            tx.replace(DEVICE, device("a", nodeName="edge-1"))
            tx.delete(DEVICE, "default", "b")
            tx.create(DEVICE, device("d"))
            tx.create(DEVICE, device("e"))

        overflow_past_compaction(store, write)
        app_hub.deliver()
        # the listing again: c is unchanged, b is gone
        assert cli.events(4) == [
            ("MODIFIED", "a"),
            ("ADDED", "d"),
            ("ADDED", "e"),
            ("DELETED", "b"),
        ]
        store.create(DEVICE, device("f"))
        app_hub.deliver()
        assert cli.events(1) == [("ADDED", "f")]
    finally:
        code, stderr = cli.interrupt()
    assert code == 130
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("edgeward: watch expired, listing again: the change log no longer")
