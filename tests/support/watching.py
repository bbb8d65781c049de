"""A watch read as a client reads it: ``http.client`` in a background thread.

Lines become a queue the test waits on with a generous deadline (a hang
guard, not a timing assertion).
"""

from __future__ import annotations

import http.client
import json
import queue
import socket
import threading
from typing import Any
from urllib.parse import urlsplit

DEADLINE = 30.0


class Watch:
    """One streaming GET; ``take(n)`` returns its next ``n`` events."""

    def __init__(self, hub: Any, path: str) -> None:
        url = urlsplit(hub.api)
        self.conn = http.client.HTTPConnection(url.hostname, url.port, timeout=DEADLINE)
        self.conn.connect()
        self.sock = self.conn.sock
        self.conn.request("GET", path)
        self.resp = self.conn.getresponse()
        self.status = self.resp.status
        self.events: queue.Queue[Any] = queue.Queue()
        self._closing = False
        self.thread = threading.Thread(target=self._read, daemon=True)
        if self.status == 200:
            assert self.resp.getheader("content-type", "").startswith("application/x-ndjson")
            self.thread.start()

    def _read(self) -> None:
        try:
            while True:
                line = self.resp.readline()
                if not line:
                    break
                self.events.put(json.loads(line))
        except Exception as exc:
            if not self._closing:
                self.events.put(exc)
        self.events.put(None)  # end of stream

    def take(self, n: int) -> list[dict[str, Any]]:
        got: list[dict[str, Any]] = []
        while len(got) < n:
            try:
                event = self.events.get(timeout=DEADLINE)
            except queue.Empty:
                raise AssertionError(
                    f"watch: got {len(got)} of {n} events before the deadline: {summary(got)}"
                ) from None
            if event is None or isinstance(event, Exception):
                raise AssertionError(f"watch stream ended early ({event!r}) after {summary(got)}")
            got.append(event)
        return got

    def ended(self) -> bool:
        """Whether the hub ended the stream next (rather than sending another event)."""
        try:
            item = self.events.get(timeout=DEADLINE)
        except queue.Empty:
            raise AssertionError("watch: no event and no end before the deadline") from None
        return item is None

    def close(self) -> None:
        self._closing = True
        try:
            assert self.sock is not None
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.conn.close()
        if self.thread.is_alive():
            self.thread.join(10)


def summary(events: list[dict[str, Any]]) -> list[tuple[str, Any, Any]]:
    """(type, name, resourceVersion) of each event, for failure messages."""
    found = []
    for e in events:
        meta = e.get("object", {}).get("metadata", {})
        found.append((e["type"], meta.get("name"), meta.get("resourceVersion")))
    return found
