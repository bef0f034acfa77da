"""ACME end to end: Pebble on loopback issues and renews the mock EMS certificate."""

from __future__ import annotations

import datetime as dt
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509

# The ACME client library is an optional extra ("acme"); without it the
# module cannot even be imported.
pytest.importorskip("acme", reason="install the 'acme' extra: pip install -e .[acme]")
pytest.importorskip("josepy", reason="install the 'acme' extra: pip install -e .[acme]")

from harness.acme_client import (
    PEBBLE_BINARY,
    AcmeCertificate,
    AcmeCertificateManager,
    Http01Responder,
    Pebble,
    answer_query,
)
from harness.ems.server import MockEms
from harness.ems.settings import EmsSettings, SettingsError
from harness.endpoint.client import EndpointClient
from harness.fabric import FabricConnector, FabricReason
from harness.model import Action, OutcomeName

FQDN = "ems.example.com"

needs_pebble = pytest.mark.skipif(
    not PEBBLE_BINARY.exists(),
    reason=f"Pebble is not installed at {PEBBLE_BINARY} (Debian package pebble)",
)


@dataclass
class AcmeLab:
    pebble: Pebble
    responder: Http01Responder
    manager: AcmeCertificateManager
    trust_store: Path


@pytest.fixture(scope="module")
def acme_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AcmeLab]:
    """Run Pebble and the EMS's HTTP-01 responder for this module."""
    if not PEBBLE_BINARY.exists():
        pytest.skip(f"Pebble is not installed at {PEBBLE_BINARY}")
    workdir = tmp_path_factory.mktemp("pebble")
    with Http01Responder() as responder, Pebble(workdir, responder.port) as pebble:
        trust_store = workdir / "trust-store.pem"
        trust_store.write_bytes(pebble.root_pem())
        with AcmeCertificateManager(
            pebble.directory_url, pebble.server_ca_path, responder, FQDN
        ) as manager:
            yield AcmeLab(pebble, responder, manager, trust_store)


@pytest.fixture(scope="module")
def issued(acme_lab: AcmeLab) -> tuple[AcmeCertificate, AcmeCertificate]:
    """Return a first certificate and its auto-renewal."""
    settings = acme_lab.manager.import_into(
        EmsSettings(remote_https_access=True, http_redirect=True), auto_renew=True
    )
    first = acme_lab.manager.obtain()
    renewed = acme_lab.manager.renew_if_due(settings, now=first.renew_at)
    assert renewed is not None
    return first, renewed


def _leaf(certificate: AcmeCertificate) -> x509.Certificate:
    return x509.load_pem_x509_certificates(certificate.chain_pem)[0]


@needs_pebble
def test_issuance_names_fqdn(issued: tuple[AcmeCertificate, AcmeCertificate]) -> None:
    first, _ = issued
    leaf = _leaf(first)

    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)

    assert san.value.get_values_for_type(x509.DNSName) == [FQDN]
    assert first.not_before < first.renew_at < first.not_after


@needs_pebble
def test_http01_challenge_answered(
    acme_lab: AcmeLab, issued: tuple[AcmeCertificate, AcmeCertificate]
) -> None:
    challenge_paths = [
        p for p in acme_lab.responder.requests if p.startswith("/.well-known/")
    ]

    assert challenge_paths


@needs_pebble
def test_renewal_is_new_leaf_same_issuer(
    issued: tuple[AcmeCertificate, AcmeCertificate],
) -> None:
    first, renewed = issued

    assert renewed.chain_pem != first.chain_pem
    assert _leaf(renewed).subject == _leaf(first).subject
    assert _leaf(renewed).issuer == _leaf(first).issuer


@needs_pebble
def test_no_renewal_before_due(
    acme_lab: AcmeLab, issued: tuple[AcmeCertificate, AcmeCertificate]
) -> None:
    settings = acme_lab.manager.import_into(
        EmsSettings(remote_https_access=True, http_redirect=True), auto_renew=True
    )
    current = acme_lab.manager.current
    assert current is not None

    early = current.renew_at - dt.timedelta(days=1)

    assert acme_lab.manager.renew_if_due(settings, now=early) is None


@needs_pebble
def test_no_renewal_without_auto_renew(
    acme_lab: AcmeLab, issued: tuple[AcmeCertificate, AcmeCertificate]
) -> None:
    settings = acme_lab.manager.import_into(
        EmsSettings(remote_https_access=True, http_redirect=True), auto_renew=False
    )
    late = issued[1].not_after

    assert acme_lab.manager.renew_if_due(settings, now=late) is None


