"""Regression files for identity cases and scenarios that Hypothesis finds.

A regression file is one JSON object under ``fixtures/hypothesis/``. Its
``property`` field names its kind:

``identity``
    The reference identity, the leaf's names, the ``cn_fallback`` mode and
    the oracle's result. The regression tests issue the leaf and check the
    oracle and the reference matcher against it on every run.
``scenario``
    A whole :class:`~harness.oracle.decision.Scenario`: the kind with its
    declared leaf, the EMS and client versions, the actions, the answer and
    the remembered state. The regression tests run it against the reference
    client over TLS and compare with the oracle on every run.
``stateful``
    The rule steps of the stateful endpoint suite up to the failure, and how
    many EMS listeners it ran with. The regression tests run the steps on a
    fresh machine, checking every invariant after each step.

:func:`record_identity_failures`, :func:`record_scenario_failures` and
:func:`record_stateful_failures` wrap the assertions of a property. When
they fail on the final falsifying example that Hypothesis reports, they
write that example as a regression file and re-raise, so every failure the
properties find is kept. The failures Hypothesis meets while it shrinks
write nothing. The ``HARNESS_HYPOTHESIS_FIXTURES`` environment variable sets
another folder, so tests of this mechanism write to a temporary folder.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hypothesis.control import current_build_context
from hypothesis.errors import InvalidArgument

from harness.assumptions import Assumptions
from harness.model import Action, ActionSource, Answer, CnFallback
from harness.oracle.decision import Remembered, Scenario, expected_outcome
from harness.oracle.standards import identity_matches
from harness.pki.kinds import CertKind, LeafSpec
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

    def write(note: str, target: Path) -> Path:
        name = failure_name(case, mode)
        return record_identity_failure(name, case, mode, note, target)

    with _record_final_failure(write, "identity case", property_name, folder):
        yield


@contextmanager
def record_scenario_failures(
    scenario: Scenario, property_name: str, folder: Path | None = None
) -> Iterator[None]:
    """Write ``scenario`` as a regression file if the block fails on the final example.

    It behaves as :func:`record_identity_failures` does, with a scenario file.
    """

    def write(note: str, target: Path) -> Path:
        return record_scenario_failure(scenario, note, target)

    with _record_final_failure(write, "scenario", property_name, folder):
        yield


@contextmanager
def _record_final_failure(
    write: Callable[[str, Path], Path],
    what: str,
    property_name: str,
    folder: Path | None,
) -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        if not _is_final_example():
            raise
        target = fixtures_dir() if folder is None else folder
        note = f"found by Hypothesis in {property_name}: {exc}"
        try:
            target.mkdir(parents=True, exist_ok=True)
            path = write(note, target)
        except OSError as write_error:
            logger.error(
                "failed to write the regression case to %s: %s", target, write_error
            )
        else:
            logger.info("wrote the falsifying %s to %s", what, path)
            exc.add_note(f"Regression case written to {path}; review it and keep it.")
        raise


# -- scenarios ------------------------------------------------------------


def _leaf_record(leaf: LeafSpec) -> dict[str, Any]:
    return {
        "common_names": list(leaf.common_names),
        "empty_subject": leaf.empty_subject,
        "dns_names": list(leaf.dns_names),
        "ip_addresses": list(leaf.ip_addresses),
        "emails": list(leaf.emails),
        "san_extension": leaf.san_extension,
        "issuer": leaf.issuer,
        "chain": list(leaf.chain),
        "window_seconds": [int(edge.total_seconds()) for edge in leaf.window],
        "eku": None if leaf.eku is None else list(leaf.eku),
    }


def _leaf_from_record(data: dict[str, Any]) -> LeafSpec:
    start, end = data["window_seconds"]
    eku = data["eku"]
    return LeafSpec(
        common_names=tuple(data["common_names"]),
        empty_subject=bool(data["empty_subject"]),
        dns_names=tuple(data["dns_names"]),
        ip_addresses=tuple(data["ip_addresses"]),
        emails=tuple(data["emails"]),
        san_extension=bool(data["san_extension"]),
        issuer=str(data["issuer"]),
        chain=tuple(data["chain"]),
        window=(dt.timedelta(seconds=start), dt.timedelta(seconds=end)),
        eku=None if eku is None else tuple(eku),
    )


def _kind_record(kind: CertKind) -> dict[str, Any]:
    return {
        "name": kind.name,
        "description": kind.description,
        "reference_identity": kind.reference_identity,
        "tags": list(kind.tags),
        "leaf": _leaf_record(kind.leaf),
    }


def _kind_from_record(data: dict[str, Any]) -> CertKind:
    return CertKind(
        str(data["name"]),
        str(data["description"]),
        _leaf_from_record(data["leaf"]),
        reference_identity=str(data["reference_identity"]),
        tags=tuple(data["tags"]),
    )


def _optional_value(value: Action | ActionSource | Answer | None) -> str | None:
    return None if value is None else value.value


def scenario_record(scenario: Scenario, note: str) -> dict[str, object]:
    """Return the JSON form of a scenario regression case.

    The build time is left out: a replay counts the declared windows from
    its own lab's build time, as the property does.
    """
    if scenario.now is not None:
        raise ValueError("a scenario with its own validation time cannot be recorded")
    imported: str | dict[str, Any]
    if scenario.imported is None:
        imported = "none"
    elif scenario.imported == scenario.kind:
        imported = "same-as-kind"
    else:
        imported = _kind_record(scenario.imported)  # type: ignore[arg-type]
    assumptions = scenario.assumptions
    expected = expected_outcome(scenario)
    return {
        "property": "scenario",
        "note": note,
        "kind": _kind_record(scenario.kind),
        "imported": imported,
        "ems_version": scenario.ems_version,
        "use_ssl_cert": scenario.use_ssl_cert,
        "client_version": scenario.client_version,
        "action": _optional_value(scenario.action),
        "action_source": _optional_value(scenario.action_source),
        "profile_action": _optional_value(scenario.profile_action),
        "installer_action": _optional_value(scenario.installer_action),
        "answer": _optional_value(scenario.answer),
        "remembered": scenario.remembered.value,
        "port": scenario.port,
        "assumptions": {
            "legacy_subject_pattern": assumptions.legacy_subject_pattern,
            "cn_fallback": assumptions.cn_fallback.value,
            "default_action": assumptions.default_action.value,
            "aia_fetching": assumptions.aia_fetching,
        },
        "expected_outcome": expected.outcome.value,
        "expected_reasons": [reason.value for reason in expected.reasons],
    }


def scenario_from_record(data: dict[str, Any], built_at: dt.datetime) -> Scenario:
    """Rebuild the scenario of a regression file, with windows from ``built_at``.

    Raises:
        KeyError, TypeError, ValueError: the record is malformed.
    """
    kind = _kind_from_record(data["kind"])
    imported_data = data["imported"]
    imported: CertKind | None
    if imported_data == "none":
        imported = None
    elif imported_data == "same-as-kind":
        imported = kind
    else:
        imported = _kind_from_record(imported_data)

    def optional(enum: Any, key: str) -> Any:
        return None if data[key] is None else enum(data[key])

    settings = data["assumptions"]
    assumptions = Assumptions(
        legacy_subject_pattern=str(settings["legacy_subject_pattern"]),
        cn_fallback=CnFallback(settings["cn_fallback"]),
        default_action=Action(settings["default_action"]),
        aia_fetching=bool(settings["aia_fetching"]),
    )
    return Scenario(
        kind=kind,
        ems_version=str(data["ems_version"]),
        use_ssl_cert=data["use_ssl_cert"],
        imported=imported,
        client_version=str(data["client_version"]),
        action=optional(Action, "action"),
        action_source=optional(ActionSource, "action_source"),
        profile_action=optional(Action, "profile_action"),
        installer_action=optional(Action, "installer_action"),
        answer=optional(Answer, "answer"),
        remembered=Remembered(data["remembered"]),
        port=int(data["port"]),
        assumptions=assumptions,
        built_at=built_at,
    )


def _write_record(folder: Path, prefix: str, record: dict[str, object]) -> Path:
    """Write ``record`` as ``folder/PREFIX-HASH.json`` and return the path.

    The hash covers every field but the note, so the same case always gets
    the same file name.
    """
    key = json.dumps({k: v for k, v in record.items() if k != "note"}, sort_keys=True)
    name = f"{prefix}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
    path = folder / f"{name}.json"
    path.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    return path


def record_scenario_failure(scenario: Scenario, note: str, folder: Path) -> Path:
    """Write a failing scenario as ``folder/scenario-found-HASH.json``.

    The file records the oracle's outcome and reasons as the right result.
    Review it, then keep it under ``fixtures/hypothesis/``.
    """
    return _write_record(folder, "scenario-found", scenario_record(scenario, note))


# -- stateful steps --------------------------------------------------------


def stateful_record(
    steps: list[dict[str, Any]], listeners: int, note: str
) -> dict[str, object]:
    """Return the JSON form of a failing rule sequence of the stateful suite."""
    return {
        "property": "stateful",
        "note": note,
        "listeners": listeners,
        "steps": [dict(step) for step in steps],
    }


def record_stateful_failure(
    steps: list[dict[str, Any]], listeners: int, note: str, folder: Path
) -> Path:
    """Write a failing rule sequence as ``folder/stateful-found-HASH.json``.

    Review the file, then keep it under ``fixtures/hypothesis/``.
    """
    record = stateful_record(steps, listeners, note)
    return _write_record(folder, "stateful-found", record)


@contextmanager
def record_stateful_failures(
    steps: list[dict[str, Any]],
    listeners: int,
    property_name: str,
    folder: Path | None = None,
) -> Iterator[None]:
    """Write ``steps`` as a regression file if the block fails on the final example.

    ``steps`` is read when the block fails, so pass the list the machine
    appends to. It behaves as :func:`record_identity_failures` does, with a
    stateful file.
    """

    def write(note: str, target: Path) -> Path:
        return record_stateful_failure(steps, listeners, note, target)

    with _record_final_failure(write, "rule sequence", property_name, folder):
        yield
