"""Server-side fuzzing: hostile bytes sent to the mock EMS over loopback.

Theory of operation
-------------------

A campaign starts one :class:`~harness.ems.server.MockEms` with short
timeouts and feeds it Hypothesis-drawn :class:`ServerInput` values, each on
its own TCP connection to 127.0.0.1:

* ``raw``: random bytes before any handshake;
* ``client-hello``: a real TLS 1.3 ClientHello, captured from :mod:`ssl`
  through a ``MemoryBIO``, with bytes flipped, overwritten, inserted or cut;
* ``handshake``: the real ClientHello, then random records after the
  server's first flight, in the middle of the handshake;
* ``frames``: telemetry frames inside an established TLS 1.3 session, with
  wrong magic, versions, types, lengths and payloads, sent in pieces cut at
  drawn byte offsets.

After sending, the client half-closes and reads until the server closes;
the server must close within its handshake or idle timeout plus a second.
Every ``check_every`` inputs a well-behaved reference client runs a whole
session, and a bystander session opened before those inputs must still
answer. Before the inputs, a flood of stalled connections (200 by default)
is held open while a well-behaved client connects. Afterwards the server
must stop cleanly (no error from its thread) and the process's thread
count, open descriptors and RSS must return to their starting values.

Property violations never stop a campaign: each becomes a
:class:`ServerFinding`.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import logging
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from harness.ems.server import MockEms
from harness.ems.telemetry import (
    MAGIC,
    FrameDecoder,
    FrameError,
    MessageType,
    encode_frame,
)
from harness.pki import Lab

logger = logging.getLogger(__name__)

INPUT_KINDS = ("raw", "client-hello", "handshake", "frames")
# Examples per Hypothesis run. A run keeps every example it generated (its
# result cache and choice tree) until it ends, about 17 KiB per input for
# these strategies, so a batch of 500 holds about 8 MiB.
BATCH_INPUTS = 500
# RSS may grow by this much over a campaign. Measured on Linux with
# Python 3.11 and Hypothesis 6.170, a 10,000-input campaign grows RSS by about
# 32 MiB: 19 MiB over the first 1,000 inputs (Hypothesis and OpenSSL warm-up),
# then 1.4 KiB per input, which includes the mock EMS's record of every
# connection. A server leaking 4 KiB or more per connection therefore fails
# the 10,000-input campaign.
# NOTE: a 300-input campaign only catches leaks of about 150 KiB per input.
RSS_SLACK_BYTES = 64 * 1024 * 1024


# -- process resources ---------------------------------------------------------


@dataclass(frozen=True)
class Resources:
    """Thread count, open descriptors and resident memory of this process."""

    threads: int
    fds: int
    rss: int

    @classmethod
    def measure(cls) -> Resources:
        """Measure the current process through ``/proc/self``."""
        with open("/proc/self/statm") as handle:
            pages = int(handle.read().split()[1])
        return cls(
            threads=threading.active_count(),
            fds=len(os.listdir("/proc/self/fd")),
            rss=pages * os.sysconf("SC_PAGE_SIZE"),
        )

    def differences(self, later: Resources) -> list[str]:
        """Return how ``later`` fails to be back at this baseline."""
        problems = []
        if later.threads != self.threads:
            problems.append(f"threads {self.threads} -> {later.threads}")
        if later.fds != self.fds:
            problems.append(f"open descriptors {self.fds} -> {later.fds}")
        if later.rss - self.rss > RSS_SLACK_BYTES:
            problems.append(
                f"RSS grew by {(later.rss - self.rss) // 1024} KiB, "
                f"more than {RSS_SLACK_BYTES // 1024} KiB"
            )
        return problems


# -- inputs ----------------------------------------------------------------------


@dataclass(frozen=True)
class ServerInput:
    """One hostile connection: how to open it and what to send.

    Attributes:
        kind: One of :data:`INPUT_KINDS`.
        data: The bytes sent (inside TLS for ``frames``).
        cuts: Offsets into ``data`` where a send ends and the next begins.
    """

    kind: str
    data: bytes
    cuts: tuple[int, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-ready dict that :meth:`from_json` reads back."""
        return {
            "kind": self.kind,
            "data_base64": base64.b64encode(self.data).decode(),
            "cuts": list(self.cuts),
        }

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> ServerInput:
        """Read a dict written by :meth:`to_json`."""
        return cls(
            str(value["kind"]),
            base64.b64decode(value["data_base64"]),
            tuple(int(c) for c in value.get("cuts", ())),
        )

    def pieces(self) -> list[bytes]:
        """Split ``data`` at ``cuts``."""
        bounds = [0, *sorted(c for c in set(self.cuts) if 0 < c < len(self.data))]
        bounds.append(len(self.data))
        return [self.data[a:b] for a, b in itertools.pairwise(bounds)]


