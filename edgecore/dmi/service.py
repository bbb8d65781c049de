"""DMI: KubeEdge's gRPC API for mappers made with its mapper-framework (KubeEdge 1.15 on).

edgecore serves ``DeviceManagerService`` on a unix socket (``dmi.socket``):

- ``MapperRegister``: a mapper says its protocol and the socket it serves on; it gets the
  Devices bound to this node whose ``spec.protocol.protocolName`` is that protocol, and
  their models. From then on those devices are served by that mapper alone: MQTT
  messages about them are refused, and no MQTT deltas are sent for them.
- ``ReportDeviceStatus`` and ``ReportDeviceStates`` go through the same twin rules, twin
  state and outbox as a mapper's MQTT twin and state updates (edgecore.twins), and are
  refused the same way (a gRPC status with the reason).

As a client of each registered mapper's socket, edgecore calls ``CreateDeviceModel`` and
``RegisterDevice`` for devices bound later, ``UpdateDevice`` when a Device or its desired
values change, and ``RemoveDevice`` / ``RemoveDeviceModel`` when they go; never
``GetDevice``. A mapper that cannot be reached is dropped (its devices go back to MQTT)
until it registers again, which gives it its devices afresh. docs/dmi.md.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.server import Server, Stream

from edgecore.dmi import api_grpc
from edgecore.dmi import api_pb2 as pb
from edgecore.dmi.convert import (
    device_message,
    model_message,
    model_of,
    protocol_of,
    state_update,
    twin_update,
)
from edgecore.drops import Drops
from edgecore.store import Applied
from edgecore.twins import Inbound, Outgoing, TwinService
from edgeward.kinds import DEVICE, DEVICE_MODEL, dns_label_problem

log = logging.getLogger(__name__)

#: Seconds a call to a mapper may take.
CALL_TIMEOUT = 5.0
#: What a mapper may send in one message.
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
#: Mapper protocol names and socket paths, at most.
MAX_NAME = 253
#: Mappers (protocols) registered at once, at most: each holds a channel.
MAX_MAPPERS = 64
MAX_PATH = 108  # a unix socket path's limit
_CODES = {400: Status.INVALID_ARGUMENT, 404: Status.NOT_FOUND, 409: Status.FAILED_PRECONDITION}


@dataclass
class Mapper:
    name: str
    protocol: str
    address: str
    channel: Channel
    devices: set[str] = field(default_factory=set)
    models: set[str] = field(default_factory=set)

    @property
    def stub(self) -> api_grpc.DeviceMapperServiceStub:
        return api_grpc.DeviceMapperServiceStub(self.channel)


class DmiService:
    """``call(fn, *args)`` runs ``fn`` on the store's thread (edgecore.storethread)."""

    def __init__(
        self,
        socket_path: str,
        call: Callable[..., Any],
        twins: TwinService,
        outbox_wake: asyncio.Event,
        clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self.socket_path = socket_path
        self._call = call
        self.twins = twins
        self._outbox_wake = outbox_wake
        self._clock_ms = clock_ms
        self.mappers: dict[str, Mapper] = {}  # by protocol
        self._changes: asyncio.Queue[list[Applied]] = asyncio.Queue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.refused = Drops(log)

    # -- running ------------------------------------------------------------------------

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.twins.on_changes = self._changes_committed
        path = Path(self.socket_path)
        server = Server([_Manager(self)])
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.is_socket():
                path.unlink()  # left by an edgecore that did not stop cleanly
            await server.start(path=self.socket_path)
            os.chmod(self.socket_path, 0o660)
        except OSError as exc:
            # the gateway's MQTT devices matter more than a mapper API: edgecore goes on
            log.error(
                "DMI: cannot serve on %s: %s; edgecore runs on without DMI (docs/dmi.md)",
                self.socket_path,
                exc.strerror or exc,
            )
            return
        log.info("DMI: serving mappers on %s", self.socket_path)
        try:
            while True:
                for change in await self._changes.get():
                    try:
                        await self._apply(change)
                    except Exception:  # one change a mapper cannot take stops nothing else
                        log.exception(
                            "DMI: could not pass %s %s/%s on to its mapper",
                            change.kind, change.namespace, change.name,
                        )  # fmt: skip
        finally:
            server.close()
            await server.wait_closed()
            for mapper in self.mappers.values():
                mapper.channel.close()
            path.unlink(missing_ok=True)

    def _changes_committed(self, applied: list[Applied]) -> None:
        """On the store's thread, once a hub batch has committed."""
        relevant = [a for a in applied if a.kind in (DEVICE.name, DEVICE_MODEL.name)]
        if relevant and self._loop is not None:
            self._loop.call_soon_threadsafe(self._changes.put_nowait, relevant)

    # -- edgecore as the mapper's client ---------------------------------------------------

    async def _apply(self, change: Applied) -> None:
        if change.kind == DEVICE_MODEL.name:
            if change.after is None:
                model_id = f"{change.namespace}/{change.name}"
                for mapper in list(self.mappers.values()):
                    if model_id in mapper.models:
                        request = pb.RemoveDeviceModelRequest(
                            modelName=change.name, modelNamespace=change.namespace
                        )
                        if await self._send(mapper, "RemoveDeviceModel", request):
                            mapper.models.discard(model_id)
            return
        device_id = f"{change.namespace}/{change.name}"
        before, after = protocol_of(change.before), protocol_of(change.after)
        old = self.mappers.get(before)
        if (
            old is not None
            and device_id in old.devices
            and (change.after is None or after != before)
        ):
            request = pb.RemoveDeviceRequest(
                deviceName=change.name, deviceNamespace=change.namespace
            )
            await self._send(old, "RemoveDevice", request)
            old.devices.discard(device_id)
            self.twins.dmi_served.pop(device_id, None)
        mapper = self.mappers.get(after) if change.after is not None else None
        if mapper is None or change.after is None:
            return
        model_name = model_of(change.after)
        model_id = f"{change.namespace}/{model_name}"
        if model_name and model_id not in mapper.models:
            model = await self._call(
                self.twins.store.get_object, DEVICE_MODEL.name, change.namespace, model_name
            )
            if model is not None:
                request = pb.CreateDeviceModelRequest(model=model_message(model))
                if not await self._send(mapper, "CreateDeviceModel", request):
                    return
                mapper.models.add(model_id)
        device = device_message(change.after)
        if device_id in mapper.devices:
            await self._send(mapper, "UpdateDevice", pb.UpdateDeviceRequest(device=device))
        elif await self._send(mapper, "RegisterDevice", pb.RegisterDeviceRequest(device=device)):
            mapper.devices.add(device_id)
            self.twins.dmi_served[device_id] = mapper.name

    async def _send(self, mapper: Mapper, method: str, request: Any) -> bool:
        """Call ``method`` on the mapper; a mapper that cannot be reached is dropped."""
        if self.mappers.get(mapper.protocol) is not mapper:
            return False  # dropped or replaced meanwhile
        try:
            await getattr(mapper.stub, method)(request, timeout=CALL_TIMEOUT)
            return True
        except GRPCError as exc:
            if exc.status is not Status.UNAVAILABLE:
                self.refused.add(
                    f"{mapper.name} {method}",
                    f"DMI: mapper {mapper.name} refused {method}: {exc.status.name} {exc.message}",
                )
                return False
            reason = f"{exc.status.name} {exc.message}"
        except Exception as exc:  # refused, reset, timed out, a broken stream: all "gone"
            reason = str(exc) or type(exc).__name__
        log.warning(
            "DMI: mapper %s (%s) cannot be reached (%s): its devices are served over MQTT "
            "again until it registers anew",
            mapper.name,
            mapper.address,
            reason,
        )
        self._drop(mapper)
        return False

    def _drop(self, mapper: Mapper) -> None:
        if self.mappers.get(mapper.protocol) is mapper:
            del self.mappers[mapper.protocol]
        for device_id in mapper.devices:
            if self.twins.dmi_served.get(device_id) == mapper.name:
                del self.twins.dmi_served[device_id]
        mapper.channel.close()

    # -- edgecore as the mapper's server ----------------------------------------------------

    async def register(self, request: pb.MapperRegisterRequest) -> pb.MapperRegisterResponse:
        info = request.mapper
        protocol, name = info.protocol, info.name or info.protocol
        address = info.address.decode("utf-8", "replace")
        if not protocol or len(protocol) > MAX_NAME or len(name) > MAX_NAME:
            raise GRPCError(Status.INVALID_ARGUMENT, "mapper.protocol must be 1 to 253 characters")
        if not address.startswith("/") or len(address.encode()) > MAX_PATH or "\0" in address:
            raise GRPCError(
                Status.INVALID_ARGUMENT,
                "mapper.address must be the absolute path of the mapper's unix socket",
            )
        if protocol not in self.mappers and len(self.mappers) >= MAX_MAPPERS:
            raise GRPCError(
                Status.RESOURCE_EXHAUSTED,
                f"{MAX_MAPPERS} mappers are registered already, one per protocol",
            )
        devices = await self._call(self._devices_of, protocol)
        models = await self._call(self._models_of, devices)
        previous = self.mappers.get(protocol)
        if previous is not None:
            self._drop(previous)
        mapper = Mapper(name, protocol, address, Channel(path=address))
        mapper.devices = {f"{d['metadata']['namespace']}/{d['metadata']['name']}" for d in devices}
        mapper.models = {f"{m['metadata']['namespace']}/{m['metadata']['name']}" for m in models}
        self.mappers[protocol] = mapper
        for device_id in mapper.devices:
            self.twins.dmi_served[device_id] = name
        log.info(
            "DMI: mapper %s (protocol %s, %s) registered: %d devices", name, protocol, address,
            len(devices),
        )  # fmt: skip
        if not request.withData:
            return pb.MapperRegisterResponse()
        return pb.MapperRegisterResponse(
            modelList=[model_message(m) for m in models],
            deviceList=[device_message(d) for d in devices],
        )

    def _devices_of(self, protocol: str) -> list[dict[str, Any]]:
        """On the store's thread: the cached Devices (all bound here) of ``protocol``."""
        found = [d for d in self.twins.store.objects(DEVICE.name) if protocol_of(d) == protocol]
        return sorted(found, key=lambda d: (d["metadata"]["namespace"], d["metadata"]["name"]))

    def _models_of(self, devices: list[dict[str, Any]]) -> list[dict[str, Any]]:
        wanted = sorted({(d["metadata"]["namespace"], model_of(d)) for d in devices if model_of(d)})
        found = (self.twins.store.get_object(DEVICE_MODEL.name, ns, n) for ns, n in wanted)
        return [m for m in found if m is not None]

    async def report(self, namespace: str, name: str, topic_payload: tuple[str, bytes]) -> None:
        """A mapper's report, through the twin rules as its MQTT form would go."""
        device_id = f"{namespace or 'default'}/{name}"
        for what, value in (("deviceNamespace", namespace or "default"), ("deviceName", name)):
            if (problem := dns_label_problem(value)) is not None:
                raise GRPCError(Status.INVALID_ARGUMENT, f"{what}: {problem}")
        if self.twins.twin(device_id) is None:
            raise GRPCError(Status.NOT_FOUND, f"device {device_id} is not bound to this node")
        topic, payload = topic_payload
        if len(payload) > MAX_MESSAGE_BYTES:
            raise GRPCError(Status.RESOURCE_EXHAUSTED, "the report is larger than 4 MiB")
        replies = await self._call(
            self.twins.handle_messages, [Inbound(topic, payload, via_dmi=True)]
        )
        self._outbox_wake.set()
        refusal = _refusal(replies, topic)
        if refusal is not None:
            code, reason = refusal
            raise GRPCError(_CODES.get(code, Status.UNAVAILABLE), reason)


def _refusal(replies: list[Outgoing], topic: str) -> tuple[int, str] | None:
    """(code, reason) of the error result the twin rules answered ``topic`` with, if any."""
    for reply in replies:
        if reply.topic.endswith("/result") and (
            reply.topic.startswith(topic) or reply.topic.startswith("$hw/events/device//")
        ):
            try:
                body = json.loads(reply.payload)
            except ValueError:
                continue
            if isinstance(body, dict) and isinstance(body.get("code"), int):
                return body["code"], str(body.get("reason", ""))
    return None


async def _receive(stream: Stream) -> Any:
    """The request of a unary call, refused before it is read when its length prefix says it
    is larger than MAX_MESSAGE_BYTES. grpclib's own ``recv_message`` reads a message of any
    length (up to 4 GiB) into memory before anyone can look at it, so this reads gRPC's
    5-byte prefix itself, through the Stream's protocol stream and codec (grpclib 0.4)."""
    raw = stream._stream
    prefix = await raw.recv_data(5)
    if len(prefix) < 5:
        raise GRPCError(Status.INVALID_ARGUMENT, "the request has no message")
    compressed, length = struct.unpack(">?I", prefix)
    if compressed:
        raise GRPCError(Status.UNIMPLEMENTED, "compressed messages are not taken")
    if length > MAX_MESSAGE_BYTES:
        raise GRPCError(
            Status.RESOURCE_EXHAUSTED,
            f"the request is {length} bytes, more than {MAX_MESSAGE_BYTES}: not read",
        )
    try:
        return stream._codec.decode(await raw.recv_data(length), stream._recv_type)
    except Exception as exc:  # a message that does not parse as its type
        raise GRPCError(Status.INVALID_ARGUMENT, f"the request does not parse: {exc}") from None


class _Manager(api_grpc.DeviceManagerServiceBase):
    """The gRPC handlers; the work is DmiService's."""

    def __init__(self, service: DmiService) -> None:
        self.service = service

    async def MapperRegister(self, stream: Stream) -> None:
        request = await _receive(stream)
        await stream.send_message(await self.service.register(request))

    async def ReportDeviceStatus(self, stream: Stream) -> None:
        request = await _receive(stream)
        namespace = request.deviceNamespace or "default"
        now = self.service._clock_ms()
        update = twin_update(namespace, request.deviceName, request.reportedDevice, now)
        await self.service.report(namespace, request.deviceName, update)
        await stream.send_message(pb.ReportDeviceStatusResponse())

    async def ReportDeviceStates(self, stream: Stream) -> None:
        request = await _receive(stream)
        namespace = request.deviceNamespace or "default"
        now = self.service._clock_ms()
        update = state_update(namespace, request.deviceName, request.state, now)
        await self.service.report(namespace, request.deviceName, update)
        await stream.send_message(pb.ReportDeviceStatesResponse())
