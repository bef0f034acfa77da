"""Benchmark: the recommended upgrade path over real TLS with a large fleet.

Runs the built-in recommended path with ``--endpoints`` endpoints (an equal
mix of 6.4.6, 7.0.1, 6.4.7 and 7.0.2), every endpoint reconnecting over TLS
1.3 to one mock EMS after every step. The baseline, in the same process and
on the same CPUs, is a bare loop of TLS 1.3 handshakes against the same mock
EMS with the same thread pool: connect, handshake, close, with no
certificate validation and no telemetry. The result is the ratio of the two
rates, so it compares the fleet's overhead per connection and not the
machine.

Usage::

    python benchmarks/bench_fleet.py [--endpoints 1000] [--workers 16]
        [--cpus 2] [--lab DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from OpenSSL import SSL

from harness.ems.server import MockEms
from harness.fleet import Simulation, recommended_path
from harness.fleet.invariants import recommended_violations
from harness.fleet.tls import TlsConnector
from harness.pki import Lab, build_lab

MIX = {"6.4.6": 25, "7.0.1": 25, "6.4.7": 25, "7.0.2": 25}


def _pin_cpus(count: int) -> list[int]:
    available = sorted(os.sched_getaffinity(0))
    chosen = available[:count]
    os.sched_setaffinity(0, chosen)
    return chosen


def _bare_handshake(host: str, port: int) -> None:
    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    context.set_min_proto_version(SSL.TLS1_3_VERSION)
    context.set_verify(SSL.VERIFY_NONE)
    with socket.create_connection((host, port), timeout=10) as sock:
        # pyOpenSSL raises WantReadError on a socket with a timeout.
        sock.setblocking(True)
        conn = SSL.Connection(context, sock)
        conn.set_tlsext_host_name(b"ems.example.com")
        conn.set_connect_state()
        conn.do_handshake()
        conn.shutdown()


def bare_rate(lab: Lab, count: int, workers: int) -> float:
    """Return bare TLS 1.3 handshakes per second against a mock EMS."""
    built = lab.kind("correct-fqdn")
    with MockEms(built.chain_path.read_bytes(), built.key_path.read_bytes()) as ems:
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(lambda _: _bare_handshake(ems.host, ems.port), range(count)))
        return count / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoints", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--cpus", type=int, default=2, help="CPUs to pin to")
    parser.add_argument("--baseline", type=int, default=2000, help="bare handshakes")
    parser.add_argument("--lab", type=Path, default=None, help="lab folder")
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="folder for the endpoints' remembered-certificate files",
    )
    args = parser.parse_args(argv)

    cpus = _pin_cpus(args.cpus)
    lab_dir = args.lab or Path(tempfile.mkdtemp(prefix="bench-lab-"))
    lab = build_lab(lab_dir)

    baseline = bare_rate(lab, args.baseline, args.workers)
    state_dir = None
    if args.state_dir is not None:
        state_dir = Path(tempfile.mkdtemp(prefix="bench-fleet-", dir=args.state_dir))
    connector = TlsConnector(lab, state_dir=state_dir)
    simulation = Simulation(
        recommended_path(),
        lab,
        connector=connector,
        endpoints=args.endpoints,
        mix=dict(MIX),
        workers=args.workers,
    )
    started = time.perf_counter()
    try:
        result = simulation.run()
    finally:
        if state_dir is not None:
            shutil.rmtree(state_dir, ignore_errors=True)
    wall = time.perf_counter() - started
    connect_seconds = sum(step.seconds for step in result.steps)
    fleet_rate = result.connections / connect_seconds

    print(f"python {sys.version.split()[0]}, CPUs {cpus}, workers {args.workers}")
    print(f"endpoint files in {connector.state_dir}")
    print(f"bare TLS 1.3 handshakes: {baseline:.0f} per second")
    print(
        f"fleet: {result.connections} connections over {len(result.steps)} steps "
        f"in {wall:.1f} s wall ({connect_seconds:.1f} s connecting), "
        f"{fleet_rate:.0f} per second"
    )
    print(f"fleet rate / bare rate: {fleet_rate / baseline:.2f}")
    print(f"disagreements: {len(result.disagreements)}")
    print(f"invariant violations: {len(recommended_violations(result))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
