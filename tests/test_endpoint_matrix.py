"""The reference client agrees with the oracle over real TLS, for every kind.

For each catalogue kind and client version class, every combination of
action, prompt answer and remembered state runs against one mock EMS per
kind. The oracle decides from the declared kind; the client decides from the
bytes it receives; the two must agree on every field.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from harness.ems.server import MockEms
from harness.endpoint import EndpointClient, MemoryFile, Observation, PromptInfo
from harness.model import Action, ActionSource, Answer, Reason
from harness.oracle.decision import (
    ExpectedOutcome,
    Remembered,
    Scenario,
    expected_outcome,
)
from harness.pki import CATALOGUE, Lab

CLIENT_VERSIONS = ("6.4.6", "7.0.1", "6.4.7", "7.0.2")
OTHER_LEAF_SHA256 = "0" * 64


def _combinations() -> list[tuple[Action, Answer, Remembered]]:
    combos = []
    for action, remembered in itertools.product(Action, Remembered):
        # The answer only matters when the client prompts, which needs warn.
        answers = list(Answer) if action is Action.WARN else [Answer.DENY]
        combos += [(action, answer, remembered) for answer in answers]
    return combos


COMBINATIONS = _combinations()


@pytest.fixture(scope="module")
def servers(cert_lab: Lab) -> Iterator[dict[str, MockEms]]:
    started: dict[str, MockEms] = {}
    try:
        for name in CATALOGUE:
            ems = MockEms.from_kind(cert_lab, name)
            ems.start()
            started[name] = ems
        yield started
    finally:
        for ems in started.values():
            ems.stop()


def _seed_memory(
    path: Path, scenario: Scenario, port: int, leaf_sha256: str, reasons: list[Reason]
) -> None:
    memory = MemoryFile(path)
    reference = scenario.reference_identity
    if scenario.remembered is Remembered.THIS_LEAF:
        memory.remember(reference, port, leaf_sha256, frozenset(reasons))
    elif scenario.remembered is Remembered.THIS_LEAF_FEWER_REASONS:
        memory.remember(reference, port, leaf_sha256, frozenset(reasons[:-1]))
    elif scenario.remembered is Remembered.OTHER_LEAF:
        memory.remember(reference, port, OTHER_LEAF_SHA256, frozenset(Reason))


def _run(
    lab: Lab, ems: MockEms, scenario: Scenario, memory_path: Path
) -> tuple[ExpectedOutcome, Observation, list[PromptInfo]]:
    expected = expected_outcome(scenario)
    built = lab.kind(scenario.kind.name)
    _seed_memory(memory_path, scenario, ems.port, built.leaf_sha256, expected.reasons)
    prompts: list[PromptInfo] = []

    def prompt(info: PromptInfo) -> Answer:
        prompts.append(info)
        assert scenario.answer is not None
        return scenario.answer

    client = EndpointClient(
        scenario.client_version,
        lab.trust_store_path,
        action=scenario.action,
        action_source=scenario.action_source,
        memory_path=memory_path,
        prompt=prompt,
        timeout=5.0,
        telemetry_idle=0.01,
    )
    observed = client.connect(
        ems.host, ems.port, servername=scenario.reference_identity
    )
    return expected, observed, prompts


def _differences(expected: ExpectedOutcome, observed: Observation) -> list[str]:
    fields = (
        "connected",
        "prompted",
        "reasons",
        "outcome",
        "action",
        "action_source",
    )
    found = [
        f"{name}: expected {getattr(expected, name)!r}, got {getattr(observed, name)!r}"
        for name in fields
        if getattr(expected, name) != getattr(observed, name)
    ]
    if expected.remembered_after != observed.remembered:
        found.append(
            f"remembered: expected {expected.remembered_after}, "
            f"got {observed.remembered}"
        )
    return found


@pytest.mark.parametrize("client_version", CLIENT_VERSIONS)
@pytest.mark.parametrize("kind_name", list(CATALOGUE))
def test_client_agrees_with_oracle(
    kind_name: str,
    client_version: str,
    cert_lab: Lab,
    servers: dict[str, MockEms],
    tmp_path: Path,
) -> None:
    ems = servers[kind_name]
    now = dt.datetime.now(dt.UTC)
    scenarios = [
        Scenario(
            kind=CATALOGUE[kind_name],
            ems_version="7.0.2",
            use_ssl_cert=True,
            client_version=client_version,
            action=action,
            action_source=ActionSource.PROFILE,
            answer=answer,
            remembered=remembered,
            built_at=cert_lab.built_at,
            now=now,
        )
        for action, answer, remembered in COMBINATIONS
    ]

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(
            pool.map(
                lambda item: _run(
                    cert_lab, ems, item[1], tmp_path / f"memory-{item[0]}.json"
                ),
                enumerate(scenarios),
            )
        )

    mismatches = []
    for scenario, (expected, observed, prompts) in zip(scenarios, results, strict=True):
        problems = _differences(expected, observed)
        if len(prompts) != int(expected.prompted):
            problems.append(f"prompt called {len(prompts)} times")
        if expected.connected and observed.telemetry is None:
            problems.append("connected without a telemetry session")
        if problems:
            mismatches.append(f"{scenario.id}: {'; '.join(problems)}")
    assert mismatches == []
