"""Mock EMS over real TLS 1.3 on loopback: sessions, chains, bad input, cleanup."""

from __future__ import annotations

import os
import socket
import ssl
import struct
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL

from harness.ems.server import EmsError, MockEms
from harness.ems.telemetry import (
    MAGIC,
    MAX_PAYLOAD,
    Frame,
    FrameDecoder,
    MessageType,
    encode_frame,
)
from harness.model import Action
from harness.pki import Lab
from harness.pytest_plugin import EmsFactory

FQDN = "ems.example.com"
WAIT = 10.0


def _client_context(lab: Lab, **options: Any) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(lab.trust_store_path))
    for name, value in options.items():
        setattr(context, name, value)
    return context


@contextmanager
def _tls(
    ems: MockEms,
    lab: Lab,
    session: ssl.SSLSession | None = None,
    context: ssl.SSLContext | None = None,
    **options: Any,
) -> Iterator[ssl.SSLSocket]:
    # wrap_socket detaches raw, so closing raw closes a descriptor only when
    # the context or the wrap raised before the TLS socket took it over.
    with socket.create_connection(ems.address, timeout=WAIT) as raw:
        context = context or _client_context(lab, **options)
        with context.wrap_socket(raw, server_hostname=FQDN, session=session) as tls:
            yield tls


def _read_frames(sock: ssl.SSLSocket, decoder: FrameDecoder, n: int) -> list[Frame]:
    frames: list[Frame] = []
    while len(frames) < n:
        data = sock.recv(65536)
        if not data:
            break
        frames += decoder.feed(data)
    return frames


def _register(sock: ssl.SSLSocket, endpoint_id: str = "ep-1") -> list[Frame]:
    payload = {"endpoint_id": endpoint_id, "hostname": "pc-1", "version": "7.0.2"}
    sock.sendall(encode_frame(MessageType.REGISTER, payload))
    return _read_frames(sock, FrameDecoder(), 2)


def _full_session(ems: MockEms, lab: Lab, endpoint_id: str) -> list[Frame]:
    with _tls(ems, lab) as sock:
        decoder = FrameDecoder()
        payload = {"endpoint_id": endpoint_id, "hostname": "pc", "version": "7.2.0"}
        sock.sendall(encode_frame(MessageType.REGISTER, payload))
        frames = _read_frames(sock, decoder, 2)
        sock.sendall(encode_frame(MessageType.ENDPOINT_INFO, {"os": "linux"}))
        frames += _read_frames(sock, decoder, len(ems.commands))
        for frame in frames[2:]:
            result = {"command_id": frame.payload["command_id"], "status": "ok"}
            sock.sendall(encode_frame(MessageType.COMMAND_RESULT, result))
        sock.sendall(encode_frame(MessageType.BYE, {}))
        assert sock.recv(1) == b""
    return frames


def _all_closed(ems: MockEms) -> bool:
    return all(r.closed_at is not None for r in ems._records)


def test_full_session_records(ems_factory: EmsFactory, cert_lab: Lab) -> None:
    ems = ems_factory("correct-fqdn", commands=("sync", "scan"))

    frames = _full_session(ems, cert_lab, "ep-full")
    assert ems.wait_until(_all_closed, WAIT)

    assert [f.type for f in frames] == [
        MessageType.LICENSE,
        MessageType.CONFIG,
        MessageType.COMMAND,
        MessageType.COMMAND,
    ]
    assert frames[0].payload["license"] == "endpoint-control"
    assert frames[1].payload == {
        "profile": {"name": "default", "invalid_cert_action": "warn"}
    }
    assert [f.payload["command"] for f in frames[2:]] == ["sync", "scan"]
    record = ems.connections[0]
    assert record.handshake_ok
    assert record.tls_version == "TLSv1.3"
    assert record.server_name == FQDN
    assert record.error is None
    assert record.bye
    assert record.frames_received == 5
    assert record.first_app_byte_at is not None
    assert record.first_app_byte_at >= record.accepted_at
    endpoint = ems.endpoints["ep-full"]
    assert endpoint.version == "7.2.0"
    assert endpoint.hostname == "pc"
    assert not endpoint.online
    assert endpoint.profile_delivered == "warn"
    assert endpoint.info == {"os": "linux"}
    assert sorted(endpoint.command_results.values()) == ["ok", "ok"]


