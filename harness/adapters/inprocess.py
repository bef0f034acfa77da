"""Clients that run inside this process: Python's ssl module and pyOpenSSL."""

from __future__ import annotations

import ipaddress
import select
import socket
import ssl
import time
from pathlib import Path
from typing import TYPE_CHECKING

from harness.adapters.base import Adapter, AdapterResult, short_detail
from harness.adapters.hints import openssl_verify_error, reasons_from_text
from harness.model import Reason

if TYPE_CHECKING:
    from OpenSSL import SSL


def is_ip_literal(name: str) -> bool:
    """Return whether ``name`` is an IPv4 or IPv6 address literal."""
    try:
        ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return False
    return True


def rejected_reference_result(
    servername: str, exc: Exception, command: tuple[str, ...]
) -> AdapterResult:
    """Return the result of a client that rejects ``servername`` as invalid.

    A reference identity that the client cannot encode, such as
    ``ems.example.com..`` with its empty label, can match no presented
    identity. Rejecting the name therefore counts as rejecting the
    certificate for it. The client's own message stays in ``detail``.
    """
    return AdapterResult(
        "rejected",
        short_detail(f"invalid reference identity {servername!r}: {exc}"),
        (Reason.HOSTNAME_MISMATCH,),
        command=command,
    )


class PythonSslAdapter(Adapter):
    """Python's :mod:`ssl` with ``create_default_context(cafile=...)``."""

    name = "python-ssl"
    description = (
        "Python's ssl module: create_default_context(cafile=...), TLS 1.3 only, "
        "server_hostname=servername, so OpenSSL checks the host name or, for an "
        "IP literal, the SAN iPAddress during the handshake"
    )

    def availability(self) -> tuple[bool, str]:
        if not ssl.HAS_TLSv1_3:
            return False, f"{ssl.OPENSSL_VERSION} in this Python lacks TLS 1.3"
        return True, ssl.OPENSSL_VERSION

    def _check(
        self, host: str, port: int, servername: str, cafile: Path, timeout: float
    ) -> AdapterResult:
        command = ("python-ssl", f"{host}:{port}", f"server_hostname={servername}")
        if not is_ip_literal(servername):
            # wrap_socket encodes server_hostname with the idna codec and
            # raises before the handshake, but a failure there leaks the
            # socket (CPython 3.11), so encode it before connecting.
            try:
                servername.encode("idna")
            except UnicodeError as exc:
                return rejected_reference_result(servername, exc, command)
        try:
            context = ssl.create_default_context(cafile=str(cafile))
            context.minimum_version = ssl.TLSVersion.TLSv1_3
            # The handshake runs inside the block, so the TLS socket is closed
            # however it fails.
            with (
                socket.create_connection((host, port), timeout=timeout) as sock,
                context.wrap_socket(
                    sock, server_hostname=servername, do_handshake_on_connect=False
                ) as tls,
            ):
                tls.do_handshake()
        except ssl.SSLCertVerificationError as exc:
            detail = f"certificate verify failed: {exc.verify_message}"
            return AdapterResult(
                "rejected",
                short_detail(detail),
                reasons_from_text(exc.verify_message),
                command=command,
            )
        except TimeoutError as exc:
            return AdapterResult(
                "timeout", f"handshake timed out: {exc}", command=command
            )
        except (OSError, ValueError) as exc:
            return AdapterResult(
                "error", short_detail(f"{type(exc).__name__}: {exc}"), command=command
            )
        return AdapterResult("accepted", "certificate verified", command=command)


