"""The lab benchmark script runs and reports every line docs/benchmarks.md uses."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest

from harness.pki import build_lab

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_lab.py"


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_lab", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_lab_reports_all_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bench = _load_script()

    code = bench.main(["--repeats", "1", "--dir", str(tmp_path)])

    output = capsys.readouterr().out
    assert code == 0
    assert re.search(
        r"trustme, one CA and 41 plain leaves in memory: [\d.]+ ms", output
    )
    assert re.search(r"cold build_lab into a fresh folder: [\d.]+ ms", output)
    assert re.search(r"warm build_lab from the cache: [\d.]+ ms", output)
    assert re.search(r"cold / trustme: [\d.]+x", output)
    assert re.search(r"warm / cold: [\d.]+", output)


def test_bench_lab_times_the_files_of_a_build(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bench = _load_script()
    reference = tmp_path / "reference"

    build_lab(reference)
    written = [p for p in reference.rglob("*") if p.is_file()]

    bench.main(["--repeats", "1", "--dir", str(tmp_path)])

    output = capsys.readouterr().out
    match = re.search(r"the (\d+) files of a build, created with nothing else", output)
    assert match is not None
    assert int(match.group(1)) == len(written)


def test_bench_lab_leaves_no_folder_behind(tmp_path: Path) -> None:
    bench = _load_script()

    bench.main(["--repeats", "1", "--dir", str(tmp_path)])

    assert list(tmp_path.iterdir()) == []


def test_files_alone_copies_names_and_sizes(tmp_path: Path) -> None:
    bench = _load_script()
    files = [("kinds/a.key.pem", 5, 0o600), ("manifest.json", 3, 0o644)]

    bench._create_files(tmp_path / "copy", files)

    copied = bench._lab_files(tmp_path / "copy")
    assert [(name, size) for name, size, _ in copied] == [
        ("kinds/a.key.pem", 5),
        ("manifest.json", 3),
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--repeats", "0"], "0 is below 1"),
        (["--repeats", "many"], "'many' is not a whole number"),
        (["--dir", "missing-folder"], "'missing-folder' is not an existing folder"),
    ],
)
def test_bench_lab_rejects_bad_arguments(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    bench = _load_script()

    with pytest.raises(SystemExit) as exited:
        bench.main(args)

    assert exited.value.code == 2
    assert message in capsys.readouterr().err
