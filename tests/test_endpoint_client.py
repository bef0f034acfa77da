"""Reference client over real TLS: remembered certificates, profile, no early data."""

from __future__ import annotations

import contextlib
import datetime as dt
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from OpenSSL import SSL

from harness.ems.server import MockEms
from harness.endpoint import EndpointClient, MemoryFile, MemoryFileError, PromptInfo
from harness.model import Action, ActionSource, Answer, OutcomeName, Reason
from harness.pki import Lab
from harness.pki.kinds import EMS_FQDN, LeafSpec
from harness.pki.roles import DAY

EmsFactory = Callable[..., MockEms]


class Prompter:
    """Prompt callback that records each call and answers from a script."""

    def __init__(self, *answers: Answer) -> None:
        self.answers = list(answers)
        self.calls: list[PromptInfo] = []

    def __call__(self, info: PromptInfo) -> Answer:
        self.calls.append(info)
        return self.answers.pop(0)


def _client(
    lab: Lab, memory: Path, prompt: Prompter, **kwargs: object
) -> EndpointClient:
    kwargs.setdefault("telemetry_idle", 0.05)
    return EndpointClient(
        "7.0.2",
        lab.trust_store_path,
        memory_path=memory,
        prompt=prompt,
        timeout=5.0,
        **kwargs,  # type: ignore[arg-type]
    )


def test_allow_then_reconnect_silently(
    cert_lab: Lab, ems_factory: EmsFactory, tmp_path: Path
) -> None:
    ems = ems_factory(kind="wrong-host")
    prompt = Prompter(Answer.ALLOW)
    client = _client(cert_lab, tmp_path / "memory.json", prompt)

    first = client.connect(ems.host, ems.port, servername=EMS_FQDN)
    second = client.connect(ems.host, ems.port, servername=EMS_FQDN)

    assert first.outcome is OutcomeName.CONNECTED_PROMPT_ALLOWED
    assert second.outcome is OutcomeName.CONNECTED_REMEMBERED
    assert len(prompt.calls) == 1


def test_changed_leaf_prompts_again(
    cert_lab: Lab, ems_factory: EmsFactory, tmp_path: Path
) -> None:
    ems = ems_factory(kind="wrong-host")
    prompt = Prompter(Answer.ALLOW, Answer.DENY)
    client = _client(cert_lab, tmp_path / "memory.json", prompt)
    client.connect(ems.host, ems.port, servername=EMS_FQDN)
    other = cert_lab.issue(cert_lab.kind("wrong-host").kind.leaf)

    ems.set_certificate(other.chain_pem, other.key_pem)
    again = client.connect(ems.host, ems.port, servername=EMS_FQDN)

    assert again.outcome is OutcomeName.REFUSED_PROMPT_DENIED
    assert len(prompt.calls) == 2
    assert prompt.calls[1].leaf_sha256 == other.sha256


def test_further_reason_prompts_again(
    cert_lab: Lab, ems_factory: EmsFactory, tmp_path: Path
) -> None:
    ems = ems_factory(kind="wrong-host")
    memory = tmp_path / "memory.json"
    # The user allowed this leaf when it failed only on the name; it has
    # since expired as well.
    spec = LeafSpec(
        common_names=("portal.example.net",),
        dns_names=("portal.example.net",),
        window=(-60 * DAY, -1 * DAY),
    )
    expired = cert_lab.issue(spec)
    ems.set_certificate(expired.chain_pem, expired.key_pem)
    MemoryFile(memory).remember(
        EMS_FQDN, ems.port, expired.sha256, frozenset({Reason.HOSTNAME_MISMATCH})
    )
    prompt = Prompter(Answer.ALLOW)

    result = _client(cert_lab, memory, prompt).connect(
        ems.host, ems.port, servername=EMS_FQDN
    )

    assert result.outcome is OutcomeName.CONNECTED_PROMPT_ALLOWED
    assert prompt.calls[0].reasons == (Reason.HOSTNAME_MISMATCH, Reason.EXPIRED)


def test_clock_past_expiry_adds_expired(
    cert_lab: Lab, ems_factory: EmsFactory, tmp_path: Path
) -> None:
    ems = ems_factory(kind="correct-fqdn")
    built = cert_lab.kind("correct-fqdn")
    later = built.not_after + dt.timedelta(days=30)
    now_client = _client(cert_lab, tmp_path / "now.json", Prompter())
    later_client = _client(
        cert_lab, tmp_path / "later.json", Prompter(Answer.DENY), clock=lambda: later
    )

    now_result = now_client.connect(ems.host, ems.port, servername=EMS_FQDN)
    later_result = later_client.connect(ems.host, ems.port, servername=EMS_FQDN)

    assert now_result.reasons == []
    assert later_result.reasons == [Reason.EXPIRED]