def test_app_bytes_counted_exactly(ems_factory: EmsFactory, cert_lab: Lab) -> None:
    ems = ems_factory()
    frame = encode_frame(
        MessageType.REGISTER, {"endpoint_id": "e", "hostname": "h", "version": "7.0.2"}
    )

    with _tls(ems, cert_lab) as sock:
        sock.sendall(frame)
        _read_frames(sock, FrameDecoder(), 2)

    assert ems.wait_until(_all_closed, WAIT)
    assert ems.connections[0].app_bytes_received == len(frame)


def test_endpoint_online_while_session_open(
    ems_factory: EmsFactory, cert_lab: Lab
) -> None:
    ems = ems_factory()

    with _tls(ems, cert_lab) as sock:
        _register(sock, "ep-online")
        online_during = ems.endpoints["ep-online"].online
    assert ems.wait_until(_all_closed, WAIT)

    assert online_during
    assert not ems.endpoints["ep-online"].online
    assert ems.connections[0].error == "client closed the connection without BYE"


def test_no_app_bytes_when_client_sends_nothing(
    ems_factory: EmsFactory, cert_lab: Lab
) -> None:
    ems = ems_factory()

    with _tls(ems, cert_lab):
        pass
    assert ems.wait_until(_all_closed, WAIT)

    record = ems.connections[0]
    assert record.handshake_ok
    assert record.app_bytes_received == 0
    assert record.first_app_byte_at is None
    assert ems.endpoints == {}


def test_rejecting_client_leaves_handshake_failed(
    ems_factory: EmsFactory, cert_lab: Lab
) -> None:
    ems = ems_factory("self-signed-leaf")

    with (
        pytest.raises(ssl.SSLCertVerificationError, match=r"self.signed"),
        _tls(ems, cert_lab),
    ):
        pass
    assert ems.wait_until(_all_closed, WAIT)

    record = ems.connections[0]
    assert not record.handshake_ok
    assert record.error is not None
    assert record.error.startswith("handshake failed")
    assert record.app_bytes_received == 0


def test_profile_action_change(ems_factory: EmsFactory, cert_lab: Lab) -> None:
    ems = ems_factory(profile_action=Action.ALLOW)

    with _tls(ems, cert_lab) as sock:
        before = _register(sock, "ep-a")[1]
    ems.set_profile_action(Action.DENY)
    with _tls(ems, cert_lab) as sock:
        after = _register(sock, "ep-b")[1]

    assert before.payload["profile"]["invalid_cert_action"] == "allow"
    assert after.payload["profile"]["invalid_cert_action"] == "deny"
    assert ems.endpoints["ep-b"].profile_delivered == "deny"


@pytest.mark.parametrize(
    ("ems_version", "action"),
    [("6.4.6", Action.DENY), ("7.0.1", Action.DENY), ("7.0.2", None)],
)
def test_config_without_action(
    ems_factory: EmsFactory, cert_lab: Lab, ems_version: str, action: Action | None
) -> None:
    ems = ems_factory(ems_version=ems_version, profile_action=action)

    with _tls(ems, cert_lab) as sock:
        config = _register(sock)[1]

    assert config.payload == {"profile": {"name": "default"}}
    assert ems.endpoints["ep-1"].profile_delivered is None


def _peer_chain_der(ems: MockEms) -> list[bytes]:
    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    with socket.create_connection(ems.address, timeout=WAIT) as raw:
        # pyOpenSSL needs a blocking socket, and a timeout makes it non-blocking.
        raw.settimeout(None)
        conn = SSL.Connection(context, raw)
        conn.set_tlsext_host_name(FQDN.encode())
        conn.set_connect_state()
        conn.do_handshake()
        chain = conn.get_peer_cert_chain(as_cryptography=True) or []
        conn.shutdown()
    return [c.public_bytes(serialization.Encoding.DER) for c in chain]


@pytest.mark.parametrize(
    "kind",
    [
        "correct-fqdn",
        "missing-intermediate",
        "intermediates-out-of-order",
        "extra-untrusted-root-sent",
        "self-signed-leaf",
    ],
)
def test_chain_sent_as_configured(
    ems_factory: EmsFactory, cert_lab: Lab, kind: str
) -> None:
    ems = ems_factory(kind)
    configured = x509.load_pem_x509_certificates(
        cert_lab.kind(kind).chain_path.read_bytes()
    )

    sent = _peer_chain_der(ems)

    assert sent == [c.public_bytes(serialization.Encoding.DER) for c in configured]


