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

import base64
import contextlib
import datetime as dt
import fcntl
import functools
import hashlib
import ipaddress
import json
import logging
import os
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from harness import __version__
from harness.pki.kinds import CATALOGUE, TRUSTME_EKU, CertKind, LeafSpec
from harness.pki.roles import ROLES, CaRole

logger = logging.getLogger(__name__)

# 2: flat kind files (kinds/NAME.leaf.pem) and one bundle each for CA
# certificates and CA keys, in place of a folder per kind and two files per role.
MANIFEST_SCHEMA = 2
# A cached build is reused for this long. Every declared window in the
# catalogue keeps its class (valid, expired, not yet valid) for at least a day
# after the build, so the cache never serves a kind whose time class changed.
CACHE_MAX_AGE = dt.timedelta(hours=12)

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
_Parsed = TypeVar("_Parsed")

# All CA certificates in one PEM bundle and all CA keys in one 0600 bundle,
# in role order, each block after a "# CA role: NAME" line. Two files instead
# of two per role, because file creation dominates a cold build on disk.
CA_CERTS_FILE = "ca-certs.pem"
CA_KEYS_FILE = "ca-keys.pem"
_ROLE_MARKER = b"# CA role: "

_EKU_OIDS: dict[str, x509.ObjectIdentifier] = {
    "serverAuth": ExtendedKeyUsageOID.SERVER_AUTH,
    "clientAuth": ExtendedKeyUsageOID.CLIENT_AUTH,
    "codeSigning": ExtendedKeyUsageOID.CODE_SIGNING,
    "emailProtection": ExtendedKeyUsageOID.EMAIL_PROTECTION,
}


class LabError(Exception):
    """The lab could not be built or loaded."""


class IssuedLeaf:
    """A leaf certificate in memory, with its key and the chain to send.

    Attributes:
        key_pem: Its private key, PKCS#8 PEM, unencrypted.
        chain: The CA certificates sent after the leaf, in order.
        leaf_pem: The leaf alone, as PEM.
    """

    __slots__ = ("_cert", "chain", "key_pem", "leaf_pem")

    def __init__(
        self,
        leaf_pem: bytes,
        key_pem: bytes,
        chain: tuple[x509.Certificate, ...],
        cert: x509.Certificate | None = None,
    ) -> None:
        """Store a leaf. Without ``cert``, the leaf is parsed on first use."""
        self.leaf_pem = leaf_pem
        self.key_pem = key_pem
        self.chain = chain
        self._cert = cert

    @property
    def cert(self) -> x509.Certificate:
        """The leaf, parsed."""
        if self._cert is None:
            self._cert = x509.load_pem_x509_certificate(self.leaf_pem)
        return self._cert

    @property
    def chain_pem(self) -> bytes:
        """The leaf followed by the sent chain, as one PEM bundle."""
        chain = (c.public_bytes(serialization.Encoding.PEM) for c in self.chain)
        return b"".join((self.leaf_pem, *chain))

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of the leaf's DER encoding."""
        if self._cert is not None:
            return self._cert.fingerprint(hashes.SHA256()).hex()
        # A cold lab build needs only the digest of most trustme leaves.
        # Decoding the PEM body and hashing it took 4.5 µs against 12 µs for
        # parsing the certificate and taking its fingerprint.
        return hashlib.sha256(_pem_body(self.leaf_pem)).hexdigest()


def _pem_body(pem: bytes) -> bytes:
    """Return the DER inside the first PEM block of ``pem``."""
    begin = pem.index(b"-----\n") + 6
    end = pem.index(b"-----END", begin)
    return base64.b64decode(pem[begin:end])


