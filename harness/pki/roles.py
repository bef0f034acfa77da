"""The certificate authorities of a lab, as declared data.

Every lab has the same CA roles. Their declared properties (issuer, trust
store membership, CA flag, validity window) are what the oracle reasons
about; :mod:`harness.pki.lab` turns them into real certificates.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

DAY = timedelta(days=1)


@dataclass(frozen=True)
class CaRole:
    """One issuing certificate of the lab.

    Attributes:
        name: Stable role name, used in kinds and in the manifest.
        description: One line for listings.
        identity: Roles with the same identity share subject name and key
            pair, which is how a cross-signed certificate is modelled.
        issuer: Name of the issuing role, or ``None`` when self-signed.
        in_store: Whether the simulated OS trust store holds it.
        is_ca: Whether it carries basicConstraints CA:TRUE with keyCertSign.
        window: ``(not_before, not_after)`` relative to the lab's build time,
            or ``None`` for trustme's fixed window (2000-01-01 to 3000-01-01),
            which is valid at any time a test runs.
        built_with: ``"trustme"`` or ``"cryptography"``.
    """

    name: str
    description: str
    identity: str
    issuer: str | None
    in_store: bool
    is_ca: bool = True
    window: tuple[timedelta, timedelta] | None = None
    built_with: str = "trustme"


# Build order matters: an issuer comes before what it issues.
ROLES: dict[str, CaRole] = {
    role.name: role
    for role in (
        CaRole(
            "public-root",
            "root of the simulated public PKI, in the OS trust store",
            identity="public-root",
            issuer=None,
            in_store=True,
        ),
        CaRole(
            "public-intermediate",
            "intermediate under the public root",
            identity="public-intermediate",
            issuer="public-root",
            in_store=False,
        ),
        CaRole(
            "public-intermediate-2",
            "second-level intermediate under the public intermediate",
            identity="public-intermediate-2",
            issuer="public-intermediate",
            in_store=False,
        ),
        # trustme CAs always get its fixed 2000-3000 window, so a CA that has
        # expired needs cryptography's builder.
        CaRole(
            "expired-intermediate",
            "intermediate under the public root that expired a day ago",
            identity="expired-intermediate",
            issuer="public-root",
            in_store=False,
            window=(-730 * DAY, -1 * DAY),
            built_with="cryptography",
        ),
        # trustme cannot issue an end-entity certificate that signs others.
        CaRole(
            "non-ca-issuer",
            "end-entity certificate (CA:FALSE) used to sign a leaf",
            identity="non-ca-issuer",
            issuer="public-intermediate",
            in_store=False,
            is_ca=False,
            window=(-30 * DAY, 365 * DAY),
            built_with="cryptography",
        ),
        CaRole(
            "private-root",
            "private CA that no trust store holds",
            identity="private-root",
            issuer=None,
            in_store=False,
        ),
        CaRole(
            "vendor-root",
            "vendor (FortiCare-like) CA issuing serial-number certificates",
            identity="vendor-root",
            issuer=None,
            in_store=False,
        ),
        # The cross-signed pair models the September 2021 root expiry: the
        # store holds a valid self-signed root, while the chain a server sends
        # ends at a cross-certificate for the same subject and key whose issuer
        # (also in the store) has expired. trustme cannot reuse a key for two
        # certificates or set a CA window, hence cryptography.
        CaRole(
            "legacy-root",
            "old root, in the store, expired thirty days ago",
            identity="legacy-root",
            issuer=None,
            in_store=True,
            window=(-7300 * DAY, -30 * DAY),
            built_with="cryptography",
        ),
        CaRole(
            "cross-root",
            "new self-signed root, in the store",
            identity="cross-root",
            issuer=None,
            in_store=True,
            window=(-1000 * DAY, 3650 * DAY),
            built_with="cryptography",
        ),
        CaRole(
            "cross-root-by-legacy",
            "the new root's subject and key, cross-signed by the expired root",
            identity="cross-root",
            issuer="legacy-root",
            in_store=False,
            window=(-1000 * DAY, 1000 * DAY),
            built_with="cryptography",
        ),
        CaRole(
            "cross-intermediate",
            "intermediate under the new root",
            identity="cross-intermediate",
            issuer="cross-root",
            in_store=False,
            window=(-365 * DAY, 1825 * DAY),
            built_with="cryptography",
        ),
    )
}


def roles_with_identity(identity: str) -> list[CaRole]:
    """Return every role whose subject and key are ``identity``'s."""
    return [role for role in ROLES.values() if role.identity == identity]
