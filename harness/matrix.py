"""The scenario matrix of ``harness run``.

The full matrix is the product of certificate kind, EMS version, the EMS
setting *use SSL certificate for endpoint control*, client version, invalid
certificate action, prompt answer and remembered state. Combinations that a
dimension cannot affect are dropped before the run, and every drop is
counted under its reason so that a report can show what was left out:

* the setting does not exist before EMS 6.4.7, so those EMS versions get no
  on/off split;
* while the EMS presents its vendor certificate (EMS without the setting, or
  setting off), the imported kind is not on the wire, so these scenarios are
  kept only in the ``vendor-default`` row;
* a legacy client checks the subject CN alone, so action, answer and
  remembered state do not apply to it;
* a certificate that is valid under standards validation never prompts, so
  action, answer and remembered state cannot change the outcome;
* the answer only matters when the client prompts: under ``allow`` and
  ``deny`` it never does, and under ``warn`` a remembered leaf connects
  without a prompt;
* ``allow`` connects whatever is remembered. ``deny`` keeps the remembered
  dimension, because "deny outranks a remembered certificate" is a rule of
  its own.

Plain TLS clients (curl, openssl and the like) have no versions and no
actions: they get one scenario per kind, judged by standards validation
alone under the run's ``cn_fallback`` mode.
"""

from __future__ import annotations

import datetime as dt
import enum
import itertools
import json
import tomllib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from harness.model import Action, Answer, CnFallback
from harness.oracle.decision import Remembered
from harness.oracle.standards import expected_reasons
from harness.pki.kinds import CATALOGUE
from harness.versions import MATRIX_VERSIONS, Version, has_feature

VENDOR_KIND = "vendor-default"
# Remembered states of the matrix. The oracle also models a leaf remembered
# with one reason fewer, which needs a leaf whose reasons change over time.
REMEMBERED_STATES: tuple[Remembered, ...] = (
    Remembered.NONE,
    Remembered.THIS_LEAF,
    Remembered.OTHER_LEAF,
)
# Any fixed instant works: see is_valid_certificate.
_REFERENCE_TIME = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
BUILTIN_KIND = "ems-builtin-default"


class Profile(enum.StrEnum):
    """Client family of a scenario: versioned endpoint client or plain TLS."""

    ENDPOINT = "endpoint"
    TLS = "tls"


class MatrixError(ValueError):
    """A filter, scenario file or scenario id is invalid."""


@dataclass(frozen=True)
class MatrixScenario:
    """One cell of the matrix: declared settings, no expectation.

    Attributes:
        kind: Certificate kind imported on the EMS (or served, for plain TLS).
        cn_fallback: When the subject CN counts as a presented identity.
        profile: ``endpoint`` for versioned endpoint clients, ``tls`` for
            plain TLS clients.
        ems_version: EMS version; ``None`` for plain TLS.
        use_ssl_cert: The EMS setting; ``None`` where it does not exist.
        client_version: Client version; ``None`` for plain TLS.
        action: Invalid certificate action; ``None`` where it cannot apply.
        answer: Prompt answer; ``None`` where no prompt can happen.
        remembered: Remembered state; ``None`` where it cannot matter.
    """

    kind: str
    cn_fallback: CnFallback = CnFallback.WHEN_NO_SAN
    profile: Profile = Profile.ENDPOINT
    ems_version: str | None = None
    use_ssl_cert: bool | None = None
    client_version: str | None = None
    action: Action | None = None
    answer: Answer | None = None
    remembered: Remembered | None = None

    @property
    def id(self) -> str:
        """Readable, unique id, for example ``kind/ems-6.4.7-on/client-7.0.2/warn``."""
        return f"{self.kind}/{self.column}"

    @property
    def column(self) -> str:
        """The id without the kind: the grid column of this scenario."""
        if self.profile is Profile.TLS:
            return f"tls/cn-{self.cn_fallback.value}"
        parts = [self.ems_part, f"client-{self.client_version}"]
        if self.action is None:
            parts.append("legacy" if not self.client_is_new else "any-action")
        else:
            parts.append(self.action.value)
            if self.answer is not None:
                parts.append(self.answer.value)
            if self.remembered is not None:
                parts.append(f"remembered-{self.remembered.value}")
        return "/".join(parts)

    @property
    def ems_part(self) -> str:
        """``ems-VERSION`` plus ``-on`` or ``-off`` where the setting exists."""
        if self.use_ssl_cert is None:
            return f"ems-{self.ems_version}"
        return f"ems-{self.ems_version}-{'on' if self.use_ssl_cert else 'off'}"

    @property
    def client_is_new(self) -> bool:
        """Whether the client version has standards validation."""
        return self.client_version is not None and has_feature(self.client_version)

    @property
    def presented_kind(self) -> str:
        """The kind whose certificate the EMS presents on endpoint control."""
        if self.profile is Profile.TLS or self.use_ssl_cert:
            return self.kind
        return VENDOR_KIND