class BuiltKind:
    """Paths of a built kind's files, and its absolute validity window.

    The paths are kept as strings and turned into :class:`~pathlib.Path`
    objects on first use, because a lab contains a hundred-odd of them and
    building them all took a noticeable share of a cold build.

    Attributes:
        kind: The catalogue entry.
        leaf_sha256: Hex SHA-256 of the leaf's DER encoding.
        not_before: Start of the leaf's validity window, UTC.
        not_after: End of the leaf's validity window, UTC.
    """

    __slots__ = (
        "_paths",
        "_texts",
        "kind",
        "leaf_sha256",
        "not_after",
        "not_before",
    )

    def __init__(
        self,
        kind: CertKind,
        leaf_path: str | os.PathLike[str],
        chain_path: str | os.PathLike[str],
        key_path: str | os.PathLike[str],
        leaf_sha256: str,
        not_before: dt.datetime,
        not_after: dt.datetime,
    ) -> None:
        """Store a built kind. The paths may be strings or path objects."""
        self.kind = kind
        self._texts = (os.fspath(leaf_path), os.fspath(chain_path), os.fspath(key_path))
        self._paths: tuple[Path, Path, Path] | None = None
        self.leaf_sha256 = leaf_sha256
        self.not_before = not_before
        self.not_after = not_after

    def __repr__(self) -> str:
        return (
            f"BuiltKind(kind={self.kind.name!r}, leaf_path={self._texts[0]!r}, "
            f"leaf_sha256={self.leaf_sha256!r})"
        )

    def _path_objects(self) -> tuple[Path, Path, Path]:
        if self._paths is None:
            leaf, chain, key = self._texts
            self._paths = (Path(leaf), Path(chain), Path(key))
        return self._paths

    @property
    def leaf_path(self) -> Path:
        """The leaf alone, PEM."""
        return self._path_objects()[0]

    @property
    def chain_path(self) -> Path:
        """The chain a server sends, leaf first, PEM."""
        return self._path_objects()[1]

    @property
    def key_path(self) -> Path:
        """The leaf's private key, PKCS#8 PEM, mode 0600."""
        return self._path_objects()[2]

    @property
    def file_names(self) -> tuple[str, str, str]:
        """The leaf, chain and key paths as strings, without building paths."""
        return self._texts

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


# DER pieces of an RFC 5915 ECPrivateKey on P-256 and of its RFC 5208 wrapping.
_P256_PARAMETERS = bytes.fromhex("a00a06082a8648ce3d030107")
_PKCS8_EC_P256_HEAD = bytes.fromhex("020100301306072a8648ce3d020106082a8648ce3d030107")
_SEC1_PEM_HEAD = b"-----BEGIN EC PRIVATE KEY-----\n"
_SEC1_PEM_TAIL = b"-----END EC PRIVATE KEY-----\n"


def _der_header(length: int, tag: int) -> bytes:
    if length < 0x80:
        return bytes((tag, length))
    size = (length.bit_length() + 7) // 8
    return bytes((tag, 0x80 | size)) + length.to_bytes(size, "big")


def _pkcs8_from_sec1_p256(pem: bytes) -> bytes | None:
    """Rewrap a P-256 ``EC PRIVATE KEY`` PEM as PKCS#8 without parsing the key.

    The result has the bytes that OpenSSL's PKCS#8 encoder writes: the curve
    moves into the AlgorithmIdentifier and the ECPrivateKey drops its own
    parameters field. Loading and re-serializing each trustme leaf key cost
    about ten times as much.
    Returns ``None`` for anything but that exact layout.
    """
    if not (pem.startswith(_SEC1_PEM_HEAD) and pem.endswith(_SEC1_PEM_TAIL)):
        return None
    try:
        der = base64.b64decode(pem[len(_SEC1_PEM_HEAD) : -len(_SEC1_PEM_TAIL)])
    except ValueError:
        return None
    # ECPrivateKey: SEQUENCE (short length) { INTEGER 1, OCTET STRING of 32
    # bytes, [0] the P-256 OID, [1] the public key }.
    if len(der) < 2 or der[0] != 0x30 or der[1] != len(der) - 2:
        return None
    body = der[2:]
    if body[:5] != b"\x02\x01\x01\x04\x20" or body[37:49] != _P256_PARAMETERS:
        return None
    inner_body = body[:37] + body[49:]
    inner = _der_header(len(inner_body), 0x30) + inner_body
    info_body = _PKCS8_EC_P256_HEAD + _der_header(len(inner), 0x04) + inner
    info = _der_header(len(info_body), 0x30) + info_body
    encoded = base64.b64encode(info)
    lines = [encoded[i : i + 64] for i in range(0, len(encoded), 64)]
    return (
        b"".join((b"-----BEGIN PRIVATE KEY-----\n", b"\n".join(lines), b"\n"))
        + b"-----END PRIVATE KEY-----\n"
    )


def _pkcs8_pem(pem: bytes) -> bytes:
    """Return a PEM private key of any supported format as PKCS#8 PEM."""
    converted = _pkcs8_from_sec1_p256(pem)
    if converted is not None:
        return converted
    return _key_pem(_load_key(pem))


