"""``serve`` in-process for its errors, and as a real process for real clients."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from harness.cli import main
from harness.ems.telemetry import Frame, FrameDecoder, MessageType, encode_frame
from harness.pki import Lab

FQDN = "ems.example.com"
STARTUP_TIMEOUT = 60.0
CLIENT_TIMEOUT = 20.0


def test_help_explains_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["serve", "--help"])

    out = capsys.readouterr().out
    assert code == 0
    for option in (
        "--kind",
        "--lab-dir",
        "--cert",
        "--key",
        "--ems-version",
        "--use-ssl-cert / --no-use-ssl-cert",
        "--profile-action",
        "--host",
        "--port",
        "--settings",
        "--ready-file",
        "--allow-non-loopback",
        "--telemetry-command",
    ):
        assert option in out


def test_help_hides_command_alias(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["serve", "--help"])

    out = capsys.readouterr().out
    assert code == 0
    assert " --command " not in out


def test_help_explains_ready_file_lifecycle(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(["serve", "--help"])

    out = " ".join(capsys.readouterr().out.split())
    assert code == 0
    assert "removed again on SIGINT or SIGTERM" in out
    assert "never appears half written" in out


@pytest.mark.parametrize(
    ("args", "message", "exit_code"),
    [
        (["--kind", "no-such-kind"], "unknown kind 'no-such-kind'", 2),
        (
            ["--kind", "correct-fqdn", "--cert", "{chain}", "--key", "{key}"],
            "not both",
            2,
        ),
        (["--cert", "{chain}"], "--cert and --key go together", 2),
        (
            ["--host", "192.0.2.1"],
            "not a loopback address; pass --allow-non-loopback",
            2,
        ),
        (["--host", "banana"], "'--host': 'banana' is not an IP address", 2),
        (
            ["--ems-version", "6.4.6", "--use-ssl-cert"],
            "use_ssl_certificate_for_endpoint_control",
            1,
        ),
        (["--ems-version", "seven"], "'--ems-version': invalid version 'seven'", 2),
    ],
    ids=[
        "unknown-kind",
        "kind-and-cert",
        "cert-no-key",
        "non-loopback",
        "host-not-ip",
        "toggle",
        "ver",
    ],
)
def test_serve_errors_one_line(
    cert_lab: Lab,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
    exit_code: int,
) -> None:
    built = cert_lab.kind("correct-fqdn")
    args = [a.format(chain=built.chain_path, key=built.key_path) for a in args] + [
        "--lab-dir",
        str(cert_lab.directory),
    ]

    code = main(["serve", *args])

    err = capsys.readouterr().err
    assert code == exit_code
    assert message in err
    assert len(err.strip().splitlines()) == 1


def test_non_loopback_from_settings_names_flag(
    tmp_path: Path, cert_lab: Lab, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = tmp_path / "ems.toml"
    settings.write_text('listen_address = "192.0.2.1"\n')

    code = main(
        ["serve", "--settings", str(settings), "--lab-dir", str(cert_lab.directory)]
    )

    err = capsys.readouterr().err
    assert code == 1
    assert "pass --allow-non-loopback" in err
    assert "allow_non_loopback=True" not in err


def test_mismatched_cert_and_key_names_both(
    cert_lab: Lab, capsys: pytest.CaptureFixture[str]
) -> None:
    chain_path = cert_lab.kind("correct-fqdn").chain_path
    key_path = cert_lab.kind("wrong-host").key_path
    # serve would block until a signal if this pair matched.
    leaf = x509.load_pem_x509_certificates(chain_path.read_bytes())[0]
    key = serialization.load_pem_private_key(key_path.read_bytes(), None)
    assert leaf.public_key() != key.public_key()

    code = main(
        [
            "serve",
            "--cert",
            str(chain_path),
            "--key",
            str(key_path),
            "--lab-dir",
            str(cert_lab.directory),
        ]
    )

    err = capsys.readouterr().err
    assert code == 1
    assert str(chain_path) in err
    assert str(key_path) in err
    assert "does not belong to the leaf certificate" in err
    assert f"invalid --key {key_path}:" in err
    assert "imported_certificate" not in err
    assert len(err.strip().splitlines()) == 1, err


def test_chain_given_as_key_says_no_key(
    cert_lab: Lab, capsys: pytest.CaptureFixture[str]
) -> None:
    chain_path = cert_lab.kind("correct-fqdn").chain_path

    code = main(
        [
            "serve",
            "--cert",
            str(chain_path),
            "--key",
            str(chain_path),
            "--lab-dir",
            str(cert_lab.directory),
        ]
    )

    err = capsys.readouterr().err
    assert code == 1
    assert f"invalid --key {chain_path}: the file contains no PEM private key" in err
    assert "password" not in err
    assert len(err.strip().splitlines()) == 1, err


def test_failed_start_removes_stale_ready_file(
    tmp_path: Path, cert_lab: Lab, capsys: pytest.CaptureFixture[str]
) -> None:
    ready_file = tmp_path / "ready.json"
    ready_file.write_text('{"port": 1}\n')

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        code = main(
            [
                "serve",
                "--lab-dir",
                str(cert_lab.directory),
                "--port",
                str(port),
                "--ready-file",
                str(ready_file),
            ]
        )

    assert code == 1
    assert "cannot start the mock EMS" in capsys.readouterr().err
    assert not ready_file.exists()


@dataclass
class Served:
    process: subprocess.Popen[str]
    ready: dict[str, object]
    ready_file: Path

    @property
    def port(self) -> int:
        return int(str(self.ready["port"]))

    @property
    def trust_store(self) -> str:
        return str(self.ready["trust_store"])


def _start_serve(tmp_path: Path, lab: Lab | None, *args: str) -> Served:
    """Start ``serve`` in ``tmp_path``; without ``lab``, give no --lab-dir."""
    ready_file = tmp_path / "ready.json"
    lab_args = [] if lab is None else ["--lab-dir", str(lab.directory)]
    command = [
        sys.executable,
        "-m",
        "harness",
        "serve",
        *lab_args,
        "--ready-file",
        str(ready_file),
        *args,
    ]
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while not ready_file.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            _, err = process.communicate(timeout=CLIENT_TIMEOUT)
            pytest.fail(f"serve did not become ready: rc={process.returncode} {err}")
        time.sleep(0.05)
    return Served(process, json.loads(ready_file.read_text()), ready_file)


def _stop(served: Served, sig: signal.Signals) -> tuple[int, str, str]:
    served.process.send_signal(sig)
    try:
        out, err = served.process.communicate(timeout=CLIENT_TIMEOUT)
    except subprocess.TimeoutExpired:
        served.process.kill()
        out, err = served.process.communicate()
        pytest.fail(f"serve did not stop on {sig.name}: {err}")
    return served.process.returncode, out, err


@pytest.fixture
def served(tmp_path: Path, cert_lab: Lab) -> Iterator[Served]:
    served = _start_serve(tmp_path, cert_lab, "--kind", "correct-fqdn")
    yield served
    if served.process.poll() is None:
        served.process.kill()
        served.process.communicate()


def _run(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command,
        input="",
        capture_output=True,
        text=True,
        timeout=CLIENT_TIMEOUT,
        check=False,
    )


def _s_client(served: Served, *options: str) -> subprocess.CompletedProcess[str]:
    return _run(
        [
            "openssl",
            "s_client",
            "-connect",
            f"127.0.0.1:{served.port}",
            "-CAfile",
            served.trust_store,
            "-servername",
            FQDN,
            "-verify_hostname",
            FQDN,
            "-verify_return_error",
            *options,
        ]
    )


needs_openssl = pytest.mark.skipif(
    shutil.which("openssl") is None, reason="needs the openssl program"
)
needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")


def test_ready_file_contents(served: Served, cert_lab: Lab) -> None:
    assert served.ready["host"] == "127.0.0.1"
    assert served.ready["kind"] == "correct-fqdn"
    assert served.ready["reference_identity"] == FQDN
    assert served.ready["trust_store"] == str(cert_lab.trust_store_path)
    assert served.port > 0


def _kind_files(lab: Lab, kind: str) -> list[str]:
    built = lab.kind(kind)
    return ["--cert", str(built.chain_path), "--key", str(built.key_path)]


def test_cert_from_lab_uses_that_lab(tmp_path: Path, cert_lab: Lab) -> None:
    served = _start_serve(tmp_path, None, *_kind_files(cert_lab, "wildcard-match"))
    try:
        code, out, _ = _stop(served, signal.SIGTERM)
    finally:
        if served.process.poll() is None:
            served.process.kill()

    assert code == 0
    assert served.ready["trust_store"] == str(cert_lab.trust_store_path)
    assert f"trust store {cert_lab.trust_store_path}" in out
    assert served.ready["kind"] == "wildcard-match"
    expected = cert_lab.kind("wildcard-match").reference_identity
    assert served.ready["reference_identity"] == expected
    assert not (tmp_path / "certs").exists()


def test_default_lab_build_is_announced(tmp_path: Path) -> None:
    served = _start_serve(tmp_path, None, "--kind", "correct-fqdn")
    try:
        code, _, err = _stop(served, signal.SIGTERM)
    finally:
        if served.process.poll() is None:
            served.process.kill()

    assert code == 0
    assert "building a lab in certs for the vendor and built-in certificates" in err
    assert (tmp_path / "certs" / "manifest.json").is_file()


def test_cert_outside_labs_has_no_trust_store(tmp_path: Path, cert_lab: Lab) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    built = cert_lab.kind("correct-fqdn")
    chain = outside / "chain.pem"
    key = outside / "key.pem"
    shutil.copyfile(built.chain_path, chain)
    shutil.copyfile(built.key_path, key)
    key.chmod(0o600)

    served = _start_serve(tmp_path, cert_lab, "--cert", str(chain), "--key", str(key))
    try:
        code, out, _ = _stop(served, signal.SIGTERM)
    finally:
        if served.process.poll() is None:
            served.process.kill()

    assert code == 0
    assert served.ready["trust_store"] is None
    assert served.ready["kind"] is None
    assert f"a trust store with the CA that issued {chain}" in out


@pytest.mark.network_tools
@needs_openssl
def test_openssl_tls13_verifies(served: Served) -> None:
    result = _s_client(served, "-tls1_3")

    assert result.returncode == 0, result.stderr
    assert "Verify return code: 0 (ok)" in result.stdout
    assert "TLSv1.3" in result.stdout


@pytest.mark.network_tools
@needs_openssl
def test_openssl_tls12_refused(served: Served) -> None:
    result = _s_client(served, "-tls1_2")

    assert result.returncode != 0
    assert "alert protocol version" in result.stderr


def _curl(served: Served, trust_store: str) -> subprocess.CompletedProcess[str]:
    return _run(
        [
            "curl",
            "--silent",
            "--show-error",
            "--max-time",
            str(int(CLIENT_TIMEOUT)),
            "--cacert",
            trust_store,
            "--resolve",
            f"{FQDN}:{served.port}:127.0.0.1",
            f"https://{FQDN}:{served.port}/",
        ]
    )


# curl exit codes: 35 is a TLS handshake failure and 60 a certificate that
# failed verification. After a good handshake the server replies to the HTTP
# request with a telemetry ERROR frame, which curl reports as an invalid
# HTTP/0.9 reply (1), an empty reply (52) or a receive failure (56).
CURL_TLS_OK = {0, 1, 52, 56}
CURL_TLS_FAILED = {35, 60}


@pytest.mark.network_tools
@needs_curl
def test_curl_verifies_certificate(served: Served) -> None:
    result = _curl(served, served.trust_store)

    assert result.returncode in CURL_TLS_OK, result.stderr


@pytest.mark.network_tools
@needs_curl
def test_curl_wrong_trust_store_fails(
    served: Served, cert_lab: Lab, tmp_path: Path
) -> None:
    # The private root signs nothing the EMS sends, so verification must fail.
    other_root = tmp_path / "private-root.pem"
    other_root.write_bytes(
        cert_lab.role_certs["private-root"].public_bytes(serialization.Encoding.PEM)
    )

    result = _curl(served, str(other_root))

    assert result.returncode in CURL_TLS_FAILED, result.stderr


def _telemetry_session(served: Served, endpoint_id: str) -> None:
    context = ssl.create_default_context(cafile=served.trust_store)
    with (
        socket.create_connection(("127.0.0.1", served.port), CLIENT_TIMEOUT) as raw,
        context.wrap_socket(raw, server_hostname=FQDN) as tls,
    ):
        payload = {"endpoint_id": endpoint_id, "hostname": "pc", "version": "7.0.2"}
        tls.sendall(encode_frame(MessageType.REGISTER, payload))
        decoder = FrameDecoder()
        frames: list[Frame] = []
        while len(frames) < 2:
            frames += decoder.feed(tls.recv(65536))
        tls.sendall(encode_frame(MessageType.BYE, {}))
        assert tls.recv(1) == b""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_signal_stops_cleanly(served: Served, sig: signal.Signals) -> None:
    _telemetry_session(served, f"ep-{sig.name}")

    code, out, err = _stop(served, sig)

    assert code == 0, err
    lines = out.strip().splitlines()
    assert "listening on 127.0.0.1:" in lines[0]
    assert "trust store" in lines[0]
    records = json.loads(lines[-1])["endpoints"]
    assert [r["endpoint_id"] for r in records] == [f"ep-{sig.name}"]
    assert records[0]["profile_delivered"] == "warn"
    assert records[0]["online"] is False


def test_exit_records_show_wall_clock(served: Served) -> None:
    before = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    _telemetry_session(served, "ep-clock")

    code, out, err = _stop(served, signal.SIGTERM)

    assert code == 0, err
    after = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
    records = json.loads(out.strip().splitlines()[-1])["endpoints"]
    last_seen = dt.datetime.fromisoformat(records[0]["last_seen"])
    assert last_seen.utcoffset() == dt.timedelta(0)
    assert before <= last_seen <= after


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_signal_removes_ready_file(served: Served, sig: signal.Signals) -> None:
    assert served.ready_file.exists()

    code, _, err = _stop(served, sig)

    assert code == 0, err
    assert not served.ready_file.exists()
    # No temporary file is left next to it either.
    assert list(served.ready_file.parent.iterdir()) == []


def _commands_received(served: Served) -> list[str]:
    context = ssl.create_default_context(cafile=served.trust_store)
    with (
        socket.create_connection(("127.0.0.1", served.port), CLIENT_TIMEOUT) as raw,
        context.wrap_socket(raw, server_hostname=FQDN) as tls,
    ):
        payload = {"endpoint_id": "ep-commands", "hostname": "pc", "version": "7.0.2"}
        tls.sendall(encode_frame(MessageType.REGISTER, payload))
        decoder = FrameDecoder()
        frames: list[Frame] = []
        while len(frames) < 2:
            frames += decoder.feed(tls.recv(65536))
        tls.sendall(encode_frame(MessageType.ENDPOINT_INFO, {}))
        commands: list[Frame] = []
        while len(commands) < 2:
            commands += decoder.feed(tls.recv(65536))
        tls.sendall(encode_frame(MessageType.BYE, {}))
    assert all(frame.type is MessageType.COMMAND for frame in commands)
    return [str(frame.payload["command"]) for frame in commands]


def test_telemetry_command_and_alias(tmp_path: Path, cert_lab: Lab) -> None:
    served = _start_serve(
        tmp_path,
        cert_lab,
        "--kind",
        "correct-fqdn",
        "--telemetry-command",
        "scan",
        "--command",
        "sync",
    )
    try:
        received = _commands_received(served)
    finally:
        code, _, err = _stop(served, signal.SIGTERM)

    assert code == 0, err
    assert received == ["scan", "sync"]


def test_no_use_ssl_cert_presents_vendor(tmp_path: Path, cert_lab: Lab) -> None:
    served = _start_serve(
        tmp_path, cert_lab, "--kind", "correct-fqdn", "--no-use-ssl-cert"
    )

    code, out, _ = _stop(served, signal.SIGTERM)

    assert code == 0
    assert served.ready["kind"] == "vendor-default"
    assert served.ready["presented"] == "vendor"
    assert "presenting the vendor certificate" in out
