"""Reports written from hand-made results: JSON, JUnit, Markdown, HTML, terminal."""

from __future__ import annotations

import html
import io
import json
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from rich.console import Console

from harness.matrix import MatrixFilter, Profile, build_matrix, make_filter
from harness.report import (
    build_json,
    client_message,
    print_summary,
    render_html,
    render_junit,
    render_markdown,
    summarize,
    validate_report,
    write_json,
)
from harness.runner import (
    Expectation,
    Observed,
    RunResult,
    ScenarioResult,
    Status,
)

STATUS_CYCLE = (
    Status.AGREE,
    Status.AGREE,
    Status.DISAGREE,
    Status.EXPECTED_DEVIATION,
    Status.ERROR,
    Status.TIMEOUT,
    Status.SKIPPED,
)


def _result(index: int, client: str, scenario: object) -> ScenarioResult:
    status = STATUS_CYCLE[index % len(STATUS_CYCLE)]
    expected = Expectation(True, False, "connected-valid", ())
    observed: Observed | None = None
    if status in (Status.AGREE, Status.EXPECTED_DEVIATION):
        observed = Observed(True, False, "connected-valid")
    elif status is Status.DISAGREE:
        observed = Observed(
            False,
            True,
            "refused-prompt-denied",
            ("expired",),
            "exit 1: curl: (1) Received HTTP/0.9\n when not allowed [curl -s x]",
        )
    detail = "" if status is Status.AGREE else f"{status.value} <detail> & more"
    return ScenarioResult(client, scenario, status, expected, observed, detail, 0.01)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def run() -> RunResult:
    endpoint = build_matrix(make_filter(kinds=["wildcard-too-deep", "correct-fqdn"]))
    plain = build_matrix(MatrixFilter(), profile=Profile.TLS)
    results = [_result(i, "reference", s) for i, s in enumerate(endpoint.scenarios)]
    results += [_result(i, "curl", s) for i, s in enumerate(plain.scenarios)]
    return RunResult(
        results=tuple(results),
        matrices={"reference": endpoint, "curl": plain},
        started=1_700_000_000.0,
        duration=1.5,
        jobs=2,
    )


def test_summary_counts(run: RunResult) -> None:
    summary = summarize(run)

    assert summary.total == len(run.results)
    assert sum(summary.by_status.values()) == summary.total
    assert sum(sum(c.values()) for c in summary.by_kind.values()) == summary.total
    assert len(summary.deviations) == summary.by_status[Status.EXPECTED_DEVIATION]


def test_passed_needs_only_agreement() -> None:
    scenario = build_matrix(make_filter(kinds=["correct-fqdn"])).scenarios[0]
    good = ScenarioResult("reference", scenario, Status.AGREE, None, None)
    deviation = ScenarioResult("curl", scenario, Status.EXPECTED_DEVIATION, None, None)
    skipped = ScenarioResult("node", scenario, Status.SKIPPED, None, None)

    assert RunResult((good, deviation)).passed
    assert not RunResult((good, skipped)).passed
    assert not RunResult((good,), server_failures=("boom",)).passed


def test_json_valid_and_totals_match(run: RunResult, tmp_path: Path) -> None:
    path = tmp_path / "report.json"

    write_json(run, path)
    data = json.loads(path.read_text())

    assert validate_report(data) == []
    assert data["schema_version"] == 1
    summary = summarize(run)
    for status, count in summary.by_status.items():
        assert data["totals"][status.value] == count
    assert data["totals"]["total"] == len(data["results"])
    assert data["matrix"]["reference"]["dropped"]


def test_validator_finds_wrong_totals(run: RunResult) -> None:
    data = build_json(run)
    data["totals"]["agree"] += 1

    errors = validate_report(data)

    assert any(e.startswith("totals.agree: expected") for e in errors)


def test_validator_finds_bad_types(run: RunResult) -> None:
    data = build_json(run)
    data["results"][0]["expected"]["connected"] = "yes"
    data["results"][1]["status"] = "passed"
    del data["jobs"]

    errors = validate_report(data)

    assert "results[0].expected.connected: expected bool, got str 'yes'" in errors
    assert any(e.startswith("results[1].status: expected one of") for e in errors)
    assert "report: missing key 'jobs'" in errors


def test_junit_parses_back(run: RunResult) -> None:
    root = ET.fromstring(render_junit(run))

    cases = root.findall("./testsuite/testcase")
    summary = summarize(run)
    assert len(cases) == summary.total
    assert len(root.findall(".//failure")) == summary.by_status[Status.DISAGREE]
    assert len(root.findall(".//skipped")) == summary.by_status[Status.SKIPPED]
    errors = summary.by_status[Status.ERROR] + summary.by_status[Status.TIMEOUT]
    assert len(root.findall(".//error")) == errors
    assert root.get("tests") == str(summary.total)
    assert {s.get("name") for s in root.findall("testsuite")} == {"reference", "curl"}


