"""Settings model of the mock EMS, with validation and a TOML file format.

:class:`EmsSettings` is a frozen value. Every change goes through
:meth:`EmsSettings.replace` (or :meth:`EmsSettings.apply`), which builds the
new value and validates it against the admin rules before returning it, so a
rejected change leaves the caller's settings exactly as they were.

The admin rules checked by :meth:`EmsSettings.validate`:

- listening on all addresses (``0.0.0.0`` or ``::``) requires an FQDN;
- an ACME-managed certificate requires remote HTTPS access and the
  HTTP-to-HTTPS redirect, and neither can be turned off while ACME auto-renew
  is on;
- *use SSL certificate for endpoint control* does not exist before EMS 6.4.7
  (the first version with standards certificate validation in its branch).

:meth:`EmsSettings.presented_certificate` decides which certificate the EMS
presents on endpoint control from the version, the toggle and the import.
"""

from __future__ import annotations

import dataclasses
import enum
import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from harness.model import Action, PresentedCertificate
from harness.pki.kinds import EMS_FQDN, EMS_HOSTNAME
from harness.versions import Version, has_feature

DEFAULT_TELEMETRY_PORT = 8013

# Lab kinds that model the two certificates an EMS has without an import.
VENDOR_KIND = "vendor-default"
BUILTIN_DEFAULT_KIND = "ems-builtin-default"

_HOSTNAME_LABEL_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_ALL_ADDRESSES = frozenset({"0.0.0.0", "::"})


class SettingsError(ValueError):
    """A setting that breaks a rule; names the setting, the value and the rule."""

    def __init__(self, setting: str, value: object, rule: str) -> None:
        self.setting = setting
        self.value = value
        self.rule = rule
        super().__init__(f"invalid setting {setting} = {value!r}: {rule}")


class CertificateSource(enum.StrEnum):
    """The source of an imported certificate: an upload or ACME."""

    UPLOAD = "upload"
    ACME = "acme"


