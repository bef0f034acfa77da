"""Reports of a ``harness run``: terminal, JSON, JUnit XML, HTML and Markdown.

Every format is written from one :class:`~harness.runner.RunResult`, and the
totals of every format come from :func:`summarize`, so the JSON totals, the
terminal table and the Markdown table always agree.
"""

from harness.report.html import render_html, write_html
from harness.report.json_report import (
    SCHEMA_VERSION,
    build_json,
    validate_report,
    write_json,
)
from harness.report.junit import render_junit, write_junit
from harness.report.markdown import render_markdown, write_markdown
from harness.report.regressions import (
    RegressionCounts,
    RegressionEntry,
    regression_counts,
    regressions_pass,
)
from harness.report.summary import Summary, client_message, plural, summarize
from harness.report.terminal import print_summary, progress_bar

__all__ = [
    "SCHEMA_VERSION",
    "RegressionCounts",
    "RegressionEntry",
    "Summary",
    "build_json",
    "client_message",
    "plural",
    "print_summary",
    "progress_bar",
    "regression_counts",
    "regressions_pass",
    "render_html",
    "render_junit",
    "render_markdown",
    "summarize",
    "validate_report",
    "write_html",
    "write_json",
    "write_junit",
    "write_markdown",
]