def test_clock_before_start_adds_not_yet_valid(
    cert_lab: Lab, ems_factory: EmsFactory, tmp_path: Path
) -> None:
    ems = ems_factory(kind="correct-fqdn")
    earlier = cert_lab.kind("correct-fqdn").not_before - dt.timedelta(days=1)
    client = _client(
        cert_lab, tmp_path / "memory.json", Prompter(Answer.DENY), clock=lambda: earlier
    )

    result = client.connect(ems.host, ems.port, servername=EMS_FQDN)

    assert result.reasons == [Reason.NOT_YET_VALID]


def test_naive_clock_is_rejected(
    cert_lab: Lab, ems_factory: EmsFactory, tmp_path: Path
) -> None:
    ems = ems_factory(kind="correct-fqdn")
    naive = dt.datetime(2030, 1, 1)
    client = _client(
        cert_lab, tmp_path / "memory.json", Prompter(), clock=lambda: naive
    )

    with pytest.raises(ValueError, match="without a time zone"):
        client.connect(ems.host, ems.port, servername=EMS_FQDN)


def test_other_identity_or_port_prompts(
    cert_lab: Lab, ems_factory: EmsFactory, tmp_path: Path
) -> None:
    # One leaf naming two EMS hosts, both mismatching the untrusted issuer.
    spec = LeafSpec(
        common_names=(EMS_FQDN,),
        dns_names=(EMS_FQDN, "ems2.example.com"),
        issuer="private-root",
        chain=("private-root",),
    )
    leaf = cert_lab.issue(spec)
    first = ems_factory(leaf=leaf)
    second = ems_factory(leaf=leaf)
    prompt = Prompter(Answer.ALLOW, Answer.DENY, Answer.DENY)
    client = _client(cert_lab, tmp_path / "memory.json", prompt)

    allowed = client.connect(first.host, first.port, servername=EMS_FQDN)
    other_name = client.connect(first.host, first.port, servername="ems2.example.com")
    other_port = client.connect(second.host, second.port, servername=EMS_FQDN)

    assert allowed.outcome is OutcomeName.CONNECTED_PROMPT_ALLOWED
    assert other_name.outcome is OutcomeName.REFUSED_PROMPT_DENIED
    assert other_port.outcome is OutcomeName.REFUSED_PROMPT_DENIED
    assert len(prompt.calls) == 3


def test_deny_prompts_next_time(
    cert_lab: Lab, ems_factory: EmsFactory, tmp_path: Path
) -> None:
    ems = ems_factory(kind="self-signed-leaf")
    prompt = Prompter(Answer.DENY, Answer.DENY)
    client = _client(cert_lab, tmp_path / "memory.json", prompt)

    first = client.connect(ems.host, ems.port, servername=EMS_FQDN)
    second = client.connect(ems.host, ems.port, servername=EMS_FQDN)

    assert first.outcome is OutcomeName.REFUSED_PROMPT_DENIED
    assert second.outcome is OutcomeName.REFUSED_PROMPT_DENIED
    assert not second.remembered
    assert len(prompt.calls) == 2


def test_deny_outranks_remembered(
    cert_lab: Lab, ems_factory: EmsFactory, tmp_path: Path
) -> None:
    ems = ems_factory(kind="self-signed-leaf")
    memory = tmp_path / "memory.json"
    _client(cert_lab, memory, Prompter(Answer.ALLOW)).connect(
        ems.host, ems.port, servername=EMS_FQDN
    )
    prompt = Prompter()

    denied = _client(
        cert_lab, memory, prompt, action=Action.DENY, action_source=ActionSource.PROFILE
    ).connect(ems.host, ems.port, servername=EMS_FQDN)

    assert denied.outcome is OutcomeName.REFUSED_DENY
    assert denied.remembered
    assert prompt.calls == []


def test_remembered_survives_restart(
    cert_lab: Lab, ems_factory: EmsFactory, tmp_path: Path
) -> None:
    ems = ems_factory(kind="wrong-host")
    memory = tmp_path / "memory.json"
    _client(cert_lab, memory, Prompter(Answer.ALLOW)).connect(
        ems.host, ems.port, servername=EMS_FQDN
    )

    restarted = _client(cert_lab, memory, Prompter()).connect(
        ems.host, ems.port, servername=EMS_FQDN
    )

    assert restarted.outcome is OutcomeName.CONNECTED_REMEMBERED


