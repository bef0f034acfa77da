"""Oracle decisions: hand-written rows for the rules of each decision step."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pytest

from harness.assumptions import Assumptions
from harness.model import (
    Action,
    ActionSource,
    Answer,
    OutcomeName,
    PresentedCertificate,
    Reason,
)
from harness.oracle.decision import (
    Remembered,
    Scenario,
    expected_outcome,
)
from harness.pki.kinds import CATALOGUE, LeafSpec

BUILT_AT = dt.datetime(2025, 1, 15, 12, 0, tzinfo=dt.UTC)

Out = OutcomeName
R = Remembered


@dataclass(frozen=True)
class Row:
    """One hand-written expectation."""

    kind: str
    ems: str
    toggle: bool | None
    client: str
    action: Action | None
    answer: Answer | None
    remembered: Remembered
    outcome: OutcomeName
    presented: PresentedCertificate
    prompted: bool
    remembered_after: bool
    imported: str | None = "same"

    def scenario(self) -> Scenario:
        imported_kind = {"same": CATALOGUE[self.kind], None: None}.get(
            self.imported, CATALOGUE.get(self.imported or "")
        )
        return Scenario(
            kind=CATALOGUE[self.kind],
            ems_version=self.ems,
            use_ssl_cert=self.toggle,
            imported=imported_kind,
            client_version=self.client,
            action=self.action,
            action_source=None if self.action is None else ActionSource.PROFILE,
            answer=self.answer,
            remembered=self.remembered,
            built_at=BUILT_AT,
        )


WARN, ALLOW_A, DENY_A = Action.WARN, Action.ALLOW, Action.DENY
YES, NO = Answer.ALLOW, Answer.DENY
IMP, VEN, BUILTIN = (
    PresentedCertificate.IMPORTED,
    PresentedCertificate.VENDOR,
    PresentedCertificate.BUILTIN_DEFAULT,
)

ROWS = [
    # Which certificate the EMS presents.
    Row(
        "correct-fqdn",
        "6.4.6",
        None,
        "6.4.7",
        WARN,
        YES,
        R.NONE,
        Out.CONNECTED_PROMPT_ALLOWED,
        VEN,
        True,
        True,
    ),
    Row(
        "correct-fqdn",
        "6.4.7",
        False,
        "6.4.7",
        DENY_A,
        None,
        R.NONE,
        Out.REFUSED_DENY,
        VEN,
        False,
        False,
    ),
    Row(
        "correct-fqdn",
        "6.4.7",
        True,
        "6.4.7",
        DENY_A,
        None,
        R.NONE,
        Out.CONNECTED_VALID,
        IMP,
        False,
        False,
    ),
    Row(
        "correct-fqdn",
        "7.0.2",
        True,
        "7.0.2",
        DENY_A,
        None,
        R.NONE,
        Out.REFUSED_DENY,
        BUILTIN,
        False,
        False,
        imported=None,
    ),
    Row(
        "correct-fqdn",
        "7.0.1",
        None,
        "7.0.2",
        ALLOW_A,
        None,
        R.NONE,
        Out.CONNECTED_ALLOW,
        VEN,
        False,
        False,
    ),
    # Legacy clients: subject CN only, no prompt, no action.
    Row(
        "correct-fqdn",
        "7.0.2",
        False,
        "7.0.0",
        None,
        None,
        R.NONE,
        Out.CONNECTED_LEGACY,
        VEN,
        False,
        False,
    ),
    Row(
        "correct-fqdn",
        "7.0.2",
        False,
        "7.0.1",
        DENY_A,
        None,
        R.NONE,
        Out.CONNECTED_LEGACY,
        VEN,
        False,
        False,
    ),
    Row(
        "correct-fqdn",
        "7.0.2",
        True,
        "7.0.1",
        WARN,
        YES,
        R.NONE,
        Out.REFUSED_LEGACY,
        IMP,
        False,
        False,
    ),
    Row(
        "correct-fqdn",
        "6.4.7",
        True,
        "6.4.6",
        WARN,
        YES,
        R.THIS_LEAF,
        Out.REFUSED_LEGACY,
        IMP,
        False,
        False,
    ),
    Row(
        "vendor-forgery-self-signed",
        "7.0.2",
        True,
        "7.0.1",
        None,
        None,
        R.NONE,
        Out.CONNECTED_LEGACY,
        IMP,
        False,
        False,
    ),
    Row(
        "vendor-forgery-self-signed",
        "7.0.2",
        True,
        "6.4.6",
        None,
        None,
        R.NONE,
        Out.CONNECTED_LEGACY,
        IMP,
        False,
        False,
    ),
    Row(
        "ems-builtin-default",
        "7.0.2",
        True,
        "6.4.6",
        None,
        None,
        R.NONE,
        Out.REFUSED_LEGACY,
        BUILTIN,
        False,
        False,
        imported=None,
    ),
    # New clients: the decision table.
    Row(
        "vendor-forgery-self-signed",
        "7.0.2",
        True,
        "7.0.2",
        WARN,
        NO,
        R.NONE,
        Out.REFUSED_PROMPT_DENIED,
        IMP,
        True,
        False,
    ),
    Row(
        "wrong-host",
        "7.0.2",
        True,
        "6.4.7",
        WARN,
        YES,
        R.NONE,
        Out.CONNECTED_PROMPT_ALLOWED,
        IMP,
        True,
        True,
    ),
    Row(
        "wrong-host",
        "7.0.2",
        True,
        "6.4.7",
        WARN,
        NO,
        R.NONE,
        Out.REFUSED_PROMPT_DENIED,
        IMP,
        True,
        False,
    ),
    Row(
        "wrong-host",
        "7.0.2",
        True,
        "7.0.2",
        WARN,
        NO,
        R.THIS_LEAF,
        Out.CONNECTED_REMEMBERED,
        IMP,
        False,
        True,
    ),
    Row(
        "wrong-host",
        "7.0.2",
        True,
        "7.0.2",
        WARN,
        NO,
        R.OTHER_LEAF,
        Out.REFUSED_PROMPT_DENIED,
        IMP,
        True,
        False,
    ),
    Row(
        "wrong-host",
        "7.0.2",
        True,
        "7.0.2",
        WARN,
        YES,
        R.THIS_LEAF_FEWER_REASONS,
        Out.CONNECTED_PROMPT_ALLOWED,
        IMP,
        True,
        True,
    ),
    Row(
        "wrong-host",
        "7.0.2",
        True,
        "7.0.2",
        DENY_A,
        YES,
        R.THIS_LEAF,
        Out.REFUSED_DENY,
        IMP,
        False,
        True,
    ),
    Row(
        "wrong-host",
        "7.0.2",
        True,
        "7.0.2",
        ALLOW_A,
        NO,
        R.NONE,
        Out.CONNECTED_ALLOW,
        IMP,
        False,
        False,
    ),
    Row(
        "correct-fqdn",
        "7.0.2",
        True,
        "7.0.2",
        WARN,
        NO,
        R.NONE,
        Out.CONNECTED_VALID,
        IMP,
        False,
        False,
    ),
    Row(
        "cross-signed-expired-root",
        "7.0.2",
        True,
        "7.2.0",
        DENY_A,
        None,
        R.NONE,
        Out.CONNECTED_VALID,
        IMP,
        False,
        False,
    ),
    Row(
        "correct-fqdn",
        "7.0.2",
        True,
        "7.0.2",
        WARN,
        None,
        R.THIS_LEAF_FEWER_REASONS,
        Out.CONNECTED_VALID,
        IMP,
        False,
        True,
    ),
]


@pytest.mark.parametrize("row", ROWS, ids=lambda row: row.scenario().id)
def test_decision_table(row: Row) -> None:
    expected = expected_outcome(row.scenario())

    assert expected.outcome is row.outcome
    assert expected.presented is row.presented
    assert expected.prompted is row.prompted
    assert expected.remembered_after is row.remembered_after
    assert expected.connected is row.outcome.value.startswith("connected")


def _scenario(**settings: object) -> Scenario:
    base: dict[str, object] = {
        "kind": CATALOGUE["wrong-host"],
        "ems_version": "7.0.2",
        "use_ssl_cert": True,
        "client_version": "7.0.2",
        "built_at": BUILT_AT,
        "answer": Answer.DENY,
    }
    base.update(settings)
    return Scenario(**base)  # type: ignore[arg-type]


def test_action_profile_beats_installer() -> None:
    expected = expected_outcome(
        _scenario(profile_action=Action.ALLOW, installer_action=Action.DENY)
    )

    assert expected.action is Action.ALLOW
    assert expected.action_source is ActionSource.PROFILE
    assert expected.outcome is Out.CONNECTED_ALLOW


def test_action_profile_from_legacy_ems_ignored() -> None:
    expected = expected_outcome(
        _scenario(
            ems_version="7.0.1",
            use_ssl_cert=None,
            profile_action=Action.ALLOW,
            installer_action=Action.DENY,
        )
    )

    assert expected.action is Action.DENY
    assert expected.action_source is ActionSource.INSTALLER


def test_action_default_from_assumptions() -> None:
    expected = expected_outcome(
        _scenario(assumptions=Assumptions(default_action=Action.DENY))
    )

    assert expected.action is Action.DENY
    assert expected.action_source is ActionSource.DEFAULT
    assert expected.outcome is Out.REFUSED_DENY


def test_action_default_is_warn() -> None:
    expected = expected_outcome(_scenario())

    assert expected.action is Action.WARN
    assert expected.action_source is ActionSource.DEFAULT
    assert expected.prompted


def test_reasons_listed_in_report_order() -> None:
    expected = expected_outcome(
        _scenario(
            kind=CATALOGUE["many-faults"],
            action=Action.ALLOW,
            action_source=ActionSource.INSTALLER,
        )
    )

    assert expected.reasons == [
        Reason.HOSTNAME_MISMATCH,
        Reason.EXPIRED,
        Reason.UNTRUSTED_ISSUER,
        Reason.WRONG_PURPOSE,
    ]


def test_legacy_pattern_is_a_setting() -> None:
    assumptions = Assumptions(legacy_subject_pattern=r"^ems01$")
    scenario = _scenario(
        kind=CATALOGUE["ems-builtin-default"],
        client_version="6.4.6",
        assumptions=assumptions,
    )

    assert expected_outcome(scenario).outcome is Out.CONNECTED_LEGACY


def test_legacy_checks_every_common_name() -> None:
    leaf = LeafSpec(
        common_names=("ems.example.com", "FCTEMS0000000001"), san_extension=False
    )
    scenario = Scenario.from_leaf(
        leaf,
        "ems.example.com",
        ems_version="7.0.2",
        use_ssl_cert=True,
        client_version="7.0.1",
        built_at=BUILT_AT,
    )

    assert expected_outcome(scenario).outcome is Out.CONNECTED_LEGACY


def test_prompt_without_answer_rejected() -> None:
    with pytest.raises(ValueError, match="prompts the user but has no answer"):
        expected_outcome(_scenario(answer=None))


def test_toggle_on_legacy_ems_rejected() -> None:
    with pytest.raises(ValueError, match="has no use-SSL-certificate setting"):
        _scenario(ems_version="6.4.6", use_ssl_cert=False)


def test_toggle_missing_on_new_ems_rejected() -> None:
    with pytest.raises(ValueError, match="set use_ssl_cert to True or False"):
        _scenario(use_ssl_cert=None)


def test_scenario_id_reads_well() -> None:
    scenario = _scenario(
        kind=CATALOGUE["wildcard-too-deep"],
        ems_version="6.4.7",
        client_version="6.4.7",
        action=Action.WARN,
        action_source=ActionSource.PROFILE,
        answer=Answer.ALLOW,
    )

    assert scenario.id == (
        "wildcard-too-deep/ems-6.4.7-on/client-6.4.7/warn/allow/remembered-none"
    )


def test_scenario_ids_unique_over_matrix() -> None:
    ids = {
        _scenario(
            kind=kind,
            action=action,
            action_source=ActionSource.PROFILE,
            remembered=remembered,
        ).id
        for kind in CATALOGUE.values()
        for action in Action
        for remembered in Remembered
    }

    assert len(ids) == len(CATALOGUE) * len(Action) * len(Remembered)
