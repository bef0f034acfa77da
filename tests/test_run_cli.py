"""``harness run`` end to end: real lab, real mock EMS, real clients."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from harness.cli import main
from harness.pki import Lab
from harness.report import validate_report

FIXTURES = Path(__file__).parent.parent / "fixtures" / "scenarios"
KINDS = "correct-fqdn,wildcard-too-deep,cn-only-no-san,vendor-default"


@pytest.fixture(scope="module")
def lab_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("run-lab")


def test_reference_run_agrees(lab_dir: Path, tmp_path: Path) -> None:
    reports = tmp_path / "reports"

    code = main(
        [
            "run",
            "--lab-dir",
            str(lab_dir),
            "--kinds",
            KINDS,
            "--quiet",
            "--jobs",
            "4",
            "--report-dir",
            str(reports),
        ]
    )

    data = json.loads((reports / "report.json").read_text())
    assert validate_report(data) == []
    disagreements = [r for r in data["results"] if r["status"] != "agree"]
    assert disagreements == []
    assert data["server_failures"] == []
    assert code == 0
    assert {r["scenario"]["kind"] for r in data["results"]} == set(KINDS.split(","))
    junit = ET.parse(reports / "junit.xml").getroot()
    assert junit.get("tests") == str(len(data["results"]))
    assert (reports / "report.html").read_text().count('class="cell ') == len(
        data["results"]
    )
    assert (reports / "report.md").read_text().startswith("# Scenario run")


@pytest.mark.network_tools
def test_plain_tls_clients(lab_dir: Path, tmp_path: Path) -> None:
    report = tmp_path / "report.json"

    code = main(
        [
            "run",
            "--lab-dir",
            str(lab_dir),
            "--client",
            "curl,openssl",
            "--client",
            "python-ssl",
            "--kinds",
            KINDS,
            "--quiet",
            "--json",
            str(report),
        ]
    )

    data = json.loads(report.read_text())
    assert validate_report(data) == []
    assert set(data["by_client"]) == {"curl", "openssl", "python-ssl"}
    by_id = {r["id"]: r for r in data["results"]}
    for client in ("curl", "openssl", "python-ssl"):
        valid = by_id[f"{client}:correct-fqdn/tls/cn-when-no-san"]
        assert valid["status"] in ("agree", "skipped"), valid
        invalid = by_id[f"{client}:wildcard-too-deep/tls/cn-when-no-san"]
        assert invalid["status"] in ("agree", "skipped"), invalid
    problems = [
        r for r in data["results"] if r["status"] not in ("agree", "expected-deviation")
    ]
    assert code == (0 if not problems else 1)


def test_scenario_ids_file(lab_dir: Path, tmp_path: Path) -> None:
    report = tmp_path / "report.json"

    code = main(
        [
            "run",
            "--lab-dir",
            str(lab_dir),
            "--scenarios",
            str(FIXTURES / "pinned-ids.json"),
            "--quiet",
            "--json",
            str(report),
        ]
    )

    data = json.loads(report.read_text())
    assert [r["scenario_id"] for r in data["results"]] == json.loads(
        (FIXTURES / "pinned-ids.json").read_text()
    )["select"]["ids"]
    assert code == 0


def test_list_prints_ids(lab_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", "--lab-dir", str(lab_dir), "--kinds", "correct-fqdn", "--list"])

    lines = capsys.readouterr().out.splitlines()
    assert code == 0
    assert "reference:correct-fqdn/ems-7.2.0-on/client-7.2.0/any-action" in lines


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--kinds", "no-such-kind"], "unknown kind 'no-such-kind'"),
        (["--actions", "maybe"], "unknown action 'maybe'"),
        (["--client", "netscape"], "unknown client 'netscape'"),
        (["--client-versions", "seven"], "invalid version 'seven'"),
        (["--jobs", "0"], "--jobs"),
    ],
)
def test_usage_errors_exit_2(
    lab_dir: Path, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["run", "--lab-dir", str(lab_dir), *args])

    assert code == 2
    assert message in capsys.readouterr().err


def test_run_as_process(cert_lab: Lab, tmp_path: Path) -> None:
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness",
            "run",
            "--lab-dir",
            str(cert_lab.directory),
            "--kinds",
            "wrong-host",
            "--ems-versions",
            "7.2.0",
            "--client-versions",
            "7.2.0",
            "--actions",
            "deny",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "PASSED" in completed.stdout
    assert "wrong-host" in completed.stdout


def test_new_versions_are_run(
    lab_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "run",
            "--lab-dir",
            str(lab_dir),
            "--kinds",
            "correct-fqdn",
            "--client-versions",
            "9.9.9",
            "--list",
        ]
    )

    lines = capsys.readouterr().out.splitlines()
    assert code == 0
    assert "reference:correct-fqdn/ems-7.2.0-on/client-9.9.9/any-action" in lines


def test_empty_selection_is_usage_error(
    lab_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    selection = tmp_path / "none.toml"
    selection.write_text("[select]\nids = []\n", encoding="utf-8")

    code = main(["run", "--lab-dir", str(lab_dir), "--scenarios", str(selection)])

    err = capsys.readouterr().err.strip()
    assert code == 2
    assert "contains no scenario" in err
    assert "ids (empty)" in err
    assert len(err.splitlines()) == 1


def test_unknown_kind_lists_no_kinds(
    lab_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["run", "--lab-dir", str(lab_dir), "--kinds", "nosuch"])

    err = capsys.readouterr().err
    assert code == 2
    assert "run 'ems-harness certs list' for the known kinds" in err
    assert "correct-fqdn" not in err


def test_help_says_versions_replace_defaults(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(["run", "--help"])

    text = " ".join(capsys.readouterr().out.split())
    assert code == 0
    assert "replace the default list" in text


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("sh -c 'unbalanced", "No closing quotation"),
        ("", "the command template is empty"),
        ("openssl s_client -connect {hst}:{port}", "unknown placeholder {hst}"),
    ],
)
def test_bad_command_template_exit_2(
    tmp_path: Path, template: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    lab = tmp_path / "lab"

    code = main(
        ["run", "--lab-dir", str(lab), "--client", "command", "--command", template]
    )

    err = capsys.readouterr().err.strip()
    assert code == 2
    assert "--command" in err
    assert message in err
    assert len(err.splitlines()) == 1
    assert not lab.exists()


@pytest.mark.parametrize(
    ("option", "path"),
    [
        ("--report-dir", "/proc/nope"),
        ("--json", "/proc/nope/r.json"),
        ("--markdown", "/proc/nope/r.md"),
    ],
)
def test_unwritable_report_fails_first(
    tmp_path: Path, option: str, path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    lab = tmp_path / "lab"

    code = main(["run", "--lab-dir", str(lab), option, path])

    err = capsys.readouterr().err.strip()
    assert code == 2
    assert option in err
    assert "/proc/nope" in err
    assert len(err.splitlines()) == 1
    # The check runs before the lab is built, so nothing was run.
    assert not lab.exists()


def test_report_folder_is_created(lab_dir: Path, tmp_path: Path) -> None:
    report = tmp_path / "new" / "deeper" / "r.json"

    code = main(
        [
            "run",
            "--lab-dir",
            str(lab_dir),
            "--kinds",
            "correct-fqdn",
            "--actions",
            "deny",
            "--quiet",
            "--json",
            str(report),
        ]
    )

    assert code == 0
    assert json.loads(report.read_text())["passed"] is True


PROGRAMS = ("curl", "openssl", "gnutls-cli")
NARROW = [
    "--kinds",
    "correct-fqdn",
    "--ems-versions",
    "7.2.0",
    "--client-versions",
    "7.2.0",
    "--actions",
    "deny",
    "--no-regressions",
]


@pytest.fixture
def path_without_node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point PATH at a folder with the other client programs but no node."""
    folder = tmp_path / "bin"
    folder.mkdir()
    for program in PROGRAMS:
        found = shutil.which(program)
        if found is None:
            pytest.skip(f"{program} is not installed")
        (folder / program).symlink_to(found)
    monkeypatch.setenv("PATH", str(folder))
    return folder


