"""Standards validation of a declared certificate: the reasons it is invalid.

Written from the rules, independently of the reference client's matcher and
path validation, so that agreement between the two is evidence:

* identity follows RFC 6125 with the project's ``cn_fallback`` setting;
* time covers the leaf and every certificate on the chosen path, trust
  anchor included;
* trust searches every path through the sent chain to a store root, and one
  fully valid path makes the certificate valid;
* purpose requires serverAuth whenever extendedKeyUsage is present.
"""

from __future__ import annotations

import datetime as dt
import functools
import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass

import idna

from harness.model import CnFallback, Reason, sorted_reasons
from harness.pki.kinds import CertKind, LeafSpec
from harness.pki.roles import ROLES, CaRole


# Parsed addresses are immutable, so the parsers below are memoized: the lab's
# manifest looks up the same few literals for every kind and mode.
@functools.lru_cache(maxsize=4096)
def _ip_literal(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None


@functools.lru_cache(maxsize=4096)
def _reference_labels(reference: str) -> tuple[str, ...] | None:
    """Return the A-label form of a DNS reference identity, split into labels.

    ``None`` means the reference can match nothing (NUL byte, empty label,
    more than one trailing dot, invalid IDNA).
    """
    if "\x00" in reference:
        return None
    if reference.endswith("."):
        reference = reference[:-1]
    if not reference or any(label == "" for label in reference.split(".")):
        return None
    try:
        encoded = idna.encode(reference, uts46=True).decode("ascii")
    except idna.IDNAError:
        return None
    return tuple(encoded.lower().split("."))


@functools.lru_cache(maxsize=4096)
def _ip_address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


def _presented_matches(presented: str, reference: tuple[str, ...]) -> bool:
    if "\x00" in presented or not presented.isascii():
        return False
    labels = tuple(presented.lower().split("."))
    if any(label == "" for label in labels):
        return False
    if "*" not in presented:
        return labels == reference
    # A wildcard is the whole left-most label, covers exactly one label, and
    # needs at least two labels to its right, so "*.com" covers nothing.
    if labels[0] != "*" or any("*" in label for label in labels[1:]):
        return False
    if len(labels) < 3 or len(labels) != len(reference):
        return False
    return labels[1:] == reference[1:]


def identity_matches(leaf: LeafSpec, reference: str, mode: CnFallback) -> bool:
    """Return whether ``leaf`` presents the reference identity ``reference``."""
    address = _ip_literal(reference)
    if address is not None:
        return any(_ip_address(a) == address for a in leaf.ip_addresses)

    labels = _reference_labels(reference)
    if labels is None:
        return False
    presented = list(leaf.dns_names)
    use_cn = mode is CnFallback.ALWAYS or (
        mode is CnFallback.WHEN_NO_SAN and not leaf.dns_names
    )
    if use_cn:
        presented += list(leaf.common_names)
    return any(_presented_matches(name, labels) for name in presented)


@dataclass(frozen=True)
class TrustPath:
    """One candidate path from the leaf's issuer towards a root.

    Attributes:
        roles: The CA roles on the path, leaf side first.
        anchored: Whether the last role is in the trust store.
    """

    roles: tuple[CaRole, ...]
    anchored: bool


def _paths(
    identity: str, available: list[CaRole], seen: tuple[str, ...]
) -> Iterator[TrustPath]:
    # Trust anchors first, as OpenSSL does by default (X509_V_FLAG_TRUSTED_FIRST).
    candidates = sorted(
        (role for role in available if role.identity == identity),
        key=lambda role: not role.in_store,
    )
    for role in candidates:
        if role.name in seen:
            continue
        if role.in_store:
            yield TrustPath((role,), anchored=True)
        elif role.issuer is None:
            yield TrustPath((role,), anchored=False)
        else:
            parent = ROLES[role.issuer].identity
            found = False
            for rest in _paths(parent, available, (*seen, role.name)):
                found = True
                yield TrustPath((role, *rest.roles), rest.anchored)
            if not found:
                yield TrustPath((role,), anchored=False)


@functools.lru_cache(maxsize=1024)
def _candidate_paths(issuer: str, chain: tuple[str, ...]) -> tuple[TrustPath, ...]:
    """Return every path from role ``issuer`` through the sent ``chain``.

    The paths depend only on the declared roles, which never change, so they
    are computed once per issuer and chain.
    """
    available = [ROLES[name] for name in chain]
    available += [role for role in ROLES.values() if role.in_store]
    return tuple(_paths(ROLES[issuer].identity, available, ()))


def _window(role: CaRole, built_at: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    if role.window is None:
        # trustme's fixed window for CAs it creates.
        return (
            dt.datetime(2000, 1, 1, tzinfo=dt.UTC),
            dt.datetime(3000, 1, 1, tzinfo=dt.UTC),
        )
    return built_at + role.window[0], built_at + role.window[1]


def _time_reasons(
    windows: list[tuple[dt.datetime, dt.datetime]], now: dt.datetime
) -> set[Reason]:
    reasons: set[Reason] = set()
    for not_before, not_after in windows:
        if now < not_before:
            reasons.add(Reason.NOT_YET_VALID)
        if now > not_after:
            reasons.add(Reason.EXPIRED)
    return reasons


def chain_reasons(
    leaf: LeafSpec, built_at: dt.datetime, now: dt.datetime
) -> frozenset[Reason]:
    """Return the time and trust reasons for ``leaf`` and its sent chain."""
    leaf_window = (built_at + leaf.window[0], built_at + leaf.window[1])
    if leaf.issuer == "self":
        return frozenset({Reason.SELF_SIGNED} | _time_reasons([leaf_window], now))

    paths = _candidate_paths(leaf.issuer, leaf.chain)

    best: set[Reason] | None = None
    for path in paths:
        if not path.anchored:
            continue
        problems = _time_reasons(
            [leaf_window, *(_window(role, built_at) for role in path.roles)], now
        )
        if any(not role.is_ca for role in path.roles):
            problems.add(Reason.INVALID_CA)
        if best is None or len(problems) < len(best):
            best = problems
    if best is not None:
        return frozenset(best)

    # No path reaches the store. The first candidate path decides which trust
    # reason applies: it ends either at an untrusted self-signed root or at a
    # certificate whose issuer was not sent.
    partial = paths[0] if paths else TrustPath((), anchored=False)
    problems = _time_reasons(
        [leaf_window, *(_window(role, built_at) for role in partial.roles)], now
    )
    top = partial.roles[-1] if partial.roles else None
    if top is not None and top.issuer is None:
        problems.add(Reason.UNTRUSTED_ISSUER)
    else:
        problems.add(Reason.INCOMPLETE_CHAIN)
    if any(not role.is_ca for role in partial.roles):
        problems.add(Reason.INVALID_CA)
    return frozenset(problems)


def purpose_reasons(leaf: LeafSpec) -> frozenset[Reason]:
    """Return ``wrong-purpose`` when extendedKeyUsage lacks serverAuth."""
    if leaf.eku is not None and "serverAuth" not in leaf.eku:
        return frozenset({Reason.WRONG_PURPOSE})
    return frozenset()


def expected_reasons(
    leaf: LeafSpec,
    reference: str,
    mode: CnFallback,
    built_at: dt.datetime,
    now: dt.datetime | None = None,
) -> frozenset[Reason]:
    """Return every reason a standards-validating client must report.

    Args:
        leaf: The declared leaf and chain.
        reference: The reference identity the client connects to.
        mode: The ``cn_fallback`` setting.
        built_at: The lab build time the declared windows are relative to.
        now: Validation time; ``built_at`` if omitted.

    Returns:
        An empty set for a valid certificate.
    """
    now = built_at if now is None else now
    reasons = set(chain_reasons(leaf, built_at, now)) | set(purpose_reasons(leaf))
    if not identity_matches(leaf, reference, CnFallback(mode)):
        reasons.add(Reason.HOSTNAME_MISMATCH)
    return frozenset(reasons)


def expected_reasons_for_kind(
    kind: CertKind,
    mode: CnFallback,
    built_at: dt.datetime,
    now: dt.datetime | None = None,
) -> list[Reason]:
    """Return :func:`expected_reasons` for a catalogue kind, in report order."""
    reasons = expected_reasons(kind.leaf, kind.reference_identity, mode, built_at, now)
    return sorted_reasons(reasons)


def expected_reasons_by_mode(
    kind: CertKind, built_at: dt.datetime, now: dt.datetime | None = None
) -> dict[CnFallback, list[Reason]]:
    """Return :func:`expected_reasons_for_kind` for every ``cn_fallback`` mode.

    The chain and purpose reasons do not depend on the mode, so they are
    computed once and only the identity check runs per mode.
    """
    now = built_at if now is None else now
    leaf = kind.leaf
    common = set(chain_reasons(leaf, built_at, now)) | set(purpose_reasons(leaf))
    by_mode: dict[CnFallback, list[Reason]] = {}
    for mode in CnFallback:
        reasons = set(common)
        if not identity_matches(leaf, kind.reference_identity, mode):
            reasons.add(Reason.HOSTNAME_MISMATCH)
        by_mode[mode] = sorted_reasons(reasons)
    return by_mode
