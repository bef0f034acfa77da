"""The Markdown report (``--markdown FILE``): totals, table by kind, problems."""

from __future__ import annotations

from pathlib import Path

from harness.report.summary import (
    STATUS_ORDER,
    describe_expected,
    describe_observed,
    summarize,
)
from harness.runner import RunResult, Status


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(run: RunResult) -> str:
    """Return the Markdown report of ``run``."""
    summary = summarize(run)
    verdict = "passed" if run.passed else "failed"
    lines = [
        "# Scenario run",
        "",
        f"{summary.total} scenarios, {verdict}; cn_fallback "
        f"`{run.cn_fallback.value}`; {run.duration:.1f} s on {run.jobs} jobs.",
        "",
        "| status | count |",
        "|---|---:|",
    ]
    lines += [f"| {s.value} | {summary.by_status[s]} |" for s in STATUS_ORDER]

    lines += ["", "## By kind", ""]
    lines.append("| kind | " + " | ".join(s.value for s in STATUS_ORDER) + " |")
    lines.append("|---|" + "---:|" * len(STATUS_ORDER))
    for kind, counts in summary.by_kind.items():
        cells = " | ".join(str(counts[s]) for s in STATUS_ORDER)
        lines.append(f"| {kind} | {cells} |")

    for client, matrix in run.matrices.items():
        if not matrix.dropped:
            continue
        lines += ["", f"## Dropped combinations ({client})", ""]
        lines += ["| reason | count |", "|---|---:|"]
        lines += [f"| {_cell(r)} | {n} |" for r, n in matrix.dropped.items()]

    sections = (
        ("Problems", summary.problems),
        ("Expected deviations", summary.deviations),
    )
    for title, results in sections:
        if not results:
            continue
        lines += ["", f"## {title}", ""]
        lines += [
            "| scenario | status | expected | observed | detail |",
            "|---|---|---|---|---|",
        ]
        for r in results:
            lines.append(
                f"| `{_cell(r.id)}` | {r.status.value} | "
                f"{_cell(describe_expected(r))} | {_cell(describe_observed(r))} | "
                f"{_cell(r.detail)} |"
            )
    if run.server_failures:
        lines += ["", "## Server failures", ""]
        lines += [f"- {_cell(failure)}" for failure in run.server_failures]
    if summary.by_status[Status.AGREE] == summary.total:
        lines += ["", "Every scenario agrees with the oracle."]
    return "\n".join(lines) + "\n"


def write_markdown(run: RunResult, path: str | Path) -> None:
    """Write the Markdown report of ``run`` to ``path``."""
    Path(path).write_text(render_markdown(run), encoding="utf-8")