@needs_pebble
def test_endpoints_silent_across_renewal(
    acme_lab: AcmeLab,
    issued: tuple[AcmeCertificate, AcmeCertificate],
    tmp_path: Path,
) -> None:
    first, renewed = issued
    client = EndpointClient(
        "7.0.2",
        acme_lab.trust_store,
        installer_action=Action.DENY,
        memory_path=tmp_path / "memory.json",
    )

    with MockEms(first.chain_pem, first.key_pem, profile_action=Action.DENY) as ems:
        before = client.connect(ems.host, ems.port, servername=FQDN)
        ems.set_certificate(renewed.chain_pem, renewed.key_pem)
        after = client.connect(ems.host, ems.port, servername=FQDN)

    assert before.outcome is OutcomeName.CONNECTED_VALID
    assert after.outcome is OutcomeName.CONNECTED_VALID
    assert not before.prompted
    assert not after.prompted
    assert before.leaf_sha256 != after.leaf_sha256


@needs_pebble
def test_lab_trust_store_rejects_pebble_leaf(
    acme_lab: AcmeLab,
    issued: tuple[AcmeCertificate, AcmeCertificate],
    tmp_path: Path,
) -> None:
    first, _ = issued
    other_store = tmp_path / "empty-root.pem"
    other_store.write_bytes(acme_lab.pebble.server_ca.cert_pem.bytes())
    client = EndpointClient("7.0.2", other_store, installer_action=Action.DENY)

    with MockEms(first.chain_pem, first.key_pem, profile_action=Action.DENY) as ems:
        observation = client.connect(ems.host, ems.port, servername=FQDN)

    assert observation.outcome is OutcomeName.REFUSED_DENY


@needs_pebble
def test_pinned_fabric_down_until_reauthorized(
    issued: tuple[AcmeCertificate, AcmeCertificate],
) -> None:
    first, renewed = issued
    connector = FabricConnector("7.2.3")
    connector.authorize(first.chain_pem)

    down = connector.check(renewed.chain_pem)
    connector.authorize(renewed.chain_pem)
    up = connector.check(renewed.chain_pem)

    assert not down.up
    assert down.reasons == (FabricReason.FINGERPRINT_CHANGED,)
    assert up.up


@needs_pebble
def test_fabric_7_2_4_trusts_acme_renewal(
    issued: tuple[AcmeCertificate, AcmeCertificate],
) -> None:
    first, renewed = issued
    connector = FabricConnector("7.2.4")
    connector.authorize(first.chain_pem)

    status = connector.check(renewed.chain_pem)

    assert status.up
    assert status.renewal_accepted


def test_acme_import_needs_remote_https() -> None:
    settings = EmsSettings(remote_https_access=False, http_redirect=True)

    with pytest.raises(SettingsError, match="remote_https_access"):
        AcmeCertificateManager.import_into(settings, auto_renew=True)


def test_acme_import_needs_redirect() -> None:
    settings = EmsSettings(remote_https_access=True, http_redirect=False)

    with pytest.raises(SettingsError, match="http_redirect"):
        AcmeCertificateManager.import_into(settings, auto_renew=False)


def test_redirect_locked_while_auto_renew() -> None:
    settings = AcmeCertificateManager.import_into(
        EmsSettings(remote_https_access=True, http_redirect=True),
        auto_renew=True,
    )

    with pytest.raises(SettingsError, match="while ACME auto-renew is on"):
        settings.replace(http_redirect=False)


def test_responder_redirects_to_https() -> None:
    with Http01Responder(https_port=10443) as responder:
        opener = urllib.request.build_opener(_NoRedirect)
        with pytest.raises(urllib.error.HTTPError) as caught:
            opener.open(f"http://127.0.0.1:{responder.port}/console", timeout=5)
        caught.value.close()

    assert caught.value.code == 301
    assert caught.value.headers["Location"] == "https://127.0.0.1:10443/console"


def test_responder_serves_token() -> None:
    with Http01Responder() as responder:
        responder.tokens["abc"] = "abc.thumbprint"
        url = f"http://127.0.0.1:{responder.port}/.well-known/acme-challenge/abc"
        with urllib.request.urlopen(url, timeout=5) as response:
            body = response.read()

    assert body == b"abc.thumbprint"


def test_responder_unknown_token_404() -> None:
    with Http01Responder() as responder:
        url = f"http://127.0.0.1:{responder.port}/.well-known/acme-challenge/nope"
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(url, timeout=5)
        caught.value.close()

    assert caught.value.code == 404


def test_dns_answers_a_with_loopback() -> None:
    # Query id 0x1234, recursion desired, one question: ems.example.com A IN.
    name = b"\x03ems\x07example\x03com\x00"
    query = (
        b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + name + b"\x00\x01\x00\x01"
    )

    reply = answer_query(query)

    assert reply is not None
    assert reply[:2] == b"\x12\x34"
    assert reply[6:8] == b"\x00\x01"
    assert reply.endswith(b"\x7f\x00\x00\x01")


def test_dns_caa_gets_empty_answer() -> None:
    name = b"\x07example\x03com\x00"
    query = (
        b"\x00\x07\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + name + b"\x01\x01\x00\x01"
    )

    reply = answer_query(query)

    assert reply is not None
    assert reply[6:8] == b"\x00\x00"


def test_dns_ignores_truncated_query() -> None:
    assert answer_query(b"\x00\x01") is None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None
