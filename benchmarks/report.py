"""Result rows, summary statistics and the markdown / JSON output of a benchmark run."""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ("Cell", "Row", "percentile", "render_markdown", "write_json")


def percentile(values: list[float], q: float) -> float:
    """The `q`-quantile (0..1) of `values`, linearly interpolated between closest ranks."""
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


@dataclass
class Cell:
    """One kernel's result in one row: samples, or a single value, or an error."""

    samples: list[float] = field(default_factory=list)
    """Raw measurements in base units (seconds, bytes, requests/s)."""
    value: float | str | None = None
    """A single result when there is no distribution (a count, "n/a", "yes")."""
    note: str = ""
    """Shown after the number: timeouts, which shell was used, ..."""
    error: str = ""
    """Why this kernel has no result (start failure, timeout, crash)."""

    @property
    def center(self) -> float | None:
        """The median of the samples, or the numeric value."""
        if self.samples:
            return statistics.median(self.samples)
        return self.value if isinstance(self.value, int | float) else None

    def summary(self) -> dict[str, Any]:
        """JSON-ready form, with statistics and the raw samples."""
        out: dict[str, Any] = {"note": self.note, "error": self.error, "value": self.value}
        if self.samples:
            out |= {
                "n": len(self.samples),
                "median": statistics.median(self.samples),
                "p5": percentile(self.samples, 0.05),
                "p95": percentile(self.samples, 0.95),
                "p99": percentile(self.samples, 0.99),
                "min": min(self.samples),
                "max": max(self.samples),
                "samples": self.samples,
            }
        return out


@dataclass
class Row:
    """One metric: a label, a display unit and one cell per kernel."""

    key: str
    label: str
    unit: str = ""
    scale: float = 1.0
    """Multiplies base units for display (1e3 for seconds shown in ms)."""
    digits: int = 2
    higher_is_better: bool = False
    """Rates: the tail shown is then p5 (the slow bursts) instead of p95."""
    tail: float | None = None
    """The quantile shown after the median, if not the default p95 (p5 when higher is better)."""
    cells: dict[str, Cell] = field(default_factory=dict)

    def cell(self, kernel: str) -> Cell:
        """The cell of `kernel`, created empty on first use."""
        return self.cells.setdefault(kernel, Cell())

    def _number(self, x: float) -> str:
        return f"{x * self.scale:,.{self.digits}f}"

    def format(self, kernel: str) -> str:
        """The table text for one kernel."""
        cell = self.cells.get(kernel)
        if cell is None:
            return "—"
        if cell.error:
            text = f"error: {cell.error}"
            return text if len(text) <= 90 else text[:87] + "..."
        if cell.samples:
            q = self.tail if self.tail is not None else 0.05 if self.higher_is_better else 0.95
            tail = percentile(cell.samples, q)
            text = f"{self._number(statistics.median(cell.samples))} / {self._number(tail)}"
        elif isinstance(cell.value, int | float):
            text = self._number(cell.value)
        else:
            text = str(cell.value) if cell.value is not None else "n/a"
        return f"{text} ({cell.note})" if cell.note else text

    def ratio(self, num: str, den: str) -> str:
        """`num`'s median over `den`'s, or a dash when either is missing."""
        a, b = (self.cells[k].center if k in self.cells else None for k in (num, den))
        if a is None or b is None or b == 0 or any(self.cells[k].error for k in (num, den)):
            return "—"
        return f"{a / b:.2f}x"


def render_markdown(rows: list[Row], labels: dict[str, str], meta: dict[str, Any]) -> str:
    """The results table plus a header naming the date, machine and versions."""
    mode = "quick" if meta["quick"] else "full"
    versions = ", ".join(f"{k} {v}" for k, v in meta["versions"].items())
    lines = [
        f"### Benchmark results ({mode} mode)",
        "",
        f"- date: {meta['date']}",
        f"- machine: {meta['machine']['cpus']} CPUs ({meta['machine']['cpu_model']}), "
        f"{meta['machine']['platform']}, Python {meta['machine']['python']}",
        f"- load average (1/5/15 min) before: {meta['load_before']}, "
        f"after: {meta['load_after']}; run time {meta['seconds']} s",
        f"- versions: {versions}",
        "",
        "Cells are `median / p95` (rates: `median / p5`, the slow tail), wall-clock on the "
        "client. The ratio is async-kernel's median over ipykernel's: below 1 is better for "
        "times and memory, above 1 for req/s.",
        "",
    ]
    keys = list(labels)
    ratio = "async" in keys and "ipykernel" in keys
    header = ["metric", *labels.values()] + (["async / ipykernel"] if ratio else [])
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    previous: dict[str, str] = {}
    for row in rows:
        unit = f" ({row.unit})" if row.unit else ""
        cols = [row.label + unit]
        for key in keys:
            text = row.format(key)
            repeated = text.startswith("error") and previous.get(key) == text
            previous[key] = text
            cols.append("error: as above" if repeated else text)
        if ratio:
            cols.append(row.ratio("async", "ipykernel"))
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cols) + " |")
    return "\n".join(lines) + "\n"


def write_json(path: Path, rows: list[Row], meta: dict[str, Any]) -> None:
    """Write the metadata and every row (with raw samples) as JSON."""
    data = {
        "meta": meta,
        "rows": [
            {
                "key": row.key,
                "label": row.label,
                "unit": row.unit,
                "scale": row.scale,
                "cells": {k: c.summary() for k, c in row.cells.items()},
            }
            for row in rows
        ],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))
