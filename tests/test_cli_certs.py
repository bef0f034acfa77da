"""``certs list`` and ``certs build``, in-process and as a real process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
import pytest

from harness.cli import EXIT_USAGE, _register_commands, cli, main
from harness.pki import CATALOGUE

COMMANDS = [[], ["certs"], ["certs", "list"], ["certs", "build"]]


def test_list_table_names_every_kind(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["certs", "list"])

    out = capsys.readouterr().out
    assert code == 0
    assert f"{len(CATALOGUE)} certificate kinds" in out
    for name in CATALOGUE:
        assert name in out


def test_list_json_has_every_kind(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["certs", "list", "--json"])

    rows = json.loads(capsys.readouterr().out)
    assert code == 0
    assert [row["kind"] for row in rows] == list(CATALOGUE)
    for row in rows:
        kind = CATALOGUE[row["kind"]]
        assert row["description"] == kind.description
        assert row["reference_identity"] == kind.reference_identity
        assert row["tags"] == list(kind.tags)


def test_build_writes_manifest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "certs"

    code = main(["certs", "build", "--out", str(out_dir), "--kinds", "correct-fqdn"])

    assert code == 0
    manifest = json.loads((out_dir / "manifest.json").read_text())
    assert [entry["kind"] for entry in manifest["kinds"]] == ["correct-fqdn"]
    assert (out_dir / "kinds" / "correct-fqdn.key.pem").stat().st_mode & 0o777 == (
        0o600
    )
    assert "built 1 kind in" in capsys.readouterr().out


def test_second_build_says_reused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "certs"
    main(["certs", "build", "--out", str(out_dir), "--kinds", "correct-fqdn"])
    capsys.readouterr()

    code = main(["certs", "build", "--out", str(out_dir), "--kinds", "correct-fqdn"])

    out = capsys.readouterr().out
    assert code == 0
    assert "reused the build from" in out
    assert "with 1 kind (--force rebuilds it)" in out


def test_forced_build_says_built(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "certs"
    main(["certs", "build", "--out", str(out_dir), "--kinds", "correct-fqdn"])
    capsys.readouterr()

    code = main(
        ["certs", "build", "--out", str(out_dir), "--kinds", "correct-fqdn", "--force"]
    )

    assert code == 0
    assert "built 1 kind in" in capsys.readouterr().out


def test_build_unknown_kind_is_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "certs"

    code = main(["certs", "build", "--out", str(out_dir), "--kinds", "bogus,x"])

    err = capsys.readouterr().err
    assert code == EXIT_USAGE
    assert "unknown kind 'bogus'" in err
    assert "certs list" in err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    assert not out_dir.exists()


def test_build_invalid_key_type_is_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["certs", "build", "--out", str(tmp_path), "--key-type", "dsa"])

    err = capsys.readouterr().err
    assert code == EXIT_USAGE
    assert "'dsa'" in err


def test_build_out_is_file_is_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    regular = tmp_path / "afile"
    regular.write_text("x\n")

    code = main(["certs", "build", "--out", str(regular), "--kinds", "correct-fqdn"])

    err = capsys.readouterr().err
    assert code == EXIT_USAGE
    assert f"'{regular}' is a file, not a folder" in err
    assert len(err.strip().splitlines()) == 1, err


def test_build_empty_out_is_usage_error(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)

    code = main(["certs", "build", "--out", "", "--kinds", "correct-fqdn"])

    err = capsys.readouterr().err
    assert code == EXIT_USAGE
    assert "'--out': '' is empty" in err
    assert "give a folder path" in err
    assert len(err.strip().splitlines()) == 1, err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kinds", ["", " , "], ids=["empty", "only-commas"])
def test_build_empty_kinds_is_usage_error(
    kinds: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "certs"

    code = main(["certs", "build", "--out", str(out_dir), "--kinds", kinds])

    err = capsys.readouterr().err
    assert code == EXIT_USAGE
    assert f"'--kinds': {kinds!r} names no kind" in err
    assert "omit --kinds for all kinds" in err
    assert len(err.strip().splitlines()) == 1, err
    assert not out_dir.exists()


def test_build_out_below_file_names_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "afile"
    blocker.write_text("not a folder\n")
    out_dir = blocker / "sub"

    code = main(["certs", "build", "--out", str(out_dir), "--kinds", "correct-fqdn"])

    err = capsys.readouterr().err
    assert code == 1
    assert f"cannot create or write the lab folder {out_dir}" in err
    assert f"{blocker} is a file, not a folder" in err
    assert "choose an --out folder that can be created and written" in err
    assert "Errno" not in err
    assert len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("key_type", ["RSA", "Ecdsa"])
def test_build_key_type_any_case(
    key_type: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "certs"
    args = ["--out", str(out_dir), "--kinds", "correct-fqdn", "--key-type", key_type]

    code = main(["certs", "build", *args])

    assert code == 0, capsys.readouterr().err
    manifest = json.loads((out_dir / "manifest.json").read_text())
    assert manifest["key_type"] == key_type.lower()


def _command_paths(group: click.Group, prefix: list[str]) -> list[list[str]]:
    paths = [prefix]
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            paths += _command_paths(command, [*prefix, name])
        else:
            paths.append([*prefix, name])
    return paths


def test_unknown_option_hints_help_everywhere(
    capsys: pytest.CaptureFixture[str],
) -> None:
    _register_commands()
    paths = _command_paths(cli, [])
    assert ["certs", "build"] in paths

    for path in paths:
        code = main([*path, "--bogus"])

        err = capsys.readouterr().err
        command = " ".join(["ems-harness", *path])
        assert code == EXIT_USAGE, path
        assert "No such option" in err, path
        assert err.strip().endswith(f"Try '{command} --help' for help."), err
        assert len(err.strip().splitlines()) == 1, err


def test_group_without_command_prints_help(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(["certs"])

    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert code in (0, EXIT_USAGE)
    assert text.startswith("Usage: ems-harness certs")
    assert "Error:" not in text
    assert "for help." not in text


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "cli")
def test_help_on_each_command(
    command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code = main([*command, "--help"])

    out = capsys.readouterr().out
    assert code == 0
    assert out.startswith("Usage: ems-harness")
    if command == ["certs", "build"]:
        assert "--out" in out
        assert "--kinds" in out


def test_build_as_real_process(tmp_path: Path) -> None:
    out_dir = tmp_path / "certs"
    command = [sys.executable, "-m", "harness", "certs", "build", "--out", str(out_dir)]
    command += ["--kinds", "correct-fqdn,self-signed-leaf"]

    result = subprocess.run(
        command, capture_output=True, text=True, timeout=60, cwd=tmp_path
    )

    assert result.returncode == 0, result.stderr
    assert "built 2 kinds" in result.stdout
    manifest = json.loads((out_dir / "manifest.json").read_text())
    kinds = [entry["kind"] for entry in manifest["kinds"]]
    assert kinds == ["correct-fqdn", "self-signed-leaf"]


def test_bad_kinds_as_real_process(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "harness", "certs", "build"]
    command += ["--out", str(tmp_path / "certs"), "--kinds", "bogus"]

    result = subprocess.run(
        command, capture_output=True, text=True, timeout=60, cwd=tmp_path
    )

    assert result.returncode == EXIT_USAGE
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "unknown kind 'bogus'" in result.stderr
