"""Remembered certificates and the persisted profile action of one client.

Both live in one JSON file so that they survive client restarts::

    {
      "schema": 1,
      "remembered": {
        "ems.example.com:8013": {
          "leaf_sha256": "<hex SHA-256 of the leaf's DER>",
          "reasons": ["hostname-mismatch"],
          "remembered_at": "2024-01-01T00:00:00+00:00"
        }
      },
      "profile": {"action": "warn", "ems": "ems.example.com:8013", ...}
    }

Entries are keyed by the normalized reference identity and the port, so an
allow never carries over to another EMS or port. Every change is a
read-modify-write under an exclusive ``flock`` on a ``.lock`` file next to
the data file (the data file itself is replaced, so it cannot carry the
lock), and the new content is written to a temporary file, flushed to disk
and renamed over the old one. Because of that rename a reader always sees a
whole old or whole new file, so reads take no lock. A :class:`MemoryFile`
keeps what it last read and reads again only when ``os.stat`` shows another
inode, size, modification or change time.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import fcntl
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.endpoint.identity import normalize_reference
from harness.model import Action, Reason, sorted_reasons

logger = logging.getLogger(__name__)

SCHEMA = 1


class MemoryFileError(Exception):
    """The remembered-certificate file is corrupt or cannot be read or written."""


@dataclass(frozen=True)
class RememberedCert:
    """A leaf the user allowed for one EMS, with the reasons the prompt showed."""

    leaf_sha256: str
    reasons: frozenset[Reason]
    remembered_at: str

    def covers(self, leaf_sha256: str, reasons: frozenset[Reason]) -> bool:
        """Return whether this entry covers ``leaf_sha256`` failing for ``reasons``.

        Only the same leaf is covered, and only for reasons the user saw.
        """
        return self.leaf_sha256 == leaf_sha256.lower() and reasons <= self.reasons


@dataclass(frozen=True)
class ProfileState:
    """The invalid certificate action of the last profile an EMS delivered."""

    action: Action
    name: str
    ems: str
    received_at: str


def ems_key(reference: str, port: int) -> str:
    """Return the key of an EMS identity: normalized reference and port."""
    return f"{normalize_reference(reference)}:{port}"


def _now() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()


class MemoryFile:
    """A client's remembered certificates and profile, stored in one file.

    Args:
        path: The JSON file; it need not exist yet, but its folder must.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        # Plain strings for the calls made on every access, because a client
        # reads this file on every connection and pathlib converts a path to
        # text again on each call.
        self._path_text = str(self.path)
        self._lock_text = str(self.lock_path)
        self._folder_text = str(self.path.parent)
        # The stat key of the file last read and its checked content, in one
        # attribute so that threads sharing this object replace both at once.
        self._cache: tuple[_StatKey, dict[str, Any]] | None = None

    @contextlib.contextmanager
    def _locked(self, mode: int) -> Iterator[None]:
        # The file is created on first write but its folder is not, so a typo
        # in the path fails instead of leaving new folders behind.
        if not os.path.isdir(self._folder_text):
            raise self._missing_folder_error()
        try:
            handle = open(self._lock_text, "a+b")  # noqa: SIM115
        except OSError as exc:
            raise MemoryFileError(
                f"cannot open lock file {self.lock_path}: {exc}"
            ) from exc
        with handle:
            fcntl.flock(handle.fileno(), mode)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def _missing_folder_error(self) -> MemoryFileError:
        return MemoryFileError(
            f"folder {self.path.parent} of remembered-certificate file "
            f"{self.path.name} does not exist; create it or choose another path"
        )

    def _snapshot(self) -> dict[str, Any]:
        """Return the file's checked content, shared with later calls: read only.

        The file is read again only when its stat key changed since the last
        read, so a client that consults the file several times per connection
        parses it once. A missing file reads as empty, and a missing folder
        raises like a write does.
        """
        try:
            stat = os.stat(self._path_text)
        except FileNotFoundError:
            if not os.path.isdir(self._folder_text):
                raise self._missing_folder_error() from None
            return _empty()
        except OSError as exc:
            raise MemoryFileError(
                f"cannot read remembered-certificate file {self.path}: {exc}"
            ) from exc
        cache = self._cache
        if cache is not None and cache[0] == _stat_key(stat):
            return cache[1]
        data, key = self._read_keyed()
        if key is not None:
            self._cache = (key, data)
        return data

    def _read(self) -> dict[str, Any]:
        return self._read_keyed()[0]

    def _read_keyed(self) -> tuple[dict[str, Any], _StatKey | None]:
        """Return the checked content and the stat key of the file read."""
        try:
            with open(self._path_text, encoding="utf-8") as handle:
                key = _stat_key(os.fstat(handle.fileno()))
                text = handle.read()
        except FileNotFoundError:
            return _empty(), None
        except (OSError, UnicodeDecodeError) as exc:
            raise MemoryFileError(
                f"cannot read remembered-certificate file {self.path}: {exc}"
            ) from exc
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise MemoryFileError(
                f"remembered-certificate file {self.path} is corrupt ({exc}); "
                "repair or delete it"
            ) from exc
        problem = _schema_problem(data)
        if problem is not None:
            raise MemoryFileError(
                f"remembered-certificate file {self.path} is invalid: {problem}; "
                "repair or delete it"
            )
        return data, key

    def _write(self, data: dict[str, Any]) -> None:
        body = json.dumps(data, indent=2, sort_keys=True).encode() + b"\n"
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(body)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def _update(self, change: Callable[[dict[str, Any]], None]) -> None:
        with self._locked(fcntl.LOCK_EX):
            data = self._read()
            change(data)
            try:
                self._write(data)
            except OSError as exc:
                raise MemoryFileError(
                    f"cannot write remembered-certificate file {self.path}: {exc}"
                ) from exc

    def load(self) -> dict[str, Any]:
        """Return the file's content, checked against the schema.

        Raises:
            MemoryFileError: the file is unreadable, not JSON or not in the
                expected shape. The file is never reset silently.
        """
        return copy.deepcopy(self._snapshot())

    def lookup(self, reference: str, port: int) -> RememberedCert | None:
        """Return the entry remembered for the EMS at ``reference``:``port``."""
        entry = self._snapshot()["remembered"].get(ems_key(reference, port))
        if entry is None:
            return None
        return RememberedCert(
            entry["leaf_sha256"],
            frozenset(Reason(r) for r in entry["reasons"]),
            entry["remembered_at"],
        )

    def remember(
        self, reference: str, port: int, leaf_sha256: str, reasons: frozenset[Reason]
    ) -> None:
        """Record that the user allowed ``leaf_sha256`` for this EMS."""
        key = ems_key(reference, port)
        entry = {
            "leaf_sha256": leaf_sha256.lower(),
            "reasons": [r.value for r in sorted_reasons(reasons)],
            "remembered_at": _now(),
        }

        def change(data: dict[str, Any]) -> None:
            data["remembered"][key] = entry

        self._update(change)
        logger.info("remembered leaf %s for %s", leaf_sha256[:16], key)

    def forget(self, reference: str, port: int) -> None:
        """Remove the entry for this EMS, if any."""
        key = ems_key(reference, port)
        self._update(lambda data: data["remembered"].pop(key, None))

    def profile(self) -> ProfileState | None:
        """Return the persisted profile, or ``None`` if none arrived yet."""
        raw = self._snapshot().get("profile")
        if raw is None:
            return None
        return ProfileState(
            Action(raw["action"]), raw["name"], raw["ems"], raw["received_at"]
        )

    def set_profile(self, action: Action, name: str, reference: str, port: int) -> None:
        """Persist the action of a profile received from an EMS."""
        profile = {
            "action": Action(action).value,
            "name": name,
            "ems": ems_key(reference, port),
            "received_at": _now(),
        }

        def change(data: dict[str, Any]) -> None:
            data["profile"] = profile

        self._update(change)


