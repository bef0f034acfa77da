"""Upgrade paths: the built-in recommended path and TOML files users write.

File format
-----------

A path file is TOML. Every table but ``[[step]]`` is optional::

    name = "toggle-before-upgrade"        # defaults to the file name
    description = "one line for reports"
    prompt_answer = "allow"               # what users answer a prompt

    [fleet]
    endpoints = 100                       # --endpoints overrides it
    mix = { "6.4.6" = 1, "7.0.1" = 1, "6.4.7" = 1, "7.0.2" = 1 }
    installer_action = "allow"            # action of the initial installs,
                                          # or "none" for the default action

    [ems]
    version = "6.4.6"                     # EMS version before the first step

    [fabric]
    firewall_version = "7.0.0"            # 7.2.4 and later trust renewals
    trust_renewed = false                 # optional; default by version

    [[step]]
    op = "upgrade-ems"
    version = "7.0.2"

    [[step]]
    name = "toggle on"                    # optional label for reports
    op = "toggle"
    on = true
    expect = { offline = ["6.4.6", "7.0.1"], prompted = [] }

Each version of ``mix`` starts as the endpoint group ``clients-VERSION``.
The operations and their keys:

========================  =====================================================
``upgrade-ems``           ``version``
``import-certificate``    ``kind`` (a lab kind, default ``correct-fqdn``),
                          ``acme`` (bool), ``auto_renew`` (bool, ACME only)
``configure-ems``         ``remote_https_access``, ``http_redirect`` (bools)
``toggle``                ``on`` (bool): use SSL certificate for endpoint control
``set-profile-action``    ``action``: allow, warn or deny
``build-installer``       ``installer`` (its name), ``version``, ``action``
``deploy-installer``      ``installer``, ``groups`` (names, or ``all`` or
                          ``legacy``), ``at`` (offset from the start, ``2h``)
``advance-clock``         ``by``: a duration such as ``90m``, ``2h``, ``30d``
``renew-acme``            none
``reauthorize-fabric``    none
========================  =====================================================

``expect`` is optional on any step. Its keys ``offline``, ``prompted`` and
``online`` list the client versions that must have at least one endpoint in
that state after the step, and no other version may; ``fabric_up`` (bool)
and ``error`` (bool: whether the EMS rejected the step) are checked too.
:func:`harness.fleet.invariants.check_expectations` reports every mismatch.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.fleet.operations import (
    BuildInstaller,
    DeployInstaller,
    ImportCertificate,
    Operation,
    PathError,
    ReauthorizeFabric,
    SetProfileAction,
    Toggle,
    UpgradeEms,
    parse_operation,
)
from harness.model import Action, Answer
from harness.versions import Version

DEFAULT_MIX: dict[str, int] = {"6.4.6": 25, "7.0.1": 25, "6.4.7": 25, "7.0.2": 25}
EXPECT_KEYS = frozenset({"offline", "prompted", "online", "fabric_up", "error"})

_TOP_KEYS = frozenset(
    {"name", "description", "prompt_answer", "fleet", "ems", "fabric", "step"}
)
_FLEET_KEYS = frozenset({"endpoints", "mix", "installer_action"})
_EMS_KEYS = frozenset({"version"})
_FABRIC_KEYS = frozenset({"firewall_version", "trust_renewed"})


@dataclass(frozen=True)
class Step:
    """One admin operation of a path, with its label and optional expectations."""

    operation: Operation
    name: str = ""
    expect: Mapping[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """The step's name, or a description of its operation."""
        return self.name or self.operation.describe()