def _load_key(pem: bytes) -> PrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise LabError(f"unsupported key type {type(key).__name__}")
    return key


def _role_bundle(blocks: dict[str, bytes]) -> bytes:
    """Join PEM blocks by role into one bundle, each after its marker line."""
    return b"".join(
        b"%s%s\n%s" % (_ROLE_MARKER, role.encode(), pem) for role, pem in blocks.items()
    )


def _split_role_bundle(data: bytes) -> dict[str, bytes]:
    """Return the PEM blocks of a role bundle by role name.

    Raises:
        ValueError: a declared role has no block, or text precedes the first
            marker line.
    """
    blocks: dict[str, list[bytes]] = {}
    current: list[bytes] | None = None
    for line in data.splitlines(keepends=True):
        if line.startswith(_ROLE_MARKER):
            current = blocks.setdefault(line[len(_ROLE_MARKER) :].strip().decode(), [])
        elif current is None:
            raise ValueError("text before the first CA role marker")
        else:
            current.append(line)
    missing = [role for role in ROLES if role not in blocks]
    if missing:
        raise ValueError(f"no block for CA roles {', '.join(missing)}")
    return {role: b"".join(lines) for role, lines in blocks.items()}


def _write_file(path: Path, data: bytes, mode: int, *, atomic: bool) -> None:
    if atomic:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        target = Path(name)
    else:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        target = path
    try:
        # fchmod before the first byte: an existing file keeps its old mode
        # through O_TRUNC, and a key must never be readable by others.
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        if atomic:
            os.replace(target, path)
    except BaseException:
        if atomic:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(target)
        raise


@dataclass(frozen=True)
class _PendingFile:
    path: str
    data: bytes
    mode: int


def _process_umask() -> int | None:
    """Return the process umask from ``/proc/self/status``, or ``None``.

    Reading it there, unlike a pair of ``os.umask`` calls, never changes the
    mask that other threads see. ``None`` on systems without that field.
    """
    try:
        with open("/proc/self/status", "rb") as handle:
            status = handle.read()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith(b"Umask:"):
            return int(line.split()[1], 8)
    return None


def _write_in_place(path: str, data: bytes, mode: int, *, chmod: bool) -> None:
    # Plain descriptor calls: a lab build writes about 150 small files, and a
    # buffered file object per file cost more than the system calls.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        # fchmod before the first byte: an existing file keeps its old mode
        # through O_TRUNC, and a key must never be readable by others.
        if chmod:
            os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def _make_folder(folder: str) -> bool:
    """Create ``folder`` and any missing parents; return whether it is new."""
    try:
        os.mkdir(folder)
    except FileExistsError:
        return False
    except FileNotFoundError:
        os.makedirs(os.path.dirname(folder), exist_ok=True)
        try:
            os.mkdir(folder)
        except FileExistsError:
            return False
    return True


def _write_files(files: Iterable[_PendingFile]) -> None:
    """Write files of a lab build in place, creating their folders.

    Every file ends up with exactly its declared mode. A file created in a
    folder this call made new is skipped by ``fchmod`` when the umask clears
    none of the mode's bits, because ``open`` already gave it that mode.
    """
    umask = _process_umask()
    new_folders: dict[str, bool] = {}
    for file in files:
        folder = os.path.dirname(file.path)
        is_new = new_folders.get(folder)
        if is_new is None:
            is_new = _make_folder(folder)
            new_folders[folder] = is_new
        # NOTE: a umask changed by another thread during the build is not
        # seen, and files it creates get the mode that the new umask leaves.
        exact = is_new and umask is not None and not file.mode & umask
        _write_in_place(file.path, file.data, file.mode, chmod=not exact)


def write_private(path: Path, data: bytes, *, atomic: bool = True) -> None:
    """Write ``data`` to ``path`` with mode 0600.

    Args:
        path: The file; its folder is created if missing.
        data: The bytes to write.
        atomic: Write a temporary file and rename it over ``path``. A lab build
            writes in place because its manifest, written last, is what makes
            the files count.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_file(path, data, 0o600, atomic=atomic)


def write_public(path: Path, data: bytes, *, atomic: bool = True) -> None:
    """Write ``data`` to ``path`` with mode 0644; see :func:`write_private`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_file(path, data, 0o644, atomic=atomic)


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


def _parses_as_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


