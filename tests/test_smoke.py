"""Smoke tests: the package imports and the CLI answers."""

from harness.cli import main
from harness.pki import CATALOGUE, Lab


def test_cli_version(capsys) -> None:
    code = main(["--version"])

    assert code == 0
    assert "ems-harness" in capsys.readouterr().out


def test_lab_fixture_builds_every_kind(cert_lab: Lab) -> None:
    assert set(cert_lab.kinds) == set(CATALOGUE)
    for built in cert_lab.kinds.values():
        assert built.key_path.stat().st_mode & 0o777 == 0o600