@dataclass(frozen=True)
class MatrixFilter:
    """A selection of the matrix; ``None`` in a field selects everything."""

    kinds: tuple[str, ...] | None = None
    ems_versions: tuple[str, ...] | None = None
    client_versions: tuple[str, ...] | None = None
    actions: tuple[Action, ...] | None = None
    ids: tuple[str, ...] | None = None

    def merged(self, other: MatrixFilter) -> MatrixFilter:
        """Return a filter whose fields come from ``other`` where it sets them."""
        return MatrixFilter(
            kinds=other.kinds if other.kinds is not None else self.kinds,
            ems_versions=(
                other.ems_versions
                if other.ems_versions is not None
                else self.ems_versions
            ),
            client_versions=(
                other.client_versions
                if other.client_versions is not None
                else self.client_versions
            ),
            actions=other.actions if other.actions is not None else self.actions,
            ids=other.ids if other.ids is not None else self.ids,
        )


@dataclass(frozen=True)
class Matrix:
    """The scenarios of a run and what was dropped from the full product.

    Attributes:
        scenarios: Kept scenarios, in enumeration order, ids unique.
        dropped: Number of dropped combinations per reason.
        full_size: Size of the full product before any drop or filter.
        filtered_out: Combinations removed by the user's filters.
    """

    scenarios: tuple[MatrixScenario, ...]
    dropped: dict[str, int] = field(default_factory=dict)
    full_size: int = 0
    filtered_out: int = 0

    def __len__(self) -> int:
        return len(self.scenarios)


# Drop reasons, worded for reports.
DROP_NO_SETTING = "EMS < 6.4.7 has no 'use SSL certificate' setting"
DROP_NOT_PRESENTED = (
    "the imported kind is not presented (vendor certificate on the wire): "
    "kept under kind vendor-default only"
)
DROP_LEGACY = "legacy client checks only the subject CN: action, answer, memory"
DROP_VALID = "valid certificate never prompts: action, answer, memory"
DROP_NO_PROMPT_ANSWER = "no prompt under deny or a remembered leaf: answer"
DROP_ALLOW = "allow never prompts and connects whatever is remembered: answer, memory"


def _validate_choices(
    label: str, given: Iterable[str] | None, known: Sequence[str]
) -> tuple[str, ...] | None:
    if given is None:
        return None
    values = tuple(dict.fromkeys(value.strip() for value in given if value.strip()))
    for value in values:
        if value in known:
            continue
        if label == "kind":
            # 41 kind names do not fit on one line of an error message.
            raise MatrixError(
                f"unknown kind {value!r}; run 'ems-harness certs list' for the "
                "known kinds"
            )
        raise MatrixError(
            f"unknown {label} {value!r}; known values: {', '.join(known)}"
        )
    return values


def _validate_versions(
    label: str, given: Iterable[str] | None
) -> tuple[str, ...] | None:
    if given is None:
        return None
    values: list[str] = []
    for value in given:
        try:
            values.append(str(Version.parse(value)))
        except ValueError as exc:
            raise MatrixError(f"{label}: {exc}") from None
    return tuple(dict.fromkeys(values))


def make_filter(
    *,
    kinds: Iterable[str] | None = None,
    ems_versions: Iterable[str] | None = None,
    client_versions: Iterable[str] | None = None,
    actions: Iterable[str] | None = None,
    ids: Iterable[str] | None = None,
) -> MatrixFilter:
    """Return a validated :class:`MatrixFilter`.

    ``ems_versions`` and ``client_versions`` accept any dotted version: in
    :func:`build_matrix` they set the versions of those dimensions.

    Raises:
        MatrixError: an unknown kind or action, or an invalid version.
    """
    action_values = _validate_choices("action", actions, [a.value for a in Action])
    return MatrixFilter(
        kinds=_validate_choices("kind", kinds, list(CATALOGUE)),
        ems_versions=_validate_versions("EMS version", ems_versions),
        client_versions=_validate_versions("client version", client_versions),
        actions=(
            None if action_values is None else tuple(Action(a) for a in action_values)
        ),
        ids=None if ids is None else tuple(ids),
    )


