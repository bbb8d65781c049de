"""The systemd units in packaging/systemd, read as systemd reads their settings."""

from __future__ import annotations

import re
from pathlib import Path

UNITS = Path(__file__).resolve().parents[2] / "packaging" / "systemd"


def settings(unit: str) -> dict[str, list[str]]:
    """``Section.Key`` → every value assigned to it, in order (keys may repeat)."""
    found: dict[str, list[str]] = {}
    section = ""
    for raw in (UNITS / unit).read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        found.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return found


def seconds(span: str) -> float:
    """A systemd time span such as ``15s``, ``10min`` or ``1min 30s``, in seconds."""
    units = {"": 1, "s": 1, "sec": 1, "min": 60, "m": 60, "h": 3600, "ms": 0.001}
    total = 0.0
    for number, unit in re.findall(r"([\d.]+)\s*([a-z]*)", span):
        total += float(number) * units[unit]
    return total
