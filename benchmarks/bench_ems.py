"""Benchmark the mock EMS: handshake rate against a bare ``ssl`` loop, idle sessions.

Run ``python benchmarks/bench_ems.py``. Two measurements:

1. Full TLS 1.3 handshakes per second (no resumption) against
   :class:`~harness.ems.server.MockEms`, and against a bare blocking
   :mod:`ssl` accept loop with the same certificate in the same process run.
   Each handshake is followed by one BYE frame and the server's close, so
   both servers do the same work. The ratio MockEms / bare is the result.
2. Idle telemetry sessions held at once: the server runs in a child process,
   the parent opens sessions (handshake, REGISTER, LICENSE and CONFIG read)
   and keeps them open, then reads the child's resident set size.

Everything runs on loopback with bounded counts and timeouts.
"""

from __future__ import annotations

import argparse
import multiprocessing
import multiprocessing.connection
import os
import platform
import resource
import socket
import ssl
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from harness.ems.server import MockEms
from harness.ems.telemetry import FrameDecoder, MessageType, encode_frame
from harness.pki import build_lab

FQDN = "ems.example.com"
BYE = encode_frame(MessageType.BYE, {})
TIMEOUT = 30.0


def _client_context(trust_store: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(trust_store))
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    return context


def _handshake_once(address: tuple[str, int], context: ssl.SSLContext) -> None:
    with (
        socket.create_connection(address, timeout=TIMEOUT) as raw,
        context.wrap_socket(raw, server_hostname=FQDN) as tls,
    ):
        tls.sendall(BYE)
        while tls.recv(4096):
            pass


def _rate(
    address: tuple[str, int], context: ssl.SSLContext, count: int, workers: int
) -> float:
    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        for future in [
            pool.submit(_handshake_once, address, context) for _ in range(count)
        ]:
            future.result()
    return count / (time.perf_counter() - start)


class BareSslServer:
    """A blocking accept loop with :mod:`ssl`: handshake, read BYE, close."""

    def __init__(self, chain: Path, key: Path) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_3
        self.context.options |= ssl.OP_NO_TICKET
        self.context.load_cert_chain(chain, key)
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=1024)
        self.listener.settimeout(0.2)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.listener.getsockname()[:2]
        return str(host), int(port)

    def __enter__(self) -> BareSslServer:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stopping.set()
        self.thread.join(TIMEOUT)
        self.listener.close()

    def _run(self) -> None:
        while not self.stopping.is_set():
            try:
                raw, _ = self.listener.accept()
            except TimeoutError:
                continue
            raw.settimeout(TIMEOUT)
            try:
                with self.context.wrap_socket(raw, server_side=True) as tls:
                    tls.recv(4096)
            except (ssl.SSLError, OSError):
                pass  # A failed client only lowers the rate it measures.
            finally:
                raw.close()


def bench_handshakes(
    lab_dir: Path, count: int, rounds: int, workers: int
) -> dict[str, float]:
    lab = build_lab(lab_dir, kinds=["correct-fqdn"])
    built = lab.kind("correct-fqdn")
    context = _client_context(lab.trust_store_path)
    chain, key = built.chain_path.read_bytes(), built.key_path.read_bytes()

    mock_rates: list[float] = []
    bare_rates: list[float] = []
    for _ in range(rounds):
        # Alternate the servers so drift in machine load hits both alike.
        with BareSslServer(built.chain_path, built.key_path) as bare:
            _rate(bare.address, context, 20, workers)
            bare_rates.append(_rate(bare.address, context, count, workers))
        with MockEms(chain, key) as ems:
            _rate(ems.address, context, 20, workers)
            mock_rates.append(_rate(ems.address, context, count, workers))
    mock, bare_rate = statistics.median(mock_rates), statistics.median(bare_rates)
    return {"mock": mock, "bare": bare_rate, "ratio": mock / bare_rate}


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS in /proc/{pid}/status")


def _serve_child(
    chain: bytes, key: bytes, pipe: multiprocessing.connection.Connection
) -> None:
    _raise_fd_limit()
    with MockEms(chain, key, idle_timeout=600.0, handshake_timeout=60.0) as ems:
        pipe.send(ems.port)
        pipe.recv()  # the parent's request to report
        endpoints = ems.endpoints
        online = sum(e.online for e in endpoints.values())
        pipe.send((online, _rss_mb(os.getpid())))
        pipe.recv()  # the parent's request to stop


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _open_session(port: int, context: ssl.SSLContext, index: int) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    tls = context.wrap_socket(raw, server_hostname=FQDN)
    payload = {"endpoint_id": f"ep-{index}", "hostname": "bench", "version": "7.0.2"}
    tls.sendall(encode_frame(MessageType.REGISTER, payload))
    decoder = FrameDecoder()
    frames = []
    while len(frames) < 2:
        frames += decoder.feed(tls.recv(65536))
    return tls


def bench_idle_sessions(lab_dir: Path, sessions: int) -> dict[str, float]:
    _raise_fd_limit()
    lab = build_lab(lab_dir, kinds=["correct-fqdn"])
    built = lab.kind("correct-fqdn")
    context = _client_context(lab.trust_store_path)
    parent_end, child_end = multiprocessing.Pipe()
    child = multiprocessing.get_context("spawn").Process(
        target=_serve_child,
        args=(built.chain_path.read_bytes(), built.key_path.read_bytes(), child_end),
    )
    child.start()
    try:
        if not parent_end.poll(TIMEOUT):
            raise RuntimeError(f"the server process did not start in {TIMEOUT}s")
        port = parent_end.recv()
        rss_idle = _rss_mb(child.pid or 0)
        start = time.perf_counter()
        with ThreadPoolExecutor(8) as pool:
            open_sessions = list(
                pool.map(lambda i: _open_session(port, context, i), range(sessions))
            )
        opened_in = time.perf_counter() - start
        parent_end.send("report")
        online, rss = parent_end.recv()
        for sock in open_sessions:
            sock.close()
        parent_end.send("stop")
    finally:
        child.join(TIMEOUT)
        if child.is_alive():
            child.kill()
    return {
        "sessions": float(sessions),
        "online": float(online),
        "rss_mb": rss,
        "rss_idle_mb": rss_idle,
        "open_seconds": opened_in,
    }


def _machine() -> str:
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (
        f"{os.cpu_count()} cores, {cpu}, Python {platform.python_version()}, "
        f"{ssl.OPENSSL_VERSION}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--handshakes", type=int, default=400, help="per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=4, help="client threads")
    parser.add_argument("--sessions", type=int, default=2000)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-ems-") as folder:
        lab_dir = Path(folder) / "lab"
        steps: list[tuple[str, Callable[[], dict[str, float]]]] = [
            (
                "handshakes",
                lambda: bench_handshakes(
                    lab_dir, args.handshakes, args.rounds, args.workers
                ),
            ),
            ("idle sessions", lambda: bench_idle_sessions(lab_dir, args.sessions)),
        ]
        print(f"machine: {_machine()}")
        for name, step in steps:
            result = step()
            rendered = ", ".join(f"{k}={v:.2f}" for k, v in result.items())
            print(f"{name}: {rendered}")
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
