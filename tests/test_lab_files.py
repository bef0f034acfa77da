"""Key encoding and file modes of a lab build."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trustme
from cryptography.hazmat.primitives import serialization

from harness.pki import build_lab
from harness.pki.lab import _pkcs8_from_sec1_p256, _pkcs8_pem


def _openssl_pkcs8(pem: bytes) -> bytes:
    key = serialization.load_pem_private_key(pem, password=None)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def test_sec1_rewrap_matches_openssl() -> None:
    ca = trustme.CA()
    for index in range(50):
        pem = ca.issue_cert(f"host{index}.example.com").private_key_pem.bytes()
        assert _pkcs8_from_sec1_p256(pem) == _openssl_pkcs8(pem), index


def test_sec1_rewrap_rejects_rsa_key() -> None:
    ca = trustme.CA(key_type=trustme.KeyType.RSA)
    leaf = ca.issue_cert("ems.example.com", key_type=trustme.KeyType.RSA)
    pem = leaf.private_key_pem.bytes()
    assert _pkcs8_from_sec1_p256(pem) is None
    assert _pkcs8_pem(pem) == _openssl_pkcs8(pem)


def test_sec1_rewrap_rejects_damaged_pem() -> None:
    pem = trustme.CA().issue_cert("ems.example.com").private_key_pem.bytes()
    damaged = pem.replace(b"MHcCAQEE", b"MHcCAQIE")
    assert _pkcs8_from_sec1_p256(damaged) is None
    assert _pkcs8_from_sec1_p256(b"not a key") is None


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o277])
def test_build_modes_ignore_umask(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        lab = build_lab(tmp_path / "lab", kinds=["correct-fqdn", "cn-only-no-san"])
    finally:
        os.umask(old)
    for built in lab.kinds.values():
        assert built.key_path.stat().st_mode & 0o777 == 0o600, built.name
        assert built.leaf_path.stat().st_mode & 0o777 == 0o644, built.name
        assert built.chain_path.stat().st_mode & 0o777 == 0o644, built.name
    assert lab.trust_store_path.stat().st_mode & 0o777 == 0o644


def test_rebuild_resets_loose_key_mode(tmp_path: Path) -> None:
    lab = build_lab(tmp_path / "lab", kinds=["correct-fqdn"])
    key_path = lab.kind("correct-fqdn").key_path
    key_path.chmod(0o644)
    rebuilt = build_lab(tmp_path / "lab", kinds=["correct-fqdn"], force=True)
    assert rebuilt.kind("correct-fqdn").key_path.stat().st_mode & 0o777 == 0o600
