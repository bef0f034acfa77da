"""The pytest plugin, as a downstream project sees it through ``pytest11``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

DOWNSTREAM_TEST = """
from harness.model import Action, OutcomeName


def test_valid_certificate_connects(ems_factory, endpoint_factory):
    ems = ems_factory(kind="correct-fqdn", profile_action="warn")
    client = endpoint_factory("7.2.0")

    observed = client.connect(ems.host, ems.port, servername="ems.example.com")

    assert observed.outcome is OutcomeName.CONNECTED_VALID


def test_wrong_host_is_refused_under_deny(ems_factory, endpoint_factory):
    ems = ems_factory(kind="wrong-host")
    client = endpoint_factory("7.2.0", action=Action.DENY, action_source="installer")

    observed = client.connect(ems.host, ems.port, servername="ems.example.com")

    assert not observed.connected
    assert ems.connections[-1].app_bytes_received == 0


def test_profile_is_registered():
    from hypothesis import settings

    assert settings().max_examples == settings.get_profile("dev").max_examples
"""


def test_downstream_file_passes(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HYPOTHESIS_PROFILE", raising=False)
    monkeypatch.delenv("CI", raising=False)
    pytester.makepyfile(test_downstream=DOWNSTREAM_TEST)

    result = pytester.runpytest_subprocess("-p", "no:randomly", "-q")

    result.assert_outcomes(passed=3)


def test_profiles_are_registered() -> None:
    from hypothesis import settings

    assert settings.get_profile("ci").max_examples >= 200
    assert settings.get_profile("ci").deadline is None
    assert settings.get_profile("thorough").max_examples > 200
    assert settings.get_profile("dev").max_examples < 200


def test_unknown_profile_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.hypothesis_profiles import load_profile_from_env

    monkeypatch.setenv("HYPOTHESIS_PROFILE", "nightly")

    with pytest.raises(ValueError, match="invalid HYPOTHESIS_PROFILE='nightly'"):
        load_profile_from_env()


@pytest.mark.parametrize(
    ("ci_value", "expected"),
    [("true", "ci"), ("1", "ci"), ("false", "dev"), ("0", "dev"), ("", "dev")],
)
def test_ci_variable_selects_profile(
    monkeypatch: pytest.MonkeyPatch, ci_value: str, expected: str
) -> None:
    from harness.hypothesis_profiles import load_profile_from_env

    monkeypatch.delenv("HYPOTHESIS_PROFILE", raising=False)
    monkeypatch.setenv("CI", ci_value)

    try:
        assert load_profile_from_env() == expected
    finally:
        monkeypatch.undo()
        load_profile_from_env()


def test_explicit_profile_beats_ci_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.hypothesis_profiles import load_profile_from_env

    monkeypatch.setenv("CI", "true")
    monkeypatch.setenv("HYPOTHESIS_PROFILE", "dev")

    try:
        assert load_profile_from_env() == "dev"
    finally:
        monkeypatch.undo()
        load_profile_from_env()


def _readme_example() -> str:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    match = re.search(r"<!-- plugin-example[^>]*-->\n```python\n(.*?)```", readme, re.S)
    assert match, "README.md lost its plugin-example block"
    return match.group(1)


def test_readme_example_passes(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_readme_example=_readme_example())

    result = pytester.runpytest_subprocess("-p", "no:randomly", "-q")

    result.assert_outcomes(passed=3)
