"""TLS 1.3 server contexts that send a certificate chain exactly as configured.

pyOpenSSL is used, not :mod:`ssl`, because :mod:`ssl` has no switch for
OpenSSL's automatic chain building. Here the leaf goes in with
``use_certificate`` and every other certificate with ``add_extra_chain_cert``
in the given order, and automatic chain building is off, so a broken chain
stays broken on the wire.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from OpenSSL import SSL
from OpenSSL._util import lib as openssl_lib

# OpenSSL's SSL_MODE_NO_AUTO_CHAIN: never complete the sent chain from the
# certificate store. pyOpenSSL does not export the constant.
_SSL_MODE_NO_AUTO_CHAIN = 0x00000008

_TLS_KEY_TYPES = (
    rsa.RSAPrivateKey,
    ec.EllipticCurvePrivateKey,
    ed25519.Ed25519PrivateKey,
    ed448.Ed448PrivateKey,
)


def build_context(chain_pem: bytes, key_pem: bytes, *, session_tickets: bool) -> Any:
    """Build a TLS 1.3-only pyOpenSSL server context that sends ``chain_pem`` as is.

    Args:
        chain_pem: Leaf first, then every certificate to send, in order.
        key_pem: Private key of the leaf, unencrypted PEM.
        session_tickets: Whether clients can resume sessions with tickets.

    Raises:
        ValueError: no certificate in ``chain_pem``, or the key does not
            belong to the leaf.
    """
    certs = x509.load_pem_x509_certificates(chain_pem)
    key = serialization.load_pem_private_key(key_pem, password=None)
    if not isinstance(key, _TLS_KEY_TYPES):
        raise ValueError(f"unsupported key type {type(key).__name__} for a TLS server")

    context = SSL.Context(SSL.TLS_SERVER_METHOD)
    context.set_min_proto_version(SSL.TLS1_3_VERSION)
    context.set_max_proto_version(SSL.TLS1_3_VERSION)
    context.set_mode(_SSL_MODE_NO_AUTO_CHAIN)
    context.use_certificate(certs[0])
    for cert in certs[1:]:
        context.add_extra_chain_cert(cert)
    try:
        context.use_privatekey(key)
        context.check_privatekey()
    except SSL.Error:
        raise ValueError("the private key does not belong to the leaf") from None

    # In TLS 1.3, OpenSSL 3 answers OP_NO_TICKET with stateful tickets backed
    # by the session cache, so the cache goes off too and nothing resumes.
    if not session_tickets:
        context.set_options(SSL.OP_NO_TICKET)
        context.set_session_cache_mode(SSL.SESS_CACHE_OFF)
    return context


def check_bind_address(
    host: str, allow_non_loopback: bool
) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(
            f"invalid listen address {host!r}: expected an IP address such as "
            "127.0.0.1 or ::1"
        ) from None
    if not address.is_loopback and not allow_non_loopback:
        raise ValueError(
            f"listen address {host} is not a loopback address; "
            "pass allow_non_loopback=True to listen on it"
        )
    return address


def describe_error(exc: BaseException) -> str:
    """Return a short text for an OpenSSL or socket exception."""
    if isinstance(exc, SSL.SysCallError):
        code, text = (*exc.args, None, None)[:2]
        return f"{text} ({code})" if code not in (None, -1) else str(text or "EOF")
    if isinstance(exc, SSL.Error) and exc.args and isinstance(exc.args[0], list):
        reasons = [str(item[2]) for item in exc.args[0] if len(item) >= 3]
        return "; ".join(reasons) or repr(exc)
    return str(exc) or repr(exc)


def session_reused(tls: SSL.Connection) -> bool:
    """Return whether the client resumed an earlier TLS session.

    pyOpenSSL 26 has no public method for this, so this calls OpenSSL's
    ``SSL_session_reused`` through pyOpenSSL's private binding.
    """
    return bool(openssl_lib.SSL_session_reused(tls._ssl))