@dataclass(frozen=True)
class ImportedCertificate:
    """A certificate imported by the admin.

    An uploaded certificate comes from a lab kind (``kind``), from a PEM chain
    and key (``chain_file`` and ``key_file``, the key optionally encrypted with
    ``password``), or from a PKCS#12 bundle (``pkcs12_file`` with an optional
    ``password``). An ACME-managed certificate is modelled by a lab kind.

    Attributes:
        source: Upload or ACME.
        kind: Lab kind whose chain and key the EMS serves.
        chain_file: PEM file, leaf first, then the chain as it is sent.
        key_file: PEM private key of the leaf.
        pkcs12_file: PKCS#12 bundle holding leaf, chain and key.
        password: Password of the PKCS#12 bundle or the encrypted key.
        auto_renew: ACME auto-renew (ACME only).
    """

    source: CertificateSource = CertificateSource.UPLOAD
    kind: str | None = None
    chain_file: str | None = None
    key_file: str | None = None
    pkcs12_file: str | None = None
    password: str | None = field(default=None, repr=False)
    auto_renew: bool = False

    def check(self) -> None:
        """Raise :class:`SettingsError` if the fields do not fit together."""
        prefix = "imported_certificate"
        given = {
            "kind": self.kind is not None,
            "chain_file": self.chain_file is not None,
            "pkcs12_file": self.pkcs12_file is not None,
        }
        if sum(given.values()) != 1:
            raise SettingsError(
                prefix,
                {k for k, v in given.items() if v} or None,
                "give exactly one of kind, chain_file (with key_file) or pkcs12_file",
            )
        if (self.chain_file is None) != (self.key_file is None):
            raise SettingsError(
                f"{prefix}.key_file",
                self.key_file,
                "chain_file and key_file go together",
            )
        if self.source is CertificateSource.ACME:
            if self.kind is None:
                raise SettingsError(
                    f"{prefix}.source",
                    self.source.value,
                    "an ACME-managed certificate is modelled by a lab kind; set kind",
                )
            if self.password is not None:
                raise SettingsError(
                    f"{prefix}.password",
                    "(hidden)",
                    "a password applies only to an uploaded certificate",
                )
        elif self.auto_renew:
            raise SettingsError(
                f"{prefix}.auto_renew",
                True,
                "auto-renew applies only to an ACME-managed certificate",
            )
        if self.kind is not None and self.password is not None:
            raise SettingsError(
                f"{prefix}.password",
                "(hidden)",
                "a lab kind has an unencrypted key; remove the password",
            )

    def load_files(self, base: Path | None = None) -> tuple[bytes, bytes]:
        """Read an uploaded chain and key from files, decrypting them if needed.

        Args:
            base: Folder that relative file names are resolved against.

        Returns:
            The chain as PEM (leaf first, then the rest in file order) and
            the private key as unencrypted PKCS#8 PEM.

        Raises:
            SettingsError: no file was given, the password is wrong or missing,
                the files do not hold a certificate and a key, or the key does
                not belong to the first certificate of the chain.
            OSError: a file cannot be read.
        """
        folder = base or Path.cwd()
        if self.pkcs12_file is not None:
            return _load_pkcs12(folder / self.pkcs12_file, self.password)
        if self.chain_file is None or self.key_file is None:
            raise SettingsError(
                "imported_certificate", self.kind, "no chain_file or pkcs12_file given"
            )
        chain_pem = (folder / self.chain_file).read_bytes()
        try:
            certs = x509.load_pem_x509_certificates(chain_pem)
        except ValueError as exc:
            raise SettingsError(
                "imported_certificate.chain_file",
                self.chain_file,
                f"no PEM chain: {exc}",
            ) from None
        password = self.password.encode() if self.password is not None else None
        key_pem = (folder / self.key_file).read_bytes()
        if b"PRIVATE KEY-----" not in key_pem:
            raise SettingsError(
                "imported_certificate.key_file",
                self.key_file,
                "the file contains no PEM private key; give the key of the "
                "chain's leaf",
            )
        try:
            key = serialization.load_pem_private_key(key_pem, password=password)
        except (ValueError, TypeError) as exc:
            # cryptography raises TypeError for a missing or unneeded password.
            raise SettingsError(
                "imported_certificate.key_file",
                self.key_file,
                f"cannot load the private key (wrong or missing password?): {exc}",
            ) from None
        if key.public_key() != certs[0].public_key():
            raise SettingsError(
                "imported_certificate.key_file",
                self.key_file,
                "the private key does not belong to the leaf certificate in "
                f"chain file {folder / self.chain_file}; give the chain and the "
                "key of the same certificate",
            )
        return _pem_chain(certs), _pem_key(key)


@dataclass(frozen=True)
class Profile:
    """An endpoint profile and its invalid certificate action."""

    name: str
    invalid_cert_action: Action = Action.WARN


@dataclass(frozen=True)
class Installer:
    """An installer and the invalid certificate action baked into it."""

    name: str
    invalid_cert_action: Action = Action.WARN


