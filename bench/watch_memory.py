"""Scenario 7: watch memory.

One Device of about 900 KB (1,000 properties, each with a desired value and
visitor settings, beside 20 small ones) exists when 100 watches start at
once without a resourceVersion, so each begins by listing the devices.
Figures: the hub's RSS once every watch has received that Device, and after
they all closed (memory Python keeps is never returned). Baseline: the same
hub's RSS just before the watches started. Target: at most 1.5x that (it
was 5x when each watch decoded every object).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from bench.core import Figure, Options
from bench.procs import NS, Api, BenchHub, rss, workdir

NAME = "watch-memory"
MIB = 2**20
PROPERTIES = 1000


def big_device(name: str) -> dict[str, Any]:
    """A Device of about 900 KB of compact JSON: many small values, as real specs are."""
    props = []
    for i in range(PROPERTIES):
        props.append(
            {
                "name": f"p{i}",
                "desired": {"value": f"v{i:04d}" + "x" * 500},
                "visitors": {
                    "protocolName": "modbus",
                    "configData": {
                        "register": "HoldingRegister",
                        "offset": i,
                        "limit": 1,
                        "scale": 0.5,
                        "isSwap": False,
                        "isRegisterSwap": True,
                        "tags": [f"t{i % 7}", f"zone-{i % 13}", "plant"],
                        "notes": "y" * 200,
                    },
                },
            }
        )
    return {
        "apiVersion": "devices.kubeedge.io/v1beta1",
        "kind": "Device",
        "metadata": {"name": name},
        "spec": {"deviceModelRef": {"name": "big-model"}, "properties": props},
    }


class _Watch:
    """One watch without resourceVersion; ``ready`` once its first event was read."""

    def __init__(self, api: Api, path: str) -> None:
        self.conn = api.new_connection(timeout=120)
        self.headers = api.headers
        self.path = path
        self.ready = threading.Event()
        self.size = 0
        self.error: BaseException | None = None

    def run(self, go: threading.Barrier) -> None:
        try:
            self.conn.connect()
            go.wait()
            self.conn.request("GET", self.path, headers=self.headers)
            resp = self.conn.getresponse()
            if resp.status != 200:
                raise RuntimeError(f"watch answered {resp.status}: {resp.read()[:200]!r}")
            self.size = len(resp.readline())
        except BaseException as exc:
            self.error = exc
        finally:
            self.ready.set()

    def close(self) -> None:
        self.conn.close()


def _measure(tmp: Path, watchers: int) -> tuple[int, int, int, int]:
    """A fresh hub's RSS with the objects: before ``watchers`` watches, while they are
    open, after they closed; and the size of the first event a watch received."""
    hub = BenchHub(tmp)
    hub.start()
    try:
        api = hub.api_client()
        model = {
            "apiVersion": "devices.kubeedge.io/v1beta1",
            "kind": "DeviceModel",
            "metadata": {"name": "big-model"},
            "spec": {"properties": [{"name": f"p{i}", "type": "STRING"}
                                    for i in range(PROPERTIES)]},
        }  # fmt: skip
        api.ok("POST", f"{NS}/devicemodels", model)
        api.ok("POST", f"{NS}/devices", big_device("big"))
        for i in range(20):
            api.ok("POST", f"{NS}/devices", {"metadata": {"name": f"small-{i}"}, "spec": {}})
        api.close()
        time.sleep(1)
        before = rss(hub.pid)
        api = hub.api_client()
        watches = [_Watch(api, f"{NS}/devices?watch=1") for _ in range(watchers)]
        go = threading.Barrier(watchers)
        threads = [threading.Thread(target=w.run, args=(go,), daemon=True) for w in watches]
        for t in threads:
            t.start()
        for w in watches:
            w.ready.wait(300)
        failed = [w.error for w in watches if w.error is not None]
        if failed:
            raise RuntimeError(f"{len(failed)} watches failed, first: {failed[0]!r}")
        time.sleep(1)
        during = rss(hub.pid)
        for w in watches:
            w.close()
        for t in threads:
            t.join(30)
        time.sleep(2)
        after = rss(hub.pid)
    finally:
        hub.stop(timeout=30)
    return before, during, after, max(w.size for w in watches)


def run(opts: Options) -> list[Figure]:
    watchers = opts.size(100, 20)
    with workdir(NAME) as tmp:
        before, during, after, size = _measure(tmp / "hub", watchers)
    common = {"scenario": NAME, "baseline": before / MIB, "baseline_name": "before the watches"}
    return [
        Figure(name=f"hub RSS, {watchers} watches listing a 900 KB Device", value=during / MIB,
               unit="MiB", target_ratio=1.5, note=f"+{(during - before) / MIB:.0f} MiB; the "
               f"Device's event is {size / 1000:.0f} KB", **common),
        Figure(name="hub RSS after those watches closed", value=after / MIB, unit="MiB",
               note=f"+{(after - before) / MIB:.0f} MiB kept", **common),
    ]  # fmt: skip
