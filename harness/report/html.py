"""The HTML report (``--html FILE``): one self-contained page.

The page has no external assets. Its core is the matrix as a colour-coded
grid: one row per certificate kind, one column per combination of the other
dimensions (client, EMS version and setting, client version, action, answer,
remembered state), one cell per scenario. A text box filters cells by
scenario id and checkboxes show or hide statuses; both run in inline
JavaScript.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

from harness.report.regressions import RegressionEntry, regression_counts
from harness.report.summary import (
    STATUS_ORDER,
    describe_expected,
    describe_observed,
    summarize,
)
from harness.runner import RunResult, ScenarioResult, Status

SYMBOL: dict[Status, str] = {
    Status.AGREE: "✓",
    Status.DISAGREE: "✗",
    Status.EXPECTED_DEVIATION: "≈",
    Status.ERROR: "!",
    Status.TIMEOUT: "⌛",
    Status.SKIPPED: "–",
}

_CSS = """
body { font-family: system-ui, sans-serif; margin: 1em; color: #222; }
table { border-collapse: collapse; }
th, td { border: 1px solid #ccc; padding: 2px 4px; font-size: 12px; }
th.col { writing-mode: vertical-rl; transform: rotate(180deg);
  white-space: nowrap; font-weight: normal; }
th.kind { text-align: left; white-space: nowrap; position: sticky; left: 0;
  background: #fff; }
td.cell { text-align: center; min-width: 14px; cursor: default; }
td.s-agree { background: #c8e6c9; }
td.s-disagree { background: #e53935; color: #fff; font-weight: bold; }
td.s-expected-deviation { background: #fff59d; }
td.s-error, td.s-timeout { background: #ce93d8; }
td.s-skipped { background: #eeeeee; color: #888; }
td.hidden { visibility: hidden; }
#controls { margin: 1em 0; }
#controls label { margin-right: 1em; }
.grid { overflow: auto; max-height: 80vh; }
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


def _column_key(result: ScenarioResult) -> str:
    return f"{result.client} | {result.scenario.column}"


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


def _grid(run: RunResult) -> list[str]:
    columns: dict[str, None] = {}
    rows: dict[str, dict[str, ScenarioResult]] = {}
    for result in run.results:
        key = _column_key(result)
        columns.setdefault(key, None)
        rows.setdefault(result.scenario.kind, {})[key] = result

    parts = ['<div class="grid"><table id="grid">', "<thead><tr><th>kind</th>"]
    parts += [f'<th class="col">{html.escape(c)}</th>' for c in columns]
    parts.append("</tr></thead><tbody>")
    for kind, cells in rows.items():
        parts.append(f'<tr><th class="kind">{html.escape(kind)}</th>')
        for column in columns:
            cell = cells.get(column)
            parts.append("<td></td>" if cell is None else _cell(cell))
        parts.append("</tr>")
    parts.append("</tbody></table></div>")
    return parts


def _problem_list(run: RunResult) -> list[str]:
    summary = summarize(run)
    listed = (*summary.problems, *summary.deviations)
    if not listed:
        return []
    parts = [
        "<h2>Problems and expected deviations</h2>",
        "<table><thead><tr><th>scenario</th><th>status</th><th>expected</th>"
        "<th>observed</th><th>detail</th></tr></thead><tbody>",
    ]
    for r in listed:
        cells = (r.id, r.status.value, describe_expected(r), describe_observed(r))
        row = "".join(f"<td>{html.escape(text)}</td>" for text in cells)
        parts.append(f"<tr>{row}<td>{html.escape(r.detail)}</td></tr>")
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
        f'<span class="s-{s.value}">{SYMBOL[s]}</span> {s.value} '
        f"({summary.by_status[s]})</label>"
        for s in STATUS_ORDER
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>ems-harness run</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>Scenario run</h1>",
        f"<p>{summary.total} scenarios, {verdict}: {html.escape(totals)}. "
        f"cn_fallback <code>{run.cn_fallback.value}</code>.</p>",
        '<div id="controls"><input id="filter" type="search" size="50" '
        'placeholder="filter by scenario id, e.g. wildcard or client-6.4.7"> ',
        checkboxes,
        ' <span id="visible"></span> cells shown</div>',
        *_grid(run),
        *_problem_list(run),
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
