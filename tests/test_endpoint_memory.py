"""Remembered-certificate file: keys, persistence, corruption, concurrency."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest

from harness.endpoint import MemoryFile, MemoryFileError
from harness.model import Action, Reason

LEAF_A = "a" * 64
LEAF_B = "b" * 64
MISMATCH = frozenset({Reason.HOSTNAME_MISMATCH})


def test_entry_keyed_by_identity_and_port(tmp_path: Path) -> None:
    memory = MemoryFile(tmp_path / "memory.json")

    memory.remember("EMS.Example.com.", 8013, LEAF_A, MISMATCH)

    assert memory.lookup("ems.example.com", 8013) is not None
    assert memory.lookup("ems.example.com", 8014) is None
    assert memory.lookup("other.example.com", 8013) is None


def test_entry_covers_only_leaf_and_reasons(tmp_path: Path) -> None:
    memory = MemoryFile(tmp_path / "memory.json")
    memory.remember("ems.example.com", 8013, LEAF_A, MISMATCH)

    entry = memory.lookup("ems.example.com", 8013)

    assert entry is not None
    assert entry.covers(LEAF_A, MISMATCH)
    assert entry.covers(LEAF_A, frozenset())
    assert not entry.covers(LEAF_B, MISMATCH)
    assert not entry.covers(LEAF_A, MISMATCH | {Reason.EXPIRED})


def test_survives_new_object(tmp_path: Path) -> None:
    path = tmp_path / "memory.json"
    MemoryFile(path).remember("ems.example.com", 8013, LEAF_A, MISMATCH)
    MemoryFile(path).set_profile(Action.DENY, "strict", "ems.example.com", 8013)

    reopened = MemoryFile(path)

    entry = reopened.lookup("ems.example.com", 8013)
    profile = reopened.profile()
    assert entry is not None
    assert entry.leaf_sha256 == LEAF_A
    assert profile is not None
    assert profile.action is Action.DENY


def test_file_mode_private(tmp_path: Path) -> None:
    path = tmp_path / "memory.json"

    MemoryFile(path).remember("ems.example.com", 8013, LEAF_A, MISMATCH)

    assert path.stat().st_mode & 0o777 == 0o600


def test_corrupt_file_names_path(tmp_path: Path) -> None:
    path = tmp_path / "memory.json"
    path.write_text("{not json")

    with pytest.raises(MemoryFileError, match=r"memory\.json is corrupt"):
        MemoryFile(path).lookup("ems.example.com", 8013)
    assert path.read_text() == "{not json"


def test_wrong_shape_names_path(tmp_path: Path) -> None:
    path = tmp_path / "memory.json"
    path.write_text(json.dumps({"schema": 1, "remembered": {"x:1": {"reasons": []}}}))

    with pytest.raises(MemoryFileError, match=r"memory\.json is invalid: entry 'x:1'"):
        MemoryFile(path).remember("ems.example.com", 8013, LEAF_A, MISMATCH)


def _writer(path: str, worker: int, count: int) -> None:
    memory = MemoryFile(path)
    for i in range(count):
        memory.remember(f"ems{worker}-{i}.example.com", 8013, LEAF_A, MISMATCH)


def test_concurrent_processes_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "memory.json"
    workers, count = 4, 25
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(target=_writer, args=(str(path), worker, count))
        for worker in range(workers)
    ]

    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=60)

    assert [p.exitcode for p in processes] == [0] * workers
    entries = MemoryFile(path).load()["remembered"]
    assert len(entries) == workers * count
