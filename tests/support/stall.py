"""Stalling a real daemon's event loop from outside, with no hook in the daemon.

A daemon logs to stderr from its event loop; when nobody reads that pipe (a
journald that stopped reading, a full terminal), the next log line blocks the
loop in write(2) — a hang systemd's watchdog is there to catch. ``OutputPipe``
is the daemon's stderr: a pipe of one page that a thread copies to the log
file until ``block()`` stops the copying and fills the pipe.
"""

from __future__ import annotations

import fcntl
import os
import select
import threading
import time
from pathlib import Path


class OutputPipe:
    """Give ``write_end`` to the daemon as its output; its text reaches ``log_path``."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.read_end, self.write_end = os.pipe()
        fcntl.fcntl(self.write_end, fcntl.F_SETPIPE_SZ, 4096)  # the least: one page
        self._paused = threading.Event()
        self._idle = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._copy, daemon=True)
        self._thread.start()

    def _copy(self) -> None:
        with open(self.log_path, "ab") as log:
            while not self._closed:
                if self._paused.is_set():
                    self._idle.set()  # and no read until resumed
                    time.sleep(0.05)
                    continue
                ready, _, _ = select.select([self.read_end], [], [], 0.05)
                if ready:
                    data = os.read(self.read_end, 65536)
                    log.write(data)
                    log.flush()

    def block(self) -> None:
        """Stop reading and fill the pipe: the daemon's next write blocks until ``unblock``."""
        self._idle.clear()
        self._paused.set()
        if not self._idle.wait(10):
            raise AssertionError("the output copier did not pause")
        # a descriptor of our own, non-blocking: O_NONBLOCK on the daemon's shared one
        # would make its writes fail instead of wait
        filler = os.open(f"/proc/self/fd/{self.write_end}", os.O_WRONLY | os.O_NONBLOCK)
        try:
            for size in (4096, 1):
                try:
                    while True:
                        os.write(filler, b"\n" * size)
                except BlockingIOError:
                    pass
        finally:
            os.close(filler)

    def unblock(self) -> None:
        self._paused.clear()

    def close(self) -> None:
        self._paused.clear()
        self._closed = True
        self._thread.join(5)
        os.close(self.read_end)
        os.close(self.write_end)
