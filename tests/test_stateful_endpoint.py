"""Stateful suite: one reference endpoint and one mock EMS over time.

A :class:`~hypothesis.stateful.RuleBasedStateMachine` drives the reference
client against a mock EMS over real TLS 1.3 on loopback. Between connection
attempts the EMS rotates its certificate and changes its profile action,
the client restarts (a new object on the same remembered-certificate file),
a legacy client upgrades to the first version with standards validation, and
the client's clock moves, so a remembered leaf can gain a reason such as
expired.

The machine keeps its own model of the client: the effective action and
where it came from, and the remembered leaf per EMS identity and port with
the reasons the user allowed. Every connection attempt is compared with the
oracle's expected outcome for a scenario built from that model, and the
model then advances from the oracle's expectation, never from what the
client did. The EMS listeners start once per module; each example resets
their certificate and profile in its ``initialize`` rule.

A remembered leaf that gains a reason is a rare state for random rules: in
a measured run, the ``ci`` profile's 80 examples never reached it and the
``thorough`` profile's 800 reached it 9 times. A fixed sequence of the same
rules walks into it on every run. A last test plants a bug in the client
(remembered certificates looked up without the port) and checks that the
machine finds it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from harness.assumptions import Assumptions
from harness.ems.server import ConnectionRecord, MockEms
from harness.endpoint.client import EndpointClient, Observation, PromptInfo
from harness.endpoint.identity import normalize_reference
from harness.endpoint.memory import MemoryFile, RememberedCert, ems_key
from harness.hypothesis_profiles import stateful_settings
from harness.model import Action, ActionSource, Answer, OutcomeName, Reason
from harness.oracle.decision import (
    ExpectedOutcome,
    Remembered,
    Scenario,
    expected_outcome,
)
from harness.pki import Lab
from harness.pki.kinds import CATALOGUE, CertKind
from harness.pki.roles import ROLES
from harness.strategies import actions, answers
from harness.versions import has_feature

EMS_VERSION = "7.0.2"
LEGACY_VERSION = "6.4.6"
UPGRADE_VERSION = "6.4.7"
CLIENT_VERSIONS = (UPGRADE_VERSION, LEGACY_VERSION, "7.2.0")

# A leaf issued afresh on every rotation and declared like wrong-host, so the
# fingerprint changes and the reasons stay the same.
REISSUED_KIND = CertKind(
    "wrong-host-reissued",
    "wrong-host leaf issued again, so only its fingerprint differs",
    CATALOGUE["wrong-host"].leaf,
)

# EMS settings per rotation, as (use SSL certificate for endpoint control,
# imported kind). The EMS serves the vendor certificate with the toggle off,
# and its built-in default with the toggle on and nothing imported.
ROTATIONS: dict[str, tuple[bool, CertKind | None]] = {
    "correct-fqdn": (True, CATALOGUE["correct-fqdn"]),
    "wrong-host": (True, CATALOGUE["wrong-host"]),
    REISSUED_KIND.name: (True, REISSUED_KIND),
    "expired-leaf": (True, CATALOGUE["expired-leaf"]),
    "self-signed-leaf": (True, CATALOGUE["self-signed-leaf"]),
    "untrusted-private-ca": (True, CATALOGUE["untrusted-private-ca"]),
    "cn-only-no-san": (True, CATALOGUE["cn-only-no-san"]),
    "vendor-default": (False, None),
    "ems-builtin-default": (True, None),
}

SERVER_WAIT = 5.0
STEPS = 12

# Days the client's clock and the oracle's validation time can be moved by.
# Each is at least a day away from every validity window edge of the served
# kinds and of the CA roles, which a test below checks, so the minutes a run
# takes never decide a time reason.
CLOCK_OFFSETS_DAYS = (0, -200, 200, 500)


def machine_settings() -> settings:
    """Return the profile's stateful settings with twice the examples.

    That is 10 examples under ``dev``, 40 under ``ci`` and 400 under
    ``thorough``, of up to :data:`STEPS` steps each.
    """
    base = stateful_settings(steps=STEPS)
    return settings(base, max_examples=2 * base.max_examples)


@dataclasses.dataclass
class ServedLeaf:
    """The certificate the EMS serves now, as the model records it."""

    rotation: str
    leaf_sha256: str


@dataclasses.dataclass(frozen=True)
class Attempt:
    """One connection attempt: scenario, both outcomes, the server's record."""

    scenario: Scenario
    expected: ExpectedOutcome
    observed: Observation
    record: ConnectionRecord


