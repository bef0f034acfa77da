"""Regression-corpus results of real clients, as shown in every report.

``harness run`` checks each real client against every non-scripted case of
the regression corpus; each check becomes one :class:`RegressionEntry`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class RegressionEntry:
    """One real client's result on one regression case.

    Attributes:
        case: Case name (the file name without ``.toml``).
        family: The case's family number.
        adapter: Adapter name.
        status: What the client did: accepted, rejected, error, timeout or
            skipped.
        expected: The standards verdict under the run's ``cn_fallback`` mode.
        agrees: The status is the standards verdict.
        explained_by: The documented reason for a listed disagreement, else
            ``None``.
    """

    case: str
    family: int
    adapter: str
    status: str
    expected: str
    agrees: bool
    explained_by: str | None

    @property
    def unexplained(self) -> bool:
        """A disagreement that no deviation or known failure explains."""
        return not self.agrees and self.explained_by is None


@dataclass(frozen=True)
class RegressionCounts:
    """Counts of one adapter's regression results."""

    agreeing: int = 0
    explained: int = 0
    disagreeing: int = 0


def regression_counts(
    entries: Sequence[RegressionEntry],
) -> dict[str, RegressionCounts]:
    """Return agreeing, explained and disagreeing counts by adapter, in order."""
    counts: dict[str, list[int]] = {}
    for entry in entries:
        row = counts.setdefault(entry.adapter, [0, 0, 0])
        if entry.agrees:
            row[0] += 1
        elif entry.explained_by is not None:
            row[1] += 1
        else:
            row[2] += 1
    return {name: RegressionCounts(*row) for name, row in counts.items()}


def regressions_pass(entries: Sequence[RegressionEntry] | None) -> bool:
    """Whether no regression result is an unexplained disagreement."""
    return not any(entry.unexplained for entry in entries or ())
