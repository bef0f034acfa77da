"""The reference endpoint client: connect, decide, then speak telemetry.

One :meth:`EndpointClient.connect` call is one connection attempt:

1. TCP connect and a TLS 1.3 handshake that accepts any certificate, so the
   client sees the chain even when it is invalid. A failed handshake is its
   own outcome, not a certificate decision.
2. The decision, made from the bytes received. A legacy version checks only
   the subject CN. A leaf that does not parse is an invalid certificate, not
   a failed handshake. A new version validates the chain
   (:mod:`harness.endpoint.validation`) and, for an invalid certificate,
   applies its invalid certificate action, consulting the
   remembered-certificate file and prompting through a callback.
3. Only after a decision to trust does any application data leave the
   client: the telemetry session. After a refusal the client closes the TLS
   connection without writing application data.

This module decides independently of :mod:`harness.oracle`; the suites check
that the two agree.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import hashlib
import logging
import os
import re
import select
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import idna
from cryptography import x509
from OpenSSL import SSL, crypto

from harness.assumptions import Assumptions
from harness.ems.telemetry import FrameDecoder, FrameError, MessageType, encode_frame
from harness.endpoint.identity import common_names, parse_ip_reference
from harness.endpoint.memory import (
    MemoryFile,
    ProfileState,
    RememberedCert,
    ems_key,
)
from harness.endpoint.validation import (
    LeafParseError,
    TrustStore,
    parse_chain,
    validate_der,
)
from harness.model import Action, ActionSource, Answer, CnFallback, OutcomeName, Reason
from harness.versions import Version, has_feature

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Seconds the client waits for a further COMMAND after the last frame before
# it sends BYE. The mock protocol has no end-of-commands message.
DEFAULT_TELEMETRY_IDLE = 0.2


@dataclass(frozen=True)
class PromptInfo:
    """Contents of the warning prompt shown to the user.

    Attributes:
        reference_identity: The EMS address the client connects to.
        port: The EMS port.
        leaf_sha256: Hex SHA-256 of the presented leaf's DER encoding.
        reasons: Every reason the certificate is invalid.
        subject: The leaf's subject, RFC 4514 text.
        issuer: The leaf's issuer, RFC 4514 text.
    """

    reference_identity: str
    port: int
    leaf_sha256: str
    reasons: tuple[Reason, ...]
    subject: str
    issuer: str


Prompt = Callable[[PromptInfo], Answer]


@dataclass(frozen=True)
class TelemetrySummary:
    """Summary of the telemetry session after a trusted connection.

    Attributes:
        completed: The session ran to BYE without error.
        error: Why it stopped early, or ``None``.
        license: The LICENSE payload, if one arrived.
        profile_name: Name of the profile in CONFIG, if one arrived.
        profile_action: The profile's invalid certificate action, if sent.
        commands: Number of COMMAND messages answered.
    """

    completed: bool
    error: str | None = None
    license: dict[str, Any] | None = None
    profile_name: str | None = None
    profile_action: Action | None = None
    commands: int = 0


@dataclass(frozen=True)
class Observation:
    """Observed result of one connection attempt of the client.

    Attributes:
        connected: Whether the client trusted the server and went on.
        prompted: Whether the prompt callback was called.
        remembered: Whether, afterwards, the remembered-certificate file
            covers the presented leaf with all its current reasons (always
            ``False`` for a legacy client, which keeps none).
        reasons: Every reason the certificate is invalid (empty for legacy).
        outcome: The documented outcome name.
        action: The action in effect, ``None`` for a legacy client.
        action_source: Where the action came from, ``None`` for legacy.
        tls_version: Negotiated protocol, e.g. ``"TLSv1.3"``.
        leaf_sha256: Hex SHA-256 of the presented leaf, if one was received.
        error: Context for a failure or refusal, or ``None``.
        telemetry: The telemetry session, ``None`` when not connected.
    """

    connected: bool
    prompted: bool
    remembered: bool
    reasons: list[Reason]
    outcome: OutcomeName
    action: Action | None = None
    action_source: ActionSource | None = None
    tls_version: str | None = None
    leaf_sha256: str | None = None
    error: str | None = None
    telemetry: TelemetrySummary | None = field(default=None)

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-ready dict of this observation."""
        telemetry = self.telemetry
        return {
            "connected": self.connected,
            "prompted": self.prompted,
            "remembered": self.remembered,
            "reasons": [r.value for r in self.reasons],
            "outcome": self.outcome.value,
            "action": self.action.value if self.action else None,
            "action_source": self.action_source.value if self.action_source else None,
            "tls_version": self.tls_version,
            "leaf_sha256": self.leaf_sha256,
            "error": self.error,
            "telemetry": None
            if telemetry is None
            else {
                "completed": telemetry.completed,
                "error": telemetry.error,
                "profile_name": telemetry.profile_name,
                "profile_action": telemetry.profile_action.value
                if telemetry.profile_action
                else None,
                "commands": telemetry.commands,
            },
        }