@functools.lru_cache(maxsize=1024)
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
    # trustme turns an identity that parses as an IP address into an iPAddress
    # entry, and an "@" into an rfc822Name, so such dNSNames need the builder.
    for name in spec.dns_names:
        if "@" in name or _parses_as_ip(name):
            return False
    # trustme rejects any wildcard that is not a "*." prefix, a lone "*" too.
    return all(
        "*" not in name or (name.startswith("*.") and "*" not in name[1:])
        for name in spec.dns_names
    )


class Lab:
    """The lab's CAs, trust store and built kinds, rooted in one folder.

    Use :func:`build_lab` to get one; it caches the build in the folder.
    """

    def __init__(
        self,
        directory: Path,
        key_type: str,
        built_at: dt.datetime,
        role_certs: dict[str, x509.Certificate] | None = None,
        role_keys: dict[str, PrivateKey] | None = None,
    ) -> None:
        """Create a lab rooted in ``directory``.

        ``role_certs`` and ``role_keys`` left as ``None`` are read from the
        ``ca-certs.pem`` and ``ca-keys.pem`` bundles on first use, so that
        loading a cached build parses no CA certificate or key until one is used.
        """
        self.directory = directory
        self.key_type = key_type
        self.built_at = built_at
        self._role_certs = role_certs
        self._role_keys = role_keys
        self._role_pems: dict[str, bytes] = {}
        self._trustme_cas: dict[str, trustme.CA] = {}
        self._issuer_akis: dict[str, x509.AuthorityKeyIdentifier] = {}
        self.kinds: dict[str, BuiltKind] = {}

    @property
    def role_certs(self) -> dict[str, x509.Certificate]:
        """The CA certificates by role name.

        Raises:
            LabError: a cached CA certificate cannot be read or parsed.
        """
        if self._role_certs is None:
            self._role_certs = self._read_role_bundle(
                CA_CERTS_FILE, x509.load_pem_x509_certificate
            )
        return self._role_certs

    def _role_key_map(self) -> dict[str, PrivateKey]:
        if self._role_keys is None:
            self._role_keys = self._read_role_bundle(CA_KEYS_FILE, _load_key)
        return self._role_keys

    def _read_role_bundle(
        self, name: str, parse: Callable[[bytes], _Parsed]
    ) -> dict[str, _Parsed]:
        path = self.directory / name
        try:
            blocks = _split_role_bundle(path.read_bytes())
            return {role: parse(blocks[role]) for role in ROLES}
        except (OSError, ValueError) as exc:
            # NOTE: a warm load checks only the CA files' type, mode and
            # modification time, so a file damaged without a newer
            # modification time shows up here rather than as a rebuild.
            raise LabError(
                f"cached CA bundle {path} is unreadable ({exc}); "
                "rebuild the lab with force=True"
            ) from exc

    def _role_pem(self, role: str) -> bytes:
        pem = self._role_pems.get(role)
        if pem is None:
            pem = self.role_certs[role].public_bytes(serialization.Encoding.PEM)
            self._role_pems[role] = pem
        return pem

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

    def role_key(self, role: str) -> PrivateKey:
        """Return the private key of CA role ``role``, for signing odd leaves.

        Raises:
            LabError: a cached CA key cannot be read or parsed.
        """
        return self._role_key_map()[role]

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

    def _trustme_ca(self, role: str) -> trustme.CA:
        ca = self._trustme_cas.get(role)
        if ca is None:
            # from_pem builds and discards a throw-away CA first, so do it once.
            ca = trustme.CA.from_pem(
                self._role_pem(role), _key_pem(self.role_key(role))
            )
            self._trustme_cas[role] = ca
        return ca

    def _issuer_aki(self, role: str) -> x509.AuthorityKeyIdentifier:
        aki = self._issuer_akis.get(role)
        if aki is None:
            aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(
                self.role_certs[role].public_key()  # type: ignore[arg-type]
            )
            self._issuer_akis[role] = aki
        return aki

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
            ca = self._trustme_ca(issuer.name)
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
            # trustme writes the traditional EC/RSA format; IssuedLeaf is PKCS#8.
            key_pem = _pkcs8_pem(issued.private_key_pem.bytes())
            return IssuedLeaf(issued.cert_chain_pems[0].bytes(), key_pem, chain)

        key = _generate_key(key_type)
        subject = _leaf_subject(spec)
        if issuer is None:
            issuer_name, signing_key = subject, key
        else:
            issuer_name = self.role_certs[issuer.name].subject
            signing_key = self.role_key(issuer.name)
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
        # RFC 5280 requires the AKI in every certificate that is not a
        # self-signed trust anchor; a self-signed leaf names its own key.
        if issuer is None:
            aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key())
        else:
            aki = self._issuer_aki(issuer.name)
        builder = builder.add_extension(aki, critical=False)
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
        leaf_pem = cert.public_bytes(serialization.Encoding.PEM)
        return IssuedLeaf(leaf_pem, _key_pem(key), chain, cert)

    def write_kind(self, kind: CertKind) -> BuiltKind:
        """Issue ``kind``'s leaf and write its three files under ``kinds/``."""
        built, files = self._issue_kind(kind)
        _write_files(files)
        return built

    def _issue_kind(self, kind: CertKind) -> tuple[BuiltKind, list[_PendingFile]]:
        """Issue ``kind``'s leaf and return the files still to be written."""
        issued = self.issue(kind.leaf)
        # Certificates carry whole seconds and the build time has no fraction,
        # so the declared window is exactly the leaf's. tests/test_lab.py
        # compares the two for every kind.
        built = _built_kind(
            self.directory,
            kind,
            issued.sha256,
            self.built_at + kind.leaf.window[0],
            self.built_at + kind.leaf.window[1],
        )
        self.kinds[kind.name] = built
        # Same bytes as ``issued.chain_pem``, without serializing the shared CA
        # certificates again for every kind.
        leaf_pem = issued.leaf_pem
        chain_pem = b"".join([leaf_pem, *map(self._role_pem, kind.leaf.chain)])
        leaf_file, chain_file, key_file = built.file_names
        files = [
            _PendingFile(leaf_file, leaf_pem, 0o644),
            _PendingFile(chain_file, chain_pem, 0o644),
            _PendingFile(key_file, issued.key_pem, 0o600),
        ]
        return built, files