def is_valid_certificate(kind: str, cn_fallback: CnFallback) -> bool:
    """Return whether ``kind`` passes standards validation under ``cn_fallback``.

    Declared windows are relative to the build time, so the verdict is the
    same for any build time and is evaluated at the build time itself.
    """
    cert_kind = CATALOGUE[kind]
    reasons = expected_reasons(
        cert_kind.leaf, cert_kind.reference_identity, cn_fallback, _REFERENCE_TIME
    )
    return not reasons


def _endpoint_cells(
    kind: str,
    ems: str,
    toggle: bool | None,
    client: str,
    actions: Sequence[Action],
    cn_fallback: CnFallback,
    drops: Counter[str],
) -> list[MatrixScenario]:
    """Enumerate the kept scenarios of one (kind, EMS, setting, client) cell."""
    per_cell = len(Action) * len(Answer) * len(REMEMBERED_STATES)
    base = MatrixScenario(
        kind=kind,
        cn_fallback=cn_fallback,
        ems_version=ems,
        use_ssl_cert=toggle,
        client_version=client,
    )
    if not has_feature(client):
        drops[DROP_LEGACY] += per_cell - 1
        return [base]
    presented = base.presented_kind
    if is_valid_certificate(presented, cn_fallback):
        drops[DROP_VALID] += per_cell - 1
        return [base]

    kept: list[MatrixScenario] = []
    for action in actions:
        if action is Action.ALLOW:
            drops[DROP_ALLOW] += len(Answer) * len(REMEMBERED_STATES) - 1
            kept.append(replace(base, action=action))
            continue
        for remembered in REMEMBERED_STATES:
            if action is Action.DENY or remembered is Remembered.THIS_LEAF:
                drops[DROP_NO_PROMPT_ANSWER] += len(Answer) - 1
                kept.append(replace(base, action=action, remembered=remembered))
                continue
            for answer in Answer:
                kept.append(
                    replace(base, action=action, answer=answer, remembered=remembered)
                )
    return kept


def build_matrix(
    selection: MatrixFilter | None = None,
    *,
    cn_fallback: CnFallback = CnFallback.WHEN_NO_SAN,
    profile: Profile = Profile.ENDPOINT,
    versions: Sequence[str] = MATRIX_VERSIONS,
) -> Matrix:
    """Enumerate the scenarios of a run.

    Args:
        selection: Filters; everything if omitted. Its ``ems_versions`` and
            ``client_versions``, where set, replace ``versions`` for that
            dimension, so versions outside :data:`MATRIX_VERSIONS` can run.
            ``ids`` keeps exactly the scenarios with those ids (each must
            exist in the matrix).
        cn_fallback: The run's ``cn_fallback`` mode.
        profile: ``endpoint`` for the full matrix, ``tls`` for one scenario
            per kind.
        versions: EMS and client versions of the full matrix.

    Returns:
        The matrix, with drop counts per reason.

    Raises:
        MatrixError: an id in ``selection.ids`` is not a scenario of the
            matrix, or two scenarios share an id.
    """
    selection = selection or MatrixFilter()
    cn_fallback = CnFallback(cn_fallback)
    kinds = list(CATALOGUE)
    if profile is Profile.TLS:
        plain = [
            MatrixScenario(kind=kind, cn_fallback=cn_fallback, profile=Profile.TLS)
            for kind in kinds
        ]
        return _apply_filter(plain, Counter(), len(plain), selection)

    ems_versions = list(selection.ems_versions or versions)
    client_versions = list(selection.client_versions or versions)
    if selection.ems_versions == ():
        ems_versions = []
    if selection.client_versions == ():
        client_versions = []
    drops: Counter[str] = Counter()
    full_size = (
        len(kinds)
        * len(ems_versions)
        * 2
        * len(client_versions)
        * len(Action)
        * len(Answer)
        * len(REMEMBERED_STATES)
    )
    per_client = (
        len(Action) * len(Answer) * len(REMEMBERED_STATES) * len(client_versions)
    )
    scenarios: list[MatrixScenario] = []
    for kind, ems in itertools.product(kinds, ems_versions):
        toggles: tuple[bool | None, ...] = (False, True)
        if not has_feature(ems):
            drops[DROP_NO_SETTING] += per_client
            toggles = (None,)
        for toggle in toggles:
            if not toggle and kind != VENDOR_KIND:
                drops[DROP_NOT_PRESENTED] += per_client
                continue
            for client in client_versions:
                scenarios += _endpoint_cells(
                    kind, ems, toggle, client, list(Action), cn_fallback, drops
                )
    return _apply_filter(scenarios, drops, full_size, selection)


