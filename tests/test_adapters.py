"""Real TLS clients driven by the adapters against every catalogue kind.

Each kind is served over real TLS 1.3 on loopback by a small pyOpenSSL server
that sends the kind's ``chain.pem`` exactly as written. The catalogue tests
compare every available adapter with the standards verdict and with the
deviations table in both directions.
"""

from __future__ import annotations

import contextlib
import re
import select
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL

from harness.adapters import (
    ADAPTERS,
    DEVIATIONS,
    Adapter,
    AdapterResult,
    get_adapter,
    lookup_deviation,
)
from harness.adapters.base import Completed, clean_environment
from harness.adapters.deviations import Deviation
from harness.adapters.programs import CurlAdapter, GnutlsAdapter, OpensslAdapter
from harness.model import CnFallback, Reason
from harness.oracle.standards import expected_reasons_for_kind
from harness.pki import Lab

CLIENT_ADAPTERS = [name for name in ADAPTERS if name != "command"]
TIMEOUT = 15.0

OPENSSL_TEMPLATE = (
    "openssl s_client -connect {host}:{port} -tls1_3 -servername {servername} "
    "-verify_hostname {servername} -verify_return_error -CAfile {cafile} "
    "-no-CApath -no-CAstore -brief"
)


class ChainServer:
    """A TLS 1.3 server that sends one certificate chain file as it is.

    Every accepted connection completes the handshake (or fails it, when the
    client rejects the certificate), reads what the client sends and closes.
    Errors other than TLS failures are re-raised on exit.
    """

    def __init__(self, chain_path: Path, key_path: Path, host: str) -> None:
        self.host = host
        self._context = SSL.Context(SSL.TLS_METHOD)
        self._context.set_min_proto_version(SSL.TLS1_3_VERSION)
        self._context.use_certificate_chain_file(str(chain_path))
        self._context.use_privatekey_file(str(key_path))
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._listener = socket.socket(family, socket.SOCK_STREAM)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._failures: list[BaseException] = []

    @property
    def port(self) -> int:
        return int(self._listener.getsockname()[1])

    def __enter__(self) -> ChainServer:
        self._listener.bind((self.host, 0))
        self._listener.listen(64)
        self._listener.settimeout(0.1)
        accept = threading.Thread(target=self._accept_loop, daemon=True)
        accept.start()
        self._threads.append(accept)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        for thread in list(self._threads):
            thread.join(timeout=10)
        self._listener.close()
        if self._failures:
            raise RuntimeError(
                f"server {self.host}:{self.port} failed"
            ) from self._failures[0]

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError as exc:
                self._failures.append(exc)
                return
            handler = threading.Thread(target=self._serve, args=(sock,), daemon=True)
            handler.start()
            self._threads.append(handler)

    def _serve(self, sock: socket.socket) -> None:
        with sock:
            sock.setblocking(False)
            conn = SSL.Connection(self._context, sock)
            conn.set_accept_state()
            try:
                self._retry(sock, conn.do_handshake)
                self._retry(sock, lambda: conn.recv(4096))
            except (SSL.Error, OSError, TimeoutError):
                # Rejections, closed connections and silent clients all end
                # here; only the client's verdict matters.
                pass
            except BaseException as exc:
                self._failures.append(exc)

    def _retry(self, sock: socket.socket, step: object) -> None:
        assert callable(step)
        while True:
            try:
                step()
                return
            except (SSL.WantReadError, SSL.WantWriteError):
                if self._stop.is_set() or not select.select([sock], [], [], 5)[0]:
                    raise TimeoutError("client went silent") from None


def _host_for(reference_identity: str) -> str:
    return "::1" if ":" in reference_identity else "127.0.0.1"


@pytest.fixture(scope="module")
def servers(cert_lab: Lab) -> Iterator[dict[str, ChainServer]]:
    """One running server per catalogue kind."""
    with contextlib.ExitStack() as stack:
        running = {}
        for name, built in cert_lab.kinds.items():
            server = ChainServer(
                built.chain_path, built.key_path, _host_for(built.reference_identity)
            )
            running[name] = stack.enter_context(server)
        yield running