def _client_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    return context


def capture_client_hello(servername: str = "ems.example.com") -> bytes:
    """Return the first flight of a real :mod:`ssl` TLS 1.3 client."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = _client_context().wrap_bio(incoming, outgoing, server_hostname=servername)
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def mutate(data: bytes, operations: list[tuple[str, int, int]]) -> bytes:
    """Apply byte-level mutations; positions wrap around the data's length."""
    buffer = bytearray(data)
    for name, position, value in operations:
        if not buffer:
            buffer.append(value & 0xFF)
            continue
        index = position % len(buffer)
        if name == "flip":
            buffer[index] ^= 1 << (value % 8)
        elif name == "set":
            buffer[index] = value & 0xFF
        elif name == "insert":
            buffer[index:index] = bytes([value & 0xFF]) * (1 + value % 16)
        elif name == "delete":
            del buffer[index : index + 1 + value % 16]
        elif name == "truncate":
            del buffer[index:]
    return bytes(buffer)


_operations = st.lists(
    st.tuples(
        st.sampled_from(("flip", "set", "insert", "delete", "truncate")),
        st.integers(0, 1 << 16),
        st.integers(0, 255),
    ),
    min_size=1,
    max_size=8,
)


def _json_values() -> st.SearchStrategy[Any]:
    scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=20))
    return st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4),
            st.dictionaries(st.text(max_size=8), inner, max_size=4),
        ),
        max_leaves=10,
    )


@st.composite
def _frame(draw: st.DrawFn) -> bytes:
    """Draw one frame, valid or with a broken header or payload."""
    shape = draw(st.sampled_from(("valid", "header", "payload", "oversized")))
    msg_type = draw(st.sampled_from(list(MessageType)))
    payload: dict[str, Any] = draw(
        st.one_of(
            st.dictionaries(st.text(max_size=12), _json_values(), max_size=5),
            st.fixed_dictionaries(
                {
                    "endpoint_id": st.text(max_size=10),
                    "hostname": st.text(max_size=10),
                    "version": st.text(max_size=10),
                    "command_id": st.integers(),
                    "status": st.sampled_from(("ok", "failed", "other")),
                }
            ),
        )
    )
    if shape == "valid":
        return encode_frame(msg_type, payload)
    body = draw(st.binary(max_size=64)) if shape == "payload" else b"{}"
    magic = draw(st.sampled_from((MAGIC, b"EMSX", b"\x00\x00\x00\x00")))
    version = draw(st.integers(0, 255))
    raw_type = draw(st.integers(0, 255))
    length = len(body)
    if shape == "oversized":
        length = draw(st.integers(65537, 2**32 - 1))
    elif draw(st.booleans()):
        length = draw(st.integers(0, 2**32 - 1))
    header = magic + bytes([version, raw_type]) + length.to_bytes(4, "big")
    return header + body


@st.composite
def server_inputs(draw: st.DrawFn, client_hello: bytes) -> ServerInput:
    """Draw one hostile connection for the mock EMS."""
    kind = draw(st.sampled_from(INPUT_KINDS))
    if kind == "raw":
        data = draw(st.binary(min_size=1, max_size=2048))
    elif kind == "client-hello":
        data = mutate(client_hello, draw(_operations))
    elif kind == "handshake":
        record_type = draw(st.sampled_from((20, 21, 22, 23, 24, 0, 255)))
        body = draw(st.binary(max_size=512))
        data = bytes([record_type, 3, 3]) + len(body).to_bytes(2, "big") + body
    else:
        register = encode_frame(
            MessageType.REGISTER,
            {"endpoint_id": "fuzz", "hostname": "fuzz", "version": "7.2.0"},
        )
        frames = draw(st.lists(_frame(), min_size=1, max_size=4))
        prefix = register if draw(st.booleans()) else b""
        data = prefix + b"".join(frames)
    cuts = tuple(draw(st.lists(st.integers(1, max(1, len(data) - 1)), max_size=4)))
    return ServerInput(kind, data, cuts)


