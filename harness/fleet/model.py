"""State of a simulated fleet: endpoints, installers, deployments and a clock.

The EMS side is :class:`harness.ems.settings.EmsSettings`, so every admin
change goes through its validation. Everything here is plain mutable data
that :mod:`harness.fleet.operations` changes one admin step at a time.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from harness.ems.settings import EmsSettings
from harness.model import Action, ActionSource, Answer
from harness.versions import Version, has_feature

# Start of every simulated clock; schedules are offsets from it.
SIMULATION_START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


@dataclass
class Endpoint:
    """One simulated endpoint client.

    Attributes:
        endpoint_id: Stable id, for example ``ep-0042``.
        group: Endpoint group the admin deploys installers to.
        version: Installed client version.
        installer_action: Action baked into the installer that installed it,
            or ``None`` when that installer had none.
        profile_action: Action of the last profile received from an EMS with
            the feature, or ``None`` before the first one.
        remembered: SHA-256 of the leaf the user last allowed for this EMS;
            a client keeps one remembered leaf per EMS.
        online: Whether the last connection attempt connected.
    """

    endpoint_id: str
    group: str
    version: str
    installer_action: Action | None = None
    profile_action: Action | None = None
    remembered: str | None = None
    online: bool = False

    @property
    def is_new(self) -> bool:
        """Whether this client version validates certificates the standard way."""
        return has_feature(self.version)

    def effective_action(self, default: Action) -> tuple[Action, ActionSource]:
        """Return the action the client applies and where it came from."""
        if self.profile_action is not None:
            return self.profile_action, ActionSource.PROFILE
        if self.installer_action is not None:
            return self.installer_action, ActionSource.INSTALLER
        return default, ActionSource.DEFAULT


@dataclass(frozen=True)
class FleetInstaller:
    """An installer the admin built: a client version and a baked-in action."""

    name: str
    version: str
    action: Action


@dataclass(frozen=True)
class Deployment:
    """An installer scheduled for endpoint groups at a simulated time.

    ``groups`` may name groups or the selectors ``all`` (every endpoint) and
    ``legacy`` (endpoints running a version without the feature when the
    deployment runs).
    """

    installer: str
    groups: tuple[str, ...]
    at: dt.datetime


@dataclass
class FleetState:
    """Everything the simulation changes from step to step.

    Attributes:
        ems: Validated EMS settings.
        endpoints: The fleet, in a stable order.
        installers: Installers built so far, by name.
        pending: Deployments scheduled for later.
        now: The simulated clock.
        prompt_answer: What users answer when a client prompts.
        default_action: Action of a client with neither profile nor
            installer action.
        certificate_generation: Bumped whenever the EMS gets new certificate
            bytes (an import or an ACME renewal).
        acme_issued_at: Simulated time of the last ACME issuance.
    """

    ems: EmsSettings
    endpoints: list[Endpoint]
    installers: dict[str, FleetInstaller] = field(default_factory=dict)
    pending: list[Deployment] = field(default_factory=list)
    now: dt.datetime = SIMULATION_START
    prompt_answer: Answer = Answer.ALLOW
    default_action: Action = Action.WARN
    certificate_generation: int = 0
    acme_issued_at: dt.datetime | None = None

    def groups(self) -> list[str]:
        """Return the endpoint groups in first-seen order."""
        return list(dict.fromkeys(e.group for e in self.endpoints))

    def legacy_ids(self) -> set[str]:
        """Return the ids of endpoints running a version without the feature."""
        return {e.endpoint_id for e in self.endpoints if not e.is_new}


def parse_mix(text: str) -> dict[str, int]:
    """Parse ``"6.4.6=25,7.0.2=75"`` into version weights.

    Raises:
        ValueError: an entry is not ``VERSION=WEIGHT`` with a positive weight.
    """
    mix: dict[str, int] = {}
    for entry in text.split(","):
        entry = entry.strip()
        if not entry:
            continue
        version, sep, weight = entry.partition("=")
        if not sep:
            raise ValueError(f"invalid mix entry {entry!r}: expected VERSION=WEIGHT")
        Version.parse(version)
        try:
            value = int(weight)
        except ValueError:
            raise ValueError(
                f"invalid weight {weight!r} for version {version}: expected an integer"
            ) from None
        if value <= 0:
            raise ValueError(f"invalid weight {value} for version {version}: use > 0")
        mix[version.strip()] = value
    if not mix:
        raise ValueError("empty version mix: give at least one VERSION=WEIGHT")
    return mix


def group_name(version: str) -> str:
    """Return the default group name of endpoints first installed at ``version``."""
    return f"clients-{version}"


def build_endpoints(
    count: int, mix: dict[str, int], installer_action: Action | None
) -> list[Endpoint]:
    """Create ``count`` endpoints split across ``mix`` by weight.

    Each version's endpoints form the group :func:`group_name` returns. The
    split rounds down and gives the remainder to the versions in mix order.
    """
    if count < 0:
        raise ValueError(f"invalid endpoint count {count}: use 0 or more")
    total = sum(mix.values())
    shares = {version: count * weight // total for version, weight in mix.items()}
    remainder = count - sum(shares.values())
    for version in list(mix)[:remainder]:
        shares[version] += 1

    endpoints: list[Endpoint] = []
    for version, share in shares.items():
        for _ in range(share):
            endpoint_id = f"ep-{len(endpoints) + 1:04d}"
            endpoints.append(
                Endpoint(endpoint_id, group_name(version), version, installer_action)
            )
    return endpoints
