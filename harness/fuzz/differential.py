"""Differential fuzzing: the same served chain judged by several TLS stacks.

Each input from :mod:`harness.fuzz.certs` is served over real TLS 1.3 on
loopback and judged by:

=================  ===========================================  ===========
stack              what it checks                               CN fallback
=================  ===========================================  ===========
reference          the harness's endpoint client                when-no-san
ssl                Python ``ssl`` (OpenSSL), ``check_hostname``  when-no-san
cryptography       ``x509.verification`` server verifier          never
service-identity   the leaf's identity only (no path)            never
gnutls             ``gnutls-cli --verify-hostname``               when-no-san
=================  ===========================================  ===========

The specification's verdict for a stack is the oracle's under that stack's
CN fallback column, because the CN fallback is a setting of the oracle
(``Assumptions.cn_fallback``): a stack that never reads the CN is right to reject a
CN-only leaf under ``never``. ``ssl`` reads the CN when the leaf has no SAN
(``hostname_checks_common_name`` defaults to true); gnutls does the same for
a leaf without a dNSName. For inputs a ``LeafSpec`` cannot express, the
verdict comes from the rule the case declares, or is undecided.

A *disagreement* is an input on which the path-validating stacks do not
all return the same verdict, or on which some stack differs from the
specification's verdict for it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import logging
import shutil
import socket
import ssl
import subprocess
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.x509 import verification
from OpenSSL import SSL, crypto

from harness.fuzz.certs import CertCase, check_reference_client
from harness.fuzz.tlsserve import CertServer, UnservableError, block_with_timeout
from harness.model import CnFallback

logger = logging.getLogger(__name__)

GNUTLS_CLI = "/usr/bin/gnutls-cli"

STACK_MODES: dict[str, CnFallback] = {
    "reference": CnFallback.WHEN_NO_SAN,
    "ssl": CnFallback.WHEN_NO_SAN,
    "cryptography": CnFallback.NEVER,
    "service-identity": CnFallback.NEVER,
    "gnutls": CnFallback.WHEN_NO_SAN,
}
IDENTITY_ONLY = frozenset({"service-identity"})


@dataclass(frozen=True)
class Verdict:
    """One stack's judgement of one served chain.

    Attributes:
        stack: Name from :data:`STACK_MODES`.
        accepted: Whether it accepted; ``None`` when it could not run.
        detail: Its error message, or ``"ok"``.
        expected: The specification's verdict for this stack, ``None`` when
            no rule decides.
    """

    stack: str
    accepted: bool | None
    detail: str
    expected: bool | None = None

    @property
    def deviates(self) -> bool:
        """Whether the stack's verdict differs from the specification's."""
        return (
            self.accepted is not None
            and self.expected is not None
            and self.accepted != self.expected
        )


@dataclass(frozen=True)
class DifferentialResult:
    """Every stack's verdict on one input."""

    case: CertCase
    verdicts: tuple[Verdict, ...]

    @property
    def disagreement(self) -> bool:
        """Whether path validators disagree, or any stack deviates."""
        full = {
            v.accepted
            for v in self.verdicts
            if v.stack not in IDENTITY_ONLY and v.accepted is not None
        }
        return len(full) > 1 or any(v.deviates for v in self.verdicts)

    def signature(self) -> str:
        """Return a key that groups results with the same input shape and verdicts."""
        votes = ",".join(f"{v.stack}={v.accepted}" for v in self.verdicts)
        return f"{self.case.label}|{votes}"


def _is_ip(reference: str) -> bool:
    try:
        ipaddress.ip_address(reference)
    except ValueError:
        return False
    return True


def check_ssl(
    host: str, port: int, reference: str, store: Path, timeout: float
) -> Verdict:
    """Judge with Python's ``ssl`` module: path, time, purpose and hostname."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_verify_locations(cafile=str(store))
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname=reference),
        ):
            pass
    except ssl.SSLCertVerificationError as exc:
        return Verdict("ssl", False, exc.verify_message or str(exc))
    except (ssl.SSLError, ValueError) as exc:
        # ValueError: a reference identity ssl cannot encode (a NUL byte).
        return Verdict("ssl", False, f"{type(exc).__name__}: {exc}")
    except OSError as exc:
        return Verdict("ssl", None, f"connection failed: {exc}")
    return Verdict("ssl", True, "ok")


def capture_chain(host: str, port: int, timeout: float) -> list[bytes]:
    """Return the DER certificates a server sends, without validating them."""
    context = SSL.Context(SSL.TLS_METHOD)
    context.set_min_proto_version(SSL.TLS1_3_VERSION)
    with socket.create_connection((host, port), timeout=timeout) as raw:
        block_with_timeout(raw, timeout)
        connection = SSL.Connection(context, raw)
        connection.set_connect_state()
        connection.do_handshake()
        # OpenSSL's own objects, not cryptography's, which may fail to parse
        # what was sent; pyOpenSSL deprecates them.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            chain = connection.get_peer_cert_chain() or []
            ders = [crypto.dump_certificate(crypto.FILETYPE_ASN1, c) for c in chain]
        with contextlib.suppress(SSL.Error, OSError):
            connection.shutdown()
    return ders


def check_cryptography(chain: list[bytes], reference: str, store: Path) -> Verdict:
    """Judge with cryptography's web-PKI server verifier."""
    try:
        anchors = x509.load_pem_x509_certificates(store.read_bytes())
        certs = [x509.load_der_x509_certificate(item) for item in chain]
        if _is_ip(reference):
            subject: x509.verification.Subject = x509.IPAddress(
                ipaddress.ip_address(reference)
            )
        else:
            subject = x509.DNSName(reference)
        verifier = (
            verification.PolicyBuilder()
            .store(verification.Store(anchors))
            .time(dt.datetime.now(dt.UTC))
            .build_server_verifier(subject)
        )
        verifier.verify(certs[0], certs[1:])
    except (ValueError, verification.VerificationError) as exc:
        return Verdict("cryptography", False, f"{type(exc).__name__}: {exc}")
    return Verdict("cryptography", True, "ok")