def test_certificate_rotation(ems_factory: EmsFactory, cert_lab: Lab) -> None:
    ems = ems_factory("vendor-default")
    imported = cert_lab.kind("correct-fqdn")

    before = _peer_chain_der(ems)[0]
    ems.set_certificate(
        imported.chain_path.read_bytes(), imported.key_path.read_bytes()
    )
    after = _peer_chain_der(ems)[0]

    expected = x509.load_pem_x509_certificate(imported.leaf_path.read_bytes())
    assert before != after
    assert after == expected.public_bytes(serialization.Encoding.DER)


def test_set_certificate_rejects_mismatched_key(
    ems_factory: EmsFactory, cert_lab: Lab
) -> None:
    ems = ems_factory()
    chain = cert_lab.kind("correct-fqdn").chain_path.read_bytes()
    other_key = cert_lab.kind("wrong-host").key_path.read_bytes()

    with pytest.raises(ValueError, match="does not belong to the leaf"):
        ems.set_certificate(chain, other_key)

    assert _peer_chain_der(ems)[0] == x509.load_pem_x509_certificates(chain)[
        0
    ].public_bytes(serialization.Encoding.DER)


def test_tls12_client_refused(ems_factory: EmsFactory, cert_lab: Lab) -> None:
    ems = ems_factory()

    with (
        pytest.raises(ssl.SSLError, match=r"PROTOCOL_VERSION|UNSUPPORTED_PROTOCOL"),
        _tls(ems, cert_lab, maximum_version=ssl.TLSVersion.TLSv1_2),
    ):
        pass
    assert ems.wait_until(_all_closed, WAIT)

    record = ems.connections[0]
    assert not record.handshake_ok
    assert record.error is not None
    assert "unsupported protocol" in record.error


def _resumed(ems: MockEms, lab: Lab) -> bool:
    context = _client_context(lab)
    with _tls(ems, lab, context=context) as sock:
        # TLS 1.3 tickets arrive after the handshake, so read a reply first.
        _register(sock, "ep-resume")
        session = sock.session
    with _tls(ems, lab, session=session, context=context) as sock:
        return sock.session_reused


def test_session_tickets_off_by_default(ems_factory: EmsFactory, cert_lab: Lab) -> None:
    ems = ems_factory()

    assert not _resumed(ems, cert_lab)
    assert ems.wait_until(_all_closed, WAIT)
    assert ems.connections[1].handshake_ok
    assert not ems.connections[1].session_reused


def test_tickets_off_still_sent_but_unusable(
    ems_factory: EmsFactory, cert_lab: Lab
) -> None:
    # pyOpenSSL cannot set OpenSSL's TLS 1.3 ticket count to zero, so the
    # server sends tickets that resume nothing, as the --help text states.
    ems = ems_factory()
    context = _client_context(cert_lab)
    with _tls(ems, cert_lab, context=context) as sock:
        _register(sock, "ep-ticket")
        session = sock.session

    assert session is not None
    assert session.has_ticket
    assert not _resumed(ems, cert_lab)


def test_session_tickets_enabled(ems_factory: EmsFactory, cert_lab: Lab) -> None:
    ems = ems_factory(session_tickets=True)

    assert _resumed(ems, cert_lab)
    assert ems.wait_until(_all_closed, WAIT)
    assert ems.connections[1].session_reused


def test_ipv6_loopback(ems_factory: EmsFactory, cert_lab: Lab) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 support in this Python build")
    ems = ems_factory(host="::1")

    _full_session(ems, cert_lab, "ep-v6")

    assert ems.host == "::1"
    assert ems.connections[0].peer[0] == "::1"
    assert "ep-v6" in ems.endpoints


def test_non_loopback_needs_opt_in(cert_lab: Lab) -> None:
    built = cert_lab.kind("correct-fqdn")
    chain, key = built.chain_path.read_bytes(), built.key_path.read_bytes()

    with pytest.raises(ValueError, match="not a loopback address"):
        MockEms(chain, key, host="0.0.0.0")
    with pytest.raises(ValueError, match="invalid listen address 'localhost'"):
        MockEms(chain, key, host="localhost")


def test_port_before_start_raises(cert_lab: Lab) -> None:
    ems = MockEms.from_kind(cert_lab, "correct-fqdn")

    with pytest.raises(EmsError, match="not started"):
        _ = ems.port


