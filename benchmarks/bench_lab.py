"""Benchmark the certificate lab build against plain trustme issuance.

Run: ``python benchmarks/bench_lab.py [--repeats N] [--dir FOLDER]``

In one process, each round times three things, interleaved so that load from
other processes hits them alike:

* baseline: trustme creates one CA and issues as many plain leaves as the
  catalogue has kinds, in memory;
* cold: ``build_lab`` into a fresh folder (every CA, leaf and file, and the
  manifest with the oracle's expected reasons);
* warm: ``build_lab`` again into the same folder, which loads the cache.

Targets: cold within 2x the baseline; warm under a tenth of cold. The result
is printed as Markdown lines for docs/benchmarks.md. ``--dir`` picks the file
system the labs are written to, by default the system temporary folder. A
tmpfs such as /dev/shm separates the lab's own work from disk latency.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import trustme

from harness.pki import CATALOGUE, build_lab

COLD_TARGET = 2.0
WARM_TARGET = 0.1


def _baseline(count: int) -> None:
    ca = trustme.CA()
    for i in range(count):
        ca.issue_cert(f"host{i}.example.com")


def _timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the results; return the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15, help="rounds to time")
    parser.add_argument(
        "--dir", type=Path, default=None, help="parent folder for the lab folders"
    )
    args = parser.parse_args(argv)
    count = len(CATALOGUE)

    baseline: list[float] = []
    cold: list[float] = []
    warm: list[float] = []
    work = Path(tempfile.mkdtemp(prefix="bench-lab-", dir=args.dir))
    try:
        # One untimed round loads modules and warms the allocator.
        _baseline(count)
        build_lab(work / "warm-up")
        for round_number in range(args.repeats):
            folder = work / f"round-{round_number}"
            baseline.append(_timed(lambda: _baseline(count)))
            cold.append(_timed(functools.partial(build_lab, folder)))
            warm.append(_timed(functools.partial(build_lab, folder)))
    finally:
        shutil.rmtree(work)

    base_ms = statistics.median(baseline) * 1000
    cold_ms = statistics.median(cold) * 1000
    warm_ms = statistics.median(warm) * 1000
    cold_ratio = cold_ms / base_ms
    warm_ratio = warm_ms / cold_ms
    machine = (
        f"{os.cpu_count()} cores ({_cpu_model()}), Python "
        f"{platform.python_version()}, {platform.system()} {platform.release()}"
    )
    print(f"- machine: {machine}")
    print(f"- load average at the end: {os.getloadavg()[0]:.1f}")
    print(f"- lab folders under: {work.parent}")
    print(f"- kinds: {count}; rounds: {args.repeats}; medians below")
    print(f"- trustme, one CA and {count} plain leaves in memory: {base_ms:.1f} ms")
    print(f"- cold build_lab into a fresh folder: {cold_ms:.1f} ms")
    print(f"- warm build_lab from the cache: {warm_ms:.1f} ms")
    print(
        f"- cold / trustme: {cold_ratio:.2f}x (target at most {COLD_TARGET:g}x, "
        f"{'met' if cold_ratio <= COLD_TARGET else 'missed'})"
    )
    print(
        f"- warm / cold: {warm_ratio:.3f} (target under {WARM_TARGET:g}, "
        f"{'met' if warm_ratio < WARM_TARGET else 'missed'})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
