"""A simulated thermostat built with the mapper SDK: the device ``make demo`` runs.

It serves the ``thermostat`` DeviceModel of ``edgeward/examples/thermostat.yaml``:

- ``target`` (INT, read-write, 5 to 30 °C): a desired value is stored;
- ``temperature`` (FLOAT, read-only): starts at 18.0 and moves 0.5 °C toward
  ``target`` on every poll.

Both are reported on every poll; each device's state is "online" while it is
served and "offline" once the mapper stops. Run it with::

    python -m edgeward.mapper.thermostat --broker 127.0.0.1:1883 --device default/thermo
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from edgeward.mapper import DesiredRefused, Mapper, check_device_id, parse_broker

START_TEMPERATURE = 18.0
STEP = 0.5
MIN_TARGET, MAX_TARGET = 5, 30
_INT = re.compile(r"-?[0-9]{1,18}")


@dataclass
class Room:
    """One simulated thermostat: what it is set to and what it measures."""

    target: int = int(START_TEMPERATURE)
    temperature: float = START_TEMPERATURE

    def step(self) -> None:
        """Heat or cool by at most STEP toward the target."""
        gap = self.target - self.temperature
        self.temperature = (
            self.target if abs(gap) <= STEP else self.temperature + STEP * (1 if gap > 0 else -1)
        )


class Thermostat(Mapper):
    """Simulated thermostats, one :class:`Room` per served device."""

    writable = frozenset({"target"})
    twin_types = {"target": "int", "temperature": "float"}

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._rooms: dict[str, Room] = {}
        self._rooms_lock = threading.Lock()

    def room(self, device_id: str) -> Room | None:
        """A copy of the simulated state of ``device_id`` (None if not served)."""
        with self._rooms_lock:
            room = self._rooms.get(device_id)
            return Room(room.target, room.temperature) if room else None

    def on_device_added(self, device_id: str) -> None:
        with self._rooms_lock:
            self._rooms.setdefault(device_id, Room())
        self.set_state(device_id, "online")

    def on_device_removed(self, device_id: str) -> None:
        with self._rooms_lock:
            self._rooms.pop(device_id, None)
        self.set_state(device_id, "offline")

    def on_stop(self) -> None:
        for device_id in sorted(self.devices):
            self.set_state(device_id, "offline")

    def on_desired(self, device_id: str, name: str, value: str) -> None:
        if not _INT.fullmatch(value):
            raise DesiredRefused(f"target must be a whole number of °C, not {value!r}")
        target = int(value)
        if not MIN_TARGET <= target <= MAX_TARGET:
            raise DesiredRefused(f"target {target} is outside {MIN_TARGET}..{MAX_TARGET} °C")
        with self._rooms_lock:
            self._rooms.setdefault(device_id, Room()).target = target

    def poll(self, device_id: str) -> Mapping[str, str]:
        with self._rooms_lock:
            room = self._rooms.setdefault(device_id, Room())
            room.step()
            return {"target": str(room.target), "temperature": f"{room.temperature:.1f}"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m edgeward.mapper.thermostat",
        description=(
            "A simulated thermostat mapper for edgecore's MQTT device twins.\n\n"
            "It takes desired 'target' values (INT, 5-30) from twin deltas and, every\n"
            "poll, reports 'target' and 'temperature' (FLOAT: starts at 18.0 and moves\n"
            "0.5 toward the target per poll)."
        ),
        epilog=(
            "examples:\n"
            "  %(prog)s --broker 127.0.0.1:1883 --device default/thermo\n"
            "  %(prog)s --node edge-1 --interval 5      # serve every device bound to edge-1\n"
            "\n"
            "The password, if any, is read from $EDGEWARD_MQTT_PASSWORD. "
            "SIGTERM or Ctrl-C stops it cleanly (state offline)."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--broker",
        default="127.0.0.1:1883",
        metavar="HOST:PORT",
        help="the MQTT broker edgecore uses (default: %(default)s)",
    )
    parser.add_argument(
        "--device",
        action="append",
        default=[],
        metavar="NAMESPACE/NAME",
        help="a device to serve; repeat for several (default: follow --node's membership)",
    )
    parser.add_argument(
        "--node",
        metavar="NAME",
        help="the edge node; without --device, serve the devices edgecore binds to it",
    )
    parser.add_argument(
        "--interval",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="poll and report every SECONDS (default: %(default)s)",
    )
    parser.add_argument("--username", help="MQTT user name")
    parser.add_argument("--ca-file", metavar="PEM", help="CA certificate: connect with TLS")
    parser.add_argument("--cert-file", metavar="PEM", help="client certificate for TLS")
    parser.add_argument("--key-file", metavar="PEM", help="client key for TLS")
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="(default: %(default)s)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.device and args.node is None:
        parser.error("give --device NAMESPACE/NAME (repeatable) or --node NAME")
    try:
        host, port = parse_broker(args.broker)
        devices = [check_device_id(d) for d in args.device] or None
        if not args.interval > 0:
            raise ValueError("--interval must be positive")
        thermostat = Thermostat(
            host,
            port,
            devices=devices,
            node=args.node,
            poll_interval=args.interval,
            username=args.username,
            password=os.environ.get("EDGEWARD_MQTT_PASSWORD"),
            ca_file=args.ca_file,
            cert_file=args.cert_file,
            key_file=args.key_file,
        )
    except ValueError as exc:
        parser.error(str(exc))
    except OSError as exc:
        print(f"thermostat: {exc}", file=sys.stderr)
        return 1
    thermostat.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