def test_markdown_lists_problems(run: RunResult) -> None:
    text = render_markdown(run)

    summary = summarize(run)
    assert f"| disagree | {summary.by_status[Status.DISAGREE]} |" in text
    first_problem = summary.problems[0]
    assert f"`{first_problem.id}`" in text
    assert "## Dropped combinations (reference)" in text


def test_terminal_summary(run: RunResult) -> None:
    buffer = io.StringIO()

    print_summary(run, Console(file=buffer, width=200, color_system=None))
    text = buffer.getvalue()

    assert "FAILED" in text
    disagreement = summarize(run).problems[0]
    assert disagreement.status is Status.DISAGREE
    assert disagreement.id in text
    assert "observed refused-prompt-denied [expired]" in text


def test_html_has_cell_per_scenario(run: RunResult) -> None:
    page = render_html(run)

    cell_ids = re.findall(r'<td class="cell [^"]*" data-id="([^"]+)"', page)
    assert sorted(html.unescape(i) for i in cell_ids) == sorted(
        r.id for r in run.results
    )
    assert "<script src" not in page
    assert "<link" not in page
    assert 'id="filter"' in page
    assert page.count('class="status"') == len(Status)


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.slow
def test_html_grid_renders_in_chromium(run: RunResult, tmp_path: Path) -> None:
    browser = _chromium()
    if browser is None:
        pytest.skip("chromium is not installed (Debian package chromium)")
    page = tmp_path / "report.html"
    page.write_text(render_html(run), encoding="utf-8")

    completed = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert completed.returncode == 0, completed.stderr[-2000:]
    dom = completed.stdout
    cell_ids = re.findall(r'<td class="cell [^"]*" data-id="([^"]+)"', dom)
    assert sorted(html.unescape(i) for i in cell_ids) == sorted(
        r.id for r in run.results
    )
    # The inline script ran: it filled in the count of shown cells.
    assert f'<span id="visible">{len(run.results)}</span>' in dom
    assert dom.count('<section class="client"') == len(run.matrices)
    for client in run.matrices:
        assert f"<h2>{client}</h2>" in dom


def test_terminal_grammar(run: RunResult) -> None:
    one_problem = RunResult(
        results=(run.results[2],),
        matrices=run.matrices,
        started=run.started,
        duration=0.1,
        jobs=1,
    )
    buffer = io.StringIO()

    print_summary(one_problem, Console(file=buffer, width=200, color_system=None))
    text = buffer.getvalue()

    assert "1 problem in" in text
    assert "1 problem:" in text
    assert "0 expected deviations" in text
    assert "1 scenario by kind" in text
    assert "1 problems" not in text


def test_terminal_table_fits_80_columns(run: RunResult) -> None:
    buffer = io.StringIO()

    print_summary(run, Console(file=buffer, width=80, color_system=None))
    words = buffer.getvalue().split()

    assert "…" not in buffer.getvalue()
    for status in Status:
        for word in status.value.split("-"):
            assert word in words, word
    assert "kind" in words


def test_client_message_shown(run: RunResult) -> None:
    buffer = io.StringIO()
    message = "exit 1: curl: (1) Received HTTP/0.9 when not allowed"

    print_summary(run, Console(file=buffer, width=200, color_system=None))

    assert f"client: {message}" in buffer.getvalue()
    assert message in render_markdown(run)
    assert "[curl -s x]" not in buffer.getvalue()


def test_client_message_cut_to_one_line() -> None:
    scenario = build_matrix(make_filter(kinds=["correct-fqdn"])).scenarios[0]
    observed = Observed(False, None, "reject", (), "exit 1:\n" + "x" * 500)
    result = ScenarioResult("curl", scenario, Status.DISAGREE, None, observed, "", 0.0)

    text = client_message(result)

    assert "\n" not in text
    assert len(text) == 200
    assert text.startswith("exit 1: xxx")


def test_html_marks_are_ascii(run: RunResult) -> None:
    page = render_html(run)

    marks = re.findall(r'<td class="cell [^>]*>([^<]*)</td>', page)
    assert marks
    assert all(mark.isascii() for mark in marks)
    assert "⌛" not in page
    assert page.count('<section class="client"') == len(run.matrices)
    assert page.index("Problems and expected deviations") < page.index(
        '<section class="client"'
    )
    assert 'th class="col" title="' in page