@dataclass(frozen=True)
class UpgradePath:
    """An upgrade path: the starting fleet and EMS, then the steps in order.

    Attributes:
        name: Short name for reports.
        description: One line for reports.
        steps: The admin operations in order.
        endpoints: Fleet size unless the caller overrides it.
        mix: Client versions and their weights in the starting fleet.
        installer_action: Action of the installers the starting fleet was
            installed with; ``None`` leaves them on the default action.
        ems_version: EMS version before the first step.
        firewall_version: Version of the firewall's fabric connector.
        trust_renewed: The firewall's renewal-trust setting, ``None`` for
            its default.
        prompt_answer: What users answer when a client prompts.
        source: The file the path came from, if any.
    """

    name: str
    description: str
    steps: tuple[Step, ...]
    endpoints: int = 100
    mix: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_MIX))
    installer_action: Action | None = Action.ALLOW
    ems_version: str = "6.4.6"
    firewall_version: str = "7.0.0"
    trust_renewed: bool | None = None
    prompt_answer: Answer = Answer.ALLOW
    source: Path | None = None


def recommended_path() -> UpgradePath:
    """Return the upgrade path that keeps every endpoint connected.

    The EMS is upgraded and every profile set to allow. Legacy clients get
    7.0.2 from an installer whose action is allow. A valid certificate is
    imported and the fabric connector re-authorized. The toggle goes on once
    every endpoint has the feature, then profiles go to warn and to deny.
    """
    steps = (
        Step(UpgradeEms("7.0.2")),
        Step(SetProfileAction(Action.ALLOW)),
        Step(BuildInstaller("fct-7.0.2-allow", "7.0.2", Action.ALLOW)),
        Step(DeployInstaller("fct-7.0.2-allow", ("legacy",), None)),
        Step(ImportCertificate("correct-fqdn")),
        Step(ReauthorizeFabric()),
        Step(Toggle(True), name="toggle on"),
        Step(SetProfileAction(Action.WARN)),
        Step(SetProfileAction(Action.DENY)),
    )
    return UpgradePath(
        name="recommended",
        description=(
            "upgrade EMS with profiles on allow, upgrade clients, import a valid "
            "certificate, toggle on, then warn and deny"
        ),
        steps=steps,
    )


