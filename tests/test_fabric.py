"""The fabric connector pins the authorized EMS leaf; 7.2.4 can trust renewals."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import pytest

from harness.fabric import FabricConnector, FabricReason, supports_renewal_trust
from harness.pki import Lab
from harness.pki.kinds import CATALOGUE
from harness.pki.roles import DAY


def _chain(cert_lab: Lab, kind: str) -> bytes:
    return cert_lab.kinds[kind].chain_path.read_bytes()


def _renewed(cert_lab: Lab, kind: str = "correct-fqdn", **changes: object) -> bytes:
    spec = replace(CATALOGUE[kind].leaf, **changes)  # type: ignore[arg-type]
    return cert_lab.issue(spec).chain_pem


def test_unauthorized_connector_is_down(cert_lab: Lab) -> None:
    connector = FabricConnector("7.2.4")

    status = connector.check(_chain(cert_lab, "correct-fqdn"))

    assert not status.up
    assert status.reasons == (FabricReason.NOT_AUTHORIZED,)


def test_authorized_leaf_is_up(cert_lab: Lab) -> None:
    connector = FabricConnector("7.0.0")
    pinned = connector.authorize(_chain(cert_lab, "correct-fqdn"))

    status = connector.check(_chain(cert_lab, "correct-fqdn"))

    assert status.up
    assert status.leaf_sha256 == pinned == cert_lab.kinds["correct-fqdn"].leaf_sha256


def test_pinning_rejects_renewal_before_7_2_4(cert_lab: Lab) -> None:
    connector = FabricConnector("7.2.3")
    connector.authorize(_chain(cert_lab, "correct-fqdn"))

    status = connector.check(_renewed(cert_lab))

    assert not connector.trust_renewed
    assert not status.up
    assert status.reasons == (FabricReason.FINGERPRINT_CHANGED,)


def test_reauthorization_brings_connector_up(cert_lab: Lab) -> None:
    connector = FabricConnector("7.0.0")
    connector.authorize(_chain(cert_lab, "correct-fqdn"))
    renewed = _renewed(cert_lab)
    assert not connector.check(renewed).up

    connector.authorize(renewed)

    assert connector.check(renewed).up
    assert connector.authorizations == 2


def test_7_2_4_trusts_same_cn_same_ca(cert_lab: Lab) -> None:
    connector = FabricConnector("7.2.4")
    connector.authorize(_chain(cert_lab, "correct-fqdn"))
    renewed = _renewed(cert_lab)

    status = connector.check(renewed)

    assert connector.trust_renewed
    assert status.up
    assert status.renewal_accepted
    assert connector.pinned_sha256 == status.leaf_sha256


def test_7_2_4_setting_off_pins(cert_lab: Lab) -> None:
    connector = FabricConnector("7.2.4", trust_renewed=False)
    connector.authorize(_chain(cert_lab, "correct-fqdn"))

    status = connector.check(_renewed(cert_lab))

    assert status.reasons == (FabricReason.FINGERPRINT_CHANGED,)


def test_renewal_from_other_ca_needs_reauthorization(cert_lab: Lab) -> None:
    connector = FabricConnector("7.4.0")
    connector.authorize(_chain(cert_lab, "correct-fqdn"))

    status = connector.check(_chain(cert_lab, "untrusted-private-ca"))

    assert not status.up
    assert status.reasons == (FabricReason.DIFFERENT_CA,)


def test_renewal_with_other_cn_needs_reauthorization(cert_lab: Lab) -> None:
    connector = FabricConnector("7.2.4")
    connector.authorize(_chain(cert_lab, "correct-fqdn"))

    status = connector.check(_chain(cert_lab, "wrong-host"))

    assert not status.up
    assert status.reasons == (FabricReason.DIFFERENT_CN,)


def test_expired_renewal_needs_reauthorization(cert_lab: Lab) -> None:
    connector = FabricConnector("7.2.4")
    connector.authorize(_chain(cert_lab, "correct-fqdn"))
    expired = _renewed(cert_lab, window=(-30 * DAY, -1 * DAY))

    status = connector.check(expired)

    assert not status.up
    assert status.reasons == (FabricReason.EXPIRED,)


def test_not_yet_valid_renewal_is_down(cert_lab: Lab) -> None:
    connector = FabricConnector("7.2.4")
    connector.authorize(_chain(cert_lab, "correct-fqdn"))
    early = _renewed(cert_lab)

    status = connector.check(early, now=cert_lab.built_at - 10 * DAY)

    assert FabricReason.NOT_YET_VALID in status.reasons


def test_self_signed_renewal_is_another_ca(cert_lab: Lab) -> None:
    connector = FabricConnector("7.2.4")
    connector.authorize(_chain(cert_lab, "ems-builtin-default"))

    status = connector.check(_renewed(cert_lab, "ems-builtin-default"))

    assert status.reasons == (FabricReason.DIFFERENT_CA,)


def test_unparsable_bytes_are_a_reason(cert_lab: Lab) -> None:
    connector = FabricConnector("7.2.4")
    connector.authorize(_chain(cert_lab, "correct-fqdn"))

    status = connector.check(b"-----BEGIN CERTIFICATE-----\nAAAA\n")

    assert not status.up
    assert status.reasons == (FabricReason.UNPARSABLE,)


def test_setting_absent_before_7_2_4() -> None:
    with pytest.raises(ValueError, match="no renewal-trust setting"):
        FabricConnector("7.2.3", trust_renewed=True)


@pytest.mark.parametrize(
    ("version", "expected"),
    [("7.2.3", False), ("7.2.4", True), ("7.2.10", True), ("7.4.0", True)],
)
def test_supports_renewal_trust(version: str, expected: bool) -> None:
    assert supports_renewal_trust(version) is expected


def test_check_uses_given_time(cert_lab: Lab) -> None:
    connector = FabricConnector("7.2.4")
    connector.authorize(_chain(cert_lab, "correct-fqdn"))
    later = cert_lab.built_at + dt.timedelta(days=400)

    status = connector.check(_renewed(cert_lab), now=later)

    assert status.reasons == (FabricReason.EXPIRED,)
