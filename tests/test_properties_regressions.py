"""Regression cases that Hypothesis found, and the broken-matcher check.

Every JSON file directly under ``fixtures/hypothesis/`` whose ``property`` is
``identity`` is one identity case: the reference identity, the leaf's names,
the ``cn_fallback`` mode and the right result. :func:`test_regression_case`
issues the leaf and checks both the oracle and the reference matcher against
it, so a failure found once is checked on every run, whatever the Hypothesis
database holds.

:func:`~harness.hypothesis_fixtures.record_identity_failures` writes such a
file whenever an identity property fails;
:func:`test_broken_matcher_is_caught_and_shrinks` and
:func:`test_failing_property_writes_one_file` show the loop end to end with a
matcher that lets a wildcard cover two labels.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509
from hypothesis import HealthCheck, find, given, settings

from harness.endpoint import identity
from harness.hypothesis_fixtures import (
    DEFAULT_FIXTURES_DIR,
    FIXTURES_ENV,
    record_identity_failure,
    record_identity_failures,
)
from harness.model import CnFallback
from harness.oracle.standards import identity_matches
from harness.pki import Lab, LeafSpec
from harness.strategies import IdentityCase, identity_cases

REGRESSION_DIR = DEFAULT_FIXTURES_DIR
SEED_CASE = "identity-wildcard-covers-two-labels.json"

Matcher = Callable[[x509.Certificate, str, CnFallback], bool]


def load_case(path: Path) -> tuple[IdentityCase, CnFallback, bool]:
    """Read a regression file back into a case, its mode and the right result."""
    data = json.loads(path.read_text())
    dns = tuple(data["dns_names"])
    ips = tuple(data["ip_addresses"])
    leaf = LeafSpec(
        common_names=tuple(data["common_names"]),
        dns_names=dns,
        ip_addresses=ips,
        san_extension=bool(dns or ips),
    )
    case = IdentityCase(leaf, data["reference"])
    return case, CnFallback(data["cn_fallback"]), bool(data["expected_match"])


def _regression_files() -> list[Path]:
    # Scenario files share the folder; test_properties_decision replays them.
    return [
        path
        for path in sorted(REGRESSION_DIR.glob("*.json"))
        if json.loads(path.read_text()).get("property") == "identity"
    ]


@pytest.mark.parametrize("path", _regression_files(), ids=lambda p: p.stem)
def test_regression_case(cert_lab: Lab, path: Path) -> None:
    case, mode, expected = load_case(path)
    cert = cert_lab.issue(case.leaf).cert

    assert identity_matches(case.leaf, case.reference, mode) is expected
    assert identity.matches_reference(cert, case.reference, mode) is expected


def test_regression_folder_has_seed_case() -> None:
    assert (REGRESSION_DIR / SEED_CASE) in _regression_files()


# -- a deliberately broken matcher -----------------------------------------


def wildcard_covers_many(
    cert: x509.Certificate, reference: str, cn_fallback: CnFallback
) -> bool:
    """Match like the reference matcher, but let ``*`` cover several labels."""
    if ORIGINAL_MATCHER(cert, reference, cn_fallback):
        return True
    try:
        labels = identity.reference_labels(reference)
    except identity.InvalidReference:
        return False
    for name in identity.san_dns_names(cert):
        parts = name.lower().split(".")
        tail = parts[1:]
        wildcard = parts[0] == "*" and len(tail) >= 2
        if wildcard and len(labels) > len(parts) and labels[-len(tail) :] == tail:
            return True
    return False


ORIGINAL_MATCHER: Matcher = identity.matches_reference


@pytest.fixture
def broken_matcher(monkeypatch: pytest.MonkeyPatch) -> Iterator[Matcher]:
    """Replace the client's matcher, wherever a module imported it, for a test."""
    for module in list(sys.modules.values()):
        if not getattr(module, "__name__", "").startswith("harness.endpoint"):
            continue
        if getattr(module, "matches_reference", None) is ORIGINAL_MATCHER:
            monkeypatch.setattr(module, "matches_reference", wildcard_covers_many)
    yield wildcard_covers_many


@pytest.mark.slow
def test_broken_matcher_is_caught_and_shrinks(
    cert_lab: Lab, broken_matcher: Matcher, tmp_path: Path
) -> None:
    mode = CnFallback.WHEN_NO_SAN
    # Shrinking retries the same leaf many times; issuing it once is enough.
    certs: dict[LeafSpec, x509.Certificate] = {}

    def disagrees(case: IdentityCase) -> bool:
        if case.leaf not in certs:
            certs[case.leaf] = cert_lab.issue(case.leaf).cert
        cert = certs[case.leaf]
        declared = identity_matches(case.leaf, case.reference, mode)
        return identity.matches_reference(cert, case.reference, mode) != declared

    shrunk = find(
        identity_cases(),
        disagrees,
        settings=settings(
            max_examples=5000,
            database=None,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )

    assert shrunk.reference == "a.a.a.a"
    assert shrunk.leaf.dns_names == ("*.a.a",)
    assert shrunk.leaf.common_names == ()
    assert shrunk.leaf.ip_addresses == ()
    path = record_identity_failure(
        "identity-wildcard-covers-two-labels",
        shrunk,
        mode,
        "a wildcard covers exactly one label, never two",
        tmp_path,
    )
    assert json.loads(path.read_text()) == json.loads(
        (REGRESSION_DIR / SEED_CASE).read_text()
    )


@pytest.mark.slow
def test_failing_property_writes_one_file(
    cert_lab: Lab,
    broken_matcher: Matcher,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    import test_properties_identity as properties

    monkeypatch.setattr(properties, "matches_reference", broken_matcher)
    monkeypatch.setenv(FIXTURES_ENV, str(tmp_path))
    mode = CnFallback.WHEN_NO_SAN
    oracle_property = properties.test_oracle_agrees_with_matcher.hypothesis.inner_test

    # The property's own body, run with enough examples to find the bug.
    @settings(
        max_examples=5000,
        database=None,
        deadline=None,
        report_multiple_bugs=False,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(case=identity_cases())
    def property_with_broken_matcher(case: IdentityCase) -> None:
        oracle_property(cert_lab=cert_lab, mode=mode, case=case)

    with pytest.raises(AssertionError, match="oracle False, matcher True"):
        property_with_broken_matcher()

    written = sorted(tmp_path.iterdir())
    assert len(written) == 1
    record = json.loads(written[0].read_text())
    assert record["name"] == written[0].stem
    assert record["reference"] == "a.a.a.a"
    assert record["dns_names"] == ["*.a.a"]
    assert record["common_names"] == []
    assert record["ip_addresses"] == []
    assert record["cn_fallback"] == mode.value
    assert record["expected_match"] is False
    assert "test_oracle_agrees_with_matcher" in record["note"]


def test_recorder_outside_hypothesis_writes_nothing(tmp_path: Path) -> None:
    case, mode, _ = load_case(REGRESSION_DIR / SEED_CASE)

    with record_identity_failures(case, mode, "no property", folder=tmp_path):
        pass
    with (
        pytest.raises(AssertionError),
        record_identity_failures(case, mode, "no property", folder=tmp_path),
    ):
        raise AssertionError("outside Hypothesis")

    assert list(tmp_path.iterdir()) == []
