"""The lab's bytes against its declarations, checked by two real validators.

Every catalogue kind declares trust, time, purpose and identity properties;
the oracle turns them into expected reasons. Here OpenSSL (through pyOpenSSL
and through Python's ``ssl`` in an in-memory TLS 1.3 handshake) and
cryptography's ``x509.verification`` judge the files the lab wrote. Where a
validator's rules differ from the behaviour specification, the difference is
an entry in a table below with its reason. The test asserts exactly that
difference, so a change on either side fails it.

OpenSSL's host check uses the CN only when the leaf has no SAN dNSName, which
is ``cn_fallback=when-no-san``; with ``hostname_checks_common_name`` off it
is ``never``. cryptography never reads the CN, which is ``never``. Each check
is compared with the declaration under the mode its rules equal.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import ssl
from dataclasses import dataclass

import pytest
from cryptography import x509
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID
from OpenSSL import crypto

from harness.model import CnFallback, Reason
from harness.oracle.standards import chain_reasons, expected_reasons, purpose_reasons
from harness.pki import CATALOGUE, BuiltKind, Lab

KIND_NAMES = list(CATALOGUE)

# OpenSSL verification error codes (X509_V_ERR_*, OpenSSL 3.0) and the reason
# each one stands for.
OPENSSL_REASONS: dict[int, Reason] = {
    2: Reason.INCOMPLETE_CHAIN,  # UNABLE_TO_GET_ISSUER_CERT
    9: Reason.NOT_YET_VALID,  # CERT_NOT_YET_VALID
    10: Reason.EXPIRED,  # CERT_HAS_EXPIRED
    18: Reason.SELF_SIGNED,  # DEPTH_ZERO_SELF_SIGNED_CERT
    19: Reason.UNTRUSTED_ISSUER,  # SELF_SIGNED_CERT_IN_CHAIN
    20: Reason.INCOMPLETE_CHAIN,  # UNABLE_TO_GET_ISSUER_CERT_LOCALLY
    21: Reason.INCOMPLETE_CHAIN,  # UNABLE_TO_VERIFY_LEAF_SIGNATURE
    26: Reason.WRONG_PURPOSE,  # INVALID_PURPOSE
    62: Reason.HOSTNAME_MISMATCH,  # HOSTNAME_MISMATCH
    64: Reason.HOSTNAME_MISMATCH,  # IP_ADDRESS_MISMATCH
    79: Reason.INVALID_CA,  # INVALID_CA
}

# OpenSSL 3.0 stops at the first error. Its checks run in this order, as the
# lab's kinds show: the path to a trust anchor, then CA flags and purposes,
# then the host name, and the validity windows last.
OPENSSL_ORDER: tuple[frozenset[Reason], ...] = (
    frozenset({Reason.SELF_SIGNED, Reason.UNTRUSTED_ISSUER, Reason.INCOMPLETE_CHAIN}),
    frozenset({Reason.WRONG_PURPOSE, Reason.INVALID_CA}),
    frozenset({Reason.HOSTNAME_MISMATCH}),
    frozenset({Reason.EXPIRED, Reason.NOT_YET_VALID}),
)


@dataclass(frozen=True)
class Deviation:
    """A validator's documented difference from the declared properties.

    Attributes:
        observed: What the validator reports instead (``None`` for success).
        reason: Why its rule differs from the behaviour specification.
    """

    observed: Reason | None
    reason: str


TRAILING_DOT = Deviation(
    Reason.HOSTNAME_MISMATCH,
    "OpenSSL 3.0 keeps the trailing dot of the reference identity and compares "
    "it literally; RFC 6125 and the specification ignore one trailing dot",
)
PURPOSE_FIRST = Deviation(
    Reason.WRONG_PURPOSE,
    "OpenSSL checks extendedKeyUsage before the host name and stops at the "
    "first error, so the host name verdict is not observable",
)

CA_FIRST = Deviation(
    Reason.INVALID_CA,
    "OpenSSL still builds the path through the sent non-CA issuer and rejects "
    "its CA flag before the host name check, so the verdict is not observable",
)

# Kind -> deviation of the full OpenSSL handshake (trust store as declared).
OPENSSL_HANDSHAKE_DEVIATIONS: dict[str, Deviation] = {
    "trailing-dot-reference": TRAILING_DOT,
}
# Kind -> deviation of the OpenSSL host check with the chain made trusted.
OPENSSL_HOST_DEVIATIONS: dict[str, Deviation] = {
    "trailing-dot-reference": TRAILING_DOT,
    "eku-client-auth-only": PURPOSE_FIRST,
    "many-faults": PURPOSE_FIRST,
    "non-ca-issuer": CA_FIRST,
}
# Kind -> deviation of cryptography's server verifier on the host name.
CRYPTOGRAPHY_HOST_DEVIATIONS: dict[str, Deviation] = {
    "trailing-dot-reference": Deviation(
        Reason.HOSTNAME_MISMATCH,
        "cryptography 50 rejects a reference identity with a trailing dot as an "
        "invalid DNS name; the specification ignores one trailing dot",
    ),
    "wildcard-tld": Deviation(
        None,
        "cryptography 50 lets *.com match example.com; the specification needs "
        "at least two labels to the right of the wildcard",
    ),
}


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _load_chain(built: BuiltKind) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(built.chain_path.read_bytes())


def _first_openssl_error(declared: frozenset[Reason]) -> frozenset[Reason]:
    """Return the reasons of which OpenSSL reports one first, by its check order."""
    for group in OPENSSL_ORDER:
        if group & declared:
            return group & declared
    return frozenset()


def _check_single_error(
    validator: str,
    observed: Reason | None,
    declared: frozenset[Reason],
    kind: str,
    deviations: dict[str, Deviation],
) -> None:
    """Assert a first-error result against the declaration or a known deviation.

    The expected first error follows OpenSSL's check order; the other callers
    pass at most one declared reason, where the order does not matter.
    """
    deviation = deviations.get(kind)
    if deviation is not None:
        assert observed == deviation.observed, (
            f"{kind}: {validator} reports {observed}, the recorded deviation "
            f"says {deviation.observed}: {deviation.reason}"
        )
        predicted = _first_openssl_error(declared)
        assert deviation.observed not in (predicted or {None}), (
            f"{kind}: the recorded deviation is stale; {validator} now agrees "
            f"with the declared reasons {sorted(declared)}"
        )
        return
    if not declared:
        assert observed is None, (
            f"{kind}: declared valid, {validator} reports {observed}"
        )
        return
    expected = _first_openssl_error(declared)
    assert observed in expected, (
        f"{kind}: {validator} reports {observed}, expected one of "
        f"{sorted(expected)} (declared {sorted(declared)})"
    )


# OpenSSL through pyOpenSSL: trust and time


@pytest.mark.parametrize("kind", KIND_NAMES)
def test_openssl_store_context_trust_and_time(cert_lab: Lab, kind: str) -> None:
    built = cert_lab.kind(kind)
    leaf, *sent = _load_chain(built)
    store = crypto.X509Store()
    for anchor in cert_lab.trust_store_certs():
        store.add_cert(crypto.X509.from_cryptography(anchor))
    context = crypto.X509StoreContext(
        store,
        crypto.X509.from_cryptography(leaf),
        [crypto.X509.from_cryptography(cert) for cert in sent],
    )

    try:
        context.verify_certificate()
        observed = None
    except crypto.X509StoreContextError as exc:
        code = exc.errors[0]
        assert code in OPENSSL_REASONS, f"{kind}: unmapped OpenSSL error {exc.errors}"
        observed = OPENSSL_REASONS[code]

    declared = chain_reasons(built.kind.leaf, cert_lab.built_at, _now())
    _check_single_error("OpenSSL X509StoreContext", observed, declared, kind, {})


# OpenSSL through Python's ssl: a TLS 1.3 handshake in memory


def _handshake(
    built: BuiltKind,
    server_hostname: str,
    *,
    check_common_name: bool,
    cafile: str | None = None,
    cadata: str | None = None,
    partial_chain: bool = False,
) -> Reason | None:
    """Run a TLS 1.3 handshake over memory BIOs; return the client's reason."""
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.minimum_version = ssl.TLSVersion.TLSv1_3
    server.load_cert_chain(built.chain_path, built.key_path)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.minimum_version = ssl.TLSVersion.TLSv1_3
    client.load_verify_locations(cafile=cafile, cadata=cadata)
    client.hostname_checks_common_name = check_common_name
    if partial_chain:
        client.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN

    to_client, to_server = ssl.MemoryBIO(), ssl.MemoryBIO()
    try:
        client_conn = client.wrap_bio(
            to_client, to_server, server_hostname=server_hostname
        )
    except ValueError:
        # ssl encodes the name with IDNA 2003 before the handshake and rejects
        # a name it cannot encode, so no connection to it is ever made.
        return Reason.HOSTNAME_MISMATCH
    server_in, server_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    server_conn = server.wrap_bio(server_in, server_out, server_side=True)

    for _ in range(10):
        try:
            client_conn.do_handshake()
            return None
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLCertVerificationError as exc:
            assert exc.verify_code in OPENSSL_REASONS, f"unmapped error: {exc}"
            return OPENSSL_REASONS[exc.verify_code]
        server_in.write(to_server.read())
        with contextlib.suppress(ssl.SSLWantReadError):
            server_conn.do_handshake()
        to_client.write(server_out.read())
    raise AssertionError(f"{built.name}: handshake did not finish in ten rounds")