@dataclass(frozen=True)
class EmsSettings:
    """The admin-facing settings of one EMS.

    Attributes:
        ems_version: EMS version, for example ``"7.0.2"``.
        hostname: EMS host name; the built-in default certificate's CN.
        fqdn: Fully qualified domain name clients use, or ``None``.
        listen_address: IP address the EMS listens on; ``0.0.0.0`` or ``::``
            means all addresses.
        port: Endpoint-control (telemetry) port.
        remote_https_access: Remote HTTPS access to the admin console.
        http_redirect: Redirect HTTP to HTTPS.
        imported_certificate: The admin's imported certificate, if any.
        use_ssl_certificate_for_endpoint_control: The toggle, ``None`` when
            unset. EMS versions before 6.4.7 do not have it, so there it must
            stay ``None``; on newer versions ``None`` means off.
        profiles: Endpoint profiles; the first is the default profile.
        installers: Installers with their baked-in actions.
    """

    ems_version: str = "7.0.2"
    hostname: str = EMS_HOSTNAME
    fqdn: str | None = EMS_FQDN
    listen_address: str = "127.0.0.1"
    port: int = DEFAULT_TELEMETRY_PORT
    remote_https_access: bool = False
    http_redirect: bool = False
    imported_certificate: ImportedCertificate | None = None
    use_ssl_certificate_for_endpoint_control: bool | None = None
    profiles: tuple[Profile, ...] = (Profile("default"),)
    installers: tuple[Installer, ...] = ()

    # -- validation -------------------------------------------------------

    def validate(self, previous: EmsSettings | None = None) -> None:
        """Check every field and the admin rules.

        Args:
            previous: The settings this value replaces. Rules about turning
                something off while something else is on need it.

        Raises:
            SettingsError: on the first rule broken; it names the setting.
        """
        self._check_fields()
        self._check_listen_address()
        self._check_acme(previous)
        self._check_toggle()

    def _check_fields(self) -> None:
        try:
            Version.parse(self.ems_version)
        except ValueError as exc:
            raise SettingsError("ems_version", self.ems_version, str(exc)) from None
        if not _HOSTNAME_LABEL_RE.match(self.hostname):
            raise SettingsError(
                "hostname",
                self.hostname,
                "expected one DNS label of letters, digits and hyphens",
            )
        if self.fqdn is not None and not _is_fqdn(self.fqdn):
            raise SettingsError(
                "fqdn",
                self.fqdn,
                "expected a DNS name of at least two labels, such as ems.example.com",
            )
        if not 0 <= self.port <= 65535:
            raise SettingsError("port", self.port, "expected 0 to 65535")
        if self.imported_certificate is not None:
            self.imported_certificate.check()
        _check_unique_names("profiles", [p.name for p in self.profiles])
        if not self.profiles:
            raise SettingsError("profiles", [], "at least one profile is required")
        _check_unique_names("installers", [i.name for i in self.installers])

    def _check_listen_address(self) -> None:
        try:
            ipaddress.ip_address(self.listen_address)
        except ValueError:
            raise SettingsError(
                "listen_address",
                self.listen_address,
                "expected an IPv4 or IPv6 address",
            ) from None
        if self.listen_address in _ALL_ADDRESSES and self.fqdn is None:
            raise SettingsError(
                "listen_address",
                self.listen_address,
                "listening on all addresses requires an FQDN; set fqdn first",
            )

    def _check_acme(self, previous: EmsSettings | None) -> None:
        imported = self.imported_certificate
        if imported is None or imported.source is not CertificateSource.ACME:
            return
        prev_imported = previous.imported_certificate if previous else None
        newly_imported = prev_imported != imported
        renewing = imported.auto_renew or (
            prev_imported is not None and prev_imported.auto_renew
        )
        if not (newly_imported or renewing):
            return
        rule = (
            "ACME import requires it"
            if newly_imported
            else "it cannot be turned off while ACME auto-renew is on"
        )
        if not self.remote_https_access:
            raise SettingsError("remote_https_access", False, rule)
        if not self.http_redirect:
            raise SettingsError("http_redirect", False, rule)

    def _check_toggle(self) -> None:
        toggle = self.use_ssl_certificate_for_endpoint_control
        if toggle is not None and not has_feature(self.ems_version):
            raise SettingsError(
                "use_ssl_certificate_for_endpoint_control",
                toggle,
                f"the setting does not exist on EMS {self.ems_version}; "
                "it needs 6.4.7 or later in the 6.4 branch, 7.0.2 or later in 7.0",
            )

    # -- changes ----------------------------------------------------------

    def replace(self, **changes: Any) -> EmsSettings:
        """Return a validated copy with ``changes`` applied.

        Raises:
            SettingsError: the changed settings break a rule; ``self`` is
                unchanged either way because settings are frozen.
        """
        try:
            candidate = dataclasses.replace(self, **changes)
        except TypeError as exc:
            raise SettingsError(
                ", ".join(sorted(changes)), None, f"unknown setting: {exc}"
            ) from None
        candidate.validate(previous=self)
        return candidate

    def apply(self, change: Mapping[str, Any]) -> EmsSettings:
        """Return a validated copy with ``change`` given in TOML form applied.

        ``change`` uses the keys and value types of the TOML file, for example
        ``{"use_ssl_certificate_for_endpoint_control": True}`` or
        ``{"profiles": [{"name": "default", "invalid_cert_action": "deny"}]}``.
        """
        merged = {**self.to_dict(), **change}
        candidate = EmsSettings.from_dict(merged, validate=False)
        candidate.validate(previous=self)
        return candidate

    # -- decisions --------------------------------------------------------

    @property
    def has_toggle(self) -> bool:
        """Whether this EMS version has *use SSL certificate for endpoint control*."""
        return has_feature(self.ems_version)

    def presented_certificate(self) -> PresentedCertificate:
        """Return which certificate the EMS presents on endpoint control.

        A version without the toggle, or the toggle off, presents the vendor
        certificate. With the toggle on, the EMS presents the imported chain,
        or its built-in self-signed certificate (CN = hostname) if nothing was
        imported.
        """
        if not self.has_toggle or not self.use_ssl_certificate_for_endpoint_control:
            return PresentedCertificate.VENDOR
        if self.imported_certificate is not None:
            return PresentedCertificate.IMPORTED
        return PresentedCertificate.BUILTIN_DEFAULT

    def presented_kind(self) -> str | None:
        """Return the lab kind of the presented certificate.

        ``None`` means an imported certificate given as files, not as a kind.
        """
        presented = self.presented_certificate()
        if presented is PresentedCertificate.VENDOR:
            return VENDOR_KIND
        if presented is PresentedCertificate.BUILTIN_DEFAULT:
            return BUILTIN_DEFAULT_KIND
        assert self.imported_certificate is not None
        return self.imported_certificate.kind

    def profile_action(self, profile: str | None = None) -> Action | None:
        """Return the invalid certificate action the EMS sends in its profile.

        Versions before 6.4.7 have no such action, so they return ``None``.

        Raises:
            KeyError: no profile is called ``profile``.
        """
        if not self.has_toggle:
            return None
        if profile is None:
            return self.profiles[0].invalid_cert_action
        for candidate in self.profiles:
            if candidate.name == profile:
                return candidate.invalid_cert_action
        raise KeyError(f"no profile named {profile!r}")

    # -- TOML -------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Return the settings as plain TOML-ready values; ``None`` is omitted."""
        data: dict[str, Any] = {
            "ems_version": self.ems_version,
            "hostname": self.hostname,
            "listen_address": self.listen_address,
            "port": self.port,
            "remote_https_access": self.remote_https_access,
            "http_redirect": self.http_redirect,
        }
        if self.fqdn is not None:
            data["fqdn"] = self.fqdn
        toggle = self.use_ssl_certificate_for_endpoint_control
        if toggle is not None:
            data["use_ssl_certificate_for_endpoint_control"] = toggle
        if self.imported_certificate is not None:
            imported = dataclasses.asdict(self.imported_certificate)
            imported["source"] = self.imported_certificate.source.value
            data["imported_certificate"] = {
                k: v for k, v in imported.items() if v is not None
            }
        data["profiles"] = [
            {"name": p.name, "invalid_cert_action": p.invalid_cert_action.value}
            for p in self.profiles
        ]
        data["installers"] = [
            {"name": i.name, "invalid_cert_action": i.invalid_cert_action.value}
            for i in self.installers
        ]
        return data

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], *, validate: bool = True
    ) -> EmsSettings:
        """Build settings from TOML-form values; missing keys take defaults.

        Raises:
            SettingsError: an unknown key, a value of the wrong type, or a
                broken rule.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        for key in data:
            if key not in known:
                raise SettingsError(
                    key,
                    data[key],
                    f"unknown setting; known: {', '.join(sorted(known))}",
                )
        kwargs: dict[str, Any] = {}
        for key in ("ems_version", "hostname", "fqdn", "listen_address"):
            if key in data:
                kwargs[key] = _typed(key, data[key], str)
        if "port" in data:
            kwargs["port"] = _typed("port", data["port"], int)
        for key in (
            "remote_https_access",
            "http_redirect",
            "use_ssl_certificate_for_endpoint_control",
        ):
            if key in data:
                kwargs[key] = _typed(key, data[key], bool)
        if "imported_certificate" in data:
            kwargs["imported_certificate"] = _imported_from_dict(
                data["imported_certificate"]
            )
        if "profiles" in data:
            kwargs["profiles"] = tuple(
                Profile(*_named_action("profiles", item))
                for item in _typed("profiles", data["profiles"], list)
            )
        if "installers" in data:
            kwargs["installers"] = tuple(
                Installer(*_named_action("installers", item))
                for item in _typed("installers", data["installers"], list)
            )
        settings = cls(**kwargs)
        if validate:
            settings.validate()
        return settings

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> EmsSettings:
        """Read and validate settings from a TOML file.

        Raises:
            SettingsError: the file is not valid TOML or breaks a rule.
            OSError: the file cannot be read.
        """
        with open(path, "rb") as handle:
            try:
                data = tomllib.load(handle)
            except tomllib.TOMLDecodeError as exc:
                raise SettingsError("file", str(path), f"invalid TOML: {exc}") from None
        return cls.from_dict(data)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the settings to a TOML file, mode 0600 (it may hold a password)."""
        target = Path(path)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            tomli_w.dump(self.to_dict(), handle)


