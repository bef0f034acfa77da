"""``simulate upgrade``: run an upgrade path over a simulated fleet."""

from __future__ import annotations

import logging
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from harness.cli import EXIT_FAILED, EXIT_OK, HarnessError, cli
from harness.cli.options import lab_dir_options, resolve_lab_alias
from harness.fleet import (
    PathError,
    Simulation,
    SimulationResult,
    StepRecord,
    UpgradePath,
    load_path,
    recommended_path,
)
from harness.fleet.invariants import check_expectations, recommended_violations
from harness.fleet.model import parse_mix
from harness.fleet.report import step_table, write_html, write_json
from harness.pki import Lab, LabError, build_lab

logger = logging.getLogger(__name__)


@cli.group()
def simulate() -> None:
    """Simulate a fleet of endpoints and an EMS along an upgrade path."""


def _load(path: str) -> UpgradePath:
    if path == "recommended":
        return recommended_path()
    try:
        return load_path(Path(path))
    except PathError as exc:
        raise HarnessError(str(exc)) from None


@simulate.command("upgrade")
@click.option(
    "--path",
    "path_name",
    default="recommended",
    show_default=True,
    metavar="recommended|FILE",
    help="The built-in recommended path, or a TOML path file.",
)
@click.option(
    "--endpoints",
    type=click.IntRange(min=0, max=100_000),
    default=None,
    help="Fleet size; the path file's [fleet] endpoints (100) if omitted.",
)
@click.option(
    "--mix",
    default=None,
    metavar="VERSION=WEIGHT,...",
    help="Client versions and weights, e.g. 6.4.6=25,7.0.1=25,6.4.7=25,7.0.2=25.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1, max=256),
    default=16,
    show_default=True,
    help="Connections made at once.",
)
@click.option(
    "--oracle-only",
    is_flag=True,
    help="Let the oracle decide every connection; no TLS (fast, checks nothing "
    "against real clients).",
)
@lab_dir_options("Certificate lab folder; built there if missing or stale.")
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the step records as JSON to this file.",
)
@click.option(
    "--html",
    "html_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write an HTML report with an SVG chart to this file.",
)
def upgrade(
    path_name: str,
    endpoints: int | None,
    mix: str | None,
    workers: int,
    oracle_only: bool,
    lab_dir: Path,
    lab_alias: Path | None,
    json_path: Path | None,
    html_path: Path | None,
) -> int:
    """Apply each admin step, reconnect every endpoint, and report per step.

    Exits 1 when a connection disagrees with the oracle, a step misses its
    path file's expectations, or the recommended path breaks an invariant.
    """
    lab_dir = resolve_lab_alias(lab_dir, lab_alias)
    path = _load(path_name)
    try:
        weights = parse_mix(mix) if mix else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--mix") from None
    try:
        lab = build_lab(lab_dir)
    except (LabError, OSError) as exc:
        raise HarnessError(
            f"cannot build the certificate lab in {lab_dir}: {exc}"
        ) from None

    result = _run(path, lab, endpoints, weights, workers, oracle_only)

    violations = recommended_violations(result) if path_name == "recommended" else None
    mismatches = check_expectations(result)
    Console(soft_wrap=False, width=160).print(step_table(result))
    for line in (violations or []) + mismatches:
        click.echo(f"FAIL {line}")
    for disagreement in result.disagreements[:20]:
        click.echo(
            f"DISAGREE {disagreement.endpoint_id} {disagreement.version}: oracle "
            f"{disagreement.expected}, client {disagreement.observed}"
        )
    click.echo(
        f"{result.connections} connections in {result.seconds:.2f} s "
        f"({result.connections / max(result.seconds, 1e-9):.0f} per second)"
    )

    if json_path is not None:
        write_json(result, violations, json_path)
    if html_path is not None:
        write_html(result, violations, html_path)
    failed = violations or mismatches or result.disagreements
    return EXIT_FAILED if failed else EXIT_OK


def _run(
    path: UpgradePath,
    lab: Lab,
    endpoints: int | None,
    mix: dict[str, int] | None,
    workers: int,
    oracle_only: bool,
) -> SimulationResult:
    connector = None
    if not oracle_only:
        from harness.fleet.tls import TlsConnector

        connector = TlsConnector(lab)

    stderr = Console(stderr=True)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=stderr,
        transient=True,
        disable=not stderr.is_terminal,
    ) as progress:
        task = progress.add_task(path.name, total=len(path.steps) + 1)

        def on_step(record: StepRecord) -> None:
            progress.update(task, advance=1, description=f"step {record.index}")
            logger.info(
                "step %d (%s): %d online, %d offline, %d prompted, %.2f s",
                record.index,
                record.label,
                record.online,
                record.offline,
                record.prompted,
                record.seconds,
            )

        simulation = Simulation(
            path,
            lab,
            connector=connector,
            endpoints=endpoints,
            mix=mix,
            workers=workers,
            progress=on_step,
        )
        return simulation.run()
