"""The firewall side of the fabric connector to the EMS.

A firewall connects to the EMS over TLS and trusts it by pinning: an admin
authorizes the EMS certificate once, and the firewall stores the SHA-256
fingerprint of that leaf. Any other leaf leaves the connector unauthorized,
and so down, until an admin authorizes again.

Firewall versions from 7.2.4 have a setting, on by default there, that
instead accepts a renewed certificate when all of these hold for the new
leaf, compared with the authorized one:

* the subject common name is the same;
* it is issued by the same CA: the same issuer name, and its signature
  verifies with the key of the issuing certificate that came with the
  authorized chain (or, when that chain held only the leaf, the same
  authority key identifier);
* it is within its validity window now.

An accepted renewal moves the pin to the new leaf. The connector decides
from the certificate bytes it is given. Bytes that do not parse leave it
down with a reason; they never raise.
"""

from __future__ import annotations

import datetime as dt
import enum
import logging
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtensionOID, NameOID

from harness.versions import Version

logger = logging.getLogger(__name__)

# First firewall version with the "trust a renewed certificate" setting.
RENEWAL_TRUST_SINCE = Version((7, 2, 4))


class FabricReason(enum.StrEnum):
    """Reason the connector is down."""

    NOT_AUTHORIZED = "not-authorized"
    FINGERPRINT_CHANGED = "fingerprint-changed"
    DIFFERENT_CN = "different-cn"
    DIFFERENT_CA = "different-ca"
    EXPIRED = "expired"
    NOT_YET_VALID = "not-yet-valid"
    UNPARSABLE = "unparsable"


@dataclass(frozen=True)
class FabricStatus:
    """Result of the connector checking one presented chain.

    Attributes:
        up: Whether the connector trusts the EMS and is connected.
        reasons: Why it is down; empty when it is up.
        renewal_accepted: Whether a changed leaf was accepted as a renewal.
        leaf_sha256: Hex SHA-256 of the presented leaf, or ``""`` when the
            bytes did not parse.
    """

    up: bool
    reasons: tuple[FabricReason, ...] = ()
    renewal_accepted: bool = False
    leaf_sha256: str = ""


def supports_renewal_trust(firewall_version: str | Version) -> bool:
    """Return whether ``firewall_version`` has the renewal-trust setting."""
    return Version.parse(firewall_version) >= RENEWAL_TRUST_SINCE


def _load_chain(chain_pem: bytes) -> list[x509.Certificate]:
    certs = x509.load_pem_x509_certificates(chain_pem)
    if not certs:
        raise ValueError("no certificate in the chain")
    return certs


def _common_names(cert: x509.Certificate) -> tuple[str, ...]:
    return tuple(
        str(attribute.value)
        for attribute in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    )


def _authority_key_id(cert: x509.Certificate) -> bytes | None:
    try:
        extension = cert.extensions.get_extension_for_oid(
            ExtensionOID.AUTHORITY_KEY_IDENTIFIER
        )
    except x509.ExtensionNotFound:
        return None
    value = extension.value
    assert isinstance(value, x509.AuthorityKeyIdentifier)
    return value.key_identifier


