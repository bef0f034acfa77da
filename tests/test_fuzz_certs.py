"""Client-side fuzzing: the reference client fed odd and malformed chains."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.fuzz import certs
from harness.fuzz.findings import run_certificate_campaign
from harness.fuzz.tlsserve import CertServer
from harness.pki import Lab

ODD_CASES = [
    ("cn-bmp", lambda lab: certs.odd_string_case(lab, "bmp", with_san=False)),
    ("cn-teletex", lambda lab: certs.odd_string_case(lab, "teletex", with_san=True)),
    ("cn-printable", lambda lab: certs.odd_string_case(lab, "printable", False)),
    ("unknown-critical", certs.unknown_critical_case),
    ("chain-depth-5", lambda lab: certs.long_chain_case(lab, 4)),
    ("chain-depth-11", lambda lab: certs.long_chain_case(lab, 10)),
    ("issuer-loop", certs.issuer_loop_case),
    ("bad-signature", certs.bad_signature_case),
]


@pytest.mark.parametrize(("name", "make"), ODD_CASES, ids=[c[0] for c in ODD_CASES])
def test_reference_client_decides(cert_lab: Lab, name: str, make: object) -> None:
    case = make(cert_lab)  # type: ignore[operator]

    with CertServer(case.chain_der, case.key_pem) as server:
        check = certs.check_reference_client(
            case, cert_lab.trust_store_path, cert_lab.built_at, server.host, server.port
        )

    assert check.problems == ()
    expectation = case.expected(certs.CnFallback.WHEN_NO_SAN, cert_lab.built_at)
    if expectation.valid is not None:
        assert (check.verdict == "accepted") == expectation.valid


# Open reference-client problems, each saved under fixtures/findings/open:
# a leaf cryptography cannot parse ends as a handshake failure instead of a
# decision, and a SAN label over 63 characters matches a reference identity
# that IDNA rejects.
KNOWN_OPEN = (
    "no certificate decision",
    "differ from the oracle's ['hostname-mismatch']",
)


def test_client_campaign_short(cert_lab: Lab, tmp_path: Path) -> None:
    summary = run_certificate_campaign(
        cert_lab, "client", max_inputs=40, budget=120.0, seed=1, out=tmp_path
    )
    problems = [
        problem
        for path in tmp_path.glob("*.json")
        for problem in json.loads(path.read_text())["problems"]
    ]

    assert summary["inputs"] == 40
    assert [p for p in problems if not any(k in p for k in KNOWN_OPEN)] == []