def _check(
    adapter: Adapter, lab: Lab, servers: dict[str, ChainServer], kind: str
) -> AdapterResult:
    server = servers[kind]
    return adapter.check(
        host=server.host,
        port=server.port,
        servername=lab.kinds[kind].reference_identity,
        cafile=lab.trust_store_path,
        timeout=TIMEOUT,
    )


def _require(adapter: Adapter) -> None:
    available, why = adapter.availability()
    if not available:
        pytest.skip(why)


# -- a few kinds per adapter ---------------------------------------------------

BASIC_CASES = [
    ("correct-fqdn", "accepted", None),
    ("wrong-host", "rejected", Reason.HOSTNAME_MISMATCH),
    ("expired-leaf", "rejected", Reason.EXPIRED),
    ("untrusted-private-ca", "rejected", Reason.UNTRUSTED_ISSUER),
    ("missing-intermediate", "rejected", Reason.INCOMPLETE_CHAIN),
    ("ip-san", "accepted", None),
    ("ip-v6-san", "accepted", None),
]


@pytest.mark.network_tools
@pytest.mark.parametrize("adapter_name", CLIENT_ADAPTERS)
@pytest.mark.parametrize(
    ("kind", "status", "hint"), BASIC_CASES, ids=[c[0] for c in BASIC_CASES]
)
def test_adapter_basic_kinds(
    cert_lab: Lab,
    servers: dict[str, ChainServer],
    adapter_name: str,
    kind: str,
    status: str,
    hint: Reason | None,
) -> None:
    adapter = get_adapter(adapter_name)
    _require(adapter)

    result = _check(adapter, cert_lab, servers, kind)

    assert result.status == status, result
    assert result.command, result
    assert result.duration > 0
    if hint is not None:
        assert hint in result.reasons_hint, result


IN_PROCESS_ADAPTERS = ["python-ssl", "pyopenssl"]


@pytest.mark.parametrize("adapter_name", IN_PROCESS_ADAPTERS)
def test_invalid_reference_identity_is_rejected(
    cert_lab: Lab, servers: dict[str, ChainServer], adapter_name: str
) -> None:
    adapter = get_adapter(adapter_name)
    _require(adapter)

    result = _check(adapter, cert_lab, servers, "double-trailing-dot-reference")

    assert result.status == "rejected", result
    assert "ems.example.com.." in result.detail
    assert "invalid reference identity" in result.detail
    assert Reason.HOSTNAME_MISMATCH in result.reasons_hint


@pytest.mark.parametrize("adapter_name", IN_PROCESS_ADAPTERS)
def test_unreadable_ca_file_is_error(
    tmp_path: Path, servers: dict[str, ChainServer], adapter_name: str
) -> None:
    adapter = get_adapter(adapter_name)
    _require(adapter)
    server = servers["correct-fqdn"]

    result = adapter.check(
        host=server.host,
        port=server.port,
        servername="ems.example.com",
        cafile=tmp_path / "missing.pem",
        timeout=TIMEOUT,
    )

    assert result.status == "error", result
    assert result.detail


@pytest.mark.network_tools
def test_command_adapter_openssl_template(
    cert_lab: Lab, servers: dict[str, ChainServer]
) -> None:
    adapter = get_adapter("command", template=OPENSSL_TEMPLATE)
    _require(adapter)

    good = _check(adapter, cert_lab, servers, "correct-fqdn")
    bad = _check(adapter, cert_lab, servers, "wrong-host")

    assert good.status == "accepted", good
    assert bad.status == "rejected", bad
    assert "ems.example.com" in good.command
    assert str(cert_lab.trust_store_path) in good.command


