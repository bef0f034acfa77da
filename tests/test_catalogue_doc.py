"""docs/catalogue.md is generated from the code and must be up to date."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import pytest

from harness.docs_catalogue import REGENERATE_COMMAND, render_catalogue
from harness.pki import CATALOGUE, ROLES

CATALOGUE_DOC = Path(__file__).resolve().parent.parent / "docs" / "catalogue.md"


def test_catalogue_doc_is_current() -> None:
    rendered = render_catalogue()

    assert CATALOGUE_DOC.is_file(), (
        f"{CATALOGUE_DOC} is missing; run {REGENERATE_COMMAND}"
    )
    assert CATALOGUE_DOC.read_text() == rendered, (
        f"docs/catalogue.md is stale; regenerate it with: {REGENERATE_COMMAND}"
    )


def test_render_names_every_kind_and_role() -> None:
    rendered = render_catalogue()

    for name in CATALOGUE:
        assert f"### `{name}`" in rendered
    for name in ROLES:
        assert f"| `{name}` |" in rendered


def test_render_has_no_absolute_time() -> None:
    rendered = render_catalogue()

    this_year = str(dt.datetime.now(dt.UTC).year)
    assert this_year not in rendered
    assert "-1 day .. +365 days" in rendered
    assert "\x00" not in rendered
    assert "ems.example.com\\x00.evil.example" in rendered


def test_module_prints_the_page(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "harness.docs_catalogue"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout == render_catalogue()


@pytest.mark.parametrize(
    ("kind", "expected_row"),
    [
        (
            "cn-only-no-san",
            "| `cn-only-no-san` | valid | `hostname-mismatch` | valid |",
        ),
        (
            "cn-match-san-other",
            "| `cn-match-san-other` | `hostname-mismatch` | `hostname-mismatch` "
            "| valid |",
        ),
    ],
)
def test_render_reasons_row(kind: str, expected_row: str) -> None:
    assert expected_row in render_catalogue().splitlines(), kind