def _built_kind(
    directory: Path,
    kind: CertKind,
    leaf_sha256: str,
    not_before: dt.datetime,
    not_after: dt.datetime,
) -> BuiltKind:
    # Paths from one f-string each: pathlib's joining took a noticeable share
    # of a warm build. All kinds share one folder, because a folder per kind
    # cost one more mkdir each on a cold build.
    stem = f"{directory}/kinds/{kind.name}"
    return BuiltKind(
        kind=kind,
        leaf_path=f"{stem}.leaf.pem",
        chain_path=f"{stem}.chain.pem",
        key_path=f"{stem}.key.pem",
        leaf_sha256=leaf_sha256,
        not_before=not_before,
        not_after=not_after,
    )


def _build_roles(
    key_type: str, built_at: dt.datetime
) -> tuple[dict[str, x509.Certificate], dict[str, PrivateKey], dict[str, trustme.CA]]:
    certs: dict[str, x509.Certificate] = {}
    keys: dict[str, PrivateKey] = {}
    identity_keys: dict[str, PrivateKey] = {}
    trustme_cas: dict[str, trustme.CA] = {}
    trustme_key = trustme.KeyType.RSA if key_type == "rsa" else trustme.KeyType.ECDSA

    for role in ROLES.values():
        if role.built_with == "trustme":
            parent = trustme_cas.get(role.issuer) if role.issuer else None
            if role.issuer and parent is None:
                raise LabError(
                    f"role {role.name}: trustme issuer {role.issuer} missing"
                )
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
    return certs, keys, trustme_cas


# The last digest per key type, with the role and kind objects it covers.
_digest_cache: dict[str, tuple[tuple[object, ...], str]] = {}


def catalogue_digest(key_type: str, kinds: Iterable[CertKind]) -> str:
    """Return a digest of everything a build depends on."""
    declared = (*ROLES, *ROLES.values(), *kinds)
    cached = _digest_cache.get(key_type)
    # Roles and kinds are frozen and hold only immutable values, so the same
    # objects always give the same repr; the repr took a fifth of a warm build.
    if (
        cached is not None
        and len(cached[0]) == len(declared)
        and all(a is b for a, b in zip(cached[0], declared, strict=True))
    ):
        return cached[1]
    kind_tuple = declared[2 * len(ROLES) :]
    material = repr((MANIFEST_SCHEMA, __version__, key_type, ROLES, kind_tuple))
    digest = hashlib.sha256(material.encode()).hexdigest()
    _digest_cache[key_type] = (declared, digest)
    return digest


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _relative(path: str, base: Path) -> str:
    # String slicing, because pathlib's relative_to took a tenth of the time
    # spent on the manifest.
    text, prefix = path, str(base) + os.sep
    if not text.startswith(prefix):
        raise ValueError(f"{path} is not inside {base}")
    return text[len(prefix) :].replace(os.sep, "/")


