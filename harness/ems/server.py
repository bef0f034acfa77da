"""The mock EMS: a TLS 1.3 endpoint-control server that speaks mock telemetry.

Theory of operation
-------------------

One server thread runs a :mod:`selectors` loop over non-blocking sockets, so
a single :class:`MockEms` holds thousands of idle sessions without a thread
each. Every accepted socket is wrapped in a pyOpenSSL ``Connection`` and goes
through three phases:

1. *handshake*: ``do_handshake`` is retried on every readable or writable
   event until it completes, fails, or ``handshake_timeout`` passes since the
   TCP accept;
2. *session*: decrypted bytes are counted in the connection's
   :class:`ConnectionRecord` (how many and when the first arrived), then fed
   to a :class:`~harness.ems.telemetry.FrameDecoder`; each frame advances the
   telemetry session (REGISTER, LICENSE and CONFIG, ENDPOINT_INFO, COMMAND and
   COMMAND_RESULT, BYE). The connection closes after ``idle_timeout`` seconds
   without a received byte;
3. *closed*: the socket is closed and the record keeps why.

The TLS side is pyOpenSSL, set up by :mod:`harness.ems.tls` so that the
chain goes on the wire exactly as configured, broken chains included.

A protocol error (bad frame, unexpected message, invalid payload) is answered
with an ERROR frame where the socket still accepts it, then that connection
alone is closed. Each such error is logged once at INFO with the peer
address. An exception the loop does not expect is logged, closes its
connection, and is re-raised by :meth:`MockEms.stop`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import itertools
import logging
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from OpenSSL import SSL

from harness.ems.settings import (
    BUILTIN_DEFAULT_KIND,
    VENDOR_KIND,
    EmsSettings,
)
from harness.ems.telemetry import (
    SERVER_MESSAGES,
    Frame,
    FrameDecoder,
    FrameError,
    MessageType,
    encode_frame,
)
from harness.ems.tls import (
    build_context,
    check_bind_address,
    describe_error,
    session_reused,
)
from harness.model import Action, PresentedCertificate
from harness.versions import Version, has_feature

if TYPE_CHECKING:
    from harness.pki import Lab

logger = logging.getLogger(__name__)

_RECV_SIZE = 65536
_SEND_SIZE = 16384
_ACCEPT_BATCH = 64
# How often the loop checks handshake and idle deadlines, in seconds.
_SWEEP_INTERVAL = 0.05

LICENSE_PAYLOAD: dict[str, Any] = {
    "license": "endpoint-control",
    "seats": 10000,
    "expires": "2099-12-31",
}
COMMAND_STATUSES = frozenset({"ok", "failed"})


class EmsError(RuntimeError):
    """The mock EMS could not start or stop, or its server thread failed."""


@dataclass
class ConnectionRecord:
    """Record of one TCP connection. Times are ``time.monotonic()`` values.

    Attributes:
        connection_id: Sequence number of the connection on this server.
        peer: Client address and port.
        accepted_at: When the TCP connection was accepted.
        tls_version: Negotiated protocol name, ``None`` until the handshake ends.
        handshake_ok: Whether the TLS handshake completed.
        server_name: SNI host name the client sent, if any.
        session_reused: Whether the client resumed an earlier TLS session.
        error: Why the connection closed, ``None`` for a clean close.
        app_bytes_received: Decrypted application bytes received.
        first_app_byte_at: When the first application byte arrived.
        closed_at: When the server closed the connection.
        frames_received: Telemetry frames decoded on this connection.
        endpoint_id: Endpoint id from REGISTER.
        bye: Whether the client sent BYE.
    """

    connection_id: int
    peer: tuple[str, int]
    accepted_at: float
    tls_version: str | None = None
    handshake_ok: bool = False
    server_name: str | None = None
    session_reused: bool = False
    error: str | None = None
    app_bytes_received: int = 0
    first_app_byte_at: float | None = None
    closed_at: float | None = None
    frames_received: int = 0
    endpoint_id: str | None = None
    bye: bool = False


@dataclass
class EndpointRecord:
    """The EMS's view of one endpoint. ``last_seen`` is ``time.monotonic()``.

    Attributes:
        endpoint_id: Id the endpoint registered with.
        version: Client version from REGISTER.
        hostname: Endpoint host name from REGISTER.
        last_seen: When a frame from it last arrived, or its session closed.
        online: Whether a session with it is open.
        profile_delivered: Invalid certificate action in the last CONFIG sent,
            or ``None`` if none was sent or it carried no action.
        info: Last ENDPOINT_INFO payload.
        command_results: Status from each COMMAND_RESULT, by command id.
        sessions: Number of sessions it registered on.
    """

    endpoint_id: str
    version: str
    hostname: str
    last_seen: float
    online: bool = True
    profile_delivered: str | None = None
    info: dict[str, Any] = field(default_factory=dict)
    command_results: dict[int, str] = field(default_factory=dict)
    sessions: int = 0


class _Phase(enum.Enum):
    HANDSHAKE = "handshake"
    AWAIT_REGISTER = "await-register"
    AWAIT_INFO = "await-info"
    AWAIT_RESULTS = "await-results"
    READY = "ready"


class _ProtocolError(Exception):
    """The client broke the telemetry session; the message becomes ERROR.reason."""


class _Connection:
    """Server-side state of one accepted socket."""

    def __init__(
        self, sock: socket.socket, tls: SSL.Connection, record: ConnectionRecord
    ) -> None:
        self.sock = sock
        self.tls = tls
        self.record = record
        self.phase = _Phase.HANDSHAKE
        self.decoder = FrameDecoder()
        self.outbox = bytearray()
        self.deadline = 0.0
        self.want_write = False
        self.pending_commands: set[int] = set()
        self.closed = False

    @property
    def peer_text(self) -> str:
        host, port = self.record.peer
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class MockEms:
    """A mock EMS serving one certificate chain over TLS 1.3 on one port.

    Use it as a context manager; ``start`` waits until the server thread runs
    and ``stop`` joins it, both with a timeout.

    Args:
        chain_pem: Leaf first, then the certificates to send, in order.
        key_pem: The leaf's private key, unencrypted PEM.
        host: IP address to listen on; loopback unless ``allow_non_loopback``.
        port: TCP port; 0 picks a free ephemeral port.
        profile_action: Invalid certificate action sent in CONFIG. ``None``,
            or an EMS version before 6.4.7, sends a profile without one.
        ems_version: EMS version this server models.
        session_tickets: Whether clients can resume sessions with tickets.
            Without it, OpenSSL still sends TLS 1.3 tickets that resume
            nothing, because pyOpenSSL cannot set the ticket count to zero.
        commands: COMMAND names sent after ENDPOINT_INFO, in order.
        handshake_timeout: Seconds from TCP accept to the end of the handshake.
        idle_timeout: Seconds a session may go without a received byte.
        allow_non_loopback: Permit listening on a non-loopback address.
        profile_name: Name of the profile sent in CONFIG.

    Raises:
        ValueError: an invalid listen address, chain or key.
    """

    def __init__(
        self,
        chain_pem: bytes,
        key_pem: bytes,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        profile_action: Action | None = Action.WARN,
        ems_version: str = "7.0.2",
        session_tickets: bool = False,
        commands: Iterable[str] = ("sync",),
        handshake_timeout: float = 5.0,
        idle_timeout: float = 10.0,
        allow_non_loopback: bool = False,
        profile_name: str = "default",
    ) -> None:
        self._address = check_bind_address(host, allow_non_loopback)
        Version.parse(ems_version)
        self._requested_port = port
        self.ems_version = ems_version
        self.session_tickets = session_tickets
        self.commands = tuple(commands)
        self.handshake_timeout = handshake_timeout
        self.idle_timeout = idle_timeout
        self.profile_name = profile_name
        self.presented: PresentedCertificate | None = None
        self.kind_name: str | None = None

        self._context = build_context(
            chain_pem, key_pem, session_tickets=session_tickets
        )
        self._profile_action = profile_action
        self._lock = threading.Condition()
        self._records: list[ConnectionRecord] = []
        self._endpoints: dict[str, EndpointRecord] = {}
        self._endpoint_owner: dict[str, int] = {}
        self._conns: dict[int, _Connection] = {}
        self._ids = itertools.count(1)
        self._command_ids = itertools.count(1)
        self._listener: socket.socket | None = None
        self._selector: selectors.DefaultSelector | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stopping = threading.Event()
        self._failures: list[BaseException] = []
        self._listener_paused_until: float | None = None

    # -- construction from the lab ----------------------------------------

    @classmethod
    def from_kind(cls, lab: Lab, kind_name: str, **kwargs: Any) -> MockEms:
        """Serve the chain and key of the lab kind ``kind_name``.

        Raises:
            KeyError: the lab has no such kind.
        """
        built = lab.kind(kind_name)
        ems = cls(built.chain_path.read_bytes(), built.key_path.read_bytes(), **kwargs)
        ems.kind_name = kind_name
        return ems

    @classmethod
    def from_settings(
        cls,
        settings: EmsSettings,
        lab: Lab,
        *,
        base_dir: Path | None = None,
        **kwargs: Any,
    ) -> MockEms:
        """Serve the certificate that ``settings`` make the EMS present.

        The version, profile action, listen address and port come from the
        settings unless ``kwargs`` override them. An imported certificate
        given as files is read relative to ``base_dir``.
        """
        presented = settings.presented_certificate()
        kind_name = settings.presented_kind()
        chain_pem, key_pem = _presented_pem(settings, lab, base_dir)

        kwargs.setdefault("ems_version", settings.ems_version)
        kwargs.setdefault("profile_action", settings.profile_action())
        kwargs.setdefault("profile_name", settings.profiles[0].name)
        kwargs.setdefault("host", settings.listen_address)
        kwargs.setdefault("port", settings.port)
        ems = cls(chain_pem, key_pem, **kwargs)
        ems.presented = presented
        ems.kind_name = kind_name
        return ems

    # -- public state ------------------------------------------------------

    @property
    def host(self) -> str:
        """The address the server listens on."""
        return str(self._address)

    @property
    def port(self) -> int:
        """The bound TCP port.

        Raises:
            EmsError: the server has not been started.
        """
        if self._listener is None:
            raise EmsError("the mock EMS is not started, so it has no port yet")
        return int(self._listener.getsockname()[1])

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` of the listening socket."""
        return self.host, self.port

    @property
    def profile_action(self) -> Action | None:
        """Action the next CONFIG messages carry (``None``: none)."""
        return self._profile_action

    @property
    def connections(self) -> list[ConnectionRecord]:
        """Copies of every connection record, in accept order."""
        with self._lock:
            return [dataclasses.replace(r) for r in self._records]

    @property
    def endpoints(self) -> dict[str, EndpointRecord]:
        """Copies of every endpoint record, by endpoint id."""
        with self._lock:
            return {
                k: dataclasses.replace(
                    v, info=dict(v.info), command_results=dict(v.command_results)
                )
                for k, v in self._endpoints.items()
            }

    def set_certificate(self, chain_pem: bytes, key_pem: bytes) -> None:
        """Serve a new chain to connections accepted from now on.

        Raises:
            ValueError: an invalid chain or key; the old one stays in use.
        """
        context = build_context(
            chain_pem, key_pem, session_tickets=self.session_tickets
        )
        with self._lock:
            self._context = context
        logger.info("mock EMS %s: certificate replaced", self._where())

    def set_profile_action(self, action: Action | None) -> None:
        """Set the action that CONFIG messages sent from now on carry."""
        with self._lock:
            self._profile_action = action

    def wait_for_connections(self, n: int, timeout: float) -> bool:
        """Wait until at least ``n`` connections were accepted; return success."""
        return self.wait_until(lambda ems: len(ems._records) >= n, timeout)

    def wait_until(self, predicate: Callable[[MockEms], bool], timeout: float) -> bool:
        """Wait until ``predicate(self)`` holds, re-checked on every record change.

        Returns:
            Whether the predicate held before ``timeout`` seconds passed.
        """
        with self._lock:
            return self._lock.wait_for(lambda: predicate(self), timeout)

    # -- lifecycle ----------------------------------------------------------

    def start(self, timeout: float = 5.0) -> None:
        """Bind, start the server thread and wait until it serves.

        Raises:
            EmsError: the address cannot be bound, or the thread did not start
                within ``timeout`` seconds.
        """
        if self._thread is not None:
            raise EmsError("the mock EMS is already started")
        if self._stopping.is_set():
            raise EmsError("a stopped mock EMS cannot start again; create a new one")
        family = socket.AF_INET6 if self._address.version == 6 else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((self.host, self._requested_port))
            listener.listen(1024)
            listener.setblocking(False)
        except OSError as exc:
            listener.close()
            raise EmsError(
                f"cannot listen on {self.host} port {self._requested_port}: {exc}"
            ) from exc
        self._listener = listener
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._selector.register(listener, selectors.EVENT_READ, "listener")
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")

        self._thread = threading.Thread(
            target=self._run, name=f"mock-ems-{self.port}", daemon=True
        )
        self._thread.start()
        if not self._ready.wait(timeout):
            self.stop(timeout)
            raise EmsError(f"mock EMS on {self._where()} did not start in {timeout}s")
        logger.info(
            "mock EMS %s listening, EMS %s, kind %s",
            self._where(),
            self.ems_version,
            self.kind_name,
        )

    def stop(self, timeout: float = 5.0) -> None:
        """Close every connection, stop the thread and release the port.

        Raises:
            EmsError: the thread did not stop within ``timeout`` seconds, or
                it failed; the original exception is the cause.
        """
        thread = self._thread
        if thread is None:
            return
        self._stopping.set()
        self._wake()
        thread.join(timeout)
        if thread.is_alive():
            raise EmsError(f"mock EMS {self._where()} did not stop within {timeout}s")
        where = self._where()
        for resource in (self._listener, self._wake_r, self._wake_w, self._selector):
            if resource is not None:
                resource.close()
        self._thread = None
        logger.info("mock EMS %s stopped", where)
        if self._failures:
            first = self._failures[0]
            raise EmsError(
                f"mock EMS {where} failed in its server thread: {first!r} "
                f"({len(self._failures)} failure(s))"
            ) from first

    def __enter__(self) -> MockEms:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _where(self) -> str:
        if self._listener is None or self._listener.fileno() == -1:
            return f"{self.host}:{self._requested_port}"
        if self._address.version == 6:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"

    def _wake(self) -> None:
        if self._wake_w is not None:
            # A full wake socket means a wake-up is already pending.
            with contextlib.suppress(OSError):
                self._wake_w.send(b"x")

    # -- server loop --------------------------------------------------------

    def _run(self) -> None:
        assert self._selector is not None
        next_sweep = time.monotonic() + _SWEEP_INTERVAL
        self._ready.set()
        try:
            while not self._stopping.is_set():
                # With no connection and no paused listener there is no
                # deadline to sweep, so an idle server sleeps until a socket
                # or the wake socket is ready instead of waking every sweep.
                idle = not self._conns and self._listener_paused_until is None
                timeout = None if idle else _SWEEP_INTERVAL
                for key, mask in self._selector.select(timeout):
                    if key.data == "listener":
                        self._accept()
                    elif key.data == "wake":
                        self._drain_wake()
                    else:
                        self._service(key.data, mask)
                now = time.monotonic()
                if now >= next_sweep:
                    self._sweep(now)
                    next_sweep = now + _SWEEP_INTERVAL
        except Exception as exc:
            logger.exception("mock EMS %s: server loop failed", self._where())
            self._failures.append(exc)
        finally:
            for conn in list(self._conns.values()):
                self._close(conn, None if self._stopping.is_set() else "server failed")

    def _drain_wake(self) -> None:
        assert self._wake_r is not None
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass

    def _accept(self) -> None:
        assert self._listener is not None and self._selector is not None
        for _ in range(_ACCEPT_BATCH):
            try:
                sock, addr = self._listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                # Out of file descriptors, typically: pause accepting briefly
                # instead of spinning on a listener that stays readable.
                logger.warning(
                    "mock EMS %s: accept failed, pausing 0.1s: %s", self._where(), exc
                )
                self._selector.unregister(self._listener)
                self._listener_paused_until = time.monotonic() + 0.1
                return
            self._open(sock, (str(addr[0]), int(addr[1])))

    def _open(self, sock: socket.socket, peer: tuple[str, int]) -> None:
        assert self._selector is not None
        sock.setblocking(False)
        # Without TCP_NODELAY the reply to REGISTER waits for the client's
        # delayed ACK (about 40 ms on Linux), which dominates every session.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            context = self._context
            record = ConnectionRecord(next(self._ids), peer, time.monotonic())
            tls = SSL.Connection(context, sock)
            tls.set_accept_state()
            conn = _Connection(sock, tls, record)
            conn.deadline = record.accepted_at + self.handshake_timeout
            self._records.append(record)
            self._conns[record.connection_id] = conn
            self._lock.notify_all()
        self._selector.register(sock, selectors.EVENT_READ, conn)
        logger.debug("connection %d from %s accepted", record.connection_id, peer)

    def _sweep(self, now: float) -> None:
        assert self._selector is not None and self._listener is not None
        paused_until = self._listener_paused_until
        if paused_until is not None and now >= paused_until:
            self._selector.register(self._listener, selectors.EVENT_READ, "listener")
            self._listener_paused_until = None
        for conn in list(self._conns.values()):
            if now < conn.deadline:
                continue
            if conn.phase is _Phase.HANDSHAKE:
                self._close(
                    conn, f"handshake timed out after {self.handshake_timeout}s"
                )
            else:
                self._close(conn, f"idle for more than {self.idle_timeout}s")

    def _service(self, conn: _Connection, mask: int) -> None:
        try:
            if conn.phase is _Phase.HANDSHAKE:
                self._handshake(conn)
            if not conn.closed and conn.phase is not _Phase.HANDSHAKE:
                self._receive(conn)
            if not conn.closed:
                self._flush(conn)
        except _ProtocolError as exc:
            self._protocol_error(conn, str(exc))
        except FrameError as exc:
            self._protocol_error(conn, f"invalid frame: {exc}")
        except (SSL.Error, OSError) as exc:
            self._close(conn, f"TLS or socket error: {describe_error(exc)}")
        except Exception as exc:
            logger.exception(
                "connection %d from %s: unexpected error",
                conn.record.connection_id,
                conn.peer_text,
            )
            self._failures.append(exc)
            self._close(conn, f"unexpected server error: {exc!r}")

    def _handshake(self, conn: _Connection) -> None:
        try:
            conn.tls.do_handshake()
        except SSL.WantReadError:
            return
        except SSL.WantWriteError:
            self._set_want_write(conn, True)
            return
        except SSL.Error as exc:
            self._close(conn, f"handshake failed: {describe_error(exc)}")
            return

        with self._lock:
            record = conn.record
            record.handshake_ok = True
            record.tls_version = conn.tls.get_protocol_version_name()
            name = conn.tls.get_servername()
            record.server_name = name.decode("ascii", "replace") if name else None
            record.session_reused = session_reused(conn.tls)
            conn.phase = _Phase.AWAIT_REGISTER
            conn.deadline = time.monotonic() + self.idle_timeout
            self._lock.notify_all()
        logger.debug(
            "connection %d from %s: %s handshake done, SNI %s, resumed %s",
            record.connection_id,
            conn.peer_text,
            record.tls_version,
            record.server_name,
            record.session_reused,
        )

    def _receive(self, conn: _Connection) -> None:
        while not conn.closed:
            try:
                data = conn.tls.recv(_RECV_SIZE)
            except SSL.WantReadError:
                return
            except SSL.WantWriteError:
                self._set_want_write(conn, True)
                return
            except SSL.ZeroReturnError:
                data = b""
            except SSL.SysCallError as exc:
                # (-1, "Unexpected EOF") is a TCP close without close_notify.
                eof = exc.args[:1] == (-1,)
                self._peer_closed(
                    conn, None if eof else f"connection lost: {describe_error(exc)}"
                )
                return
            if not data:
                self._peer_closed(conn, None)
                return
            self._count_bytes(conn, len(data))
            for frame in conn.decoder.feed(data):
                self._handle_frame(conn, frame)
                if conn.closed:
                    return

    def _count_bytes(self, conn: _Connection, size: int) -> None:
        now = time.monotonic()
        with self._lock:
            record = conn.record
            if record.first_app_byte_at is None:
                record.first_app_byte_at = now
            record.app_bytes_received += size
            conn.deadline = now + self.idle_timeout
            self._lock.notify_all()

    def _peer_closed(self, conn: _Connection, error: str | None) -> None:
        if conn.decoder.buffered:
            error = f"client disconnected mid-frame ({conn.decoder.buffered} bytes)"
        elif error is None and not conn.record.bye:
            error = "client closed the connection without BYE"
        self._close(conn, error)

    def _flush(self, conn: _Connection) -> None:
        while conn.outbox:
            try:
                sent = conn.tls.send(bytes(conn.outbox[:_SEND_SIZE]))
            except (SSL.WantWriteError, SSL.WantReadError):
                self._set_want_write(conn, True)
                return
            del conn.outbox[:sent]
        self._set_want_write(conn, False)

    def _set_want_write(self, conn: _Connection, want: bool) -> None:
        assert self._selector is not None
        if conn.want_write == want or conn.closed:
            return
        conn.want_write = want
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if want else 0)
        self._selector.modify(conn.sock, events, conn)

    def _send(
        self, conn: _Connection, msg_type: MessageType, payload: dict[str, Any]
    ) -> None:
        conn.outbox += encode_frame(msg_type, payload)

    # -- telemetry session ---------------------------------------------------

    def _handle_frame(self, conn: _Connection, frame: Frame) -> None:
        with self._lock:
            conn.record.frames_received += 1
        logger.debug(
            "connection %d from %s: received %s",
            conn.record.connection_id,
            conn.peer_text,
            frame.type.name,
        )
        if frame.type in SERVER_MESSAGES:
            raise _ProtocolError(f"{frame.type.name} is a server message")
        if frame.type is MessageType.BYE:
            self._on_bye(conn)
            return
        expected = {
            _Phase.AWAIT_REGISTER: MessageType.REGISTER,
            _Phase.AWAIT_INFO: MessageType.ENDPOINT_INFO,
            _Phase.AWAIT_RESULTS: MessageType.COMMAND_RESULT,
        }.get(conn.phase)
        if frame.type is not expected:
            expected_name = expected.name if expected else "BYE"
            raise _ProtocolError(
                f"unexpected {frame.type.name}, expected {expected_name}"
            )
        if frame.type is MessageType.REGISTER:
            self._on_register(conn, frame.payload)
        elif frame.type is MessageType.ENDPOINT_INFO:
            self._on_endpoint_info(conn, frame.payload)
        else:
            self._on_command_result(conn, frame.payload)

    def _on_register(self, conn: _Connection, payload: dict[str, Any]) -> None:
        fields = {}
        for name in ("endpoint_id", "hostname", "version"):
            value = payload.get(name)
            if not isinstance(value, str) or not value:
                raise _ProtocolError(f"REGISTER needs a non-empty string {name}")
            fields[name] = value
        endpoint_id = fields["endpoint_id"]

        action = self._profile_action if has_feature(self.ems_version) else None
        profile: dict[str, Any] = {"name": self.profile_name}
        if action is not None:
            profile["invalid_cert_action"] = action.value
        now = time.monotonic()
        with self._lock:
            endpoint = self._endpoints.get(endpoint_id)
            if endpoint is None:
                endpoint = EndpointRecord(
                    endpoint_id, fields["version"], fields["hostname"], now
                )
                self._endpoints[endpoint_id] = endpoint
            endpoint.version = fields["version"]
            endpoint.hostname = fields["hostname"]
            endpoint.last_seen = now
            endpoint.online = True
            endpoint.sessions += 1
            endpoint.profile_delivered = action.value if action is not None else None
            self._endpoint_owner[endpoint_id] = conn.record.connection_id
            conn.record.endpoint_id = endpoint_id
            self._lock.notify_all()

        self._send(conn, MessageType.LICENSE, dict(LICENSE_PAYLOAD))
        self._send(conn, MessageType.CONFIG, {"profile": profile})
        conn.phase = _Phase.AWAIT_INFO

    def _on_endpoint_info(self, conn: _Connection, payload: dict[str, Any]) -> None:
        with self._lock:
            endpoint = self._endpoint_of(conn)
            endpoint.info = dict(payload)
            endpoint.last_seen = time.monotonic()
            self._lock.notify_all()
        for command in self.commands:
            command_id = next(self._command_ids)
            conn.pending_commands.add(command_id)
            self._send(
                conn,
                MessageType.COMMAND,
                {"command_id": command_id, "command": command},
            )
        conn.phase = _Phase.AWAIT_RESULTS if self.commands else _Phase.READY

    def _on_command_result(self, conn: _Connection, payload: dict[str, Any]) -> None:
        command_id = payload.get("command_id")
        status = payload.get("status")
        if not isinstance(command_id, int) or command_id not in conn.pending_commands:
            raise _ProtocolError(
                f"COMMAND_RESULT for unknown command_id {command_id!r}"
            )
        if status not in COMMAND_STATUSES:
            raise _ProtocolError(
                f"COMMAND_RESULT status {status!r} is invalid, expected ok or failed"
            )
        conn.pending_commands.discard(command_id)
        with self._lock:
            endpoint = self._endpoint_of(conn)
            endpoint.command_results[command_id] = str(status)
            endpoint.last_seen = time.monotonic()
            self._lock.notify_all()
        if not conn.pending_commands:
            conn.phase = _Phase.READY

    def _on_bye(self, conn: _Connection) -> None:
        with self._lock:
            conn.record.bye = True
        self._flush(conn)
        self._close(conn, None)

    def _endpoint_of(self, conn: _Connection) -> EndpointRecord:
        endpoint_id = conn.record.endpoint_id
        assert endpoint_id is not None, "phase checks run before any endpoint lookup"
        return self._endpoints[endpoint_id]

    def _protocol_error(self, conn: _Connection, reason: str) -> None:
        if conn.closed:
            return
        conn.outbox.clear()
        self._send(conn, MessageType.ERROR, {"reason": reason[:1000]})
        # ERROR is sent only where the socket still takes it.
        with contextlib.suppress(SSL.Error, OSError):
            self._flush(conn)
        self._close(conn, f"protocol error: {reason}")

    # -- closing -------------------------------------------------------------

    def _close(self, conn: _Connection, error: str | None) -> None:
        if conn.closed:
            return
        conn.closed = True
        assert self._selector is not None
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(conn.sock)

        # The record is final before the socket closes, so a client that
        # reads EOF finds the record complete.
        now = time.monotonic()
        with self._lock:
            record = conn.record
            record.closed_at = now
            record.error = error
            self._conns.pop(record.connection_id, None)
            endpoint_id = record.endpoint_id
            if (
                endpoint_id is not None
                and self._endpoint_owner.get(endpoint_id) == record.connection_id
            ):
                endpoint = self._endpoints[endpoint_id]
                endpoint.online = False
                endpoint.last_seen = now
                del self._endpoint_owner[endpoint_id]
            self._lock.notify_all()

        if record.handshake_ok:
            # close_notify is a courtesy, and the peer may be gone already.
            with contextlib.suppress(SSL.Error, OSError):
                conn.tls.shutdown()
        conn.sock.close()

        if error is None:
            logger.debug(
                "connection %d from %s closed", record.connection_id, conn.peer_text
            )
        else:
            logger.info(
                "connection %d from %s closed: %s",
                record.connection_id,
                conn.peer_text,
                error,
            )


def _presented_pem(
    settings: EmsSettings, lab: Lab, base_dir: Path | None
) -> tuple[bytes, bytes]:
    presented = settings.presented_certificate()
    if presented is PresentedCertificate.VENDOR:
        built = lab.kind(VENDOR_KIND)
        return built.chain_path.read_bytes(), built.key_path.read_bytes()
    if presented is PresentedCertificate.BUILTIN_DEFAULT:
        built = lab.kind(BUILTIN_DEFAULT_KIND)
        if built.kind.leaf.common_names == (settings.hostname,):
            return built.chain_path.read_bytes(), built.key_path.read_bytes()
        # The built-in certificate names the EMS host name, so another host
        # name needs its own self-signed leaf.
        spec = dataclasses.replace(built.kind.leaf, common_names=(settings.hostname,))
        issued = lab.issue(spec)
        return issued.chain_pem, issued.key_pem
    imported = settings.imported_certificate
    assert imported is not None
    if imported.kind is not None:
        built = lab.kind(imported.kind)
        return built.chain_path.read_bytes(), built.key_path.read_bytes()
    return imported.load_files(base_dir)
