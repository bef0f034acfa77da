"""The HTML report (``--html FILE``): one self-contained page.

The page has no external assets. The table of problems comes first, then
one colour-coded grid per client: one row per certificate kind, one numbered
column per combination of the other dimensions (EMS version and setting,
client version, action, answer, remembered state), one cell per scenario.
Each column number carries its full id as a tooltip and in a legend below
the grid. A text box filters cells by scenario id and checkboxes show or
hide statuses in every grid; both run in inline JavaScript.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

from harness.report.regressions import RegressionEntry, regression_counts
from harness.report.summary import (
    STATUS_ORDER,
    client_message,
    describe_expected,
    describe_observed,
    plural,
    summarize,
)
from harness.runner import RunResult, ScenarioResult, Status

# ASCII marks: a headless browser without an emoji or symbol font shows
# characters such as U+231B (hourglass) as an empty box.
SYMBOL: dict[Status, str] = {
    Status.AGREE: "+",
    Status.DISAGREE: "X",
    Status.EXPECTED_DEVIATION: "~",
    Status.ERROR: "!",
    Status.TIMEOUT: "T",
    Status.SKIPPED: "-",
}

_CSS = """
body { font-family: system-ui, sans-serif; margin: 1em; color: #222; }
table { border-collapse: collapse; }
th, td { border: 1px solid #ccc; padding: 2px 4px; font-size: 12px; }
th.col { font-weight: normal; min-width: 16px; cursor: help; }
th.kind { text-align: left; white-space: nowrap; position: sticky; left: 0;
  background: #fff; }
td.cell { text-align: center; min-width: 16px; cursor: default;
  font-family: monospace; }
.s-agree { background: #c8e6c9; }
.s-disagree { background: #e53935; color: #fff; font-weight: bold; }
.s-expected-deviation { background: #fff59d; }
.s-error, .s-timeout { background: #ce93d8; }
.s-skipped { background: #eeeeee; color: #888; }
span.mark { display: inline-block; min-width: 1.2em; text-align: center;
  font-family: monospace; border: 1px solid #ccc; }
section.client h2 { margin-bottom: 0.3em; }
details.columns { margin: 0.5em 0 1.5em; font-size: 12px; }
details.columns ol { columns: 2; margin: 0.3em 0; }
td.hidden { visibility: hidden; }
#controls { margin: 1em 0; }
#controls label { margin-right: 1em; }
.grid { overflow: auto; max-height: 70vh; }
"""

_JS = """
(function () {
  var box = document.getElementById('filter');
  var boxes = document.querySelectorAll('input.status');
  var cells = document.querySelectorAll('td.cell');
  function apply() {
    var text = box.value.toLowerCase();
    var shown = {};
    boxes.forEach(function (b) { shown[b.value] = b.checked; });
    var visible = 0;
    cells.forEach(function (c) {
      var ok = shown[c.dataset.status] &&
        c.dataset.id.toLowerCase().indexOf(text) !== -1;
      c.classList.toggle('hidden', !ok);
      if (ok) { visible += 1; }
    });
    document.getElementById('visible').textContent = String(visible);
  }
  box.addEventListener('input', apply);
  boxes.forEach(function (b) { b.addEventListener('change', apply); });
  apply();
})();
"""


def _cell(result: ScenarioResult) -> str:
    title = (
        f"{result.id}\nstatus: {result.status.value}\n"
        f"expected: {describe_expected(result)}\n"
        f"observed: {describe_observed(result)}"
    )
    if result.detail:
        title += f"\n{result.detail}"
    return (
        f'<td class="cell s-{result.status.value}" '
        f'data-id="{html.escape(result.id)}" '
        f'data-status="{result.status.value}" '
        f'title="{html.escape(title)}">{SYMBOL[result.status]}</td>'
    )


def _client_grid(client: str, results: Sequence[ScenarioResult]) -> list[str]:
    """Return the section of one client: heading, grid and column legend."""
    columns: dict[str, int] = {}
    rows: dict[str, dict[str, ScenarioResult]] = {}
    for result in results:
        column = result.scenario.column
        columns.setdefault(column, len(columns) + 1)
        rows.setdefault(result.scenario.kind, {})[column] = result

    name = html.escape(client)
    parts = [
        f'<section class="client" data-client="{name}">',
        f"<h2>{name}</h2>",
        f'<div class="grid"><table class="grid" data-client="{name}">',
        "<thead><tr><th>kind</th>",
    ]
    parts += [
        f'<th class="col" title="{html.escape(column)}">{number}</th>'
        for column, number in columns.items()
    ]
    parts.append("</tr></thead><tbody>")
    for kind, cells in rows.items():
        parts.append(f'<tr><th class="kind">{html.escape(kind)}</th>')
        for column in columns:
            cell = cells.get(column)
            parts.append("<td></td>" if cell is None else _cell(cell))
        parts.append("</tr>")
    parts.append("</tbody></table></div>")
    parts.append(f'<details class="columns"><summary>columns of {name}</summary><ol>')
    parts += [f"<li><code>{html.escape(column)}</code></li>" for column in columns]
    parts.append("</ol></details></section>")
    return parts


def _grids(run: RunResult) -> list[str]:
    by_client: dict[str, list[ScenarioResult]] = {}
    for result in run.results:
        by_client.setdefault(result.client, []).append(result)
    parts: list[str] = []
    for client, results in by_client.items():
        parts += _client_grid(client, results)
    return parts


def _problem_list(run: RunResult) -> list[str]:
    summary = summarize(run)
    listed = (*summary.problems, *summary.deviations)
    if not listed:
        return []
    parts = [
        "<h2>Problems and expected deviations</h2>",
        "<table><thead><tr><th>scenario</th><th>status</th><th>expected</th>"
        "<th>observed</th><th>detail</th><th>client message</th></tr></thead>"
        "<tbody>",
    ]
    for r in listed:
        cells = (
            r.id,
            r.status.value,
            describe_expected(r),
            describe_observed(r),
            r.detail,
            client_message(r),
        )
        row = "".join(f"<td>{html.escape(text)}</td>" for text in cells)
        parts.append(f"<tr>{row}</tr>")
    parts.append("</tbody></table>")
    return parts


def _regression_table(entries: Sequence[RegressionEntry]) -> list[str]:
    parts = [
        "<h2>Regression corpus</h2>",
        "<table><thead><tr><th>client</th><th>agreeing</th><th>explained</th>"
        "<th>disagreeing</th></tr></thead><tbody>",
    ]
    for adapter, counts in regression_counts(entries).items():
        style = ' class="s-disagree"' if counts.disagreeing else ""
        parts.append(
            f"<tr><td>{html.escape(adapter)}</td><td>{counts.agreeing}</td>"
            f"<td>{counts.explained}</td>"
            f"<td{style}>{counts.disagreeing}</td></tr>"
        )
    parts.append("</tbody></table>")
    unexplained = [e for e in entries if e.unexplained]
    if unexplained:
        parts.append(
            "<table><thead><tr><th>case</th><th>client</th><th>status</th>"
            "<th>expected</th></tr></thead><tbody>"
        )
        for e in unexplained:
            cells = (e.case, e.adapter, e.status, e.expected)
            row = "".join(f"<td>{html.escape(text)}</td>" for text in cells)
            parts.append(f"<tr>{row}</tr>")
        parts.append("</tbody></table>")
    return parts


def render_html(
    run: RunResult, regressions: Sequence[RegressionEntry] | None = None
) -> str:
    """Return the HTML report of ``run`` as one self-contained page."""
    summary = summarize(run)
    verdict = "passed" if run.passed else "failed"
    totals = ", ".join(
        f"{summary.by_status[s]} {s.value}"
        for s in STATUS_ORDER
        if summary.by_status[s]
    )
    checkboxes = "".join(
        f'<label><input type="checkbox" class="status" value="{s.value}" checked> '
        f'<span class="mark s-{s.value}">{SYMBOL[s]}</span> {s.value} '
        f"({summary.by_status[s]})</label>"
        for s in STATUS_ORDER
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>ems-harness run</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>Scenario run</h1>",
        f"<p>{plural(summary.total, 'scenario')}, {verdict}: "
        f"{html.escape(totals)}. "
        f"cn_fallback <code>{run.cn_fallback.value}</code>.</p>",
        '<div id="controls"><input id="filter" type="search" size="50" '
        'placeholder="filter by scenario id, e.g. wildcard or client-6.4.7"> ',
        checkboxes,
        ' <span id="visible"></span> cells shown</div>',
        *_problem_list(run),
        *_grids(run),
        *(_regression_table(regressions) if regressions is not None else []),
        f"<script>{_JS}</script>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def write_html(
    run: RunResult,
    path: str | Path,
    regressions: Sequence[RegressionEntry] | None = None,
) -> None:
    """Write the HTML report of ``run`` to ``path``."""
    Path(path).write_text(render_html(run, regressions), encoding="utf-8")
