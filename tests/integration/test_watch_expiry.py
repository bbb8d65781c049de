"""A watch the change log can no longer serve ends with 410 Expired.

A cloudhub process cannot be made to overflow a watch's buffer at a chosen
moment, so these tests run the real app and change feed in this process
(tests/support/apphub.py): the feed's buffer holds one row, and it reads the
change log only when the test says so.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cloudhub.store import Store
from edgeward.kinds import DEVICE, normalize
from tests.support.apphub import AppHub
from tests.support.watching import Watch

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