def check_service_identity(chain: list[bytes], reference: str) -> Verdict:
    """Judge the leaf's identity alone with service-identity."""
    import service_identity
    from service_identity.cryptography import (
        verify_certificate_hostname,
        verify_certificate_ip_address,
    )

    try:
        leaf = x509.load_der_x509_certificate(chain[0])
        if _is_ip(reference):
            verify_certificate_ip_address(leaf, reference)
        else:
            verify_certificate_hostname(leaf, reference)
    except (
        service_identity.VerificationError,
        service_identity.CertificateError,
        ValueError,
    ) as exc:
        return Verdict("service-identity", False, f"{type(exc).__name__}: {exc}")
    return Verdict("service-identity", True, "ok")


def check_gnutls(
    host: str, port: int, reference: str, store: Path, timeout: float
) -> Verdict:
    """Judge with ``gnutls-cli``; its exit status is the verdict."""
    if not Path(GNUTLS_CLI).exists() and shutil.which("gnutls-cli") is None:
        return Verdict("gnutls", None, "gnutls-cli is not installed")
    if "\x00" in reference:
        return Verdict("gnutls", None, "a NUL byte cannot be passed on a command line")
    command = [
        GNUTLS_CLI,
        f"--x509cafile={store}",
        f"--verify-hostname={reference}",
        "--priority=NORMAL:-VERS-ALL:+VERS-TLS1.3",
        "-p",
        str(port),
        host,
    ]
    try:
        result = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return Verdict("gnutls", False, f"timed out after {timeout} s")
    output = (result.stdout + result.stderr).decode("utf-8", "replace")
    status = [
        line.strip()
        for line in output.splitlines()
        if "Status:" in line or "Error" in line or "error" in line
    ]
    if result.returncode == 0:
        return Verdict("gnutls", True, "ok")
    return Verdict(
        "gnutls", False, " | ".join(status)[:500] or f"exit {result.returncode}"
    )


def judge(
    case: CertCase, store: Path, built_at: dt.datetime, timeout: float = 5.0
) -> DifferentialResult:
    """Serve ``case`` and collect every stack's verdict with its expectation.

    Raises:
        UnservableError: OpenSSL cannot load the chain, so it cannot be served.
    """

    reference = case.reference
    verdicts: list[Verdict] = []
    with CertServer(case.chain_der, case.key_pem, timeout=timeout) as server:
        host, port = server.host, server.port
        runners: list[tuple[str, Callable[[], Verdict]]] = [
            (
                "reference",
                lambda: _reference(case, store, built_at, host, port, timeout),
            ),
            ("ssl", lambda: check_ssl(host, port, reference, store, timeout)),
            ("gnutls", lambda: check_gnutls(host, port, reference, store, timeout)),
        ]
        for _, run in runners:
            verdicts.append(run())
        try:
            chain = capture_chain(host, port, timeout)
        except (SSL.Error, OSError) as exc:
            # OpenSSL loaded the chain but cannot send it (an "internal
            # error" alert), so no stack ever saw the certificates.
            raise UnservableError(
                f"the server could not send the chain: {exc}"
            ) from exc
    verdicts.append(check_cryptography(chain, reference, store))
    verdicts.append(check_service_identity(chain, reference))

    judged = []
    for verdict in verdicts:
        expectation = case.expected(STACK_MODES[verdict.stack], built_at)
        expected = (
            expectation.identity_ok
            if verdict.stack in IDENTITY_ONLY
            else expectation.valid
        )
        judged.append(
            Verdict(verdict.stack, verdict.accepted, verdict.detail, expected)
        )
    order = list(STACK_MODES)
    judged.sort(key=lambda v: order.index(v.stack))
    return DifferentialResult(case, tuple(judged))


def _reference(
    case: CertCase,
    store: Path,
    built_at: dt.datetime,
    host: str,
    port: int,
    timeout: float,
) -> Verdict:
    try:
        check = check_reference_client(case, store, built_at, host, port, timeout)
    except ImportError:
        return Verdict("reference", None, "reference client not available")
    if check.verdict == "error":
        return Verdict("reference", None, check.detail)
    detail = ",".join(check.reasons) or "ok"
    return Verdict("reference", check.verdict == "accepted", detail)