def test_port_in_use_error_names_port(ems_factory: EmsFactory, cert_lab: Lab) -> None:
    first = ems_factory()
    second = MockEms.from_kind(cert_lab, "correct-fqdn", port=first.port)

    with pytest.raises(EmsError, match=f"cannot listen on 127.0.0.1 port {first.port}"):
        second.start()


# -- bad input: each closes only its own connection --------------------------


def _raw_header(msg_type: int, length: int) -> bytes:
    return struct.pack("!4sBBI", MAGIC, 1, msg_type, length)


REGISTER = encode_frame(
    MessageType.REGISTER, {"endpoint_id": "bad", "hostname": "h", "version": "7.0.2"}
)

# (id, bytes sent after the handshake, expected error text, ERROR frame expected)
BAD_SESSIONS = [
    ("oversized", _raw_header(1, MAX_PAYLOAD + 1), "oversized payload length", True),
    ("unknown-type", _raw_header(42, 2) + b"{}", "unknown message type 42", True),
    ("invalid-json", _raw_header(1, 5) + b"{nope", "invalid JSON in REGISTER", True),
    ("not-object", _raw_header(1, 2) + b"[]", "payload is not an object", True),
    ("bad-magic", b"GET / HTTP/1.1\r\n\r\n", "bad magic", True),
    (
        "server-message",
        encode_frame(MessageType.CONFIG, {}),
        "CONFIG is a server message",
        True,
    ),
    (
        "info-before-register",
        encode_frame(MessageType.ENDPOINT_INFO, {}),
        "unexpected ENDPOINT_INFO, expected REGISTER",
        True,
    ),
    (
        "register-missing-id",
        encode_frame(MessageType.REGISTER, {"hostname": "h", "version": "7.0.2"}),
        "REGISTER needs a non-empty string endpoint_id",
        True,
    ),
    (
        "register-twice",
        REGISTER + REGISTER,
        "unexpected REGISTER, expected ENDPOINT_INFO",
        True,
    ),
    (
        "unknown-command-id",
        REGISTER
        + encode_frame(MessageType.ENDPOINT_INFO, {})
        + encode_frame(MessageType.COMMAND_RESULT, {"command_id": 999, "status": "ok"}),
        "COMMAND_RESULT for unknown command_id 999",
        True,
    ),
]


def _bad_session(ems: MockEms, lab: Lab, data: bytes) -> list[Frame]:
    with _tls(ems, lab) as sock:
        sock.sendall(data)
        frames: list[Frame] = []
        decoder = FrameDecoder()
        try:
            while chunk := sock.recv(65536):
                frames += decoder.feed(chunk)
        except (ssl.SSLError, ConnectionResetError):
            pass  # The server may reset while unread input is still queued.
    return frames


@pytest.mark.parametrize(
    ("data", "error", "expects_error_frame"),
    [case[1:] for case in BAD_SESSIONS],
    ids=[case[0] for case in BAD_SESSIONS],
)
def test_bad_session_closed_others_served(
    ems_factory: EmsFactory,
    cert_lab: Lab,
    data: bytes,
    error: str,
    expects_error_frame: bool,
) -> None:
    ems = ems_factory()

    with _tls(ems, cert_lab) as bystander:
        _register(bystander, "bystander")
        frames = _bad_session(ems, cert_lab, data)
        bystander.sendall(encode_frame(MessageType.ENDPOINT_INFO, {"os": "x"}))
        command = _read_frames(bystander, FrameDecoder(), 1)
    assert ems.wait_until(_all_closed, WAIT)

    bad = ems.connections[1]
    assert bad.error is not None
    assert error in bad.error
    assert bad.error.startswith("protocol error")
    errors = [f for f in frames if f.type is MessageType.ERROR]
    assert len(errors) == int(expects_error_frame)
    assert error in errors[0].payload["reason"]
    assert command[0].type is MessageType.COMMAND
    assert ems.endpoints["bystander"].info == {"os": "x"}


def _raw_connect(ems: MockEms) -> socket.socket:
    return socket.create_connection(ems.address, timeout=WAIT)


def test_garbage_instead_of_client_hello(ems_factory: EmsFactory) -> None:
    ems = ems_factory()

    with _raw_connect(ems) as sock:
        sock.sendall(b"\x00\x01garbage that is no ClientHello" * 4)
        try:
            reply = sock.recv(4096)
        except ConnectionResetError:
            reply = b""  # The server closed with our bytes still unread.
    assert ems.wait_until(_all_closed, WAIT)

    record = ems.connections[0]
    assert not record.handshake_ok
    assert record.error is not None
    assert record.error.startswith("handshake failed")
    # OpenSSL replies to a non-TLS record with a plaintext alert or nothing.
    assert len(reply) <= 7


