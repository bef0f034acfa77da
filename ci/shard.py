"""Print the test files of shard INDEX out of COUNT, one per line.

Usage on CI machine INDEX of COUNT: ``pytest $(python ci/shard.py INDEX COUNT)``.

Test files (``test_*.py`` under the test folder, at any depth) are sorted by
their path inside that folder and dealt round-robin to ``COUNT`` shards. Every
file lands in exactly one shard, and the split depends only on the file names.
``INDEX`` counts from 0 to ``COUNT - 1``.

A shard without files is an error (exit status 2): an empty argument list
would make pytest collect the whole suite on that machine.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULT_TESTS_DIR = Path(__file__).resolve().parent.parent / "tests"


def list_test_files(tests_dir: Path) -> list[str]:
    """Return the test files under ``tests_dir``, relative to it, sorted."""
    return sorted(
        path.relative_to(tests_dir).as_posix() for path in tests_dir.rglob("test_*.py")
    )


def _display_path(tests_dir: Path, name: str) -> str:
    """Return the file's path relative to the working folder if it is inside."""
    path = (tests_dir / name).resolve()
    try:
        return path.relative_to(Path.cwd()).as_posix()
    except ValueError:
        return path.as_posix()


def shard_files(files: list[str], index: int, count: int) -> list[str]:
    """Return the files of shard ``index`` out of ``count``, dealt round-robin.

    Raises:
        ValueError: ``count`` is below 1 or ``index`` is outside 0..count-1.
    """
    if count < 1:
        raise ValueError(f"invalid shard count {count}: expected at least 1")
    if not 0 <= index < count:
        raise ValueError(f"invalid shard index {index}: expected 0 to {count - 1}")
    return files[index::count]


def main(argv: list[str] | None = None) -> int:
    """Print the files of the requested shard, one per line."""
    parser = argparse.ArgumentParser(
        description="Print the test files of shard INDEX out of COUNT."
    )
    parser.add_argument("index", type=int, help="shard number, 0 to COUNT-1")
    parser.add_argument("count", type=int, help="number of shards")
    parser.add_argument(
        "--tests-dir",
        type=Path,
        default=DEFAULT_TESTS_DIR,
        help="folder searched for test_*.py files (default: the tests folder "
        "next to ci/)",
    )
    args = parser.parse_args(argv)

    files = list_test_files(args.tests_dir)
    try:
        selected = shard_files(files, args.index, args.count)
    except ValueError as exc:
        parser.error(str(exc))
    if not selected:
        parser.error(
            f"shard {args.index} of {args.count} has no test files: "
            f"{args.tests_dir} has {len(files)}, so use at most {len(files)} shards"
        )
    for name in selected:
        print(_display_path(args.tests_dir, name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