def summary(outcome: ExpectedOutcome | Observation) -> dict[str, object]:
    """Return the fields that expected and observed outcomes share."""
    if isinstance(outcome, ExpectedOutcome):
        remembered = outcome.remembered_after
    else:
        remembered = outcome.remembered
    return {
        "connected": outcome.connected,
        "prompted": outcome.prompted,
        "remembered": remembered,
        "reasons": list(outcome.reasons),
        "outcome": outcome.outcome,
        "action": outcome.action,
        "action_source": outcome.action_source,
    }


def remembered_state(
    entry: tuple[str, frozenset[Reason]] | None,
    leaf_sha256: str,
    reasons: list[Reason],
) -> Remembered:
    """Classify the model's entry for one EMS against the presented leaf."""
    if entry is None:
        return Remembered.NONE
    sha256, allowed = entry
    if sha256 != leaf_sha256:
        return Remembered.OTHER_LEAF
    if set(reasons) <= allowed:
        return Remembered.THIS_LEAF
    return Remembered.THIS_LEAF_FEWER_REASONS


class EndpointMachine(RuleBasedStateMachine):
    """One client and one EMS (listening on one or more ports) over time.

    Subclasses bind ``lab`` and ``servers`` through :func:`bind`. Every server
    is the same EMS identity, so a rotation or profile change applies to all.
    """

    lab: ClassVar[Lab]
    servers: ClassVar[tuple[MockEms, ...]]

    def __init__(self) -> None:
        super().__init__()
        self.state_dir = Path(tempfile.mkdtemp(prefix="stateful-endpoint-"))
        self.memory_path = self.state_dir / "memory.json"
        self.attempts: list[Attempt] = []

        # The model of the client and the EMS.
        self.version = UPGRADE_VERSION
        self.installer_action: Action | None = None
        self.action = Assumptions().default_action
        self.action_source = ActionSource.DEFAULT
        self.remembered: dict[tuple[str, int], tuple[str, frozenset[Reason]]] = {}
        self.ems_action = Action.WARN
        self.served = ServedLeaf("correct-fqdn", "")
        self.answer = Answer.DENY
        self.clock_offset = dt.timedelta(0)
        self.client = self._new_client()

    def teardown(self) -> None:
        shutil.rmtree(self.state_dir, ignore_errors=True)

    # -- helpers -----------------------------------------------------------

    def _new_client(self) -> EndpointClient:
        def prompt(info: PromptInfo) -> Answer:
            return self.answer

        return EndpointClient(
            self.version,
            self.lab.trust_store_path,
            installer_action=self.installer_action,
            memory_path=self.memory_path,
            prompt=prompt,
            timeout=SERVER_WAIT,
            telemetry_idle=0.0,
            clock=self._now,
        )

    def _now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC) + self.clock_offset

    def _serve(self, rotation: str) -> None:
        if rotation == REISSUED_KIND.name:
            issued = self.lab.issue(REISSUED_KIND.leaf)
            chain_pem, key_pem, sha256 = issued.chain_pem, issued.key_pem, issued.sha256
        else:
            built = self.lab.kinds[rotation]
            chain_pem = built.chain_path.read_bytes()
            key_pem = built.key_path.read_bytes()
            sha256 = built.leaf_sha256
        for ems in self.servers:
            ems.set_certificate(chain_pem, key_pem)
        self.served = ServedLeaf(rotation, sha256)

    def _scenario(self, port: int, remembered: Remembered) -> Scenario:
        toggle, imported = ROTATIONS[self.served.rotation]
        kind = imported or CATALOGUE[self.served.rotation]
        legacy = not has_feature(self.version)
        return Scenario(
            kind=kind,
            ems_version=EMS_VERSION,
            use_ssl_cert=toggle,
            imported=imported,
            client_version=self.version,
            action=None if legacy else self.action,
            action_source=None if legacy else self.action_source,
            answer=self.answer,
            remembered=remembered,
            port=port,
            built_at=self.lab.built_at,
            now=self._now(),
        )

    def _expect(self, port: int) -> tuple[Scenario, ExpectedOutcome]:
        reference = CATALOGUE["correct-fqdn"].reference_identity
        entry = self.remembered.get((reference, port))
        # The reasons do not depend on the remembered state, so a first
        # pass without one gives the reasons to classify the entry with.
        reasons = expected_outcome(self._scenario(port, Remembered.NONE)).reasons
        state = remembered_state(entry, self.served.leaf_sha256, reasons)
        scenario = self._scenario(port, state)
        return scenario, expected_outcome(scenario)

    def _connect(self, server: int, answer: Answer) -> None:
        ems = self.servers[server]
        reference = CATALOGUE["correct-fqdn"].reference_identity
        self.answer = answer
        scenario, expected = self._expect(ems.port)

        before = len(ems.connections)
        observed = self.client.connect(ems.host, ems.port, servername=reference)
        closed = ems.wait_until(
            lambda e: all(r.closed_at for r in e.connections[before:]), SERVER_WAIT
        )
        assert closed, f"the mock EMS did not close the connection in {SERVER_WAIT}s"
        records = ems.connections[before:]
        assert len(records) == 1, f"expected one connection, the EMS saw {records}"
        self.attempts.append(Attempt(scenario, expected, observed, records[0]))

        assert summary(observed) == summary(expected), (
            f"client disagrees with the oracle on {scenario.id}"
        )
        if observed.connected:
            # The model learns the profile from this session's CONFIG.
            assert observed.telemetry is not None
            assert observed.telemetry.completed, (
                f"telemetry failed after connecting: {observed.telemetry.error}"
            )

        if expected.outcome is OutcomeName.CONNECTED_PROMPT_ALLOWED:
            reasons = frozenset(expected.reasons)
            self.remembered[(reference, ems.port)] = (
                self.served.leaf_sha256,
                reasons,
            )
        if expected.connected and has_feature(self.version):
            # An EMS with standards validation sends its profile, which
            # replaces the action the client had.
            self.action, self.action_source = self.ems_action, ActionSource.PROFILE

    def _draw_server(self, data: st.DataObject) -> int:
        return data.draw(st.integers(0, len(self.servers) - 1), label="server")

    # -- rules -------------------------------------------------------------

    @initialize(
        version=st.sampled_from(CLIENT_VERSIONS),
        installer_action=st.none() | actions(),
        rotation=st.sampled_from(list(ROTATIONS)),
        ems_action=actions(),
        answer=answers(),
    )
    def install(
        self,
        version: str,
        installer_action: Action | None,
        rotation: str,
        ems_action: Action,
        answer: Answer,
    ) -> None:
        self.version = version
        self.installer_action = installer_action
        if installer_action is not None:
            self.action, self.action_source = installer_action, ActionSource.INSTALLER
        self.client = self._new_client()
        self._serve(rotation)
        self.set_profile(ems_action)

        # The installer or default action decides the first connection,
        # because the profile arrives only after it.
        self._connect(0, answer)

    @rule(rotation=st.sampled_from(list(ROTATIONS)))
    def rotate_certificate(self, rotation: str) -> None:
        self._serve(rotation)

    @rule(action=actions())
    def set_profile(self, action: Action) -> None:
        for ems in self.servers:
            ems.set_profile_action(action)
        self.ems_action = action

    @rule(days=st.sampled_from(CLOCK_OFFSETS_DAYS))
    def set_clock(self, days: int) -> None:
        # Moving the clock can give a remembered leaf a further reason, such
        # as expired, which must prompt again.
        self.clock_offset = dt.timedelta(days=days)

    @rule()
    def restart_client(self) -> None:
        self.client = self._new_client()

    @precondition(lambda self: not has_feature(self.version))
    @rule()
    def upgrade_client(self) -> None:
        # A legacy client keeps no remembered certificate and no profile.
        content = MemoryFile(self.memory_path).load()
        assert content["remembered"] == {}, "a legacy client remembered a leaf"
        assert "profile" not in content, "a legacy client persisted a profile"

        self.version = UPGRADE_VERSION
        self.client = self._new_client()

    # Swarm testing disables whole rules per example, so two connect rules,
    # one per prompt answer, leave fewer examples without a further connection
    # attempt than one rule that draws the answer.
    @rule(data=st.data())
    def connect_user_allows(self, data: st.DataObject) -> None:
        self._connect(self._draw_server(data), Answer.ALLOW)

    @rule(data=st.data())
    def connect_user_denies(self, data: st.DataObject) -> None:
        self._connect(self._draw_server(data), Answer.DENY)

    # -- invariants ---------------------------------------------------------

    @invariant()
    def valid_certificate_never_prompts(self) -> None:
        for attempt in self.attempts[-1:]:
            if not attempt.observed.reasons:
                assert not attempt.observed.prompted, (
                    f"a valid certificate prompted on {attempt.scenario.id}"
                )

    @invariant()
    def deny_never_connects_to_invalid(self) -> None:
        for attempt in self.attempts[-1:]:
            observed = attempt.observed
            if observed.action is Action.DENY and observed.reasons:
                assert not observed.connected, (
                    f"deny connected despite {observed.reasons} "
                    f"on {attempt.scenario.id}"
                )

    @invariant()
    def no_application_data_unless_connected(self) -> None:
        for attempt in self.attempts[-1:]:
            received = attempt.record.app_bytes_received
            if attempt.observed.connected:
                assert received > 0, "a connected client sent no telemetry"
            else:
                assert received == 0, (
                    f"the EMS received {received} application bytes on a "
                    f"refused connection ({attempt.observed.outcome})"
                )

    @invariant()
    def memory_file_matches_model(self) -> None:
        content = MemoryFile(self.memory_path).load()

        stored = {
            key: (entry["leaf_sha256"], frozenset(Reason(r) for r in entry["reasons"]))
            for key, entry in content["remembered"].items()
        }
        allowed = {
            ems_key(reference, port): entry
            for (reference, port), entry in self.remembered.items()
        }
        assert stored == allowed, (
            f"the memory file remembers {stored}, the model allowed {allowed}"
        )

        profile = content.get("profile")
        if self.action_source is ActionSource.PROFILE:
            assert profile is not None, "a received profile was not persisted"
            assert profile["action"] == self.action.value
        else:
            assert profile is None, f"unexpected persisted profile {profile}"