def test_stalled_handshake_times_out(ems_factory: EmsFactory, cert_lab: Lab) -> None:
    ems = ems_factory(handshake_timeout=0.3)

    with _raw_connect(ems) as stalled:
        stalled.sendall(b"\x16\x03\x01")  # the first bytes of a TLS record
        _full_session(ems, cert_lab, "ep-meanwhile")
        assert stalled.recv(100) == b""

    record = ems.connections[0]
    assert record.error == "handshake timed out after 0.3s"
    assert ems.connections[1].error is None


def test_idle_session_times_out(ems_factory: EmsFactory, cert_lab: Lab) -> None:
    ems = ems_factory(idle_timeout=0.3)

    with _tls(ems, cert_lab) as sock:
        sock.sendall(REGISTER[:7])  # a truncated frame, then silence
        assert sock.recv(100) == b""

    record = ems.connections[0]
    assert record.error == "idle for more than 0.3s"
    assert record.app_bytes_received == 7


def test_disconnect_mid_frame(ems_factory: EmsFactory, cert_lab: Lab) -> None:
    ems = ems_factory()

    with _tls(ems, cert_lab) as sock:
        sock.sendall(REGISTER[:-3])
    assert ems.wait_until(_all_closed, WAIT)

    record = ems.connections[0]
    assert record.error is not None
    assert "disconnected mid-frame" in record.error
    assert f"({len(REGISTER) - 3} bytes)" in record.error


def test_tcp_reset_mid_session(ems_factory: EmsFactory, cert_lab: Lab) -> None:
    ems = ems_factory()

    with _tls(ems, cert_lab) as sock:
        _register(sock, "ep-reset")
        # SO_LINGER with a zero timeout makes close() send a TCP reset.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    assert ems.wait_until(_all_closed, WAIT)

    assert ems.connections[0].error is not None
    assert not ems.endpoints["ep-reset"].online


# -- scale and cleanup --------------------------------------------------------


def test_many_concurrent_sessions(ems_factory: EmsFactory, cert_lab: Lab) -> None:
    ems = ems_factory()
    count = 100

    with ExitStack() as stack:
        sockets = [stack.enter_context(_tls(ems, cert_lab)) for _ in range(count)]
        for i, sock in enumerate(sockets):
            sock.sendall(
                encode_frame(
                    MessageType.REGISTER,
                    {"endpoint_id": f"ep-{i}", "hostname": "h", "version": "7.0.2"},
                )
            )
        assert ems.wait_until(
            lambda e: sum(ep.online for ep in e._endpoints.values()) == count, WAIT
        )
    assert ems.wait_until(_all_closed, WAIT)

    assert len(ems.endpoints) == count
    assert not any(ep.online for ep in ems.endpoints.values())


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_stop_leaks_nothing(cert_lab: Lab) -> None:
    threads_before = set(threading.enumerate())
    fds_before = _open_fds()

    with (
        MockEms.from_kind(cert_lab, "correct-fqdn") as ems,
        _tls(ems, cert_lab) as sock,
    ):
        _register(sock, "ep-open-at-stop")
        with _raw_connect(ems):
            assert ems.wait_for_connections(2, WAIT)
            ems.stop()
            assert sock.recv(100) == b""

    assert set(threading.enumerate()) == threads_before
    assert _open_fds() == fds_before
    assert ems.connections[0].closed_at is not None
    assert not ems.endpoints["ep-open-at-stop"].online


def test_server_thread_failure_reraised(cert_lab: Lab) -> None:
    # A profile name JSON cannot encode makes the CONFIG frame fail to encode.
    ems = MockEms.from_kind(cert_lab, "correct-fqdn", profile_name=object())
    ems.start()

    with _tls(ems, cert_lab) as sock:
        frames = _register(sock)

    with pytest.raises(EmsError, match="failed in its server thread") as info:
        ems.stop()
    assert isinstance(info.value.__cause__, TypeError)
    assert frames == []


def test_restart_after_stop_rejected(cert_lab: Lab) -> None:
    ems = MockEms.from_kind(cert_lab, "correct-fqdn")
    ems.start()
    ems.stop()

    with pytest.raises(EmsError, match="cannot start again"):
        ems.start()
