"""Admin operations in random order: what must always hold, and the bad orders.

The oracle decides every connection here (no sockets), so each example is a
few milliseconds. Two kinds of test:

* a stateful machine applies operations in any order and checks, after every
  step, the rules that hold on every path;
* a search over operation sequences finds a shortest sequence for each bad
  order of the upgrade, and checks that its cause is the known one. Each
  bad order also has a regression path under ``fixtures/paths/`` that
  ``test_fleet.py`` replays.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, find, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from harness.fleet import Simulation, SimulationResult, StepRecord
from harness.fleet.operations import (
    BuildInstaller,
    DeployInstaller,
    ImportCertificate,
    Operation,
    ReauthorizeFabric,
    SetProfileAction,
    Toggle,
    UpgradeEms,
)
from harness.fleet.paths import Step, UpgradePath
from harness.model import Action
from harness.pki import Lab
from harness.versions import has_feature

MIX = {"6.4.6": 1, "7.0.1": 1, "6.4.7": 1, "7.0.2": 1}


def _fleet(steps: tuple[Step, ...] = ()) -> UpgradePath:
    return UpgradePath(
        name="random", description="", steps=steps, endpoints=8, mix=dict(MIX)
    )


# -- what holds on every path -----------------------------------------------


class FleetMachine(RuleBasedStateMachine):
    """Applies admin operations in any order to a fleet of eight endpoints."""

    lab: Lab

    @initialize()
    def start(self) -> None:
        self.simulation = Simulation(_fleet(), self.lab)
        self.record: StepRecord = self.simulation.start()
        self.installers = 0

    def _do(self, operation: Operation) -> None:
        self.record = self.simulation.step(Step(operation))

    @rule(version=st.sampled_from(["6.4.7", "7.0.1", "7.0.2", "7.2.0"]))
    def upgrade_ems(self, version: str) -> None:
        self._do(UpgradeEms(version))

    @rule(kind=st.sampled_from(["correct-fqdn", "wrong-host", "self-signed-leaf"]))
    def import_certificate(self, kind: str) -> None:
        self._do(ImportCertificate(kind))

    @rule(on=st.booleans())
    def toggle(self, on: bool) -> None:
        self._do(Toggle(on))

    @rule(action=st.sampled_from(Action))
    def set_profile_action(self, action: Action) -> None:
        self._do(SetProfileAction(action))

    @rule(
        version=st.sampled_from(["6.4.7", "7.0.1", "7.0.2"]),
        action=st.sampled_from(Action),
    )
    def upgrade_clients(self, version: str, action: Action) -> None:
        self.installers += 1
        name = f"installer-{self.installers}"
        self._do(BuildInstaller(name, version, action))
        self._do(DeployInstaller(name, ("legacy",)))

    @rule()
    def reauthorize_fabric(self) -> None:
        self._do(ReauthorizeFabric())
        assert self.record.fabric_up

    @invariant()
    def legacy_offline_exactly_off_vendor(self) -> None:
        record = self.record
        legacy_offline = record.offline_ids & record.legacy_ids
        if record.presented == "vendor":
            assert not legacy_offline, record.label
        else:
            assert legacy_offline == record.legacy_ids, record.label

    @invariant()
    def valid_certificate_never_prompts(self) -> None:
        record = self.record
        if record.presented == "imported" and record.presented_kind == "correct-fqdn":
            assert not record.prompted_ids, record.label
            assert not record.offline_ids - record.legacy_ids, record.label

    @invariant()
    def legacy_never_prompted(self) -> None:
        record = self.record
        assert not record.prompted_ids & record.legacy_ids

    @invariant()
    def new_offline_only_on_deny(self) -> None:
        # With users answering allow, only the deny action refuses.
        record = self.record
        for version, counts in record.by_version.items():
            if has_feature(version) and counts.offline:
                assert "refused-deny" in counts.outcomes, (record.label, version)

    @invariant()
    def prompt_only_under_warn(self) -> None:
        record = self.record
        for version, counts in record.by_version.items():
            if counts.prompted:
                assert has_feature(version)
                assert counts.outcomes["connected-prompt-allowed"] == counts.prompted

    @invariant()
    def every_endpoint_connects_once(self) -> None:
        assert self.record.connections == 8


def test_any_order_keeps_rules(cert_lab: Lab) -> None:
    FleetMachine.lab = cert_lab
    run_state_machine_as_test(
        FleetMachine,
        settings=settings(
            max_examples=40,
            stateful_step_count=10,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )


# -- the bad orders ------------------------------------------------------------

# Simple operations for the search; the order in this list is the shrink order.
MOVES: dict[str, tuple[Operation, ...]] = {
    "upgrade-ems": (UpgradeEms("7.0.2"),),
    "profile-allow": (SetProfileAction(Action.ALLOW),),
    "import-valid": (ImportCertificate("correct-fqdn"),),
    "upgrade-clients": (
        BuildInstaller("allow-installer", "7.0.2", Action.ALLOW),
        DeployInstaller("allow-installer", ("legacy",)),
    ),
    "toggle-on": (Toggle(True),),
    "profile-warn": (SetProfileAction(Action.WARN),),
    "profile-deny": (SetProfileAction(Action.DENY),),
    "import-wrong-fqdn": (ImportCertificate("wrong-host"),),
}

moves = st.lists(st.sampled_from(list(MOVES)), min_size=1, max_size=7)


def _simulate(lab: Lab, names: list[str]) -> SimulationResult:
    steps = tuple(Step(op) for name in names for op in MOVES[name])
    return Simulation(_fleet(steps), lab).run()


def _new_count(step: StepRecord) -> int:
    return sum(c.total for v, c in step.by_version.items() if has_feature(v))


def _legacy_offline(result: SimulationResult) -> bool:
    return any(step.offline_ids & step.legacy_ids for step in result.steps)


def _every_new_prompted(result: SimulationResult) -> bool:
    return any(
        step.prompted and step.prompted == _new_count(step) for step in result.steps
    )


def _every_new_offline(result: SimulationResult) -> bool:
    return any(
        len(step.offline_ids - step.legacy_ids) == _new_count(step) > 0
        for step in result.steps
    )


def _wrong_fqdn_breaks(result: SimulationResult) -> bool:
    return any(
        step.presented_kind == "wrong-host"
        and (step.prompted_ids or step.offline_ids - step.legacy_ids)
        for step in result.steps
    )


def _search(lab: Lab, condition: Callable[[SimulationResult], bool]) -> list[str]:
    found: list[str] = find(
        moves,
        lambda names: condition(_simulate(lab, names)),
        settings=settings(
            max_examples=2000, database=None, derandomize=True, deadline=None
        ),
    )
    return found


def _first(result: SimulationResult, condition: Callable[[StepRecord], bool]) -> int:
    return next(step.index for step in result.steps if condition(step))


def test_finds_toggle_before_clients_upgrade(cert_lab: Lab) -> None:
    names = _search(cert_lab, _legacy_offline)

    assert names == ["upgrade-ems", "toggle-on"]


def test_finds_warn_before_valid_certificate(cert_lab: Lab) -> None:
    names = _search(cert_lab, _every_new_prompted)
    result = _simulate(cert_lab, names)
    broken = result.steps[
        _first(result, lambda s: s.prompted > 0 and s.prompted == _new_count(s))
    ]

    assert broken.profile_action is Action.WARN
    assert broken.presented_kind != "correct-fqdn"
    assert len(names) == 2


def test_finds_deny_before_valid_certificate(cert_lab: Lab) -> None:
    names = _search(cert_lab, _every_new_offline)
    result = _simulate(cert_lab, names)
    broken = result.steps[
        _first(result, lambda s: len(s.offline_ids - s.legacy_ids) == _new_count(s))
    ]

    assert names == ["upgrade-ems", "profile-deny"]
    assert broken.profile_action is Action.DENY
    assert broken.presented == "vendor"


def test_finds_wrong_fqdn_import(cert_lab: Lab) -> None:
    names = _search(cert_lab, _wrong_fqdn_breaks)
    result = _simulate(cert_lab, names)
    broken = _first(
        result,
        lambda s: s.presented_kind == "wrong-host" and bool(s.prompted_ids),
    )

    assert {"import-wrong-fqdn", "toggle-on"} <= set(names)
    assert broken == len(result.steps) - 1


@pytest.mark.parametrize(
    "names",
    [
        [
            "upgrade-ems",
            "profile-allow",
            "upgrade-clients",
            "import-valid",
            "toggle-on",
            "profile-warn",
            "profile-deny",
        ],
        [
            "upgrade-ems",
            "profile-allow",
            "import-valid",
            "upgrade-clients",
            "toggle-on",
            "profile-deny",
        ],
    ],
)
def test_recommended_orders_break_nothing(cert_lab: Lab, names: list[str]) -> None:
    result = _simulate(cert_lab, names)

    assert not _legacy_offline(result)
    assert not _every_new_prompted(result)
    assert not _every_new_offline(result)
    assert all(not step.prompted_ids for step in result.steps)
