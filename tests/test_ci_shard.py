"""ci/shard.py splits the test files into disjoint, complete CI shards."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SHARD_SCRIPT = Path(__file__).resolve().parent.parent / "ci" / "shard.py"


def _run_shard(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SHARD_SCRIPT), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def tests_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "tests"
    (folder / "nested").mkdir(parents=True)
    for name in ["test_b.py", "test_a.py", "test_d.py", "test_c.py", "helper.py"]:
        (folder / name).write_text("")
    (folder / "nested" / "test_e.py").write_text("")
    return folder


def test_shards_are_disjoint_and_complete(tests_dir: Path) -> None:
    shards = []
    for index in range(3):
        result = _run_shard(
            str(index), "3", "--tests-dir", "tests", cwd=tests_dir.parent
        )
        assert result.returncode == 0, result.stderr
        shards.append(result.stdout.split())

    every_file = [name for shard in shards for name in shard]
    assert sorted(every_file) == [
        "tests/nested/test_e.py",
        "tests/test_a.py",
        "tests/test_b.py",
        "tests/test_c.py",
        "tests/test_d.py",
    ]
    assert len(every_file) == len(set(every_file))
    assert shards[0] == ["tests/nested/test_e.py", "tests/test_c.py"]


def test_shard_output_is_repeatable(tests_dir: Path) -> None:
    first = _run_shard("1", "2", "--tests-dir", "tests", cwd=tests_dir.parent)
    second = _run_shard("1", "2", "--tests-dir", "tests", cwd=tests_dir.parent)

    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout
    assert first.stdout.split() == ["tests/test_a.py", "tests/test_c.py"]


def test_empty_shard_is_error(tests_dir: Path) -> None:
    result = _run_shard("5", "6", "--tests-dir", "tests", cwd=tests_dir.parent)

    assert result.returncode == 2
    assert result.stdout == ""
    assert "has no test files" in result.stderr
    assert "at most 5 shards" in result.stderr


@pytest.mark.parametrize(("index", "count"), [("3", "3"), ("-1", "3"), ("0", "0")])
def test_invalid_index_or_count_is_error(
    tests_dir: Path, index: str, count: str
) -> None:
    result = _run_shard(index, count, "--tests-dir", "tests", cwd=tests_dir.parent)

    assert result.returncode == 2
    assert result.stdout == ""
    assert "invalid shard" in result.stderr


def test_default_folder_is_project_tests() -> None:
    result = _run_shard("0", "1", cwd=SHARD_SCRIPT.parent.parent)

    assert result.returncode == 0, result.stderr
    assert "tests/test_ci_shard.py" in result.stdout.split()