class _MemoryInProcess:
    """Remembered certificates and profile kept in memory, for ``memory_path=None``."""

    def __init__(self) -> None:
        self._entries: dict[str, RememberedCert] = {}
        self._profile: ProfileState | None = None

    def lookup(self, reference: str, port: int) -> RememberedCert | None:
        return self._entries.get(ems_key(reference, port))

    def remember(
        self, reference: str, port: int, leaf_sha256: str, reasons: frozenset[Reason]
    ) -> None:
        stamp = dt.datetime.now(dt.UTC).isoformat()
        self._entries[ems_key(reference, port)] = RememberedCert(
            leaf_sha256.lower(), frozenset(reasons), stamp
        )

    def profile(self) -> ProfileState | None:
        return self._profile

    def set_profile(self, action: Action, name: str, reference: str, port: int) -> None:
        stamp = dt.datetime.now(dt.UTC).isoformat()
        self._profile = ProfileState(action, name, f"{reference}:{port}", stamp)


class _Deadline:
    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def remaining(self) -> float:
        return self.end - time.monotonic()


def _wait(sock: socket.socket, writable: bool, deadline: _Deadline, what: str) -> None:
    remaining = deadline.remaining()
    if remaining <= 0:
        raise TimeoutError(f"timed out during {what}")
    readers = [] if writable else [sock]
    writers = [sock] if writable else []
    ready = select.select(readers, writers, [], remaining)
    if not ready[0] and not ready[1]:
        raise TimeoutError(f"timed out during {what}")


def _retry(
    call: Callable[[], T], sock: socket.socket, deadline: _Deadline, what: str
) -> T:
    """Run a pyOpenSSL call on a non-blocking socket until it completes."""
    while True:
        try:
            return call()
        except SSL.WantReadError:
            _wait(sock, False, deadline, what)
        except SSL.WantWriteError:
            _wait(sock, True, deadline, what)


class _Session:
    """A TLS connection on a non-blocking socket, with deadlines per step."""

    def __init__(self, conn: SSL.Connection, sock: socket.socket) -> None:
        self.conn = conn
        self.sock = sock
        self.decoder = FrameDecoder()
        self.app_bytes_sent = 0

    def send(
        self, msg_type: MessageType, payload: dict[str, Any], timeout: float
    ) -> None:
        self.send_bytes(encode_frame(msg_type, payload), timeout)

    def send_bytes(self, data: bytes, timeout: float) -> None:
        """Write encoded frames, retrying until all are sent or ``timeout``."""
        deadline = _Deadline(timeout)
        offset = 0
        while offset < len(data):
            send_chunk = functools.partial(self.conn.send, data[offset:])
            sent = _retry(send_chunk, self.sock, deadline, "send")
            self.app_bytes_sent += sent
            offset += sent

    def receive(self, timeout: float) -> list[Any] | None:
        """Return the frames completed by the next read; ``None`` at EOF."""
        deadline = _Deadline(timeout)
        try:
            data = _retry(lambda: self.conn.recv(65536), self.sock, deadline, "read")
        except SSL.ZeroReturnError:
            return None
        except SSL.SysCallError as exc:
            if exc.args and exc.args[0] == -1:
                return None
            raise
        if not data:
            return None
        return self.decoder.feed(data)

    def close(self) -> None:
        # close_notify is a TLS alert, not application data.
        with contextlib.suppress(SSL.Error):
            self.conn.shutdown()
        self.sock.close()


@functools.cache
def _client_context() -> SSL.Context:
    """Return the TLS 1.3 client context, built once and shared by every client.

    The settings never change after this, and OpenSSL allows connections to
    share one context across threads.
    """
    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    context.set_min_proto_version(SSL.TLS1_3_VERSION)
    context.set_max_proto_version(SSL.TLS1_3_VERSION)
    # The client sees every certificate and decides itself.
    context.set_verify(SSL.VERIFY_NONE)
    return context


def _open_tcp(host: str, port: int, timeout: float) -> socket.socket:
    """Open a TCP connection, skipping the resolver for an IP address literal.

    ``getaddrinfo`` on a literal returns that address alone, so connecting to
    it directly is the same connection without the resolver call.
    """
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
        except OSError:
            continue
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect((host, port))
        except BaseException:
            sock.close()
            raise
        return sock
    return socket.create_connection((host, port), timeout=timeout)


