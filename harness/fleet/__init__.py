"""Fleet simulation: an EMS, many endpoints and an upgrade path, step by step.

:func:`recommended_path` and :func:`load_path` give an
:class:`UpgradePath`; :class:`Simulation` runs it over a fleet and returns a
:class:`SimulationResult` with one :class:`StepRecord` per step.
:mod:`harness.fleet.invariants` checks the records, :mod:`harness.fleet.report`
writes them as a table, JSON and HTML.
"""

from harness.fleet.operations import PathError
from harness.fleet.paths import UpgradePath, load_path, parse_path, recommended_path
from harness.fleet.simulation import (
    OracleConnector,
    Simulation,
    SimulationResult,
    StepError,
    StepRecord,
)

__all__ = [
    "OracleConnector",
    "PathError",
    "Simulation",
    "SimulationResult",
    "StepError",
    "StepRecord",
    "UpgradePath",
    "load_path",
    "parse_path",
    "recommended_path",
]