# The ssl module can turn the CN fallback on or off, but has no "always" mode.
SSL_MODES = {CnFallback.WHEN_NO_SAN: True, CnFallback.NEVER: False}


@pytest.mark.parametrize("mode", list(SSL_MODES), ids=str)
@pytest.mark.parametrize("kind", KIND_NAMES)
def test_openssl_handshake_verdict(cert_lab: Lab, kind: str, mode: CnFallback) -> None:
    built = cert_lab.kind(kind)

    observed = _handshake(
        built,
        built.reference_identity,
        check_common_name=SSL_MODES[mode],
        cafile=str(cert_lab.trust_store_path),
    )

    declared = expected_reasons(
        built.kind.leaf, built.reference_identity, mode, cert_lab.built_at, _now()
    )
    _check_single_error(
        "OpenSSL handshake", observed, declared, kind, OPENSSL_HANDSHAKE_DEVIATIONS
    )


@pytest.mark.parametrize("mode", list(SSL_MODES), ids=str)
@pytest.mark.parametrize("kind", KIND_NAMES)
def test_openssl_host_check(cert_lab: Lab, kind: str, mode: CnFallback) -> None:
    # The leaf itself is the only trust anchor (partial chains allowed), so
    # trust errors cannot hide the host name verdict. Time errors cannot
    # either, because OpenSSL checks the host name before the windows.
    built = cert_lab.kind(kind)

    observed = _handshake(
        built,
        built.reference_identity,
        check_common_name=SSL_MODES[mode],
        cadata=built.leaf_path.read_text(),
        partial_chain=True,
    )
    if observed in (Reason.EXPIRED, Reason.NOT_YET_VALID):
        observed = None

    declared = expected_reasons(
        built.kind.leaf, built.reference_identity, mode, cert_lab.built_at, _now()
    )
    declared_identity = declared & {Reason.HOSTNAME_MISMATCH}
    _check_single_error(
        "OpenSSL host check", observed, declared_identity, kind, OPENSSL_HOST_DEVIATIONS
    )


