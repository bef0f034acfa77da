"""Totals of a run, shared by every report format."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from harness.runner import RunResult, ScenarioResult, Status

STATUS_ORDER: tuple[Status, ...] = tuple(Status)


@dataclass(frozen=True)
class Summary:
    """Counts of a run by status, by kind and by client.

    Attributes:
        total: Number of results.
        by_status: Results per status; every status is present.
        by_kind: Results per kind and status, kinds in matrix order.
        by_client: Results per client and status.
        problems: Results that are neither ``agree`` nor
            ``expected-deviation``, in run order.
        deviations: ``expected-deviation`` results, in run order.
    """

    total: int
    by_status: dict[Status, int]
    by_kind: dict[str, dict[Status, int]] = field(default_factory=dict)
    by_client: dict[str, dict[Status, int]] = field(default_factory=dict)
    problems: tuple[ScenarioResult, ...] = ()
    deviations: tuple[ScenarioResult, ...] = ()


def _zeroed(counter: Counter[Status]) -> dict[Status, int]:
    return {status: counter.get(status, 0) for status in STATUS_ORDER}


def summarize(run: RunResult) -> Summary:
    """Count the results of ``run``."""
    by_status: Counter[Status] = Counter()
    by_kind: dict[str, Counter[Status]] = {}
    by_client: dict[str, Counter[Status]] = {}
    for result in run.results:
        by_status[result.status] += 1
        by_kind.setdefault(result.scenario.kind, Counter())[result.status] += 1
        by_client.setdefault(result.client, Counter())[result.status] += 1
    return Summary(
        total=len(run.results),
        by_status=_zeroed(by_status),
        by_kind={kind: _zeroed(counts) for kind, counts in by_kind.items()},
        by_client={name: _zeroed(counts) for name, counts in by_client.items()},
        problems=tuple(
            r
            for r in run.results
            if r.status not in (Status.AGREE, Status.EXPECTED_DEVIATION)
        ),
        deviations=tuple(
            r for r in run.results if r.status is Status.EXPECTED_DEVIATION
        ),
    )


def describe_expected(result: ScenarioResult) -> str:
    """Return the expectation of ``result`` in one line."""
    expected = result.expected
    if expected is None:
        return "-"
    reasons = f" [{', '.join(expected.reasons)}]" if expected.reasons else ""
    return f"{expected.outcome}{reasons}"


def describe_observed(result: ScenarioResult) -> str:
    """Return what the client did in ``result`` in one line."""
    observed = result.observed
    if observed is None:
        return result.status.value
    reasons = f" [{', '.join(observed.reasons)}]" if observed.reasons else ""
    return f"{observed.outcome}{reasons}"


# Longest client message shown in the terminal and Markdown reports.
CLIENT_MESSAGE_MAX = 200


def plural(count: int, singular: str, plural_form: str | None = None) -> str:
    """Return ``count`` and the noun in singular or plural, e.g. ``1 problem``."""
    if count == 1:
        return f"{count} {singular}"
    return f"{count} {plural_form or singular + 's'}"


def client_message(result: ScenarioResult, limit: int = CLIENT_MESSAGE_MAX) -> str:
    """Return the client's own output of ``result`` on one line, or ``""``.

    For adapters this is the exit code and the client's message, for example
    ``exit 1: curl: (60) SSL certificate problem``. The command line that
    adapters append in brackets is left out, and the text is cut to ``limit``
    characters with a trailing ellipsis.
    """
    if result.observed is None or not result.observed.detail:
        return ""
    text = " ".join(result.observed.detail.split())
    head, separator, _ = text.rpartition(" [")
    if separator and text.endswith("]") and head:
        text = head
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return text
