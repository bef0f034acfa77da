"""The Markdown report (``--markdown FILE``): totals, table by kind, problems."""

from __future__ import annotations

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
from harness.runner import RunResult, Status


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _regression_lines(entries: Sequence[RegressionEntry], mode: str) -> list[str]:
    lines = ["", f"## Regression corpus (cn_fallback `{mode}`)", ""]
    lines += ["| client | agreeing | explained | disagreeing |", "|---|---:|---:|---:|"]
    for adapter, counts in regression_counts(entries).items():
        lines.append(
            f"| {adapter} | {counts.agreeing} | {counts.explained} | "
            f"{counts.disagreeing} |"
        )
    lines += [
        "",
        "| case | family | client | status | expected | verdict |",
        "|---|---:|---|---|---|---|",
    ]
    for e in entries:
        if e.agrees:
            verdict = "agrees"
        elif e.explained_by is not None:
            verdict = f"explained: {_cell(e.explained_by)}"
        else:
            verdict = "**disagrees**"
        lines.append(
            f"| `{_cell(e.case)}` | {e.family} | {e.adapter} | {e.status} | "
            f"{e.expected} | {verdict} |"
        )
    return lines


def render_markdown(
    run: RunResult, regressions: Sequence[RegressionEntry] | None = None
) -> str:
    """Return the Markdown report of ``run``, with ``regressions`` if given."""
    summary = summarize(run)
    verdict = "passed" if run.passed else "failed"
    lines = [
        "# Scenario run",
        "",
        f"{plural(summary.total, 'scenario')}, {verdict}; cn_fallback "
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
            "| scenario | status | expected | observed | detail | client message |",
            "|---|---|---|---|---|---|",
        ]
        for r in results:
            lines.append(
                f"| `{_cell(r.id)}` | {r.status.value} | "
                f"{_cell(describe_expected(r))} | {_cell(describe_observed(r))} | "
                f"{_cell(r.detail)} | {_cell(client_message(r))} |"
            )
    if run.server_failures:
        lines += ["", "## Server failures", ""]
        lines += [f"- {_cell(failure)}" for failure in run.server_failures]
    if regressions is not None:
        lines += _regression_lines(regressions, run.cn_fallback.value)
    if summary.by_status[Status.AGREE] == summary.total:
        lines += ["", "Every scenario agrees with the oracle."]
    return "\n".join(lines) + "\n"


def write_markdown(
    run: RunResult,
    path: str | Path,
    regressions: Sequence[RegressionEntry] | None = None,
) -> None:
    """Write the Markdown report of ``run`` to ``path``."""
    Path(path).write_text(render_markdown(run, regressions), encoding="utf-8")