@pytest.mark.network_tools
def test_all_skips_missing_program(
    lab_dir: Path,
    tmp_path: Path,
    path_without_node: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    reports = tmp_path / "reports"

    code = main(
        [
            "run",
            "--lab-dir",
            str(lab_dir),
            "--client",
            "all",
            *NARROW,
            "--quiet",
            "--report-dir",
            str(reports),
        ]
    )

    out = capsys.readouterr().out
    assert "skipped node" in out
    assert "install Debian package nodejs" in out
    assert "PASSED" in out
    data = json.loads((reports / "report.json").read_text())
    node = [r for r in data["results"] if r["client"] == "node"]
    assert node
    assert {r["status"] for r in node} == {"skipped"}
    assert "install Debian package nodejs" in node[0]["detail"]
    assert data["passed"] is True
    assert {"curl", "openssl", "gnutls"} <= set(data["by_client"])
    junit = ET.parse(reports / "junit.xml").getroot()
    assert junit.get("skipped") == str(len(node))
    assert "nodejs" in (reports / "report.md").read_text()
    assert "nodejs" in (reports / "report.html").read_text()
    assert code == 0


@pytest.mark.network_tools
@pytest.mark.parametrize("clients", ["node", "all,node"])
def test_named_missing_program_fails(
    lab_dir: Path, path_without_node: Path, clients: str
) -> None:
    code = main(["run", "--lab-dir", str(lab_dir), "--client", clients, *NARROW, "-q"])

    assert code == 1


def test_help_explains_all(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", "--help"])

    text = " ".join(capsys.readouterr().out.split())
    assert code == 0
    assert "every real client found on this machine" in text
    assert "does not fail the run" in text