def bind(lab: Lab, servers: tuple[MockEms, ...]) -> type[EndpointMachine]:
    """Return a subclass of :class:`EndpointMachine` bound to ``servers``."""
    return type(
        "EndpointOverTime",
        (EndpointMachine,),
        {"lab": lab, "servers": servers, "__module__": __name__},
    )


@pytest.fixture(scope="module")
def ems_pair(cert_lab: Lab) -> Iterator[tuple[MockEms, MockEms]]:
    """Two listeners of one EMS identity, on two ephemeral ports.

    Remembered certificates are keyed by reference identity and port, so the
    second listener counts as another EMS for them.
    """
    with (
        MockEms.from_kind(cert_lab, "correct-fqdn", ems_version=EMS_VERSION) as first,
        MockEms.from_kind(cert_lab, "correct-fqdn", ems_version=EMS_VERSION) as second,
    ):
        yield first, second


# Hypothesis stops shrinking a failure after five minutes, the same as the
# suite's default timeout. The longer limit lets it report the shrunk steps.
@pytest.mark.timeout(600)
@pytest.mark.parametrize("listeners", [1, 2], ids=["one-port", "two-ports"])
def test_endpoint_over_time(
    cert_lab: Lab, ems_pair: tuple[MockEms, MockEms], listeners: int
) -> None:
    machine = bind(cert_lab, ems_pair[:listeners])

    run_state_machine_as_test(machine, settings=machine_settings())