# cryptography's x509.verification


def _require_server_auth(
    policy: verification.Policy,
    cert: x509.Certificate,
    eku: x509.ExtendedKeyUsage | None,
) -> None:
    if eku is not None and ExtendedKeyUsageOID.SERVER_AUTH not in eku:
        raise ValueError("extendedKeyUsage lacks serverAuth")


def _leaf_policy(*, san_required: bool) -> verification.ExtensionPolicy:
    """Return the web PKI leaf policy with the relaxations trustme's leaves need.

    trustme marks the SAN and extendedKeyUsage critical, the SAN next to a
    non-empty subject, and the CA/Browser Forum rules forbid both. So both are
    accepted at any criticality. Their content rules stay: a server verifier
    matches the SAN names, and extendedKeyUsage must list serverAuth when
    present.

    Args:
        san_required: ``False`` for the client verifier, which the path tests
            use to skip name matching; a leaf may then lack a SAN.
    """
    policy = verification.ExtensionPolicy.webpki_defaults_ee()
    if san_required:
        policy = policy.require_present(
            x509.SubjectAlternativeName, verification.Criticality.AGNOSTIC, None
        )
    else:
        policy = policy.may_be_present(
            x509.SubjectAlternativeName, verification.Criticality.AGNOSTIC, None
        )
    # The client verifier would require clientAuth; this rule replaces it.
    return policy.may_be_present(
        x509.ExtendedKeyUsage, verification.Criticality.AGNOSTIC, _require_server_auth
    )


