"""Reports of a simulation run: a rich table, JSON, and HTML with an SVG chart.

The HTML page is self-contained: inline CSS and an inline SVG line chart of
online, offline and prompted endpoints per step, with no script and no
external asset.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from rich.table import Table

from harness.fleet.invariants import breakages, check_expectations
from harness.fleet.simulation import SimulationResult, StepRecord

# Series of the chart: record attribute, legend label, colour.
_SERIES: tuple[tuple[str, str, str], ...] = (
    ("online", "online", "#1a7f37"),
    ("offline", "offline", "#cf222e"),
    ("prompted", "prompted", "#bf8700"),
)


def _version_cell(step: StepRecord, attribute: str) -> str:
    parts = []
    for version, counts in step.by_version.items():
        value = getattr(counts, attribute)
        if value:
            parts.append(f"{version}:{value}")
    return " ".join(parts) or "-"


def _reasons_cell(step: StepRecord) -> str:
    parts = []
    for version, counts in step.by_version.items():
        failed = counts.offline + counts.prompted
        if failed and counts.reasons:
            top = ",".join(sorted(counts.reasons))
            parts.append(f"{version}: {top}")
    return "; ".join(parts) or "-"


def step_table(result: SimulationResult) -> Table:
    """Return a table with one row per step: counts per version and why."""
    table = Table(
        title=f"{result.path.name}: {result.endpoints} endpoints",
        show_lines=False,
    )
    for column in (
        "#",
        "step",
        "presented",
        "online",
        "offline",
        "prompted",
        "reasons",
        "fabric",
        "notes",
    ):
        table.add_column(column, overflow="fold")
    found = breakages(result)
    for step in result.steps:
        notes = list(step.events)
        if step.error:
            notes.append(f"rejected: {step.error}")
        if step.disagreements:
            notes.append(f"{len(step.disagreements)} disagree with oracle")
        broken = sorted(found.get(step.index, set()) - {"fabric-down"})
        if broken:
            notes.append("broken: " + ", ".join(broken))
        fabric = "up" if step.fabric_up else "down " + ",".join(step.fabric_reasons)
        table.add_row(
            str(step.index),
            step.label,
            f"{step.presented} ({step.presented_kind})",
            f"{step.online} [dim]{_version_cell(step, 'online')}[/dim]",
            f"{step.offline} [dim]{_version_cell(step, 'offline')}[/dim]",
            f"{step.prompted} [dim]{_version_cell(step, 'prompted')}[/dim]",
            _reasons_cell(step),
            fabric,
            "; ".join(notes),
        )
    return table


def to_json(result: SimulationResult, violations: list[str] | None) -> dict[str, Any]:
    """Return the run, its breakages and checks as JSON-ready values.

    ``violations`` is ``None`` when the recommended path's invariants were
    not checked, because the run followed another path.
    """
    data = result.to_dict()
    data["breakages"] = {
        str(index): sorted(names) for index, names in breakages(result).items()
    }
    data["violations"] = violations
    data["expectation_mismatches"] = check_expectations(result)
    return data


def write_json(
    result: SimulationResult, violations: list[str] | None, path: Path
) -> None:
    """Write :func:`to_json` to ``path``."""
    text = json.dumps(to_json(result, violations), indent=2, ensure_ascii=False)
    path.write_text(text + "\n", encoding="utf-8")


def svg_chart(result: SimulationResult, width: int = 760, height: int = 300) -> str:
    """Return an SVG line chart of online, offline and prompted per step."""
    left, right, top, bottom = 50, 20, 20, 40
    plot_w = width - left - right
    plot_h = height - top - bottom
    steps = result.steps
    peak = max([result.endpoints, 1])
    span = max(len(steps) - 1, 1)

    def x(index: int) -> float:
        return left + plot_w * index / span

    def y(value: int) -> float:
        return top + plot_h * (1 - value / peak)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
        'aria-label="endpoints online, offline and prompted per step">',
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" '
        'fill="none" stroke="#d0d7de"/>',
    ]
    for fraction in (0.0, 0.5, 1.0):
        value = round(peak * fraction)
        parts.append(
            f'<text x="{left - 6}" y="{y(value) + 4:.1f}" text-anchor="end" '
            f'font-size="11">{value}</text>'
        )
    for step in steps:
        parts.append(
            f'<text x="{x(step.index):.1f}" y="{height - bottom + 16}" '
            f'text-anchor="middle" font-size="11">{step.index}</text>'
        )
    for attribute, label, colour in _SERIES:
        points = " ".join(
            f"{x(step.index):.1f},{y(getattr(step, attribute)):.1f}" for step in steps
        )
        parts.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="2" '
            f'points="{points}"><title>{label}</title></polyline>'
        )
        for step in steps:
            value = getattr(step, attribute)
            parts.append(
                f'<circle cx="{x(step.index):.1f}" cy="{y(value):.1f}" r="3" '
                f'fill="{colour}"><title>step {step.index}: {value} {label}'
                "</title></circle>"
            )
    for offset, (_, label, colour) in enumerate(_SERIES):
        lx = left + 10 + offset * 110
        parts.append(
            f'<rect x="{lx}" y="{height - 14}" width="12" height="4" '
            f'fill="{colour}"/><text x="{lx + 16}" y="{height - 9}" '
            f'font-size="11">{label}</text>'
        )
    parts.append("</svg>")
    return "\n".join(parts)


def to_html(result: SimulationResult, violations: list[str] | None) -> str:
    """Return a self-contained HTML page with the chart and the step table."""
    escape = html.escape
    rows = []
    found = breakages(result)
    for step in result.steps:
        broken = ", ".join(sorted(found.get(step.index, set())))
        rows.append(
            "<tr>"
            f"<td>{step.index}</td><td>{escape(step.label)}</td>"
            f"<td>{escape(step.presented)} ({escape(step.presented_kind)})</td>"
            f"<td>{step.online}</td><td>{step.offline}</td><td>{step.prompted}</td>"
            f"<td>{escape(_reasons_cell(step))}</td>"
            f"<td>{'up' if step.fabric_up else 'down'}</td>"
            f"<td>{escape(step.error or '')}</td><td>{escape(broken)}</td>"
            "</tr>"
        )
    problems = (violations or []) + check_expectations(result)
    if problems:
        items = "".join(f"<li>{escape(line)}</li>" for line in problems)
        checks = f"<ul>{items}</ul>"
    elif violations is None:
        checks = "<p>Every expectation of the path file holds.</p>"
    else:
        checks = "<p>Every invariant of the recommended path holds.</p>"
    title = escape(f"Fleet simulation: {result.path.name}")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #1f2328; }}
table {{ border-collapse: collapse; }}
th, td {{ border: 1px solid #d0d7de; padding: 4px 8px; text-align: left; }}
th {{ background: #f6f8fa; }}
</style>
</head>
<body>
<h1>{title}</h1>
<p>{escape(result.path.description)}</p>
<p>{result.endpoints} endpoints, {result.connections} connections,
{result.seconds:.2f} s.</p>
{svg_chart(result)}
<h2>Checks</h2>
{checks}
<h2>Steps</h2>
<table>
<tr><th>#</th><th>step</th><th>presented</th><th>online</th><th>offline</th>
<th>prompted</th><th>reasons</th><th>fabric</th><th>rejected</th>
<th>broken</th></tr>
{chr(10).join(rows)}
</table>
</body>
</html>
"""


def write_html(
    result: SimulationResult, violations: list[str] | None, path: Path
) -> None:
    """Write :func:`to_html` to ``path``."""
    path.write_text(to_html(result, violations), encoding="utf-8")
