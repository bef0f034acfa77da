"""Fleet simulation: paths, admin steps, invariants, regression paths and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import main
from harness.fleet import (
    PathError,
    Simulation,
    SimulationResult,
    load_path,
    parse_path,
    recommended_path,
)
from harness.fleet.invariants import (
    FABRIC_DOWN,
    LEGACY_OFFLINE,
    NEW_OFFLINE,
    NEW_PROMPTED,
    breakages,
    check_expectations,
    recommended_violations,
)
from harness.fleet.model import build_endpoints, parse_mix
from harness.fleet.simulation import ACME_RENEW_AFTER
from harness.fleet.tls import TlsConnector
from harness.model import Action
from harness.pki import Lab
from harness.versions import has_feature

PATHS = Path(__file__).resolve().parent.parent / "fixtures" / "paths"

# What each regression path must break, by file name.
REGRESSIONS: dict[str, set[str]] = {
    "toggle-before-upgrade.toml": {LEGACY_OFFLINE},
    "warn-before-valid-cert.toml": {NEW_PROMPTED},
    "deny-before-valid-cert.toml": {NEW_OFFLINE},
    "wrong-fqdn-import.toml": {NEW_PROMPTED, NEW_OFFLINE},
    "straggler-group.toml": {LEGACY_OFFLINE},
}


def _run(
    data: dict[str, object], lab: Lab, endpoints: int | None = None
) -> SimulationResult:
    return Simulation(parse_path(data), lab, endpoints=endpoints).run()


def _steps(*tables: dict[str, object], **top: object) -> dict[str, object]:
    data: dict[str, object] = {
        "fleet": {
            "endpoints": 8,
            "mix": {"6.4.6": 1, "7.0.1": 1, "6.4.7": 1, "7.0.2": 1},
        }
    }
    data.update(top)
    data["step"] = list(tables)
    return data


# -- recommended path -------------------------------------------------------


def test_recommended_path_invariants_hold(cert_lab: Lab) -> None:
    result = Simulation(recommended_path(), cert_lab, endpoints=200).run()

    assert recommended_violations(result) == []
    assert result.connections == 200 * len(result.steps)


def test_recommended_new_never_prompted_or_offline(cert_lab: Lab) -> None:
    result = Simulation(recommended_path(), cert_lab, endpoints=40).run()

    for step in result.steps:
        for version, counts in step.by_version.items():
            if has_feature(version):
                assert counts.prompted == 0, (step.label, version)
                assert counts.offline == 0, (step.label, version)


def test_recommended_ends_valid_under_deny(cert_lab: Lab) -> None:
    result = Simulation(recommended_path(), cert_lab, endpoints=40).run()
    last = result.steps[-1]

    assert last.profile_action is Action.DENY
    assert last.presented == "imported"
    assert last.online == 40
    assert set(last.by_version) == {"6.4.7", "7.0.2"}


def test_recommended_path_over_tls(cert_lab: Lab, tmp_path: Path) -> None:
    connector = TlsConnector(cert_lab, state_dir=tmp_path)
    simulation = Simulation(
        recommended_path(), cert_lab, connector=connector, endpoints=40, workers=8
    )

    result = simulation.run()

    assert result.disagreements == []
    assert recommended_violations(result) == []
    assert connector.handshakes == result.connections == 40 * len(result.steps)
    assert len(connector.endpoint_records) == 40
    assert {r.version for r in connector.endpoint_records.values()} == {
        "6.4.7",
        "7.0.2",
    }


@pytest.mark.parametrize(
    "name", ["warn-before-valid-cert.toml", "wrong-fqdn-import.toml"]
)
def test_regression_path_over_tls(cert_lab: Lab, tmp_path: Path, name: str) -> None:
    connector = TlsConnector(cert_lab, state_dir=tmp_path)
    path = load_path(PATHS / name)

    result = Simulation(path, cert_lab, connector=connector, endpoints=8).run()

    assert result.disagreements == []
    assert check_expectations(result) == []


def test_legacy_online_until_toggle(cert_lab: Lab) -> None:
    result = load_and_run(cert_lab, "straggler-group.toml")
    toggle_at = next(step.index for step in result.steps if step.toggle)

    for step in result.steps:
        legacy_offline = step.offline_ids & step.legacy_ids
        if step.index < toggle_at:
            assert not legacy_offline, step.label
        else:
            assert step.offline_ids == step.legacy_ids, step.label
            assert step.legacy_ids, step.label


def test_violations_found_on_bad_order(cert_lab: Lab) -> None:
    result = load_and_run(cert_lab, "toggle-before-upgrade.toml")

    violations = recommended_violations(result)

    assert violations == [
        "step 5 (toggle on too early): toggle turned on while 4 legacy endpoints remain"
    ]


def load_and_run(lab: Lab, name: str) -> SimulationResult:
    return Simulation(load_path(PATHS / name), lab).run()


# -- regression paths --------------------------------------------------------


def test_every_fixture_path_is_a_regression() -> None:
    assert {p.name for p in PATHS.glob("*.toml")} == set(REGRESSIONS)


@pytest.mark.parametrize("name", sorted(REGRESSIONS))
def test_regression_path_expectations(cert_lab: Lab, name: str) -> None:
    result = load_and_run(cert_lab, name)

    assert check_expectations(result) == []


@pytest.mark.parametrize("name", sorted(REGRESSIONS))
def test_regression_path_breaks(cert_lab: Lab, name: str) -> None:
    result = load_and_run(cert_lab, name)

    found = set().union(*breakages(result).values()) - {FABRIC_DOWN}

    assert found == REGRESSIONS[name]


def test_expectation_mismatch_reported(cert_lab: Lab) -> None:
    data = _steps({"op": "toggle", "on": True, "expect": {"offline": []}})
    data["ems"] = {"version": "7.0.2"}
    data["step"] = [
        {"op": "import-certificate", "kind": "correct-fqdn"},
        {"op": "toggle", "on": True, "expect": {"offline": []}},
    ]

    mismatches = check_expectations(_run(data, cert_lab))

    assert mismatches == [
        "step 2 (use SSL certificate for endpoint control on): expected offline "
        "[], got ['6.4.6', '7.0.1']"
    ]


# -- admin steps ---------------------------------------------------------------


def test_toggle_rejected_before_6_4_7(cert_lab: Lab) -> None:
    result = _run(_steps({"op": "toggle", "on": True}), cert_lab)
    step = result.steps[1]

    assert step.error is not None
    assert "does not exist on EMS 6.4.6" in step.error
    assert step.toggle is None
    assert step.offline == 0


def test_acme_import_needs_remote_https(cert_lab: Lab) -> None:
    data = _steps(
        {"op": "upgrade-ems", "version": "7.0.2"},
        {"op": "import-certificate", "acme": True, "auto_renew": True},
    )

    step = _run(data, cert_lab).steps[2]

    assert step.error is not None
    assert "remote_https_access" in step.error


def test_redirect_locked_by_auto_renew(cert_lab: Lab) -> None:
    data = _steps(
        {"op": "configure-ems", "remote_https_access": True, "http_redirect": True},
        {"op": "import-certificate", "acme": True, "auto_renew": True},
        {"op": "configure-ems", "http_redirect": False},
    )

    steps = _run(data, cert_lab).steps

    assert steps[2].error is None
    assert steps[3].error is not None
    assert "auto-renew" in steps[3].error


def _acme_path(firewall: str) -> dict[str, object]:
    renew_days = ACME_RENEW_AFTER.days
    return _steps(
        {"op": "upgrade-ems", "version": "7.0.2"},
        {"op": "set-profile-action", "action": "allow"},
        {"op": "configure-ems", "remote_https_access": True, "http_redirect": True},
        {"op": "import-certificate", "acme": True, "auto_renew": True},
        {"op": "reauthorize-fabric"},
        {"op": "toggle", "on": True},
        {"op": "advance-clock", "by": f"{renew_days - 1}d"},
        {"op": "advance-clock", "by": "1d"},
        {"op": "renew-acme"},
        {"op": "reauthorize-fabric"},
        fabric={"firewall_version": firewall},
        fleet={"endpoints": 8, "mix": {"6.4.7": 1, "7.0.2": 1}},
    )


def test_acme_renewal_takes_pinned_fabric_down(cert_lab: Lab) -> None:
    steps = _run(_acme_path("7.2.3"), cert_lab).steps

    assert [s.fabric_up for s in steps[4:]] == [
        False,  # the ACME import changed the certificate
        True,  # re-authorized
        True,
        True,  # no renewal yet
        False,  # auto-renewal
        False,  # manual renewal
        True,  # re-authorized
    ]
    assert steps[8].events == ["ACME auto-renewal"]
    assert steps[8].leaf_sha256 != steps[7].leaf_sha256


def test_acme_renewal_trusted_from_7_2_4(cert_lab: Lab) -> None:
    steps = _run(_acme_path("7.2.4"), cert_lab).steps

    assert all(s.fabric_up for s in steps[5:])


def test_acme_renewal_keeps_endpoints_silent(cert_lab: Lab) -> None:
    steps = _run(_acme_path("7.2.4"), cert_lab).steps

    assert all(s.prompted == 0 and s.offline == 0 for s in steps)


def test_renew_without_acme_rejected(cert_lab: Lab) -> None:
    step = _run(_steps({"op": "renew-acme"}), cert_lab).steps[1]

    assert step.error == "no ACME-managed certificate to renew; import one first"


def test_scheduled_deployment_waits_for_clock(cert_lab: Lab) -> None:
    data = _steps(
        {
            "op": "build-installer",
            "installer": "i",
            "version": "7.0.2",
            "action": "allow",
        },
        {"op": "deploy-installer", "installer": "i", "groups": ["all"], "at": "3h"},
        {"op": "advance-clock", "by": "2h"},
        {"op": "advance-clock", "by": "1h"},
    )

    steps = _run(data, cert_lab).steps

    assert set(steps[3].by_version) == {"6.4.6", "7.0.1", "6.4.7", "7.0.2"}
    assert set(steps[4].by_version) == {"7.0.2"}
    assert steps[4].events == ["deployed i to 8 endpoints"]


def test_deploy_unknown_group_rejected(cert_lab: Lab) -> None:
    data = _steps(
        {
            "op": "build-installer",
            "installer": "i",
            "version": "7.0.2",
            "action": "allow",
        },
        {"op": "deploy-installer", "installer": "i", "groups": ["nope"]},
    )

    step = _run(data, cert_lab).steps[2]

    assert step.error is not None
    assert "unknown group 'nope'" in step.error


def test_deploy_unknown_installer_rejected(cert_lab: Lab) -> None:
    data = _steps({"op": "deploy-installer", "installer": "x", "groups": ["all"]})

    step = _run(data, cert_lab).steps[1]

    assert step.error == "unknown installer 'x'; built: none built yet"


def test_duplicate_installer_rejected(cert_lab: Lab) -> None:
    build = {
        "op": "build-installer",
        "installer": "i",
        "version": "7.0.2",
        "action": "allow",
    }

    step = _run(_steps(build, build), cert_lab).steps[2]

    assert step.error is not None
    assert "names must be unique" in step.error


def test_prompt_denied_stays_offline(cert_lab: Lab) -> None:
    data = _steps(
        {"op": "upgrade-ems", "version": "7.0.2"},
        {"op": "set-profile-action", "action": "warn"},
        {"op": "advance-clock", "by": "1h"},
        prompt_answer="deny",
    )

    steps = _run(data, cert_lab).steps

    for step in steps[2:]:
        assert step.by_version["7.0.2"].prompted == 2
        assert step.by_version["7.0.2"].offline == 2


def test_fleet_size_and_mix_override(cert_lab: Lab) -> None:
    result = Simulation(
        recommended_path(), cert_lab, endpoints=10, mix={"6.4.6": 1, "7.0.2": 4}
    ).run()

    assert result.steps[0].by_version["6.4.6"].total == 2
    assert result.steps[0].by_version["7.0.2"].total == 8


# -- fleet model ------------------------------------------------------------


def test_build_endpoints_splits_by_weight() -> None:
    endpoints = build_endpoints(10, {"6.4.6": 1, "7.0.2": 2}, Action.ALLOW)

    versions = [e.version for e in endpoints]

    assert versions.count("6.4.6") == 4
    assert versions.count("7.0.2") == 6
    assert len({e.endpoint_id for e in endpoints}) == 10


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("6.4.6", "expected VERSION=WEIGHT"),
        ("6.4.6=x", "expected an integer"),
        ("6.4.6=0", "use > 0"),
        ("six=1", "invalid version"),
        ("", "empty version mix"),
    ],
)
def test_parse_mix_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_mix(text)


# -- path files ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("step = [", "invalid TOML"),
        ("name = 'x'", "no \\[\\[step\\]\\] tables"),
        ("[[step]]\nop = 'reboot'", "step 1: unknown op 'reboot'"),
        ("[[step]]\nversion = '7.0.2'", "step 1: missing op"),
        ("[[step]]\nop = 'toggle'", "step 1: op toggle needs key 'on'"),
        ("[[step]]\nop = 'toggle'\non = 'yes'", "step 1: invalid on = 'yes'"),
        (
            "[[step]]\nop = 'toggle'\non = true\ncolour = 1",
            "step 1: unknown key 'colour' = 1",
        ),
        (
            "[[step]]\nop = 'set-profile-action'\naction = 'block'",
            "step 1: invalid action 'block'",
        ),
        ("[[step]]\nop = 'upgrade-ems'\nversion = '7.x'", "invalid version '7.x'"),
        ("[[step]]\nop = 'advance-clock'\nby = '2 weeks'", "invalid duration"),
        (
            "[[step]]\nop = 'renew-acme'\n[[step]]\nop = 'bogus'",
            "step 2: unknown op 'bogus'",
        ),
        (
            "[[step]]\nop = 'renew-acme'\nexpect = { broken = [] }",
            "unknown expect key 'broken'",
        ),
        ("color = 1\n[[step]]\nop = 'renew-acme'", "unknown key 'color' = 1"),
        (
            "[fleet]\nmix = { '6.4.6' = -1 }\n[[step]]\nop = 'renew-acme'",
            "invalid weight -1",
        ),
        (
            "[[step]]\nop = 'import-certificate'\nauto_renew = true",
            "auto-renew needs acme = true",
        ),
    ],
)
def test_path_file_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")

    with pytest.raises(PathError, match=message) as caught:
        load_path(path)

    assert str(caught.value).startswith(str(path))
    assert "\n" not in str(caught.value)


def test_missing_path_file(tmp_path: Path) -> None:
    with pytest.raises(PathError, match="cannot read"):
        load_path(tmp_path / "absent.toml")


def test_path_defaults_from_file_name(tmp_path: Path) -> None:
    path = tmp_path / "my-path.toml"
    path.write_text("[[step]]\nop = 'renew-acme'\n", encoding="utf-8")

    loaded = load_path(path)

    assert loaded.name == "my-path"
    assert loaded.endpoints == 100
    assert loaded.installer_action is Action.ALLOW


# -- CLI -------------------------------------------------------------------------


def test_cli_writes_json_and_html(cert_lab: Lab, tmp_path: Path) -> None:
    json_path = tmp_path / "run.json"
    html_path = tmp_path / "run.html"

    code = main(
        [
            "simulate",
            "upgrade",
            "--oracle-only",
            "--endpoints",
            "20",
            "--mix",
            "6.4.6=1,7.0.2=1",
            "--lab-dir",
            str(cert_lab.directory),
            "--json",
            str(json_path),
            "--html",
            str(html_path),
        ]
    )

    data = json.loads(json_path.read_text(encoding="utf-8"))
    page = html_path.read_text(encoding="utf-8")
    assert code == 0
    assert data["path"] == "recommended"
    assert data["endpoints"] == 20
    assert data["violations"] == []
    assert data["steps"][0]["by_version"]["6.4.6"]["online"] == 10
    assert "<svg" in page
    assert "src=" not in page
    assert "href=" not in page
    assert "<script" not in page


def test_cli_fails_on_expectation_mismatch(cert_lab: Lab, tmp_path: Path) -> None:
    path = tmp_path / "wrong.toml"
    path.write_text(
        "[ems]\nversion = '7.0.2'\n"
        "[[step]]\nop = 'toggle'\non = true\nexpect = { offline = [] }\n",
        encoding="utf-8",
    )

    code = main(
        [
            "simulate",
            "upgrade",
            "--oracle-only",
            "--endpoints",
            "8",
            "--path",
            str(path),
            "--lab-dir",
            str(cert_lab.directory),
        ]
    )

    assert code == 1


def test_cli_bad_path_is_one_line(cert_lab: Lab, tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[[step]]\nop = 'reboot'\n", encoding="utf-8")

    process = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness",
            "simulate",
            "upgrade",
            "--path",
            str(path),
            "--lab-dir",
            str(cert_lab.directory),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert process.returncode == 1
    assert process.stderr.strip().count("\n") == 0
    assert f"{path} step 1: unknown op 'reboot'" in process.stderr


def test_cli_bad_mix(cert_lab: Lab) -> None:
    code = main(
        ["simulate", "upgrade", "--mix", "6.4.6", "--lab-dir", str(cert_lab.directory)]
    )

    assert code == 2


def test_cli_help_names_lab_dir(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["simulate", "upgrade", "--help"])

    out = capsys.readouterr().out
    assert code == 0
    assert "--lab-dir" in out
    assert " --lab " not in out


def test_cli_lab_alias_still_works(cert_lab: Lab, tmp_path: Path) -> None:
    json_path = tmp_path / "run.json"

    code = main(
        [
            "simulate",
            "upgrade",
            "--oracle-only",
            "--endpoints",
            "4",
            "--lab",
            str(cert_lab.directory),
            "--json",
            str(json_path),
        ]
    )

    assert code == 0
    assert json_path.exists()


def test_cli_lab_and_lab_dir_conflict(
    cert_lab: Lab, capsys: pytest.CaptureFixture[str]
) -> None:
    lab = str(cert_lab.directory)

    code = main(["simulate", "upgrade", "--lab", lab, "--lab-dir", lab])

    assert code == 2
    assert "give --lab-dir only" in capsys.readouterr().err
