"""Run an upgrade path over a simulated fleet, one admin step at a time.

Theory of operation
-------------------

A :class:`Simulation` owns a :class:`~harness.fleet.model.FleetState`, the
certificate bytes the EMS holds, and a fabric connector. :meth:`run` records
the starting state as step 0, then for each step of the path:

1. applies the admin operation. The EMS settings model validates it, so a
   rejected change is recorded as the step's error and changes nothing;
2. runs deployments that are due on the simulated clock, and an ACME renewal
   when auto-renew is on and the certificate is due;
3. pushes a changed profile action to endpoints that were online, because
   they hold an open telemetry session on which the EMS delivers it;
4. makes every endpoint reconnect through a :class:`Connector`, and computes
   the oracle's expected outcome for each. Endpoints in identical state (version,
   actions, remembered leaf) share one oracle computation, but each endpoint
   makes its own connection;
5. records per client version how many endpoints are online, offline and
   prompted, and why, and every endpoint where the connector disagrees with
   the oracle.

A connected session delivers the EMS's profile; a prompt the user allowed
remembers the leaf. Both are mirrored in the endpoint's state so that the
oracle sees what the client has stored.

The simulated clock schedules deployments and ACME renewals. Certificate
validity is judged at the lab's build time by the oracle and at the current
time by real clients; the two agree while a lab is fresh.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from harness.ems.settings import (
    BUILTIN_DEFAULT_KIND,
    VENDOR_KIND,
    CertificateSource,
    EmsSettings,
    ImportedCertificate,
    Installer,
    Profile,
    SettingsError,
)
from harness.fabric import FabricConnector
from harness.fleet.model import (
    SIMULATION_START,
    Deployment,
    Endpoint,
    FleetInstaller,
    FleetState,
    build_endpoints,
)
from harness.fleet.operations import (
    AdvanceClock,
    BuildInstaller,
    ConfigureEms,
    DeployInstaller,
    ImportCertificate,
    Operation,
    ReauthorizeFabric,
    RenewAcme,
    SetProfileAction,
    Toggle,
    UpgradeEms,
)
from harness.fleet.paths import Step, UpgradePath
from harness.model import Action, OutcomeName, PresentedCertificate
from harness.oracle.decision import ExpectedOutcome, Remembered, Scenario
from harness.oracle.decision import expected_outcome as oracle_outcome
from harness.pki import Lab
from harness.pki.kinds import CATALOGUE, EMS_FQDN, CertKind
from harness.versions import Version, has_feature

logger = logging.getLogger(__name__)

# Auto-renew replaces an ACME certificate 60 days after issuance, 30 days
# before a 90-day certificate expires.
ACME_RENEW_AFTER = dt.timedelta(days=60)


class StepError(Exception):
    """An admin operation the EMS or the fleet rejects; nothing changed."""


@dataclass(frozen=True)
class Presented:
    """The chain the EMS presents on endpoint control, and its declared kind."""

    which: PresentedCertificate
    kind: CertKind
    chain_pem: bytes
    key_pem: bytes = field(repr=False)

    @property
    def leaf_sha256(self) -> str:
        """Hex SHA-256 of the presented leaf."""
        leaf = x509.load_pem_x509_certificates(self.chain_pem)[0]
        return leaf.fingerprint(hashes.SHA256()).hex()


@dataclass(frozen=True)
class Observed:
    """The outcome of one endpoint's connection attempt."""

    connected: bool
    prompted: bool
    outcome: str
    reasons: tuple[str, ...] = ()
    error: str | None = None


class Connector(Protocol):
    """Connects one endpoint to the EMS and returns the outcome."""

    def present(self, presented: Presented, profile_action: Action | None) -> None:
        """Serve ``presented`` and send ``profile_action`` in profiles from now."""

    def push_profile(self, endpoint: Endpoint, action: Action) -> None:
        """Deliver a profile to an endpoint over its open session."""

    def connect(
        self, endpoint: Endpoint, state: FleetState, expected: ExpectedOutcome
    ) -> Observed:
        """Connect ``endpoint`` once; ``expected`` is for oracle-only runs."""

    def close(self) -> None:
        """Release servers and files."""


