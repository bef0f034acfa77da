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

Every rule and invariant records the steps so far. When one fails on the
final example that Hypothesis reports, the steps are written under
``fixtures/hypothesis/`` and :func:`test_recorded_steps_replay` runs them on
every later run.

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
import functools
import json
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar, TypeVar

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
from harness.hypothesis_fixtures import (
    DEFAULT_FIXTURES_DIR,
    FIXTURES_ENV,
    record_stateful_failures,
)
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
# A rule sequence kept under fixtures/hypothesis/, so the replay test always
# has a case: the one the machine finds for a port-blind remembered lookup.
SEED_STEPS = "stateful-remembered-leaf-other-port.json"

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


_Method = TypeVar("_Method", bound=Callable[..., None])


def _value(member: Action | Answer | None) -> str | None:
    return None if member is None else member.value


def _recorded(method: _Method) -> _Method:
    """Write the machine's steps as a regression file if ``method`` fails.

    Only the final falsifying example that Hypothesis reports writes a file.
    """

    @functools.wraps(method)
    def wrapper(self: EndpointMachine, *args: object, **kwargs: object) -> None:
        with record_stateful_failures(
            self.steps, len(self.servers), "test_endpoint_over_time"
        ):
            method(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


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
        # The rules run so far, as JSON values, for a regression file.
        self.steps: list[dict[str, Any]] = []

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

    def _step(self, rule_name: str, **args: object) -> None:
        self.steps.append({"rule": rule_name, "args": args})

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
    @_recorded
    def install(
        self,
        version: str,
        installer_action: Action | None,
        rotation: str,
        ems_action: Action,
        answer: Answer,
    ) -> None:
        self._step(
            "install",
            version=version,
            installer_action=_value(installer_action),
            rotation=rotation,
            ems_action=ems_action.value,
            answer=answer.value,
        )
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
    @_recorded
    def rotate_certificate(self, rotation: str) -> None:
        self._step("rotate_certificate", rotation=rotation)
        self._serve(rotation)

    @rule(action=actions())
    @_recorded
    def set_profile(self, action: Action) -> None:
        self._step("set_profile", action=action.value)
        for ems in self.servers:
            ems.set_profile_action(action)
        self.ems_action = action

    @rule(days=st.sampled_from(CLOCK_OFFSETS_DAYS))
    @_recorded
    def set_clock(self, days: int) -> None:
        # Moving the clock can give a remembered leaf a further reason, such
        # as expired, which must prompt again.
        self._step("set_clock", days=days)
        self.clock_offset = dt.timedelta(days=days)

    @rule()
    @_recorded
    def restart_client(self) -> None:
        self._step("restart_client")
        self.client = self._new_client()

    @precondition(lambda self: not has_feature(self.version))
    @rule()
    @_recorded
    def upgrade_client(self) -> None:
        self._step("upgrade_client")
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
    @_recorded
    def connect_user_allows(self, data: st.DataObject) -> None:
        self.connect(self._draw_server(data), Answer.ALLOW)

    @rule(data=st.data())
    @_recorded
    def connect_user_denies(self, data: st.DataObject) -> None:
        self.connect(self._draw_server(data), Answer.DENY)

    def connect(self, server: int, answer: Answer) -> None:
        """Connect to listener ``server``. A prompt gets ``answer`` from the user."""
        self._step("connect", server=server, answer=answer.value)
        self._connect(server, answer)

    # -- invariants ---------------------------------------------------------

    @invariant()
    @_recorded
    def valid_certificate_never_prompts(self) -> None:
        for attempt in self.attempts[-1:]:
            if not attempt.observed.reasons:
                assert not attempt.observed.prompted, (
                    f"a valid certificate prompted on {attempt.scenario.id}"
                )

    @invariant()
    @_recorded
    def deny_never_connects_to_invalid(self) -> None:
        for attempt in self.attempts[-1:]:
            observed = attempt.observed
            if observed.action is Action.DENY and observed.reasons:
                assert not observed.connected, (
                    f"deny connected despite {observed.reasons} "
                    f"on {attempt.scenario.id}"
                )

    @invariant()
    @_recorded
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
    @_recorded
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
        machine.connect(0, Answer.ALLOW)
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


INVARIANTS = (
    "valid_certificate_never_prompts",
    "deny_never_connects_to_invalid",
    "no_application_data_unless_connected",
    "memory_file_matches_model",
)


def _optional_action(value: str | None) -> Action | None:
    return None if value is None else Action(value)


def replay_steps(machine: EndpointMachine, steps: list[dict[str, Any]]) -> None:
    """Run recorded rule steps on ``machine``, checking every invariant after each.

    Raises:
        ValueError: a step names a rule the machine does not have.
    """
    for step in steps:
        rule_name, args = step["rule"], step["args"]
        if rule_name == "install":
            machine.install(
                version=args["version"],
                installer_action=_optional_action(args["installer_action"]),
                rotation=args["rotation"],
                ems_action=Action(args["ems_action"]),
                answer=Answer(args["answer"]),
            )
        elif rule_name == "rotate_certificate":
            machine.rotate_certificate(rotation=args["rotation"])
        elif rule_name == "set_profile":
            machine.set_profile(action=Action(args["action"]))
        elif rule_name == "set_clock":
            machine.set_clock(days=int(args["days"]))
        elif rule_name == "restart_client":
            machine.restart_client()
        elif rule_name == "upgrade_client":
            machine.upgrade_client()
        elif rule_name == "connect":
            machine.connect(int(args["server"]), Answer(args["answer"]))
        else:
            raise ValueError(
                f"unknown rule {rule_name!r} in a stateful regression file; "
                "record the case again with this version of the suite"
            )
        for check in INVARIANTS:
            getattr(machine, check)()


def _replay_file(
    path: Path, lab: Lab, servers: tuple[MockEms, MockEms]
) -> EndpointMachine:
    data = json.loads(path.read_text())
    machine = bind(lab, servers[: data["listeners"]])()
    try:
        replay_steps(machine, data["steps"])
    finally:
        machine.teardown()
    return machine


def _stateful_files() -> list[Path]:
    return [
        path
        for path in sorted(DEFAULT_FIXTURES_DIR.glob("*.json"))
        if json.loads(path.read_text()).get("property") == "stateful"
    ]


@pytest.mark.parametrize("path", _stateful_files(), ids=lambda p: p.stem)
def test_recorded_steps_replay(
    cert_lab: Lab, ems_pair: tuple[MockEms, MockEms], path: Path
) -> None:
    machine = _replay_file(path, cert_lab, ems_pair)

    assert machine.attempts, f"{path.name} makes no connection attempt"


def test_stateful_folder_has_seed_case() -> None:
    names = [path.name for path in _stateful_files()]

    assert SEED_STEPS in names


def test_machine_finds_port_blind_lookup(
    cert_lab: Lab,
    ems_pair: tuple[MockEms, MockEms],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv(FIXTURES_ENV, str(tmp_path))
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

    # The final example's steps are kept as one file, which replays: the
    # broken lookup fails it again and the real one passes.
    written = list(tmp_path.glob("stateful-found-*.json"))
    assert len(written) == 1
    with pytest.raises(AssertionError, match="client disagrees with the oracle"):
        _replay_file(written[0], cert_lab, ems_pair)
    monkeypatch.undo()
    _replay_file(written[0], cert_lab, ems_pair)
