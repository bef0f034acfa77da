"""Reference client validation: every catalogue kind, and identity edge cases."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cryptography import x509

from harness.endpoint import TrustStore, TrustStoreError, matches_reference, validate
from harness.model import CnFallback
from harness.pki import CATALOGUE, Lab
from harness.pki.kinds import LeafSpec


@pytest.fixture(scope="module")
def manifest(cert_lab: Lab) -> dict[str, dict[str, Any]]:
    data = json.loads(cert_lab.manifest_path.read_text())
    return {entry["kind"]: entry for entry in data["kinds"]}


@pytest.mark.parametrize("mode", list(CnFallback))
@pytest.mark.parametrize("kind_name", list(CATALOGUE))
def test_reasons_match_manifest(
    kind_name: str, mode: CnFallback, cert_lab: Lab, manifest: dict[str, Any]
) -> None:
    built = cert_lab.kind(kind_name)
    chain = x509.load_pem_x509_certificates(built.chain_path.read_bytes())
    store = TrustStore.load(cert_lab.trust_store_path)

    result = validate(
        chain, store, built.reference_identity, mode, now=cert_lab.built_at
    )

    assert [r.value for r in result.reasons] == manifest[kind_name]["expected_reasons"][
        mode.value
    ]


def test_cross_signed_path_ends_at_store_root(cert_lab: Lab) -> None:
    built = cert_lab.kind("cross-signed-expired-root")
    chain = x509.load_pem_x509_certificates(built.chain_path.read_bytes())
    store = TrustStore.load(cert_lab.trust_store_path)

    result = validate(chain, store, built.reference_identity, CnFallback.NEVER)

    assert result.anchored
    assert result.path[-1] == cert_lab.role_certs["cross-root"]


def _leaf(cert_lab: Lab, **spec: Any) -> x509.Certificate:
    return cert_lab.issue(LeafSpec(**spec)).cert


@pytest.mark.parametrize(
    ("spec", "reference", "matches"),
    [
        ({"dns_names": ("ems.example.com",)}, "ems.example.com.", True),
        ({"dns_names": ("ems.example.com",)}, "ems.example.com..", False),
        ({"dns_names": ("ems.example.com",)}, "EMS.EXAMPLE.COM", True),
        ({"dns_names": ("ems.example.com",)}, ".ems.example.com", False),
        ({"dns_names": ("*.example.com",)}, "example.com", False),
        ({"dns_names": ("*.example.com",)}, "a.b.example.com", False),
        ({"dns_names": ("*.com",)}, "example.com", False),
        ({"dns_names": ("f*.example.com",)}, "foo.example.com", False),
        ({"dns_names": ("xn--*.example.org",)}, "xn--bcher-kva.example.org", False),
        ({"dns_names": ("*.xn--bcher-kva.example",)}, "ems.bücher.example", True),
        ({"dns_names": ("ems.example.com\x00.evil",)}, "ems.example.com", False),
        ({"ip_addresses": ("::1",)}, "[::1]", True),
        ({"ip_addresses": ("::1",)}, "0:0:0:0:0:0:0:1", True),
        ({"ip_addresses": ("127.0.0.1",)}, "127.0.0.2", False),
        ({"ip_addresses": ("127.0.0.1",)}, "::ffff:127.0.0.1", False),
        ({"common_names": ("127.0.0.1",), "san_extension": False}, "127.0.0.1", False),
        (
            {
                "common_names": ("other.example", "ems.example.com"),
                "san_extension": False,
            },
            "ems.example.com",
            True,
        ),
    ],
)
def test_identity_rules(
    cert_lab: Lab, spec: dict[str, Any], reference: str, matches: bool
) -> None:
    leaf = _leaf(cert_lab, **spec)

    assert matches_reference(leaf, reference, CnFallback.WHEN_NO_SAN) is matches


def test_identity_cn_modes(cert_lab: Lab) -> None:
    leaf = _leaf(
        cert_lab, common_names=("ems.example.com",), dns_names=("other.example.com",)
    )

    assert not matches_reference(leaf, "ems.example.com", CnFallback.WHEN_NO_SAN)
    assert not matches_reference(leaf, "ems.example.com", CnFallback.NEVER)
    assert matches_reference(leaf, "ems.example.com", CnFallback.ALWAYS)


def test_trust_store_missing_names_file(tmp_path: Any) -> None:
    missing = tmp_path / "store.pem"

    with pytest.raises(TrustStoreError, match=r"cannot read trust store .*store\.pem"):
        TrustStore.load(missing)


def test_trust_store_garbage_names_file(tmp_path: Any) -> None:
    garbage = tmp_path / "store.pem"
    garbage.write_text("not a certificate\n")

    with pytest.raises(TrustStoreError, match="is not a PEM certificate bundle"):
        TrustStore.load(garbage)