class OracleConnector:
    """A connector that does what the oracle expects; no sockets, for fast suites."""

    def present(self, presented: Presented, profile_action: Action | None) -> None:
        pass

    def push_profile(self, endpoint: Endpoint, action: Action) -> None:
        pass

    def connect(
        self, endpoint: Endpoint, state: FleetState, expected: ExpectedOutcome
    ) -> Observed:
        return Observed(
            expected.connected,
            expected.prompted,
            expected.outcome.value,
            tuple(r.value for r in expected.reasons),
        )

    def close(self) -> None:
        pass


@dataclass
class VersionCounts:
    """Endpoints of one client version after a step."""

    total: int = 0
    online: int = 0
    offline: int = 0
    prompted: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)

    def to_dict(self) -> dict[str, Any]:
        """Return the counts as JSON-ready values."""
        return {
            "total": self.total,
            "online": self.online,
            "offline": self.offline,
            "prompted": self.prompted,
            "reasons": dict(sorted(self.reasons.items())),
            "outcomes": dict(sorted(self.outcomes.items())),
        }


@dataclass(frozen=True)
class Disagreement:
    """An endpoint whose connection did not do what the oracle expects."""

    endpoint_id: str
    version: str
    expected: str
    observed: str
    error: str | None = None


@dataclass
class StepRecord:
    """The state of the fleet after one step.

    Attributes:
        index: 0 for the starting state, then 1, 2, ... per path step.
        label: What the admin did.
        error: Why the EMS rejected the step, ``None`` when it was applied.
        now: The simulated clock after the step.
        ems_version: EMS version after the step.
        toggle: *use SSL certificate for endpoint control*, ``None`` when the
            EMS version lacks it.
        profile_action: Action in the EMS profile, ``None`` before 6.4.7.
        presented: Which certificate the EMS presented.
        presented_kind: Its lab kind.
        leaf_sha256: SHA-256 of the presented leaf.
        events: Things that happened besides the operation (deployments run,
            ACME renewals).
        fabric_up: Whether the fabric connector trusted the EMS.
        fabric_reasons: Why it did not.
        by_version: Counts per client version.
        offline_ids: Endpoints that could not connect.
        prompted_ids: Endpoints that prompted their user.
        legacy_ids: Endpoints on a version without the feature.
        disagreements: Endpoints where connector and oracle differ.
        connections: Connection attempts made.
        seconds: Wall time of the reconnection round.
        expect: The step's expectations from the path file.
    """

    index: int
    label: str
    error: str | None
    now: dt.datetime
    ems_version: str
    toggle: bool | None
    profile_action: Action | None
    presented: str
    presented_kind: str
    leaf_sha256: str
    events: list[str] = field(default_factory=list)
    fabric_up: bool = False
    fabric_reasons: tuple[str, ...] = ()
    by_version: dict[str, VersionCounts] = field(default_factory=dict)
    offline_ids: set[str] = field(default_factory=set)
    prompted_ids: set[str] = field(default_factory=set)
    legacy_ids: set[str] = field(default_factory=set)
    disagreements: list[Disagreement] = field(default_factory=list)
    connections: int = 0
    seconds: float = 0.0
    expect: dict[str, Any] = field(default_factory=dict)

    @property
    def online(self) -> int:
        """Endpoints online after the step."""
        return sum(c.online for c in self.by_version.values())

    @property
    def offline(self) -> int:
        """Endpoints offline after the step."""
        return sum(c.offline for c in self.by_version.values())

    @property
    def prompted(self) -> int:
        """Endpoints that prompted on this step."""
        return sum(c.prompted for c in self.by_version.values())

    def to_dict(self) -> dict[str, Any]:
        """Return the record as JSON-ready values."""
        return {
            "index": self.index,
            "label": self.label,
            "error": self.error,
            "now": self.now.isoformat(),
            "ems_version": self.ems_version,
            "toggle": self.toggle,
            "profile_action": self.profile_action.value
            if self.profile_action
            else None,
            "presented": self.presented,
            "presented_kind": self.presented_kind,
            "leaf_sha256": self.leaf_sha256,
            "events": list(self.events),
            "fabric": {"up": self.fabric_up, "reasons": list(self.fabric_reasons)},
            "online": self.online,
            "offline": self.offline,
            "prompted": self.prompted,
            "by_version": {v: c.to_dict() for v, c in self.by_version.items()},
            "disagreements": [dataclasses.asdict(d) for d in self.disagreements],
            "connections": self.connections,
            "seconds": round(self.seconds, 4),
        }