# Fragments of cryptography's error messages, checked in this order, and the
# reasons each can stand for. Its path builder reports a missing issuer, an
# untrusted root and a self-signed leaf alike.
CRYPTOGRAPHY_MESSAGES: tuple[tuple[str, frozenset[Reason]], ...] = (
    ("subjectAltName", frozenset({Reason.HOSTNAME_MISMATCH})),
    ("required EKU not found", frozenset({Reason.WRONG_PURPOSE})),
    ("not valid at validation time", frozenset({Reason.EXPIRED, Reason.NOT_YET_VALID})),
    ("basicConstraints.cA must be asserted", frozenset({Reason.INVALID_CA})),
    ("lacks serverAuth", frozenset({Reason.WRONG_PURPOSE})),
    (
        "candidates exhausted",
        frozenset(
            {Reason.SELF_SIGNED, Reason.UNTRUSTED_ISSUER, Reason.INCOMPLETE_CHAIN}
        ),
    ),
)

NO_CN = "cryptography never reads the CN, and the default cn_fallback does"

# Kind -> deviation of cryptography's full server verification from the
# declaration under the default cn_fallback (when-no-san).
CRYPTOGRAPHY_SERVER_DEVIATIONS: dict[str, Deviation] = {
    "cn-only-no-san": Deviation(
        Reason.HOSTNAME_MISMATCH,
        f"cryptography rejects a server leaf without a SAN; {NO_CN}",
    ),
    "san-ip-only-cn-host": Deviation(Reason.HOSTNAME_MISMATCH, NO_CN),
    "san-email-only-cn-host": Deviation(Reason.HOSTNAME_MISMATCH, NO_CN),
    **CRYPTOGRAPHY_HOST_DEVIATIONS,
}


def _cryptography_reasons(message: str) -> frozenset[Reason]:
    for fragment, reasons in CRYPTOGRAPHY_MESSAGES:
        if fragment in message:
            return reasons
    raise AssertionError(f"unmapped cryptography error: {message}")


@pytest.mark.parametrize("kind", KIND_NAMES)
def test_cryptography_path_validation(cert_lab: Lab, kind: str) -> None:
    built = cert_lab.kind(kind)
    leaf, *sent = _load_chain(built)
    now = _now()
    verifier = (
        verification.PolicyBuilder()
        .store(verification.Store(cert_lab.trust_store_certs()))
        .time(now)
        .extension_policies(
            ca_policy=verification.ExtensionPolicy.webpki_defaults_ca(),
            ee_policy=_leaf_policy(san_required=False),
        )
        .build_client_verifier()
    )

    try:
        verifier.verify(leaf, sent)
        observed: frozenset[Reason] = frozenset()
    except verification.VerificationError as exc:
        observed = _cryptography_reasons(str(exc))

    declared = chain_reasons(built.kind.leaf, cert_lab.built_at, now)
    declared |= purpose_reasons(built.kind.leaf)
    if not declared:
        assert not observed, f"{kind}: declared valid, cryptography reports {observed}"
    else:
        assert observed & declared, (
            f"{kind}: cryptography reports one of {sorted(observed)}, "
            f"declared {sorted(declared)}"
        )


