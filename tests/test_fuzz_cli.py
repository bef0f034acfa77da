"""The ``fuzz`` command, in-process and as a real process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import main
from harness.pki import Lab


def test_fuzz_differential_writes_summary(
    cert_lab: Lab, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "fuzz",
            "--target",
            "differential",
            "--budget",
            "60",
            "--max-inputs",
            "5",
            "--out",
            str(tmp_path / "out"),
            "--lab-dir",
            str(cert_lab.directory),
        ]
    )

    summary = json.loads(capsys.readouterr().out)
    assert code == 0
    assert summary["inputs"] == 5
    assert len(summary["saved"]) == summary["findings"]


def test_fuzz_rejects_unknown_target(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "harness", "fuzz", "--target", "nope", "--budget", "5"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 2
    assert "--target" in result.stderr


def test_fuzz_help_names_lab_dir(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["fuzz", "--help"])

    out = capsys.readouterr().out
    assert code == 0
    assert "--lab-dir" in out
    assert " --lab " not in out


def test_fuzz_lab_alias_still_works(
    cert_lab: Lab, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "fuzz",
            "--target",
            "differential",
            "--budget",
            "60",
            "--max-inputs",
            "1",
            "--out",
            str(tmp_path / "out"),
            "--lab",
            str(cert_lab.directory),
        ]
    )

    summary = json.loads(capsys.readouterr().out)
    assert code == 0
    assert summary["inputs"] == 1