def _is_fqdn(name: str) -> bool:
    labels = name.rstrip(".").split(".")
    return len(labels) >= 2 and all(_HOSTNAME_LABEL_RE.match(x) for x in labels)


def _check_unique_names(setting: str, names: list[str]) -> None:
    seen: set[str] = set()
    for name in names:
        if not name:
            raise SettingsError(setting, name, "every entry needs a non-empty name")
        if name in seen:
            raise SettingsError(setting, name, "names must be unique")
        seen.add(name)


def _typed(setting: str, value: Any, expected: type) -> Any:
    # bool is a subclass of int, so an int setting must reject True explicitly.
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        raise SettingsError(
            setting, value, f"expected {expected.__name__}, got {type(value).__name__}"
        )
    return value


def _named_action(setting: str, item: Any) -> tuple[str, Action]:
    entry = _typed(setting, item, dict)
    unknown = set(entry) - {"name", "invalid_cert_action"}
    if unknown:
        raise SettingsError(
            setting, sorted(unknown), "unknown keys; use name, invalid_cert_action"
        )
    name = _typed(f"{setting}.name", entry.get("name"), str)
    raw = entry.get("invalid_cert_action", Action.WARN.value)
    try:
        action = Action(raw)
    except ValueError:
        raise SettingsError(
            f"{setting}.invalid_cert_action", raw, "expected allow, warn or deny"
        ) from None
    return name, action


