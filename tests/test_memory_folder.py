"""The remembered-certificate file needs an existing folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.endpoint import MemoryFile, MemoryFileError
from harness.model import Reason

LEAF = "ab" * 32


def test_missing_folder_raises_and_is_not_created(tmp_path: Path) -> None:
    folder = tmp_path / "absent" / "dir"
    memory = MemoryFile(folder / "memory.json")

    with pytest.raises(MemoryFileError, match=f"folder {folder} of "):
        memory.remember(
            "ems.example.com", 8013, LEAF, frozenset({Reason.HOSTNAME_MISMATCH})
        )

    assert not (tmp_path / "absent").exists()


def test_file_created_in_existing_folder(tmp_path: Path) -> None:
    memory = MemoryFile(tmp_path / "memory.json")

    memory.remember("ems.example.com", 8013, LEAF, frozenset({Reason.EXPIRED}))

    assert (tmp_path / "memory.json").exists()
    assert memory.lookup("ems.example.com", 8013) is not None
