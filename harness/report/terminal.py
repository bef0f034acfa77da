"""Terminal output: a progress bar on stderr, then the summary."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

from rich import box
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from harness.report.regressions import (
    RegressionEntry,
    regression_counts,
    regressions_pass,
)
from harness.report.summary import (
    STATUS_ORDER,
    client_message,
    describe_expected,
    describe_observed,
    plural,
    summarize,
)
from harness.runner import RunResult, ScenarioResult, Status

STATUS_STYLE: dict[Status, str] = {
    Status.AGREE: "green",
    Status.DISAGREE: "bold red",
    Status.EXPECTED_DEVIATION: "yellow",
    Status.ERROR: "magenta",
    Status.TIMEOUT: "magenta",
    Status.SKIPPED: "dim",
}


@contextlib.contextmanager
def progress_bar(
    total: int, *, enabled: bool = True, console: Console | None = None
) -> Iterator[Callable[[ScenarioResult], None]]:
    """Show a progress bar on stderr; yield a callback to call per result.

    With ``enabled=False`` (``--quiet``) nothing is shown.
    """
    if not enabled:
        yield lambda result: None
        return
    console = console or Console(stderr=True)
    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[problems]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("scenarios", total=total, problems=plural(0, "problem"))
        problems = 0

        def advance(result: ScenarioResult) -> None:
            nonlocal problems
            if result.status not in (Status.AGREE, Status.EXPECTED_DEVIATION):
                problems += 1
            bar.update(task, advance=1, problems=plural(problems, "problem"))

        yield advance


def print_summary(
    run: RunResult,
    console: Console,
    regressions: Sequence[RegressionEntry] | None = None,
) -> None:
    """Print the table by kind and status, then every problem and deviation.

    With ``regressions``, also one line per real client on the regression
    corpus, and every unexplained disagreement there.
    """
    summary = summarize(run)
    # No cell padding, no outer edge and hyphenated headers split over two
    # lines keep the table within 80 columns, so a CI log shows whole headers.
    table = Table(
        title=f"{plural(summary.total, 'scenario')} by kind and status",
        box=box.SIMPLE_HEAD,
        padding=0,
        show_edge=False,
    )
    table.add_column("kind", no_wrap=True)
    for status in STATUS_ORDER:
        table.add_column(
            status.value.replace("-", "\n"),
            justify="right",
            style=STATUS_STYLE[status],
            no_wrap=True,
        )
    for kind, counts in summary.by_kind.items():
        table.add_row(kind, *(str(counts[s]) for s in STATUS_ORDER))
    table.add_section()
    table.add_row("total", *(str(summary.by_status[s]) for s in STATUS_ORDER))
    console.print(table)

    for client, matrix in run.matrices.items():
        dropped = sum(matrix.dropped.values())
        if dropped:
            console.print(
                f"{client}: {plural(len(matrix), 'scenario')} kept of "
                f"{matrix.full_size}; {dropped} dropped as irrelevant, "
                f"{matrix.filtered_out} filtered out"
            )
            for reason, count in matrix.dropped.items():
                console.print(f"  {count:>6}  {reason}", highlight=False)

    for title, results in (
        ("expected deviation", summary.deviations),
        ("problem", summary.problems),
    ):
        if not results:
            continue
        console.print(Text(f"{plural(len(results), title)}:", style="bold"))
        for result in results:
            line = Text("  ")
            line.append(result.status.value, style=STATUS_STYLE[result.status])
            line.append(f" {result.id}\n    expected {describe_expected(result)}")
            line.append(f"\n    observed {describe_observed(result)}")
            if result.detail:
                line.append(f"\n    {result.detail}")
            message = client_message(result)
            if message:
                line.append(f"\n    client: {message}")
            console.print(line, highlight=False)

    for failure in run.server_failures:
        console.print(Text(f"server failure: {failure}", style="bold red"))
    if regressions is not None:
        for adapter, tally in regression_counts(regressions).items():
            console.print(
                f"regressions {adapter}: {tally.agreeing} agreeing, "
                f"{tally.explained} explained, {tally.disagreeing} disagreeing",
                highlight=False,
            )
        for entry in regressions:
            if entry.unexplained:
                console.print(
                    Text(
                        f"  disagree {entry.adapter}:{entry.case}: {entry.status}, "
                        f"expected {entry.expected}",
                        style="bold red",
                    ),
                    highlight=False,
                )
    passed = run.passed and regressions_pass(regressions)
    verdict = "PASSED" if passed else "FAILED"
    style = "bold green" if passed else "bold red"
    deviations = plural(
        summary.by_status[Status.EXPECTED_DEVIATION], "expected deviation"
    )
    problems = plural(len(summary.problems), "problem")
    console.print(
        Text(f"{verdict}: ", style=style)
        + Text(
            f"{summary.by_status[Status.AGREE]} agree, {deviations}, "
            f"{problems} in {run.duration:.1f} s"
        )
    )
