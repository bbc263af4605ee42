"""What a scenario hands back: rows of figures per target, each with its ratio.

A row compares targets on one case (say ``.info+.mod, 8 clients``) by one metric (say
``req/s``).  Its ratio is always athens-trio's figure over the reference's, so 1.0
means parity; whether above 1 is good depends on the metric, and the row says which.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["ATHENS_TRIO", "Better", "Row", "ScenarioResult", "ratio"]

#: The target name athens-trio's figures go under in every scenario.
ATHENS_TRIO = "athens-trio"

Better = Literal["higher", "lower"]


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """``numerator / denominator``, or None when either is missing or the divisor is 0."""
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


@dataclass
class Row:
    """One case measured on several targets, and athens-trio's ratio to the reference."""

    case: str
    metric: str
    values: dict[str, float | None]
    """target name -> figure (None: that target could not be measured)."""
    ratio_name: str = ""
    """e.g. ``athens-trio / nginx``; empty when the row has no ratio."""
    ratio: float | None = None
    better: Better = "higher"
    """Which way the *ratio* is better: ``higher`` for throughput, ``lower`` for time."""
    details: dict[str, Any] = field(default_factory=dict)
    """Raw figures behind the values: request counts, bytes, errors, latencies."""


@dataclass
class ScenarioResult:
    """Everything one scenario measured, ready for the table, the JSON and a chart."""

    name: str
    status: str = "ok"
    """``ok``, ``skipped: <why>`` or ``error: <what>``."""
    reference: str = ""
    """What athens-trio was compared with, in words (and how the load was made)."""
    params: dict[str, Any] = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        return row

    def as_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
