"""Standards validation of a presented chain against the simulated OS store.

OpenSSL (through pyOpenSSL) builds and verifies the path. It stops at the
first error, but a client must report every reason that applies, so the
check runs in steps:

1. OpenSSL verifies the chain with time checks disabled. Its verdict gives
   the trust reason, if any, and on success the path it chose. OpenSSL tries
   trust anchors first (``X509_V_FLAG_TRUSTED_FIRST``, its default), so a
   chain that ends at a cross-certificate from an expired root still finds
   the valid self-signed root in the store.
2. When OpenSSL fails there is no verified path, so :func:`build_path`
   follows issuers by name and signature, anchors first, to find the path
   the time and CA checks apply to.
3. Every certificate on the path, leaf and trust anchor included, must be
   within its validity window, and every issuer on it must be a CA.
4. A leaf with extendedKeyUsage must list serverAuth.
5. :mod:`harness.endpoint.identity` matches the reference identity.

A leaf whose bytes cryptography cannot parse is invalid: nothing in it can be
checked, so :func:`validate_der` reports it as ``untrusted-issuer`` without
running the steps above.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID
from OpenSSL import crypto

from harness.endpoint.identity import matches_reference
from harness.model import CnFallback, Reason, sorted_reasons

logger = logging.getLogger(__name__)

# X509_V_FLAG_NO_CHECK_TIME (OpenSSL 1.1.0 and later); pyOpenSSL has no name
# for it.
_NO_CHECK_TIME = 0x200000
# Longest path build_path follows before giving up, leaf included.
MAX_PATH_LENGTH = 10
# Distinct certificates whose parsed forms are kept. A run against the lab
# sees a few dozen; hostile inputs from fuzzing evict each other.
_PARSED_CERTIFICATES = 1024

# OpenSSL verify error codes (include/openssl/x509_vfy.h) and what they mean
# for the client.
_OPENSSL_REASONS: dict[int, Reason] = {
    2: Reason.INCOMPLETE_CHAIN,  # X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT
    18: Reason.SELF_SIGNED,  # X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT
    19: Reason.UNTRUSTED_ISSUER,  # X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN
    20: Reason.INCOMPLETE_CHAIN,  # X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY
    21: Reason.INCOMPLETE_CHAIN,  # X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE
    24: Reason.INVALID_CA,  # X509_V_ERR_INVALID_CA
    25: Reason.INVALID_CA,  # X509_V_ERR_PATH_LENGTH_EXCEEDED
    26: Reason.WRONG_PURPOSE,  # X509_V_ERR_INVALID_PURPOSE
    27: Reason.UNTRUSTED_ISSUER,  # X509_V_ERR_CERT_UNTRUSTED
    28: Reason.UNTRUSTED_ISSUER,  # X509_V_ERR_CERT_REJECTED
    32: Reason.INVALID_CA,  # X509_V_ERR_KEYUSAGE_NO_CERTSIGN
    79: Reason.INVALID_CA,  # X509_V_ERR_INVALID_CA (OpenSSL 3 strict CA check)
}


class TrustStoreError(Exception):
    """The simulated OS trust store could not be read."""


class LeafParseError(ValueError):
    """The leaf the server sent is not a certificate cryptography can parse."""


@dataclass(frozen=True)
class TrustStore:
    """The trust anchors of the simulated OS store, loaded from a PEM bundle."""

    path: Path
    anchors: tuple[x509.Certificate, ...]

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TrustStore:
        """Read a PEM bundle of trust anchors.

        Raises:
            TrustStoreError: the file is missing, unreadable or contains no
                certificate.
        """
        bundle = Path(path)
        try:
            anchors = x509.load_pem_x509_certificates(bundle.read_bytes())
        except OSError as exc:
            raise TrustStoreError(f"cannot read trust store {bundle}: {exc}") from exc
        except ValueError as exc:
            raise TrustStoreError(
                f"trust store {bundle} is not a PEM certificate bundle: {exc}"
            ) from exc
        return cls(bundle, tuple(anchors))

    @functools.cached_property
    def x509_store(self) -> crypto.X509Store:
        """The anchors as an OpenSSL store with time checks off, built once.

        Verification does not change a store without lookup directories, and
        OpenSSL locks a store during lookups, so threads may share it.
        """
        x509_store = crypto.X509Store()
        for anchor in self.anchors:
            x509_store.add_cert(crypto.X509.from_cryptography(anchor))
        x509_store.set_flags(_NO_CHECK_TIME)
        return x509_store


@dataclass(frozen=True)
class Validation:
    """Result of standards validation of one presented chain.

    Attributes:
        reasons: Every reason the certificate is invalid, in report order;
            empty when it is valid.
        path: The certification path the time and CA checks used, leaf
            first; it ends at a trust anchor only when ``anchored``.
        anchored: Whether OpenSSL verified a path to a trust anchor.
        detail: OpenSSL's verify error, or ``None`` when it found a path.
    """

    reasons: list[Reason]
    path: tuple[x509.Certificate, ...]
    anchored: bool
    detail: str | None


# The parse caches below map identical bytes to the same immutable object, so
# a verdict never comes from a cache: every chain is still verified, path
# built and checked from scratch. Parsing and converting the same few lab
# certificates again on every connection was the largest cost of validation.


@functools.lru_cache(maxsize=_PARSED_CERTIFICATES)
def _load_der(der: bytes) -> x509.Certificate:
    """Parse DER bytes; a ``ValueError`` is raised again on every call."""
    return x509.load_der_x509_certificate(der)


@functools.lru_cache(maxsize=_PARSED_CERTIFICATES)
def _openssl_x509(cert: x509.Certificate) -> crypto.X509:
    """Convert to pyOpenSSL; OpenSSL 3 locks its per-certificate caches."""
    return crypto.X509.from_cryptography(cert)


@functools.lru_cache(maxsize=_PARSED_CERTIFICATES)
def _fingerprint(cert: x509.Certificate) -> bytes:
    return cert.fingerprint(hashes.SHA256())


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def build_path(
    leaf: x509.Certificate,
    untrusted: Sequence[x509.Certificate],
    anchors: Sequence[x509.Certificate],
) -> tuple[tuple[x509.Certificate, ...], bool]:
    """Follow issuers from ``leaf``, preferring trust anchors at each step.

    Returns:
        The path, leaf first, and whether it ends at a trust anchor.
    """
    anchor_ids = {_fingerprint(a) for a in anchors}
    candidates = [(_fingerprint(c), c) for c in (*anchors, *untrusted)]
    path = [leaf]
    used = {_fingerprint(leaf)}
    current = leaf
    while len(path) < MAX_PATH_LENGTH:
        if _fingerprint(current) in anchor_ids:
            return tuple(path), True
        issuer = next(
            (c for fp, c in candidates if fp not in used and _issued_by(current, c)),
            None,
        )
        if issuer is None:
            break
        path.append(issuer)
        used.add(_fingerprint(issuer))
        current = issuer
    return tuple(path), False


def _time_reasons(path: Sequence[x509.Certificate], now: dt.datetime) -> set[Reason]:
    reasons: set[Reason] = set()
    for cert in path:
        # Both ends of the window are inclusive.
        if now < cert.not_valid_before_utc:
            reasons.add(Reason.NOT_YET_VALID)
        if now > cert.not_valid_after_utc:
            reasons.add(Reason.EXPIRED)
    return reasons


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    except (x509.ExtensionNotFound, ValueError):
        return False
    if not constraints.value.ca:
        return False
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return True
    except ValueError:
        return False
    return usage.key_cert_sign


def purpose_reasons(leaf: x509.Certificate) -> set[Reason]:
    """Return ``wrong-purpose`` when the leaf's extendedKeyUsage lacks serverAuth.

    A leaf without extendedKeyUsage may serve any purpose. anyExtendedKeyUsage
    does not stand in for serverAuth here.
    """
    try:
        eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return set()
    except ValueError as exc:
        logger.info("extendedKeyUsage does not parse, treating it as wrong: %s", exc)
        return {Reason.WRONG_PURPOSE}
    if ExtendedKeyUsageOID.SERVER_AUTH in eku:
        return set()
    return {Reason.WRONG_PURPOSE}


def _openssl_verify(
    leaf: x509.Certificate,
    untrusted: Sequence[x509.Certificate],
    store: TrustStore,
) -> tuple[tuple[x509.Certificate, ...] | None, Reason | None, str | None]:
    """Verify with OpenSSL, time checks off; return (path, reason, detail)."""
    context = crypto.X509StoreContext(
        store.x509_store,
        _openssl_x509(leaf),
        [_openssl_x509(c) for c in untrusted],
    )
    try:
        verified = context.get_verified_chain()
    except crypto.X509StoreContextError as exc:
        code, depth, message = exc.errors[0], exc.errors[1], exc.errors[2]
        reason = _OPENSSL_REASONS.get(code)
        if reason is None:
            logger.warning(
                "unmapped OpenSSL verify error %s at depth %s (%s); "
                "reporting untrusted-issuer",
                code,
                depth,
                message,
            )
            reason = Reason.UNTRUSTED_ISSUER
        return None, reason, f"OpenSSL error {code} at depth {depth}: {message}"
    path = tuple(
        _load_der(crypto.dump_certificate(crypto.FILETYPE_ASN1, c)) for c in verified
    )
    return path, None, None


def chain_reasons(
    chain: Sequence[x509.Certificate], store: TrustStore, now: dt.datetime
) -> Validation:
    """Return the time, trust and purpose reasons for a presented chain.

    Args:
        chain: The certificates the server sent, leaf first.
        store: The simulated OS trust store.
        now: Validation time, timezone-aware.

    Raises:
        ValueError: ``chain`` is empty.
    """
    if not chain:
        raise ValueError("the server presented no certificate")
    leaf, untrusted = chain[0], list(chain[1:])

    verified, trust_reason, detail = _openssl_verify(leaf, untrusted, store)
    if verified is not None:
        path, anchored = verified, True
    else:
        path, _ = build_path(leaf, untrusted, store.anchors)
        anchored = False

    reasons = _time_reasons(path, now) | purpose_reasons(leaf)
    if trust_reason is not None:
        reasons.add(trust_reason)
    if any(not _is_ca(issuer) for issuer in path[1:]):
        reasons.add(Reason.INVALID_CA)
    return Validation(sorted_reasons(reasons), path, anchored, detail)


def validate(
    chain: Sequence[x509.Certificate],
    store: TrustStore,
    reference: str,
    cn_fallback: CnFallback,
    now: dt.datetime | None = None,
) -> Validation:
    """Return every reason the presented chain is invalid for ``reference``.

    Args:
        chain: The certificates the server sent, leaf first.
        store: The simulated OS trust store.
        reference: The EMS address the client was configured with.
        cn_fallback: When the subject CN counts as a presented name.
        now: Validation time; the current time if omitted.
    """
    when = dt.datetime.now(dt.UTC) if now is None else now
    result = chain_reasons(chain, store, when)
    if matches_reference(chain[0], reference, cn_fallback):
        return result
    reasons = sorted_reasons({*result.reasons, Reason.HOSTNAME_MISMATCH})
    return Validation(reasons, result.path, result.anchored, result.detail)


def parse_chain(ders: Sequence[bytes]) -> list[x509.Certificate]:
    """Parse the DER certificates a server sent, leaf first.

    An intermediate that does not parse is dropped and logged. It cannot be
    on any path, so validation reports whatever its absence causes, such as
    ``incomplete-chain``.

    Raises:
        LeafParseError: ``ders`` is empty or the leaf does not parse.
    """
    if not ders:
        raise LeafParseError("the server presented no certificate")
    try:
        leaf = _load_der(ders[0])
    except ValueError as exc:
        raise LeafParseError(f"the leaf certificate does not parse: {exc}") from None

    chain = [leaf]
    for depth, der in enumerate(ders[1:], start=1):
        try:
            chain.append(_load_der(der))
        except ValueError as exc:
            logger.info("ignoring certificate %s that does not parse: %s", depth, exc)
    return chain


def validate_der(
    ders: Sequence[bytes],
    store: TrustStore,
    reference: str,
    cn_fallback: CnFallback,
    now: dt.datetime | None = None,
) -> Validation:
    """Parse the presented chain, then validate it as :func:`validate` does.

    A leaf that does not parse is hostile input, not a failed handshake. The
    result is invalid with the single reason ``untrusted-issuer`` and an
    empty path, because no issuer can be shown to have signed bytes that
    cannot be read. :class:`~harness.model.Reason` has no reason for a
    malformed certificate, so the closest one is used.

    Args:
        ders: The DER certificates the server sent, leaf first.
        store: The simulated OS trust store.
        reference: The EMS address the client was configured with.
        cn_fallback: When the subject CN counts as a presented name.
        now: Validation time; the current time if omitted.
    """
    try:
        chain = parse_chain(ders)
    except LeafParseError as exc:
        logger.info("treating the certificate as invalid: %s", exc)
        return Validation([Reason.UNTRUSTED_ISSUER], (), False, str(exc))
    return validate(chain, store, reference, cn_fallback, now)