class PyOpenSslAdapter(Adapter):
    """pyOpenSSL with VERIFY_PEER, and service_identity for the host check."""

    name = "pyopenssl"
    description = (
        "pyOpenSSL (OpenSSL) with VERIFY_PEER for the path and SNI from "
        "set_tlsext_host_name; pyOpenSSL has no public host-check API, so the "
        "identity is checked after the handshake with service_identity's "
        "verify_hostname / verify_ip_address (RFC 6125, no CN fallback)"
    )

    def availability(self) -> tuple[bool, str]:
        try:
            import OpenSSL.SSL
            import service_identity.pyopenssl  # noqa: F401
        except ImportError as exc:
            return (
                False,
                f"{exc.name} not importable; install Debian packages python3-openssl "
                "and python3-service-identity (or pip install pyOpenSSL "
                "service-identity)",
            )
        return True, OpenSSL.SSL.OpenSSL_version(OpenSSL.SSL.OPENSSL_VERSION).decode()

    def _check(
        self, host: str, port: int, servername: str, cafile: Path, timeout: float
    ) -> AdapterResult:
        from OpenSSL import SSL

        command = ("pyopenssl", f"{host}:{port}", f"servername={servername}")
        verify_errors: list[tuple[int, int]] = []

        def record(
            _conn: object, _cert: object, errnum: int, depth: int, ok: int
        ) -> bool:
            if not ok:
                verify_errors.append((errnum, depth))
            return bool(ok)

        sni: bytes | None = None
        if not is_ip_literal(servername):
            # The idna codec rejects a name with an empty label, so the check
            # runs before any connection is made, as in Python's ssl.
            try:
                sni = servername.encode("idna")
            except UnicodeError as exc:
                return rejected_reference_result(servername, exc, command)

        context = SSL.Context(SSL.TLS_CLIENT_METHOD)
        context.set_min_proto_version(SSL.TLS1_3_VERSION)
        try:
            context.load_verify_locations(str(cafile))
        except SSL.Error as exc:
            return AdapterResult(
                "error",
                short_detail(f"cannot load CA file {cafile}: {exc}"),
                command=command,
            )
        context.set_verify(SSL.VERIFY_PEER, record)
        deadline = time.monotonic() + timeout
        try:
            sock = socket.create_connection((host, port), timeout=timeout)
        except TimeoutError as exc:
            return AdapterResult(
                "timeout", f"connect timed out: {exc}", command=command
            )
        except OSError as exc:
            return AdapterResult("error", short_detail(str(exc)), command=command)

        with sock:
            conn = SSL.Connection(context, sock)
            if sni is not None:
                conn.set_tlsext_host_name(sni)
            conn.set_connect_state()
            try:
                _handshake(conn, sock, deadline)
            except TimeoutError:
                return AdapterResult(
                    "timeout",
                    f"handshake timed out after {timeout:g} s",
                    command=command,
                )
            except SSL.Error as exc:
                if verify_errors:
                    errnum, depth = verify_errors[0]
                    text = openssl_verify_error(errnum)
                    return AdapterResult(
                        "rejected",
                        f"certificate verify failed at depth {depth}: {text}",
                        reasons_from_text(text),
                        command=command,
                    )
                return AdapterResult(
                    "error", short_detail(f"handshake failed: {exc}"), command=command
                )
            except OSError as exc:
                return AdapterResult("error", short_detail(str(exc)), command=command)
            return _check_identity(conn, servername, command)


def _handshake(conn: SSL.Connection, sock: socket.socket, deadline: float) -> None:
    """Drive ``conn``'s handshake over a socket that has a timeout set.

    With a timeout on the socket, pyOpenSSL raises WantReadError instead of
    blocking, so each retry waits on the socket until the deadline.
    """
    from OpenSSL import SSL

    while True:
        try:
            conn.do_handshake()
            return
        except (SSL.WantReadError, SSL.WantWriteError):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([sock], [], [], remaining)[0]:
                raise TimeoutError("handshake timed out") from None


def _check_identity(
    conn: SSL.Connection, servername: str, command: tuple[str, ...]
) -> AdapterResult:
    from service_identity import CertificateError, VerificationError
    from service_identity.pyopenssl import verify_hostname, verify_ip_address

    try:
        if is_ip_literal(servername):
            verify_ip_address(conn, servername.strip("[]"))
        else:
            verify_hostname(conn, servername)
    except (VerificationError, CertificateError) as exc:
        # Both errors mean that no presented identity matched.
        if isinstance(exc, VerificationError):
            failures = ", ".join(type(error).__name__ for error in exc.errors)
            message = f"no presented identity matches {servername!r} ({failures})"
        else:
            message = str(exc)
        return AdapterResult(
            "rejected",
            short_detail(f"service_identity: {message}"),
            (Reason.HOSTNAME_MISMATCH,),
            command=command,
        )
    except ValueError as exc:
        # service_identity raises ValueError for a reference identity that is
        # no valid DNS-ID or IP address, which no certificate can match.
        return rejected_reference_result(servername, exc, command)
    return AdapterResult("accepted", "certificate verified", command=command)
