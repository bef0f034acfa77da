"""RFC 6125 reference-identity matching on a parsed certificate.

The reference identity is the EMS address the client was configured with, a
DNS name or an IP literal. The presented identities come from the leaf: SAN
dNSName and iPAddress entries, and the subject CN as the ``cn_fallback``
setting allows. Certificates are hostile input, so every name that cannot be
read cleanly (a NUL byte, non-ASCII bytes, an extension that does not parse)
matches nothing instead of raising.
"""

from __future__ import annotations

import functools
import ipaddress
import logging

import idna
from cryptography import x509
from cryptography.x509.oid import NameOID

from harness.model import CnFallback

logger = logging.getLogger(__name__)

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class InvalidReference(ValueError):
    """A reference identity that cannot name any host."""


@functools.lru_cache(maxsize=1024)
def parse_ip_reference(reference: str) -> IpAddress | None:
    """Return the address of an IP-literal reference, or ``None`` for a name.

    IPv6 literals may be written with or without square brackets.
    """
    text = (
        reference[1:-1]
        if reference.startswith("[") and reference.endswith("]")
        else reference
    )
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def reference_labels(reference: str) -> list[str]:
    """Return the lower-case A-label labels of a DNS reference identity.

    One trailing dot (the absolute form of a name) is dropped. IDNA 2008
    with UTS 46 mapping turns U-labels into A-labels. ASCII names go through
    the same check, so a label longer than 63 octets, a name longer than 253
    octets, or a label outside the letter-digit-hyphen rule is rejected too.

    Raises:
        InvalidReference: a NUL byte, an empty label (which includes a second
            trailing dot) or a name IDNA 2008 rejects.
    """
    return list(_reference_labels(reference))


@functools.lru_cache(maxsize=1024)
def _reference_labels(reference: str) -> tuple[str, ...]:
    if "\x00" in reference:
        raise InvalidReference(f"reference identity {reference!r} contains a NUL byte")
    name = reference[:-1] if reference.endswith(".") else reference
    labels = name.split(".")
    if not name or any(label == "" for label in labels):
        raise InvalidReference(f"reference identity {reference!r} has an empty label")

    try:
        encoded = idna.encode(name, uts46=True)
    except UnicodeError as exc:
        # idna.IDNAError is a UnicodeError; a lone surrogate raises the base class.
        raise InvalidReference(
            f"reference identity {reference!r} is not a valid IDNA 2008 name: {exc}"
        ) from None
    # Case does not matter in DNS, and A-labels compare in lower case.
    return tuple(encoded.decode("ascii").lower().split("."))


def normalize_reference(reference: str) -> str:
    """Return the canonical text of a reference identity, for use as a key.

    IP literals become their compressed form; DNS names their lower-case
    A-label form without a trailing dot. A reference that can name no host
    is returned unchanged, so it still gets a key of its own.
    """
    address = parse_ip_reference(reference)
    if address is not None:
        return address.compressed
    try:
        return ".".join(reference_labels(reference))
    except InvalidReference:
        return reference


def _presented_matches(presented: str, reference: list[str]) -> bool:
    """Apply the RFC 6125 section 6.4 rules to one presented DNS identifier."""
    if "\x00" in presented or not presented.isascii():
        return False
    labels = presented.lower().split(".")
    if any(label == "" for label in labels):
        return False
    if "*" not in presented:
        return labels == reference

    # The wildcard must be the whole left-most label; partial-label wildcards
    # such as "f*.example.com" or "xn--*.example.org" never match.
    if labels[0] != "*" or any("*" in label for label in labels[1:]):
        return False
    # "*.com" would cover a whole top-level domain, so at least two labels
    # must follow the wildcard.
    if len(labels) < 3:
        return False
    # The wildcard stands for exactly one label, never for zero (the bare
    # parent domain) and never for several.
    return len(labels) == len(reference) and labels[1:] == reference[1:]


def _san(cert: x509.Certificate) -> x509.SubjectAlternativeName | None:
    try:
        return cert.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value
    except x509.ExtensionNotFound:
        return None
    except ValueError as exc:
        logger.info("ignoring subjectAltName that does not parse: %s", exc)
        return None


def san_dns_names(cert: x509.Certificate) -> list[str]:
    """Return the SAN dNSName entries of ``cert`` (empty if it has none)."""
    san = _san(cert)
    if san is None:
        return []
    try:
        return list(san.get_values_for_type(x509.DNSName))
    except (ValueError, UnicodeError) as exc:
        logger.info("ignoring SAN dNSName entries that do not decode: %s", exc)
        return []


def san_ip_addresses(cert: x509.Certificate) -> list[IpAddress]:
    """Return the SAN iPAddress entries of ``cert`` that are single addresses."""
    san = _san(cert)
    if san is None:
        return []
    try:
        values = san.get_values_for_type(x509.IPAddress)
    except ValueError as exc:
        logger.info("ignoring SAN iPAddress entries that do not decode: %s", exc)
        return []
    return [
        v
        for v in values
        if isinstance(v, ipaddress.IPv4Address | ipaddress.IPv6Address)
    ]


def common_names(cert: x509.Certificate) -> list[str]:
    """Return every subject CN attribute of ``cert`` that is a string."""
    try:
        attributes = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    except ValueError as exc:
        logger.info("ignoring subject that does not parse: %s", exc)
        return []
    return [a.value for a in attributes if isinstance(a.value, str)]


def matches_reference(
    cert: x509.Certificate, reference: str, cn_fallback: CnFallback
) -> bool:
    """Return whether ``cert`` presents the reference identity ``reference``.

    Args:
        cert: The leaf certificate.
        reference: The configured EMS address, a DNS name or IP literal.
        cn_fallback: When subject CN attributes count as presented names:
            ``when-no-san`` only if the leaf has no SAN dNSName entry,
            ``never`` or ``always``.
    """
    address = parse_ip_reference(reference)
    if address is not None:
        # An IP reference matches only a SAN iPAddress; an IP in the CN never does.
        return address in san_ip_addresses(cert)

    try:
        labels = reference_labels(reference)
    except InvalidReference as exc:
        logger.info("no certificate can match: %s", exc)
        return False

    dns_names = san_dns_names(cert)
    presented = list(dns_names)
    mode = CnFallback(cn_fallback)
    if mode is CnFallback.ALWAYS or (mode is CnFallback.WHEN_NO_SAN and not dns_names):
        presented += common_names(cert)
    return any(_presented_matches(name, labels) for name in presented)
