"""``connect`` command: in-process against the mock EMS, and as a process
against ``openssl s_server``."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harness.cli import main
from harness.ems.server import MockEms
from harness.pki import Lab
from harness.pki.kinds import EMS_FQDN

EmsFactory = Callable[..., MockEms]


def _args(lab: Lab, ems: MockEms, *extra: str) -> list[str]:
    return [
        "connect",
        f"{ems.host}:{ems.port}",
        "--servername",
        EMS_FQDN,
        "--trust-store",
        str(lab.trust_store_path),
        *extra,
    ]


def test_valid_connects_exit_0(
    cert_lab: Lab, ems_factory: EmsFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    ems = ems_factory(kind="correct-fqdn")

    code = main(_args(cert_lab, ems, "--json"))

    result = json.loads(capsys.readouterr().out)
    assert code == 0
    assert result["outcome"] == "connected-valid"
    assert result["tls_version"] == "TLSv1.3"
    assert result["telemetry"]["completed"] is True


def test_warn_without_tty_refuses(
    cert_lab: Lab, ems_factory: EmsFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    ems = ems_factory(kind="wrong-host")

    code = main(_args(cert_lab, ems))

    captured = capsys.readouterr()
    assert code == 1
    assert "refused-prompt-denied" in captured.out
    assert "pass --answer allow or --answer deny" in captured.err
    assert ems.connections[-1].app_bytes_received == 0


def test_answer_allow_remembers(
    cert_lab: Lab,
    ems_factory: EmsFactory,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ems = ems_factory(kind="wrong-host")
    memory = str(tmp_path / "memory.json")

    first = main(
        _args(cert_lab, ems, "--answer", "allow", "--memory", memory, "--json")
    )
    second = main(_args(cert_lab, ems, "--memory", memory, "--json"))

    lines = capsys.readouterr().out.splitlines()
    assert (first, second) == (0, 0)
    assert json.loads(lines[0])["outcome"] == "connected-prompt-allowed"
    assert json.loads(lines[1])["outcome"] == "connected-remembered"


def test_deny_action_exit_1(
    cert_lab: Lab, ems_factory: EmsFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    ems = ems_factory(kind="self-signed-leaf")

    code = main(_args(cert_lab, ems, "--action", "deny", "--json"))

    result = json.loads(capsys.readouterr().out)
    assert code == 1
    assert result["outcome"] == "refused-deny"
    assert result["reasons"] == ["self-signed"]
    assert result["action_source"] == "installer"


def test_legacy_version_exit_1(
    cert_lab: Lab, ems_factory: EmsFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    ems = ems_factory(kind="correct-fqdn")

    code = main(_args(cert_lab, ems, "--client-version", "7.0.1", "--json"))

    assert code == 1
    assert json.loads(capsys.readouterr().out)["outcome"] == "refused-legacy"


def test_unreachable_exit_3(cert_lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.create_server(("127.0.0.1", 0)) as reserved:
        port = reserved.getsockname()[1]

    code = main(
        [
            "connect",
            f"127.0.0.1:{port}",
            "--trust-store",
            str(cert_lab.trust_store_path),
        ]
    )

    assert code == 3
    assert "handshake-failed" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("address", "message"),
    [("nohost", "is not HOST:PORT"), ("::1:8013", "IPv6 address in brackets")],
)
def test_bad_address_exit_2(
    cert_lab: Lab, address: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["connect", address, "--trust-store", str(cert_lab.trust_store_path)])

    assert code == 2
    assert message in capsys.readouterr().err


def test_missing_trust_store_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["connect", "127.0.0.1:1", "--trust-store", str(tmp_path / "absent.pem")]
    )

    assert code == 1
    assert "cannot read trust store" in capsys.readouterr().err


def test_corrupt_memory_exit_1(
    cert_lab: Lab,
    ems_factory: EmsFactory,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ems = ems_factory(kind="wrong-host")
    memory = tmp_path / "memory.json"
    memory.write_text("{")

    code = main(_args(cert_lab, ems, "--memory", str(memory)))

    assert code == 1
    assert "memory.json is corrupt" in capsys.readouterr().err


@pytest.fixture
def s_server(cert_lab: Lab) -> Iterator[int]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    with socket.create_server(("127.0.0.1", 0)) as reserved:
        port = reserved.getsockname()[1]
    built = cert_lab.kind("correct-fqdn")
    process = subprocess.Popen(
        [
            openssl,
            "s_server",
            "-quiet",
            "-tls1_3",
            "-www",
            "-accept",
            f"127.0.0.1:{port}",
            "-cert",
            str(built.leaf_path),
            "-key",
            str(built.key_path),
            "-cert_chain",
            str(built.chain_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.05)
    else:
        process.kill()
        pytest.fail(f"openssl s_server did not listen on 127.0.0.1:{port} in 10 s")
    yield port
    process.terminate()
    process.wait(timeout=10)


@pytest.mark.network_tools
def test_process_against_s_server(cert_lab: Lab, s_server: int) -> None:
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness",
            "connect",
            f"127.0.0.1:{s_server}",
            "--servername",
            EMS_FQDN,
            "--trust-store",
            str(cert_lab.trust_store_path),
            "--timeout",
            "1",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    result = json.loads(completed.stdout)
    assert completed.returncode == 0, completed.stderr
    assert result["outcome"] == "connected-valid"
    assert result["tls_version"] == "TLSv1.3"
    assert result["telemetry"]["completed"] is False
    assert result["leaf_sha256"] == cert_lab.kind("correct-fqdn").leaf_sha256


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("# Project\n\nNot a certificate.\n", "no PEM certificate found"),
        (
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            "a PEM certificate block is malformed",
        ),
    ],
    ids=["text-file", "bad-block"],
)
def test_unparsable_trust_store_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, message: str
) -> None:
    trust_store = tmp_path / "README.md"
    trust_store.write_text(content)

    code = main(["connect", "127.0.0.1:1", "--trust-store", str(trust_store)])

    err = capsys.readouterr().err
    assert code == 1
    assert f"cannot read trust store {trust_store}: {message}" in err
    assert "cryptography.io" not in err
    assert "MalformedFraming" not in err
    assert len(err.strip().splitlines()) == 1


def test_memory_folder_missing_exit_1(
    cert_lab: Lab, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "absent" / "dir"
    memory = folder / "memory.json"

    code = main(
        [
            "connect",
            "127.0.0.1:1",
            "--trust-store",
            str(cert_lab.trust_store_path),
            "--memory",
            str(memory),
        ]
    )

    err = capsys.readouterr().err
    assert code == 1
    assert f"folder {folder} of remembered-certificate file memory.json" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "absent").exists()


def test_memory_file_created_in_existing_folder(
    cert_lab: Lab,
    ems_factory: EmsFactory,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ems = ems_factory(kind="wrong-host")
    memory = tmp_path / "memory.json"

    code = main(_args(cert_lab, ems, "--answer", "allow", "--memory", str(memory)))

    assert code == 0, capsys.readouterr().err
    assert memory.exists()