def _manifest(lab: Lab, digest: str) -> dict[str, Any]:
    # Imported here so the lab module stays importable by the oracle's tests
    # without a cycle: the oracle reads kinds and roles, never the lab.
    from harness.oracle.standards import expected_reasons_by_mode

    base = lab.directory
    trust_store = _relative(str(lab.trust_store_path), base)
    roles = {
        name: {
            "cert": CA_CERTS_FILE,
            "in_store": ROLES[name].in_store,
            "not_before": lab.role_window(name)[0].isoformat(),
            "not_after": lab.role_window(name)[1].isoformat(),
        }
        for name in ROLES
    }
    kinds = []
    for built in lab.kinds.values():
        leaf, chain, key = built.file_names
        kinds.append(
            {
                "kind": built.name,
                "description": built.kind.description,
                "tags": list(built.kind.tags),
                "leaf": _relative(leaf, base),
                "chain": _relative(chain, base),
                "key": _relative(key, base),
                "trust_store": trust_store,
                "reference_identity": built.reference_identity,
                "issuer": built.kind.leaf.issuer,
                "chain_roles": list(built.kind.leaf.chain),
                "leaf_sha256": built.leaf_sha256,
                "not_before": built.not_before.isoformat(),
                "not_after": built.not_after.isoformat(),
                "expected_reasons": {
                    mode.value: [reason.value for reason in reasons]
                    for mode, reasons in expected_reasons_by_mode(
                        built.kind, lab.built_at
                    ).items()
                },
            }
        )
    return {
        "schema": MANIFEST_SCHEMA,
        "generator": f"ems-cert-harness {__version__}",
        "digest": digest,
        "key_type": lab.key_type,
        "built_at": lab.built_at.isoformat(),
        "trust_store": trust_store,
        "roles": roles,
        "kinds": kinds,
    }


def _dump_manifest(manifest: dict[str, Any]) -> bytes:
    """Encode the manifest as JSON with one line per kind.

    ``json.dumps`` with ``indent`` falls back to its pure-Python encoder, which
    took a tenth of a cold build; one line per kind keeps diffs readable.
    """
    head = {key: value for key, value in manifest.items() if key != "kinds"}
    entries = ",\n".join(json.dumps(entry) for entry in manifest["kinds"])
    return f'{json.dumps(head)[:-1]}, "kinds": [\n{entries}\n]}}\n'.encode()


def _load_cached(
    directory: Path, digest: str, key_type: str, names: list[str]
) -> Lab | None:
    manifest_path = directory / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text())
        # Every file is written before the manifest, so a later modification
        # time means that someone changed the file after the build.
        built_ns = os.stat(manifest_path).st_mtime_ns
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        logger.warning("rebuilding lab: unreadable manifest %s: %s", manifest_path, exc)
        return None
    if not isinstance(manifest, dict):
        logger.warning(
            "rebuilding lab: manifest %s is not a JSON object", manifest_path
        )
        return None
    if manifest.get("digest") != digest:
        logger.info("rebuilding lab in %s: the catalogue changed", directory)
        return None
    try:
        lab = _lab_from_manifest(directory, manifest, key_type)
    except (KeyError, TypeError, ValueError) as exc:
        # ValueError covers bad timestamps as well as unreadable PEM files.
        logger.warning(
            "rebuilding lab: invalid manifest %s: %s: %s",
            manifest_path,
            type(exc).__name__,
            exc,
        )
        return None
    except OSError as exc:
        logger.warning(
            "rebuilding lab in %s: cached file unreadable: %s", directory, exc
        )
        return None
    if lab is None:
        return None
    if any(name not in lab.kinds for name in names):
        return None
    checked = [
        (f"{directory}/{CA_CERTS_FILE}", False),
        (f"{directory}/{CA_KEYS_FILE}", True),
        (str(lab.trust_store_path), False),
    ]
    for built in lab.kinds.values():
        leaf, chain, key = built.file_names
        checked += [(leaf, False), (chain, False), (key, True)]
    problems = [
        f"{path} {problem}"
        for path, private in checked
        if (problem := _file_problem(path, built_ns, private=private)) is not None
    ]
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        logger.warning(
            "rebuilding lab in %s: %s%s", directory, "; ".join(problems[:3]), more
        )
        return None
    return lab


