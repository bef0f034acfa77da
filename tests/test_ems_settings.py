"""EMS settings: admin rules, certificate selection, TOML files and uploads."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from harness.ems.server import MockEms
from harness.ems.settings import (
    CertificateSource,
    EmsSettings,
    ImportedCertificate,
    Installer,
    Profile,
    SettingsError,
)
from harness.model import Action, PresentedCertificate
from harness.pki import Lab

ACME = ImportedCertificate(
    source=CertificateSource.ACME, kind="correct-fqdn", auto_renew=True
)
UPLOAD = ImportedCertificate(kind="correct-fqdn")


def _acme_ready() -> EmsSettings:
    return EmsSettings(remote_https_access=True, http_redirect=True).replace(
        imported_certificate=ACME
    )


# -- admin rules ----------------------------------------------------------------


def test_defaults_are_valid() -> None:
    EmsSettings().validate()


def test_all_addresses_need_fqdn() -> None:
    settings = EmsSettings(fqdn=None)

    with pytest.raises(SettingsError, match="requires an FQDN") as info:
        settings.replace(listen_address="0.0.0.0")

    assert info.value.setting == "listen_address"
    assert settings.listen_address == "127.0.0.1"


def test_all_addresses_with_fqdn_accepted() -> None:
    assert EmsSettings().replace(listen_address="::").listen_address == "::"


def test_fqdn_cannot_be_removed_while_listening_on_all() -> None:
    settings = EmsSettings().replace(listen_address="0.0.0.0")

    with pytest.raises(SettingsError, match="listen_address"):
        settings.replace(fqdn=None)


@pytest.mark.parametrize("missing", ["remote_https_access", "http_redirect"])
def test_acme_import_needs_https_and_redirect(missing: str) -> None:
    settings = EmsSettings(remote_https_access=True, http_redirect=True).replace(
        **{missing: False}
    )

    with pytest.raises(SettingsError, match="ACME import requires it") as info:
        settings.replace(imported_certificate=ACME)

    assert info.value.setting == missing
    assert settings.imported_certificate is None


@pytest.mark.parametrize("setting", ["remote_https_access", "http_redirect"])
def test_acme_auto_renew_blocks_turning_off(setting: str) -> None:
    settings = _acme_ready()

    with pytest.raises(SettingsError, match="while ACME auto-renew is on"):
        settings.replace(**{setting: False})

    assert getattr(settings, setting) is True


def test_turning_off_allowed_after_auto_renew_off() -> None:
    settings = _acme_ready()
    no_renew = ImportedCertificate(
        source=CertificateSource.ACME, kind="correct-fqdn", auto_renew=False
    )

    # Switching auto-renew off is itself checked while it was on, so it
    # passes with both settings still on; afterwards they may go off.
    settings = settings.replace(imported_certificate=no_renew)
    changed = settings.replace(remote_https_access=False, http_redirect=False)

    assert not changed.remote_https_access


@pytest.mark.parametrize("version", ["6.4.6", "7.0.0", "7.0.1", "6.2.9"])
@pytest.mark.parametrize("value", [True, False])
def test_toggle_missing_before_feature(version: str, value: bool) -> None:
    settings = EmsSettings(ems_version=version)

    with pytest.raises(SettingsError, match="does not exist on EMS") as info:
        settings.replace(use_ssl_certificate_for_endpoint_control=value)

    assert info.value.setting == "use_ssl_certificate_for_endpoint_control"


@pytest.mark.parametrize("version", ["6.4.7", "7.0.2", "7.2.0"])
def test_toggle_exists_from_feature(version: str) -> None:
    settings = EmsSettings(ems_version=version).replace(
        use_ssl_certificate_for_endpoint_control=True
    )

    assert settings.use_ssl_certificate_for_endpoint_control


def test_downgrade_with_toggle_rejected() -> None:
    settings = EmsSettings().replace(use_ssl_certificate_for_endpoint_control=False)

    with pytest.raises(SettingsError, match=r"does not exist on EMS 6\.4\.6"):
        settings.replace(ems_version="6.4.6")


@pytest.mark.parametrize(
    ("changes", "setting", "rule"),
    [
        ({"ems_version": "7.x"}, "ems_version", "dotted integers"),
        ({"hostname": "ems 01"}, "hostname", "one DNS label"),
        ({"fqdn": "localhost"}, "fqdn", "at least two labels"),
        ({"listen_address": "ems.local"}, "listen_address", "IPv4 or IPv6"),
        ({"port": 70000}, "port", "0 to 65535"),
        ({"profiles": ()}, "profiles", "at least one profile"),
        ({"profiles": (Profile("a"), Profile("a"))}, "profiles", "unique"),
        ({"installers": (Installer(""),)}, "installers", "non-empty name"),
        (
            {"imported_certificate": ImportedCertificate()},
            "imported_certificate",
            "exactly one of",
        ),
        (
            {"imported_certificate": ImportedCertificate(kind="k", auto_renew=True)},
            "imported_certificate.auto_renew",
            "only to an ACME",
        ),
        (
            {"imported_certificate": ImportedCertificate(chain_file="c.pem")},
            "imported_certificate.key_file",
            "go together",
        ),
        ({"no_such_setting": 1}, "no_such_setting", "unknown setting"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_invalid_values_name_setting(
    changes: dict[str, object], setting: str, rule: str
) -> None:
    settings = EmsSettings()

    with pytest.raises(SettingsError, match=rule) as info:
        settings.replace(**changes)

    assert info.value.setting == setting
    assert setting in str(info.value)
    assert settings == EmsSettings()


def test_password_hidden_from_repr_and_errors() -> None:
    imported = ImportedCertificate(kind="correct-fqdn", password="s3cret-pw")

    with pytest.raises(SettingsError) as info:
        EmsSettings().replace(imported_certificate=imported)

    assert "s3cret-pw" not in repr(imported)
    assert "s3cret-pw" not in str(info.value)


# -- which certificate is presented ----------------------------------------------


@pytest.mark.parametrize(
    ("version", "toggle", "imported", "presented", "kind"),
    [
        ("6.4.6", None, UPLOAD, PresentedCertificate.VENDOR, "vendor-default"),
        ("7.0.1", None, None, PresentedCertificate.VENDOR, "vendor-default"),
        ("6.4.7", False, UPLOAD, PresentedCertificate.VENDOR, "vendor-default"),
        ("7.0.2", None, UPLOAD, PresentedCertificate.VENDOR, "vendor-default"),
        ("6.4.7", True, UPLOAD, PresentedCertificate.IMPORTED, "correct-fqdn"),
        (
            "7.2.0",
            True,
            None,
            PresentedCertificate.BUILTIN_DEFAULT,
            "ems-builtin-default",
        ),
    ],
)
def test_presented_certificate(
    version: str,
    toggle: bool | None,
    imported: ImportedCertificate | None,
    presented: PresentedCertificate,
    kind: str,
) -> None:
    settings = EmsSettings(
        ems_version=version,
        use_ssl_certificate_for_endpoint_control=toggle,
        imported_certificate=imported,
    )
    settings.validate()

    assert settings.presented_certificate() is presented
    assert settings.presented_kind() == kind


def test_profile_action_absent_on_legacy() -> None:
    settings = EmsSettings(profiles=(Profile("p", Action.DENY),))

    assert settings.profile_action() is Action.DENY
    assert settings.replace(ems_version="7.0.1").profile_action() is None


def _served_leaf(ems: MockEms, lab: Lab) -> x509.Certificate:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        ems,
        socket.create_connection(ems.address, timeout=10) as raw,
        context.wrap_socket(raw) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


@pytest.mark.parametrize(
    ("toggle", "imported", "kind"),
    [
        (False, UPLOAD, "vendor-default"),
        (True, UPLOAD, "correct-fqdn"),
        (True, None, "ems-builtin-default"),
    ],
)
def test_from_settings_serves_presented(
    cert_lab: Lab, toggle: bool, imported: ImportedCertificate | None, kind: str
) -> None:
    settings = EmsSettings(
        port=0,
        use_ssl_certificate_for_endpoint_control=toggle,
        imported_certificate=imported,
    )

    ems = MockEms.from_settings(settings, cert_lab)
    leaf = _served_leaf(ems, cert_lab)

    expected = x509.load_pem_x509_certificate(
        cert_lab.kind(kind).leaf_path.read_bytes()
    )
    assert leaf == expected
    assert ems.kind_name == kind


def test_builtin_default_names_other_hostname(cert_lab: Lab) -> None:
    settings = EmsSettings(
        port=0, hostname="ems77", use_ssl_certificate_for_endpoint_control=True
    )

    leaf = _served_leaf(MockEms.from_settings(settings, cert_lab), cert_lab)

    cns = leaf.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    assert [a.value for a in cns] == ["ems77"]
    assert leaf.issuer == leaf.subject


# -- uploads with passwords ----------------------------------------------------------


def _write_pkcs12(lab: Lab, path: Path, password: bytes | None) -> None:
    built = lab.kind("correct-fqdn")
    certs = x509.load_pem_x509_certificates(built.chain_path.read_bytes())
    key = serialization.load_pem_private_key(built.key_path.read_bytes(), None)
    encryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    path.write_bytes(
        pkcs12.serialize_key_and_certificates(
            b"ems",
            key,
            certs[0],
            certs[1:],
            encryption,  # type: ignore[arg-type]
        )
    )


def test_pkcs12_upload_with_password(cert_lab: Lab, tmp_path: Path) -> None:
    _write_pkcs12(cert_lab, tmp_path / "ems.p12", b"pw-1234")
    imported = ImportedCertificate(pkcs12_file="ems.p12", password="pw-1234")

    chain_pem, key_pem = imported.load_files(tmp_path)

    expected = cert_lab.kind("correct-fqdn").chain_path.read_bytes()
    assert x509.load_pem_x509_certificates(chain_pem) == (
        x509.load_pem_x509_certificates(expected)
    )
    assert b"PRIVATE KEY" in key_pem


def test_pkcs12_wrong_password(cert_lab: Lab, tmp_path: Path) -> None:
    _write_pkcs12(cert_lab, tmp_path / "ems.p12", b"pw-1234")
    imported = ImportedCertificate(pkcs12_file="ems.p12", password="wrong")

    with pytest.raises(SettingsError, match="cannot open the PKCS#12 bundle"):
        imported.load_files(tmp_path)


def test_upload_key_of_other_leaf(cert_lab: Lab, tmp_path: Path) -> None:
    chain_file = cert_lab.kind("correct-fqdn").chain_path
    key_file = cert_lab.kind("wrong-host").key_path
    imported = ImportedCertificate(chain_file=str(chain_file), key_file=str(key_file))

    with pytest.raises(SettingsError) as raised:
        imported.load_files(tmp_path)

    message = str(raised.value)
    assert raised.value.setting == "imported_certificate.key_file"
    assert str(key_file) in message
    assert f"chain file {chain_file}" in message
    assert "does not belong to the leaf certificate" in message


def test_encrypted_key_upload(cert_lab: Lab, tmp_path: Path) -> None:
    built = cert_lab.kind("correct-fqdn")
    key = serialization.load_pem_private_key(built.key_path.read_bytes(), None)
    (tmp_path / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"pw"),
        )
    )
    (tmp_path / "chain.pem").write_bytes(built.chain_path.read_bytes())
    good = ImportedCertificate(
        chain_file="chain.pem", key_file="key.pem", password="pw"
    )
    missing = ImportedCertificate(chain_file="chain.pem", key_file="key.pem")

    chain_pem, key_pem = good.load_files(tmp_path)

    assert chain_pem == built.chain_path.read_bytes()
    assert b"ENCRYPTED" not in key_pem
    with pytest.raises(SettingsError, match="wrong or missing password"):
        missing.load_files(tmp_path)


def test_settings_file_upload_served(cert_lab: Lab, tmp_path: Path) -> None:
    _write_pkcs12(cert_lab, tmp_path / "ems.p12", b"pw")
    settings = EmsSettings(
        port=0,
        use_ssl_certificate_for_endpoint_control=True,
        imported_certificate=ImportedCertificate(pkcs12_file="ems.p12", password="pw"),
    )
    settings.save(tmp_path / "ems.toml")

    loaded = EmsSettings.load(tmp_path / "ems.toml")
    ems = MockEms.from_settings(loaded, cert_lab, base_dir=tmp_path)
    leaf = _served_leaf(ems, cert_lab)

    expected = cert_lab.kind("correct-fqdn").leaf_path.read_bytes()
    assert leaf == x509.load_pem_x509_certificate(expected)
    assert ems.presented is PresentedCertificate.IMPORTED
    assert ems.kind_name is None


# -- TOML ---------------------------------------------------------------------------


def test_toml_round_trip(tmp_path: Path) -> None:
    settings = _acme_ready().replace(
        use_ssl_certificate_for_endpoint_control=True,
        profiles=(Profile("default", Action.ALLOW), Profile("lab", Action.DENY)),
        installers=(Installer("win", Action.ALLOW),),
        fqdn="ems.corp.example",
    )
    path = tmp_path / "ems.toml"

    settings.save(path)

    assert EmsSettings.load(path) == settings
    assert path.stat().st_mode & 0o777 == 0o600


def test_toml_user_edit(tmp_path: Path) -> None:
    path = tmp_path / "ems.toml"
    path.write_text(
        'ems_version = "6.4.7"\n'
        "use_ssl_certificate_for_endpoint_control = true\n"
        "[imported_certificate]\n"
        'kind = "wrong-host"\n'
        "[[profiles]]\n"
        'name = "default"\n'
        'invalid_cert_action = "deny"\n'
    )

    settings = EmsSettings.load(path)

    assert settings.presented_kind() == "wrong-host"
    assert settings.profile_action() is Action.DENY


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("ems_version = [", "invalid TOML"),
        ("colour = 'red'", "unknown setting"),
        ("port = '8013'", "expected int, got str"),
        ("port = true", "expected int, got bool"),
        ("[[profiles]]\nname = 'p'\ninvalid_cert_action = 'block'", "allow, warn"),
        ("[imported_certificate]\nsource = 'ftp'\nkind = 'k'", "upload or acme"),
        (
            "ems_version = '6.4.6'\nuse_ssl_certificate_for_endpoint_control = true",
            "6.4.6",
        ),
    ],
    ids=["syntax", "unknown", "port-str", "port-bool", "action", "source", "toggle"],
)
def test_toml_errors(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "ems.toml"
    path.write_text(text)

    with pytest.raises(SettingsError, match=match):
        EmsSettings.load(path)


def test_apply_in_toml_form() -> None:
    settings = EmsSettings()

    changed = settings.apply(
        {"profiles": [{"name": "default", "invalid_cert_action": "deny"}]}
    )

    assert changed.profile_action() is Action.DENY
    assert settings.profile_action() is Action.WARN
    with pytest.raises(SettingsError, match="does not exist"):
        changed.apply(
            {"ems_version": "7.0.0", "use_ssl_certificate_for_endpoint_control": True}
        )
