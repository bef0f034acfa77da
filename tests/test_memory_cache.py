"""A MemoryFile rereads its file whenever another writer changed it."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.endpoint import MemoryFile, MemoryFileError
from harness.model import Action, Reason

LEAF = "ab" * 32
OTHER_LEAF = "cd" * 32


def test_sees_other_writer_changes(tmp_path: Path) -> None:
    path = tmp_path / "memory.json"
    reader = MemoryFile(path)
    writer = MemoryFile(path)
    writer.remember("ems.example.com", 8013, LEAF, frozenset({Reason.EXPIRED}))
    first = reader.lookup("ems.example.com", 8013)

    writer.remember("ems.example.com", 8013, OTHER_LEAF, frozenset({Reason.EXPIRED}))
    writer.set_profile(Action.DENY, "strict", "ems.example.com", 8013)
    second = reader.lookup("ems.example.com", 8013)

    assert first is not None and first.leaf_sha256 == LEAF
    assert second is not None and second.leaf_sha256 == OTHER_LEAF
    profile = reader.profile()
    assert profile is not None and profile.action is Action.DENY


def test_corrupt_after_read_raises(tmp_path: Path) -> None:
    path = tmp_path / "memory.json"
    memory = MemoryFile(path)
    memory.remember("ems.example.com", 8013, LEAF, frozenset({Reason.EXPIRED}))
    assert memory.lookup("ems.example.com", 8013) is not None

    path.write_text("{not json")

    with pytest.raises(MemoryFileError, match="is corrupt"):
        memory.lookup("ems.example.com", 8013)


def test_removed_file_reads_empty(tmp_path: Path) -> None:
    path = tmp_path / "memory.json"
    memory = MemoryFile(path)
    memory.remember("ems.example.com", 8013, LEAF, frozenset({Reason.EXPIRED}))
    assert memory.lookup("ems.example.com", 8013) is not None

    path.unlink()

    assert memory.lookup("ems.example.com", 8013) is None


def test_load_returns_private_copy(tmp_path: Path) -> None:
    memory = MemoryFile(tmp_path / "memory.json")
    memory.remember("ems.example.com", 8013, LEAF, frozenset({Reason.EXPIRED}))

    memory.load()["remembered"].clear()

    assert memory.lookup("ems.example.com", 8013) is not None
