"""Known, documented differences of real clients from standards validation.

Each entry records that an adapter, for some catalogue kinds and ``cn_fallback``
modes, gives a status other than the standards verdict (accepted when the
oracle finds no reason, rejected otherwise), and why. The entries were found
by running every adapter against every kind over real TLS 1.3 with these
clients: OpenSSL 3.0.19 (``openssl`` and Python's ``ssl``), pyOpenSSL with
its own OpenSSL 4.0 plus service_identity 26.1, curl 7.88.1 (OpenSSL
backend), GnuTLS 3.7.9 and Node.js 20.20. The catalogue test in
``tests/test_adapters.py`` runs them again: a disagreement missing from this
table fails, and so does an entry that no longer matches what the client did.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.adapters.base import STATUSES, Status
from harness.model import CnFallback
from harness.pki.kinds import CATALOGUE

ALL_MODES = frozenset(CnFallback)
NEVER = frozenset({CnFallback.NEVER})
WITH_CN = frozenset({CnFallback.WHEN_NO_SAN, CnFallback.ALWAYS})
ALWAYS = frozenset({CnFallback.ALWAYS})

# Adapter names the table may use. They are listed here instead of imported
# because the registry in harness.adapters imports this module.
ADAPTER_NAMES = frozenset(
    {"python-ssl", "pyopenssl", "openssl", "curl", "gnutls", "node", "command"}
)

# Adapters with a built-in host-name check, and the library or program that
# performs it.
HOSTNAME_CHECKERS: tuple[tuple[str, str], ...] = (
    ("python-ssl", "OpenSSL's X509_check_host"),
    ("pyopenssl", "service_identity"),
    ("openssl", "OpenSSL's X509_check_host"),
    ("curl", "curl"),
    ("gnutls", "GnuTLS"),
    ("node", "Node's tls.checkServerIdentity"),
)

# Kinds that put the EMS FQDN only in the CN while the SAN has no dNSName.
CN_FALLBACK_KINDS = ("cn-only-no-san", "san-email-only-cn-host")


@dataclass(frozen=True)
class Deviation:
    """A documented difference of one client from standards validation.

    Attributes:
        adapter: Adapter name.
        kinds: Catalogue kind names the entry covers.
        status: The status the client gives for those kinds.
        reason: Why the client differs, naming the behaviour and the client.
        modes: The ``cn_fallback`` modes under which the status differs from
            the standards verdict.
    """

    adapter: str
    kinds: tuple[str, ...]
    status: Status
    reason: str
    modes: frozenset[CnFallback] = field(default=ALL_MODES)

    def __post_init__(self) -> None:
        if self.adapter not in ADAPTER_NAMES:
            raise ValueError(f"deviation names unknown adapter {self.adapter!r}")
        for kind in self.kinds:
            if kind not in CATALOGUE:
                raise ValueError(
                    f"deviation for {self.adapter} names unknown kind {kind!r}"
                )
        if self.status not in STATUSES:
            raise ValueError(f"invalid deviation status {self.status!r}")
        if not self.modes:
            raise ValueError(f"deviation for {self.adapter} {self.kinds} has no modes")

    def covers(self, adapter: str, kind_name: str, cn_fallback: CnFallback) -> bool:
        """Return whether the entry applies to this adapter, kind and mode."""
        return (
            adapter == self.adapter
            and kind_name in self.kinds
            and CnFallback(cn_fallback) in self.modes
        )


_OPENSSL_CN = (
    "OpenSSL's X509_check_host falls back to the subject CN when the SAN has no "
    "dNSName entry, as RFC 6125 permits, so a CN-only name is accepted"
)
_RFC6125_CN = (
    "{client} ignores the subject CN whenever the SAN has a dNSName entry "
    "(RFC 6125), unlike the lenient cn_fallback=always"
)

DEVIATIONS: tuple[Deviation, ...] = (
    # Identity through the subject CN.
    *(
        Deviation(name, CN_FALLBACK_KINDS, "accepted", reason, NEVER)
        for name, reason in (
            ("python-ssl", _OPENSSL_CN),
            ("openssl", _OPENSSL_CN),
            (
                "curl",
                "curl 7.88 (OpenSSL backend) checks the subject CN when the SAN has "
                "no dNSName or iPAddress entry",
            ),
            (
                "gnutls",
                "GnuTLS checks the subject CN when the SAN has no dNSName or "
                "iPAddress entry",
            ),
            (
                "node",
                "Node's tls.checkServerIdentity checks the subject CN when the SAN "
                "has no DNS entry",
            ),
        )
    ),
    Deviation(
        "pyopenssl",
        (*CN_FALLBACK_KINDS, "san-ip-only-cn-host"),
        "rejected",
        "service_identity matches only SAN entries and never falls back to the "
        "subject CN, as RFC 9525 requires",
        WITH_CN,
    ),
    Deviation(
        "python-ssl",
        ("san-ip-only-cn-host",),
        "accepted",
        _OPENSSL_CN + "; an iPAddress SAN entry does not stop the fallback",
        NEVER,
    ),
    Deviation(
        "openssl",
        ("san-ip-only-cn-host",),
        "accepted",
        _OPENSSL_CN + "; an iPAddress SAN entry does not stop the fallback",
        NEVER,
    ),
    Deviation(
        "node",
        ("san-ip-only-cn-host",),
        "accepted",
        "Node's tls.checkServerIdentity checks the subject CN when the SAN has "
        "no DNS entry, and an IP entry does not stop that for a DNS name",
        NEVER,
    ),
    Deviation(
        "curl",
        ("san-ip-only-cn-host",),
        "rejected",
        "curl 7.88 (OpenSSL backend) skips the subject CN once the SAN has an "
        "iPAddress entry, even for a DNS reference identity",
        WITH_CN,
    ),
    Deviation(
        "gnutls",
        ("san-ip-only-cn-host",),
        "rejected",
        "GnuTLS skips the subject CN once the SAN has an iPAddress entry, even "
        "for a DNS reference identity",
        WITH_CN,
    ),
    *(
        Deviation(
            name,
            ("cn-match-san-other",),
            "rejected",
            _RFC6125_CN.format(client=client),
            ALWAYS,
        )
        for name, client in HOSTNAME_CHECKERS
    ),
    Deviation(
        "curl",
        ("ip-in-cn-only",),
        "accepted",
        "curl 7.88 (OpenSSL backend) compares an IP-literal reference identity "
        "with the subject CN text when the certificate has no SAN",
    ),
    # Wildcards.
    Deviation(
        "openssl",
        ("wildcard-partial-label",),
        "accepted",
        "s_client's -verify_hostname leaves X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS "
        "unset, so OpenSSL lets e*.example.com match ems.example.com (Python's "
        "ssl sets the flag)",
    ),
    Deviation(
        "node",
        ("wildcard-partial-label",),
        "accepted",
        "Node's tls.checkServerIdentity accepts a wildcard with a prefix or "
        "suffix in the left-most label, such as e*.example.com",
    ),
    # Internationalized names and trailing dots in the reference identity.
    Deviation(
        "openssl",
        ("idn-fqdn",),
        "rejected",
        "openssl s_client compares the reference identity byte for byte and does "
        "not convert U-labels to A-labels",
    ),
    Deviation(
        "node",
        ("idn-fqdn",),
        "rejected",
        "Node's tls.checkServerIdentity compares the U-label form with the "
        "A-label in the SAN; callers must convert with url.domainToASCII first",
    ),
    Deviation(
        "python-ssl",
        ("trailing-dot-reference",),
        "rejected",
        "Python's ssl passes server_hostname with its trailing dot to OpenSSL's "
        "X509_check_host, which does not strip it",
    ),
    Deviation(
        "openssl",
        ("trailing-dot-reference",),
        "rejected",
        "OpenSSL's X509_check_host does not strip a trailing dot from the "
        "reference identity",
    ),
    Deviation(
        "pyopenssl",
        ("trailing-dot-reference",),
        "rejected",
        "service_identity keeps the trailing dot of the reference identity, so "
        "ems.example.com. does not match ems.example.com",
    ),
    Deviation(
        "node",
        ("double-trailing-dot-reference",),
        "accepted",
        "Node's tls.checkServerIdentity strips a trailing dot from the reference "
        "identity twice (once on entry, once when splitting it into labels), so "
        "ems.example.com.. matches ems.example.com",
    ),
)


def _check_unique(entries: tuple[Deviation, ...]) -> None:
    seen: dict[tuple[str, str, CnFallback], Deviation] = {}
    for entry in entries:
        for kind in entry.kinds:
            for mode in entry.modes:
                key = (entry.adapter, kind, mode)
                if key in seen:
                    raise ValueError(
                        f"two deviations cover {entry.adapter} / {kind} / {mode}: "
                        f"{seen[key].reason!r} and {entry.reason!r}"
                    )
                seen[key] = entry


_check_unique(DEVIATIONS)


def lookup_deviation(
    adapter: str, kind_name: str, cn_fallback: CnFallback | str
) -> Deviation | None:
    """Return the deviation of ``adapter`` on ``kind_name`` under ``cn_fallback``.

    Returns:
        The entry, or ``None`` when the adapter is expected to agree with the
        standards verdict.
    """
    mode = CnFallback(cn_fallback)
    for entry in DEVIATIONS:
        if entry.covers(adapter, kind_name, mode):
            return entry
    return None
