"""systemd's service notification protocol (sd_notify), without libsystemd.

systemd starts a ``Type=notify`` service with ``$NOTIFY_SOCKET``, an AF_UNIX
datagram socket (a path, or an abstract name written ``@name``); the service
sends newline-separated ``KEY=value`` assignments to it: ``READY=1``,
``STATUS=…``, ``WATCHDOG=1``, ``STOPPING=1``. With ``WatchdogSec=`` set,
``$WATCHDOG_USEC`` is the time after which systemd kills a service that sent
no ``WATCHDOG=1`` (``$WATCHDOG_PID``, when set, names the process it is for).
Without ``$NOTIFY_SOCKET`` every call here does nothing.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import MutableMapping

log = logging.getLogger(__name__)


class Notifier:
    """Sends sd_notify messages to one socket; a no-op when there is none."""

    def __init__(self, address: str | None, watchdog_usec: int | None = None) -> None:
        self.address = address
        #: Seconds without a ping after which systemd kills the service; None: no watchdog.
        self.watchdog_timeout = None if not watchdog_usec else watchdog_usec / 1_000_000
        self._sock: socket.socket | None = None
        self._failed = False

    @classmethod
    def from_environ(cls, environ: MutableMapping[str, str]) -> Notifier:
        """The notifier systemd set up in ``environ``, removing its variables from it so that
        child processes (which systemd would not listen to anyway) do not inherit them."""
        address = environ.pop("NOTIFY_SOCKET", None) or None
        usec = environ.pop("WATCHDOG_USEC", "")
        pid = environ.pop("WATCHDOG_PID", "")
        watchdog = int(usec) if usec.isdigit() and (not pid or pid == str(os.getpid())) else None
        return cls(address, watchdog)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *assignments: str) -> None:
        """Send ``KEY=value`` assignments in one datagram. Never blocks and never raises:
        a message systemd cannot take is dropped, and the first such failure is logged."""
        if self.address is None:
            return
        # newlines would split a value into assignments systemd would misread
        message = "\n".join(a.replace("\n", " ") for a in assignments).encode()
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
            self._sock.sendto(message, target)
        except OSError as exc:
            if not self._failed:
                self._failed = True
                log.warning("cannot notify systemd at %s: %s", self.address, exc.strerror or exc)

    def ready(self, status: str) -> None:
        self.notify("READY=1", f"STATUS={status}")

    def status(self, text: str) -> None:
        self.notify(f"STATUS={text}")

    def ping(self) -> None:
        self.notify("WATCHDOG=1")

    def stopping(self, status: str) -> None:
        self.notify("STOPPING=1", f"STATUS={status}")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
