"""A TCP proxy that injects network faults between an edge and the hub, for the tests.

Each connection through it is a :class:`Link` with a fault of its own; new connections
take the proxy's ``new_fault``. Faults:

- ``pass``: bytes flow both ways;
- ``blackhole``: bytes are read and thrown away, nothing is closed: a half-open link,
  as a NAT that forgot the flow makes it. A link that has thrown bytes away stays that
  way until an end closes it, whatever fault it is given later: TCP never delivers a
  stream with a hole in it, and passing bytes again after a hole would hand the ends
  a stream no network can produce (a frame missing between two that arrive);
- ``delay``: each chunk is held ``delay`` seconds before it is passed on;
- ``throttle``: at most ``rate`` bytes a second each way;
- ``refuse`` (new connections only): accepted and closed at once;
- :meth:`FaultProxy.reset` closes every link with a TCP reset, :meth:`FaultProxy.drop`
  with a clean FIN.

It runs its own event loop on a thread, so tests drive it from synchronous code.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

FAULTS = ("pass", "blackhole", "delay", "throttle", "refuse")


@dataclass
class Link:
    fault: str
    delay: float = 0.0
    rate: float = 0.0
    writers: list[asyncio.StreamWriter] = field(default_factory=list)
    bytes_passed: int = 0
    bytes_dropped: int = 0

    @property
    def dead(self) -> bool:
        """Blackholed now, or since: bytes were thrown away (see the module's docstring)."""
        return self.fault == "blackhole" or self.bytes_dropped > 0


class FaultProxy:
    """``FaultProxy(target_host, target_port)``; connect to ``proxy.port`` instead."""

    def __init__(self, target_host: str, target_port: int, host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.host = host
        self.new_fault = "pass"
        self.new_delay = 0.0
        self.new_rate = 0.0
        self.links: list[Link] = []
        self.connections = 0
        self.refused = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._server = self._call(asyncio.start_server(self._accept, host, 0, reuse_address=True))
        self.port = int(self._server.sockets[0].getsockname()[1])

    # -- control, from the test's thread ---------------------------------------------

    def set(self, fault: str, *, existing: bool = True, new: bool = True, **kw: float) -> None:
        """Give ``fault`` to the open links and/or to the links opened from now on."""
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}")

        def apply() -> None:
            if new:
                self.new_fault = fault
                self.new_delay = kw.get("delay", 0.0)
                self.new_rate = kw.get("rate", 0.0)
            if existing and fault != "refuse":
                for link in self.links:
                    link.fault = fault
                    link.delay = kw.get("delay", 0.0)
                    link.rate = kw.get("rate", 0.0)

        self._loop.call_soon_threadsafe(apply)

    def reset(self) -> None:
        """Close every open link with a TCP RST (SO_LINGER 0), both sides."""
        self._run(lambda: self._close_all(abort=True))

    def drop(self) -> None:
        """Close every open link cleanly, both sides."""
        self._run(lambda: self._close_all(abort=False))

    def open_links(self) -> int:
        return self._run(lambda: len(self.links))

    def close(self) -> None:
        self._run(lambda: self._close_all(abort=True))
        self._server.close()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    # -- the proxy, on its loop ----------------------------------------------------------

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    def _run(self, fn: Callable[[], Any]) -> Any:
        async def call() -> Any:
            return fn()

        return self._call(call())

    def _close_all(self, abort: bool) -> None:
        for link in list(self.links):
            for writer in link.writers:
                sock = writer.get_extra_info("socket")
                if abort and sock is not None:
                    with contextlib.suppress(OSError):
                        sock.setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                        )
                writer.close()
        self.links.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self.new_fault == "refuse":
            self.refused += 1
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        link = Link(self.new_fault, self.new_delay, self.new_rate, [writer, up_writer])
        self.links.append(link)
        try:
            await asyncio.gather(
                self._pump(link, reader, up_writer), self._pump(link, up_reader, writer)
            )
        finally:
            if link in self.links:
                self.links.remove(link)
            for w in (writer, up_writer):
                w.close()

    async def _pump(
        self, link: Link, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        window_start, window_bytes = time.monotonic(), 0
        try:
            while data := await reader.read(65536):
                if link.dead:
                    link.bytes_dropped += len(data)
                    continue
                if link.fault == "delay":
                    await asyncio.sleep(link.delay)
                elif link.fault == "throttle" and link.rate > 0:
                    window_bytes += len(data)
                    ahead = window_bytes / link.rate - (time.monotonic() - window_start)
                    if ahead > 0:
                        await asyncio.sleep(ahead)
                if link.dead:  # it became one while this chunk waited
                    link.bytes_dropped += len(data)
                    continue
                writer.write(data)
                await writer.drain()
                link.bytes_passed += len(data)
        except (ConnectionError, OSError):
            pass
        finally:
            if not link.dead:
                with contextlib.suppress(ConnectionError, OSError, RuntimeError):
                    writer.close()
