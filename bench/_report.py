"""The run's output: a table per scenario on stdout, one JSON file, a PNG chart each.

Charts need matplotlib (``pip install '.[bench]'``); it is imported only here, by name
at run time, so the harness runs and type-checks without it.
"""

from __future__ import annotations

import importlib
import json
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._results import Row, ScenarioResult

__all__ = [
    "format_ratio",
    "format_value",
    "render_markdown",
    "render_summary",
    "render_table",
    "write_chart",
    "write_json",
]


def format_value(value: float | None) -> str:
    if value is None:
        return "-"
    if value == 0:
        return "0"
    if isinstance(value, int):
        return f"{value:,}"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    if magnitude >= 0.01:
        return f"{value:.3f}"
    return f"{value:.2g}"


def _targets(rows: Sequence[Row]) -> list[str]:
    seen: dict[str, None] = {}
    for row in rows:
        for name in row.values:
            seen.setdefault(name, None)
    return list(seen)


def format_ratio(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if value < 0.1 else f"{value:.2f}"


def _ratio_cells(row: Row) -> tuple[str, str]:
    if not row.ratio_name:
        return "", ""
    return format_ratio(row.ratio), f"{row.ratio_name} ({row.better} is better)"


def _cells(result: ScenarioResult) -> tuple[list[list[str]], set[int]]:
    """The header and one line of cells per row; and which columns hold numbers."""
    targets = _targets(result.rows)
    table = [["case", "metric", *targets, "ratio", "ratio of"]]
    for row in result.rows:
        ratio_value, ratio_what = _ratio_cells(row)
        cells = [format_value(row.values[t]) if t in row.values else "" for t in targets]
        table.append([row.case, row.metric, *cells, ratio_value, ratio_what])
    return table, set(range(2, 2 + len(targets) + 1))


def render_table(result: ScenarioResult) -> str:
    """The scenario as an aligned text table, headed by what it compared and its status."""
    head = f"== {result.name}: {result.status} ({result.seconds:.1f} s)"
    lines = [head]
    if result.reference:
        lines.append(f"   against: {result.reference}")
    if result.rows:
        table, numeric = _cells(result)
        widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
        for index, cells in enumerate(table):
            text = "  ".join(
                cell.rjust(widths[i]) if i in numeric else cell.ljust(widths[i])
                for i, cell in enumerate(cells)
            )
            lines.append("   " + text.rstrip())
            if index == 0:
                lines.append("   " + "  ".join("-" * w for w in widths))
    lines.extend(f"   note: {note}" for note in result.notes)
    return "\n".join(lines)


def render_markdown(result: ScenarioResult) -> str:
    """The same table in Markdown, for bench/README.md."""
    lines = [f"### {result.name} ({result.status}, {result.seconds:.0f} s)", ""]
    if result.reference:
        lines += [f"Against: {result.reference}.", ""]
    if result.rows:
        table, numeric = _cells(result)
        lines.append("| " + " | ".join(table[0]) + " |")
        lines.append(
            "|" + "|".join("---:" if i in numeric else "---" for i in range(len(table[0]))) + "|"
        )
        lines += ["| " + " | ".join(cells) + " |" for cells in table[1:]]
        lines.append("")
    lines += [f"- note: {note}" for note in result.notes]
    return "\n".join(lines).rstrip() + "\n"


def render_summary(results: Sequence[ScenarioResult]) -> str:
    """Every ratio of the run, one line each."""
    lines = ["== ratios (1.00 = parity)"]
    for result in results:
        if not result.status.startswith("ok"):
            lines.append(f"   {result.name:8} {result.status}")
            continue
        for row in result.rows:
            if row.ratio_name:
                lines.append(
                    f"   {result.name:8} {row.case} [{row.metric}]: {row.ratio_name} = "
                    f"{format_ratio(row.ratio)}"
                    f" ({row.better} is better)"
                )
    return "\n".join(lines)


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")


def write_chart(result: ScenarioResult, path: Path) -> bool:
    """A bar chart per metric (one bar per target and case, the ratio above each group).
    Returns False when the scenario has nothing to draw."""
    metrics = list(dict.fromkeys(row.metric for row in result.rows))
    if not metrics:
        return False
    matplotlib: Any = importlib.import_module("matplotlib")
    matplotlib.use("Agg")
    plt: Any = importlib.import_module("matplotlib.pyplot")
    figure, axes = plt.subplots(len(metrics), 1, figsize=(11, 3.6 * len(metrics)), squeeze=False)
    everyone = _targets(result.rows)
    colours = {target: f"C{index}" for index, target in enumerate(everyone)}
    for axis, metric in zip(axes[:, 0], metrics, strict=True):
        rows = [row for row in result.rows if row.metric == metric]
        present = set(_targets(rows))
        targets = [target for target in everyone if target in present]
        width = 0.8 / len(targets)
        for j, target in enumerate(targets):
            xs = [i + j * width for i in range(len(rows))]
            ys = [row.values.get(target) or 0.0 for row in rows]
            axis.bar(xs, ys, width, label=target, color=colours[target])
        centres = [i + width * (len(targets) - 1) / 2 for i in range(len(rows))]
        axis.set_xticks(centres, [row.case for row in rows], rotation=15, ha="right", fontsize=8)
        axis.set_ylabel(metric)
        values = [v for row in rows for v in row.values.values() if v]
        if values and min(values) > 0 and max(values) / min(values) > 20:
            axis.set_yscale("log")
        else:
            axis.set_ylim(bottom=0, top=max([*values, 1.0]) * 1.15)
        for centre, row in zip(centres, rows, strict=True):
            if row.ratio is not None:
                top = max((v or 0.0) for v in row.values.values())
                axis.annotate(
                    format_ratio(row.ratio),
                    (centre, top),
                    ha="center",
                    va="bottom",
                    fontsize=8,
                    fontweight="bold",
                )
        ratio_names = sorted({row.ratio_name for row in rows if row.ratio_name})
        if ratio_names:
            axis.set_title("ratio above bars: " + "; ".join(ratio_names), fontsize=9)
        axis.legend(fontsize=8)
    title = f"{result.name}: against {result.reference}"
    figure.suptitle(textwrap.fill(title, 110), fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return True
