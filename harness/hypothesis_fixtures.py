"""Regression files for identity cases that Hypothesis finds.

A regression file is one JSON object under ``fixtures/hypothesis/``: the
reference identity, the leaf's names, the ``cn_fallback`` mode and the
oracle's result. The regression tests issue the leaf and check the oracle and
the reference matcher against it on every run.

:func:`record_identity_failures` wraps the assertions of an identity
property. When they fail on the final falsifying example that Hypothesis
reports, it writes that example as a regression file and re-raises, so every
failure the properties find is kept. The failures Hypothesis meets while it
shrinks write nothing. The ``HARNESS_HYPOTHESIS_FIXTURES`` environment
variable sets another folder, so tests of this mechanism write to a
temporary folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hypothesis.control import current_build_context
from hypothesis.errors import InvalidArgument

from harness.model import CnFallback
from harness.oracle.standards import identity_matches
from harness.strategies import IdentityCase

logger = logging.getLogger(__name__)

FIXTURES_ENV = "HARNESS_HYPOTHESIS_FIXTURES"
DEFAULT_FIXTURES_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "hypothesis"


def fixtures_dir() -> Path:
    """Return the folder for new regression files.

    It is ``$HARNESS_HYPOTHESIS_FIXTURES`` when that variable is set and not
    empty, otherwise ``fixtures/hypothesis/`` of the repository.
    """
    configured = os.environ.get(FIXTURES_ENV, "")
    return Path(configured) if configured else DEFAULT_FIXTURES_DIR


def case_record(
    name: str, case: IdentityCase, mode: CnFallback, expected: bool, note: str
) -> dict[str, object]:
    """Return the JSON form of a regression case."""
    return {
        "name": name,
        "property": "identity",
        "note": note,
        **case.describe(),
        "cn_fallback": mode.value,
        "expected_match": expected,
    }


def record_identity_failure(
    name: str, case: IdentityCase, mode: CnFallback, note: str, folder: Path
) -> Path:
    """Write a failing identity case as ``folder/NAME.json`` and return the path.

    The right result is the oracle's, which reads only the declared names.
    Review the file, then keep it under ``fixtures/hypothesis/``.
    """
    expected = identity_matches(case.leaf, case.reference, mode)
    path = folder / f"{name}.json"
    record = case_record(name, case, mode, expected, note)
    path.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    return path


def failure_name(case: IdentityCase, mode: CnFallback) -> str:
    """Return a file stem that is the same for the same case and mode."""
    key = json.dumps({**case.describe(), "cn_fallback": mode.value}, sort_keys=True)
    return "identity-found-" + hashlib.sha256(key.encode()).hexdigest()[:12]


def _is_final_example() -> bool:
    try:
        return current_build_context().is_final
    except InvalidArgument:
        # No Hypothesis test is running, so there is no example to report.
        return False


@contextmanager
def record_identity_failures(
    case: IdentityCase,
    mode: CnFallback,
    property_name: str,
    folder: Path | None = None,
) -> Iterator[None]:
    """Write ``case`` as a regression file if the block fails on the final example.

    Any ``Exception`` raised in the block counts as a failure. On the final
    falsifying example, the case is written to ``folder`` (by default
    :func:`fixtures_dir`) and the exception gets a note with the file's path
    before it is re-raised. On every other example, and outside a Hypothesis
    test, the exception passes through and nothing is written. A file that
    cannot be written is logged as an error and the exception is re-raised
    without the note.
    """
    try:
        yield
    except Exception as exc:
        if not _is_final_example():
            raise
        target = fixtures_dir() if folder is None else folder
        note = f"found by Hypothesis in {property_name}: {exc}"
        try:
            target.mkdir(parents=True, exist_ok=True)
            path = record_identity_failure(
                failure_name(case, mode), case, mode, note, target
            )
        except OSError as write_error:
            logger.error(
                "failed to write the regression case to %s: %s", target, write_error
            )
        else:
            logger.info("wrote the falsifying identity case to %s", path)
            exc.add_note(f"Regression case written to {path}; review it and keep it.")
        raise
