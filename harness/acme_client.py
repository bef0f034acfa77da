"""ACME for the mock EMS: Pebble on loopback, an HTTP-01 responder, renewals.

Theory of operation
-------------------

:class:`Pebble` runs the Pebble ACME test server (``/usr/bin/pebble``) as a
subprocess with its own configuration in a folder the caller owns. Every
listener is on 127.0.0.1: the ACME directory, the management interface
(which serves the issuing root at ``/roots/0``) and a loopback DNS responder
(:class:`LoopbackDns`) that Pebble's ``-dnsserver`` flag points at, so any
name the EMS requests resolves to 127.0.0.1 without touching the machine's
resolver. Pebble's HTTPS listener gets a certificate from a trustme CA that
only this process trusts, and the issuing root is fetched from the
management interface for the caller to trust, never installed anywhere.

:class:`AcmeCertificateManager` is the EMS side. It registers an account
with the ``acme`` client library, orders a certificate for the EMS FQDN,
answers the HTTP-01 challenge itself from :class:`Http01Responder` (an HTTP
listener on loopback that also redirects every other request to HTTPS, as
the EMS does when the HTTP-to-HTTPS redirect is on), and renews the
certificate once a third of its lifetime is left while auto-renew is on.

The EMS settings rules hold: an ACME import needs remote HTTPS access and
the HTTP-to-HTTPS redirect, which :class:`~harness.ems.settings.EmsSettings`
checks before any request is made.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import http.server
import json
import logging
import os
import select
import socket
import ssl
import struct
import subprocess
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import trustme
from acme import challenges, client, crypto_util, messages
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from josepy.jwk import JWKRSA

from harness.ems.settings import (
    CertificateSource,
    EmsSettings,
    ImportedCertificate,
)

logger = logging.getLogger(__name__)

PEBBLE_BINARY = Path("/usr/bin/pebble")
# The lab kind that stands for an ACME certificate in the settings model: a
# publicly trusted leaf naming the EMS FQDN.
ACME_MODEL_KIND = "correct-fqdn"
# Renew once this fraction of the certificate's lifetime is left.
RENEW_REMAINING_FRACTION = 1 / 3


class AcmeError(RuntimeError):
    """Pebble or an ACME exchange failed; the message names the step."""


def _free_port() -> int:
    # NOTE: the port is free when this returns; another process could take
    # it before Pebble binds it, which makes Pebble exit with a bind error.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class LoopbackDns:
    """A UDP DNS responder on 127.0.0.1 that answers every A query with 127.0.0.1.

    Other query types get an empty answer (NOERROR), so CAA lookups find no
    record and AAAA lookups find no IPv6 address. Use it as a context manager.
    """

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self.queries = 0

    @property
    def address(self) -> str:
        """``127.0.0.1:PORT`` for Pebble's ``-dnsserver`` flag."""
        return f"127.0.0.1:{self._sock.getsockname()[1]}"

    def __enter__(self) -> LoopbackDns:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self._sock], [], [], 0.1)
            if not ready:
                continue
            try:
                query, peer = self._sock.recvfrom(4096)
            except OSError:
                return
            reply = answer_query(query)
            if reply is not None:
                self.queries += 1
                self._sock.sendto(reply, peer)


def answer_query(query: bytes) -> bytes | None:
    """Return the reply to one DNS query, or ``None`` for a malformed one."""
    if len(query) < 12:
        return None
    ident, flags, qdcount = struct.unpack("!HHH", query[:6])
    if qdcount != 1 or flags & 0x8000:
        return None
    offset = 12
    while offset < len(query):
        length = query[offset]
        if length & 0xC0:
            return None
        offset += 1 + length
        if length == 0:
            break
    if offset + 4 > len(query):
        return None
    question = query[12 : offset + 4]
    qtype = struct.unpack("!H", query[offset : offset + 2])[0]

    # Response, recursion desired copied, recursion available, NOERROR.
    reply_flags = 0x8000 | (flags & 0x0100) | 0x0080
    answers = b""
    if qtype == 1:
        # A pointer to the name in the question, type A, class IN, TTL 60.
        answers = struct.pack("!HHHIH", 0xC00C, 1, 1, 60, 4) + bytes([127, 0, 0, 1])
    header = struct.pack("!HHHHHH", ident, reply_flags, 1, 1 if answers else 0, 0, 0)
    return header + question + answers


class Http01Responder:
    """The EMS's HTTP listener on loopback: ACME challenges, else a redirect.

    Args:
        port: TCP port on 127.0.0.1; 0 picks a free one.
        https_port: Port named in the redirect to HTTPS.
    """

    def __init__(self, port: int = 0, https_port: int = 443) -> None:
        self.tokens: dict[str, str] = {}
        self.requests: list[str] = []
        responder = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                responder.requests.append(self.path)
                prefix = "/" + challenges.HTTP01.URI_ROOT_PATH + "/"
                if self.path.startswith(prefix):
                    body = responder.tokens.get(self.path[len(prefix) :])
                    if body is None:
                        self.send_error(404, "unknown challenge token")
                        return
                    data = body.encode("ascii")
                    self.send_response(200)
                    self.send_header("Content-Type", "text/plain")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                host = (self.headers.get("Host") or "localhost").split(":")[0]
                self.send_response(301)
                self.send_header("Location", f"https://{host}:{https_port}{self.path}")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                logger.debug("HTTP-01 responder: " + format, *args)

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        """The bound TCP port."""
        return int(self._server.server_address[1])

    def __enter__(self) -> Http01Responder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


