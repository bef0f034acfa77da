"""Decision properties: the laws of the decision table, and client = oracle.

The laws hold for every scenario:

* a valid certificate never prompts a client with standards validation;
* ``deny`` never connects to an invalid certificate;
* ``allow`` never prompts;
* a legacy client's decision depends only on the subject CN;
* clients 7.0.0 and 7.0.1 decide exactly as a legacy client.

They are checked on the oracle for many scenarios, and on the reference
client over real TLS 1.3 for fewer, where the observed outcome must also
equal the oracle's expected outcome. One mock EMS serves every example;
:meth:`~harness.ems.server.MockEms.set_certificate` swaps its certificate.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.ems.server import MockEms
from harness.endpoint.client import EndpointClient, Observation, PromptInfo
from harness.endpoint.memory import MemoryFile
from harness.hypothesis_fixtures import (
    DEFAULT_FIXTURES_DIR,
    FIXTURES_ENV,
    record_scenario_failures,
    scenario_from_record,
    scenario_record,
)
from harness.model import Action, ActionSource, Answer, OutcomeName, Reason
from harness.oracle.decision import (
    ExpectedOutcome,
    Remembered,
    Scenario,
    effective_action,
    expected_outcome,
    presented_certificate,
)
from harness.pki import Lab, LeafSpec
from harness.pki.kinds import CATALOGUE, CertKind
from harness.strategies import leaf_specs, scenarios, versions
from harness.versions import has_feature

BUILT_AT = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
# A scenario file kept under fixtures/hypothesis/, so the replay test always
# has a case: a remembered leaf that must connect without a prompt.
SEED_SCENARIO = "scenario-remembered-leaf-connects-silently.json"


def check_laws(
    scenario: Scenario, connected: bool, prompted: bool, reasons: list[Reason]
) -> None:
    """Assert the decision-table laws on one decision, expected or observed."""
    if not has_feature(scenario.client_version):
        assert not prompted, "a legacy client prompted"
        return
    action, _ = effective_action(scenario)
    if not reasons:
        assert connected, "a valid certificate was refused"
        assert not prompted, "a valid certificate prompted"
    if action is Action.DENY and reasons:
        assert not connected, f"deny connected despite {reasons}"
    if action is Action.ALLOW:
        assert not prompted, "allow prompted"


# -- laws on the oracle ----------------------------------------------------


@given(scenario=scenarios(BUILT_AT))
def test_oracle_obeys_laws(scenario: Scenario) -> None:
    expected = expected_outcome(scenario)

    check_laws(scenario, expected.connected, expected.prompted, expected.reasons)


@given(
    scenario=scenarios(BUILT_AT, client_versions=versions(feature=False)),
    other=leaf_specs(),
    data=st.data(),
)
def test_oracle_legacy_depends_only_on_cn(
    scenario: Scenario, other: LeafSpec, data: st.DataObject
) -> None:
    _, presented = presented_certificate(scenario)
    names = presented.leaf.common_names
    twin_leaf = dataclasses.replace(
        other, common_names=names, empty_subject=other.empty_subject and not names
    )
    twin_kind = CertKind("twin", "same CNs, everything else differs", twin_leaf)
    # Serve the twin through an import on a new EMS, so it is what the
    # client sees, and change every setting a new client would consult.
    twin = dataclasses.replace(
        scenario,
        kind=twin_kind,
        imported=twin_kind,
        ems_version="7.2.0",
        use_ssl_cert=True,
        answer=data.draw(st.sampled_from(Answer)),
        remembered=data.draw(st.sampled_from(Remembered)),
        profile_action=data.draw(st.none() | st.sampled_from(Action)),
    )

    first = expected_outcome(scenario)
    second = expected_outcome(twin)

    assert (first.connected, first.outcome) == (second.connected, second.outcome)


@given(
    scenario=scenarios(BUILT_AT),
    early=st.sampled_from(["7.0.0", "7.0.1"]),
    legacy=versions(feature=False),
)
def test_oracle_7_0_early_is_legacy(
    scenario: Scenario, early: str, legacy: str
) -> None:
    as_early = expected_outcome(dataclasses.replace(scenario, client_version=early))
    as_legacy = expected_outcome(dataclasses.replace(scenario, client_version=legacy))

    assert as_early == as_legacy


# -- the reference client over real TLS ------------------------------------


@pytest.fixture(scope="module")
def decision_ems(cert_lab: Lab) -> Iterator[MockEms]:
    """One mock EMS whose certificate and profile each example replaces."""
    with MockEms.from_kind(cert_lab, "correct-fqdn", profile_action=None) as ems:
        yield ems


def _serve(ems: MockEms, lab: Lab, kind: CertKind) -> str:
    """Serve ``kind`` on ``ems``; return the hex SHA-256 of the leaf."""
    if kind.name in lab.kinds and lab.kinds[kind.name].kind == kind:
        built = lab.kinds[kind.name]
        ems.set_certificate(built.chain_path.read_bytes(), built.key_path.read_bytes())
        return built.leaf_sha256
    issued = lab.issue(kind.leaf)
    ems.set_certificate(issued.chain_pem, issued.key_pem)
    return issued.sha256


def observe(
    scenario: Scenario, ems: MockEms, lab: Lab, state_dir: Path
) -> tuple[Observation, int]:
    """Run ``scenario`` against the reference client.

    Returns:
        The observation and the application bytes the server received.
    """
    _, presented = presented_certificate(scenario)
    sha256 = _serve(ems, lab, presented)
    expected_reasons = frozenset(expected_outcome(scenario).reasons)
    memory_path = state_dir / "memory.json"
    memory = MemoryFile(memory_path)
    reference = scenario.reference_identity
    if scenario.remembered is Remembered.THIS_LEAF:
        memory.remember(reference, ems.port, sha256, expected_reasons)
    elif scenario.remembered is Remembered.OTHER_LEAF:
        memory.remember(reference, ems.port, "00" * 32, expected_reasons)
    elif scenario.remembered is Remembered.THIS_LEAF_FEWER_REASONS:
        fewer = frozenset(sorted(expected_reasons)[1:])
        memory.remember(reference, ems.port, sha256, fewer)
    if scenario.profile_action is not None and has_feature(scenario.ems_version):
        memory.set_profile(scenario.profile_action, "default", reference, ems.port)

    answer = scenario.answer or Answer.DENY

    def prompt(info: PromptInfo) -> Answer:
        return answer

    client = EndpointClient(
        scenario.client_version,
        lab.trust_store_path,
        action=scenario.action,
        action_source=scenario.action_source,
        installer_action=scenario.installer_action,
        memory_path=memory_path,
        cn_fallback=scenario.assumptions.cn_fallback,
        assumptions=scenario.assumptions,
        prompt=prompt,
        timeout=5.0,
        telemetry_idle=0.0,
    )
    before = len(ems.connections)
    observation = client.connect(ems.host, ems.port, servername=reference)
    ems.wait_until(lambda e: all(r.closed_at for r in e.connections[before:]), 5.0)
    received = sum(r.app_bytes_received for r in ems.connections[before:])
    return observation, received


def _summary(outcome: ExpectedOutcome | Observation) -> dict[str, object]:
    remembered = (
        outcome.remembered_after
        if isinstance(outcome, ExpectedOutcome)
        else outcome.remembered
    )
    return {
        "connected": outcome.connected,
        "prompted": outcome.prompted,
        "remembered": remembered,
        "reasons": outcome.reasons,
        "outcome": outcome.outcome,
    }


def check_client_against_oracle(scenario: Scenario, ems: MockEms, lab: Lab) -> None:
    """Run ``scenario`` over TLS and assert the client does what the oracle expects."""
    expected = expected_outcome(scenario)

    with tempfile.TemporaryDirectory() as state_dir:
        observed, app_bytes = observe(scenario, ems, lab, Path(state_dir))

    assert _summary(observed) == _summary(expected), scenario.id
    check_laws(scenario, observed.connected, observed.prompted, observed.reasons)
    if not observed.connected:
        assert app_bytes == 0, "application data crossed a refused connection"
    assert observed.outcome is not OutcomeName.HANDSHAKE_FAILED


@given(scenario=scenarios(BUILT_AT))
def test_client_matches_oracle(
    cert_lab: Lab, decision_ems: MockEms, scenario: Scenario
) -> None:
    scenario = dataclasses.replace(scenario, built_at=cert_lab.built_at)

    with record_scenario_failures(scenario, "test_client_matches_oracle"):
        check_client_against_oracle(scenario, decision_ems, cert_lab)


def _scenario_files() -> list[Path]:
    return [
        path
        for path in sorted(DEFAULT_FIXTURES_DIR.glob("*.json"))
        if json.loads(path.read_text()).get("property") == "scenario"
    ]


@pytest.mark.parametrize("path", _scenario_files(), ids=lambda p: p.stem)
def test_recorded_scenario(cert_lab: Lab, decision_ems: MockEms, path: Path) -> None:
    data = json.loads(path.read_text())
    scenario = scenario_from_record(data, cert_lab.built_at)
    expected = expected_outcome(scenario)

    assert expected.outcome.value == data["expected_outcome"], path.name
    assert [r.value for r in expected.reasons] == data["expected_reasons"]
    check_client_against_oracle(scenario, decision_ems, cert_lab)


def test_scenario_folder_has_seed_case() -> None:
    names = [path.name for path in _scenario_files()]

    assert SEED_SCENARIO in names


def test_scenario_record_round_trips(cert_lab: Lab) -> None:
    kind = CATALOGUE["wildcard-too-deep"]
    scenario = Scenario(
        kind=kind,
        ems_version="7.0.2",
        use_ssl_cert=True,
        imported=None,
        client_version="7.2.0",
        action=Action.WARN,
        action_source=ActionSource.PROFILE,
        profile_action=Action.DENY,
        installer_action=Action.ALLOW,
        answer=Answer.ALLOW,
        remembered=Remembered.OTHER_LEAF,
        port=8013,
        built_at=cert_lab.built_at,
    )

    record = json.loads(json.dumps(scenario_record(scenario, note="n")))
    again = scenario_from_record(record, cert_lab.built_at)

    assert again == scenario


# -- a deliberately broken client ------------------------------------------


def _lookup_nothing(self: MemoryFile, reference: str, port: int) -> None:
    """Find no remembered certificate, whatever the file contains (a planted bug)."""
    return None


def test_broken_client_writes_one_scenario_file(
    cert_lab: Lab,
    decision_ems: MockEms,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(FIXTURES_ENV, str(tmp_path))
    monkeypatch.setattr(MemoryFile, "lookup", _lookup_nothing)

    # Derandomized and without a database, so every run finds the same case.
    @settings(
        max_examples=300,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(scenario=scenarios(cert_lab.built_at))
    def prop(scenario: Scenario) -> None:
        with record_scenario_failures(scenario, "prop"):
            check_client_against_oracle(scenario, decision_ems, cert_lab)

    with pytest.raises(AssertionError):
        prop()

    written = list(tmp_path.glob("*.json"))
    assert len(written) == 1
    data = json.loads(written[0].read_text())
    assert data["property"] == "scenario"
    assert data["remembered"] in ("this-leaf", "this-leaf-fewer-reasons")

    # The file replays: the broken client still fails it, the real one passes.
    scenario = scenario_from_record(data, cert_lab.built_at)
    with pytest.raises(AssertionError):
        check_client_against_oracle(scenario, decision_ems, cert_lab)
    monkeypatch.undo()
    check_client_against_oracle(scenario, decision_ems, cert_lab)