# Inode, size, modification and change time in nanoseconds. A write renames
# a new file into place, which changes the inode of the current file. A stale
# match would need a reused inode number with equal size and times.
_StatKey = tuple[int, int, int, int]


def _stat_key(stat: os.stat_result) -> _StatKey:
    return (stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)


def _empty() -> dict[str, Any]:
    return {"schema": SCHEMA, "remembered": {}}


_REASON_VALUES = frozenset(reason.value for reason in Reason)


def _schema_problem(data: object) -> str | None:
    """Return what is wrong with the decoded file, or ``None`` if it is fine."""
    if not isinstance(data, dict):
        return f"expected a JSON object, found {type(data).__name__}"
    if data.get("schema") != SCHEMA:
        return f"schema {data.get('schema')!r}, expected {SCHEMA}"
    remembered = data.get("remembered")
    if not isinstance(remembered, dict):
        return "'remembered' is not an object"
    for key, entry in remembered.items():
        if not isinstance(entry, dict):
            return f"entry {key!r} is not an object"
        digest = entry.get("leaf_sha256")
        if not isinstance(digest, str) or len(digest) != 64:
            return f"entry {key!r} has no 64-digit leaf_sha256"
        reasons = entry.get("reasons")
        if not isinstance(reasons, list) or any(
            r not in _REASON_VALUES for r in reasons
        ):
            return f"entry {key!r} has invalid reasons {reasons!r}"
        if not isinstance(entry.get("remembered_at"), str):
            return f"entry {key!r} has no remembered_at"
    profile = data.get("profile")
    if profile is not None:
        if not isinstance(profile, dict):
            return "'profile' is not an object"
        if profile.get("action") not in {a.value for a in Action}:
            return (
                f"profile action {profile.get('action')!r} is not allow, warn or deny"
            )
        for name in ("name", "ems", "received_at"):
            if not isinstance(profile.get(name), str):
                return f"profile has no {name}"
    return None
