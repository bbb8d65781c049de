"""A DMI mapper for tests, written with the same protocol definitions as edgecore's (so the
wire is KubeEdge's): it serves DeviceMapperService on a unix socket of its own, in a
process of its own that records every call edgecore makes (so it can go away as a mapper
does: killed), and calls edgecore's DeviceManagerService to register and report from the
test's process, on an event loop in a thread; the test calls it synchronously."""

from __future__ import annotations

import asyncio
import base64
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from grpclib.client import Channel
from grpclib.server import Server, Stream

from edgecore.dmi import api_grpc
from edgecore.dmi import api_pb2 as pb

T = TypeVar("T")


#: What each call edgecore makes carries.
REQUESTS = {
    "RegisterDevice": pb.RegisterDeviceRequest,
    "RemoveDevice": pb.RemoveDeviceRequest,
    "UpdateDevice": pb.UpdateDeviceRequest,
    "CreateDeviceModel": pb.CreateDeviceModelRequest,
    "RemoveDeviceModel": pb.RemoveDeviceModelRequest,
    "UpdateDeviceModel": pb.UpdateDeviceModelRequest,
    "GetDevice": pb.GetDeviceRequest,
}


class _Recorder(api_grpc.DeviceMapperServiceBase):
    """Writes each call as a line: the method, a tab, the request's bytes in base64."""

    def __init__(self, calls: Path) -> None:
        self.calls = calls

    async def _take(self, name: str, stream: Stream, reply: Any) -> None:
        request = await stream.recv_message()
        with open(self.calls, "a") as f:
            f.write(f"{name}\t{base64.b64encode(request.SerializeToString()).decode()}\n")
        await stream.send_message(reply)

    async def RegisterDevice(self, stream: Stream) -> None:
        await self._take("RegisterDevice", stream, pb.RegisterDeviceResponse())

    async def RemoveDevice(self, stream: Stream) -> None:
        await self._take("RemoveDevice", stream, pb.RemoveDeviceResponse())

    async def UpdateDevice(self, stream: Stream) -> None:
        await self._take("UpdateDevice", stream, pb.UpdateDeviceResponse())

    async def CreateDeviceModel(self, stream: Stream) -> None:
        await self._take("CreateDeviceModel", stream, pb.CreateDeviceModelResponse())

    async def RemoveDeviceModel(self, stream: Stream) -> None:
        await self._take("RemoveDeviceModel", stream, pb.RemoveDeviceModelResponse())

    async def UpdateDeviceModel(self, stream: Stream) -> None:
        await self._take("UpdateDeviceModel", stream, pb.UpdateDeviceModelResponse())

    async def GetDevice(self, stream: Stream) -> None:
        await self._take("GetDevice", stream, pb.GetDeviceResponse())


async def _serve(socket: Path, calls: Path) -> None:
    socket.unlink(missing_ok=True)
    server = Server([_Recorder(calls)])
    await server.start(path=str(socket))
    await server.wait_closed()


class DmiMapper:
    """``edge_socket``: edgecore's DMI socket; ``socket``: the one this mapper serves."""

    def __init__(self, edge_socket: Path, socket: Path, protocol: str) -> None:
        self.edge_socket, self.socket, self.protocol = edge_socket, socket, protocol
        self.calls_file = socket.with_suffix(".calls")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._server: subprocess.Popen[bytes] | None = None

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float = 20) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def serve(self) -> None:
        """Start serving DeviceMapperService (a process of its own)."""
        self.socket.unlink(missing_ok=True)
        self._server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.support.dmimapper",
                str(self.socket),
                str(self.calls_file),
            ]
        )
        deadline = time.monotonic() + 20
        while not self.socket.is_socket():
            if time.monotonic() > deadline or self._server.poll() is not None:
                raise AssertionError("the test mapper did not start serving")
            time.sleep(0.05)

    def stop_serving(self) -> None:
        """Go away as a mapper does: killed, its connections dropped."""
        if self._server is not None:
            self._server.kill()
            self._server.wait()
            self._server = None
        self.socket.unlink(missing_ok=True)

    def _manager(self, call: Callable[[api_grpc.DeviceManagerServiceStub], Any]) -> Any:
        async def go() -> Any:
            channel = Channel(path=str(self.edge_socket))
            try:
                return await call(api_grpc.DeviceManagerServiceStub(channel))
            finally:
                channel.close()

        return self._run(go())

    def register(self, with_data: bool = True) -> pb.MapperRegisterResponse:
        info = pb.MapperInfo(
            name=f"{self.protocol}-mapper", version="v1.15.0", api_version="v1beta1",
            protocol=self.protocol, address=str(self.socket).encode(), state="ok",
        )  # fmt: skip
        request = pb.MapperRegisterRequest(withData=with_data, mapper=info)
        return self._manager(lambda stub: stub.MapperRegister(request, timeout=10))

    def report(self, name: str, values: dict[str, str], namespace: str = "default") -> None:
        status = pb.DeviceStatus(reportToCloud=True)
        for prop, value in values.items():
            status.twins.add(
                propertyName=prop,
                reported=pb.TwinProperty(
                    value=value, metadata={"timestamp": str(int(time.time() * 1000)), "type": "int"}
                ),
            )
        request = pb.ReportDeviceStatusRequest(
            deviceName=name, deviceNamespace=namespace, reportedDevice=status
        )
        self._manager(lambda stub: stub.ReportDeviceStatus(request, timeout=10))

    def report_state(self, name: str, state: str, namespace: str = "default") -> None:
        request = pb.ReportDeviceStatesRequest(
            deviceName=name, deviceNamespace=namespace, state=state
        )
        self._manager(lambda stub: stub.ReportDeviceStates(request, timeout=10))

    def calls_named(self, name: str) -> list[Any]:
        """The requests of each call of ``name`` edgecore made, in order."""
        if not self.calls_file.exists():
            return []
        found = []
        for line in self.calls_file.read_text().splitlines():
            method, _, data = line.partition("\t")
            if method == name:
                found.append(REQUESTS[method].FromString(base64.b64decode(data)))
        return found

    def close(self) -> None:
        self.stop_serving()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


if __name__ == "__main__":
    asyncio.run(_serve(Path(sys.argv[1]), Path(sys.argv[2])))
