"""Benchmark the main job against a bare loop of TLS 1.3 handshakes.

Both sides run in this process on the same number of threads and open the
same number of connections to mock EMS servers on loopback, so client and
server share one interpreter on both sides:

* ``run``: the full scenario matrix against the reference client, with
  oracle, remembered-state setup, telemetry session and comparison;
* baseline: one plain TLS 1.3 handshake per scenario with Python's ssl
  module against one mock EMS, and nothing else.

The two sides alternate ``--repeat`` times, and the ratio compares the
fastest run with the fastest baseline, so that load from other processes
on the machine counts against neither side more than the other. The
target is a ratio of at most 2. Usage::

    python benchmarks/bench_run.py [--jobs N] [--kinds a,b,...] [--repeat N]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import socket
import ssl
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from harness.ems.server import EmsError, MockEms
from harness.matrix import Matrix, build_matrix, make_filter
from harness.model import CnFallback
from harness.pki import build_lab
from harness.pki.lab import Lab
from harness.runner import MockEmsPool, ReferenceDriver, Status, run_scenarios


@dataclass(frozen=True)
class Timing:
    """Wall-clock and process CPU seconds of one measured side."""

    wall: float
    cpu: float


def run_matrix(lab: Lab, matrix: Matrix, jobs: int) -> tuple[Timing, int]:
    """Run ``matrix`` against the reference client; return timing and agreements."""
    driver = ReferenceDriver(lab, CnFallback.WHEN_NO_SAN)
    wall_start, cpu_start = time.perf_counter(), time.process_time()
    with MockEmsPool(lab) as servers:
        results = run_scenarios(
            driver, matrix.scenarios, servers, jobs=jobs, timeout=10.0
        )
        timing = Timing(
            time.perf_counter() - wall_start, time.process_time() - cpu_start
        )
    for failure in servers.failures:
        print(f"warning: {failure}", file=sys.stderr)
    agree = sum(result.status is Status.AGREE for result in results)
    return timing, agree


def bare_handshakes(lab: Lab, count: int, jobs: int) -> Timing:
    """Time ``count`` TLS 1.3 handshakes on ``jobs`` threads against one mock EMS."""
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
        wall_start, cpu_start = time.perf_counter(), time.process_time()
        with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
            list(pool.map(handshake, range(count)))
        return Timing(time.perf_counter() - wall_start, time.process_time() - cpu_start)
    finally:
        try:
            ems.stop()
        except EmsError as exc:
            print(f"warning: baseline server failed: {exc}", file=sys.stderr)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--kinds", default=None, help="comma-separated kinds")
    parser.add_argument(
        "--repeat", type=int, default=3, help="measurements of each side (>= 1)"
    )
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error(f"--repeat must be at least 1, got {args.repeat}")

    runs: list[Timing] = []
    baselines: list[Timing] = []
    with tempfile.TemporaryDirectory() as tmp:
        lab = build_lab(Path(tmp) / "lab")
        kinds = args.kinds.split(",") if args.kinds else None
        matrix = build_matrix(make_filter(kinds=kinds))
        count = len(matrix)
        for attempt in range(1, args.repeat + 1):
            run, agree = run_matrix(lab, matrix, args.jobs)
            baseline = bare_handshakes(lab, count, args.jobs)
            runs.append(run)
            baselines.append(baseline)
            print(
                f"#{attempt}: run {run.wall:.2f} s (cpu {run.cpu:.2f} s, "
                f"{agree}/{count} agree), baseline {baseline.wall:.2f} s "
                f"(cpu {baseline.cpu:.2f} s), ratio {run.wall / baseline.wall:.2f}"
            )

    best_run = min(timing.wall for timing in runs)
    best_baseline = min(timing.wall for timing in baselines)
    paired = [r.wall / b.wall for r, b in zip(runs, baselines, strict=True)]
    print(f"scenarios: {count}, jobs: {args.jobs}, repeat: {args.repeat}")
    print(f"run:      {best_run:.2f} s best ({count / best_run:.0f}/s)")
    print(f"baseline: {best_baseline:.2f} s best ({count / best_baseline:.0f}/s)")
    print(
        f"ratio:    {best_run / best_baseline:.2f} best over best, "
        f"{statistics.median(paired):.2f} median of pairs (target <= 2)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
