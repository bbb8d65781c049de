"""The :class:`Mapper` base class: a device author's hooks driven over MQTT by edgecore.

Two threads run a mapper. paho's network thread parses what arrives and puts
events on a bounded queue; the *device thread* takes them off in order and
calls every hook (``on_desired``, ``poll``, ``on_device_added``/``_removed``,
``on_stop``), so a device author never sees two hooks at once and never blocks
the network. Payload rules live in :mod:`edgeward.mapper.payloads` and topic
rules in :mod:`edgeward.mapper.topics`; this module only moves messages.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import logging
import queue
import signal
import socket
import threading
import time
import types
import uuid
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import paho.mqtt.client as mqtt

from edgeward.mapper import payloads, topics
from edgeward.mapper.payloads import BadPayload, Delta, Membership, Twin, TwinResult

log = logging.getLogger("edgeward.mapper")

#: How long a refused (or unknown-key) desired value waits before it is tried again
#: when edgecore keeps sending it in deltas.
REFUSED_RETRY_SECONDS = 30.0
#: Warnings about the same thing (garbage on one topic, one bad poll value) are logged
#: at most WARNING_BURST times per this many seconds; the next one counts the rest.
WARNING_INTERVAL_SECONDS, WARNING_BURST = 60.0, 5
#: Events waiting for the device thread; more are dropped (and logged) under a flood.
MAX_PENDING_EVENTS = 10_000
#: Messages paho keeps while the broker is away; more are refused (and logged).
MAX_QUEUED_MESSAGES = 1_000
#: Start-up twin/get and membership/get are asked again after this long without an answer,
#: doubling up to the cap.
SYNC_RETRY_FIRST, SYNC_RETRY_CAP = 3.0, 60.0
#: How long stop() waits for the last QoS 1 publishes (e.g. state offline) to be acknowledged.
FLUSH_SECONDS = 3.0


class DesiredRefused(Exception):
    """Raise from :meth:`Mapper.on_desired` to refuse a value: logged without a traceback."""


class TwinGetError(Exception):
    """Edgecore answered ``twin/get`` with an error (e.g. 404 for an unknown device)."""

    def __init__(self, device_id: str, code: int, reason: str) -> None:
        self.device_id = device_id
        self.code = code
        self.reason = reason
        super().__init__(f"twin/get for {device_id} failed: {code} {reason}")


# --- events the network thread hands to the device thread -----------------------------


@dataclass(frozen=True)
class _Connected:
    pass


@dataclass(frozen=True)
class _DeltaArrived:
    device_id: str
    delta: Delta


@dataclass(frozen=True)
class _TwinsArrived:
    """The answer to a start-up (or reconnect) twin/get."""

    device_id: str
    result: TwinResult


@dataclass(frozen=True)
class _MembershipArrived:
    full: bool  # a get result (the whole list) rather than an update
    membership: Membership


@dataclass(frozen=True)
class _Stop:
    pass


@dataclass
class _Retry:
    """A request asked again until answered: when next, and how long to wait after that."""

    due: float
    delay: float = SYNC_RETRY_FIRST

    def bump(self, now: float) -> None:
        self.due = now + self.delay
        self.delay = min(SYNC_RETRY_CAP, self.delay * 2)


@dataclass
class _Request:
    device_id: str
    created: float
    future: concurrent.futures.Future[TwinResult] | None  # None: a start-up sync


class _Throttle:
    """Says whether a warning about ``key`` may be logged now, and how many were held back.

    Up to ``burst`` warnings per key are logged in each ``interval``; the rest are
    counted and the count is mentioned by the first warning of the next interval.
    """

    def __init__(
        self, interval: float, burst: int = 5, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._interval = interval
        self._burst = burst
        self._clock = clock
        self._seen: dict[Any, list[float | int]] = {}  # key → [window start, logged, held back]
        self._lock = threading.Lock()

    def allow(self, key: Any) -> int | None:
        """None: stay quiet. Otherwise log, mentioning the returned count of held-back ones."""
        now = self._clock()
        with self._lock:
            seen = self._seen.get(key)
            if seen is None or now - seen[0] >= self._interval:
                if len(self._seen) > 4096:
                    self._seen.clear()
                self._seen[key] = [now, 1, 0]
                return int(seen[2]) if seen else 0
            if seen[1] < self._burst:
                seen[1] += 1
                return 0
            seen[2] += 1
            return None


class Mapper:
    """Serve devices to edgecore over MQTT: subclass it and override the hooks.

    Hooks (all optional; all but ``on_start`` run on the mapper's one device thread):

    - :meth:`on_desired` applies a desired value to the hardware; raising refuses it.
    - :meth:`poll` reads current values every ``poll_interval`` seconds; they are
      reported as twin ``actual`` values.
    - :meth:`on_start` / :meth:`on_stop` open and close the hardware.
    - :meth:`on_device_added` / :meth:`on_device_removed` follow the served devices.

    Helpers, callable from any thread: :meth:`report`, :meth:`set_state`,
    :meth:`get_twins`. Run it with :meth:`run` (blocks, stops on SIGTERM/Ctrl-C)
    or :meth:`start` / :meth:`stop`.

    Class attributes a subclass may set:

    - ``writable``: the keys ``on_desired`` accepts; a delta for any other key is
      logged and ignored. None (the default) passes every key to ``on_desired``.
    - ``twin_types``: ``metadata.type`` sent with each reported key (``"int"``,
      ``"float"``, ``"boolean"``, ``"string"``), which types a twin the mapper creates.
    """

    writable: ClassVar[Collection[str] | None] = None
    twin_types: ClassVar[Mapping[str, str]] = types.MappingProxyType({})

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 1883,
        *,
        devices: Iterable[str] | None = None,
        node: str | None = None,
        poll_interval: float | None = 5.0,
        username: str | None = None,
        password: str | None = None,
        ca_file: str | Path | None = None,
        cert_file: str | Path | None = None,
        key_file: str | Path | None = None,
        client_id: str | None = None,
        keepalive: int = 30,
        reconnect_delay: tuple[float, float] = (0.5, 30.0),
    ) -> None:
        """Configure the mapper; nothing connects until :meth:`start` or :meth:`run`.

        ``devices`` are ``"<namespace>/<name>"`` ids; None learns them from edgecore's
        membership of ``node`` (and follows its updates). ``poll_interval`` None never
        polls. ``ca_file`` turns TLS on (``cert_file``/``key_file`` add a client
        certificate). ``reconnect_delay`` is paho's (first, longest) wait between
        reconnection attempts.
        """
        if devices is None and node is None:
            raise ValueError("give the devices to serve, or the node whose membership to follow")
        self._static = devices is not None
        self._node = topics.check_node_name(node) if node is not None else None
        wanted = [topics.check_device_id(d) for d in devices] if devices is not None else []
        if poll_interval is not None and not poll_interval > 0:
            raise ValueError("poll_interval must be positive, or None to never poll")
        for key, kind in self.twin_types.items():
            if not payloads.valid_key(key) or kind not in payloads.TWIN_TYPES:
                raise ValueError(f"twin_types[{key!r}] = {kind!r}: not a valid key and type")
        if (cert_file is None) != (key_file is None):
            raise ValueError("cert_file and key_file go together")
        if cert_file is not None and ca_file is None:
            raise ValueError("a client certificate needs TLS: give ca_file too")

        self.host = host
        self.port = port
        self.poll_interval = poll_interval
        self._initial_devices = tuple(dict.fromkeys(wanted))
        self._devices: set[str] = set()  # served now; guarded by _lock
        self._lock = threading.Lock()
        self._events: queue.Queue[object] = queue.Queue(MAX_PENDING_EVENTS)
        self._online = threading.Event()
        self._stop_requested = threading.Event()
        self._stopped = threading.Event()
        self._started = False
        self._worker: threading.Thread | None = None
        self._in_callback = threading.local()
        self._throttle = _Throttle(WARNING_INTERVAL_SECONDS, WARNING_BURST)
        self._requests: dict[str, _Request] = {}  # our twin/get event ids; guarded by _lock
        self._reports: collections.OrderedDict[str, tuple[str, tuple[str, ...]]] = (
            collections.OrderedDict()
        )  # our recent twin/update event ids → (device, keys); guarded by _lock
        self._unacked: collections.deque[mqtt.MQTTMessageInfo] = collections.deque(maxlen=256)
        # device-thread state
        self._syncs: dict[str, _Retry] = {}
        self._membership_retry: _Retry | None = None
        self._refused: dict[tuple[str, str], tuple[str, float]] = {}
        self._next_poll = 0.0

        self._client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id or f"edgeward-mapper-{uuid.uuid4().hex[:12]}",
            clean_session=True,
        )
        self._client.enable_logger(_PahoLog(logging.getLogger("edgeward.mapper.paho")))
        if username is not None:
            self._client.username_pw_set(username, password)
        if ca_file is not None:
            self._client.tls_set(
                ca_certs=str(ca_file),
                certfile=str(cert_file) if cert_file else None,
                keyfile=str(key_file) if key_file else None,
            )
        self._keepalive = keepalive
        self._client.reconnect_delay_set(*reconnect_delay)  # type: ignore[arg-type]
        self._client.max_queued_messages_set(MAX_QUEUED_MESSAGES)
        self._client.on_socket_open = self._guard(self._on_socket_open)
        self._client.on_connect = self._guard(self._on_connect)
        self._client.on_connect_fail = self._guard(self._on_connect_fail)
        self._client.on_disconnect = self._guard(self._on_disconnect)
        self._client.on_subscribe = self._guard(self._on_subscribe)
        self._client.on_message = self._guard(self._on_message)

    # --- hooks a subclass overrides ----------------------------------------------------

    def on_start(self) -> None:
        """Open the hardware. Runs in the thread that calls start()/run(), before connecting;
        raising aborts the start."""

    def on_stop(self) -> None:
        """Close the hardware. Runs last on the device thread, while still connected."""

    def on_desired(self, device_id: str, name: str, value: str) -> None:
        """Apply ``value`` to property ``name``; it is then reported as the actual value.

        Raise to refuse it (:class:`DesiredRefused` logs just your message, anything
        else also a traceback); the mapper keeps running and tries the same value
        again after :data:`REFUSED_RETRY_SECONDS` if edgecore still wants it.
        """
        raise DesiredRefused(f"{type(self).__name__} has no writable properties")

    def poll(self, device_id: str) -> Mapping[str, str]:
        """Read the current values of ``device_id``; they are reported as ``actual``."""
        return {}

    def on_device_added(self, device_id: str) -> None:
        """``device_id`` is now served: from the start, or since membership added it."""

    def on_device_removed(self, device_id: str) -> None:
        """Membership removed ``device_id``: it is no longer polled or given desired values."""

    # --- helpers -----------------------------------------------------------------------

    @property
    def devices(self) -> frozenset[str]:
        """The devices served now."""
        with self._lock:
            return frozenset(self._devices)

    @property
    def connected(self) -> bool:
        return self._online.is_set()

    def report(self, device_id: str, values: Mapping[str, str]) -> str | None:
        """Publish ``values`` as twin ``actual`` values of ``device_id`` (``D/twin/update``).

        Keys or values outside the twin alphabet are logged and left out. Returns the
        request's event id, or None when nothing was left to send.
        """
        topics.check_device_id(device_id)
        if not isinstance(values, Mapping):
            raise TypeError(f"report() takes a mapping of str to str, not {type(values).__name__}")
        good: dict[str, str] = {}
        for key, value in values.items():
            if not payloads.valid_key(key):
                self._warn(
                    (device_id, "bad key", key),
                    "%s: not reporting key %r: keys are 1-128 of [a-zA-Z0-9-_.,:/@#]",
                    device_id,
                    key,
                )
            elif not payloads.valid_value(value):
                self._warn(
                    (device_id, "bad value", key),
                    "%s: not reporting %s=%r: values are strings of up to 512 of "
                    "[a-zA-Z0-9-_.,:/@#]",
                    device_id,
                    key,
                    value,
                )
            else:
                good[key] = value
        if not good:
            return None
        event_id = payloads.new_event_id()
        body = payloads.update_request(
            good, self.twin_types, event_id=event_id, timestamp=payloads.now_ms()
        )
        with self._lock:
            self._reports[event_id] = (device_id, tuple(good))
            while len(self._reports) > 256:
                self._reports.popitem(last=False)
        self._publish(topics.device_topic(device_id, topics.TWIN_UPDATE), body)
        return event_id

    def set_state(self, device_id: str, state: str) -> None:
        """Publish the device's state (``D/state/update``): online, offline, ok,
        disconnected, unknown or unhealthy (edgecore keeps them as online, offline,
        unknown or unhealthy)."""
        topics.check_device_id(device_id)
        if not isinstance(state, str) or state.lower() not in payloads.DEVICE_STATES:
            raise ValueError(f"state {state!r} is not one of {sorted(payloads.DEVICE_STATES)}")
        body = payloads.state_request(
            state, event_id=payloads.new_event_id(), timestamp=payloads.now_ms()
        )
        self._publish(topics.device_topic(device_id, topics.STATE_UPDATE), body)

    def get_twins(self, device_id: str, timeout: float = 5.0) -> dict[str, Twin]:
        """Ask edgecore for the twins of ``device_id`` (``D/twin/get``) and wait for them.

        Raises TimeoutError without an answer in ``timeout`` seconds, and
        :class:`TwinGetError` on an error answer. ``device_id`` must be served (the
        answer comes on a topic the mapper subscribes for it). Not from an MQTT
        callback; fine from any hook.
        """
        topics.check_device_id(device_id)
        if getattr(self._in_callback, "active", False):
            raise RuntimeError("get_twins() would deadlock inside an MQTT callback")
        with self._lock:
            if device_id not in self._devices:
                raise ValueError(f"{device_id} is not served by this mapper")
        future: concurrent.futures.Future[TwinResult] = concurrent.futures.Future()
        event_id = self._ask_twins(device_id, future)
        try:
            result = future.result(timeout)
        except concurrent.futures.TimeoutError:
            raise TimeoutError(f"no twin/get answer for {device_id} in {timeout} s") from None
        finally:
            with self._lock:
                self._requests.pop(event_id, None)
        if result.code is not None:
            raise TwinGetError(device_id, result.code, result.reason)
        return {key: twin for key, twin in result.twins.items() if twin is not None}

    # --- running -----------------------------------------------------------------------

    def start(self) -> None:
        """Call on_start, connect in the background and start serving; returns at once."""
        if self._started:
            raise RuntimeError("a Mapper starts once; make a new one to start again")
        self._started = True
        self.on_start()
        self._client.connect_async(self.host, self.port, keepalive=self._keepalive)
        self._client.loop_start()
        self._worker = threading.Thread(target=self._work, name="mapper-device", daemon=True)
        self._worker.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving: on_stop runs, pending publishes get a moment, then disconnect.

        Waits up to ``timeout`` seconds for that unless called from a hook, where it
        only asks.
        """
        self._stop_requested.set()
        with contextlib.suppress(queue.Full):  # the device thread checks the flag too
            self._events.put_nowait(_Stop())
        if not self._started or self._worker is None:
            self._stopped.set()
            return
        if threading.current_thread() is self._worker or getattr(
            self._in_callback, "active", False
        ):
            return
        self._stopped.wait(timeout)

    def run(self) -> None:
        """Start and serve until stop(), SIGTERM or Ctrl-C; then stop cleanly."""
        previous: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                previous[signum] = signal.signal(signum, self._on_signal)
        try:
            self.start()
            while not self._stopped.wait(0.5):
                pass
        except KeyboardInterrupt:
            log.info("interrupted")
        finally:
            self.stop()
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _on_signal(self, signum: int, frame: types.FrameType | None) -> None:
        log.info("stopping on %s", signal.Signals(signum).name)
        self._stop_requested.set()
        with contextlib.suppress(queue.Full):
            self._events.put_nowait(_Stop())

    # --- the device thread -------------------------------------------------------------

    def _work(self) -> None:
        try:
            for device_id in self._initial_devices:
                self._add_device(device_id)
            while not self._stop_requested.is_set():
                try:
                    event = self._events.get(timeout=self._idle_time())
                except queue.Empty:
                    event = None
                if isinstance(event, _Stop):
                    break
                try:
                    if event is not None:
                        self._handle(event)
                    self._tick()
                except Exception:
                    log.exception("mapper: unexpected error; continuing")
        finally:
            self._shutdown()

    def _idle_time(self) -> float:
        now = time.monotonic()
        wake = now + 1.0
        if self._online.is_set():
            if self.poll_interval is not None:
                wake = min(wake, self._next_poll)
            for retry in self._syncs.values():
                wake = min(wake, retry.due)
            if self._membership_retry is not None:
                wake = min(wake, self._membership_retry.due)
        return max(0.0, wake - now)

    def _handle(self, event: object) -> None:
        if isinstance(event, _Connected):
            self._next_poll = time.monotonic()
            now = time.monotonic()
            if not self._static:
                self._membership_retry = _Retry(due=now)
            for device_id in self.devices:
                self._syncs[device_id] = _Retry(due=now)
        elif isinstance(event, _DeltaArrived):
            if event.device_id in self.devices:
                self._apply(event.device_id, event.delta.delta, "delta")
        elif isinstance(event, _TwinsArrived):
            self._converge(event.device_id, event.result)
        elif isinstance(event, _MembershipArrived):
            self._follow_membership(event.full, event.membership)

    def _tick(self) -> None:
        if not self._online.is_set():
            return
        now = time.monotonic()
        if self._membership_retry is not None and self._membership_retry.due <= now:
            assert self._node is not None
            self._membership_retry.bump(now)
            body = payloads.get_request(
                event_id=payloads.new_event_id(), timestamp=payloads.now_ms()
            )
            self._publish(topics.membership_get(self._node), body)
        for device_id, retry in list(self._syncs.items()):
            if retry.due <= now:
                retry.bump(now)
                self._ask_twins(device_id, None)
        if self.poll_interval is not None and self._next_poll <= now:
            self._next_poll = now + self.poll_interval
            for device_id in sorted(self.devices):
                self._poll_one(device_id)
        with self._lock:
            stale = [k for k, r in self._requests.items() if now - r.created > 2 * SYNC_RETRY_CAP]
            for key in stale:
                del self._requests[key]

    def _poll_one(self, device_id: str) -> None:
        try:
            values = self.poll(device_id)
        except Exception as exc:
            self._warn(
                (device_id, "poll"),
                "%s: poll failed: %r",
                device_id,
                exc,
                exc_info=True,
            )
            return
        if values is None:
            return
        if not isinstance(values, Mapping):
            self._warn(
                (device_id, "poll type"),
                "%s: poll returned %s, not a dict of str to str",
                device_id,
                type(values).__name__,
            )
            return
        if values:
            self.report(device_id, values)

    def _apply(self, device_id: str, desired: Mapping[str, str], source: str) -> None:
        """Hand each desired value to on_desired; report the ones it accepted as actual."""
        applied: dict[str, str] = {}
        now = time.monotonic()
        for name, value in desired.items():
            refused = self._refused.get((device_id, name))
            if refused is not None and refused[0] == value and now < refused[1]:
                log.debug(
                    "%s: %s=%s was refused recently; not retrying yet", device_id, name, value
                )
                continue
            self._refused.pop((device_id, name), None)
            if self.writable is not None and name not in self.writable:
                self._warn(
                    (device_id, "not writable", name),
                    "%s: ignoring desired %s=%s from %s: not a writable property",
                    device_id,
                    name,
                    value,
                    source,
                )
                self._refused[(device_id, name)] = (value, now + REFUSED_RETRY_SECONDS)
                continue
            try:
                self.on_desired(device_id, name, value)
            except DesiredRefused as exc:
                log.warning("%s: refused desired %s=%s: %s", device_id, name, value, exc)
                self._refused[(device_id, name)] = (value, now + REFUSED_RETRY_SECONDS)
            except Exception as exc:
                log.warning(
                    "%s: refused desired %s=%s: on_desired raised %r",
                    device_id,
                    name,
                    value,
                    exc,
                    exc_info=True,
                )
                self._refused[(device_id, name)] = (value, now + REFUSED_RETRY_SECONDS)
            else:
                log.info("%s: applied desired %s=%s (%s)", device_id, name, value, source)
                applied[name] = value
        if applied:
            self.report(device_id, applied)

    def _converge(self, device_id: str, result: TwinResult) -> None:
        if device_id not in self.devices or device_id not in self._syncs:
            return
        if result.code is not None:
            self._warn(
                (device_id, "twin/get failed"),
                "%s: twin/get failed (%s %s); asking again later",
                device_id,
                result.code,
                result.reason,
            )
            return
        del self._syncs[device_id]
        wanted = {
            key: twin.expected
            for key, twin in result.twins.items()
            if twin is not None and twin.expected and twin.expected != (twin.actual or "")
        }
        log.info("%s: in sync with edgecore (%d value(s) to apply)", device_id, len(wanted))
        if wanted:
            self._apply(device_id, wanted, "twin/get")

    def _follow_membership(self, full: bool, membership: Membership) -> None:
        if self._static:
            return
        if full:
            self._membership_retry = None
            wanted = {ref.id for ref in membership.devices}
            for device_id in sorted(self.devices - wanted):
                self._remove_device(device_id)
            for device_id in sorted(wanted - self.devices):
                self._add_device(device_id)
        else:
            for ref in membership.removed:
                if ref.id in self.devices:
                    self._remove_device(ref.id)
            for ref in membership.added:
                if ref.id not in self.devices:
                    self._add_device(ref.id)

    def _add_device(self, device_id: str) -> None:
        with self._lock:
            self._devices.add(device_id)
        log.info("%s: serving", device_id)
        if self._online.is_set():
            self._subscribe(self._device_topics([device_id]))
        self._syncs[device_id] = _Retry(due=time.monotonic())
        try:
            self.on_device_added(device_id)
        except Exception:
            log.exception("%s: on_device_added failed", device_id)

    def _remove_device(self, device_id: str) -> None:
        with self._lock:
            self._devices.discard(device_id)
        log.info("%s: no longer served", device_id)
        if self._online.is_set():
            self._client.unsubscribe([t for t, _ in self._device_topics([device_id])])
        self._syncs.pop(device_id, None)
        for key in [k for k in self._refused if k[0] == device_id]:
            del self._refused[key]
        try:
            self.on_device_removed(device_id)
        except Exception:
            log.exception("%s: on_device_removed failed", device_id)

    def _shutdown(self) -> None:
        try:
            self.on_stop()
        except Exception:
            log.exception("mapper: on_stop failed")
        deadline = time.monotonic() + FLUSH_SECONDS
        while self._online.is_set() and time.monotonic() < deadline:
            if all(_published(info) for info in list(self._unacked)):
                break
            time.sleep(0.02)
        try:
            self._client.disconnect()
            self._client.loop_stop()
        finally:
            with self._lock:
                pending = list(self._requests.values())
                self._requests.clear()
            for request in pending:
                if request.future is not None and not request.future.done():
                    request.future.set_exception(RuntimeError("the mapper stopped"))
            self._online.clear()
            self._stopped.set()
            log.info("mapper stopped")

    # --- MQTT: publishing and subscribing (any thread) ---------------------------------

    def _publish(self, topic: str, body: Mapping[str, Any]) -> None:
        info = self._client.publish(topic, payloads.encode(body), qos=1)
        if info.rc == mqtt.MQTT_ERR_SUCCESS:
            self._unacked.append(info)
        elif info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
            self._warn(
                ("queue full",),
                "dropping a message to %s: %d messages already wait for the broker",
                topic,
                MAX_QUEUED_MESSAGES,
            )
        # MQTT_ERR_NO_CONN: paho keeps the message and sends it once connected.

    def _ask_twins(
        self, device_id: str, future: concurrent.futures.Future[TwinResult] | None
    ) -> str:
        event_id = payloads.new_event_id()
        with self._lock:
            self._requests[event_id] = _Request(device_id, time.monotonic(), future)
        body = payloads.get_request(event_id=event_id, timestamp=payloads.now_ms())
        self._publish(topics.device_topic(device_id, topics.TWIN_GET), body)
        return event_id

    def _device_topics(self, device_ids: Iterable[str]) -> list[tuple[str, int]]:
        return [
            (topics.device_topic(d, suffix), 1)
            for d in device_ids
            for suffix in topics.DEVICE_SUBSCRIPTIONS
        ]

    def _subscribe(self, wanted: list[tuple[str, int]]) -> None:
        for i in range(0, len(wanted), 64):
            self._client.subscribe(wanted[i : i + 64])

    # --- MQTT callbacks (paho's network thread) ----------------------------------------

    def _guard(self, callback: Callable[..., None]) -> Callable[..., None]:
        """Never let an exception escape into paho, whose network thread it would end."""

        def guarded(*args: Any) -> None:
            self._in_callback.active = True
            try:
                callback(*args)
            except Exception:
                log.exception("mapper: error in MQTT callback %s", callback.__name__)
            finally:
                self._in_callback.active = False

        return guarded

    def _on_socket_open(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        with contextlib.suppress(OSError, AttributeError):  # not a TCP socket
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        if reason.is_failure:
            self._warn(("connect",), "broker %s:%d refused us: %s", self.host, self.port, reason)
            return
        log.info("connected to %s:%d", self.host, self.port)
        self._online.set()
        wanted = [(topics.UNPARSEABLE_UPDATE_RESULT, 1)]
        if not self._static:
            assert self._node is not None
            wanted += [
                (topics.membership_get_result(self._node), 1),
                (topics.membership_updated(self._node), 1),
            ]
        wanted += self._device_topics(sorted(self.devices))
        self._subscribe(wanted)
        self._enqueue(_Connected())

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        self._warn(("connect",), "cannot reach the broker at %s:%d; retrying", self.host, self.port)

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        self._online.clear()
        if not self._stop_requested.is_set():
            log.warning("lost the broker at %s:%d (%s); reconnecting", self.host, self.port, reason)

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, reasons: list[Any], properties: Any
    ) -> None:
        failed = [r for r in reasons if r.is_failure]
        if failed:
            log.error("the broker refused %d subscription(s): %s", len(failed), failed[0])

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        topic = message.topic
        try:
            self._route(topic, message.payload)
        except BadPayload as exc:
            self._warn(("bad payload", topic), "ignoring a message on %s: %s", topic, exc.reason)

    def _route(self, topic: str, payload: bytes) -> None:
        if self._node is not None and not self._static:
            if topic == topics.membership_get_result(self._node):
                self._enqueue(_MembershipArrived(True, payloads.parse_membership(payload)))
                return
            if topic == topics.membership_updated(self._node):
                self._enqueue(_MembershipArrived(False, payloads.parse_membership(payload)))
                return
        parsed = topics.parse_device_topic(topic)
        if parsed is None:
            return
        device_id, suffix = parsed
        if device_id and device_id not in self.devices:
            return  # a late message for a device no longer served
        if suffix == topics.TWIN_UPDATE_DELTA:
            self._enqueue(_DeltaArrived(device_id, payloads.parse_delta(payload)))
        elif suffix == topics.TWIN_UPDATE_RESULT:
            self._update_result(device_id, payloads.parse_twin_result(payload))
        elif suffix == topics.TWIN_GET_RESULT:
            self._get_result(device_id, payloads.parse_twin_result(payload))

    def _update_result(self, device_id: str, result: TwinResult) -> None:
        if result.code is None:
            return
        with self._lock:
            ours = self._reports.get(result.event_id)
        if ours is not None:
            self._warn(
                ("update refused", ours[0], result.code, result.reason),
                "%s: edgecore refused our report of %s: %s %s",
                ours[0],
                ", ".join(ours[1]),
                result.code,
                result.reason,
            )
        elif device_id:
            self._warn(
                ("update refused", device_id, result.code, result.reason),
                "%s: edgecore refused a twin update: %s %s",
                device_id,
                result.code,
                result.reason,
            )
        # the empty-id topic also carries other clients' errors: those are not ours to log

    def _get_result(self, device_id: str, result: TwinResult) -> None:
        with self._lock:
            request = self._requests.get(result.event_id)
            if request is None or request.device_id != device_id:
                return  # someone else's get
            del self._requests[result.event_id]
        if request.future is not None:
            if not request.future.done():
                request.future.set_result(result)
        else:
            self._enqueue(_TwinsArrived(device_id, result))

    def _enqueue(self, event: object) -> None:
        try:
            self._events.put_nowait(event)
        except queue.Full:
            self._warn(
                ("events full",),
                "dropping a %s: %d events already wait for the device thread",
                type(event).__name__,
                MAX_PENDING_EVENTS,
            )

    # --- logging -----------------------------------------------------------------------

    def _warn(self, key: Any, message: str, *args: Any, exc_info: bool = False) -> None:
        suppressed = self._throttle.allow(key)
        if suppressed is None:
            return
        if suppressed:
            message += " (and %d similar in the last %d s)"
            args = (*args, suppressed, int(WARNING_INTERVAL_SECONDS))
        log.warning(message, *args, exc_info=exc_info)


class _PahoLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """paho's own log lines, all at DEBUG: what matters (lost connections, refusals) the
    mapper logs itself, and paho reports a routine reconnect as an ERROR."""

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        self.logger.debug(msg, *args)


def _published(info: mqtt.MQTTMessageInfo) -> bool:
    try:
        return info.is_published()
    except (RuntimeError, ValueError):
        return True  # never queued: nothing to wait for
