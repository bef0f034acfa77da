"""Benchmark the main job against a bare loop of TLS 1.3 handshakes.

Both sides run in this process on the same number of threads and open the
same number of connections to mock EMS servers on loopback:

* ``run``: the full scenario matrix against the reference client, with
  oracle, remembered-state setup, telemetry session and comparison;
* baseline: one plain TLS 1.3 handshake per scenario with Python's ssl
  module against one mock EMS, and nothing else.

The target is a ratio of at most 2. Usage::

    python benchmarks/bench_run.py [--jobs N] [--kinds a,b,...]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import socket
import ssl
import sys
import tempfile
import time
from pathlib import Path

from harness.ems.server import EmsError, MockEms
from harness.matrix import build_matrix, make_filter
from harness.model import CnFallback
from harness.pki import build_lab
from harness.runner import MockEmsPool, ReferenceDriver, Status, run_scenarios


def bare_handshakes(lab_dir: Path, count: int, jobs: int) -> float:
    """Return seconds for ``count`` TLS 1.3 handshakes on ``jobs`` threads."""
    lab = build_lab(lab_dir)
    context = ssl.create_default_context(cafile=str(lab.trust_store_path))
    context.minimum_version = ssl.TLSVersion.TLSv1_3

    ems = MockEms.from_kind(lab, "correct-fqdn", profile_action=None, commands=())
    ems.start()

    def handshake(_: int) -> None:
        with (
            socket.create_connection((ems.host, ems.port), timeout=10) as sock,
            context.wrap_socket(sock, server_hostname="ems.example.com"),
        ):
            pass

    try:
        started = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
            list(pool.map(handshake, range(count)))
        return time.perf_counter() - started
    finally:
        try:
            ems.stop()
        except EmsError as exc:
            print(f"warning: baseline server failed: {exc}", file=sys.stderr)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--kinds", default=None, help="comma-separated kinds")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        lab_dir = Path(tmp) / "lab"
        lab = build_lab(lab_dir)
        kinds = args.kinds.split(",") if args.kinds else None
        matrix = build_matrix(make_filter(kinds=kinds))
        driver = ReferenceDriver(lab, CnFallback.WHEN_NO_SAN)

        started = time.perf_counter()
        with MockEmsPool(lab) as servers:
            results = run_scenarios(
                driver, matrix.scenarios, servers, jobs=args.jobs, timeout=10.0
            )
            run_seconds = time.perf_counter() - started
        for failure in servers.failures:
            print(f"warning: {failure}", file=sys.stderr)

        baseline = bare_handshakes(lab_dir, len(matrix), args.jobs)

    agree = sum(r.status is Status.AGREE for r in results)
    print(f"scenarios: {len(matrix)} ({agree} agree), jobs: {args.jobs}")
    print(f"run:      {run_seconds:.2f} s ({len(matrix) / run_seconds:.0f}/s)")
    print(f"baseline: {baseline:.2f} s ({len(matrix) / baseline:.0f} handshakes/s)")
    print(f"ratio:    {run_seconds / baseline:.2f} (target <= 2)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
