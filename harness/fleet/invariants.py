"""Checks over the records of a simulation run.

:func:`recommended_violations` checks what must hold at every step of the
recommended upgrade path. :func:`breakages` names what went wrong on any
path, in the terms of the known bad orders. :func:`check_expectations`
compares each step with the ``expect`` table of its path file.
"""

from __future__ import annotations

from harness.fleet.simulation import SimulationResult, StepRecord

# Names of the known bad orders, as :func:`breakages` reports them.
LEGACY_OFFLINE = "legacy-offline"
NEW_PROMPTED = "new-prompted"
NEW_OFFLINE = "new-offline"
FABRIC_DOWN = "fabric-down"
DISAGREEMENT = "oracle-disagreement"


def _toggle_step(result: SimulationResult) -> int | None:
    for step in result.steps:
        if step.toggle:
            return step.index
    return None


def recommended_violations(result: SimulationResult) -> list[str]:
    """Return every broken invariant of the recommended path, one line each.

    At every step no endpoint with the feature is prompted or offline, and
    connections agree with the oracle. Before the toggle step every legacy
    endpoint is online. The toggle goes on only once no legacy endpoint
    remains. From the toggle step on, the offline endpoints are exactly the
    legacy ones.
    """
    violations: list[str] = []
    toggle_at = _toggle_step(result)
    for step in result.steps:
        where = f"step {step.index} ({step.label})"
        new_offline = step.offline_ids - step.legacy_ids
        if step.prompted_ids:
            violations.append(f"{where}: {len(step.prompted_ids)} endpoints prompted")
        if new_offline:
            violations.append(
                f"{where}: {len(new_offline)} endpoints with the feature offline"
            )
        before_toggle = toggle_at is None or step.index < toggle_at
        legacy_offline = step.offline_ids & step.legacy_ids
        if before_toggle and legacy_offline:
            violations.append(
                f"{where}: {len(legacy_offline)} legacy endpoints offline before "
                "the toggle"
            )
        if step.index == toggle_at and step.legacy_ids:
            violations.append(
                f"{where}: toggle turned on while {len(step.legacy_ids)} legacy "
                "endpoints remain"
            )
        if not before_toggle and step.offline_ids != step.legacy_ids:
            violations.append(
                f"{where}: offline endpoints {len(step.offline_ids)} are not "
                f"exactly the {len(step.legacy_ids)} legacy endpoints"
            )
        if step.disagreements:
            violations.append(
                f"{where}: {len(step.disagreements)} connections disagree with "
                "the oracle"
            )
    return violations


def step_breakages(step: StepRecord) -> set[str]:
    """Return the names of what is broken after ``step``."""
    found: set[str] = set()
    if step.offline_ids & step.legacy_ids:
        found.add(LEGACY_OFFLINE)
    if step.prompted_ids:
        found.add(NEW_PROMPTED)
    if step.offline_ids - step.legacy_ids:
        found.add(NEW_OFFLINE)
    if not step.fabric_up:
        found.add(FABRIC_DOWN)
    if step.disagreements:
        found.add(DISAGREEMENT)
    return found


def breakages(result: SimulationResult) -> dict[int, set[str]]:
    """Return, for each step with a breakage, the names of what broke."""
    found = {step.index: step_breakages(step) for step in result.steps}
    return {index: names for index, names in found.items() if names}


def _versions_with(step: StepRecord, state: str) -> set[str]:
    return {
        version
        for version, counts in step.by_version.items()
        if getattr(counts, state) > 0
    }


def check_expectations(result: SimulationResult) -> list[str]:
    """Compare every step with its ``expect`` table; return the mismatches."""
    mismatches: list[str] = []
    for step in result.steps:
        where = f"step {step.index} ({step.label})"
        for key, expected in step.expect.items():
            if key == "fabric_up":
                actual: object = step.fabric_up
            elif key == "error":
                actual = step.error is not None
            else:
                actual = sorted(_versions_with(step, key))
                expected = sorted(expected)
            if actual != expected:
                mismatches.append(f"{where}: expected {key} {expected}, got {actual}")
    return mismatches
