"""The eventbus: mappers on MQTT ↔ the device twins, with paho driven by the asyncio loop.

paho does no I/O of its own here: the loop watches its socket (``add_reader`` /
``add_writer``) and calls ``loop_read`` / ``loop_write`` / ``loop_misc`` — the
shape of paho's own asyncio example and of aiomqtt. Messages are acknowledged
to the broker (QoS 1, manual acks) only after the twin state and outbox rows
they produced have committed, and the session is persistent (clean_session
off), so a report a mapper made is never lost across an edgecore restart: the
broker redelivers what was not acknowledged.

Per batch of mapper messages the loop does one store call, then writes every
acknowledgement and reply at once instead of waiting for the socket's next
writable event.

A message larger than the largest outbox row (storable.MAX_REPORT_BYTES) could
never be stored: it is refused unread — counted, logged at a limited rate,
acknowledged in its turn so the broker does not send it again, and not
answered (without reading it there is no event id to answer).

What waits for the store is bounded (MAX_WAITING messages, MAX_WAITING_BYTES),
so a mapper publishing as fast as it can cannot grow edgecore's memory. QoS 1
needs little help: the broker sends a client at most its in-flight window
(Mosquitto's max_inflight_messages, 20) of unacknowledged messages, and
edgecore acknowledges only what it stored. QoS 0 has no window: past the bound
a QoS 0 message is dropped — counted as ``overload``, logged at a limited rate,
reported with the node's usage — unless nothing from its topic is waiting, so
one flooding device cannot starve the others. QoS 0 means at most once: a
mapper that needs every value sends QoS 1. Past twice the bound (a broker with
no in-flight window, or every device flooding at once) edgecore stops reading
the socket until the store has taken half, and the broker queues (and, past
its own bound, drops and counts) the rest.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from devicetwin import SUBSCRIPTIONS
from edgecore.config import MqttConfig
from edgecore.drops import Drops
from edgecore.store import StoreThread
from edgecore.twins import Inbound, Outgoing, TwinService
from edgeward import storable
from edgeward.backoff import backoff
from edgeward.errors import ConfigError

log = logging.getLogger(__name__)

#: Messages handled per transaction at most (the broker's in-flight window bounds it too).
MAX_BATCH = 64
#: Messages (and their payload bytes) waiting for the store before QoS 0 is dropped; past
#: twice these, reading stops until half has been stored.
MAX_WAITING = 1024
MAX_WAITING_BYTES = 4 * 1024 * 1024
#: Replies kept for a disconnected broker before new ones are dropped.
MAX_QUEUED_PUBLISHES = 10_000

#: Mosquitto's count of messages it dropped ($SYS, every sys_interval; other brokers may
#: not publish it, and then nothing is known).
BROKER_DROPPED = "$SYS/broker/publish/messages/dropped"

#: The largest MQTT payload edgecore reads. An upload is stored whole, and a twin update's
#: values all land in the device's report, so nothing larger could be stored.
MAX_PAYLOAD_BYTES = storable.MAX_REPORT_BYTES


@dataclass(frozen=True)
class _Unread:
    """A message refused before it was read, waiting for its turn to be acknowledged."""

    ack: Callable[[], None]


class EventBus:
    """Keeps one MQTT connection, hands mapper messages to the twins, publishes replies."""

    def __init__(
        self,
        config: MqttConfig,
        node: str,
        db: StoreThread,
        twins: TwinService,
        outbox_wake: asyncio.Event,
    ) -> None:
        self.config = config
        self.node = node
        self.db = db
        self.twins = twins
        self.outbox_wake = outbox_wake
        self.connected = asyncio.Event()
        self._closing = False
        self._inbox: asyncio.Queue[Inbound | _Unread] = asyncio.Queue()
        self._waiting_bytes = 0
        self._waiting_qos0: dict[str, int] = {}  # topic → QoS 0 messages waiting
        self._reading_paused = False
        #: MQTT messages not stored: refused unread (too_large), dropped past the bound
        #: (overload); counted for the node to report.
        self.refused = Drops(log)
        #: What the broker says it dropped (BROKER_DROPPED); None until it has said.
        self.broker_dropped: int | None = None
        self.broker_drops = Drops(log)
        self._lost: asyncio.Event = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._misc: asyncio.Task[None] | None = None
        self._fd = -1  # the socket paho has open (see _on_socket_open)
        self.client = self._make_client()

    def _make_client(self) -> mqtt.Client:
        cfg = self.config
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=cfg.client_id or f"edgecore-{self.node}",
            clean_session=False,
            protocol=mqtt.MQTTv311,
            manual_ack=True,
        )
        if cfg.username:
            client.username_pw_set(cfg.username, _read_secret(cfg.password_file))
        if cfg.tls_ca_file:
            client.tls_set(
                ca_certs=cfg.tls_ca_file,
                certfile=cfg.tls_cert_file or None,
                keyfile=cfg.tls_key_file or None,
            )
        client.max_queued_messages_set(MAX_QUEUED_PUBLISHES)
        # No in-flight window of our own (paho's default is 20): a batch's replies all go out
        # at once instead of waiting for PUBACKs, and paho skips its rescan of the queue on
        # every PUBACK. MAX_QUEUED_PUBLISHES still bounds what is held.
        client.max_inflight_messages_set(0)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_register_write
        client.on_socket_unregister_write = self._on_unregister_write
        return client

    # -- supervision ----------------------------------------------------------

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._process())
            await self._keep_connected()

    async def _keep_connected(self) -> None:
        delays = self._delays()
        where = f"{self.config.host}:{self.config.port}"
        while True:
            self._lost.clear()
            try:
                # connect() resolves and opens a TCP connection: off the loop, it may block
                await asyncio.to_thread(
                    self.client.connect, self.config.host, self.config.port, self.config.keepalive
                )
            except (OSError, ValueError) as exc:
                log.warning("MQTT broker %s: %s", where, _describe(exc))
            else:
                await self._lost.wait()
                if self.connected.is_set():
                    delays = self._delays()
                self.connected.clear()
            delay = next(delays)
            log.info("MQTT: reconnecting to %s in %.1fs", where, delay)
            await asyncio.sleep(delay)

    def _delays(self) -> Iterator[float]:
        return backoff(self.config.reconnect_initial_delay, 2.0, self.config.reconnect_max_delay)

    def close(self) -> None:
        self._closing = True
        if self.client.is_connected():
            self.client.disconnect()

    # -- paho callbacks (on the loop thread, except socket open during connect) --

    def _on_connect(self, client: mqtt.Client, _u: Any, flags: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            log.error("MQTT broker refused the connection: %s", reason)
            return
        client.subscribe([*((topic, 1) for topic in SUBSCRIPTIONS), (BROKER_DROPPED, 0)])
        self.connected.set()
        log.info(
            "MQTT: connected to %s:%d as %s (session %s)",
            self.config.host,
            self.config.port,
            self.config.client_id or f"edgecore-{self.node}",
            "resumed" if flags.session_present else "new",
        )

    def _on_disconnect(self, _c: Any, _u: Any, _flags: Any, reason: Any, _p: Any) -> None:
        # our own stop is not worth a warning
        log.log(
            logging.INFO if self._closing else logging.WARNING,
            "MQTT: disconnected from the broker (%s)",
            reason,
        )
        self._lost.set()

    def _on_message(self, client: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        ack = partial(client.ack, message.mid, message.qos)
        topic, size = message.topic, len(message.payload)
        if topic == BROKER_DROPPED:
            self._broker_dropped(message.payload)
            ack()
            return
        if size > MAX_PAYLOAD_BYTES:
            self.refused.add(
                "too_large",
                f"MQTT: refused a {size} byte message on {topic[:200]} "
                f"unread and unanswered: more than {MAX_PAYLOAD_BYTES} bytes, the most "
                "edgecore can store",
            )
            self._inbox.put_nowait(_Unread(ack))
            return
        waiting = self._inbox.qsize()
        full = waiting >= MAX_WAITING or self._waiting_bytes >= MAX_WAITING_BYTES
        if message.qos == 0:
            if full and (topic in self._waiting_qos0 or waiting >= 2 * MAX_WAITING):
                self.refused.add(
                    "overload",
                    f"MQTT: dropped a QoS 0 message on {topic[:200]}: {waiting} messages wait "
                    "to be stored (a mapper publishes faster than the edge can store; QoS 1 "
                    "messages are never dropped)",
                )
                return
            self._waiting_qos0[topic] = self._waiting_qos0.get(topic, 0) + 1
        self._waiting_bytes += size
        self._inbox.put_nowait(
            Inbound(topic, message.payload, ack, message.mid, bool(message.dup), message.qos)
        )
        if waiting + 1 >= 2 * MAX_WAITING or self._waiting_bytes >= 2 * MAX_WAITING_BYTES:
            self._pause_reading()

    def _taken(self, msg: Inbound | _Unread) -> None:
        """``msg`` left the queue for the store."""
        if not isinstance(msg, Inbound):
            return
        self._waiting_bytes -= len(msg.payload)
        if msg.qos == 0:
            left = self._waiting_qos0[msg.topic] - 1
            if left:
                self._waiting_qos0[msg.topic] = left
            else:
                del self._waiting_qos0[msg.topic]

    def _pause_reading(self) -> None:
        if not self._reading_paused and self._fd >= 0:
            self._reading_paused = True
            self._loop.remove_reader(self._fd)
            log.info("MQTT: %d messages wait to be stored; reading paused", self._inbox.qsize())

    def _resume_reading(self) -> None:
        if (
            self._reading_paused
            and self._inbox.qsize() <= MAX_WAITING // 2
            and self._waiting_bytes <= MAX_WAITING_BYTES // 2
        ):
            self._reading_paused = False
            if self._fd >= 0:
                self._loop.add_reader(self._fd, self.client.loop_read)

    def _broker_dropped(self, payload: bytes) -> None:
        """Mosquitto's count of messages it dropped, all clients, since it started: a full
        queue for a slow or absent client (max_queued_messages), after it acknowledged
        them to their publisher. Nobody else would tell."""
        try:
            total = int(payload)
        except ValueError:
            return
        if self.broker_dropped is not None and total > self.broker_dropped:
            self.broker_drops.add(
                "broker",
                f"MQTT: the broker dropped {total - self.broker_dropped} messages "
                f"({total} since it started): a client's queue was full; raise "
                "max_queued_messages in its config (docs/KUBEEDGE-MQTT.md, 'Broker')",
                total - self.broker_dropped,
            )
        elif self.broker_dropped is None and total:
            log.warning(
                "MQTT: the broker has dropped %d messages since it started (a client's queue "
                "was full; see max_queued_messages)",
                total,
            )
        self.broker_dropped = total

    def _on_socket_open(self, client: mqtt.Client, _u: Any, sock: Any) -> None:
        # Nagle's algorithm would hold small replies back for up to 40 ms
        if hasattr(sock, "setsockopt"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # paho closes the socket right after on_socket_close returns; its fileno() is -1 then
        self._fd = sock.fileno()
        self._on_loop(self._watch, client, self._fd)

    def _watch(self, client: mqtt.Client, fd: int) -> None:
        self._reading_paused = False
        self._loop.add_reader(fd, client.loop_read)
        self._misc = self._loop.create_task(self._misc_loop(client))

    def _on_socket_close(self, _c: Any, _u: Any, _sock: Any) -> None:
        self._on_loop(self._unwatch, self._fd)

    def _unwatch(self, fd: int) -> None:
        self._loop.remove_reader(fd)
        self._loop.remove_writer(fd)
        if self._misc is not None:
            self._misc.cancel()
        self._lost.set()

    def _on_register_write(self, client: mqtt.Client, _u: Any, _sock: Any) -> None:
        self._on_loop(self._loop.add_writer, self._fd, client.loop_write)

    def _on_unregister_write(self, _c: Any, _u: Any, _sock: Any) -> None:
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

    # -- messages ---------------------------------------------------------------

    async def _process(self) -> None:
        while True:
            batch = [await self._inbox.get()]
            while len(batch) < MAX_BATCH and not self._inbox.empty():
                batch.append(self._inbox.get_nowait())
            for msg in batch:
                self._taken(msg)
            self._resume_reading()
            await self._store(batch)
            del batch  # not held while waiting for the next one: memory is the bound

    async def _store(self, batch: list[Inbound | _Unread]) -> None:
        readable = [msg for msg in batch if isinstance(msg, Inbound)]
        try:
            replies = await self.db.call(self.twins.handle_messages, readable) if readable else []
        except Exception:
            # Not acknowledged: drop the connection so the broker redelivers them.
            log.exception("could not store %d MQTT messages; reconnecting", len(batch))
            self.client.disconnect()
            return
        for msg in batch:
            msg.ack()
        self.publish(replies)
        self.outbox_wake.set()

    def publish(self, replies: list[Outgoing]) -> None:
        """Publish what the twin rules produced (QoS 1, not retained), and write them (with
        any acknowledgements queued before) now."""
        for reply in replies:
            info = self.client.publish(reply.topic, reply.payload, qos=1)
            if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
                log.warning(
                    "MQTT: dropped a reply on %s: too many queued while offline", reply.topic
                )
        self.client.loop_write()


def _read_secret(path: str) -> str | None:
    if not path:
        return None
    try:
        return Path(path).read_text().strip()
    except OSError as exc:
        raise ConfigError([f"mqtt.password_file: cannot read {path}: {exc.strerror}"]) from None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is the broker running?)"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
