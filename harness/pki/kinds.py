"""The catalogue of certificate kinds.

A kind is a frozen description of one leaf certificate, the chain a server
sends with it and the reference identity a client connects to. Its declared
properties are all the oracle sees; the lab turns the same description into
real bytes, and the lab's tests check that the bytes agree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import timedelta

from harness.pki.roles import DAY, ROLES

EMS_FQDN = "ems.example.com"
EMS_HOSTNAME = "ems01"
EMS_IPV4 = "127.0.0.1"
EMS_IPV6 = "::1"
# The vendor serial-number subject: "FCTEMS" followed by ten of [0-9A-Z].
VENDOR_SERIAL = "FCTEMS8822001234"

# What trustme puts in every leaf it issues.
TRUSTME_EKU: tuple[str, ...] = ("serverAuth", "clientAuth", "codeSigning")
KNOWN_EKU = frozenset({"serverAuth", "clientAuth", "codeSigning", "emailProtection"})

_KIND_NAME_RE = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")


@dataclass(frozen=True)
class LeafSpec:
    """Declared properties of a leaf certificate and the chain sent with it.

    Attributes:
        common_names: Subject CN attributes, in order (may be empty).
        empty_subject: The subject is an empty name (no attribute at all).
        dns_names: SAN dNSName entries, as the bytes will hold them.
        ip_addresses: SAN iPAddress entries.
        emails: SAN rfc822Name entries.
        san_extension: Whether the leaf has a subjectAltName extension.
        issuer: Issuing CA role, or ``"self"`` for a self-signed leaf.
        chain: CA roles the server sends after the leaf, in this order.
        window: ``(not_before, not_after)`` relative to the lab's build time.
        eku: extendedKeyUsage purposes, or ``None`` for no such extension.
    """

    common_names: tuple[str, ...] = ()
    empty_subject: bool = False
    dns_names: tuple[str, ...] = ()
    ip_addresses: tuple[str, ...] = ()
    emails: tuple[str, ...] = ()
    san_extension: bool = True
    issuer: str = "public-intermediate"
    chain: tuple[str, ...] = ("public-intermediate",)
    window: tuple[timedelta, timedelta] = (-1 * DAY, 365 * DAY)
    eku: tuple[str, ...] | None = TRUSTME_EKU

    def __post_init__(self) -> None:
        if self.issuer != "self" and self.issuer not in ROLES:
            raise ValueError(f"unknown issuer role {self.issuer!r}")
        for role in self.chain:
            if role not in ROLES:
                raise ValueError(f"unknown chain role {role!r}")
        if self.empty_subject and self.common_names:
            raise ValueError("empty_subject=True conflicts with common_names")
        has_names = self.dns_names or self.ip_addresses or self.emails
        if self.san_extension and not has_names:
            raise ValueError("san_extension=True needs at least one SAN entry")
        if not self.san_extension and has_names:
            raise ValueError("SAN entries given but san_extension=False")
        if self.window[0] >= self.window[1]:
            raise ValueError(f"window starts after it ends: {self.window}")
        if self.eku is not None and not set(self.eku) <= KNOWN_EKU:
            raise ValueError(f"unknown purposes in eku {self.eku}")


@dataclass(frozen=True)
class CertKind:
    """One entry of the catalogue: a leaf, its chain and a reference identity."""

    name: str
    description: str
    leaf: LeafSpec
    reference_identity: str = EMS_FQDN
    tags: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if not _KIND_NAME_RE.match(self.name):
            raise ValueError(
                f"invalid kind name {self.name!r}: use lower-case words and hyphens"
            )


def _kinds() -> tuple[CertKind, ...]:
    fqdn = (EMS_FQDN,)
    return (
        CertKind(
            "correct-fqdn",
            "CN and SAN name the EMS FQDN, issued by the public intermediate",
            LeafSpec(common_names=fqdn, dns_names=fqdn),
            tags=("valid",),
        ),
        CertKind(
            "wildcard-match",
            "SAN *.example.com presented for ems.example.com",
            LeafSpec(dns_names=("*.example.com",)),
            tags=("valid", "wildcard"),
        ),
        CertKind(
            "wildcard-too-deep",
            "SAN *.example.com presented for a name two labels deeper",
            LeafSpec(dns_names=("*.example.com",)),
            reference_identity="ems.eu.example.com",
            tags=("wildcard",),
        ),
        CertKind(
            "wildcard-bare-domain",
            "SAN *.example.com presented for the bare domain example.com",
            LeafSpec(dns_names=("*.example.com",)),
            reference_identity="example.com",
            tags=("wildcard",),
        ),
        CertKind(
            "wildcard-partial-label",
            "partial-label wildcard SAN e*.example.com for ems.example.com",
            LeafSpec(dns_names=("e*.example.com",)),
            tags=("wildcard",),
        ),
        CertKind(
            "wildcard-suffix-no-boundary",
            "SAN *.ample.com presented for example.com (suffix without a dot)",
            LeafSpec(dns_names=("*.ample.com",)),
            reference_identity="example.com",
            tags=("wildcard", "regression"),
        ),
        CertKind(
            "wildcard-tld",
            "SAN *.com presented for example.com",
            LeafSpec(dns_names=("*.com",)),
            reference_identity="example.com",
            tags=("wildcard", "regression"),
        ),
        CertKind(
            "wildcard-partial-alabel",
            "SAN x*.example.org presented for an IDN name under example.org",
            LeafSpec(dns_names=("x*.example.org",)),
            reference_identity="bücher.example.org",
            tags=("wildcard", "idn", "regression"),
        ),
        CertKind(
            "san-last-of-many",
            "the EMS FQDN is the last of twenty SAN entries",
            LeafSpec(dns_names=tuple(f"host{i}.example.net" for i in range(19)) + fqdn),
            tags=("valid", "regression"),
        ),
        CertKind(
            "san-only-empty-subject",
            "empty subject, name only in a critical SAN",
            LeafSpec(empty_subject=True, dns_names=fqdn),
            tags=("valid",),
        ),
        CertKind(
            "cn-only-no-san",
            "EMS FQDN in the CN, no subjectAltName extension at all",
            LeafSpec(common_names=fqdn, san_extension=False),
            tags=("cn-fallback",),
        ),
        CertKind(
            "cn-match-san-other",
            "CN names the EMS, SAN names only another host",
            LeafSpec(common_names=fqdn, dns_names=("other.example.com",)),
            tags=("cn-fallback", "regression"),
        ),
        CertKind(
            "san-ip-only-cn-host",
            "SAN holds only an IP address, the EMS FQDN is in the CN",
            LeafSpec(common_names=fqdn, ip_addresses=(EMS_IPV4,)),
            tags=("cn-fallback", "regression"),
        ),
        CertKind(
            "san-email-only-cn-host",
            "SAN holds only an email address, the EMS FQDN is in the CN",
            LeafSpec(common_names=fqdn, emails=("admin@example.com",)),
            tags=("cn-fallback", "regression"),
        ),
        CertKind(
            "ip-san",
            "SAN iPAddress 127.0.0.1 for an EMS configured by IP",
            LeafSpec(ip_addresses=(EMS_IPV4,)),
            reference_identity=EMS_IPV4,
            tags=("valid", "ip"),
        ),
        CertKind(
            "ip-v6-san",
            "SAN iPAddress ::1 for an EMS configured by IPv6 literal",
            LeafSpec(ip_addresses=(EMS_IPV6,)),
            reference_identity=EMS_IPV6,
            tags=("valid", "ip"),
        ),
        CertKind(
            "ip-in-cn-only",
            "IP address written only in the CN, no SAN",
            LeafSpec(common_names=(EMS_IPV4,), san_extension=False),
            reference_identity=EMS_IPV4,
            tags=("ip", "cn-fallback"),
        ),
        CertKind(
            "expired-leaf",
            "leaf that expired a day ago",
            LeafSpec(common_names=fqdn, dns_names=fqdn, window=(-60 * DAY, -1 * DAY)),
            tags=("time",),
        ),
        CertKind(
            "not-yet-valid-leaf",
            "leaf valid only from thirty days from now",
            LeafSpec(common_names=fqdn, dns_names=fqdn, window=(30 * DAY, 400 * DAY)),
            tags=("time",),
        ),
        CertKind(
            "expired-intermediate",
            "valid leaf under an intermediate that expired a day ago",
            LeafSpec(
                common_names=fqdn,
                dns_names=fqdn,
                issuer="expired-intermediate",
                chain=("expired-intermediate",),
                window=(-365 * DAY, 30 * DAY),
            ),
            tags=("time",),
        ),
        CertKind(
            "self-signed-leaf",
            "self-signed leaf naming the EMS FQDN",
            LeafSpec(common_names=fqdn, dns_names=fqdn, issuer="self", chain=()),
            tags=("trust",),
        ),
        CertKind(
            "untrusted-private-ca",
            "leaf from a private CA that no store holds, root sent too",
            LeafSpec(
                common_names=fqdn,
                dns_names=fqdn,
                issuer="private-root",
                chain=("private-root",),
            ),
            tags=("trust",),
        ),
        CertKind(
            "missing-intermediate",
            "chain sent without its intermediate",
            LeafSpec(common_names=fqdn, dns_names=fqdn, chain=()),
            tags=("trust", "regression"),
        ),
        CertKind(
            "intermediates-out-of-order",
            "two intermediates sent root-side first",
            LeafSpec(
                common_names=fqdn,
                dns_names=fqdn,
                issuer="public-intermediate-2",
                chain=("public-intermediate", "public-intermediate-2"),
            ),
            tags=("valid", "trust", "regression"),
        ),
        CertKind(
            "extra-untrusted-root-sent",
            "valid chain followed by an extra untrusted root",
            LeafSpec(
                common_names=fqdn,
                dns_names=fqdn,
                chain=("public-intermediate", "private-root"),
            ),
            tags=("valid", "trust", "regression"),
        ),
        CertKind(
            "wrong-host",
            "valid chain for another host name",
            LeafSpec(
                common_names=("portal.example.net",), dns_names=("portal.example.net",)
            ),
            tags=("identity",),
        ),
        CertKind(
            "vendor-default",
            "vendor certificate: CN is the EMS serial number, vendor CA",
            LeafSpec(
                common_names=(VENDOR_SERIAL,),
                san_extension=False,
                issuer="vendor-root",
                chain=("vendor-root",),
                window=(-30 * DAY, 3650 * DAY),
            ),
            tags=("vendor",),
        ),
        CertKind(
            "vendor-forgery-self-signed",
            "self-signed forgery that copies the serial-number subject",
            LeafSpec(
                common_names=(VENDOR_SERIAL,),
                san_extension=False,
                issuer="self",
                chain=(),
            ),
            tags=("vendor", "trust"),
        ),
        CertKind(
            "ems-builtin-default",
            "EMS built-in default: self-signed, CN is the EMS hostname",
            LeafSpec(
                common_names=(EMS_HOSTNAME,),
                san_extension=False,
                issuer="self",
                chain=(),
                window=(-1 * DAY, 3650 * DAY),
            ),
            tags=("vendor", "trust"),
        ),
        CertKind(
            "non-ca-issuer",
            "leaf signed by an end-entity certificate (CA:FALSE)",
            LeafSpec(
                common_names=fqdn,
                dns_names=fqdn,
                issuer="non-ca-issuer",
                chain=("non-ca-issuer", "public-intermediate"),
            ),
            tags=("trust",),
        ),
        CertKind(
            "eku-client-auth-only",
            "extendedKeyUsage lists clientAuth but not serverAuth",
            LeafSpec(common_names=fqdn, dns_names=fqdn, eku=("clientAuth",)),
            tags=("purpose",),
        ),
        CertKind(
            "no-eku",
            "no extendedKeyUsage extension, which permits any purpose",
            LeafSpec(common_names=fqdn, dns_names=fqdn, eku=None),
            tags=("valid", "purpose"),
        ),
        CertKind(
            "cross-signed-expired-root",
            "chain ends at a cross-certificate from an expired root; the "
            "store also holds the valid self-signed root",
            LeafSpec(
                common_names=fqdn,
                dns_names=fqdn,
                issuer="cross-intermediate",
                chain=("cross-intermediate", "cross-root-by-legacy"),
                eku=("serverAuth",),
            ),
            tags=("valid", "trust", "regression"),
        ),
        CertKind(
            "idn-fqdn",
            "internationalized FQDN: A-label in the SAN, U-label configured",
            LeafSpec(dns_names=("ems.xn--bcher-kva.example",)),
            reference_identity="ems.bücher.example",
            tags=("valid", "idn"),
        ),
        CertKind(
            "uppercase-san",
            "SAN written in upper case",
            LeafSpec(dns_names=("EMS.EXAMPLE.COM",)),
            tags=("valid", "regression"),
        ),
        CertKind(
            "uppercase-reference",
            "reference identity written in mixed case",
            LeafSpec(dns_names=fqdn),
            reference_identity="EMS.Example.COM",
            tags=("valid", "regression"),
        ),
        CertKind(
            "trailing-dot-reference",
            "reference identity with one trailing dot",
            LeafSpec(dns_names=fqdn),
            reference_identity="ems.example.com.",
            tags=("valid", "regression"),
        ),
        CertKind(
            "double-trailing-dot-reference",
            "reference identity with two trailing dots",
            LeafSpec(dns_names=fqdn),
            reference_identity="ems.example.com..",
            tags=("identity", "regression"),
        ),
        CertKind(
            "nul-in-cn",
            "CN with a NUL byte that would match if cut there, no SAN",
            LeafSpec(
                common_names=(EMS_FQDN + "\x00.evil.example",), san_extension=False
            ),
            tags=("identity", "regression"),
        ),
        CertKind(
            "nul-in-san",
            "SAN dNSName with a NUL byte that would match if cut there",
            LeafSpec(dns_names=(EMS_FQDN + "\x00.evil.example",)),
            tags=("identity", "regression"),
        ),
        CertKind(
            "many-faults",
            "private CA, expired, another host and no serverAuth at once",
            LeafSpec(
                common_names=("portal.example.net",),
                dns_names=("portal.example.net",),
                issuer="private-root",
                chain=("private-root",),
                window=(-60 * DAY, -2 * DAY),
                eku=("clientAuth",),
            ),
            tags=("multi",),
        ),
    )


CATALOGUE: dict[str, CertKind] = {}
for _kind in _kinds():
    if _kind.name in CATALOGUE:
        raise ValueError(f"duplicate kind name {_kind.name!r}")
    CATALOGUE[_kind.name] = _kind


def kind_names() -> list[str]:
    """Return the catalogue's kind names in catalogue order."""
    return list(CATALOGUE)


def get_kind(name: str) -> CertKind:
    """Return the kind called ``name``.

    Raises:
        KeyError: no such kind; the message lists the known names.
    """
    try:
        return CATALOGUE[name]
    except KeyError:
        raise KeyError(
            f"unknown certificate kind {name!r}; known kinds: {', '.join(CATALOGUE)}"
        ) from None