def load_path(path: str | Path) -> UpgradePath:
    """Read an upgrade path from a TOML file.

    Raises:
        PathError: the file cannot be read, is not valid TOML, or contains an
            unknown operation, key or value. The message names the file,
            the step and the value.
    """
    file = Path(path)
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PathError(f"{file}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise PathError(f"{file}: not UTF-8 text: {exc.reason}") from None
    except tomllib.TOMLDecodeError as exc:
        raise PathError(f"{file}: invalid TOML: {exc}") from None
    return parse_path(data, file)


def parse_path(data: Mapping[str, Any], source: Path | None = None) -> UpgradePath:
    """Build an upgrade path from parsed TOML; see the module for the format."""
    where = str(source) if source else "path"
    _check_keys(data, _TOP_KEYS, where)
    fleet = _table(data, "fleet", _FLEET_KEYS, where)
    ems = _table(data, "ems", _EMS_KEYS, where)
    fabric = _table(data, "fabric", _FABRIC_KEYS, where)

    raw_steps = data.get("step")
    if not isinstance(raw_steps, list) or not raw_steps:
        raise PathError(f"{where}: no [[step]] tables; a path needs at least one")
    steps = tuple(
        _parse_step(raw, f"{where} step {index}")
        for index, raw in enumerate(raw_steps, start=1)
    )

    name = data.get("name", source.stem if source else "custom")
    return UpgradePath(
        name=_typed(name, str, f"{where}: name"),
        description=_typed(data.get("description", ""), str, f"{where}: description"),
        steps=steps,
        endpoints=_endpoints(fleet.get("endpoints", 100), where),
        mix=_mix(fleet.get("mix", DEFAULT_MIX), where),
        installer_action=_installer_action(
            fleet.get("installer_action", "allow"), where
        ),
        ems_version=_version(ems.get("version", "6.4.6"), f"{where}: [ems] version"),
        firewall_version=_version(
            fabric.get("firewall_version", "7.0.0"),
            f"{where}: [fabric] firewall_version",
        ),
        trust_renewed=_optional_bool(fabric.get("trust_renewed"), where),
        prompt_answer=_answer(data.get("prompt_answer", "allow"), where),
        source=source,
    )


def _parse_step(raw: Any, where: str) -> Step:
    if not isinstance(raw, dict):
        raise PathError(f"{where}: invalid step {raw!r}: expected a table")
    operation = parse_operation(raw, where)
    name = _typed(raw.get("name", ""), str, f"{where}: name")
    expect = raw.get("expect", {})
    if not isinstance(expect, dict):
        raise PathError(f"{where}: invalid expect = {expect!r}: expected a table")
    for key, value in expect.items():
        if key not in EXPECT_KEYS:
            raise PathError(
                f"{where}: unknown expect key {key!r}; known: "
                f"{', '.join(sorted(EXPECT_KEYS))}"
            )
        if key in ("fabric_up", "error"):
            _typed(value, bool, f"{where}: expect.{key}")
            continue
        if not isinstance(value, list):
            raise PathError(
                f"{where}: invalid expect.{key} = {value!r}: expected a list of "
                "versions"
            )
        for version in value:
            _version(version, f"{where}: expect.{key}")
    return Step(operation, name, expect)


def _check_keys(table: Mapping[str, Any], known: frozenset[str], where: str) -> None:
    for key, value in table.items():
        if key not in known:
            raise PathError(
                f"{where}: unknown key {key!r} = {value!r}; known: "
                f"{', '.join(sorted(known))}"
            )


def _table(
    data: Mapping[str, Any], name: str, known: frozenset[str], where: str
) -> Mapping[str, Any]:
    table = data.get(name, {})
    if not isinstance(table, dict):
        raise PathError(f"{where}: invalid {name} = {table!r}: expected a table")
    _check_keys(table, known, f"{where} [{name}]")
    return table


def _typed(value: Any, expected: type, where: str) -> Any:
    if not isinstance(value, expected):
        raise PathError(
            f"{where}: invalid value {value!r}: expected {expected.__name__}"
        )
    return value


def _version(value: Any, where: str) -> str:
    text = _typed(value, str, where)
    try:
        Version.parse(text)
    except ValueError as exc:
        raise PathError(f"{where}: {exc}") from None
    return str(text)


def _endpoints(value: Any, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise PathError(
            f"{where} [fleet]: invalid endpoints = {value!r}: expected a count >= 0"
        )
    return value


def _mix(value: Any, where: str) -> dict[str, int]:
    if not isinstance(value, dict) or not value:
        raise PathError(
            f"{where} [fleet]: invalid mix = {value!r}: expected a table of "
            "version = weight"
        )
    mix: dict[str, int] = {}
    for version, weight in value.items():
        _version(version, f"{where} [fleet] mix")
        if not isinstance(weight, int) or isinstance(weight, bool) or weight <= 0:
            raise PathError(
                f"{where} [fleet]: invalid weight {weight!r} for {version}: "
                "expected a positive integer"
            )
        mix[version] = weight
    return mix


def _installer_action(value: Any, where: str) -> Action | None:
    if value == "none":
        return None
    try:
        return Action(value)
    except ValueError:
        raise PathError(
            f"{where} [fleet]: invalid installer_action = {value!r}: expected "
            "allow, warn, deny or none"
        ) from None


def _answer(value: Any, where: str) -> Answer:
    try:
        return Answer(value)
    except ValueError:
        raise PathError(
            f"{where}: invalid prompt_answer = {value!r}: expected allow or deny"
        ) from None


def _optional_bool(value: Any, where: str) -> bool | None:
    if value is None:
        return None
    return bool(_typed(value, bool, f"{where} [fabric] trust_renewed"))


__all__ = [
    "DEFAULT_MIX",
    "PathError",
    "Step",
    "UpgradePath",
    "load_path",
    "parse_path",
    "recommended_path",
]
