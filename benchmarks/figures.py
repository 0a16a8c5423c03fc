"""One measured figure, its target and verdict, and the table the suite prints."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["Figure", "median", "render"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Figure:
    """A row of the results table.

    ``passed`` is None for a figure reported for context, without a target.
    ``data`` holds the raw numbers behind ``measured`` (for ``--json``).
    """

    name: str
    target: str
    measured: str
    passed: bool | None = None
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        return {True: "pass", False: "FAIL", None: "-"}[self.passed]

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "verdict": self.verdict}


def median(values: Iterable[float]) -> float:
    """The median (of repeated runs: timings are noisy)."""
    return float(statistics.median(list(values)))


def render(figures: Sequence[Figure]) -> str:
    """A plain-text table: figure, target, measured, pass/fail."""
    head = ("figure", "target", "measured", "result")
    rows = [head, *((f.name, f.target or "-", f.measured, f.verdict) for f in figures)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines) + "\n"
