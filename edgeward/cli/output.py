"""Generic formatting: ages, sizes, plain-text tables, JSON and YAML.

Every function is pure: times are given as ``now`` (epoch seconds) so tests
need no clock.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from typing import Any

NONE = "<none>"
DASH = "-"
COLUMN_GAP = "   "


def short_duration(seconds: float) -> str:
    """kubectl's short age: ``45s``, ``3m``, ``2h``, ``5d``, ``2y``."""
    if seconds < -1:
        return "<invalid>"  # the clock that wrote the timestamp is ahead of ours
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h"
    if s < 365 * 86400:
        return f"{s // 86400}d"
    return f"{s // (365 * 86400)}y"


def long_duration(seconds: float) -> str:
    """How long something lasted, to the minute: ``45s``, ``3m``, ``3h12m``, ``2d4h``."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60}m"
    return f"{s // 86400}d{s % 86400 // 3600}h"


def outage_summary(outage: dict[str, Any]) -> str:
    """``offline 3h12m, 2 restarts, 41,220 reports, 0 dropped`` (a node's outage report)."""

    def n(key: str) -> int:
        value = outage.get(key)
        return value if type(value) is int else 0

    duration = outage.get("durationSeconds")
    lasted = long_duration(duration) if isinstance(duration, int | float) else "?"
    restarts = n("restarts")
    text = (
        f"offline {lasted}, {restarts} restart{'' if restarts == 1 else 's'}, "
        f"{n('buffered'):,} reports, {n('dropped') + n('expired'):,} dropped"
    )
    extra = [
        f"{n(key):,} {what}"
        for key, what in (("coalesced", "coalesced"), ("servedLocally", "served locally"))
        if n(key)
    ]
    return text + (f" ({', '.join(extra)})" if extra else "")


def parse_time(value: Any) -> float | None:
    """Epoch seconds of an RFC 3339 timestamp, or None when it is missing or unreadable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.timestamp()


def parse_millis(value: Any) -> float | None:
    """Epoch seconds of a milliseconds-since-epoch value (an int or a digit string)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, int | float):
        return float(value) / 1000.0
    return None


def age(timestamp: Any, now: float, missing: str = NONE) -> str:
    """The age of an RFC 3339 ``timestamp`` at ``now``; ``missing`` when there is none."""
    when = parse_time(timestamp)
    return missing if when is None else short_duration(now - when)


def age_of_epoch(when: float | None, now: float, missing: str = DASH) -> str:
    return missing if when is None else short_duration(now - when)


def human_bytes(value: Any) -> str | None:
    """``512Mi``, ``1.2Gi``: a byte count in binary units, None when it is not a number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    n = float(value)
    if n < 0:
        return None
    for unit in ("", "Ki", "Mi", "Gi", "Ti", "Pi"):
        if n < 1024 or unit == "Pi":
            break
        n /= 1024
    if unit == "":
        return f"{int(n)}B"
    text = f"{n:.1f}" if n < 100 else f"{n:.0f}"
    return text.removesuffix(".0") + unit


def truncate(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, ending in ``...`` when cut."""
    if len(text) <= limit:
        return text
    return text[: max(0, limit - 3)] + "..."


def cell(value: Any) -> str:
    """A table cell: ``<none>`` for missing or empty values, one line always."""
    if value is None or value == "":
        return NONE
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return " ".join(text.split()) or NONE


def column_widths(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[int]:
    widths = [len(h) for h in headers]
    for row in rows:
        for i, value in enumerate(row):
            widths[i] = max(widths[i], len(value))
    return widths


def format_row(row: Sequence[str], widths: Sequence[int]) -> str:
    """One table line; a value wider than its column pushes the rest right (never cut)."""
    parts = [value.ljust(width) for value, width in zip(row, widths, strict=False)]
    return COLUMN_GAP.join(parts).rstrip()


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A kubectl-style table: upper-case headers, left-aligned columns, no borders."""
    widths = column_widths(headers, rows)
    lines = [format_row(headers, widths), *(format_row(r, widths) for r in rows)]
    return "\n".join(lines) + "\n"


def dump_json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False) + "\n"


def dump_json_line(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False) + "\n"


def dump_yaml(value: Any) -> str:
    import yaml

    return yaml.safe_dump(value, sort_keys=False, default_flow_style=False, allow_unicode=True)


def dig(obj: Any, *path: str | int) -> Any:
    """``obj[path[0]][path[1]]...``, or None as soon as a step is missing or of the wrong type."""
    for step in path:
        if isinstance(step, int):
            if not isinstance(obj, list) or not -len(obj) <= step < len(obj):
                return None
        elif not isinstance(obj, dict):
            return None
        obj = obj[step] if isinstance(step, int) else obj.get(step)
    return obj


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