@dataclass
class SimulationResult:
    """Every step of one run, with the path and fleet it ran on."""

    path: UpgradePath
    endpoints: int
    steps: list[StepRecord]
    seconds: float = 0.0

    @property
    def connections(self) -> int:
        """Connection attempts over the whole run."""
        return sum(step.connections for step in self.steps)

    @property
    def disagreements(self) -> list[Disagreement]:
        """Every disagreement of every step."""
        return [d for step in self.steps for d in step.disagreements]

    def to_dict(self) -> dict[str, Any]:
        """Return the result as JSON-ready values."""
        return {
            "path": self.path.name,
            "description": self.path.description,
            "endpoints": self.endpoints,
            "mix": dict(self.path.mix),
            "seconds": round(self.seconds, 3),
            "connections": self.connections,
            "steps": [step.to_dict() for step in self.steps],
        }


class AcmeIssuer(Protocol):
    """Issues the ACME-managed certificate: returns chain PEM and key PEM."""

    def __call__(self, kind: CertKind) -> tuple[bytes, bytes]:
        """Issue a fresh leaf with ``kind``'s declared properties."""


def lab_acme_issuer(lab: Lab) -> AcmeIssuer:
    """Return an issuer that models ACME with fresh lab leaves of the kind."""

    def issue(kind: CertKind) -> tuple[bytes, bytes]:
        issued = lab.issue(kind.leaf)
        return issued.chain_pem, issued.key_pem

    return issue