# -- driving one input -----------------------------------------------------------


def _read_until_closed(sock: socket.socket, limit: float) -> bool:
    """Read and discard until the peer closes; return whether it did in time."""
    deadline = time.monotonic() + limit
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        sock.settimeout(remaining)
        try:
            if not sock.recv(65536):
                return True
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True


def send_input(ems: MockEms, item: ServerInput, client_hello: bytes) -> str | None:
    """Send ``item`` on a new connection; return a problem, or ``None``."""
    limit = ems.handshake_timeout + ems.idle_timeout + 1.0
    with socket.create_connection((ems.host, ems.port), timeout=limit) as raw:
        try:
            if item.kind == "frames":
                with _client_context().wrap_socket(
                    raw, server_hostname="ems.example.com"
                ) as tls:
                    for piece in item.pieces():
                        tls.sendall(piece)
                    # Drop TLS and half-close the TCP stream: the server sees EOF.
                    tls.shutdown(socket.SHUT_WR)
                    closed = _read_until_closed(tls, limit)
            else:
                if item.kind == "handshake":
                    raw.sendall(client_hello)
                    raw.settimeout(limit)
                    raw.recv(65536)
                for piece in item.pieces():
                    raw.sendall(piece)
                raw.shutdown(socket.SHUT_WR)
                closed = _read_until_closed(raw, limit)
        except TimeoutError:
            return f"server did not respond within {limit:.1f} s"
        except (ssl.SSLError, OSError):
            # The server closing on a bad input mid-send is the expected end.
            return None
    if not closed:
        return f"server kept the connection open past {limit:.1f} s after EOF"
    return None


# -- well-behaved traffic --------------------------------------------------------


class Bystander:
    """A registered telemetry session that must survive other connections."""

    def __init__(self, ems: MockEms) -> None:
        self.opened_at = time.monotonic()
        self._idle_timeout = ems.idle_timeout
        # wrap_socket detaches raw, so leaving this block closes a descriptor
        # only when the context or the wrap raised before the TLS socket took it.
        with socket.create_connection((ems.host, ems.port), timeout=5.0) as raw:
            self._tls = _client_context().wrap_socket(
                raw, server_hostname="ems.example.com"
            )
        self._decoder = FrameDecoder()
        try:
            self._register()
        except BaseException:
            self._tls.close()
            raise

    def _register(self) -> None:
        self._tls.sendall(
            encode_frame(
                MessageType.REGISTER,
                {
                    "endpoint_id": "bystander",
                    "hostname": "bystander",
                    "version": "7.2.0",
                },
            )
        )
        self._expect({MessageType.LICENSE, MessageType.CONFIG})

    def _expect(self, types: set[MessageType]) -> None:
        seen: set[MessageType] = set()
        while not types <= seen:
            data = self._tls.recv(65536)
            if not data:
                raise ConnectionError("the server closed the bystander session")
            seen |= {frame.type for frame in self._decoder.feed(data)}

    def finish(self) -> str | None:
        """Send ENDPOINT_INFO, expect a COMMAND, close; return a problem."""
        try:
            self._tls.sendall(encode_frame(MessageType.ENDPOINT_INFO, {"os": "fuzz"}))
            self._expect({MessageType.COMMAND})
        except (OSError, FrameError) as exc:
            idle = time.monotonic() - self.opened_at
            if idle >= self._idle_timeout:
                # A slow input kept the bystander idle past the server's idle
                # timeout, so the server was right to close it.
                logger.info("bystander closed after %.1f s idle", idle)
                return None
            return f"bystander session broken by other connections: {exc!r}"
        finally:
            self._tls.close()
        return None


