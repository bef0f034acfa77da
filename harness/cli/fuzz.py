"""``fuzz``: run a bounded fuzz campaign and save what it finds."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from harness.cli import HarnessError, cli
from harness.cli.options import lab_dir_options, resolve_lab_alias
from harness.pki import LabError, build_lab


@cli.command("fuzz")
@click.option(
    "--target",
    type=click.Choice(["server", "client", "differential"]),
    required=True,
    help="What to fuzz: the mock EMS, the reference client, or every TLS stack.",
)
@click.option(
    "--budget",
    type=click.FloatRange(min=1.0),
    required=True,
    help="Maximum campaign time in seconds.",
)
@click.option(
    "--max-inputs",
    type=click.IntRange(min=1),
    default=100_000,
    show_default=True,
    help="Maximum number of inputs; the campaign stops at this or the budget.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("fuzz-findings"),
    show_default=True,
    help="Folder for finding files (one JSON file per finding).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Hypothesis seed.")
@lab_dir_options("Certificate lab folder, built if missing.")
def fuzz(
    target: str,
    budget: float,
    max_inputs: int,
    out: Path,
    seed: int,
    lab_dir: Path,
    lab_alias: Path | None,
) -> int:
    """Run a bounded fuzz campaign; print a JSON summary on stdout.

    Exits 1 when a server or client campaign finds a broken property. A
    differential campaign records disagreements between TLS stacks, which
    are findings about those stacks, so it exits 0.
    """
    from harness.fuzz import findings

    lab_dir = resolve_lab_alias(lab_dir, lab_alias)
    try:
        lab = build_lab(lab_dir)
    except LabError as exc:
        raise HarnessError(str(exc)) from exc
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()

    def progress(done: int, found: int = 0) -> None:
        if done % 100 == 0:
            elapsed = time.monotonic() - started
            click.echo(f"{target}: {done} inputs, {elapsed:.0f} s", err=True)

    if target == "server":
        from harness.fuzz.server import run_server_campaign

        report = run_server_campaign(
            lab, max_inputs=max_inputs, budget=budget, seed=seed, progress=progress
        )
        saved = [
            str(findings.save(out, findings.server_finding(f.input, f.problem)))
            for f in report.findings
        ]
        assert report.before is not None and report.after is not None
        summary = {
            "target": "server",
            "inputs": report.inputs,
            "by_kind": report.by_kind,
            "findings": len(report.findings),
            "saved": saved,
            "seconds": round(report.seconds, 1),
            "threads": [report.before.threads, report.after.threads],
            "open_fds": [report.before.fds, report.after.fds],
            "rss_kib": [report.before.rss // 1024, report.after.rss // 1024],
        }
    else:
        summary = findings.run_certificate_campaign(
            lab,
            target,
            max_inputs=max_inputs,
            budget=budget,
            seed=seed,
            out=out,
            progress=progress,
        )
        summary["seconds"] = round(time.monotonic() - started, 1)
    click.echo(json.dumps(summary, indent=2))
    if target != "differential" and summary["findings"]:
        return 1
    return 0
