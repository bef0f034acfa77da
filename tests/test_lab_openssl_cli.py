"""``openssl verify`` from the command line against each kind's declarations.

The command runs as a user would type it: the lab's trust store as -CAfile,
the rest of the sent chain as -untrusted and the sslserver purpose. Its
verify callback keeps going after some errors (expiry, CA flags, purpose), so
it may print several. Each must be a declared reason. The first one must be
the one that OpenSSL's check order puts first.
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from harness.model import Reason
from harness.oracle.standards import chain_reasons, purpose_reasons
from harness.pki import CATALOGUE, Lab

pytestmark = pytest.mark.network_tools

OPENSSL = shutil.which("openssl")

# X509_V_ERR_* codes of OpenSSL 3.0 and the reasons they stand for.
ERROR_REASONS: dict[int, Reason] = {
    2: Reason.INCOMPLETE_CHAIN,  # UNABLE_TO_GET_ISSUER_CERT
    9: Reason.NOT_YET_VALID,  # CERT_NOT_YET_VALID
    10: Reason.EXPIRED,  # CERT_HAS_EXPIRED
    18: Reason.SELF_SIGNED,  # DEPTH_ZERO_SELF_SIGNED_CERT
    19: Reason.UNTRUSTED_ISSUER,  # SELF_SIGNED_CERT_IN_CHAIN
    20: Reason.INCOMPLETE_CHAIN,  # UNABLE_TO_GET_ISSUER_CERT_LOCALLY
    21: Reason.INCOMPLETE_CHAIN,  # UNABLE_TO_VERIFY_LEAF_SIGNATURE
    26: Reason.WRONG_PURPOSE,  # INVALID_PURPOSE
    79: Reason.INVALID_CA,  # INVALID_CA
}
# The order in which X509_verify_cert runs its checks.
CHECK_ORDER: tuple[frozenset[Reason], ...] = (
    frozenset({Reason.SELF_SIGNED, Reason.UNTRUSTED_ISSUER, Reason.INCOMPLETE_CHAIN}),
    frozenset({Reason.WRONG_PURPOSE, Reason.INVALID_CA}),
    frozenset({Reason.EXPIRED, Reason.NOT_YET_VALID}),
)
ERROR_LINE = re.compile(r"^error (\d+) at (\d+) depth lookup: (.*)$", re.MULTILINE)


def _reason(code: int, depth: int) -> Reason:
    # An sslserver purpose error on an issuer (depth 1 and up) means the
    # issuer is no CA for TLS servers: the invalid-ca case, not the leaf's
    # extendedKeyUsage.
    if code == 26 and depth > 0:
        return Reason.INVALID_CA
    assert code in ERROR_REASONS, f"unmapped openssl verify error {code}"
    return ERROR_REASONS[code]


def _run_verify(lab: Lab, kind: str, tmp_path: Path) -> tuple[int, list[Reason]]:
    built = lab.kind(kind)
    _leaf, *sent = x509.load_pem_x509_certificates(built.chain_path.read_bytes())
    assert OPENSSL is not None
    command = [OPENSSL, "verify", "-CAfile", str(lab.trust_store_path)]
    if sent:
        untrusted = tmp_path / "untrusted.pem"
        untrusted.write_bytes(
            b"".join(c.public_bytes(serialization.Encoding.PEM) for c in sent)
        )
        command += ["-untrusted", str(untrusted)]
    command += ["-purpose", "sslserver", str(built.leaf_path)]

    result = subprocess.run(command, capture_output=True, text=True, timeout=30)

    output = result.stdout + result.stderr
    reasons = [
        _reason(int(code), int(depth)) for code, depth, _ in ERROR_LINE.findall(output)
    ]
    return result.returncode, reasons


@pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed")
@pytest.mark.parametrize("kind", list(CATALOGUE))
def test_openssl_verify_matches_declaration(
    cert_lab: Lab, kind: str, tmp_path: Path
) -> None:
    leaf = cert_lab.kind(kind).kind.leaf
    declared = chain_reasons(leaf, cert_lab.built_at, dt.datetime.now(dt.UTC))
    declared |= purpose_reasons(leaf)

    returncode, reported = _run_verify(cert_lab, kind, tmp_path)

    if not declared:
        assert returncode == 0, f"{kind}: declared valid, openssl reports {reported}"
        assert reported == []
        return
    assert returncode != 0, f"{kind}: declared {sorted(declared)}, openssl says OK"
    assert reported, f"{kind}: openssl failed without an error line"
    assert set(reported) <= declared, (
        f"{kind}: openssl reports {reported}, declared {sorted(declared)}"
    )
    first_group = next(group & declared for group in CHECK_ORDER if group & declared)
    assert reported[0] in first_group, (
        f"{kind}: openssl reports {reported[0]} first, expected one of "
        f"{sorted(first_group)}"
    )