def well_behaved_session(ems: MockEms, lab: Lab) -> str | None:
    """Run one whole reference-client session; return a problem, or ``None``."""
    from harness.endpoint.client import EndpointClient

    client = EndpointClient(
        "7.2.0", lab.trust_store_path, timeout=5.0, telemetry_idle=0.05
    )
    observation = client.connect(ems.host, ems.port, servername="ems.example.com")
    if not observation.connected:
        return f"well-behaved client not connected: {observation.error}"
    if observation.telemetry is None or not observation.telemetry.completed:
        error = observation.telemetry.error if observation.telemetry else None
        return f"well-behaved telemetry session failed: {error}"
    return None


def flood(ems: MockEms, lab: Lab, count: int) -> list[str]:
    """Hold ``count`` stalled connections open while a good client connects.

    The server must then close every stalled one at its handshake timeout.
    """
    problems = []
    sockets = []
    try:
        for _ in range(count):
            sockets.append(socket.create_connection((ems.host, ems.port), timeout=5.0))
        problem = well_behaved_session(ems, lab)
        if problem:
            problems.append(f"during a flood of {count}: {problem}")
        limit = ems.handshake_timeout + 2.0
        for sock in sockets:
            if not _read_until_closed(sock, limit):
                problems.append(f"stalled connection open past {limit:.1f} s")
                break
    finally:
        for sock in sockets:
            sock.close()
    return problems


# -- the campaign --------------------------------------------------------------


@dataclass(frozen=True)
class ServerFinding:
    """One broken property, with the input that broke it (if any)."""

    problem: str
    input: ServerInput | None = None


@dataclass
class ServerReport:
    """What a server campaign did and found.

    ``before`` is measured before the server starts, ``warm`` after the first
    batch of inputs and ``after`` once the server has stopped.
    """

    inputs: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    findings: list[ServerFinding] = field(default_factory=list)
    before: Resources | None = None
    warm: Resources | None = None
    after: Resources | None = None
    seconds: float = 0.0


def run_server_campaign(
    lab: Lab,
    *,
    max_inputs: int,
    budget: float,
    seed: int = 0,
    flood_count: int = 200,
    check_every: int = 50,
    handshake_timeout: float = 1.0,
    idle_timeout: float = 3.0,
    progress: Callable[[int], None] | None = None,
    batch_inputs: int = BATCH_INPUTS,
) -> ServerReport:
    """Run a bounded campaign against a fresh mock EMS.

    Stops after ``max_inputs`` inputs or ``budget`` seconds, whichever
    comes first (the flood and the final checks run in any case). Inputs are
    drawn in Hypothesis runs of at most ``batch_inputs`` examples each.
    """
    built = lab.kind("correct-fqdn")
    client_hello = capture_client_hello()
    report = ServerReport()
    started = time.monotonic()
    report.before = Resources.measure()

    ems = MockEms(
        built.chain_path.read_bytes(),
        built.key_path.read_bytes(),
        handshake_timeout=handshake_timeout,
        idle_timeout=idle_timeout,
    )
    try:
        ems.start()
        for problem in flood(ems, lab, flood_count):
            report.findings.append(ServerFinding(problem))
        _feed(
            ems,
            lab,
            report,
            client_hello,
            max_inputs,
            started + budget,
            seed,
            check_every,
            progress,
            batch_inputs,
        )
        _check_records(ems, report)
    finally:
        try:
            ems.stop()
        except Exception as exc:
            report.findings.append(ServerFinding(f"server thread failed: {exc!r}"))
    report.after = _settled(report.before)
    for problem in report.before.differences(report.after):
        report.findings.append(ServerFinding(f"not back at baseline: {problem}"))
    report.seconds = time.monotonic() - started
    return report