def _subject(reference: str) -> verification.Subject:
    try:
        return x509.IPAddress(ipaddress.ip_address(reference))
    except ValueError:
        pass
    # A client encodes a U-label reference identity to its A-label first.
    return x509.DNSName(reference.encode("idna").decode("ascii"))


@pytest.mark.parametrize("kind", KIND_NAMES)
def test_cryptography_host_name(cert_lab: Lab, kind: str) -> None:
    # cryptography never reads the CN, which is the specification's
    # cn_fallback=never. The validation time is the middle of the leaf's
    # window, and cryptography checks the leaf's names before its path, so
    # only a name error can come from the leaf side.
    built = cert_lab.kind(kind)
    leaf, *sent = _load_chain(built)
    middle = built.not_before + (built.not_after - built.not_before) / 2
    ee_policy = _leaf_policy(san_required=True)
    builder = (
        verification.PolicyBuilder()
        .store(verification.Store(cert_lab.trust_store_certs()))
        .time(middle)
        .extension_policies(
            ca_policy=verification.ExtensionPolicy.webpki_defaults_ca(),
            ee_policy=ee_policy,
        )
    )

    observed: Reason | None = None
    try:
        verifier = builder.build_server_verifier(_subject(built.reference_identity))
    except ValueError:
        # IDNA encoding or cryptography rejected the reference identity itself
        # (UnicodeError is a ValueError), so no certificate can match it.
        observed = Reason.HOSTNAME_MISMATCH
    else:
        try:
            verifier.verify(leaf, sent)
        except verification.VerificationError as exc:
            if "subjectAltName" in str(exc):
                observed = Reason.HOSTNAME_MISMATCH

    declared = expected_reasons(
        built.kind.leaf,
        built.reference_identity,
        CnFallback.NEVER,
        cert_lab.built_at,
        _now(),
    )
    declared_identity = declared & {Reason.HOSTNAME_MISMATCH}
    _check_single_error(
        "cryptography",
        observed,
        declared_identity,
        kind,
        CRYPTOGRAPHY_HOST_DEVIATIONS,
    )


@pytest.mark.parametrize("kind", KIND_NAMES)
def test_cryptography_server_verdict(cert_lab: Lab, kind: str) -> None:
    # Full server verification as a client would run it, with only the
    # criticality relaxations that trustme's leaves need.
    built = cert_lab.kind(kind)
    leaf, *sent = _load_chain(built)
    now = _now()
    ee_policy = _leaf_policy(san_required=True)
    builder = (
        verification.PolicyBuilder()
        .store(verification.Store(cert_lab.trust_store_certs()))
        .time(now)
        .extension_policies(
            ca_policy=verification.ExtensionPolicy.webpki_defaults_ca(),
            ee_policy=ee_policy,
        )
    )

    observed: frozenset[Reason] = frozenset()
    try:
        verifier = builder.build_server_verifier(_subject(built.reference_identity))
    except ValueError:
        observed = frozenset({Reason.HOSTNAME_MISMATCH})
    else:
        try:
            verifier.verify(leaf, sent)
        except verification.VerificationError as exc:
            observed = _cryptography_reasons(str(exc))

    declared = expected_reasons(
        built.kind.leaf,
        built.reference_identity,
        CnFallback.WHEN_NO_SAN,
        cert_lab.built_at,
        now,
    )
    deviation = CRYPTOGRAPHY_SERVER_DEVIATIONS.get(kind)
    if deviation is not None:
        expected = frozenset() if deviation.observed is None else {deviation.observed}
        assert observed == expected, f"{kind}: {deviation.reason}"
        assert observed != declared, f"{kind}: the recorded deviation is stale"
    elif not declared:
        assert not observed, f"{kind}: declared valid, cryptography reports {observed}"
    else:
        assert observed & declared, (
            f"{kind}: cryptography reports one of {sorted(observed)}, "
            f"declared {sorted(declared)}"
        )
