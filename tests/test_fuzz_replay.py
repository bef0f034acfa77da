"""Replay every saved finding under fixtures/findings.

A differential finding must reproduce: every stack returns the saved
verdict. A server or client finding must no longer break any property;
those still open live in ``open/`` and are strict xfails until fixed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.fuzz import findings
from harness.pki import Lab

FOLDER = Path(__file__).parent.parent / "fixtures" / "findings"
FINDINGS = sorted(FOLDER.glob("*.json"))
OPEN = sorted((FOLDER / "open").glob("*.json"))


def test_findings_folder_not_empty() -> None:
    assert FINDINGS


@pytest.mark.parametrize("path", FINDINGS, ids=[p.stem for p in FINDINGS])
def test_finding_replays(path: Path, tmp_path: Path, cert_lab: Lab) -> None:
    value = findings.load(path)

    assert findings.replay(value, tmp_path, cert_lab) == []


# Open findings are strict xfails, so each one starts passing the day it is
# fixed and must then move up to FOLDER. With none open there is no test.
if OPEN:

    @pytest.mark.xfail(
        strict=True, reason="reference client still breaks a property on this input"
    )
    @pytest.mark.parametrize("path", OPEN, ids=[p.stem for p in OPEN])
    def test_open_finding_fixed(path: Path, tmp_path: Path, cert_lab: Lab) -> None:
        value = findings.load(path)

        assert findings.replay(value, tmp_path, cert_lab) == []
