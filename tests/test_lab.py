"""Structure of a built lab: files, modes, chains, manifest, cache and keys."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from harness.model import CnFallback, Reason
from harness.oracle.standards import expected_reasons_for_kind
from harness.pki import CATALOGUE, ROLES, Lab, LabError, build_lab, get_kind

KIND_NAMES = list(CATALOGUE)
# A small build for the cache tests: one trustme leaf, one built with
# cryptography's builder.
FEW_KINDS = ["correct-fqdn", "cn-only-no-san"]
MANIFEST_FIELDS = {
    "kind",
    "description",
    "leaf",
    "chain",
    "key",
    "trust_store",
    "reference_identity",
    "expected_reasons",
}

MISMATCH = Reason.HOSTNAME_MISMATCH
WHEN_NO_SAN, NEVER, ALWAYS = CnFallback.WHEN_NO_SAN, CnFallback.NEVER, CnFallback.ALWAYS


def _same(*reasons: Reason) -> dict[CnFallback, list[Reason]]:
    return {mode: list(reasons) for mode in CnFallback}


# Written by hand from the rules of standards validation, independently of
# the oracle's code: the oracle's computed reasons must equal these.
EXPECTED_REASONS: dict[str, dict[CnFallback, list[Reason]]] = {
    "correct-fqdn": _same(),
    "cn-only-no-san": {WHEN_NO_SAN: [], NEVER: [MISMATCH], ALWAYS: []},
    "cn-match-san-other": {WHEN_NO_SAN: [MISMATCH], NEVER: [MISMATCH], ALWAYS: []},
    "san-ip-only-cn-host": {WHEN_NO_SAN: [], NEVER: [MISMATCH], ALWAYS: []},
    "san-email-only-cn-host": {WHEN_NO_SAN: [], NEVER: [MISMATCH], ALWAYS: []},
    "ip-in-cn-only": _same(MISMATCH),
    "ip-san": _same(),
    "ip-v6-san": _same(),
    "wildcard-match": _same(),
    "wildcard-too-deep": _same(MISMATCH),
    "wildcard-bare-domain": _same(MISMATCH),
    "wildcard-partial-label": _same(MISMATCH),
    "wildcard-tld": _same(MISMATCH),
    "wildcard-partial-alabel": _same(MISMATCH),
    "idn-fqdn": _same(),
    "trailing-dot-reference": _same(),
    "double-trailing-dot-reference": _same(MISMATCH),
    "nul-in-cn": _same(MISMATCH),
    "nul-in-san": _same(MISMATCH),
    "expired-leaf": _same(Reason.EXPIRED),
    "not-yet-valid-leaf": _same(Reason.NOT_YET_VALID),
    "expired-intermediate": _same(Reason.EXPIRED),
    "self-signed-leaf": _same(Reason.SELF_SIGNED),
    "untrusted-private-ca": _same(Reason.UNTRUSTED_ISSUER),
    "missing-intermediate": _same(Reason.INCOMPLETE_CHAIN),
    "intermediates-out-of-order": _same(),
    "extra-untrusted-root-sent": _same(),
    "cross-signed-expired-root": _same(),
    "non-ca-issuer": _same(Reason.INVALID_CA),
    "eku-client-auth-only": _same(Reason.WRONG_PURPOSE),
    "no-eku": _same(),
    "vendor-default": _same(MISMATCH, Reason.UNTRUSTED_ISSUER),
    "vendor-forgery-self-signed": _same(MISMATCH, Reason.SELF_SIGNED),
    "ems-builtin-default": _same(MISMATCH, Reason.SELF_SIGNED),
    "many-faults": _same(
        MISMATCH, Reason.EXPIRED, Reason.UNTRUSTED_ISSUER, Reason.WRONG_PURPOSE
    ),
}


def _fingerprints(lab: Lab) -> dict[str, str]:
    return {name: built.leaf_sha256 for name, built in lab.kinds.items()}


def _der_sha256(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


# Expected reasons


@pytest.mark.parametrize("kind", list(EXPECTED_REASONS))
def test_oracle_reasons_match_table(cert_lab: Lab, kind: str) -> None:
    for mode, expected in EXPECTED_REASONS[kind].items():
        computed = expected_reasons_for_kind(get_kind(kind), mode, cert_lab.built_at)

        assert computed == expected, f"{kind} under cn_fallback={mode}"


# Files of every kind


@pytest.mark.parametrize("kind", KIND_NAMES)
def test_key_file_private_and_matching(cert_lab: Lab, kind: str) -> None:
    built = cert_lab.kind(kind)

    key = serialization.load_pem_private_key(built.key_path.read_bytes(), None)
    leaf = x509.load_pem_x509_certificate(built.leaf_path.read_bytes())

    assert built.key_path.stat().st_mode & 0o777 == 0o600
    assert built.key_path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert key.public_key() == leaf.public_key()


def test_ca_key_bundle_private(cert_lab: Lab) -> None:
    path = cert_lab.directory / "ca-keys.pem"

    assert path.stat().st_mode & 0o777 == 0o600
    for role in ROLES:
        key = cert_lab.role_key(role)
        assert key.public_key() == cert_lab.role_certs[role].public_key(), role


def test_ca_bundles_list_roles_in_order(cert_lab: Lab) -> None:
    for name in ("ca-certs.pem", "ca-keys.pem"):
        text = (cert_lab.directory / name).read_text()
        markers = [
            line.removeprefix("# CA role: ")
            for line in text.splitlines()
            if line.startswith("# CA role: ")
        ]
        assert markers == list(ROLES), name


@pytest.mark.parametrize("kind", KIND_NAMES)
def test_chain_is_leaf_then_declared_roles(cert_lab: Lab, kind: str) -> None:
    built = cert_lab.kind(kind)

    chain = x509.load_pem_x509_certificates(built.chain_path.read_bytes())
    leaf = x509.load_pem_x509_certificate(built.leaf_path.read_bytes())

    assert chain[0] == leaf
    assert _der_sha256(leaf) == built.leaf_sha256
    sent = [_der_sha256(cert) for cert in chain[1:]]
    declared = [_der_sha256(cert_lab.role_certs[r]) for r in built.kind.leaf.chain]
    assert sent == declared


@pytest.mark.parametrize("kind", KIND_NAMES)
def test_recorded_window_is_the_leaf_window(cert_lab: Lab, kind: str) -> None:
    built = cert_lab.kind(kind)
    entry = next(
        e
        for e in json.loads(cert_lab.manifest_path.read_text())["kinds"]
        if e["kind"] == kind
    )

    leaf = x509.load_pem_x509_certificate(built.leaf_path.read_bytes())

    assert built.not_before == leaf.not_valid_before_utc
    assert built.not_after == leaf.not_valid_after_utc
    assert entry["not_before"] == leaf.not_valid_before_utc.isoformat()
    assert entry["not_after"] == leaf.not_valid_after_utc.isoformat()


def test_issued_leaf_digest_without_parsing_matches_parsed(cert_lab: Lab) -> None:
    issued = cert_lab.issue(get_kind("correct-fqdn").leaf)

    unparsed = issued.sha256
    parsed = _der_sha256(issued.cert)

    assert unparsed == parsed
    assert issued.sha256 == parsed


def test_trust_store_holds_exactly_in_store_roles(cert_lab: Lab) -> None:
    store = x509.load_pem_x509_certificates(cert_lab.trust_store_path.read_bytes())

    in_store = [name for name, role in ROLES.items() if role.in_store]
    assert sorted(_der_sha256(c) for c in store) == sorted(
        _der_sha256(cert_lab.role_certs[name]) for name in in_store
    )
    assert len(store) == len(in_store)


# Manifest


def test_manifest_has_every_kind_with_fields(cert_lab: Lab) -> None:
    manifest = json.loads(cert_lab.manifest_path.read_text())

    entries = {entry["kind"]: entry for entry in manifest["kinds"]}
    assert list(entries) == KIND_NAMES
    for name, entry in entries.items():
        assert set(entry) >= MANIFEST_FIELDS, name
        assert entry["description"] == CATALOGUE[name].description
        assert entry["reference_identity"] == CATALOGUE[name].reference_identity


def test_manifest_paths_relative_and_resolving(cert_lab: Lab) -> None:
    manifest = json.loads(cert_lab.manifest_path.read_text())
    root = cert_lab.directory.resolve()

    for entry in manifest["kinds"]:
        for field in ("leaf", "chain", "key", "trust_store"):
            relative = Path(entry[field])
            path = (root / relative).resolve()

            assert not relative.is_absolute(), (entry["kind"], field)
            assert path.is_relative_to(root), (entry["kind"], field)
            assert path.is_file(), (entry["kind"], field)


def test_manifest_expected_reasons_per_mode(cert_lab: Lab) -> None:
    manifest = json.loads(cert_lab.manifest_path.read_text())

    for entry in manifest["kinds"]:
        kind = CATALOGUE[entry["kind"]]
        assert set(entry["expected_reasons"]) == {mode.value for mode in CnFallback}
        for mode in CnFallback:
            expected = expected_reasons_for_kind(kind, mode, cert_lab.built_at)
            assert entry["expected_reasons"][mode.value] == [r.value for r in expected]


# Cache


def test_second_build_loads_cache(tmp_path: Path) -> None:
    first = build_lab(tmp_path, kinds=FEW_KINDS)
    manifest_before = first.manifest_path.read_bytes()

    second = build_lab(tmp_path, kinds=FEW_KINDS)

    assert second.built_at == first.built_at
    assert _fingerprints(second) == _fingerprints(first)
    assert second.manifest_path.read_bytes() == manifest_before
    leaf = second.kind("correct-fqdn").leaf_path.read_bytes()
    assert _der_sha256(x509.load_pem_x509_certificate(leaf)) == (
        first.kind("correct-fqdn").leaf_sha256
    )


def test_force_rebuilds(tmp_path: Path) -> None:
    first = build_lab(tmp_path, kinds=FEW_KINDS)

    second = build_lab(tmp_path, kinds=FEW_KINDS, force=True)

    for name in FEW_KINDS:
        assert second.kind(name).leaf_sha256 != first.kind(name).leaf_sha256


@pytest.mark.parametrize(
    "corruption",
    [
        pytest.param(lambda m: "{not json", id="not-json"),
        pytest.param(lambda m: json.dumps([1, 2]), id="not-an-object"),
        pytest.param(
            lambda m: json.dumps({"digest": m["digest"], "built_at": m["built_at"]}),
            id="kinds-missing",
        ),
        pytest.param(
            lambda m: json.dumps({**m, "built_at": "yesterday"}), id="bad-timestamp"
        ),
        pytest.param(
            lambda m: json.dumps(
                {**m, "kinds": [{**m["kinds"][0], "key": "../../outside.pem"}]}
            ),
            id="path-outside",
        ),
    ],
)
def test_corrupt_manifest_rebuilds_with_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, corruption: object
) -> None:
    first = build_lab(tmp_path, kinds=FEW_KINDS)
    manifest = json.loads(first.manifest_path.read_text())
    assert callable(corruption)
    first.manifest_path.write_text(corruption(manifest))

    with caplog.at_level(logging.WARNING, logger="harness.pki.lab"):
        second = build_lab(tmp_path, kinds=FEW_KINDS)

    assert any(r.levelno == logging.WARNING for r in caplog.records)
    assert (
        second.kind("correct-fqdn").leaf_sha256
        != first.kind("correct-fqdn").leaf_sha256
    )
    rebuilt = json.loads(second.manifest_path.read_text())
    assert [entry["kind"] for entry in rebuilt["kinds"]] == FEW_KINDS


def test_digest_change_rebuilds(tmp_path: Path) -> None:
    first = build_lab(tmp_path, kinds=FEW_KINDS)
    manifest = json.loads(first.manifest_path.read_text())
    manifest["digest"] = "0" * 64
    first.manifest_path.write_text(json.dumps(manifest))

    second = build_lab(tmp_path, kinds=FEW_KINDS)

    assert _fingerprints(second).keys() == _fingerprints(first).keys()
    for name in FEW_KINDS:
        assert second.kind(name).leaf_sha256 != first.kind(name).leaf_sha256


def test_missing_kind_file_rebuilds(tmp_path: Path) -> None:
    first = build_lab(tmp_path, kinds=FEW_KINDS)
    first.kind("cn-only-no-san").chain_path.unlink()

    second = build_lab(tmp_path, kinds=FEW_KINDS)

    assert second.kind("cn-only-no-san").chain_path.is_file()
    assert second.built_at >= first.built_at
    assert _fingerprints(second) != _fingerprints(first)


def test_missing_ca_bundle_rebuilds(tmp_path: Path) -> None:
    first = build_lab(tmp_path, kinds=FEW_KINDS)
    (tmp_path / "ca-keys.pem").unlink()

    second = build_lab(tmp_path, kinds=FEW_KINDS)

    assert (tmp_path / "ca-keys.pem").is_file()
    assert _fingerprints(second) != _fingerprints(first)


def test_changed_kind_file_rebuilds(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first = build_lab(tmp_path, kinds=FEW_KINDS)
    leaf = first.kind("correct-fqdn").leaf_path
    leaf.write_text("garbage\n")

    with caplog.at_level(logging.WARNING, logger="harness.pki.lab"):
        second = build_lab(tmp_path, kinds=FEW_KINDS)

    assert x509.load_pem_x509_certificate(leaf.read_bytes())
    assert _fingerprints(second) != _fingerprints(first)
    assert "was changed after the build" in caplog.text


@pytest.mark.parametrize("name", ["kinds/correct-fqdn.key.pem", "ca-keys.pem"])
def test_readable_key_file_rebuilds_private(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, name: str
) -> None:
    first = build_lab(tmp_path, kinds=FEW_KINDS)
    key = tmp_path / name
    built_ns = (tmp_path / "manifest.json").stat().st_mtime_ns
    key.chmod(0o644)
    # chmod changes no modification time, so only the mode check can see it.
    assert key.stat().st_mtime_ns <= built_ns

    with caplog.at_level(logging.WARNING, logger="harness.pki.lab"):
        second = build_lab(tmp_path, kinds=FEW_KINDS)

    assert key.stat().st_mode & 0o777 == 0o600
    assert _fingerprints(second) != _fingerprints(first)
    assert "is readable by others (mode 0644)" in caplog.text


def test_unchanged_lab_is_reused(tmp_path: Path) -> None:
    first = build_lab(tmp_path, kinds=FEW_KINDS)

    second = build_lab(tmp_path, kinds=FEW_KINDS)

    assert _fingerprints(second) == _fingerprints(first)


def test_damaged_ca_bundle_raises(tmp_path: Path) -> None:
    build_lab(tmp_path, kinds=FEW_KINDS)
    bundle = tmp_path / "ca-certs.pem"
    before = bundle.stat()
    bundle.write_text("# CA role: public-root\n")
    # Damage that keeps the old modification time passes the warm checks.
    os.utime(bundle, ns=(before.st_atime_ns, before.st_mtime_ns))

    warm = build_lab(tmp_path, kinds=FEW_KINDS)

    with pytest.raises(LabError, match="cached CA bundle"):
        warm.role_window("public-root")


# Key types, errors and footprint


def test_rsa_keys_on_request(tmp_path: Path) -> None:
    lab = build_lab(tmp_path, key_type="rsa", kinds=FEW_KINDS)

    for name in FEW_KINDS:
        key = serialization.load_pem_private_key(
            lab.kind(name).key_path.read_bytes(), None
        )
        assert isinstance(key, rsa.RSAPrivateKey), name
        assert key.key_size == 2048
    for role, cert in lab.role_certs.items():
        assert isinstance(cert.public_key(), rsa.RSAPublicKey), role


def test_default_keys_are_ecdsa_p256(cert_lab: Lab) -> None:
    for name, built in cert_lab.kinds.items():
        key = serialization.load_pem_private_key(built.key_path.read_bytes(), None)

        assert isinstance(key, ec.EllipticCurvePrivateKey), name
        assert key.curve.name == "secp256r1"


def test_invalid_key_type_rejected(tmp_path: Path) -> None:
    with pytest.raises(LabError, match="invalid key type 'dsa'"):
        build_lab(tmp_path, key_type="dsa")


def test_unknown_kind_rejected(tmp_path: Path) -> None:
    with pytest.raises(KeyError, match="unknown certificate kind 'no-such-kind'"):
        build_lab(tmp_path, kinds=["no-such-kind"])

    assert list(tmp_path.iterdir()) == []


def test_nothing_written_outside_lab_folder(tmp_path: Path) -> None:
    lab_dir = tmp_path / "lab"

    build_lab(lab_dir, kinds=FEW_KINDS)
    build_lab(lab_dir, kinds=FEW_KINDS, force=True)

    assert [p.name for p in tmp_path.iterdir()] == ["lab"]
    names = {p.relative_to(lab_dir).as_posix() for p in lab_dir.rglob("*")}
    expected = {".lock", "kinds", "manifest.json", "trust-store.pem"}
    expected |= {"ca-certs.pem", "ca-keys.pem"}
    for name in FEW_KINDS:
        expected |= {f"kinds/{name}.{f}" for f in ("leaf.pem", "chain.pem", "key.pem")}
    assert names == expected


def test_issue_returns_pkcs8_key_for_leaf(cert_lab: Lab) -> None:
    for name in FEW_KINDS:
        issued = cert_lab.issue(get_kind(name).leaf)

        key = serialization.load_pem_private_key(issued.key_pem, None)
        assert issued.key_pem.startswith(b"-----BEGIN PRIVATE KEY-----"), name
        assert key.public_key() == issued.cert.public_key(), name
        assert issued.chain_pem.startswith(issued.leaf_pem), name
