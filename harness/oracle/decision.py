"""Expected outcome of one connection attempt, from declared properties only.

The oracle walks the behaviour specification in order:

1. Which certificate the EMS presents: the vendor certificate for an EMS
   without standards validation or with *use SSL certificate for endpoint
   control* off; with the toggle on, the imported certificate, or the
   built-in self-signed default when nothing was imported.
2. A legacy client checks only the subject CN against
   ``Assumptions.legacy_subject_pattern``: pass connects silently, fail
   refuses, and no action or prompt applies.
3. A new client computes every reason (:mod:`harness.oracle.standards`),
   takes its action from a profile, the installer or the default, and
   applies the decision table, including remembered certificates.

It never parses a certificate and never opens a file or socket.
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
import re
from dataclasses import dataclass, field

from harness.assumptions import Assumptions
from harness.model import (
    Action,
    ActionSource,
    Answer,
    OutcomeName,
    PresentedCertificate,
    Reason,
    sorted_reasons,
)
from harness.oracle.standards import expected_reasons
from harness.pki.kinds import CATALOGUE, CertKind, LeafSpec
from harness.versions import Version, has_feature

# Cached because a matrix run checks the same few versions thousands of
# times. Both are pure functions of the version text. A ValueError for an
# invalid version is not cached, so it is raised again on every call.
_parse_version = functools.lru_cache(maxsize=256)(Version.parse)
_has_feature = functools.lru_cache(maxsize=256)(has_feature)

DEFAULT_PORT = 8013
VENDOR_KIND = "vendor-default"
BUILTIN_KIND = "ems-builtin-default"


class Remembered(enum.StrEnum):
    """Contents of the remembered-certificate store for this EMS.

    ``THIS_LEAF`` covers the presented leaf with every reason it now has;
    ``THIS_LEAF_FEWER_REASONS`` contains the same leaf allowed earlier with one
    reason fewer (for example before it expired).
    """

    NONE = "none"
    THIS_LEAF = "this-leaf"
    OTHER_LEAF = "other-leaf"
    THIS_LEAF_FEWER_REASONS = "this-leaf-fewer-reasons"


class _SameAsKind(enum.Enum):
    KIND = "kind"


# Default of Scenario.imported: the scenario's own kind is the imported one.
SAME_AS_KIND = _SameAsKind.KIND


@dataclass(frozen=True, kw_only=True)
class Scenario:
    """One connection attempt, described by its declared properties.

    Attributes:
        kind: The certificate kind under test; its reference identity is the
            EMS address the client connects to.
        ems_version: EMS version.
        use_ssl_cert: The EMS toggle *use SSL certificate for endpoint
            control*; ``None`` exactly when the EMS version lacks it.
        imported: The kind the EMS would present with the toggle on, or
            ``None`` when no certificate was imported. Defaults to ``kind``.
        client_version: Endpoint client version.
        action: The client's invalid certificate action, or ``None`` to
            derive it from ``profile_action``, ``installer_action`` and
            ``assumptions.default_action``.
        action_source: Where ``action`` came from; required with ``action``.
        profile_action: Action of a profile received earlier over telemetry.
            Only an EMS with standards validation sends one.
        installer_action: Action baked into the client's installer.
        answer: The user's answer if the client prompts.
        remembered: What the remembered-certificate store holds for this EMS.
        port: EMS port; remembered certificates are keyed by it.
        assumptions: The oracle's settings where the product is undocumented.
        built_at: Lab build time the declared validity windows refer to.
        now: Validation time; ``built_at`` if omitted.
    """

    kind: CertKind
    ems_version: str
    use_ssl_cert: bool | None
    imported: CertKind | _SameAsKind | None = SAME_AS_KIND
    client_version: str
    action: Action | None = None
    action_source: ActionSource | None = None
    profile_action: Action | None = None
    installer_action: Action | None = None
    answer: Answer | None = None
    remembered: Remembered = Remembered.NONE
    port: int = DEFAULT_PORT
    assumptions: Assumptions = field(default_factory=Assumptions)
    built_at: dt.datetime
    now: dt.datetime | None = None

    def __post_init__(self) -> None:
        _parse_version(self.ems_version)
        _parse_version(self.client_version)
        if self.imported is SAME_AS_KIND:
            object.__setattr__(self, "imported", self.kind)
        object.__setattr__(self, "remembered", Remembered(self.remembered))
        ems_has_feature = _has_feature(self.ems_version)
        if ems_has_feature and self.use_ssl_cert is None:
            raise ValueError(
                f"EMS {self.ems_version} has the use-SSL-certificate setting: "
                "set use_ssl_cert to True or False"
            )
        if not ems_has_feature and self.use_ssl_cert is not None:
            raise ValueError(
                f"EMS {self.ems_version} has no use-SSL-certificate setting: "
                "set use_ssl_cert to None"
            )
        if (self.action is None) != (self.action_source is None):
            raise ValueError("give action and action_source together, or neither")
        if not 0 < self.port < 65536:
            raise ValueError(f"invalid port {self.port}: expected 1 to 65535")

    @classmethod
    def from_leaf(
        cls,
        leaf: LeafSpec,
        reference_identity: str,
        *,
        name: str = "custom-leaf",
        **settings: object,
    ) -> Scenario:
        """Build a scenario for a leaf that is not in the catalogue."""
        kind = CertKind(name, "leaf declared by the caller", leaf, reference_identity)
        return cls(kind=kind, **settings)  # type: ignore[arg-type]

    @property
    def reference_identity(self) -> str:
        """The EMS address the client connects to."""
        return self.kind.reference_identity

    @property
    def imported_kind(self) -> CertKind | None:
        """The imported kind, or ``None`` when nothing was imported."""
        assert not isinstance(self.imported, _SameAsKind)
        return self.imported

    @property
    def id(self) -> str:
        """A readable identifier, usable as a pytest id."""
        if self.use_ssl_cert is None:
            toggle = "na"
        else:
            toggle = "on" if self.use_ssl_cert else "off"
        action = self.action.value if self.action is not None else "auto"
        answer = self.answer.value if self.answer is not None else "none"
        parts = [
            self.kind.name,
            f"ems-{self.ems_version}-{toggle}",
            f"client-{self.client_version}",
            action,
            answer,
            f"remembered-{self.remembered.value}",
        ]
        imported = self.imported_kind
        if imported is None:
            parts.append("imported-none")
        elif imported is not self.kind:
            parts.append(f"imported-{imported.name}")
        if self.action is None:
            parts.append(
                f"profile-{self.profile_action or 'none'}"
                f"-installer-{self.installer_action or 'none'}"
            )
        if self.port != DEFAULT_PORT:
            parts.append(f"port-{self.port}")
        return "/".join(parts)


@dataclass(frozen=True)
class ExpectedOutcome:
    """Outcome the specification requires for one scenario.

    Attributes:
        connected: Whether the client connects.
        prompted: Whether the client shows the warning prompt.
        remembered_after: Whether, afterwards, the remembered-certificate
            store covers the presented leaf with all its current reasons;
            always ``False`` for a legacy client, which keeps none.
        reasons: Every reason the presented certificate is invalid; always
            empty for a legacy client, which computes none.
        outcome: The documented outcome name.
        action: The action in effect, ``None`` for a legacy client.
        action_source: Where the action came from, ``None`` for legacy.
        presented: Which certificate the EMS presents.
    """

    connected: bool
    prompted: bool
    remembered_after: bool
    reasons: list[Reason]
    outcome: OutcomeName
    action: Action | None
    action_source: ActionSource | None
    presented: PresentedCertificate


def presented_certificate(scenario: Scenario) -> tuple[PresentedCertificate, CertKind]:
    """Return which certificate the EMS presents, and its kind."""
    if not _has_feature(scenario.ems_version) or not scenario.use_ssl_cert:
        return PresentedCertificate.VENDOR, CATALOGUE[VENDOR_KIND]
    imported = scenario.imported_kind
    if imported is None:
        return PresentedCertificate.BUILTIN_DEFAULT, CATALOGUE[BUILTIN_KIND]
    return PresentedCertificate.IMPORTED, imported


def effective_action(scenario: Scenario) -> tuple[Action, ActionSource]:
    """Return the action a new client applies and where it came from."""
    if scenario.action is not None and scenario.action_source is not None:
        return scenario.action, scenario.action_source
    if scenario.profile_action is not None and _has_feature(scenario.ems_version):
        return scenario.profile_action, ActionSource.PROFILE
    if scenario.installer_action is not None:
        return scenario.installer_action, ActionSource.INSTALLER
    return scenario.assumptions.default_action, ActionSource.DEFAULT


def legacy_subject_passes(leaf: LeafSpec, pattern: str) -> bool:
    """Return whether any subject CN of ``leaf`` has the legacy serial form."""
    compiled = re.compile(pattern)
    return any(compiled.fullmatch(cn) for cn in leaf.common_names)


def _covers(remembered: Remembered, reasons: list[Reason]) -> bool:
    if remembered is Remembered.THIS_LEAF:
        return True
    # An entry with one reason fewer covers nothing more when there is no
    # reason to begin with.
    return remembered is Remembered.THIS_LEAF_FEWER_REASONS and not reasons


def expected_outcome(scenario: Scenario) -> ExpectedOutcome:
    """Return what the specification requires for ``scenario``."""
    presented, kind = presented_certificate(scenario)
    if not _has_feature(scenario.client_version):
        passes = legacy_subject_passes(
            kind.leaf, scenario.assumptions.legacy_subject_pattern
        )
        return ExpectedOutcome(
            connected=passes,
            prompted=False,
            # A legacy client keeps no remembered certificates.
            remembered_after=False,
            reasons=[],
            outcome=OutcomeName.CONNECTED_LEGACY
            if passes
            else OutcomeName.REFUSED_LEGACY,
            action=None,
            action_source=None,
            presented=presented,
        )

    reasons = sorted_reasons(
        expected_reasons(
            kind.leaf,
            scenario.reference_identity,
            scenario.assumptions.cn_fallback,
            scenario.built_at,
            scenario.now,
        )
    )
    action, source = effective_action(scenario)
    covered = _covers(scenario.remembered, reasons)

    def result(
        connected: bool,
        outcome: OutcomeName,
        *,
        prompted: bool = False,
        remembered_after: bool = covered,
    ) -> ExpectedOutcome:
        return ExpectedOutcome(
            connected,
            prompted,
            remembered_after,
            reasons,
            outcome,
            action,
            source,
            presented,
        )

    if not reasons:
        return result(True, OutcomeName.CONNECTED_VALID)
    if action is Action.ALLOW:
        return result(True, OutcomeName.CONNECTED_ALLOW)
    if action is Action.DENY:
        # Deny outranks a remembered certificate.
        return result(False, OutcomeName.REFUSED_DENY)
    if covered:
        return result(True, OutcomeName.CONNECTED_REMEMBERED)
    if scenario.answer is None:
        raise ValueError(
            f"scenario {scenario.id} prompts the user but has no answer: set answer"
        )
    if scenario.answer is Answer.ALLOW:
        return result(
            True,
            OutcomeName.CONNECTED_PROMPT_ALLOWED,
            prompted=True,
            remembered_after=True,
        )
    return result(
        False, OutcomeName.REFUSED_PROMPT_DENIED, prompted=True, remembered_after=False
    )