def _issued_by(leaf: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        leaf.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


class FabricConnector:
    """A firewall's connector to one EMS, with its pinned certificate.

    Args:
        firewall_version: The firewall's version, for example ``"7.2.4"``.
        trust_renewed: The renewal-trust setting. ``None`` takes the default:
            on from 7.2.4, absent before.

    Raises:
        ValueError: ``trust_renewed=True`` on a version without the setting.
    """

    def __init__(
        self, firewall_version: str = "7.0.0", trust_renewed: bool | None = None
    ) -> None:
        self.firewall_version = Version.parse(firewall_version)
        has_setting = supports_renewal_trust(self.firewall_version)
        if trust_renewed and not has_setting:
            raise ValueError(
                f"firewall {self.firewall_version} has no renewal-trust setting: "
                f"it exists from {RENEWAL_TRUST_SINCE}"
            )
        self.trust_renewed = has_setting if trust_renewed is None else trust_renewed
        self._pinned: x509.Certificate | None = None
        self._pinned_issuer: x509.Certificate | None = None
        self.authorizations = 0

    @property
    def pinned_sha256(self) -> str | None:
        """Hex SHA-256 of the authorized leaf, or ``None`` before authorization."""
        if self._pinned is None:
            return None
        return self._pinned.fingerprint(hashes.SHA256()).hex()

    def authorize(self, chain_pem: bytes) -> str:
        """Pin the leaf of ``chain_pem``, as an admin's authorization does.

        Returns:
            The pinned leaf's hex SHA-256.

        Raises:
            ValueError: the bytes hold no parsable certificate.
        """
        certs = _load_chain(chain_pem)
        self._pinned = certs[0]
        self._pinned_issuer = self._find_issuer(certs)
        self.authorizations += 1
        pinned = self.pinned_sha256
        assert pinned is not None
        logger.info("fabric connector authorized leaf %s", pinned)
        return pinned

    @staticmethod
    def _find_issuer(certs: list[x509.Certificate]) -> x509.Certificate | None:
        leaf = certs[0]
        for candidate in certs[1:]:
            if candidate.subject == leaf.issuer and _issued_by(leaf, candidate):
                return candidate
        return None

    def check(self, chain_pem: bytes, now: dt.datetime | None = None) -> FabricStatus:
        """Decide whether the connector is up with the EMS presenting ``chain_pem``.

        Args:
            chain_pem: The chain the EMS presents, leaf first, as PEM.
            now: The time of the check; the current time if omitted.
        """
        now = now or dt.datetime.now(dt.UTC)
        try:
            certs = _load_chain(chain_pem)
        except ValueError as exc:
            logger.info("fabric connector: unparsable certificate: %s", exc)
            return FabricStatus(False, (FabricReason.UNPARSABLE,))
        leaf = certs[0]
        sha256 = leaf.fingerprint(hashes.SHA256()).hex()

        if self._pinned is None:
            return FabricStatus(False, (FabricReason.NOT_AUTHORIZED,), False, sha256)
        if sha256 == self.pinned_sha256:
            return FabricStatus(True, (), False, sha256)
        if not self.trust_renewed:
            return FabricStatus(
                False, (FabricReason.FINGERPRINT_CHANGED,), False, sha256
            )

        reasons = self._renewal_reasons(leaf, now)
        if reasons:
            return FabricStatus(False, reasons, False, sha256)
        self._pinned = leaf
        self._pinned_issuer = self._find_issuer(certs) or self._pinned_issuer
        logger.info("fabric connector accepted renewed leaf %s", sha256)
        return FabricStatus(True, (), True, sha256)

    def _renewal_reasons(
        self, leaf: x509.Certificate, now: dt.datetime
    ) -> tuple[FabricReason, ...]:
        assert self._pinned is not None
        reasons: list[FabricReason] = []
        if _common_names(leaf) != _common_names(self._pinned) or not _common_names(
            leaf
        ):
            reasons.append(FabricReason.DIFFERENT_CN)
        if not self._same_ca(leaf):
            reasons.append(FabricReason.DIFFERENT_CA)
        if now > leaf.not_valid_after_utc:
            reasons.append(FabricReason.EXPIRED)
        if now < leaf.not_valid_before_utc:
            reasons.append(FabricReason.NOT_YET_VALID)
        return tuple(reasons)

    def _same_ca(self, leaf: x509.Certificate) -> bool:
        assert self._pinned is not None
        if leaf.issuer != self._pinned.issuer:
            return False
        if self._pinned_issuer is not None:
            return _issued_by(leaf, self._pinned_issuer)
        pinned_key_id = _authority_key_id(self._pinned)
        return pinned_key_id is not None and pinned_key_id == _authority_key_id(leaf)
