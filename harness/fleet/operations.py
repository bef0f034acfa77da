"""Admin operations of an upgrade path, as frozen values parsed from TOML.

Each operation is one step of a path. :func:`parse_operation` turns one
``[[step]]`` table into an operation and rejects unknown operations, unknown
keys and values of the wrong type with :class:`PathError`, which names the
file, the step and the value. :mod:`harness.fleet.simulation` applies them.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from harness.model import Action
from harness.versions import Version

_DURATION_RE = re.compile(r"^(\d+)\s*([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


class PathError(ValueError):
    """An upgrade-path file that cannot be used; the message is one line."""


@dataclass(frozen=True)
class UpgradeEms:
    """Upgrade the EMS to ``version``."""

    version: str

    def describe(self) -> str:
        return f"upgrade EMS to {self.version}"


@dataclass(frozen=True)
class ImportCertificate:
    """Import a lab kind as the EMS certificate, uploaded or through ACME."""

    kind: str
    acme: bool = False
    auto_renew: bool = False

    def describe(self) -> str:
        if self.acme:
            renew = ", auto-renew" if self.auto_renew else ""
            return f"import certificate via ACME ({self.kind}{renew})"
        return f"import certificate {self.kind}"


@dataclass(frozen=True)
class ConfigureEms:
    """Set remote HTTPS access and the HTTP-to-HTTPS redirect."""

    remote_https_access: bool | None = None
    http_redirect: bool | None = None

    def describe(self) -> str:
        parts = []
        if self.remote_https_access is not None:
            parts.append(f"remote HTTPS access {_on_off(self.remote_https_access)}")
        if self.http_redirect is not None:
            parts.append(f"HTTP redirect {_on_off(self.http_redirect)}")
        return ", ".join(parts) or "configure EMS (no change)"


@dataclass(frozen=True)
class Toggle:
    """Set *use SSL certificate for endpoint control*."""

    on: bool

    def describe(self) -> str:
        return f"use SSL certificate for endpoint control {_on_off(self.on)}"


@dataclass(frozen=True)
class SetProfileAction:
    """Set the invalid certificate action of the endpoint profile."""

    action: Action

    def describe(self) -> str:
        return f"set profile action {self.action}"


@dataclass(frozen=True)
class BuildInstaller:
    """Build an installer of client ``version`` with a baked-in ``action``."""

    installer: str
    version: str
    action: Action

    def describe(self) -> str:
        return f"build installer {self.installer} ({self.version}, {self.action})"


@dataclass(frozen=True)
class DeployInstaller:
    """Deploy an installer to endpoint groups, ``at`` after the simulation start.

    ``at`` of ``None`` deploys at the current simulated time.
    """

    installer: str
    groups: tuple[str, ...]
    at: dt.timedelta | None = None

    def describe(self) -> str:
        when = f" at +{_format_duration(self.at)}" if self.at is not None else ""
        return f"deploy {self.installer} to {', '.join(self.groups)}{when}"


@dataclass(frozen=True)
class AdvanceClock:
    """Advance the simulated clock by ``by``."""

    by: dt.timedelta

    def describe(self) -> str:
        return f"advance clock {_format_duration(self.by)}"


@dataclass(frozen=True)
class RenewAcme:
    """Renew the ACME-managed certificate now."""

    def describe(self) -> str:
        return "renew ACME certificate"


@dataclass(frozen=True)
class ReauthorizeFabric:
    """Authorize the certificate the fabric connector sees now."""

    def describe(self) -> str:
        return "re-authorize fabric connector"


Operation = (
    UpgradeEms
    | ImportCertificate
    | ConfigureEms
    | Toggle
    | SetProfileAction
    | BuildInstaller
    | DeployInstaller
    | AdvanceClock
    | RenewAcme
    | ReauthorizeFabric
)

# Operation name in TOML -> (class, {key: (type, required)}).
_SCHEMAS: dict[str, tuple[type, dict[str, tuple[type, bool]]]] = {
    "upgrade-ems": (UpgradeEms, {"version": (str, True)}),
    "import-certificate": (
        ImportCertificate,
        {"kind": (str, False), "acme": (bool, False), "auto_renew": (bool, False)},
    ),
    "configure-ems": (
        ConfigureEms,
        {"remote_https_access": (bool, False), "http_redirect": (bool, False)},
    ),
    "toggle": (Toggle, {"on": (bool, True)}),
    "set-profile-action": (SetProfileAction, {"action": (str, True)}),
    "build-installer": (
        BuildInstaller,
        {"installer": (str, True), "version": (str, True), "action": (str, True)},
    ),
    "deploy-installer": (
        DeployInstaller,
        {"installer": (str, True), "groups": (list, True), "at": (str, False)},
    ),
    "advance-clock": (AdvanceClock, {"by": (str, True)}),
    "renew-acme": (RenewAcme, {}),
    "reauthorize-fabric": (ReauthorizeFabric, {}),
}

OPERATION_NAMES: tuple[str, ...] = tuple(_SCHEMAS)

# Keys every step may carry besides the operation's own.
STEP_KEYS = frozenset({"op", "name", "expect"})


def _on_off(value: bool) -> str:
    return "on" if value else "off"


def _format_duration(value: dt.timedelta) -> str:
    seconds = int(value.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def parse_duration(text: str) -> dt.timedelta:
    """Parse ``"90m"``, ``"2h"`` or ``"30d"`` into a time span.

    Raises:
        ValueError: the text is not a whole number followed by s, m, h or d.
    """
    match = _DURATION_RE.match(text.strip())
    if not match:
        raise ValueError(
            f"invalid duration {text!r}: expected a number and s, m, h or d, such as 2h"
        )
    return dt.timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def _action(value: str) -> Action:
    try:
        return Action(value)
    except ValueError:
        raise ValueError(
            f"invalid action {value!r}: expected allow, warn or deny"
        ) from None


def parse_operation(table: Mapping[str, Any], where: str) -> Operation:
    """Build the operation one ``[[step]]`` table describes.

    Args:
        table: The step's keys and values.
        where: File and step for error messages, such as ``path.toml step 3``.

    Raises:
        PathError: an unknown operation or key, a missing key, or a bad value.
    """
    name = table.get("op")
    if not isinstance(name, str):
        raise PathError(f"{where}: missing op; expected one of {_known()}")
    if name not in _SCHEMAS:
        raise PathError(f"{where}: unknown op {name!r}; expected one of {_known()}")
    cls, schema = _SCHEMAS[name]

    values: dict[str, Any] = {}
    for key, value in table.items():
        if key in STEP_KEYS:
            continue
        if key not in schema:
            known = ", ".join(schema) or "no keys"
            raise PathError(
                f"{where}: unknown key {key!r} = {value!r} for op {name}; "
                f"known: {known}"
            )
        expected, _ = schema[key]
        if not isinstance(value, expected) or (expected is str and value == ""):
            raise PathError(
                f"{where}: invalid {key} = {value!r} for op {name}: "
                f"expected a non-empty {expected.__name__}"
            )
        values[key] = value
    for key, (_, required) in schema.items():
        if required and key not in values:
            raise PathError(f"{where}: op {name} needs key {key!r}")

    try:
        return _build(name, cls, values)
    except ValueError as exc:
        raise PathError(f"{where}: {exc}") from None


def _build(name: str, cls: type, values: dict[str, Any]) -> Operation:
    for key in ("version",):
        if key in values:
            Version.parse(values[key])
    if "action" in values:
        values["action"] = _action(values["action"])
    if name == "import-certificate":
        values.setdefault("kind", "correct-fqdn")
        if values.get("auto_renew") and not values.get("acme"):
            raise ValueError(
                f"invalid auto_renew = {values['auto_renew']!r}: "
                "auto-renew needs acme = true"
            )
    if name == "deploy-installer":
        groups = values["groups"]
        if not groups or not all(isinstance(g, str) and g for g in groups):
            raise ValueError(
                f"invalid groups = {groups!r}: expected a list of group names"
            )
        values["groups"] = tuple(groups)
        if "at" in values:
            values["at"] = parse_duration(values["at"])
    if name == "advance-clock":
        values["by"] = parse_duration(values["by"])
        if values["by"] <= dt.timedelta(0):
            raise ValueError(f"invalid by = {values['by']}: use a positive duration")
    operation: Operation = cls(**values)
    return operation


def _known() -> str:
    return ", ".join(OPERATION_NAMES)
