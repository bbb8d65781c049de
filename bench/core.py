"""What every scenario shares: figures, statistics, options, and how results are shown."""

from __future__ import annotations

import json
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).parent / "results"


class Skipped(Exception):
    """A scenario cannot run here (a missing part of the product or of the machine)."""


@dataclass(frozen=True)
class Options:
    """How big and how long: ``quick`` shrinks every scenario to a smoke run."""

    quick: bool = False
    repeat: int = 1
    verbose: bool = False

    def size(self, full: int, quick: int) -> int:
        return quick if self.quick else full

    def seconds(self, full: float, quick: float) -> float:
        return quick if self.quick else full


@dataclass
class Figure:
    """One measured number, its baseline from the same run and the target it should meet.

    ``better`` says which direction is good ("lower" or "higher"); ``target`` is
    the goal in the figure's own unit (None: reported only), ``target_ratio`` a
    goal on value/baseline (e.g. p50 within 2x the baseline).
    """

    scenario: str
    name: str
    value: float
    unit: str
    better: str = "lower"
    baseline: float | None = None
    baseline_name: str = ""
    target: float | None = None
    target_ratio: float | None = None
    note: str = ""
    runs: list[float] = field(default_factory=list)

    @property
    def ratio(self) -> float | None:
        if self.baseline in (None, 0):
            return None
        return self.value / self.baseline  # type: ignore[operator]

    @property
    def met(self) -> bool | None:
        checks: list[bool] = []
        if self.target is not None:
            checks.append(
                self.value <= self.target if self.better == "lower" else self.value >= self.target
            )
        if self.target_ratio is not None and self.ratio is not None:
            checks.append(
                self.ratio <= self.target_ratio
                if self.better == "lower"
                else self.ratio >= self.target_ratio
            )
        return all(checks) if checks else None

    def goal(self) -> str:
        sign = "<=" if self.better == "lower" else ">="
        parts = []
        if self.target is not None:
            parts.append(f"{sign} {fmt(self.target)} {self.unit}".strip())
        if self.target_ratio is not None:
            parts.append(f"{sign} {self.target_ratio:g}x base")
        return " and ".join(parts)


def percentile(samples: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), nearest-rank on sorted samples; NaN when empty."""
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))
    return ordered[rank]


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if value != value:  # NaN
        return "nan"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def merge_runs(runs: list[list[Figure]]) -> list[Figure]:
    """Median of each figure (by scenario and name) over repeated runs; baselines too."""
    merged: dict[tuple[str, str], list[Figure]] = {}
    for run in runs:
        for fig in run:
            merged.setdefault((fig.scenario, fig.name), []).append(fig)
    out = []
    for figs in merged.values():
        first = figs[0]
        values = [f.value for f in figs]
        bases = [f.baseline for f in figs if f.baseline is not None]
        out.append(
            Figure(
                **{
                    **asdict(first),
                    "value": statistics.median(values),
                    "baseline": statistics.median(bases) if bases else None,
                    "runs": values,
                }
            )
        )
    return out


def render_table(figures: list[Figure], skipped: dict[str, str]) -> str:
    headers = ("scenario", "figure", "value", "unit", "baseline", "ratio", "target", "met", "n")
    rows = []
    for f in figures:
        met = {True: "yes", False: "NO", None: "-"}[f.met]
        ratio = "-" if f.ratio is None else f"{f.ratio:.2f}x"
        base = "-" if f.baseline is None else f"{fmt(f.baseline)} ({f.baseline_name})"
        rows.append(
            (f.scenario, f.name, fmt(f.value), f.unit, base, ratio, f.goal() or "-", met,
             str(len(f.runs) or 1))
        )  # fmt: skip
    for name, reason in skipped.items():
        rows.append((name, f"skipped: {reason}", "", "", "", "", "", "", ""))
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]  # fmt: skip
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(out)


def write_results(
    figures: list[Figure], skipped: dict[str, str], options: Options, path: Path | None = None
) -> Path:
    path = path or RESULTS_DIR / "latest.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"cpus": _cpus(), "python": platform.python_version(), "node": platform.node()},
        "options": asdict(options),
        "figures": [
            {**asdict(f), "ratio": f.ratio, "met": f.met, "goal": f.goal()} for f in figures
        ],
        "skipped": skipped,
    }
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path


def _cpus() -> int:
    import os

    return os.cpu_count() or 0


@dataclass(frozen=True)
class Scenario:
    """A named benchmark: ``run(options)`` returns its figures or raises Skipped."""

    name: str
    title: str
    help: str
    run: Callable[[Options], list[Figure]]