def _feed(
    ems: MockEms,
    lab: Lab,
    report: ServerReport,
    client_hello: bytes,
    max_inputs: int,
    deadline: float,
    seed: int,
    check_every: int,
    progress: Callable[[int], None] | None,
    batch_inputs: int,
) -> None:
    """Send inputs in Hypothesis runs of at most ``batch_inputs`` examples.

    A single Hypothesis run keeps every example it generated until it ends, so
    splitting the campaign bounds that memory by the batch size instead of
    ``max_inputs``. Batch ``i`` is seeded with ``(seed << 32) | i``.
    """
    bystander: list[Bystander] = []

    def one(item: ServerInput) -> None:
        if time.monotonic() > deadline or report.inputs >= max_inputs:
            return
        # The bystander is rotated before the server's idle timeout could
        # close it, which would be correct behaviour and not a finding.
        stale = bool(bystander) and (
            time.monotonic() - bystander[0].opened_at > ems.idle_timeout / 2
        )
        if report.inputs % check_every == 0 or stale:
            _checkpoint(ems, lab, report, bystander)
        report.inputs += 1
        report.by_kind[item.kind] = report.by_kind.get(item.kind, 0) + 1
        problem = send_input(ems, item, client_hello)
        if problem is not None:
            report.findings.append(ServerFinding(problem, item))
        if progress is not None:
            progress(report.inputs)

    for batch in itertools.count():
        remaining = max_inputs - report.inputs
        if remaining <= 0 or time.monotonic() > deadline:
            break
        sent_before = report.inputs
        count = min(remaining, batch_inputs)
        _run_batch(one, client_hello, count, (seed << 32) | batch)
        if report.inputs == sent_before:
            # Hypothesis generated nothing new, so another batch would not either.
            break
        if report.warm is None:
            report.warm = Resources.measure()
    _checkpoint(ems, lab, report, bystander, reopen=False)


def _run_batch(
    body: Callable[[ServerInput], None],
    client_hello: bytes,
    count: int,
    batch_seed: int,
) -> None:
    """Call ``body`` on ``count`` drawn inputs in one Hypothesis run."""
    from hypothesis import seed as hypothesis_seed

    test = settings(
        max_examples=count,
        database=None,
        deadline=None,
        derandomize=False,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )(given(item=server_inputs(client_hello))(body))
    hypothesis_seed(batch_seed)(test)()


def _checkpoint(
    ems: MockEms,
    lab: Lab,
    report: ServerReport,
    bystander: list[Bystander],
    reopen: bool = True,
) -> None:
    if bystander:
        problem = bystander.pop().finish()
        if problem:
            report.findings.append(ServerFinding(problem))
    problem = well_behaved_session(ems, lab)
    if problem:
        report.findings.append(ServerFinding(problem))
    if reopen:
        try:
            bystander.append(Bystander(ems))
        except (OSError, FrameError) as exc:
            report.findings.append(
                ServerFinding(f"bystander could not register: {exc!r}")
            )


def _check_records(ems: MockEms, report: ServerReport) -> None:
    limit = ems.handshake_timeout + ems.idle_timeout + 2.0
    if not ems.wait_until(
        lambda server: all(r.closed_at is not None for r in server.connections), limit
    ):
        open_count = sum(1 for r in ems.connections if r.closed_at is None)
        report.findings.append(
            ServerFinding(
                f"{open_count} connection(s) still open {limit:.1f} s "
                "after the last input"
            )
        )
    crashed = [
        r
        for r in ems.connections
        if (r.error or "").startswith("unexpected server error")
    ]
    for record in crashed[:10]:
        report.findings.append(
            ServerFinding(f"connection {record.connection_id}: {record.error}")
        )


def _settled(baseline: Resources, wait: float = 5.0) -> Resources:
    """Measure resources, retrying briefly while threads and sockets wind down."""
    deadline = time.monotonic() + wait
    while True:
        current = Resources.measure()
        if not baseline.differences(current) or time.monotonic() > deadline:
            return current
        time.sleep(0.05)


def replay_server_input(lab: Lab, item: ServerInput) -> list[str]:
    """Send one saved input to a fresh mock EMS; return the broken properties."""
    built = lab.kind("correct-fqdn")
    client_hello = capture_client_hello()
    problems = []
    with MockEms(
        built.chain_path.read_bytes(),
        built.key_path.read_bytes(),
        handshake_timeout=1.0,
        idle_timeout=3.0,
    ) as ems:
        problem = send_input(ems, item, client_hello)
        if problem:
            problems.append(problem)
        problem = well_behaved_session(ems, lab)
        if problem:
            problems.append(problem)
    return problems
