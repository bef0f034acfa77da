"""Identity properties: the oracle, the reference matcher and two peers agree.

Every example is a real certificate issued by the lab from a generated
:class:`~harness.strategies.IdentityCase`. The reference matcher
(:func:`harness.endpoint.identity.matches_reference`) is compared with

* the oracle's :func:`harness.oracle.standards.identity_matches`, which
  reads only the declared names, under every ``cn_fallback`` mode;
* OpenSSL's host check, reached through a real TLS 1.3 handshake by
  Python's ``ssl`` module, whose rules equal ``cn_fallback=when-no-san``;
* service-identity, whose rules equal ``cn_fallback=never``.

Where a peer's rules differ on purpose, the difference is an entry of
:data:`KNOWN_DIFFERENCES` with its reason; the properties allow exactly those
disagreements and :func:`test_known_difference_still_holds` shows each one
on a concrete certificate. When a property fails, the falsifying example
that Hypothesis reports is written as a regression file under
``fixtures/hypothesis/`` by
:func:`harness.hypothesis_fixtures.record_identity_failures`.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import idna
import pytest
import service_identity
from hypothesis import given
from service_identity.cryptography import (
    verify_certificate_hostname,
    verify_certificate_ip_address,
)

from harness.ems.server import MockEms
from harness.endpoint.identity import matches_reference
from harness.hypothesis_fixtures import record_identity_failures
from harness.model import CnFallback
from harness.oracle.standards import identity_matches
from harness.pki import Lab, LeafSpec
from harness.strategies import IdentityCase, identity_cases

OPENSSL = "openssl"
SERVICE_IDENTITY = "service-identity"
# OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH and X509_V_ERR_IP_ADDRESS_MISMATCH.
_HOST_MISMATCH_CODES = frozenset({62, 64})


def _si_pattern_invalid(name: str) -> bool:
    """Return whether service-identity refuses ``name`` as a DNS pattern."""
    pattern = name.strip().lower()
    if not pattern or "\x00" in pattern:
        return True
    if "*" not in pattern:
        return False
    parts = pattern.split(".")
    return (
        pattern.count("*") > 1
        or len(parts) < 3
        or "*" not in parts[0]
        or any(part == "" for part in parts)
    )


def _reference_a_label_head(reference: str) -> str:
    try:
        return idna.encode(reference.rstrip("."), uts46=True).decode().split(".")[0]
    except idna.IDNAError:
        return ""


@dataclass(frozen=True)
class KnownDifference:
    """A documented rule on which a peer and the reference matcher differ.

    Attributes:
        name: Short identifier.
        peer: ``"openssl"`` or ``"service-identity"``.
        reason: The peer's rule, and why the matcher keeps its own.
        applies: Whether the rule can change the result for a case.
        peer_matches: What the peer returns when the results differ, or
            ``None`` when the difference goes either way.
        example: A case on which the results differ today.
    """

    name: str
    peer: str
    reason: str
    applies: Callable[[IdentityCase], bool]
    peer_matches: bool | None
    example: IdentityCase


KNOWN_DIFFERENCES: tuple[KnownDifference, ...] = (
    KnownDifference(
        "bracketed-ip-literal",
        OPENSSL,
        "Python's ssl takes '[::1]' as a host name, not an IP address; the "
        "matcher accepts brackets around an IP literal, as URLs write IPv6",
        lambda case: case.reference.startswith("["),
        False,
        IdentityCase(LeafSpec(ip_addresses=("127.0.0.1",)), "[127.0.0.1]"),
    ),
    KnownDifference(
        "bracketed-ip-literal",
        SERVICE_IDENTITY,
        "service-identity reads '[::1]' as an invalid DNS-ID; the matcher "
        "accepts brackets around an IP literal",
        lambda case: case.reference.startswith("["),
        False,
        IdentityCase(LeafSpec(ip_addresses=("::1",)), "[::1]"),
    ),
    KnownDifference(
        "reference-trailing-dot-kept",
        OPENSSL,
        "OpenSSL 3.0's host check through Python's ssl compares the reference "
        "identity with its trailing dot, so 'a.a.' fails against a SAN 'a.a' "
        "and matches a SAN 'a.a.'; the matcher drops one trailing dot from "
        "the reference, because 'a.a.' and 'a.a' name the same host",
        lambda case: case.reference.endswith("."),
        None,
        IdentityCase(LeafSpec(dns_names=("ems.example.com",)), "ems.example.com."),
    ),
    KnownDifference(
        "malformed-pattern-rejects-certificate",
        SERVICE_IDENTITY,
        "service-identity raises CertificateError for the whole certificate "
        "when any SAN dNSName is a malformed wildcard or holds a NUL byte; "
        "RFC 6125 only says such a name matches nothing, so the matcher "
        "still tries the other names",
        lambda case: any(_si_pattern_invalid(n) for n in case.leaf.dns_names),
        False,
        IdentityCase(
            LeafSpec(dns_names=("*.com", "ems.example.com")), "ems.example.com"
        ),
    ),
    KnownDifference(
        "wildcard-never-matches-a-label",
        SERVICE_IDENTITY,
        "service-identity never lets '*' stand for an A-label (xn--); RFC "
        "6125 forbids only wildcards inside an A-label, so the matcher lets a "
        "whole-label '*' cover one",
        lambda case: (
            _reference_a_label_head(case.reference).startswith("xn--")
            and any(n.startswith("*.") for n in case.leaf.dns_names)
        ),
        False,
        IdentityCase(
            LeafSpec(dns_names=("*.example.org",)), "xn--bcher-kva.example.org"
        ),
    ),
    KnownDifference(
        "reference-trailing-dot-kept",
        SERVICE_IDENTITY,
        "service-identity compares a reference identity with its trailing dot; "
        "the matcher drops one trailing dot, because 'a.example.' and "
        "'a.example' name the same host",
        lambda case: case.reference.endswith("."),
        None,
        IdentityCase(LeafSpec(dns_names=("ems.example.com",)), "ems.example.com."),
    ),
)


def _differences(peer: str, case: IdentityCase) -> list[KnownDifference]:
    return [d for d in KNOWN_DIFFERENCES if d.peer == peer and d.applies(case)]


def _check_agreement(
    peer: str, case: IdentityCase, matcher: bool, peer_result: bool
) -> None:
    if matcher == peer_result:
        return
    allowed = [
        d
        for d in _differences(peer, case)
        if d.peer_matches is None or d.peer_matches == peer_result
    ]
    assert allowed, (
        f"{peer} returned {peer_result} and the matcher {matcher} for {case} "
        "with no known difference that explains it"
    )


# -- peers -----------------------------------------------------------------


def service_identity_matches(case: IdentityCase, lab: Lab) -> bool:
    """Return whether service-identity accepts the issued leaf for the case."""
    cert = lab.issue(case.leaf).cert
    try:
        ipaddress.ip_address(case.reference)
    except ValueError:
        verify: Callable[..., None] = verify_certificate_hostname
    else:
        verify = verify_certificate_ip_address
    try:
        verify(cert, case.reference)
    except (service_identity.VerificationError, service_identity.CertificateError):
        return False
    except (ValueError, UnicodeError):
        # An invalid DNS-ID (NUL byte, brackets, IDNA error) matches nothing.
        return False
    return True


def openssl_matches(ems: MockEms, lab: Lab, case: IdentityCase) -> bool:
    """Return whether OpenSSL's host check accepts the case over a handshake.

    The leaf is otherwise valid, so the handshake fails only on the host
    check; any other failure is raised.
    """
    issued = lab.issue(case.leaf)
    ems.set_certificate(issued.chain_pem, issued.key_pem)
    context = ssl.create_default_context(cafile=str(lab.trust_store_path))
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    with socket.create_connection(ems.address, timeout=5) as raw:
        try:
            with context.wrap_socket(raw, server_hostname=case.reference):
                return True
        except ssl.SSLCertVerificationError as exc:
            if exc.verify_code in _HOST_MISMATCH_CODES:
                return False
            raise
        except (ValueError, UnicodeError):
            # ssl rejects the server_hostname itself (NUL byte, empty label).
            return False


@pytest.fixture(scope="module")
def identity_ems(cert_lab: Lab) -> Iterator[MockEms]:
    """One mock EMS whose certificate each example replaces."""
    with MockEms.from_kind(cert_lab, "correct-fqdn", profile_action=None) as ems:
        yield ems


# -- properties ------------------------------------------------------------


@pytest.mark.parametrize("mode", list(CnFallback), ids=str)
@given(case=identity_cases())
def test_oracle_agrees_with_matcher(
    cert_lab: Lab, mode: CnFallback, case: IdentityCase
) -> None:
    with record_identity_failures(case, mode, "test_oracle_agrees_with_matcher"):
        cert = cert_lab.issue(case.leaf).cert

        declared = identity_matches(case.leaf, case.reference, mode)
        parsed = matches_reference(cert, case.reference, mode)

        assert parsed == declared, f"{mode}: oracle {declared}, matcher {parsed}"


@given(case=identity_cases())
def test_matcher_agrees_with_openssl(
    cert_lab: Lab, identity_ems: MockEms, case: IdentityCase
) -> None:
    mode = CnFallback.WHEN_NO_SAN
    with record_identity_failures(case, mode, "test_matcher_agrees_with_openssl"):
        cert = cert_lab.issue(case.leaf).cert
        matcher = matches_reference(cert, case.reference, mode)

        peer = openssl_matches(identity_ems, cert_lab, case)

        _check_agreement(OPENSSL, case, matcher, peer)


@given(case=identity_cases())
def test_matcher_agrees_with_service_identity(
    cert_lab: Lab, case: IdentityCase
) -> None:
    mode = CnFallback.NEVER
    with record_identity_failures(
        case, mode, "test_matcher_agrees_with_service_identity"
    ):
        cert = cert_lab.issue(case.leaf).cert
        matcher = matches_reference(cert, case.reference, mode)

        peer = service_identity_matches(case, cert_lab)

        _check_agreement(SERVICE_IDENTITY, case, matcher, peer)


@pytest.mark.parametrize(
    "difference", KNOWN_DIFFERENCES, ids=lambda d: f"{d.peer}-{d.name}"
)
def test_known_difference_still_holds(
    cert_lab: Lab, identity_ems: MockEms, difference: KnownDifference
) -> None:
    case = difference.example
    mode = CnFallback.WHEN_NO_SAN if difference.peer == OPENSSL else CnFallback.NEVER
    matcher = matches_reference(cert_lab.issue(case.leaf).cert, case.reference, mode)

    if difference.peer == OPENSSL:
        peer = openssl_matches(identity_ems, cert_lab, case)
    else:
        peer = service_identity_matches(case, cert_lab)

    assert difference.applies(case)
    assert peer != matcher, f"{difference.name} no longer differs: {difference.reason}"
    if difference.peer_matches is not None:
        assert peer == difference.peer_matches
