"""Differential checks: the same served chain judged by several TLS stacks."""

from __future__ import annotations

from harness.fuzz import certs
from harness.fuzz.differential import judge
from harness.pki import Lab


def _verdicts(case: certs.CertCase, lab: Lab) -> dict[str, bool | None]:
    result = judge(case, lab.trust_store_path, lab.built_at)
    return {v.stack: v.accepted for v in result.verdicts}


def test_generalized_time_before_2050_splits_stacks(cert_lab: Lab) -> None:
    verdicts = _verdicts(certs.generalized_time_case(cert_lab, 2049), cert_lab)

    assert verdicts["ssl"] is True
    assert verdicts["cryptography"] is False


def test_unknown_critical_extension_rejected(cert_lab: Lab) -> None:
    result = judge(
        certs.unknown_critical_case(cert_lab),
        cert_lab.trust_store_path,
        cert_lab.built_at,
    )

    full = [v for v in result.verdicts if v.stack != "service-identity"]
    assert [v.stack for v in full if v.accepted] == []
    assert not any(v.deviates for v in full)


def test_issuer_loop_terminates_rejected(cert_lab: Lab) -> None:
    verdicts = _verdicts(certs.issuer_loop_case(cert_lab), cert_lab)

    assert verdicts["reference"] is False
    assert verdicts["ssl"] is False
    assert verdicts["cryptography"] is False
