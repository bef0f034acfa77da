"""The public strategies: valid values, coverage, and what they shrink to."""

from __future__ import annotations

import datetime as dt

from hypothesis import find, given, settings

from harness import strategies as hs
from harness.ems.settings import EmsSettings
from harness.model import Action
from harness.oracle.decision import Scenario
from harness.oracle.standards import identity_matches
from harness.pki import LeafSpec
from harness.versions import has_feature

BUILT_AT = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
QUICK = settings(database=None, max_examples=2000)


@given(version=hs.versions(feature=False))
def test_legacy_versions_lack_feature(version: str) -> None:
    assert not has_feature(version)


@given(version=hs.versions(feature=True))
def test_new_versions_have_feature(version: str) -> None:
    assert has_feature(version)


@given(settings_value=hs.ems_settings())
def test_ems_settings_validate(settings_value: EmsSettings) -> None:
    settings_value.validate()


def test_shrink_targets() -> None:
    assert find(hs.versions(), lambda v: True) == "6.4.7"
    assert find(hs.versions(feature=False), lambda v: True) == "6.4.6"
    assert find(hs.actions(), lambda a: True) is Action.ALLOW
    assert find(hs.reference_identities(), lambda r: True) == "0.0.0.0"
    assert find(hs.reference_identities(), lambda r: ":" not in r) == "a.a"
    leaf = find(hs.leaf_specs(), lambda spec: True)
    assert leaf == LeafSpec(dns_names=("a.a",))
    case = find(hs.identity_cases(), lambda c: True)
    assert case == hs.IdentityCase(LeafSpec(ip_addresses=("0.0.0.0",)), "0.0.0.0")
    case = find(
        hs.identity_cases(),
        lambda c: (
            ":" not in c.reference and "." in c.reference and not c.leaf.ip_addresses
        ),
    )
    assert case == hs.IdentityCase(LeafSpec(dns_names=("a.a",)), "a.a")


def test_identity_cases_cover_both_results() -> None:
    def matches(case: hs.IdentityCase) -> bool:
        return identity_matches(case.leaf, case.reference, "when-no-san")

    find(hs.identity_cases(), matches, settings=QUICK)
    find(hs.identity_cases(), lambda c: not matches(c), settings=QUICK)


def test_presented_names_reach_every_form() -> None:
    # A wildcard over a public suffix, in an A-label, a NUL byte, a trailing dot.
    checks = (
        lambda n: n.startswith("*.") and n.count(".") == 1,
        lambda n: "xn--*" in n,
        lambda n: "\x00" in n,
        lambda n: n.endswith("."),
    )
    for check in checks:
        find(
            hs.identity_cases(),
            lambda c, check=check: any(check(n) for n in c.leaf.dns_names),
            settings=QUICK,
        )


@given(scenario=hs.scenarios(BUILT_AT))
def test_scenarios_have_ids(scenario: Scenario) -> None:
    assert scenario.id
