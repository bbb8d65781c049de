"""A real sd_notify socket, as systemd listens on it, for tests of Type=notify daemons."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

from tests.support.procs import wait_for


class Message:
    """One datagram: its ``KEY=value`` assignments and when it arrived (time.monotonic)."""

    def __init__(self, data: bytes, at: float) -> None:
        self.at = at
        self.fields = dict(line.split("=", 1) for line in data.decode().split("\n") if line)

    def __repr__(self) -> str:
        return f"Message({self.fields!r} at {self.at:.3f})"


class NotifySocket:
    """An AF_UNIX datagram socket in ``directory``; every message is kept in arrival order.

    ``environ(watchdog)`` is what systemd would put in a service's environment.
    """

    def __init__(self, directory: Path) -> None:
        self.path = directory / "notify.sock"
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(self.path))
        self._sock.settimeout(0.1)
        self._closed = False
        self._messages: list[Message] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def environ(self, watchdog: float | None = None) -> dict[str, str]:
        env = {"NOTIFY_SOCKET": str(self.path)}
        if watchdog is not None:
            env["WATCHDOG_USEC"] = str(int(watchdog * 1_000_000))
        return env

    def _receive(self) -> None:
        while not self._closed:
            try:
                data = self._sock.recv(65536)
            except TimeoutError:
                continue
            with self._lock:
                self._messages.append(Message(data, time.monotonic()))

    @property
    def messages(self) -> list[Message]:
        with self._lock:
            return list(self._messages)

    def having(self, key: str, since: int = 0) -> list[Message]:
        """Messages from index ``since`` on that set ``key``."""
        return [m for m in self.messages[since:] if key in m.fields]

    def statuses(self, since: int = 0) -> list[str]:
        return [m.fields["STATUS"] for m in self.having("STATUS", since)]

    def wait(
        self, match: Callable[[Message], bool], what: str, since: int = 0, timeout: float = 20
    ) -> int:
        """Wait for a message from index ``since`` on that ``match``es; its index."""

        def found() -> int | None:
            for index, message in enumerate(self.messages[since:], start=since):
                if match(message):
                    return index + 1  # truthy even for the first message
            return None

        try:
            return wait_for(found, timeout, what) - 1
        except AssertionError:
            raise AssertionError(f"timed out waiting for {what}; got {self.messages}") from None

    def wait_status(self, text: str, since: int = 0, timeout: float = 20) -> int:
        """Wait for a STATUS that contains ``text``; its index."""
        return self.wait(
            lambda m: text in m.fields.get("STATUS", ""), f"STATUS with {text!r}", since, timeout
        )

    def wait_pings(self, count: int, since: int = 0, timeout: float = 20) -> int:
        """Wait until ``count`` WATCHDOG=1 pings arrived from index ``since`` on; the last one's
        index."""

        def found() -> int | None:
            pings = [
                i for i, m in enumerate(self.messages) if i >= since and "WATCHDOG" in m.fields
            ]
            return pings[count - 1] + 1 if len(pings) >= count else None

        try:
            return wait_for(found, timeout, "watchdog pings") - 1
        except AssertionError:
            raise AssertionError(
                f"timed out waiting for {count} watchdog pings; got {self.messages[since:]}"
            ) from None

    def close(self) -> None:
        self._closed = True
        self._thread.join(5)
        self._sock.close()
