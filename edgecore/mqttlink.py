"""One paho client driven by the asyncio loop, kept connected.

paho does no I/O of its own here: the loop watches its socket (``add_reader`` /
``add_writer``) and calls ``loop_read`` / ``loop_write`` / ``loop_misc`` — the
shape of paho's own asyncio example and of aiomqtt. Reading can be paused, so
that what the broker sends waits at the broker (bounded, and counted when it
drops) instead of in edgecore's memory.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import paho.mqtt.client as mqtt

log = logging.getLogger(__name__)


class MqttConnection:
    """Keeps ``client`` connected to ``host:port``; its owner sets the message callbacks and
    calls :meth:`up` from its ``on_connect`` once the connection is usable."""

    def __init__(
        self,
        client: mqtt.Client,
        host: str,
        port: int,
        keepalive: int,
        delays: Callable[[], Iterator[float]],
        name: str,
    ) -> None:
        self.client = client
        self.host, self.port, self.keepalive = host, port, keepalive
        self.name = name
        self.connected = asyncio.Event()
        self.closing = False
        self.paused = False
        self._delays = delays
        self._lost = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._misc: asyncio.Task[None] | None = None
        self._fd = -1  # the socket paho has open (see _on_socket_open)
        self._write_wanted = False  # paho asked to write before it announced its socket
        client.on_disconnect = self._on_disconnect
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_register_write
        client.on_socket_unregister_write = self._on_unregister_write

    def up(self) -> None:
        self.connected.set()

    async def keep_connected(self) -> None:
        delays = self._delays()
        where = f"{self.host}:{self.port}"
        while True:
            self._lost.clear()
            try:
                # connect() resolves and opens a TCP connection: off the loop, it may block
                await asyncio.to_thread(self.client.connect, self.host, self.port, self.keepalive)
            except (OSError, ValueError) as exc:
                log.warning("MQTT broker %s: %s", where, describe(exc))
            else:
                await self._lost.wait()
                if self.connected.is_set():
                    delays = self._delays()
                self.connected.clear()
            delay = next(delays)
            log.info("MQTT: reconnecting %s to %s in %.1fs", self.name, where, delay)
            await asyncio.sleep(delay)

    def close(self) -> None:
        self.closing = True
        if self.client.is_connected():
            self.client.disconnect()

    def pause_reading(self) -> None:
        if not self.paused:
            self.paused = True
            if self._fd >= 0:
                self._loop.remove_reader(self._fd)

    def resume_reading(self) -> None:
        if self.paused:
            self.paused = False
            if self._fd >= 0:
                self._loop.add_reader(self._fd, self.client.loop_read)

    # -- paho callbacks (on the loop thread, except socket open during connect) --

    def _on_disconnect(self, _c: Any, _u: Any, _flags: Any, reason: Any, _p: Any) -> None:
        # our own stop is not worth a warning
        log.log(
            logging.INFO if self.closing else logging.WARNING,
            "MQTT: %s disconnected from the broker (%s)",
            self.name,
            reason,
        )
        self._lost.set()

    def _on_socket_open(self, client: mqtt.Client, _u: Any, sock: Any) -> None:
        # Nagle's algorithm would hold small replies back for up to 40 ms
        if hasattr(sock, "setsockopt"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # paho closes the socket right after on_socket_close returns; its fileno() is -1 then
        self._fd = sock.fileno()
        self._on_loop(self._watch, client, self._fd)

    def _watch(self, client: mqtt.Client, fd: int) -> None:
        self.paused = False
        self._loop.add_reader(fd, client.loop_read)
        if self._write_wanted:
            self._loop.add_writer(fd, client.loop_write)
        self._misc = self._loop.create_task(self._misc_loop(client))

    def _on_socket_close(self, _c: Any, _u: Any, _sock: Any) -> None:
        self._on_loop(self._unwatch, self._fd)
        self._fd = -1
        self._write_wanted = False

    def _unwatch(self, fd: int) -> None:
        self._loop.remove_reader(fd)
        self._loop.remove_writer(fd)
        if self._misc is not None:
            self._misc.cancel()
        self._lost.set()

    def _on_register_write(self, client: mqtt.Client, _u: Any, _sock: Any) -> None:
        # paho has its new socket before it announces it (on_socket_open, from connect()'s
        # thread): a publish on the loop in between asks to write on a socket not watched
        # yet. Remembered, the socket's watch starts with it; raising would fail the publish.
        if self._fd < 0:
            self._write_wanted = True
            return
        self._on_loop(self._loop.add_writer, self._fd, client.loop_write)

    def _on_unregister_write(self, _c: Any, _u: Any, _sock: Any) -> None:
        self._write_wanted = False
        if self._fd >= 0:
            self._on_loop(self._loop.remove_writer, self._fd)

    def _on_loop(self, fn: Any, *args: Any) -> None:
        """Run ``fn`` on the loop: now when paho calls from it (the usual case: reads, writes,
        keepalive and disconnect all run there), else soon (connect() runs in a worker
        thread)."""
        if threading.get_ident() == self._loop_thread:
            fn(*args)
        else:
            self._loop.call_soon_threadsafe(fn, *args)

    async def _misc_loop(self, client: mqtt.Client) -> None:
        while client.loop_misc() == mqtt.MQTT_ERR_SUCCESS:
            await asyncio.sleep(1)
        self._lost.set()


def describe(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is the broker running?)"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