@functools.lru_cache(maxsize=1024)
def _sni(reference: str) -> bytes | None:
    # Cached because UTS 46 mapping in idna takes longer than the rest of
    # the connection setup, and a client connects to few distinct names.
    if parse_ip_reference(reference) is not None:
        return None
    name = reference[:-1] if reference.endswith(".") else reference
    try:
        return idna.encode(name, uts46=True)
    except idna.IDNAError:
        return None


class EndpointClient:
    """A reference endpoint client of one version, with its own state file.

    Args:
        version: Client version; legacy versions only check the subject CN.
        trust_store: PEM bundle of the simulated OS trust store, or the
            store already loaded, which callers running many clients share.
        action: Fixed invalid certificate action, overriding the profile,
            installer and default; give ``action_source`` with it.
        action_source: Where the fixed ``action`` came from.
        installer_action: Action baked into the installer, used when no
            profile was received.
        memory_path: JSON file for remembered certificates and the received
            profile; kept in memory only when ``None``.
        cn_fallback: When the subject CN counts as a presented name; the
            assumptions' setting when omitted.
        assumptions: Legacy subject pattern and default action.
        prompt: Asks the user about an invalid certificate under ``warn``.
            Without it the client refuses such a certificate unprompted.
        timeout: Seconds allowed for the TCP connect, the handshake, and each
            telemetry read and write.
        endpoint_id: Identifier sent in REGISTER; random when omitted.
        persist_profile: Store the action of a received profile.
        telemetry_idle: Seconds to wait for a further COMMAND before BYE. At
            zero or less, BYE goes out in the same write as ENDPOINT_INFO.
        clock: Function that returns the timezone-aware time certificates are
            validated at; the system clock if omitted. Tests move it to
            make a served certificate expire without waiting.
    """

    def __init__(
        self,
        version: str,
        trust_store: str | os.PathLike[str] | TrustStore,
        *,
        action: Action | None = None,
        action_source: ActionSource | None = None,
        installer_action: Action | None = None,
        memory_path: str | os.PathLike[str] | None = None,
        cn_fallback: CnFallback | None = None,
        assumptions: Assumptions | None = None,
        prompt: Prompt | None = None,
        timeout: float = 10.0,
        endpoint_id: str | None = None,
        persist_profile: bool = True,
        telemetry_idle: float = DEFAULT_TELEMETRY_IDLE,
        clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        self.version = str(Version.parse(version))
        self.legacy = not has_feature(self.version)
        self.trust_store = (
            trust_store
            if isinstance(trust_store, TrustStore)
            else TrustStore.load(trust_store)
        )
        if (action is None) != (action_source is None):
            raise ValueError("give action and action_source together, or neither")
        self.action = None if action is None else Action(action)
        self.action_source = (
            None if action_source is None else ActionSource(action_source)
        )
        self.installer_action = (
            None if installer_action is None else Action(installer_action)
        )
        self.assumptions = assumptions or Assumptions()
        self.cn_fallback = CnFallback(cn_fallback or self.assumptions.cn_fallback)
        self.memory: MemoryFile | _MemoryInProcess = (
            _MemoryInProcess() if memory_path is None else MemoryFile(memory_path)
        )
        self.prompt = prompt
        self.timeout = timeout
        self.endpoint_id = endpoint_id or f"endpoint-{uuid.uuid4().hex[:12]}"
        self.persist_profile = persist_profile
        self.telemetry_idle = telemetry_idle
        self.clock = clock
        self._legacy_pattern = re.compile(self.assumptions.legacy_subject_pattern)

    def current_action(self) -> tuple[Action, ActionSource]:
        """Return the action this client applies now and where it came from."""
        if self.action is not None and self.action_source is not None:
            return self.action, self.action_source
        profile = self.memory.profile()
        if profile is not None:
            return profile.action, ActionSource.PROFILE
        if self.installer_action is not None:
            return self.installer_action, ActionSource.INSTALLER
        return self.assumptions.default_action, ActionSource.DEFAULT

    def connect(
        self, host: str, port: int, *, servername: str | None = None
    ) -> Observation:
        """Make one connection attempt to the EMS at ``host``:``port``.

        Args:
            host: Address to open the TCP connection to.
            port: TCP port.
            servername: The reference identity (configured EMS address), also
                sent as SNI when it is a DNS name; ``host`` if omitted.

        Raises:
            MemoryFileError: the remembered-certificate file is corrupt or
                unreadable.
        """
        reference = host if servername is None else servername
        try:
            session, chain, tls_version = self._handshake(host, port, reference)
        except (OSError, SSL.Error, ValueError) as exc:
            logger.info("handshake with %s:%s failed: %s", host, port, exc)
            return Observation(
                connected=False,
                prompted=False,
                remembered=False,
                reasons=[],
                outcome=OutcomeName.HANDSHAKE_FAILED,
                error=f"handshake with {host}:{port} failed: {_describe(exc)}",
            )

        try:
            observation = self._decide(session, chain, reference, port, tls_version)
        except BaseException:
            session.close()
            raise
        if not observation.connected:
            session.close()
            return observation
        telemetry = self._telemetry(session, reference, port)
        return _with_telemetry(observation, telemetry)

    def _handshake(
        self, host: str, port: int, reference: str
    ) -> tuple[_Session, list[bytes], str]:
        sock = _open_tcp(host, port, self.timeout)
        try:
            # The session writes small frames back to back (ENDPOINT_INFO,
            # then BYE); Nagle's algorithm would hold each behind an ACK.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = SSL.Connection(_client_context(), sock)
            sni = _sni(reference)
            if sni is not None:
                conn.set_tlsext_host_name(sni)
            conn.set_connect_state()
            sock.setblocking(False)
            _retry(conn.do_handshake, sock, _Deadline(self.timeout), "TLS handshake")
            # DER bytes, not cryptography objects: a certificate that OpenSSL
            # accepted in the handshake may still fail cryptography's stricter
            # parser, and that is a certificate decision, made in _decide.
            raw_chain = [
                crypto.dump_certificate(crypto.FILETYPE_ASN1, cert)
                for cert in conn.get_peer_cert_chain() or []
            ]
            if not raw_chain:
                raise ValueError("the server presented no certificate")
            version = conn.get_protocol_version_name()
        except BaseException:
            sock.close()
            raise
        return _Session(conn, sock), raw_chain, version

    def _decide(
        self,
        session: _Session,
        chain: list[bytes],
        reference: str,
        port: int,
        tls_version: str,
    ) -> Observation:
        leaf_sha256 = hashlib.sha256(chain[0]).hexdigest()
        common = {"tls_version": tls_version, "leaf_sha256": leaf_sha256}

        if self.legacy:
            passes = any(
                self._legacy_pattern.fullmatch(cn) for cn in _legacy_names(chain[0])
            )
            return Observation(
                connected=passes,
                prompted=False,
                remembered=False,
                reasons=[],
                outcome=(
                    OutcomeName.CONNECTED_LEGACY
                    if passes
                    else OutcomeName.REFUSED_LEGACY
                ),
                error=None if passes else "subject CN is not an EMS serial number",
                **common,  # type: ignore[arg-type]
            )

        now = None if self.clock is None else self.clock()
        if now is not None and now.tzinfo is None:
            raise ValueError(
                f"the client's clock returned {now.isoformat()} without a time "
                "zone; return an aware time such as datetime.now(timezone.utc)"
            )
        result = validate_der(chain, self.trust_store, reference, self.cn_fallback, now)
        reasons = frozenset(result.reasons)
        action, source = self.current_action()
        entry = self.memory.lookup(reference, port)
        covered = entry is not None and entry.covers(leaf_sha256, reasons)

        def observed(
            connected: bool,
            outcome: OutcomeName,
            *,
            prompted: bool = False,
            remembered: bool = covered,
            error: str | None = None,
        ) -> Observation:
            return Observation(
                connected,
                prompted,
                remembered,
                list(result.reasons),
                outcome,
                action,
                source,
                error=error,
                **common,  # type: ignore[arg-type]
            )

        if not reasons:
            return observed(True, OutcomeName.CONNECTED_VALID)
        if action is Action.ALLOW:
            return observed(True, OutcomeName.CONNECTED_ALLOW)
        if action is Action.DENY:
            return observed(
                False, OutcomeName.REFUSED_DENY, error="invalid certificate"
            )
        if covered:
            return observed(True, OutcomeName.CONNECTED_REMEMBERED)
        if self.prompt is None:
            return observed(
                False,
                OutcomeName.REFUSED_PROMPT_DENIED,
                error="invalid certificate needs an answer and no prompt is available",
            )

        # The path starts at the leaf, and is empty when the leaf does not parse.
        leaf = result.path[0] if result.path else None
        info = PromptInfo(
            reference,
            port,
            leaf_sha256,
            tuple(result.reasons),
            _name_text(leaf, issuer=False),
            _name_text(leaf, issuer=True),
        )
        answer = Answer(self.prompt(info))
        if answer is Answer.ALLOW:
            self.memory.remember(reference, port, leaf_sha256, reasons)
            return observed(
                True,
                OutcomeName.CONNECTED_PROMPT_ALLOWED,
                prompted=True,
                remembered=True,
            )
        return observed(
            False,
            OutcomeName.REFUSED_PROMPT_DENIED,
            prompted=True,
            remembered=False,
            error="the user denied the certificate",
        )

    def _telemetry(
        self, session: _Session, reference: str, port: int
    ) -> TelemetrySummary:
        state: dict[str, Any] = {"commands": 0}
        try:
            self._run_session(session, state)
        except (OSError, SSL.Error, FrameError, TimeoutError) as exc:
            logger.info("telemetry with %s:%s failed: %s", reference, port, exc)
            state["error"] = _describe(exc)
        finally:
            session.close()

        action = state.get("profile_action")
        if action is not None and self.persist_profile and not self.legacy:
            self.memory.set_profile(
                action, state.get("profile_name") or "", reference, port
            )
        return TelemetrySummary(
            completed="error" not in state,
            error=state.get("error"),
            license=state.get("license"),
            profile_name=state.get("profile_name"),
            profile_action=action,
            commands=state["commands"],
        )

    def _run_session(self, session: _Session, state: dict[str, Any]) -> None:
        session.send(
            MessageType.REGISTER,
            {
                "endpoint_id": self.endpoint_id,
                "hostname": socket.gethostname(),
                "version": self.version,
            },
            self.timeout,
        )
        info_sent = False
        while True:
            timeout = self.telemetry_idle if info_sent else self.timeout
            try:
                frames = session.receive(timeout)
            except TimeoutError:
                if info_sent:
                    break
                raise TimeoutError("timed out waiting for LICENSE and CONFIG") from None
            if frames is None:
                if not info_sent:
                    raise ConnectionError("the server closed the session before CONFIG")
                return
            for frame in frames:
                self._handle_frame(session, frame, state)
            if not info_sent and "license" in state and "config" in state:
                info = encode_frame(
                    MessageType.ENDPOINT_INFO,
                    {"os": "linux", "ip": session.sock.getsockname()[0]},
                )
                if self.telemetry_idle <= 0:
                    # No wait for COMMAND, so ENDPOINT_INFO and BYE leave in
                    # one TLS write and the server reads both at once.
                    bye = encode_frame(MessageType.BYE, {})
                    session.send_bytes(info + bye, self.timeout)
                    return
                session.send_bytes(info, self.timeout)
                info_sent = True
        session.send(MessageType.BYE, {}, self.timeout)

    def _handle_frame(
        self, session: _Session, frame: Any, state: dict[str, Any]
    ) -> None:
        payload = frame.payload
        if frame.type is MessageType.LICENSE:
            state["license"] = payload
        elif frame.type is MessageType.CONFIG:
            state["config"] = payload
            profile = payload.get("profile")
            if isinstance(profile, dict):
                state["profile_name"] = str(profile.get("name", ""))
                # Only an EMS with standards validation sends this field.
                raw = profile.get("invalid_cert_action")
                if raw is not None:
                    try:
                        state["profile_action"] = Action(raw)
                    except ValueError:
                        raise FrameError(
                            f"CONFIG has invalid invalid_cert_action {raw!r}"
                        ) from None
        elif frame.type is MessageType.COMMAND:
            session.send(
                MessageType.COMMAND_RESULT,
                {"command_id": payload.get("command_id"), "status": "ok"},
                self.timeout,
            )
            state["commands"] += 1
        elif frame.type is MessageType.ERROR:
            raise ConnectionError(
                f"the server reported an error: {payload.get('reason')}"
            )
        else:
            raise FrameError(f"unexpected {frame.type.name} from the server")


def _legacy_names(leaf_der: bytes) -> list[str]:
    """Return the subject CNs of the leaf, none when it does not parse."""
    try:
        leaf = parse_chain([leaf_der])[0]
    except LeafParseError as exc:
        logger.info("legacy check finds no subject CN: %s", exc)
        return []
    return common_names(leaf)


def _name_text(cert: x509.Certificate | None, *, issuer: bool) -> str:
    if cert is None:
        return "(the leaf certificate does not parse)"
    try:
        return (cert.issuer if issuer else cert.subject).rfc4514_string()
    except ValueError:
        return "(name does not parse)"


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, SSL.Error) and exc.args and isinstance(exc.args[0], list):
        parts = [str(item[-1]) for item in exc.args[0] if item]
        text = "; ".join(parts) or text
    return text


def _with_telemetry(
    observation: Observation, telemetry: TelemetrySummary
) -> Observation:
    from dataclasses import replace

    return replace(observation, telemetry=telemetry)