@dataclass(frozen=True)
class PebblePorts:
    """The loopback ports of one Pebble run."""

    acme: int
    management: int
    http01: int
    tls_alpn: int


class Pebble:
    """The Pebble ACME test server as a subprocess on loopback.

    Args:
        workdir: Folder for the configuration, TLS files and log.
        http01_port: The port Pebble validates HTTP-01 challenges on; the
            EMS's responder must listen there.
        binary: The Pebble executable.
        start_timeout: Seconds to wait for Pebble to accept connections.

    Raises:
        AcmeError: the binary is missing, or Pebble exited or did not listen
            within ``start_timeout``.
    """

    def __init__(
        self,
        workdir: Path,
        http01_port: int,
        *,
        binary: Path = PEBBLE_BINARY,
        start_timeout: float = 15.0,
    ) -> None:
        self.workdir = workdir
        self.binary = binary
        self.start_timeout = start_timeout
        self.ports = PebblePorts(_free_port(), _free_port(), http01_port, _free_port())
        self.server_ca = trustme.CA()
        self.server_ca_path = workdir / "pebble-server-ca.pem"
        self._process: subprocess.Popen[bytes] | None = None
        self._dns = LoopbackDns()
        self._log: Any = None

    @property
    def directory_url(self) -> str:
        """URL of the ACME directory."""
        return f"https://127.0.0.1:{self.ports.acme}/dir"

    def _write_config(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        leaf = self.server_ca.issue_cert("127.0.0.1", "localhost")
        cert_path = self.workdir / "pebble-server.pem"
        key_path = self.workdir / "pebble-server-key.pem"
        leaf.cert_chain_pems[0].write_to_path(str(cert_path))
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(leaf.private_key_pem.bytes())
        self.server_ca.cert_pem.write_to_path(str(self.server_ca_path))

        config = {
            "pebble": {
                "listenAddress": f"127.0.0.1:{self.ports.acme}",
                "managementListenAddress": f"127.0.0.1:{self.ports.management}",
                "certificate": str(cert_path),
                "privateKey": str(key_path),
                "httpPort": self.ports.http01,
                "tlsPort": self.ports.tls_alpn,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": False,
            }
        }
        path = self.workdir / "pebble-config.json"
        path.write_text(json.dumps(config, indent=2), encoding="utf-8")
        return path

    def start(self) -> None:
        """Write the configuration, start Pebble and wait until it listens."""
        if not self.binary.exists():
            raise AcmeError(f"Pebble is not installed at {self.binary}")
        config = self._write_config()
        self._dns.__enter__()
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PEBBLE_VA_NOSLEEP": "1",
            "PEBBLE_VA_ALWAYS_VALID": "0",
            # Pebble rejects a share of valid nonces by default to exercise
            # client retries; the tests want each exchange to run once.
            "PEBBLE_WFE_NONCEREJECT": "0",
        }
        self._log = open(self.workdir / "pebble.log", "wb")  # noqa: SIM115
        self._process = subprocess.Popen(
            [
                str(self.binary),
                "-config",
                str(config),
                "-dnsserver",
                self._dns.address,
            ],
            cwd=self.workdir,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self._wait_listening()
        logger.info("Pebble listening on %s", self.directory_url)

    def _wait_listening(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise AcmeError(
                    f"Pebble exited with code {self._process.returncode} at start; "
                    f"see {self.workdir / 'pebble.log'}"
                )
            ready = 0
            for port in (self.ports.acme, self.ports.management):
                with contextlib.suppress(OSError):
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    ready += 1
            if ready == 2:
                return
            time.sleep(0.05)
        self.stop()
        raise AcmeError(
            f"Pebble did not listen on 127.0.0.1:{self.ports.acme} within "
            f"{self.start_timeout} s"
        )

    def stop(self, timeout: float = 10.0) -> None:
        """Stop Pebble and the DNS responder."""
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=timeout)
            self._process = None
            self._dns.__exit__(None, None, None)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Pebble:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _management_get(self, path: str) -> bytes:
        context = ssl.create_default_context(cafile=str(self.server_ca_path))
        url = f"https://127.0.0.1:{self.ports.management}{path}"
        with urllib.request.urlopen(url, context=context, timeout=10) as response:
            data: bytes = response.read()
        return data

    def root_pem(self) -> bytes:
        """Return the PEM of Pebble's current issuing root."""
        return self._management_get("/roots/0")


@dataclass(frozen=True)
class AcmeCertificate:
    """A certificate obtained over ACME.

    Attributes:
        chain_pem: The leaf and the intermediates Pebble returned, as PEM.
        key_pem: The leaf's private key, PKCS#8 PEM.
        not_before: Start of the leaf's validity.
        not_after: End of the leaf's validity.
    """

    chain_pem: bytes
    key_pem: bytes = field(repr=False)
    not_before: dt.datetime
    not_after: dt.datetime

    @property
    def renew_at(self) -> dt.datetime:
        """When auto-renew replaces this certificate."""
        lifetime = self.not_after - self.not_before
        return self.not_after - lifetime * RENEW_REMAINING_FRACTION


class AcmeCertificateManager:
    """The EMS's ACME client: account, HTTP-01 answers, issuance and renewal.

    Args:
        directory_url: The ACME directory.
        server_ca: PEM file that verifies the ACME server's HTTPS certificate.
        responder: The EMS's HTTP listener on the port the CA validates.
        fqdn: The name the certificate is for.
        timeout: Seconds allowed for an order to become valid.
    """

    def __init__(
        self,
        directory_url: str,
        server_ca: Path,
        responder: Http01Responder,
        fqdn: str,
        *,
        timeout: float = 60.0,
    ) -> None:
        self.fqdn = fqdn
        self.responder = responder
        self.timeout = timeout
        self._account_key = JWKRSA(
            key=rsa.generate_private_key(public_exponent=65537, key_size=2048)
        )
        self._network = network = client.ClientNetwork(
            self._account_key,
            user_agent="ems-cert-harness",
            # requests accepts a CA bundle path where acme's annotation declares
            # bool, and the bundle keeps the machine's store out of it.
            verify_ssl=str(server_ca),  # type: ignore[arg-type]
        )
        try:
            directory = client.ClientV2.get_directory(directory_url, network)
            self._client = client.ClientV2(directory, net=network)
            self._client.new_account(
                messages.NewRegistration.from_data(terms_of_service_agreed=True)
            )
        except Exception as exc:
            # The acme library raises errors of requests, josepy and its own.
            raise AcmeError(f"ACME account registration failed: {exc}") from exc
        self.current: AcmeCertificate | None = None
        self.issued = 0

    def close(self) -> None:
        """Close the HTTPS connections to the ACME server."""
        self._network.session.close()

    def __enter__(self) -> AcmeCertificateManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def import_into(settings: EmsSettings, *, auto_renew: bool) -> EmsSettings:
        """Return ``settings`` with the ACME import enabled, validated.

        Raises:
            SettingsError: remote HTTPS access or the HTTP-to-HTTPS redirect
                is off, which an ACME import does not allow.
        """
        imported = ImportedCertificate(
            source=CertificateSource.ACME, kind=ACME_MODEL_KIND, auto_renew=auto_renew
        )
        return settings.replace(imported_certificate=imported)

    def obtain(self) -> AcmeCertificate:
        """Order, validate and download a certificate for the FQDN.

        Raises:
            AcmeError: the order failed or timed out.
        """
        key = ec.generate_private_key(ec.SECP256R1())
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        csr_pem = crypto_util.make_csr(key_pem, [self.fqdn])
        try:
            order = self._client.new_order(csr_pem)
            for authorization in order.authorizations:
                self._answer(authorization)
            deadline = dt.datetime.now() + dt.timedelta(seconds=self.timeout)
            order = self._client.poll_and_finalize(order, deadline=deadline)
        except AcmeError:
            raise
        except Exception as exc:
            raise AcmeError(f"ACME order for {self.fqdn} failed: {exc}") from exc

        chain_pem = order.fullchain_pem.encode("ascii")
        leaf = x509.load_pem_x509_certificates(chain_pem)[0]
        certificate = AcmeCertificate(
            chain_pem, key_pem, leaf.not_valid_before_utc, leaf.not_valid_after_utc
        )
        self.current = certificate
        self.issued += 1
        logger.info(
            "ACME certificate %d for %s valid until %s",
            self.issued,
            self.fqdn,
            certificate.not_after.isoformat(),
        )
        return certificate

    def _answer(self, authorization: messages.AuthorizationResource) -> None:
        # A CA may reuse an authorization it validated for an earlier order.
        if authorization.body.status == messages.STATUS_VALID:
            return
        for challenge in authorization.body.challenges:
            if isinstance(challenge.chall, challenges.HTTP01):
                response, validation = challenge.response_and_validation(
                    self._account_key
                )
                token = challenge.chall.encode("token")
                self.responder.tokens[token] = validation
                self._client.answer_challenge(challenge, response)
                return
        raise AcmeError(f"the ACME server offered no HTTP-01 challenge for {self.fqdn}")

    def renew_if_due(
        self, settings: EmsSettings, now: dt.datetime | None = None
    ) -> AcmeCertificate | None:
        """Renew when auto-renew is on and the certificate is due.

        Returns:
            The new certificate, or ``None`` when nothing was renewed.
        """
        imported = settings.imported_certificate
        if (
            imported is None
            or imported.source is not CertificateSource.ACME
            or not imported.auto_renew
        ):
            return None
        now = now or dt.datetime.now(dt.UTC)
        if self.current is not None and now < self.current.renew_at:
            return None
        return self.obtain()
