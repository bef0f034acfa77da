"""Build the lab's CAs and certificate kinds into real PEM files.

trustme builds the ordinary CAs and leaves. cryptography's x509 builder
takes over where trustme has no knob: leaves without a SAN extension or with
an empty subject, names trustme would normalise (upper case, NUL bytes),
custom or missing extendedKeyUsage, self-signed leaves, CAs with a chosen
validity window, a cross-certificate that reuses another CA's key, and an
end-entity certificate used as an issuer.

A build is cached in its folder: ``manifest.json`` is written last and
records a digest of the catalogue, so a warm build only reads files back.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import ipaddress
import json
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from harness import __version__
from harness.model import CnFallback
from harness.pki.kinds import CATALOGUE, TRUSTME_EKU, CertKind, LeafSpec
from harness.pki.roles import ROLES, CaRole

logger = logging.getLogger(__name__)

MANIFEST_SCHEMA = 1
# A cached build is reused for this long. Every declared window in the
# catalogue keeps its class (valid, expired, not yet valid) for at least a day
# after the build, so the cache never serves a kind whose time class changed.
CACHE_MAX_AGE = dt.timedelta(hours=12)

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

_EKU_OIDS: dict[str, x509.ObjectIdentifier] = {
    "serverAuth": ExtendedKeyUsageOID.SERVER_AUTH,
    "clientAuth": ExtendedKeyUsageOID.CLIENT_AUTH,
    "codeSigning": ExtendedKeyUsageOID.CODE_SIGNING,
    "emailProtection": ExtendedKeyUsageOID.EMAIL_PROTECTION,
}


class LabError(Exception):
    """The lab could not be built or loaded."""


@dataclass(frozen=True)
class IssuedLeaf:
    """A leaf certificate in memory, with its key and the chain to send.

    Attributes:
        cert: The leaf.
        key_pem: Its private key, PKCS#8 PEM, unencrypted.
        chain: The CA certificates sent after the leaf, in order.
    """

    cert: x509.Certificate
    key_pem: bytes
    chain: tuple[x509.Certificate, ...]

    @property
    def chain_pem(self) -> bytes:
        """The leaf followed by the sent chain, as one PEM bundle."""
        certs = (self.cert, *self.chain)
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)

    @property
    def leaf_pem(self) -> bytes:
        """The leaf alone, as PEM."""
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of the leaf's DER encoding."""
        return self.cert.fingerprint(hashes.SHA256()).hex()


@dataclass(frozen=True)
class BuiltKind:
    """Where a built kind's files are, and its absolute validity window."""

    kind: CertKind
    leaf_path: Path
    chain_path: Path
    key_path: Path
    leaf_sha256: str
    not_before: dt.datetime
    not_after: dt.datetime

    @property
    def name(self) -> str:
        """The kind's name."""
        return self.kind.name

    @property
    def reference_identity(self) -> str:
        """The name or IP address a client should connect to."""
        return self.kind.reference_identity


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _generate_key(key_type: str) -> PrivateKey:
    if key_type == "ecdsa":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise LabError(f"invalid key type {key_type!r}: use 'ecdsa' or 'rsa'")


