"""A TLS 1.3 server on loopback that sends exactly the certificate bytes given.

The client-side fuzzers serve certificates that cryptography refuses to
parse (bad encodings, odd string types, garbage in the chain), so this
server hands the DER to OpenSSL through pyOpenSSL without ever parsing it
in Python. OpenSSL still has to load each certificate: bytes it cannot
decode (truncated DER, for one) cannot be served and are reported as
:class:`UnservableError`.

After the handshake the server speaks the smallest useful part of the
telemetry protocol, so a client that trusts the certificate can finish its
session: LICENSE and CONFIG after REGISTER, nothing after ENDPOINT_INFO,
close after BYE or end of stream.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import threading
import types
import warnings
from collections.abc import Sequence

from OpenSSL import SSL, crypto

from harness.ems.telemetry import FrameDecoder, FrameError, MessageType, encode_frame

logger = logging.getLogger(__name__)

_ACCEPT_POLL = 0.2


def block_with_timeout(sock: socket.socket, timeout: float) -> None:
    """Make ``sock`` blocking, with kernel send and receive timeouts.

    pyOpenSSL needs a blocking socket: on a Python socket with a timeout the
    descriptor is non-blocking and every read raises ``WantReadError``.
    """
    sock.settimeout(None)
    seconds = int(timeout)
    interval = struct.pack("ll", seconds, int((timeout - seconds) * 1e6))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, interval)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, interval)


class UnservableError(ValueError):
    """OpenSSL cannot load the certificate or key, so nothing can serve it."""


def _context(chain_der: Sequence[bytes], key_pem: bytes) -> SSL.Context:
    context = SSL.Context(SSL.TLS_METHOD)
    context.set_min_proto_version(SSL.TLS1_3_VERSION)
    # pyOpenSSL deprecates its own X509 objects in favour of cryptography's,
    # but cryptography rejects bytes that OpenSSL loads, and serving those
    # is the point here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            certs = [
                crypto.load_certificate(crypto.FILETYPE_ASN1, der) for der in chain_der
            ]
            key = crypto.load_privatekey(crypto.FILETYPE_PEM, key_pem)
            context.use_certificate(certs[0])
            context.use_privatekey(key)
            for cert in certs[1:]:
                context.add_extra_chain_cert(cert)
        except (crypto.Error, SSL.Error, IndexError) as exc:
            raise UnservableError(f"OpenSSL cannot serve this chain: {exc}") from exc
    return context


class CertServer:
    """Serve one certificate chain over TLS 1.3 on 127.0.0.1, one thread.

    Use as a context manager. Connections are handled one at a time, each
    bounded by ``timeout`` seconds per read. An error in the server thread
    is re-raised by ``__exit__``.

    Raises:
        UnservableError: OpenSSL rejects the chain or the key (at creation).
    """

    def __init__(
        self, chain_der: Sequence[bytes], key_pem: bytes, timeout: float = 5.0
    ) -> None:
        self._context = _context(chain_der, key_pem)
        self._timeout = timeout
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(_ACCEPT_POLL)
        self.host, self.port = self._listener.getsockname()[:2]
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._serve, name=f"cert-server-{self.port}", daemon=True
        )
        self._error: BaseException | None = None
        self.handshakes = 0

    def __enter__(self) -> CertServer:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: types.TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(self._timeout + 2 * _ACCEPT_POLL)
        self._listener.close()
        if self._thread.is_alive():
            raise RuntimeError(
                f"certificate server on port {self.port} did not stop within "
                f"{self._timeout + 2 * _ACCEPT_POLL:.1f} s"
            )
        if self._error is not None and exc is None:
            raise self._error

    def _serve(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    raw, _ = self._listener.accept()
                except TimeoutError:
                    continue
                with raw:
                    # pyOpenSSL needs a blocking socket; kernel timeouts
                    # bound every read and write instead.
                    block_with_timeout(raw, self._timeout)
                    self._handle(raw)
        except BaseException as exc:
            self._error = exc

    def _handle(self, raw: socket.socket) -> None:
        connection = SSL.Connection(self._context, raw)
        connection.set_accept_state()
        try:
            connection.do_handshake()
            self.handshakes += 1
            self._telemetry(connection)
        except (SSL.Error, OSError) as exc:
            # A client that rejects the certificate aborts the handshake:
            # an expected event for this server, not a failure.
            logger.debug("connection on port %s ended: %s", self.port, exc)
        finally:
            with contextlib.suppress(SSL.Error, OSError):
                connection.shutdown()

    def _telemetry(self, connection: SSL.Connection) -> None:
        decoder = FrameDecoder()
        while True:
            try:
                data = connection.recv(16384)
            except SSL.ZeroReturnError:
                return
            if not data:
                return
            try:
                frames = decoder.feed(data)
            except FrameError as exc:
                connection.sendall(
                    encode_frame(MessageType.ERROR, {"reason": str(exc)})
                )
                return
            for frame in frames:
                if frame.type is MessageType.REGISTER:
                    connection.sendall(
                        encode_frame(
                            MessageType.LICENSE,
                            {
                                "license": "endpoint-control",
                                "seats": 1,
                                "expires": "2099-12-31",
                            },
                        )
                        + encode_frame(
                            MessageType.CONFIG,
                            {
                                "profile": {
                                    "name": "fuzz",
                                    "invalid_cert_action": "allow",
                                }
                            },
                        )
                    )
                elif frame.type is MessageType.BYE:
                    return
