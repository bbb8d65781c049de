"""The eventbus: mappers on MQTT ↔ the device twins, with paho driven by the asyncio loop
(edgecore.mqttlink).

Messages are acknowledged to the broker (QoS 1, manual acks) only after the twin
state and outbox rows they produced have committed, and the session is
persistent (clean_session off), so a report a mapper made is never lost across
an edgecore restart: the broker redelivers what was not acknowledged. Replies go
out on a second connection (as KubeEdge's eventbus has a publishing and a
subscribing client), so their PUBACKs never wait behind what the broker sends.

Per batch of mapper messages the loop does one store call, then writes every
acknowledgement and reply at once instead of waiting for the socket's next
writable event.

A message larger than the largest outbox row (storable.MAX_REPORT_BYTES) could
never be stored: it is refused unread — counted, logged at a limited rate,
acknowledged in its turn so the broker does not send it again, and not
answered (without reading it there is no event id to answer).

What waits for the store is bounded, so a mapper publishing as fast as it can
cannot grow edgecore's memory (docs/KUBEEDGE-MQTT.md, "Floods"):

- past MAX_WAITING messages (or MAX_WAITING_BYTES) a QoS 0 message is dropped —
  counted as ``overload``, logged at a limited rate, reported with the node's
  usage — unless nothing from its topic is waiting and fewer than twice the
  bound wait, so one flooding device cannot starve the others. QoS 0 means at
  most once: a mapper that needs every value sends QoS 1;
- a QoS 1 message is never dropped: past the bound edgecore stops reading the
  subscriber's socket until the store has taken half, and the broker holds the
  rest (within its own queue bound, and counting what it drops past it; the
  shipped broker config queues 100,000);
- replies waiting for the broker's PUBACK are bounded too (REPLY_WINDOW): a
  broker slower than the mappers slows edgecore down instead of filling paho's
  queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from devicetwin import SUBSCRIPTIONS
from devicetwin.topics import BARE_SUBSCRIPTIONS
from edgecore.config import MqttConfig
from edgecore.drops import Drops
from edgecore.mqttlink import MqttConnection
from edgecore.store import StoreThread
from edgecore.twins import Inbound, Outgoing, TwinService
from edgeward import storable
from edgeward.backoff import backoff
from edgeward.errors import ConfigError

log = logging.getLogger(__name__)

#: Messages handled per transaction at most: a batch's peak sets edgecore's RSS.
MAX_BATCH = 64
#: Messages (and their payload bytes) waiting for the store before QoS 0 is dropped (but
#: the first of a topic, up to twice these) and a QoS 1 message stops reading until half
#: has been stored.
MAX_WAITING = 1024
MAX_WAITING_BYTES = 4 * 1024 * 1024
#: Replies published and not yet acknowledged by the broker past which edgecore takes no
#: more messages from its queue: a broker slower than the mappers slows edgecore down (and
#: its queue's bound applies) instead of filling the queue of replies.
REPLY_WINDOW = 1000
#: Replies kept for a disconnected broker before new ones are dropped.
MAX_QUEUED_PUBLISHES = 10_000

#: Mosquitto's count of messages it dropped ($SYS, every sys_interval; other brokers may
#: not publish it, and then nothing is known).
BROKER_DROPPED = "$SYS/broker/publish/messages/dropped"

#: The end of the topic desired-value deltas are published on.
DELTA_SUFFIX = "/twin/update/delta"

#: The largest MQTT payload edgecore reads. An upload is stored whole, and a twin update's
#: values all land in the device's report, so nothing larger could be stored.
MAX_PAYLOAD_BYTES = storable.MAX_REPORT_BYTES


@dataclass(frozen=True)
class _Unread:
    """A message refused before it was read, waiting for its turn to be acknowledged."""

    ack: Callable[[], None]


class EventBus:
    """Keeps two MQTT connections, hands mapper messages to the twins, publishes replies.

    As KubeEdge's eventbus does, one connection subscribes and one publishes: the broker's
    PUBACKs for replies then never wait behind the messages it sends, so reading the
    subscriber's socket can pause (MAX_WAITING) while replies keep being acknowledged.
    """

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
        self._inbox: asyncio.Queue[Inbound | _Unread] = asyncio.Queue()
        self._waiting_bytes = 0
        self._waiting_qos0: dict[str, int] = {}  # topic → QoS 0 messages waiting
        self._reply_acked = asyncio.Event()
        #: MQTT messages not stored: refused unread (too_large), dropped past the bound
        #: (overload); replies not sent (reply); counted for the node to report.
        self.refused = Drops(log)
        #: What the broker says it dropped (BROKER_DROPPED); None until it has said.
        self.broker_dropped: int | None = None
        self.broker_drops = Drops(log)
        self._pauses = Drops(log)  # only for its rate-limited log
        #: Messages from mappers received, and messages to them published (of which
        #: desired-value deltas), since edgecore started.
        self.received = 0
        self.published = 0
        self.deltas_sent = 0
        self.client_id = config.client_id or f"edgecore-{node}"
        self.client = self._subscriber()
        self.sub = self._connection(self.client, "subscriber")
        self.pub = self._connection(self._publisher(), "publisher")
        self.connected = self.sub.connected

    def _connection(self, client: mqtt.Client, name: str) -> MqttConnection:
        cfg = self.config
        return MqttConnection(client, cfg.host, cfg.port, cfg.keepalive, self._delays, name)

    def _client(self, client_id: str, clean_session: bool, manual_ack: bool) -> mqtt.Client:
        cfg = self.config
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=clean_session,
            protocol=mqtt.MQTTv311,
            manual_ack=manual_ack,
        )
        if cfg.username:
            client.username_pw_set(cfg.username, _read_secret(cfg.password_file))
        if cfg.uses_tls:
            client.tls_set(  # without a CA file: the system's CAs
                ca_certs=cfg.tls_ca_file or None,
                certfile=cfg.tls_cert_file or None,
                keyfile=cfg.tls_key_file or None,
            )
        return client

    def _subscriber(self) -> mqtt.Client:
        """The persistent session (clean_session off) mappers' messages come in on."""
        client = self._client(self.client_id, clean_session=False, manual_ack=True)
        client.on_connect = self._on_connect
        client.on_message = self._on_message
        return client

    def _publisher(self) -> mqtt.Client:
        client = self._client(f"{self.client_id}-pub", clean_session=True, manual_ack=False)
        client.max_queued_messages_set(MAX_QUEUED_PUBLISHES)
        # No in-flight window of our own (paho's default is 20): a batch's replies all go out
        # at once instead of waiting for PUBACKs, and paho skips its rescan of the queue on
        # every PUBACK. REPLY_WINDOW and MAX_QUEUED_PUBLISHES bound what is held.
        client.max_inflight_messages_set(0)
        client.on_connect = self._on_publisher_connect
        client.on_publish = self._on_publish
        return client

    # -- supervision ----------------------------------------------------------

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._process())
            tg.create_task(self.pub.keep_connected())
            await self.sub.keep_connected()

    def _delays(self) -> Iterator[float]:
        return backoff(self.config.reconnect_initial_delay, 2.0, self.config.reconnect_max_delay)

    def close(self) -> None:
        self.sub.close()
        self.pub.close()

    # -- paho callbacks (on the loop thread) --------------------------------------

    def _on_connect(self, client: mqtt.Client, _u: Any, flags: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            log.error("MQTT broker refused the connection: %s", reason)
            return
        bare = BARE_SUBSCRIPTIONS if self.config.bare_id_namespace else ()
        client.subscribe([*((topic, 1) for topic in SUBSCRIPTIONS + bare), (BROKER_DROPPED, 0)])
        if not bare and flags.session_present:  # bare ids turned off since the session began
            client.unsubscribe(list(BARE_SUBSCRIPTIONS))
        self.sub.up()
        log.info(
            "MQTT: connected to %s:%d as %s (session %s)",
            self.config.host,
            self.config.port,
            self.client_id,
            "resumed" if flags.session_present else "new",
        )

    def _on_publisher_connect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            log.error("MQTT broker refused the replies' connection: %s", reason)
            return
        self.pub.up()
        self._reply_acked.set()

    def _on_message(self, client: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        ack = partial(client.ack, message.mid, message.qos)
        topic, size = message.topic, len(message.payload)
        if topic == BROKER_DROPPED:
            self._broker_dropped(message.payload)
            ack()
            return
        self.received += 1
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
        if message.qos and (waiting + 1 >= MAX_WAITING or self._waiting_bytes >= MAX_WAITING_BYTES):
            # QoS 1 waits at the broker (its queue is bounded, and what it drops is counted)
            if not self.sub.paused:
                self._pauses.add(
                    "paused",
                    f"MQTT: {waiting + 1} messages wait to be stored; reading paused until half "
                    "is stored (the broker holds the rest)",
                )
            self.sub.pause_reading()

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

    def _on_publish(self, *_args: Any) -> None:
        self._reply_acked.set()

    def _unacknowledged_replies(self) -> int:
        # paho's own record (private, but exact: a count of our own could drift across
        # reconnects, when paho sends its queue again)
        return len(getattr(self.pub.client, "_out_messages", ()))

    async def _room_for_replies(self) -> None:
        """Wait while REPLY_WINDOW replies wait for the broker's PUBACK (not while the
        replies' connection is down: paho's queue bound applies then)."""
        while self._unacknowledged_replies() >= REPLY_WINDOW and self.pub.connected.is_set():
            self._reply_acked.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._reply_acked.wait(), 0.5)

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

    def _resume_reading(self) -> None:
        if (
            self.sub.paused
            and self._inbox.qsize() <= MAX_WAITING // 2
            and self._waiting_bytes <= MAX_WAITING_BYTES // 2
        ):
            self.sub.resume_reading()

    # -- messages ---------------------------------------------------------------

    async def _process(self) -> None:
        while True:
            await self._room_for_replies()
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
        if self.client.is_connected():
            # the acks now, before another batch commits: the broker redelivers what a crash
            # left unacknowledged, and only the last batch is known to be stored already
            self.client.loop_write()
        self.publish(replies)
        self.outbox_wake.set()

    def publish(self, replies: list[Outgoing]) -> None:
        """Publish what the twin rules produced (QoS 1, not retained), and write them (with
        any acknowledgements queued before) now."""
        for reply in replies:
            info = self.pub.client.publish(reply.topic, reply.payload, qos=1)
            if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
                self.refused.add(
                    "reply",
                    f"MQTT: dropped a reply on {reply.topic[:200]}: {MAX_QUEUED_PUBLISHES} "
                    "wait for a broker that is away",
                )
                continue
            self.published += 1
            if reply.topic.endswith(DELTA_SUFFIX):
                self.deltas_sent += 1
        if self.pub.client.is_connected():
            self.pub.client.loop_write()


def _read_secret(path: str) -> str | None:
    if not path:
        return None
    try:
        return Path(path).read_text().strip()
    except OSError as exc:
        raise ConfigError([f"mqtt.password_file: cannot read {path}: {exc.strerror}"]) from None
