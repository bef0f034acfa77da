"""Regression cases run against every available real-client adapter.

Each identity or chain case is served once by a mock EMS over real TLS 1.3;
every adapter connects to it once, and its status is judged under each
``cn_fallback`` mode. A disagreement with the standards verdict must be in
the deviations table (catalogue kinds) or in
:data:`harness.regressions.KNOWN_CLIENT_FAILURES` (inline leaves) with that
status, and every known-failure entry must still match what the client did.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from harness.adapters import ADAPTERS, AdapterResult
from harness.model import CnFallback
from harness.pki import Lab
from harness.regressions import (
    KNOWN_CLIENT_FAILURES,
    RegressionCase,
    judge_adapter_result,
    known_failure,
    load_cases,
    run_case_with_adapter,
    serve_case,
)

CASES = [case for case in load_cases() if not case.scripted]
CASES_BY_NAME = {case.name: case for case in CASES}
CLIENT_ADAPTERS = [name for name in ADAPTERS if name != "command"]
TIMEOUT = 15.0

Results = dict[tuple[str, str], AdapterResult]


def _run_case(case: RegressionCase, lab: Lab, adapters: list[str]) -> Results:
    with serve_case(case, lab) as ems:
        return {
            (case.name, name): run_case_with_adapter(
                case, ADAPTERS[name], lab, timeout=TIMEOUT, ems=ems
            )
            for name in adapters
        }


@pytest.fixture(scope="module")
def adapter_results(cert_lab: Lab) -> Results:
    """Every available adapter's result on every case, run in parallel."""
    available = [name for name in CLIENT_ADAPTERS if ADAPTERS[name].availability()[0]]
    results: Results = {}
    with ThreadPoolExecutor(max_workers=16) as pool:
        futures = [pool.submit(_run_case, case, cert_lab, available) for case in CASES]
        for future in futures:
            results.update(future.result())
    return results


def _require(adapter: str) -> None:
    available, why = ADAPTERS[adapter].availability()
    if not available:
        pytest.skip(why)


@pytest.mark.network_tools
@pytest.mark.parametrize("adapter", CLIENT_ADAPTERS)
def test_adapter_disagreements_are_known(
    adapter: str, adapter_results: Results
) -> None:
    _require(adapter)
    unexplained = []

    for case in CASES:
        result = adapter_results[(case.name, adapter)]
        for mode in CnFallback:
            verdict = judge_adapter_result(case, adapter, result.status, mode)
            if not verdict.agrees and verdict.explained_by is None:
                unexplained.append(
                    f"{case.name} [{mode.value}]: {result.status}, expected "
                    f"{verdict.expected} ({result.detail})"
                )

    assert unexplained == []


@pytest.mark.network_tools
@pytest.mark.parametrize("adapter", CLIENT_ADAPTERS)
def test_adapter_gives_a_verdict(adapter: str, adapter_results: Results) -> None:
    _require(adapter)

    statuses = {adapter_results[(case.name, adapter)].status for case in CASES}

    # Every client accepts some regression cases and rejects others; a client
    # that only errors or times out would explain nothing.
    assert {"accepted", "rejected"} <= statuses


KNOWN = [
    (entry.adapter, case, mode)
    for entry in KNOWN_CLIENT_FAILURES
    for case in entry.cases
    for mode in sorted(entry.modes)
]


@pytest.mark.network_tools
@pytest.mark.parametrize(
    ("adapter", "case_name", "mode"),
    KNOWN,
    ids=[f"{a}-{c}-{m.value}" for a, c, m in KNOWN],
)
def test_known_failure_still_happens(
    adapter: str, case_name: str, mode: CnFallback, adapter_results: Results
) -> None:
    _require(adapter)
    case = CASES_BY_NAME[case_name]
    entry = known_failure(adapter, case_name, mode)
    assert entry is not None

    result = adapter_results[(case_name, adapter)]

    assert case.kind is None, "catalogue kinds belong in the deviations table"
    assert result.status == entry.status, result
    assert result.status != case.expected_status(mode)


def test_known_failures_name_existing_cases() -> None:
    for entry in KNOWN_CLIENT_FAILURES:
        for name in entry.cases:
            assert name in CASES_BY_NAME, name
        assert entry.adapter in CLIENT_ADAPTERS
        assert entry.reason