def test_clock_offsets_clear_of_window_edges() -> None:
    kinds = [imported or CATALOGUE[name] for name, (_, imported) in ROTATIONS.items()]
    edges = [edge for kind in kinds for edge in kind.leaf.window]
    edges += [edge for role in ROLES.values() if role.window for edge in role.window]

    for days in CLOCK_OFFSETS_DAYS:
        offset = dt.timedelta(days=days)
        nearest = min(abs(offset - edge) for edge in edges)
        assert nearest >= dt.timedelta(days=1), f"{days} days is near an edge"


def test_expired_remembered_leaf_prompts_again(
    cert_lab: Lab, ems_pair: tuple[MockEms, MockEms]
) -> None:
    machine = bind(cert_lab, ems_pair[:1])()
    try:
        machine.install(
            version="7.2.0",
            installer_action=None,
            rotation="wrong-host",
            ems_action=Action.WARN,
            answer=Answer.ALLOW,
        )
        machine.set_clock(days=500)
        machine._connect(0, Answer.ALLOW)
        machine.memory_file_matches_model()
    finally:
        machine.teardown()

    first, later = machine.attempts
    assert first.observed.outcome is OutcomeName.CONNECTED_PROMPT_ALLOWED
    assert later.scenario.remembered is Remembered.THIS_LEAF_FEWER_REASONS
    assert later.observed.prompted
    assert later.observed.reasons == [Reason.HOSTNAME_MISMATCH, Reason.EXPIRED]


def _lookup_ignoring_port(
    self: MemoryFile, reference: str, port: int
) -> RememberedCert | None:
    """Return any entry for ``reference``, whatever its port (a planted bug)."""
    prefix = normalize_reference(reference) + ":"
    for key, entry in self.load()["remembered"].items():
        if key.startswith(prefix):
            return RememberedCert(
                entry["leaf_sha256"],
                frozenset(Reason(r) for r in entry["reasons"]),
                entry["remembered_at"],
            )
    return None


def test_machine_finds_port_blind_lookup(
    cert_lab: Lab,
    ems_pair: tuple[MockEms, MockEms],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(MemoryFile, "lookup", _lookup_ignoring_port)
    machine = bind(cert_lab, ems_pair)
    # Derandomized so the search is the same on every run. No shrinking,
    # because finding the disagreement is all this test needs. The two-ports
    # case of test_endpoint_over_time shows the unmodified client passes.
    bounded = settings(
        max_examples=200,
        stateful_step_count=STEPS,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=[HealthCheck.too_slow],
    )

    with pytest.raises(AssertionError, match="client disagrees with the oracle"):
        run_state_machine_as_test(machine, settings=bounded)
