"""The JUnit XML report (``--junit FILE``): one testcase per scenario.

Disagreements become ``<failure>``, errors and timeouts ``<error>``, skipped
scenarios ``<skipped>``. An expected deviation passes, with the documented
reason in ``<system-out>`` so that it stays visible in CI views.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from harness.report.summary import describe_expected, describe_observed, summarize
from harness.runner import RunResult, Status


def render_junit(run: RunResult) -> bytes:
    """Return the JUnit XML document of ``run``."""
    summary = summarize(run)
    counts = summary.by_status
    root = ET.Element(
        "testsuites",
        name="ems-harness run",
        tests=str(summary.total),
        failures=str(counts[Status.DISAGREE]),
        errors=str(counts[Status.ERROR] + counts[Status.TIMEOUT]),
        skipped=str(counts[Status.SKIPPED]),
        time=f"{run.duration:.3f}",
    )
    for client, client_counts in summary.by_client.items():
        suite = ET.SubElement(
            root,
            "testsuite",
            name=client,
            tests=str(sum(client_counts.values())),
            failures=str(client_counts[Status.DISAGREE]),
            errors=str(client_counts[Status.ERROR] + client_counts[Status.TIMEOUT]),
            skipped=str(client_counts[Status.SKIPPED]),
        )
        for result in run.results:
            if result.client != client:
                continue
            case = ET.SubElement(
                suite,
                "testcase",
                classname=f"{client}.{result.scenario.kind}",
                name=result.scenario.id,
                time=f"{result.duration:.6f}",
            )
            text = (
                f"expected {describe_expected(result)}; "
                f"observed {describe_observed(result)}; {result.detail}"
            )
            if result.status is Status.DISAGREE:
                ET.SubElement(case, "failure", message=result.detail).text = text
            elif result.status in (Status.ERROR, Status.TIMEOUT):
                ET.SubElement(
                    case, "error", type=result.status.value, message=result.detail
                ).text = text
            elif result.status is Status.SKIPPED:
                ET.SubElement(case, "skipped", message=result.detail)
            elif result.status is Status.EXPECTED_DEVIATION:
                ET.SubElement(
                    case, "system-out"
                ).text = f"expected deviation: {result.detail}"
    ET.indent(root)
    document: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return document


def write_junit(run: RunResult, path: str | Path) -> None:
    """Write the JUnit XML report of ``run`` to ``path``."""
    Path(path).write_bytes(render_junit(run) + b"\n")
