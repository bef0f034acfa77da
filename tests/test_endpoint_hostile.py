"""Reference client on hostile input: unparsable certificates and overlong names."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from harness.endpoint import (
    EndpointClient,
    PromptInfo,
    TrustStore,
    matches_reference,
    validate_der,
)
from harness.endpoint.identity import InvalidReference, reference_labels
from harness.fuzz.tlsserve import CertServer
from harness.model import Action, ActionSource, Answer, CnFallback, OutcomeName, Reason
from harness.pki import Lab
from harness.pki.kinds import LeafSpec

LEGACY_CN = "FCTEMS0000000001"


def _unparsable(der: bytes) -> bytes:
    """Return ``der`` with a letter in the hour digits of the first UTCTime.

    OpenSSL still loads and serves such a certificate, but cryptography
    rejects the time when it parses the bytes.
    """
    start = der.index(b"\x17\x0d") + 2
    mutated = der[: start + 6] + b"y" + der[start + 7 :]
    with pytest.raises(ValueError, match=r"(?i)parse|time"):
        x509.load_der_x509_certificate(mutated)
    return mutated


def _chain_der(cert_lab: Lab, spec: LeafSpec) -> tuple[list[bytes], bytes]:
    issued = cert_lab.issue(spec)
    certs = [issued.cert, *issued.chain]
    return [c.public_bytes(Encoding.DER) for c in certs], issued.key_pem


@pytest.mark.parametrize(
    ("reference", "valid"),
    [
        ("a" * 63 + ".example.com", True),
        ("a" * 64 + ".example.com", False),
        (".".join(["a" * 63] * 3 + ["b" * 61]), True),
        (".".join(["a" * 63] * 3 + ["b" * 62]), False),
        (".".join(["a" * 63] * 3 + ["b" * 61]) + ".", True),
        ("ems_1.example.com", False),
        ("-ems.example.com", False),
    ],
)
def test_reference_labels_idna_limits(reference: str, valid: bool) -> None:
    if valid:
        assert reference_labels(reference) == reference.rstrip(".").split(".")
    else:
        with pytest.raises(InvalidReference, match="not a valid IDNA 2008 name"):
            reference_labels(reference)


def test_long_label_san_matches_nothing(cert_lab: Lab) -> None:
    long_name = "A" + "a" * 250 + ".example.com"
    leaf = cert_lab.issue(LeafSpec(dns_names=(long_name, "ems.example.com"))).cert

    assert not matches_reference(leaf, long_name, CnFallback.WHEN_NO_SAN)
    assert matches_reference(leaf, "ems.example.com", CnFallback.WHEN_NO_SAN)


def test_unparsable_leaf_is_untrusted(cert_lab: Lab) -> None:
    ders, _ = _chain_der(cert_lab, LeafSpec(dns_names=("ems.example.com",)))
    ders[0] = _unparsable(ders[0])
    store = TrustStore.load(cert_lab.trust_store_path)

    result = validate_der(
        ders, store, "ems.example.com", CnFallback.WHEN_NO_SAN, cert_lab.built_at
    )

    assert result.reasons == [Reason.UNTRUSTED_ISSUER]
    assert result.path == ()
    assert not result.anchored
    assert result.detail is not None
    assert "leaf certificate does not parse" in result.detail


def test_unparsable_intermediate_is_dropped(cert_lab: Lab) -> None:
    ders, _ = _chain_der(cert_lab, LeafSpec(dns_names=("ems.example.com",)))
    assert len(ders) == 2, "the default leaf spec sends one intermediate"
    ders[1] = _unparsable(ders[1])
    store = TrustStore.load(cert_lab.trust_store_path)

    result = validate_der(
        ders, store, "ems.example.com", CnFallback.WHEN_NO_SAN, cert_lab.built_at
    )

    assert result.reasons == [Reason.INCOMPLETE_CHAIN]
    assert len(result.path) == 1


def test_client_prompts_on_unparsable_leaf(cert_lab: Lab) -> None:
    ders, key_pem = _chain_der(cert_lab, LeafSpec(dns_names=("ems.example.com",)))
    ders[0] = _unparsable(ders[0])
    shown: list[PromptInfo] = []

    def deny(info: PromptInfo) -> Answer:
        shown.append(info)
        return Answer.DENY

    client = EndpointClient(
        "7.2.0",
        cert_lab.trust_store_path,
        action=Action.WARN,
        action_source=ActionSource.INSTALLER,
        prompt=deny,
        timeout=5.0,
    )
    with CertServer(ders, key_pem) as server:
        observation = client.connect(
            server.host, server.port, servername="ems.example.com"
        )

    assert observation.outcome is OutcomeName.REFUSED_PROMPT_DENIED
    assert observation.reasons == [Reason.UNTRUSTED_ISSUER]
    assert len(shown) == 1
    assert shown[0].reasons == (Reason.UNTRUSTED_ISSUER,)
    assert shown[0].subject == "(the leaf certificate does not parse)"


def test_legacy_client_refuses_unparsable_leaf(cert_lab: Lab) -> None:
    spec = LeafSpec(common_names=(LEGACY_CN,), san_extension=False)
    ders, key_pem = _chain_der(cert_lab, spec)
    client = EndpointClient("6.4.6", cert_lab.trust_store_path, timeout=5.0)
    with CertServer(ders, key_pem) as server:
        accepted = client.connect(server.host, server.port)
    ders[0] = _unparsable(ders[0])

    with CertServer(ders, key_pem) as server:
        observation = client.connect(server.host, server.port)

    assert accepted.outcome is OutcomeName.CONNECTED_LEGACY
    assert observation.outcome is OutcomeName.REFUSED_LEGACY
    assert not observation.connected