@pytest.mark.network_tools
def test_command_adapter_keeps_verification_line(
    cert_lab: Lab, servers: dict[str, ChainServer]
) -> None:
    adapter = get_adapter("command", template=OPENSSL_TEMPLATE)
    _require(adapter)

    bad = _check(adapter, cert_lab, servers, "wrong-host")

    assert bad.status == "rejected", bad
    assert "hostname mismatch" in bad.detail
    assert len(bad.detail) <= 220
    assert "\n" not in bad.detail


def test_command_failure_prefers_human_line() -> None:
    adapter = get_adapter("command", template="tool {host}")
    stderr = (
        "Connecting to 127.0.0.1\n"
        "Verification error: hostname mismatch\n"
        "40C7:error:0A000086:SSL routines:tls_post_process_server_certificate:"
        "certificate verify failed:../ssl/statem/statem_clnt.c:1889:\n"
    )

    result = adapter.classify(  # type: ignore[attr-defined]
        Completed(returncode=1, stdout="", stderr=stderr)
    )

    assert result.detail == "exit 1: Verification error: hostname mismatch"


def test_command_failure_joins_last_lines() -> None:
    adapter = get_adapter("command", template="tool {host}")
    stderr = "one\ntwo\n\nthree\nfour\n" + "x" * 400 + "\n"

    result = adapter.classify(  # type: ignore[attr-defined]
        Completed(returncode=1, stdout="", stderr=stderr)
    )

    assert result.detail.startswith("exit 1: three | four | xxx")
    assert result.detail.endswith("...")
    assert len(result.detail) <= len("exit 1: ") + 200


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("sh -c 'unbalanced", "does not split: No closing quotation"),
        ("", "the command template is empty"),
        ("   ", "the command template is empty"),
        ("openssl s_client -connect {hst}:{port}", "unknown placeholder {hst}"),
    ],
)
def test_command_template_is_validated(template: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        get_adapter("command", template=template)


def test_command_template_allows_json_braces(tmp_path: Path) -> None:
    adapter = get_adapter("command", template="tool --data '{\"a\": 1}' {host}")

    argv = adapter.build_argv(  # type: ignore[attr-defined]
        "127.0.0.1", 8013, "x", tmp_path / "ca.pem", 5.0, tmp_path
    )

    assert argv == ["tool", "--data", '{"a": 1}', "127.0.0.1"]


def test_command_template_keeps_values_whole(tmp_path: Path) -> None:
    adapter = get_adapter("command", template="tool --name={servername} {cafile} x{}")

    argv = adapter.build_argv(  # type: ignore[attr-defined]
        "127.0.0.1", 8013, "a b", tmp_path / "ca file.pem", 5.0, tmp_path
    )

    assert argv == ["tool", "--name=a b", str(tmp_path / "ca file.pem"), "x{}"]


def test_command_adapter_without_template() -> None:
    adapter = get_adapter("command")

    result = adapter.check(
        host="127.0.0.1", port=1, servername="x", cafile=Path("ca.pem"), timeout=1
    )

    assert result.status == "skipped"
    assert "template" in result.detail


# -- missing programs, hangs and the environment ---------------------------------


def test_missing_program_is_skipped(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    adapter = get_adapter("curl")

    available, why = adapter.availability()
    result = adapter.check(
        host="127.0.0.1", port=1, servername="x", cafile=tmp_path, timeout=1
    )

    assert available is False
    assert why == "curl not found; install Debian package curl"
    assert result.status == "skipped"
    assert result.detail == why


def test_missing_command_program_is_skipped(tmp_path: Path) -> None:
    adapter = get_adapter("command", template="no-such-tls-client-xyz {host}")

    result = adapter.check(
        host="127.0.0.1", port=1, servername="x", cafile=tmp_path, timeout=1
    )

    assert result.status == "skipped"
    assert "no-such-tls-client-xyz not found" in result.detail


@contextlib.contextmanager
def _silent_server() -> Iterator[tuple[str, int]]:
    """A TCP server that accepts connections and never sends a byte."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept_loop() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                accepted.append(listener.accept()[0])

    thread = threading.Thread(target=accept_loop, daemon=True)
    thread.start()
    try:
        yield "127.0.0.1", int(listener.getsockname()[1])
    finally:
        stop.set()
        thread.join(timeout=5)
        for sock in accepted:
            sock.close()
        listener.close()


@pytest.mark.network_tools
def test_hanging_server_gives_timeout(cert_lab: Lab) -> None:
    adapters = [get_adapter(name) for name in CLIENT_ADAPTERS]
    adapters.append(get_adapter("command", template=OPENSSL_TEMPLATE))
    adapters = [a for a in adapters if a.availability()[0]]

    with _silent_server() as (host, port), ThreadPoolExecutor(len(adapters)) as pool:
        futures = {
            adapter.name: pool.submit(
                adapter.check,
                host=host,
                port=port,
                servername="ems.example.com",
                cafile=cert_lab.trust_store_path,
                timeout=2.0,
            )
            for adapter in adapters
        }
        results = {name: future.result() for name, future in futures.items()}

    for name, result in results.items():
        assert result.status == "timeout", (name, result)


def test_clean_environment_drops_trust_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    names = ["SSL_CERT_FILE", "SSL_CERT_DIR", "CURL_CA_BUNDLE", "NODE_EXTRA_CA_CERTS"]
    for name in [*names, "NODE_OPTIONS"]:
        monkeypatch.setenv(name, "/nonexistent")

    env = clean_environment()

    for name in [*names, "NODE_OPTIONS", "HOME"]:
        assert name not in env


@pytest.mark.network_tools
def test_trust_environment_is_ignored(
    cert_lab: Lab,
    servers: dict[str, ChainServer],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    private_root = tmp_path / "ca" / "private-root.pem"
    private_root.parent.mkdir()
    private_root.write_bytes(
        cert_lab.role_certs["private-root"].public_bytes(serialization.Encoding.PEM)
    )
    for name in ("SSL_CERT_FILE", "CURL_CA_BUNDLE", "NODE_EXTRA_CA_CERTS"):
        monkeypatch.setenv(name, str(private_root))
    monkeypatch.setenv("SSL_CERT_DIR", str(private_root.parent))
    adapters = [get_adapter(name) for name in CLIENT_ADAPTERS]

    results = {
        adapter.name: _check(adapter, cert_lab, servers, "untrusted-private-ca")
        for adapter in adapters
        if adapter.availability()[0]
    }

    for name, result in results.items():
        assert result.status == "rejected", (name, result)


# -- registry and classification -------------------------------------------------


def test_get_adapter_unknown_name() -> None:
    with pytest.raises(KeyError, match="unknown adapter 'lynx'; known adapters: "):
        get_adapter("lynx")


def test_get_adapter_template_for_other_adapter() -> None:
    with pytest.raises(ValueError, match="adapter 'curl' takes no command template"):
        get_adapter("curl", template="curl {host}")


def test_registry_names_match() -> None:
    for name, adapter in ADAPTERS.items():
        assert adapter.name == name
        assert adapter.description


@pytest.mark.parametrize(
    ("code", "stderr", "status"),
    [
        (52, "curl: (52) Empty reply from server\n", "accepted"),
        (8, "curl: (8) Weird server reply\n", "accepted"),
        (
            60,
            "curl: (60) SSL certificate problem: certificate has expired\n",
            "rejected",
        ),
        (35, "curl: (35) OpenSSL SSL_connect: SSL_ERROR_SYSCALL\n", "error"),
        (56, "curl: (56) OpenSSL SSL_read: unexpected eof\n", "accepted"),
        (56, "curl: (56) OpenSSL SSL_connect: Connection reset\n", "error"),
        (7, "curl: (7) Failed to connect to ems.example.com\n", "error"),
        (28, "curl: (28) Operation timed out\n", "timeout"),
    ],
)
def test_curl_exit_codes(code: int, stderr: str, status: str) -> None:
    result = CurlAdapter().classify(Completed(code, "", stderr))

    assert result.status == status, result


def test_gnutls_reset_after_handshake() -> None:
    stdout = "- Status: The certificate is trusted. \n- Handshake was completed\n"
    stderr = "*** Fatal error: Error in the pull function.\n"

    result = GnutlsAdapter().classify(Completed(1, stdout, stderr))

    assert result.status == "accepted", result


def test_openssl_reset_after_handshake() -> None:
    stderr = "CONNECTION ESTABLISHED\nVerification: OK\nread:errno=104\n"

    result = OpensslAdapter().classify(Completed(1, "", stderr))

    assert result.status == "accepted", result


def test_lookup_deviation() -> None:
    entry = lookup_deviation("node", "wildcard-partial-label", CnFallback.WHEN_NO_SAN)

    assert entry is not None
    assert entry.status == "accepted"
    assert lookup_deviation("node", "correct-fqdn", "when-no-san") is None
    assert lookup_deviation("curl", "cn-only-no-san", "when-no-san") is None
    assert lookup_deviation("curl", "cn-only-no-san", "never") is not None


def test_deviation_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown kind 'no-such-kind'"):
        Deviation("curl", ("no-such-kind",), "accepted", "reason")


# -- the whole catalogue -----------------------------------------------------------


@pytest.fixture(scope="module")
def catalogue_results(
    cert_lab: Lab, servers: dict[str, ChainServer]
) -> dict[tuple[str, str], AdapterResult]:
    """Every available adapter's result on every catalogue kind."""
    adapters = [get_adapter(name) for name in CLIENT_ADAPTERS]
    adapters = [adapter for adapter in adapters if adapter.availability()[0]]
    with ThreadPoolExecutor(max_workers=16) as pool:
        futures = {
            (adapter.name, kind): pool.submit(_check, adapter, cert_lab, servers, kind)
            for adapter in adapters
            for kind in cert_lab.kinds
        }
        return {key: future.result() for key, future in futures.items()}


def _standards_status(lab: Lab, kind: str, mode: CnFallback) -> str:
    reasons = expected_reasons_for_kind(lab.kinds[kind].kind, mode, lab.built_at)
    return "rejected" if reasons else "accepted"


@pytest.mark.network_tools
@pytest.mark.slow
@pytest.mark.parametrize("mode", list(CnFallback), ids=str)
def test_catalogue_disagreements_are_listed(
    cert_lab: Lab,
    catalogue_results: dict[tuple[str, str], AdapterResult],
    mode: CnFallback,
) -> None:
    unexplained = []

    for (adapter, kind), result in catalogue_results.items():
        deviation = lookup_deviation(adapter, kind, mode)
        expected = (
            deviation.status if deviation else _standards_status(cert_lab, kind, mode)
        )
        if result.status != expected:
            unexplained.append(
                f"{adapter} / {kind}: expected {expected}, got {result.status} "
                f"({result.detail})"
            )

    assert unexplained == []


@pytest.mark.network_tools
@pytest.mark.slow
def test_catalogue_deviations_are_needed(
    cert_lab: Lab, catalogue_results: dict[tuple[str, str], AdapterResult]
) -> None:
    stale = []

    for entry in DEVIATIONS:
        for kind in entry.kinds:
            for mode in entry.modes:
                result = catalogue_results.get((entry.adapter, kind))
                if result is None:
                    continue  # the adapter is not available here
                standards = _standards_status(cert_lab, kind, mode)
                if standards == entry.status:
                    stale.append(f"{entry.adapter} / {kind} / {mode}: agrees anyway")
                elif result.status != entry.status:
                    stale.append(
                        f"{entry.adapter} / {kind} / {mode}: listed {entry.status}, "
                        f"got {result.status} ({result.detail})"
                    )

    assert stale == []
