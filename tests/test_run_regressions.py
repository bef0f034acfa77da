"""``harness run`` checks real clients against the regression corpus."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.cli import main
from harness.regressions import load_cases
from harness.report import (
    RegressionEntry,
    regression_counts,
    regressions_pass,
    validate_report,
)

NON_SCRIPTED = sorted(case.name for case in load_cases() if not case.scripted)


@pytest.fixture(scope="module")
def lab_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("regressions-lab")


def _run(lab_dir: Path, report: Path, *extra: str) -> tuple[int, dict[str, object]]:
    code = main(
        [
            "run",
            "--lab-dir",
            str(lab_dir),
            "--kinds",
            "correct-fqdn",
            "--quiet",
            "--jobs",
            "8",
            "--json",
            str(report),
            *extra,
        ]
    )
    data = json.loads(report.read_text())
    assert validate_report(data) == []
    return code, data


@pytest.mark.network_tools
def test_openssl_run_reports_regressions(lab_dir: Path, tmp_path: Path) -> None:
    markdown = tmp_path / "report.md"
    html = tmp_path / "report.html"

    code, data = _run(
        lab_dir,
        tmp_path / "report.json",
        "--client",
        "openssl",
        "--markdown",
        str(markdown),
        "--html",
        str(html),
    )

    entries = data["regressions"]
    assert isinstance(entries, list)
    assert sorted(entry["case"] for entry in entries) == NON_SCRIPTED
    assert {entry["adapter"] for entry in entries} == {"openssl"}
    unexplained = [
        entry
        for entry in entries
        if not entry["agrees"] and entry["explained_by"] is None
    ]
    assert unexplained == []
    assert code == 0
    assert "## Regression corpus" in markdown.read_text()
    assert "<h2>Regression corpus</h2>" in html.read_text()


@pytest.mark.network_tools
def test_no_regressions_omits_the_section(lab_dir: Path, tmp_path: Path) -> None:
    code, data = _run(
        lab_dir, tmp_path / "report.json", "--client", "openssl", "--no-regressions"
    )

    assert "regressions" not in data
    assert code == 0


def test_reference_client_alone_adds_no_regressions(
    lab_dir: Path, tmp_path: Path
) -> None:
    code, data = _run(lab_dir, tmp_path / "report.json", "--client", "reference")

    assert "regressions" not in data
    assert code == 0


def test_validator_rejects_a_malformed_regression_entry(
    lab_dir: Path, tmp_path: Path
) -> None:
    _, data = _run(lab_dir, tmp_path / "report.json", "--client", "reference")
    data["regressions"] = [{"case": "x", "family": "one", "adapter": "openssl"}]

    errors = validate_report(data)

    assert any("regressions[0].family" in error for error in errors)
    assert any("missing key 'agrees'" in error for error in errors)


def test_an_unexplained_disagreement_fails_the_run() -> None:
    agreeing = RegressionEntry("a", 1, "openssl", "rejected", "rejected", True, None)
    explained = RegressionEntry("b", 1, "openssl", "accepted", "rejected", False, "x")
    wrong = RegressionEntry("c", 2, "openssl", "accepted", "rejected", False, None)

    assert regressions_pass([agreeing, explained])
    assert not regressions_pass([agreeing, explained, wrong])
    counts = regression_counts([agreeing, explained, wrong])["openssl"]
    assert (counts.agreeing, counts.explained, counts.disagreeing) == (1, 1, 1)