def test_corrupt_memory_is_an_error(
    cert_lab: Lab, ems_factory: EmsFactory, tmp_path: Path
) -> None:
    ems = ems_factory(kind="wrong-host")
    memory = tmp_path / "memory.json"
    memory.write_text("[]")

    with pytest.raises(MemoryFileError, match=r"memory\.json is invalid"):
        _client(cert_lab, memory, Prompter()).connect(
            ems.host, ems.port, servername=EMS_FQDN
        )


def test_no_app_bytes_during_prompt_or_after_refusal(
    cert_lab: Lab, ems_factory: EmsFactory, tmp_path: Path
) -> None:
    ems = ems_factory(kind="wrong-host")
    seen: list[int] = []

    def prompt(info: PromptInfo) -> Answer:
        assert ems.wait_for_connections(1, timeout=5.0)
        seen.append(ems.connections[-1].app_bytes_received)
        return Answer.DENY

    client = EndpointClient(
        "7.0.2",
        cert_lab.trust_store_path,
        memory_path=tmp_path / "m.json",
        prompt=prompt,
    )
    result = client.connect(ems.host, ems.port, servername=EMS_FQDN)
    closed = ems.wait_until(
        lambda server: server.connections[-1].closed_at is not None, timeout=5.0
    )

    assert result.outcome is OutcomeName.REFUSED_PROMPT_DENIED
    assert seen == [0]
    assert closed
    assert ems.connections[-1].app_bytes_received == 0


def test_profile_persisted_and_used(
    cert_lab: Lab, ems_factory: EmsFactory, tmp_path: Path
) -> None:
    valid = ems_factory(kind="correct-fqdn", profile_action="deny")
    invalid = ems_factory(kind="wrong-host")
    memory = tmp_path / "memory.json"

    first = _client(cert_lab, memory, Prompter(), installer_action=Action.ALLOW)
    connected = first.connect(valid.host, valid.port, servername=EMS_FQDN)
    restarted = _client(cert_lab, memory, Prompter(), installer_action=Action.ALLOW)
    refused = restarted.connect(invalid.host, invalid.port, servername=EMS_FQDN)

    assert connected.action_source is ActionSource.INSTALLER
    assert connected.telemetry is not None
    assert connected.telemetry.profile_action is Action.DENY
    assert refused.outcome is OutcomeName.REFUSED_DENY
    assert refused.action_source is ActionSource.PROFILE


def test_legacy_ems_profile_not_persisted(
    cert_lab: Lab, ems_factory: EmsFactory, tmp_path: Path
) -> None:
    ems = ems_factory(kind="correct-fqdn", profile_action="deny", ems_version="7.0.1")
    memory = tmp_path / "memory.json"

    result = _client(cert_lab, memory, Prompter()).connect(
        ems.host, ems.port, servername=EMS_FQDN
    )

    assert result.telemetry is not None
    assert result.telemetry.completed
    assert MemoryFile(memory).profile() is None


@pytest.fixture
def tls12_server(cert_lab: Lab) -> Iterator[tuple[str, int]]:
    built = cert_lab.kind("correct-fqdn")
    context = SSL.Context(SSL.TLS_SERVER_METHOD)
    context.set_max_proto_version(SSL.TLS1_2_VERSION)
    context.use_certificate_chain_file(str(built.chain_path))
    context.use_privatekey_file(str(built.key_path))
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(5.0)
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            sock, _ = listener.accept()
        except OSError as exc:
            errors.append(exc)
            return
        with sock:
            conn = SSL.Connection(context, sock)
            conn.set_accept_state()
            # The client refuses TLS 1.2, so the handshake fails here.
            with contextlib.suppress(SSL.Error):
                conn.do_handshake()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[:2]
    thread.join(timeout=5.0)
    listener.close()
    assert not thread.is_alive()
    assert errors == []


def test_tls12_server_is_handshake_failure(
    cert_lab: Lab, tls12_server: tuple[str, int], tmp_path: Path
) -> None:
    host, port = tls12_server
    client = _client(cert_lab, tmp_path / "memory.json", Prompter())

    result = client.connect(host, port, servername=EMS_FQDN)

    assert result.outcome is OutcomeName.HANDSHAKE_FAILED
    assert not result.connected
    assert result.error is not None
    assert f"{host}:{port}" in result.error


def test_unreachable_is_handshake_failure(cert_lab: Lab, tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as reserved:
        port = reserved.getsockname()[1]
    client = _client(cert_lab, tmp_path / "memory.json", Prompter())

    result = client.connect("127.0.0.1", port, servername=EMS_FQDN)

    assert result.outcome is OutcomeName.HANDSHAKE_FAILED
    assert result.leaf_sha256 is None