def _key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _load_key(pem: bytes) -> PrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise LabError(f"unsupported key type {type(key).__name__}")
    return key


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` with mode 0600, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_public(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, readable by everyone."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _role_name(role: CaRole) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "EMS harness lab"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"lab {role.identity}"),
        ]
    )


def _leaf_subject(spec: LeafSpec) -> x509.Name:
    if spec.empty_subject:
        return x509.Name([])
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "EMS harness lab")]
    attributes += [
        x509.NameAttribute(NameOID.COMMON_NAME, name) for name in spec.common_names
    ]
    return x509.Name(attributes)


def _san_entries(spec: LeafSpec) -> list[x509.GeneralName]:
    entries: list[x509.GeneralName] = [x509.DNSName(n) for n in spec.dns_names]
    entries += [x509.IPAddress(ipaddress.ip_address(a)) for a in spec.ip_addresses]
    entries += [x509.RFC822Name(e) for e in spec.emails]
    return entries


def _trustme_can_issue(spec: LeafSpec, issuer: CaRole | None) -> bool:
    """Return whether trustme's ``issue_cert`` produces exactly ``spec``."""
    if issuer is None or issuer.built_with != "trustme":
        return False
    if spec.empty_subject or not spec.san_extension or len(spec.common_names) > 1:
        return False
    if spec.eku != TRUSTME_EKU:
        return False
    # trustme runs every DNS name through IDNA (UTS 46), which lower-cases and
    # rejects NUL bytes, so such names need the raw builder.
    for name in (*spec.dns_names, *spec.common_names):
        if name != name.lower() or "\x00" in name or not name.isascii():
            return False
    return all("*" not in name[1:] for name in spec.dns_names)


class Lab:
    """The lab's CAs, trust store and built kinds, rooted in one folder.

    Use :func:`build_lab` to get one; it caches the build in the folder.
    """

    def __init__(
        self,
        directory: Path,
        key_type: str,
        built_at: dt.datetime,
        role_certs: dict[str, x509.Certificate],
        role_keys: dict[str, PrivateKey],
    ) -> None:
        self.directory = directory
        self.key_type = key_type
        self.built_at = built_at
        self.role_certs = role_certs
        self._role_keys = role_keys
        self.kinds: dict[str, BuiltKind] = {}

    @property
    def trust_store_path(self) -> Path:
        """PEM bundle of the simulated OS trust store."""
        return self.directory / "trust-store.pem"

    @property
    def manifest_path(self) -> Path:
        """The build's ``manifest.json``."""
        return self.directory / "manifest.json"

    def trust_store_certs(self) -> list[x509.Certificate]:
        """Return the certificates of the simulated OS trust store."""
        return [self.role_certs[r.name] for r in ROLES.values() if r.in_store]

    def role_window(self, role: str) -> tuple[dt.datetime, dt.datetime]:
        """Return the validity window that role ``role``'s certificate has."""
        cert = self.role_certs[role]
        return cert.not_valid_before_utc, cert.not_valid_after_utc

    def kind(self, name: str) -> BuiltKind:
        """Return the built kind ``name``.

        Raises:
            KeyError: the kind was not part of this build.
        """
        try:
            return self.kinds[name]
        except KeyError:
            raise KeyError(
                f"kind {name!r} is not in the lab at {self.directory}; "
                f"built kinds: {', '.join(self.kinds)}"
            ) from None

    def issue(self, spec: LeafSpec, key_type: str | None = None) -> IssuedLeaf:
        """Issue a leaf for ``spec`` in memory, relative to the build time.

        Args:
            spec: The declared properties the leaf must have.
            key_type: ``"ecdsa"`` or ``"rsa"``; the lab's key type if omitted.

        Returns:
            The leaf, its key and the chain the spec says to send.
        """
        key_type = key_type or self.key_type
        not_before = self.built_at + spec.window[0]
        not_after = self.built_at + spec.window[1]
        issuer = None if spec.issuer == "self" else ROLES[spec.issuer]
        chain = tuple(self.role_certs[role] for role in spec.chain)

        if _trustme_can_issue(spec, issuer):
            assert issuer is not None
            ca = trustme.CA.from_pem(
                self.role_certs[issuer.name].public_bytes(serialization.Encoding.PEM),
                _key_pem(self._role_keys[issuer.name]),
            )
            identities = [*spec.dns_names, *spec.ip_addresses, *spec.emails]
            issued = ca.issue_cert(
                *identities,
                common_name=spec.common_names[0] if spec.common_names else None,
                organization_name="EMS harness lab",
                not_before=not_before.replace(tzinfo=None),
                not_after=not_after.replace(tzinfo=None),
                key_type=(
                    trustme.KeyType.RSA if key_type == "rsa" else trustme.KeyType.ECDSA
                ),
            )
            cert = x509.load_pem_x509_certificate(issued.cert_chain_pems[0].bytes())
            return IssuedLeaf(cert, issued.private_key_pem.bytes(), chain)

        key = _generate_key(key_type)
        subject = _leaf_subject(spec)
        if issuer is None:
            issuer_name, signing_key = subject, key
            issuer_cert = None
        else:
            issuer_cert = self.role_certs[issuer.name]
            issuer_name = issuer_cert.subject
            signing_key = self._role_keys[issuer.name]
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(
                x509.BasicConstraints(ca=False, path_length=None), critical=True
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                critical=False,
            )
        )
        if issuer_cert is not None:
            builder = builder.add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(
                    issuer_cert.public_key()  # type: ignore[arg-type]
                ),
                critical=False,
            )
        if spec.san_extension:
            # RFC 5280 requires the SAN to be critical when the subject is empty.
            builder = builder.add_extension(
                x509.SubjectAlternativeName(_san_entries(spec)),
                critical=spec.empty_subject,
            )
        if spec.eku is not None:
            builder = builder.add_extension(
                x509.ExtendedKeyUsage([_EKU_OIDS[p] for p in spec.eku]),
                critical=False,
            )
        cert = builder.sign(signing_key, hashes.SHA256())
        return IssuedLeaf(cert, _key_pem(key), chain)

    def write_kind(self, kind: CertKind) -> BuiltKind:
        """Issue ``kind``'s leaf and write its files under ``kinds/NAME/``."""
        issued = self.issue(kind.leaf)
        folder = self.directory / "kinds" / kind.name
        built = BuiltKind(
            kind=kind,
            leaf_path=folder / "leaf.pem",
            chain_path=folder / "chain.pem",
            key_path=folder / "key.pem",
            leaf_sha256=issued.sha256,
            not_before=issued.cert.not_valid_before_utc,
            not_after=issued.cert.not_valid_after_utc,
        )
        write_public(built.leaf_path, issued.leaf_pem)
        write_public(built.chain_path, issued.chain_pem)
        write_private(built.key_path, issued.key_pem)
        self.kinds[kind.name] = built
        return built


def _build_roles(
    key_type: str, built_at: dt.datetime
) -> tuple[dict[str, x509.Certificate], dict[str, PrivateKey]]:
    certs: dict[str, x509.Certificate] = {}
    keys: dict[str, PrivateKey] = {}
    identity_keys: dict[str, PrivateKey] = {}
    trustme_cas: dict[str, trustme.CA] = {}
    trustme_key = trustme.KeyType.RSA if key_type == "rsa" else trustme.KeyType.ECDSA

    for role in ROLES.values():
        if role.built_with == "trustme":
            parent = trustme_cas.get(role.issuer) if role.issuer else None
            if role.issuer and parent is None:
                raise LabError(f"role {role.name}: trustme issuer {role.issuer} missing")
            if parent is None:
                ca = trustme.CA(
                    organization_name="EMS harness lab",
                    organization_unit_name=role.name,
                    key_type=trustme_key,
                )
            else:
                ca = parent.create_child_ca(key_type=trustme_key)
            trustme_cas[role.name] = ca
            certs[role.name] = x509.load_pem_x509_certificate(ca.cert_pem.bytes())
            keys[role.name] = _load_key(ca.private_key_pem.bytes())
            continue

        key = identity_keys.get(role.identity) or _generate_key(key_type)
        identity_keys[role.identity] = key
        subject = _role_name(role)
        if role.issuer is None:
            issuer_name, signing_key, issuer_key = subject, key, key
        else:
            issuer_name = certs[role.issuer].subject
            signing_key = keys[role.issuer]
            issuer_key = keys[role.issuer]
        assert role.window is not None
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(built_at + role.window[0])
            .not_valid_after(built_at + role.window[1])
            .add_extension(
                x509.BasicConstraints(ca=role.is_ca, path_length=None), critical=True
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(
                    issuer_key.public_key()
                ),
                critical=False,
            )
        )
        if role.is_ca:
            usage = x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            )
            builder = builder.add_extension(usage, critical=True)
        certs[role.name] = builder.sign(signing_key, hashes.SHA256())
        keys[role.name] = key
    return certs, keys


def catalogue_digest(key_type: str, kinds: Iterable[CertKind]) -> str:
    """Return a digest of everything a build depends on."""
    material = repr((MANIFEST_SCHEMA, __version__, key_type, ROLES, tuple(kinds)))
    return hashlib.sha256(material.encode()).hexdigest()


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _relative(path: Path, base: Path) -> str:
    return path.relative_to(base).as_posix()


def _manifest(lab: Lab, digest: str) -> dict[str, Any]:
    # Imported here so the lab module stays importable by the oracle's tests
    # without a cycle: the oracle reads kinds and roles, never the lab.
    from harness.oracle.standards import expected_reasons_for_kind

    base = lab.directory
    roles = {
        name: {
            "cert": f"ca/{name}.pem",
            "in_store": ROLES[name].in_store,
            "not_before": lab.role_window(name)[0].isoformat(),
            "not_after": lab.role_window(name)[1].isoformat(),
        }
        for name in ROLES
    }
    kinds = []
    for built in lab.kinds.values():
        kinds.append(
            {
                "kind": built.name,
                "description": built.kind.description,
                "tags": list(built.kind.tags),
                "leaf": _relative(built.leaf_path, base),
                "chain": _relative(built.chain_path, base),
                "key": _relative(built.key_path, base),
                "trust_store": _relative(lab.trust_store_path, base),
                "reference_identity": built.reference_identity,
                "issuer": built.kind.leaf.issuer,
                "chain_roles": list(built.kind.leaf.chain),
                "leaf_sha256": built.leaf_sha256,
                "not_before": built.not_before.isoformat(),
                "not_after": built.not_after.isoformat(),
                "expected_reasons": {
                    mode.value: [
                        reason.value
                        for reason in expected_reasons_for_kind(
                            built.kind, mode, lab.built_at
                        )
                    ]
                    for mode in CnFallback
                },
            }
        )
    return {
        "schema": MANIFEST_SCHEMA,
        "generator": f"ems-cert-harness {__version__}",
        "digest": digest,
        "key_type": lab.key_type,
        "built_at": lab.built_at.isoformat(),
        "trust_store": _relative(lab.trust_store_path, base),
        "roles": roles,
        "kinds": kinds,
    }


def _load_cached(
    directory: Path, digest: str, key_type: str, names: list[str]
) -> Lab | None:
    manifest_path = directory / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        logger.warning("ignoring unreadable lab manifest %s: %s", manifest_path, exc)
        return None
    if not isinstance(manifest, dict) or manifest.get("digest") != digest:
        return None
    built_at = dt.datetime.fromisoformat(manifest["built_at"])
    if _now() - built_at > CACHE_MAX_AGE or built_at > _now():
        return None
    entries = {entry["kind"]: entry for entry in manifest["kinds"]}
    if any(name not in entries for name in names):
        return None
    try:
        role_certs = {
            name: x509.load_pem_x509_certificate(
                (directory / "ca" / f"{name}.pem").read_bytes()
            )
            for name in ROLES
        }
        role_keys = {
            name: _load_key((directory / "ca" / f"{name}.key").read_bytes())
            for name in ROLES
        }
    except (OSError, ValueError) as exc:
        logger.warning("rebuilding lab in %s: cached CA unreadable: %s", directory, exc)
        return None
    lab = Lab(directory, key_type, built_at, role_certs, role_keys)
    for name, entry in entries.items():
        if name not in CATALOGUE:
            continue
        lab.kinds[name] = BuiltKind(
            kind=CATALOGUE[name],
            leaf_path=directory / entry["leaf"],
            chain_path=directory / entry["chain"],
            key_path=directory / entry["key"],
            leaf_sha256=entry["leaf_sha256"],
            not_before=dt.datetime.fromisoformat(entry["not_before"]),
            not_after=dt.datetime.fromisoformat(entry["not_after"]),
        )
    missing = [b.name for b in lab.kinds.values() if not b.key_path.exists()]
    if missing:
        logger.warning("rebuilding lab in %s: files missing for %s", directory, missing)
        return None
    return lab


def build_lab(
    directory: str | os.PathLike[str],
    *,
    key_type: str = "ecdsa",
    kinds: Iterable[str] | None = None,
    force: bool = False,
) -> Lab:
    """Build the lab in ``directory``, or reuse a cached build there.

    Args:
        directory: Output folder; created if missing.
        key_type: ``"ecdsa"`` (P-256, default) or ``"rsa"`` (2048 bits).
        kinds: Kind names to build; every kind of the catalogue if omitted.
        force: Rebuild even when a valid cached build exists.

    Returns:
        The lab, with :attr:`Lab.kinds` filled in.

    Raises:
        LabError: an invalid key type, or the folder cannot be written.
        KeyError: an unknown kind name.
    """
    if key_type not in ("ecdsa", "rsa"):
        raise LabError(f"invalid key type {key_type!r}: use 'ecdsa' or 'rsa'")
    root = Path(directory).resolve()
    names = list(CATALOGUE) if kinds is None else list(kinds)
    for name in names:
        if name not in CATALOGUE:
            raise KeyError(
                f"unknown certificate kind {name!r}; known kinds: {', '.join(CATALOGUE)}"
            )
    digest = catalogue_digest(key_type, CATALOGUE.values())

    try:
        with _locked(root):
            if not force:
                cached = _load_cached(root, digest, key_type, names)
                if cached is not None:
                    logger.debug("reusing cached lab in %s", root)
                    return cached
            return _build_fresh(root, digest, key_type, names)
    except OSError as exc:
        raise LabError(f"cannot build the lab in {root}: {exc}") from exc


def _build_fresh(root: Path, digest: str, key_type: str, names: list[str]) -> Lab:
    logger.info("building lab in %s (%s keys, %d kinds)", root, key_type, len(names))
    built_at = _now()
    role_certs, role_keys = _build_roles(key_type, built_at)
    lab = Lab(root, key_type, built_at, role_certs, role_keys)

    for name, cert in role_certs.items():
        write_public(root / "ca" / f"{name}.pem", cert.public_bytes(serialization.Encoding.PEM))
        write_private(root / "ca" / f"{name}.key", _key_pem(role_keys[name]))
    store = b"".join(
        c.public_bytes(serialization.Encoding.PEM) for c in lab.trust_store_certs()
    )
    write_public(lab.trust_store_path, store)
    for name in names:
        lab.write_kind(CATALOGUE[name])

    manifest = _manifest(lab, digest)
    write_public(lab.manifest_path, json.dumps(manifest, indent=2).encode() + b"\n")
    return lab
