"""The hub's real REST API and change feed in a thread of the test process.

For states a cloudhub process cannot be forced into: the feed here has a
buffer of ``max_buffered`` rows and reads the change log only when the test
calls :meth:`AppHub.deliver`, so the test decides exactly which rows reach
the watches together (and so overflow their buffers). Everything else is
the real thing: the app on a real socket, a real SQLite file, writes made
with the hub's own Store.
"""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from cloudhub import transport
from cloudhub.api import create_app
from cloudhub.changefeed import ChangeFeed
from cloudhub.db import open_engine
from cloudhub.store import Store
from tests.support.procs import wait_for


class AppHub:
    """``api`` is the base URL; ``store`` writes to the same database the app serves."""

    def __init__(self, data_dir: Path, max_buffered: int = 1) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.engine = open_engine(f"sqlite:///{data_dir / 'hub.db'}")
        self.store = Store(self.engine)
        self.store.migrate()
        self.max_buffered = max_buffered
        self.api = ""
        self.feed: ChangeFeed | None = None
        self._server: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True)

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(20):
            raise AssertionError("the in-process hub did not start")

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        # Never woken by commits and polling once an hour: it reads only on deliver().
        self.feed = ChangeFeed(
            self.store.log_page,
            start=self.store.head(),
            poll_interval=3600,
            max_buffered=self.max_buffered,
        )
        sock = transport.listen("127.0.0.1", 0)
        self.api = transport.url("http", sock)
        self._server = transport.api_server(create_app(self.store, self.feed))
        feed_task = asyncio.create_task(self.feed.run())
        self._ready.set()
        try:
            await self._server.serve(sockets=[sock])
        finally:
            feed_task.cancel()

    def deliver(self) -> None:
        """Let the feed read every committed row (in one batch) and hand it to the watches."""
        assert self.feed is not None
        head = self.store.head()
        self.feed.notify(head)
        wait_for(lambda: self.feed is not None and self.feed.last >= head, 20, "the feed")

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """(status, parsed JSON body) of one request to the app."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.api + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read() or b"null")

    def stop(self) -> None:
        if self._loop is not None and self._server is not None:
            assert self.feed is not None
            self._loop.call_soon_threadsafe(self.feed.close)
            self._server.should_exit = True
        self._thread.join(20)
        self.engine.dispose()