def _imported_from_dict(value: Any) -> ImportedCertificate:
    entry = dict(_typed("imported_certificate", value, dict))
    known = {f.name for f in dataclasses.fields(ImportedCertificate)}
    unknown = set(entry) - known
    if unknown:
        raise SettingsError(
            "imported_certificate",
            sorted(unknown),
            f"unknown keys; known: {', '.join(sorted(known))}",
        )
    raw_source = entry.pop("source", CertificateSource.UPLOAD.value)
    try:
        source = CertificateSource(raw_source)
    except ValueError:
        raise SettingsError(
            "imported_certificate.source", raw_source, "expected upload or acme"
        ) from None
    for key in ("kind", "chain_file", "key_file", "pkcs12_file", "password"):
        if key in entry:
            _typed(f"imported_certificate.{key}", entry[key], str)
    if "auto_renew" in entry:
        _typed("imported_certificate.auto_renew", entry["auto_renew"], bool)
    return ImportedCertificate(source=source, **entry)


def _pem_chain(certs: list[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def _pem_key(key: Any) -> bytes:
    return bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def _load_pkcs12(path: Path, password: str | None) -> tuple[bytes, bytes]:
    secret = password.encode() if password is not None else None
    try:
        key, leaf, extra = pkcs12.load_key_and_certificates(path.read_bytes(), secret)
    except ValueError as exc:
        raise SettingsError(
            "imported_certificate.pkcs12_file",
            str(path.name),
            f"cannot open the PKCS#12 bundle (wrong or missing password?): {exc}",
        ) from None
    if key is None or leaf is None:
        raise SettingsError(
            "imported_certificate.pkcs12_file",
            str(path.name),
            "the PKCS#12 bundle needs both a certificate and its private key",
        )
    return _pem_chain([leaf, *extra]), _pem_key(key)