def _file_problem(path: str, built_ns: int, *, private: bool) -> str | None:
    """Return why a cached file cannot be reused, or ``None`` when it can.

    Args:
        path: The file.
        built_ns: Modification time of the build's manifest, in nanoseconds.
        private: The file contains private keys and must be readable only
            by its owner.
    """
    # os.stat on a string, because Path.is_file's conversions cost more than
    # the system call for the hundred-odd files a warm build checks.
    try:
        info = os.stat(path)
    except OSError:
        return "is missing"
    if not stat.S_ISREG(info.st_mode):
        return "is not a regular file"
    if info.st_mtime_ns > built_ns:
        return "was changed after the build"
    if private and info.st_mode & 0o077:
        return f"is readable by others (mode {stat.S_IMODE(info.st_mode):04o})"
    return None


def _inside(directory: Path, relative: str) -> str:
    """Return ``directory / relative``, refusing paths that leave ``directory``."""
    # Checked on the string: a warm build resolves hundreds of these, and
    # pathlib's parsing took most of its time.
    parts = relative.split("/")
    if relative.startswith("/") or ".." in parts or "" in parts:
        raise ValueError(f"path {relative!r} points outside the lab folder")
    return f"{directory}/{relative}"


def _lab_from_manifest(
    directory: Path, manifest: dict[str, Any], key_type: str
) -> Lab | None:
    """Return the lab a manifest describes, or ``None`` when it is too old.

    The CA certificates and keys are parsed on first use, see :class:`Lab`.

    Raises:
        KeyError, TypeError, ValueError: the manifest is malformed.
    """
    built_at = dt.datetime.fromisoformat(manifest["built_at"])
    now = _now()
    if now - built_at > CACHE_MAX_AGE or built_at > now:
        logger.info(
            "rebuilding lab in %s: the build from %s expired", directory, built_at
        )
        return None
    lab = Lab(directory, key_type, built_at)
    for entry in manifest["kinds"]:
        name = entry["kind"]
        if name not in CATALOGUE:
            continue
        lab.kinds[name] = BuiltKind(
            kind=CATALOGUE[name],
            leaf_path=_inside(directory, entry["leaf"]),
            chain_path=_inside(directory, entry["chain"]),
            key_path=_inside(directory, entry["key"]),
            leaf_sha256=entry["leaf_sha256"],
            not_before=dt.datetime.fromisoformat(entry["not_before"]),
            not_after=dt.datetime.fromisoformat(entry["not_after"]),
        )
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
                f"unknown certificate kind {name!r}; "
                f"known kinds: {', '.join(CATALOGUE)}"
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
    # The manifest goes first and comes back last, so a build that stops half
    # way leaves no manifest and the next call rebuilds instead of loading a
    # mix of old and new files.
    with contextlib.suppress(FileNotFoundError):
        (root / "manifest.json").unlink()
    built_at = _now()
    role_certs, role_keys, trustme_cas = _build_roles(key_type, built_at)
    lab = Lab(root, key_type, built_at, role_certs, role_keys)
    lab._trustme_cas.update(trustme_cas)

    certs = _role_bundle({name: lab._role_pem(name) for name in ROLES})
    keys = _role_bundle({name: _key_pem(role_keys[name]) for name in ROLES})
    files = [
        _PendingFile(f"{root}/{CA_CERTS_FILE}", certs, 0o644),
        _PendingFile(f"{root}/{CA_KEYS_FILE}", keys, 0o600),
    ]
    store = b"".join(lab._role_pem(r.name) for r in ROLES.values() if r.in_store)
    files.append(_PendingFile(str(lab.trust_store_path), store, 0o644))

    for name in names:
        _, kind_files = lab._issue_kind(CATALOGUE[name])
        files += kind_files

    # Written in this thread: a writer thread overlapping the issuance had to
    # win the GIL back after every system call, and measured slower on tmpfs
    # and no faster on ext4.
    _write_files(files)
    manifest = _manifest(lab, digest)
    write_public(lab.manifest_path, _dump_manifest(manifest))
    return lab
