"""The physical baselines each scenario is compared with, measured in the same run.

- MQTT request/reply through the broker with a bare paho echo client;
- MQTT one-way QoS 1 publish rate through the broker into a counting sink;
- the same number of messages through a bare websocket server and clients;
- SQLite rows/s inserted in one transaction (WAL, synchronous=FULL);
- the RSS of a bare Python interpreter.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from bench.core import percentile
from bench.mqttload import DriverResult, RequestDriver, echo_channel, publish_rate
from bench.procs import ROOT, Mosquitto, child_env, rss


def _child(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "bench.mqttload", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=child_env(),
        cwd=ROOT,
    )


def mqtt_echo(
    broker: Mosquitto, seconds: float, warmup: float, channels: int = 1, depth: int = 1
) -> DriverResult:
    """Request/reply through ``broker`` against a bare paho echo client in its own process."""
    echo = _child("echo", broker.host, str(broker.port))
    try:
        assert echo.stdout is not None
        if echo.stdout.readline().strip() != "ready":
            raise RuntimeError("the MQTT echo client did not start")
        payload = b'{"event_id":"e1","timestamp":0,"twin":{"temperature":{"actual":{"value":"1"}}}}'
        driver = RequestDriver(
            broker.host,
            broker.port,
            [echo_channel(i) for i in range(channels)],
            lambda _ch, _n: payload,
            depth=depth,
        )
        return driver.run(seconds, warmup)
    finally:
        echo.kill()
        echo.wait()


def mqtt_publish_rate(broker: Mosquitto, seconds: float, window: int = 100) -> float:
    """Messages/s a counting sink receives from a bare paho QoS 1 publisher (middle of the run)."""
    sink = _child("sink", broker.host, str(broker.port), "bench/sink")
    try:
        assert sink.stdin is not None and sink.stdout is not None
        if sink.stdout.readline().strip() != "ready":
            raise RuntimeError("the MQTT sink did not start")
        publish_rate(broker.host, broker.port, "bench/sink", window, seconds)
        sink.stdin.write("stop\n")
        sink.stdin.flush()
        samples = json.loads(sink.stdout.readline())
    finally:
        sink.kill()
        sink.wait()
    moving = [(t, n) for t, n in samples if n > 0]
    # skip the first and last fifth: ramp-up and the end of the run
    lo, hi = len(moving) // 5, len(moving) - len(moving) // 5 - 1
    if hi <= lo:
        raise RuntimeError("the MQTT sink received too little to measure a rate")
    (t0, n0), (t1, n1) = moving[lo], moving[hi]
    return (n1 - n0) / (t1 - t0)


async def _ws_fanout(clients: int, messages: int, payload: str) -> tuple[float, list[float]]:
    """The server sends ``messages`` frames spread over ``clients`` connections; each client
    answers every frame with a small ack. Returns (seconds until every ack, latencies)."""
    conns: list[ServerConnection] = []
    joined = asyncio.Event()
    acks: dict[int, float] = {}
    all_acked = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        conns.append(ws)
        if len(conns) == clients:
            joined.set()
        with contextlib.suppress(ConnectionClosed):
            async for frame in ws:
                acks[int(json.loads(frame)["revision"])] = time.perf_counter()
                if len(acks) == messages:
                    all_acked.set()

    async def client(url: str) -> None:
        async with connect(url, compression=None, proxy=None) as ws:
            async for frame in ws:  # ends when the server closes
                revision = json.loads(frame)["revision"]
                await ws.send(f'{{"type":"ack","revision":{revision}}}')

    async with serve(handler, "127.0.0.1", 0, compression=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        tasks = [asyncio.create_task(client(f"ws://127.0.0.1:{port}")) for _ in range(clients)]
        await joined.wait()
        sent: dict[int, float] = {}
        start = time.perf_counter()
        for i in range(messages):
            sent[i] = time.perf_counter()
            await conns[i % clients].send(payload.replace('"revision":0', f'"revision":{i}', 1))
        await asyncio.wait_for(all_acked.wait(), 60)
        elapsed = time.perf_counter() - start
        await asyncio.gather(*(ws.close() for ws in conns))
        await asyncio.gather(*tasks, return_exceptions=True)
    return elapsed, [acks[i] - sent[i] for i in range(messages)]


def ws_fanout(clients: int, messages: int, payload: str) -> tuple[float, list[float]]:
    """``payload`` must contain ``"revision":0`` (each frame gets its own number there)."""
    return asyncio.run(_ws_fanout(clients, messages, payload))


def sqlite_batch_rate(rows: int, body: str) -> float:
    """Rows/s inserted in one transaction into an outbox-like table (WAL, synchronous=FULL)."""
    with tempfile.TemporaryDirectory(prefix="edgeward-bench-sqlite-") as tmp:
        db = sqlite3.connect(Path(tmp) / "base.db", isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute(
            "CREATE TABLE t (seq INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT, key TEXT, "
            "body TEXT, created REAL)"
        )
        start = time.perf_counter()
        db.execute("BEGIN IMMEDIATE")
        db.executemany(
            "INSERT INTO t (topic, key, body, created) VALUES (?, ?, ?, ?)",
            (("twin/reported", None, body, 0.0) for _ in range(rows)),
        )
        db.execute("COMMIT")
        elapsed = time.perf_counter() - start
        db.close()
    return rows / elapsed


def python_rss() -> int:
    """RSS in bytes of a bare interpreter (``python -c pass``, kept alive to be measured)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        time.sleep(0.5)
        return rss(proc.pid)
    finally:
        proc.kill()
        proc.wait()


def latency_ms(samples: list[float], q: float) -> float:
    return percentile(samples, q) * 1000


_WS_SERVER = """
import asyncio, sys
from websockets.asyncio.server import serve
async def handler(ws):
    await ws.wait_closed()
async def main():
    async with serve(handler, "127.0.0.1", 0, compression=None) as server:
        print(list(server.sockets)[0].getsockname()[1], flush=True)
        await asyncio.Event().wait()
asyncio.run(main())
"""


async def _open_idle(port: int, n: int) -> list[object]:
    conns = []
    for _ in range(n):
        conns.append(await connect(f"ws://127.0.0.1:{port}", compression=None, proxy=None))
    return conns


def ws_idle_bytes_per_conn(n: int) -> float:
    """RSS a bare websockets server gains per idle connection (bytes), like the hub's endpoint."""
    server = subprocess.Popen([sys.executable, "-c", _WS_SERVER], stdout=subprocess.PIPE,
                              text=True)  # fmt: skip
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        time.sleep(0.3)
        before = rss(server.pid)

        async def hold() -> int:
            conns = await _open_idle(port, n)
            await asyncio.sleep(1)
            after = rss(server.pid)
            await asyncio.gather(*(c.close() for c in conns))  # type: ignore[attr-defined]
            return after

        after = asyncio.run(hold())
        return (after - before) / n
    finally:
        server.kill()
        server.wait()
