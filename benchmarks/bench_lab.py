"""Benchmark the certificate lab build against plain trustme issuance.

Run with the project's environment, for example
``.venv/bin/python benchmarks/bench_lab.py [--repeats N] [--dir FOLDER]``
after ``scripts/bootstrap.sh``.

In one process, each round times four things, interleaved so that load from
other processes hits them alike:

* baseline: trustme creates one CA and issues as many plain leaves as the
  catalogue has kinds, in memory;
* cold: ``build_lab`` into a fresh folder (every CA, leaf and file, and the
  manifest with the oracle's expected reasons);
* warm: ``build_lab`` again into the same folder, which loads the cache;
* files alone: the same number of files, with the same sizes and modes as a
  build writes, created in a fresh folder next to the labs with plain
  ``os.open`` and ``os.write`` calls and no certificate work.

Targets: cold within 2x the baseline; warm under a tenth of cold. The
result is a Markdown bulleted list of medians and ratios, from which the
tables in docs/benchmarks.md are filled. ``--dir`` picks the file system the
labs are written to, by default the system temporary folder. A tmpfs such as
/dev/shm separates the lab's own work from the file system's.

The files-alone line shows what the file system charges for creating the
files, whatever the lab does. On ext4 without a journal, creating a file
skips every inode of its block group freed in the last one to six minutes,
so a folder near many recent deletions (a test run's temporary files, an
earlier run of this script) can make file creation alone cost more than the
whole baseline. Nothing is deleted until the last round ends.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import shutil
import stat
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


def _lab_files(folder: Path) -> list[tuple[str, int, int]]:
    """Return (relative name, size, mode) of every file a build wrote."""
    files = []
    for path in folder.rglob("*"):
        info = path.stat()
        if stat.S_ISREG(info.st_mode):
            name = str(path.relative_to(folder))
            files.append((name, info.st_size, stat.S_IMODE(info.st_mode)))
    return sorted(files)


def _create_files(folder: Path, files: list[tuple[str, int, int]]) -> None:
    """Create ``files`` under ``folder`` with no other work."""
    root = str(folder)
    created_folders: set[str] = set()
    for name, size, mode in files:
        target = f"{root}/{name}"
        parent = os.path.dirname(target)
        if parent not in created_folders:
            os.makedirs(parent, exist_ok=True)
            created_folders.add(parent)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            os.write(fd, b"-" * size)
        finally:
            os.close(fd)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is below 1; give at least 1")
    return value


def _existing_folder(text: str) -> Path:
    path = Path(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an existing folder; create it first or pick another"
        )
    return path


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
    parser.add_argument(
        "--repeats",
        type=_positive_int,
        default=15,
        help="rounds to time; the output gives medians over them "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--dir",
        type=_existing_folder,
        default=None,
        help="existing parent folder for the lab folders "
        "(default: the system temporary folder)",
    )
    args = parser.parse_args(argv)
    count = len(CATALOGUE)

    baseline: list[float] = []
    cold: list[float] = []
    warm: list[float] = []
    files_alone: list[float] = []
    work = Path(tempfile.mkdtemp(prefix="bench-lab-", dir=args.dir))
    try:
        # One untimed round loads modules and warms the allocator.
        _baseline(count)
        build_lab(work / "warm-up")
        files = _lab_files(work / "warm-up")
        for round_number in range(args.repeats):
            folder = work / f"round-{round_number}"
            baseline.append(_timed(lambda: _baseline(count)))
            files_alone.append(
                _timed(
                    functools.partial(
                        _create_files, work / f"files-{round_number}", files
                    )
                )
            )
            cold.append(_timed(functools.partial(build_lab, folder)))
            warm.append(_timed(functools.partial(build_lab, folder)))
    finally:
        shutil.rmtree(work)

    base_ms = statistics.median(baseline) * 1000
    cold_ms = statistics.median(cold) * 1000
    warm_ms = statistics.median(warm) * 1000
    files_ms = statistics.median(files_alone) * 1000
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
        f"- the {len(files)} files of a build, created with nothing else: "
        f"{files_ms:.1f} ms"
    )
    print(
        f"- cold / trustme: {cold_ratio:.2f}x (target at most {COLD_TARGET:g}x, "
        f"{'met' if cold_ratio <= COLD_TARGET else 'missed'})"
    )
    print(
        f"- warm / cold: {warm_ratio:.3f} (target under {WARM_TARGET:g}, "
        f"{'met' if warm_ratio < WARM_TARGET else 'missed'})"
    )
    if files_ms > base_ms:
        print(
            "- note: creating the files alone took longer than the baseline; "
            "this file system, not the lab, decides the cold ratio here "
            "(see docs/benchmarks.md)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