class Simulation:
    """A fleet, an EMS and a fabric connector driven along an upgrade path.

    Args:
        path: The upgrade path.
        lab: The certificate lab; its kinds give the EMS its certificates.
        connector: How endpoints connect; :class:`OracleConnector` if omitted.
        endpoints: Fleet size; the path's own size if omitted.
        mix: Client versions and weights; the path's own mix if omitted.
        workers: Threads making connections at once.
        acme_issuer: Issues ACME certificates; fresh lab leaves if omitted.
        progress: Called with each finished step.
    """

    def __init__(
        self,
        path: UpgradePath,
        lab: Lab,
        *,
        connector: Connector | None = None,
        endpoints: int | None = None,
        mix: dict[str, int] | None = None,
        workers: int = 16,
        acme_issuer: AcmeIssuer | None = None,
        progress: Callable[[StepRecord], None] | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError(f"invalid workers {workers}: use 1 or more")
        self.path = path
        self.lab = lab
        self.connector: Connector = connector or OracleConnector()
        self.workers = workers
        self.acme_issuer = acme_issuer or lab_acme_issuer(lab)
        self.progress = progress
        count = path.endpoints if endpoints is None else endpoints
        self.state = FleetState(
            ems=EmsSettings(
                ems_version=path.ems_version,
                profiles=(Profile("default", Action.WARN),),
            ),
            endpoints=build_endpoints(
                count, dict(mix or path.mix), path.installer_action
            ),
            prompt_answer=path.prompt_answer,
        )
        self.imported_pem: tuple[bytes, bytes] | None = None
        self.fabric = FabricConnector(path.firewall_version, path.trust_renewed)
        self.fabric.authorize(self._fabric_chain())
        self._records: list[StepRecord] = []

    # -- certificates --------------------------------------------------------

    def _kind(self, name: str) -> CertKind:
        try:
            kind = CATALOGUE[name]
        except KeyError:
            raise StepError(
                f"unknown certificate kind {name!r}; run 'certs list' for the kinds"
            ) from None
        # Endpoints connect to the EMS FQDN whatever the kind was built for.
        return dataclasses.replace(kind, reference_identity=EMS_FQDN)

    def _kind_pem(self, name: str) -> tuple[bytes, bytes]:
        built = self.lab.kind(name)
        return built.chain_path.read_bytes(), built.key_path.read_bytes()

    def presented(self) -> Presented:
        """Return the chain the EMS presents on endpoint control now."""
        settings = self.state.ems
        which = settings.presented_certificate()
        if which is PresentedCertificate.VENDOR:
            return Presented(
                which, self._kind(VENDOR_KIND), *self._kind_pem(VENDOR_KIND)
            )
        if which is PresentedCertificate.BUILTIN_DEFAULT:
            kind = self._kind(BUILTIN_DEFAULT_KIND)
            return Presented(which, kind, *self._kind_pem(BUILTIN_DEFAULT_KIND))
        imported = settings.imported_certificate
        assert imported is not None and imported.kind is not None
        assert self.imported_pem is not None
        return Presented(which, self._kind(imported.kind), *self.imported_pem)

    def _fabric_chain(self) -> bytes:
        # The fabric connector talks to the EMS's HTTPS interface, which serves
        # the imported certificate, or the built-in default without one.
        if self.imported_pem is not None:
            return self.imported_pem[0]
        return self._kind_pem(BUILTIN_DEFAULT_KIND)[0]

    # -- admin operations ----------------------------------------------------

    def apply(self, operation: Operation) -> list[str]:
        """Apply one admin operation; return events besides the operation.

        Raises:
            StepError: the EMS or the fleet rejects the operation; the state
                is unchanged.
        """
        try:
            self._apply(operation)
        except SettingsError as exc:
            raise StepError(str(exc)) from None
        return self._run_due()

    def _apply(self, operation: Operation) -> None:
        state = self.state
        ems = state.ems
        match operation:
            case UpgradeEms(version):
                if Version.parse(version) < Version.parse(ems.ems_version):
                    raise StepError(
                        f"EMS {ems.ems_version} cannot be downgraded to {version}"
                    )
                toggle = ems.use_ssl_certificate_for_endpoint_control
                if has_feature(version) and toggle is None:
                    toggle = False
                state.ems = ems.replace(
                    ems_version=version,
                    use_ssl_certificate_for_endpoint_control=toggle,
                )
            case ImportCertificate(kind_name, acme, auto_renew):
                kind = self._kind(kind_name)
                source = CertificateSource.ACME if acme else CertificateSource.UPLOAD
                imported = ImportedCertificate(
                    source=source, kind=kind_name, auto_renew=auto_renew
                )
                state.ems = ems.replace(imported_certificate=imported)
                if acme:
                    self.imported_pem = self.acme_issuer(kind)
                    state.acme_issued_at = state.now
                else:
                    self.imported_pem = self._kind_pem(kind_name)
                state.certificate_generation += 1
            case ConfigureEms(remote, redirect):
                changes: dict[str, bool] = {}
                if remote is not None:
                    changes["remote_https_access"] = remote
                if redirect is not None:
                    changes["http_redirect"] = redirect
                state.ems = ems.replace(**changes)
            case Toggle(on):
                state.ems = ems.replace(use_ssl_certificate_for_endpoint_control=on)
            case SetProfileAction(action):
                profiles = tuple(
                    dataclasses.replace(p, invalid_cert_action=action)
                    for p in ems.profiles
                )
                state.ems = ems.replace(profiles=profiles)
            case BuildInstaller(name, version, action):
                state.ems = ems.replace(
                    installers=(*ems.installers, Installer(name, action))
                )
                state.installers[name] = FleetInstaller(name, version, action)
            case DeployInstaller(installer, groups, at):
                self._schedule(installer, groups, at)
            case AdvanceClock(by):
                state.now += by
            case RenewAcme():
                self._renew_acme()
            case ReauthorizeFabric():
                self.fabric.authorize(self._fabric_chain())

    def _schedule(
        self, installer: str, groups: tuple[str, ...], at: dt.timedelta | None
    ) -> None:
        state = self.state
        if installer not in state.installers:
            known = ", ".join(state.installers) or "none built yet"
            raise StepError(f"unknown installer {installer!r}; built: {known}")
        known_groups = set(state.groups())
        for group in groups:
            if group not in known_groups and group not in ("all", "legacy"):
                raise StepError(
                    f"unknown group {group!r}; groups: "
                    f"{', '.join(state.groups())}, all, legacy"
                )
        when = state.now if at is None else SIMULATION_START + at
        state.pending.append(Deployment(installer, groups, when))

    def _renew_acme(self) -> None:
        imported = self.state.ems.imported_certificate
        if imported is None or imported.source is not CertificateSource.ACME:
            raise StepError("no ACME-managed certificate to renew; import one first")
        assert imported.kind is not None
        self.imported_pem = self.acme_issuer(self._kind(imported.kind))
        self.state.acme_issued_at = self.state.now
        self.state.certificate_generation += 1

    def _run_due(self) -> list[str]:
        state = self.state
        events: list[str] = []
        due = [d for d in state.pending if d.at <= state.now]
        state.pending = [d for d in state.pending if d.at > state.now]
        for deployment in sorted(due, key=lambda d: d.at):
            installer = state.installers[deployment.installer]
            count = 0
            for endpoint in state.endpoints:
                if _selected(endpoint, deployment.groups):
                    endpoint.version = installer.version
                    endpoint.installer_action = installer.action
                    count += 1
            events.append(f"deployed {installer.name} to {count} endpoints")

        imported = state.ems.imported_certificate
        if (
            imported is not None
            and imported.source is CertificateSource.ACME
            and imported.auto_renew
            and state.acme_issued_at is not None
            and state.now - state.acme_issued_at >= ACME_RENEW_AFTER
        ):
            self._renew_acme()
            events.append("ACME auto-renewal")
        return events

    # -- one reconnection round ------------------------------------------------

    def _push_profile(self) -> None:
        # Only a profile change reaches open sessions. An EMS upgrade restarts
        # the server, so endpoints get its profile after they reconnect.
        action = self.state.ems.profile_action()
        if action is None:
            return
        online = [e for e in self.state.endpoints if e.online]
        for endpoint in online:
            endpoint.profile_action = action
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            list(pool.map(lambda e: self.connector.push_profile(e, action), online))

    def _scenario(self, endpoint: Endpoint, presented: Presented) -> Scenario:
        ems = self.state.ems
        toggle = ems.use_ssl_certificate_for_endpoint_control
        imported_name = (
            ems.imported_certificate.kind if ems.imported_certificate else None
        )
        imported = self._kind(imported_name) if imported_name else None
        if endpoint.remembered is None:
            remembered = Remembered.NONE
        elif endpoint.remembered == presented.leaf_sha256:
            remembered = Remembered.THIS_LEAF
        else:
            remembered = Remembered.OTHER_LEAF
        return Scenario(
            kind=imported or self._kind("correct-fqdn"),
            imported=imported,
            ems_version=ems.ems_version,
            use_ssl_cert=bool(toggle) if ems.has_toggle else None,
            client_version=endpoint.version,
            profile_action=endpoint.profile_action,
            installer_action=endpoint.installer_action,
            answer=self.state.prompt_answer,
            remembered=remembered,
            built_at=self.lab.built_at,
        )

    def _expectations(
        self, presented: Presented
    ) -> Iterator[tuple[Endpoint, ExpectedOutcome]]:
        cache: dict[tuple[object, ...], ExpectedOutcome] = {}
        sha = presented.leaf_sha256
        for endpoint in self.state.endpoints:
            key = (
                endpoint.version,
                endpoint.profile_action,
                endpoint.installer_action,
                endpoint.remembered is None,
                endpoint.remembered == sha,
            )
            if key not in cache:
                cache[key] = oracle_outcome(self._scenario(endpoint, presented))
            yield endpoint, cache[key]

    def _reconnect(self, record: StepRecord, presented: Presented) -> None:
        self.connector.present(presented, self.state.ems.profile_action())
        pairs = list(self._expectations(presented))
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            observed = list(
                pool.map(
                    lambda pair: self.connector.connect(pair[0], self.state, pair[1]),
                    pairs,
                )
            )
        record.seconds = time.perf_counter() - started
        record.connections = len(pairs)

        profile = self.state.ems.profile_action()
        for (endpoint, expected), seen in zip(pairs, observed, strict=True):
            self._account(record, endpoint, expected, seen, presented, profile)

    def _account(
        self,
        record: StepRecord,
        endpoint: Endpoint,
        expected: ExpectedOutcome,
        seen: Observed,
        presented: Presented,
        profile: Action | None,
    ) -> None:
        counts = record.by_version.setdefault(endpoint.version, VersionCounts())
        counts.total += 1
        counts.outcomes[seen.outcome] += 1
        counts.reasons.update(seen.reasons)
        if seen.connected:
            counts.online += 1
        else:
            counts.offline += 1
            record.offline_ids.add(endpoint.endpoint_id)
        if seen.prompted:
            counts.prompted += 1
            record.prompted_ids.add(endpoint.endpoint_id)
        if not endpoint.is_new:
            record.legacy_ids.add(endpoint.endpoint_id)
        if (
            seen.outcome != expected.outcome.value
            or seen.connected != expected.connected
            or seen.prompted != expected.prompted
        ):
            record.disagreements.append(
                Disagreement(
                    endpoint.endpoint_id,
                    endpoint.version,
                    expected.outcome.value,
                    seen.outcome,
                    seen.error,
                )
            )

        # Mirror what the client stored: the profile from a connected session
        # (a legacy client keeps none) and a leaf the user allowed.
        endpoint.online = seen.connected
        if seen.connected and profile is not None and endpoint.is_new:
            endpoint.profile_action = profile
        if seen.outcome == OutcomeName.CONNECTED_PROMPT_ALLOWED:
            endpoint.remembered = presented.leaf_sha256

    def _record(self, index: int, label: str, error: str | None) -> StepRecord:
        ems = self.state.ems
        presented = self.presented()
        fabric = self.fabric.check(self._fabric_chain(), now=self.lab.built_at)
        record = StepRecord(
            index=index,
            label=label,
            error=error,
            now=self.state.now,
            ems_version=ems.ems_version,
            toggle=ems.use_ssl_certificate_for_endpoint_control
            if ems.has_toggle
            else None,
            profile_action=ems.profile_action(),
            presented=presented.which.value,
            presented_kind=presented.kind.name,
            leaf_sha256=presented.leaf_sha256,
            fabric_up=fabric.up,
            fabric_reasons=tuple(r.value for r in fabric.reasons),
        )
        self._reconnect(record, presented)
        return record

    def start(self) -> StepRecord:
        """Connect every endpoint once in the starting state; return step 0."""
        self._records = [self._record(0, "starting state", None)]
        self._emit(self._records[-1])
        return self._records[-1]

    def step(self, step: Step) -> StepRecord:
        """Apply one step, reconnect every endpoint, and return its record."""
        index = len(self._records)
        error = None
        events: list[str] = []
        try:
            events = self.apply(step.operation)
        except StepError as exc:
            error = str(exc)
            logger.info("step %d (%s) rejected: %s", index, step.label, error)
        if error is None and isinstance(step.operation, SetProfileAction):
            self._push_profile()
        record = self._record(index, step.label, error)
        record.events = events
        record.expect = dict(step.expect)
        self._records.append(record)
        self._emit(record)
        return record

    def run(self) -> SimulationResult:
        """Run the starting state and every step of the path; return the records."""
        started = time.perf_counter()
        try:
            self.start()
            for step in self.path.steps:
                self.step(step)
        finally:
            self.connector.close()
        return SimulationResult(
            self.path,
            len(self.state.endpoints),
            list(self._records),
            time.perf_counter() - started,
        )

    def _emit(self, record: StepRecord) -> None:
        if self.progress is not None:
            self.progress(record)


def _selected(endpoint: Endpoint, groups: tuple[str, ...]) -> bool:
    if "all" in groups or endpoint.group in groups:
        return True
    return "legacy" in groups and not endpoint.is_new
