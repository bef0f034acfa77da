"""The JSON report (``--json FILE``) and a validator for its schema.

The schema is documented in ``docs/report-schema.md``. :func:`validate_report`
checks a parsed report against it by hand, so the project needs no schema
library, and also checks that the totals match the results.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness import __version__
from harness.matrix import MatrixScenario
from harness.report.regressions import RegressionEntry
from harness.report.summary import summarize
from harness.runner import Expectation, Observed, RunResult, ScenarioResult, Status

SCHEMA_VERSION = 1
STATUSES: tuple[str, ...] = tuple(status.value for status in Status)


def _scenario(scenario: MatrixScenario) -> dict[str, Any]:
    return {
        "kind": scenario.kind,
        "profile": scenario.profile.value,
        "cn_fallback": scenario.cn_fallback.value,
        "ems_version": scenario.ems_version,
        "use_ssl_cert": scenario.use_ssl_cert,
        "client_version": scenario.client_version,
        "action": None if scenario.action is None else scenario.action.value,
        "answer": None if scenario.answer is None else scenario.answer.value,
        "remembered": (
            None if scenario.remembered is None else scenario.remembered.value
        ),
        "presented_kind": scenario.presented_kind,
    }


def _side(side: Expectation | Observed | None) -> dict[str, Any] | None:
    if side is None:
        return None
    data: dict[str, Any] = {
        "connected": side.connected,
        "prompted": side.prompted,
        "outcome": side.outcome,
        "reasons": list(side.reasons),
    }
    if isinstance(side, Observed):
        data["detail"] = side.detail
    return data


def _result(result: ScenarioResult) -> dict[str, Any]:
    return {
        "id": result.id,
        "client": result.client,
        "scenario_id": result.scenario.id,
        "scenario": _scenario(result.scenario),
        "status": result.status.value,
        "expected": _side(result.expected),
        "observed": _side(result.observed),
        "detail": result.detail,
        "duration_seconds": round(result.duration, 6),
    }


def _counts(counts: dict[Status, int]) -> dict[str, int]:
    return {status.value: count for status, count in counts.items()}


def _regression(entry: RegressionEntry) -> dict[str, Any]:
    return {
        "case": entry.case,
        "family": entry.family,
        "adapter": entry.adapter,
        "status": entry.status,
        "expected": entry.expected,
        "agrees": entry.agrees,
        "explained_by": entry.explained_by,
    }


def build_json(
    run: RunResult, regressions: Sequence[RegressionEntry] | None = None
) -> dict[str, Any]:
    """Return the JSON report of ``run`` as a dictionary.

    ``regressions`` adds the optional top-level ``regressions`` list.
    """
    summary = summarize(run)
    totals: dict[str, int] = {"total": summary.total, **_counts(summary.by_status)}
    report: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "generator": f"ems-cert-harness {__version__}",
        "started": dt.datetime.fromtimestamp(run.started, dt.UTC).isoformat(),
        "duration_seconds": round(run.duration, 3),
        "cn_fallback": run.cn_fallback.value,
        "jobs": run.jobs,
        "passed": run.passed,
        "server_failures": list(run.server_failures),
        "totals": totals,
        "by_kind": {k: _counts(v) for k, v in summary.by_kind.items()},
        "by_client": {k: _counts(v) for k, v in summary.by_client.items()},
        "matrix": {
            client: {
                "scenarios": len(matrix),
                "full_size": matrix.full_size,
                "filtered_out": matrix.filtered_out,
                "dropped": dict(matrix.dropped),
            }
            for client, matrix in run.matrices.items()
        },
        "results": [_result(result) for result in run.results],
    }
    if regressions is not None:
        report["regressions"] = [_regression(entry) for entry in regressions]
    return report


def write_json(
    run: RunResult,
    path: str | Path,
    regressions: Sequence[RegressionEntry] | None = None,
) -> None:
    """Write the JSON report of ``run`` to ``path``."""
    text = json.dumps(build_json(run, regressions), indent=2, ensure_ascii=False)
    Path(path).write_text(text + "\n", encoding="utf-8")


class _Checker:
    def __init__(self) -> None:
        self.errors: list[str] = []

    def type(self, where: str, value: object, *types: type) -> bool:
        # bool is a subclass of int; an int field must not accept True.
        if isinstance(value, bool) and bool not in types:
            ok = False
        else:
            ok = isinstance(value, types)
        if not ok:
            names = " or ".join(
                "null" if t is type(None) else t.__name__ for t in types
            )
            self.errors.append(
                f"{where}: expected {names}, got {type(value).__name__} {value!r}"
            )
        return ok

    def keys(
        self,
        where: str,
        data: dict[str, Any],
        required: set[str],
        optional: frozenset[str] = frozenset(),
    ) -> bool:
        missing = sorted(required - set(data))
        extra = sorted(set(data) - required - optional)
        for key in missing:
            self.errors.append(f"{where}: missing key {key!r}")
        for key in extra:
            self.errors.append(f"{where}: unknown key {key!r}")
        return not missing

    def counts(self, where: str, data: object) -> None:
        if not self.type(where, data, dict):
            return
        assert isinstance(data, dict)
        self.keys(where, data, set(STATUSES))
        for status, count in data.items():
            self.type(f"{where}.{status}", count, int)


_TOP_KEYS = {
    "schema_version",
    "generator",
    "started",
    "duration_seconds",
    "cn_fallback",
    "jobs",
    "passed",
    "server_failures",
    "totals",
    "by_kind",
    "by_client",
    "matrix",
    "results",
}
_OPTIONAL_TOP_KEYS = frozenset({"regressions"})
_REGRESSION_KEYS = {
    "case",
    "family",
    "adapter",
    "status",
    "expected",
    "agrees",
    "explained_by",
}
_RESULT_KEYS = {
    "id",
    "client",
    "scenario_id",
    "scenario",
    "status",
    "expected",
    "observed",
    "detail",
    "duration_seconds",
}
_SCENARIO_KEYS = {
    "kind",
    "profile",
    "cn_fallback",
    "ems_version",
    "use_ssl_cert",
    "client_version",
    "action",
    "answer",
    "remembered",
    "presented_kind",
}
_SIDE_KEYS = {"connected", "prompted", "outcome", "reasons"}


def _check_side(check: _Checker, where: str, side: object, observed: bool) -> None:
    if side is None:
        return
    if not check.type(where, side, dict):
        return
    assert isinstance(side, dict)
    keys = _SIDE_KEYS | ({"detail"} if observed else set())
    check.keys(where, side, keys)
    check.type(f"{where}.connected", side.get("connected"), bool)
    check.type(f"{where}.prompted", side.get("prompted"), bool, type(None))
    check.type(f"{where}.outcome", side.get("outcome"), str)
    reasons = side.get("reasons")
    if check.type(f"{where}.reasons", reasons, list):
        assert isinstance(reasons, list)
        for i, reason in enumerate(reasons):
            check.type(f"{where}.reasons[{i}]", reason, str)


def _check_result(check: _Checker, where: str, item: object) -> str | None:
    if not check.type(where, item, dict):
        return None
    assert isinstance(item, dict)
    check.keys(where, item, _RESULT_KEYS)
    for key in ("id", "client", "scenario_id", "detail"):
        check.type(f"{where}.{key}", item.get(key), str)
    check.type(f"{where}.duration_seconds", item.get("duration_seconds"), int, float)
    scenario = item.get("scenario")
    if check.type(f"{where}.scenario", scenario, dict):
        assert isinstance(scenario, dict)
        check.keys(f"{where}.scenario", scenario, _SCENARIO_KEYS)
    status = item.get("status")
    if status not in STATUSES:
        check.errors.append(
            f"{where}.status: expected one of {STATUSES}, got {status!r}"
        )
    _check_side(check, f"{where}.expected", item.get("expected"), observed=False)
    _check_side(check, f"{where}.observed", item.get("observed"), observed=True)
    return status if isinstance(status, str) else None


def _check_regressions(check: _Checker, entries: object) -> None:
    if not check.type("regressions", entries, list):
        return
    assert isinstance(entries, list)
    for i, item in enumerate(entries):
        where = f"regressions[{i}]"
        if not check.type(where, item, dict):
            continue
        assert isinstance(item, dict)
        check.keys(where, item, _REGRESSION_KEYS)
        for key in ("case", "adapter", "status", "expected"):
            check.type(f"{where}.{key}", item.get(key), str)
        check.type(f"{where}.family", item.get("family"), int)
        check.type(f"{where}.agrees", item.get("agrees"), bool)
        check.type(f"{where}.explained_by", item.get("explained_by"), str, type(None))


def validate_report(data: object) -> list[str]:
    """Return every way ``data`` breaks report schema version 1; empty if none.

    Besides types and keys, checks that ``totals`` counts the results.
    """
    check = _Checker()
    if not check.type("report", data, dict):
        return check.errors
    assert isinstance(data, dict)
    check.keys("report", data, _TOP_KEYS, _OPTIONAL_TOP_KEYS)
    if "regressions" in data:
        _check_regressions(check, data["regressions"])
    if data.get("schema_version") != SCHEMA_VERSION:
        check.errors.append(
            f"schema_version: expected {SCHEMA_VERSION}, "
            f"got {data.get('schema_version')!r}"
        )
    for key, types in (
        ("generator", (str,)),
        ("started", (str,)),
        ("duration_seconds", (int, float)),
        ("cn_fallback", (str,)),
        ("jobs", (int,)),
        ("passed", (bool,)),
        ("matrix", (dict,)),
    ):
        check.type(key, data.get(key), *types)
    for key in ("by_kind", "by_client"):
        table = data.get(key)
        if check.type(key, table, dict):
            assert isinstance(table, dict)
            for name, counts in table.items():
                check.counts(f"{key}.{name}", counts)

    failures = data.get("server_failures")
    if check.type("server_failures", failures, list):
        assert isinstance(failures, list)
        for i, failure in enumerate(failures):
            check.type(f"server_failures[{i}]", failure, str)

    statuses: list[str] = []
    results = data.get("results")
    if check.type("results", results, list):
        assert isinstance(results, list)
        for i, item in enumerate(results):
            status = _check_result(check, f"results[{i}]", item)
            if status is not None:
                statuses.append(status)

    totals = data.get("totals")
    if check.type("totals", totals, dict):
        assert isinstance(totals, dict)
        check.keys("totals", totals, {"total", *STATUSES})
        if totals.get("total") != len(statuses):
            check.errors.append(
                f"totals.total: expected {len(statuses)} (the number of results), "
                f"got {totals.get('total')!r}"
            )
        for status in STATUSES:
            counted = statuses.count(status)
            if totals.get(status) != counted:
                check.errors.append(
                    f"totals.{status}: expected {counted}, got {totals.get(status)!r}"
                )
    return check.errors