def _apply_filter(
    scenarios: list[MatrixScenario],
    drops: Counter[str],
    full_size: int,
    selection: MatrixFilter,
) -> Matrix:
    check_unique_ids(scenarios)
    kept = [s for s in scenarios if _selected(s, selection)]
    if selection.ids is not None:
        by_id = {s.id: s for s in kept}
        missing = [i for i in selection.ids if i not in by_id]
        if missing:
            raise MatrixError(
                f"scenario id {missing[0]!r} is not in the matrix (or is excluded "
                "by a filter); run 'harness run --list' for the ids"
            )
        kept = [by_id[i] for i in dict.fromkeys(selection.ids)]
    dropped = {reason: count for reason, count in drops.items() if count}
    return Matrix(
        scenarios=tuple(kept),
        dropped=dropped,
        full_size=full_size,
        filtered_out=len(scenarios) - len(kept),
    )


def _selected(scenario: MatrixScenario, selection: MatrixFilter) -> bool:
    if selection.kinds is not None and scenario.kind not in selection.kinds:
        return False
    if scenario.profile is Profile.TLS:
        return True
    if (
        selection.ems_versions is not None
        and scenario.ems_version not in selection.ems_versions
    ):
        return False
    if (
        selection.client_versions is not None
        and scenario.client_version not in selection.client_versions
    ):
        return False
    # Scenarios where no action applies stay in: the filter narrows the
    # actions of clients that have one.
    return (
        selection.actions is None
        or scenario.action is None
        or scenario.action in selection.actions
    )


def check_unique_ids(scenarios: Iterable[MatrixScenario]) -> None:
    """Raise :class:`MatrixError` if two scenarios share an id."""
    seen: set[str] = set()
    for scenario in scenarios:
        if scenario.id in seen:
            raise MatrixError(f"duplicate scenario id {scenario.id!r}")
        seen.add(scenario.id)


def _string_list(data: dict[str, Any], key: str, path: Path) -> list[str] | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise MatrixError(f"{path}: '{key}' must be a list of strings")
    return value


_FILE_KEYS = {"kinds", "ems_versions", "client_versions", "actions", "ids"}


def load_scenario_file(path: str | Path) -> MatrixFilter:
    """Read a scenario selection from a TOML or JSON file.

    The file has a top-level ``[select]`` table (TOML) or ``"select"`` object
    (JSON) with optional lists ``kinds``, ``ems_versions``,
    ``client_versions``, ``actions`` and ``ids``. The format is documented in
    ``fixtures/scenarios/README.md``.

    Raises:
        MatrixError: the file is missing, unparsable, or has unknown keys or
            values.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise MatrixError(f"cannot read scenario file {path}: {exc}") from None
    try:
        if path.suffix == ".json":
            data = json.loads(raw)
        elif path.suffix == ".toml":
            data = tomllib.loads(raw.decode("utf-8"))
        else:
            raise MatrixError(
                f"scenario file {path} must end in .toml or .json, not {path.suffix!r}"
            )
    except (ValueError, UnicodeDecodeError) as exc:
        raise MatrixError(f"invalid scenario file {path}: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("select"), dict):
        raise MatrixError(f"{path}: expected a top-level 'select' table")
    select: dict[str, Any] = data["select"]
    unknown = sorted(set(select) - _FILE_KEYS)
    if unknown:
        raise MatrixError(
            f"{path}: unknown key {unknown[0]!r} in 'select'; "
            f"known keys: {', '.join(sorted(_FILE_KEYS))}"
        )
    return make_filter(
        kinds=_string_list(select, "kinds", path),
        ems_versions=_string_list(select, "ems_versions", path),
        client_versions=_string_list(select, "client_versions", path),
        actions=_string_list(select, "actions", path),
        ids=_string_list(select, "ids", path),
    )
