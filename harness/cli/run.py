"""``run``: the main job. Run the scenario matrix against clients and report.

Exit code 0 when every scenario agrees with the oracle (expected deviations
count as agreeing), 1 otherwise, 2 on a usage error.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.console import Console

from harness.cli import EXIT_FAILED, EXIT_OK, HarnessError, cli
from harness.matrix import (
    Matrix,
    MatrixError,
    MatrixFilter,
    Profile,
    build_matrix,
    load_scenario_file,
    make_filter,
)
from harness.model import CnFallback
from harness.pki import LabError, build_lab
from harness.pki.lab import Lab
from harness.regressions import (
    RegressionCase,
    judge_adapter_result,
    load_cases,
    run_case_with_adapter,
    serve_case,
)
from harness.report import (
    RegressionEntry,
    print_summary,
    progress_bar,
    regressions_pass,
    write_html,
    write_json,
    write_junit,
    write_markdown,
)
from harness.report.summary import plural
from harness.runner import (
    PASSING,
    AdapterDriver,
    ClientDriver,
    MockEmsPool,
    ReferenceDriver,
    RunResult,
    ScenarioResult,
    Status,
    run_scenarios,
    skipped_results,
)
from harness.versions import MATRIX_VERSIONS

if TYPE_CHECKING:
    from harness.adapters.base import Adapter

REFERENCE = "reference"
ALL = "all"
# Console width when stdout is not a terminal.
MIN_LOG_WIDTH = 120


def _split(values: Sequence[str]) -> list[str]:
    """Flatten repeated and comma-separated option values."""
    return [part.strip() for value in values for part in value.split(",") if part]


def _optional_list(value: str | None) -> list[str] | None:
    return None if value is None else _split([value])


def _adapter_names() -> list[str]:
    from harness.adapters import ADAPTERS

    return list(ADAPTERS)


@dataclass(frozen=True)
class ClientRunResult(RunResult):
    """A run in which some clients were optional.

    Attributes:
        optional_clients: Clients selected only through ``--client all``. A
            skipped result of one of them (its program is missing) does not
            fail the run.
    """

    optional_clients: frozenset[str] = frozenset()

    @property
    def passed(self) -> bool:
        """Whether every scenario agreed, deviated as documented or was optional."""
        if self.server_failures:
            return False
        return all(
            result.status in PASSING
            or (
                result.status == Status.SKIPPED
                and result.client in self.optional_clients
            )
            for result in self.results
        )


def _make_drivers(
    names: list[str], lab: Lab, cn_fallback: CnFallback, command: str | None
) -> tuple[list[ClientDriver], frozenset[str]]:
    """Return one driver per requested client name, reference first.

    The second value names the clients that only ``all`` selected: those may
    be skipped without failing the run.
    """
    known = _adapter_names()
    optional: set[str] = set()
    if ALL in names:
        named = [name for name in names if name != ALL]
        found = []
        for name in known:
            if name == "command" and command is None:
                continue
            found.append(name)
            if name not in named:
                optional.add(name)
        names = [REFERENCE, *named, *found]
    drivers: list[ClientDriver] = []
    for name in dict.fromkeys(names):
        if name == REFERENCE:
            drivers.append(ReferenceDriver(lab, cn_fallback))
            continue
        if name not in known:
            raise click.BadParameter(
                f"unknown client {name!r}; known clients: "
                f"{', '.join([REFERENCE, ALL, *known])}",
                param_hint="--client",
            )
        drivers.append(AdapterDriver(_get_adapter(name, command), lab, cn_fallback))
    return drivers, frozenset(optional)


def _get_adapter(name: str, command: str | None) -> Adapter:
    from harness.adapters import get_adapter

    if name == "command":
        if command is None:
            raise click.BadParameter(
                "the command client needs --command TEMPLATE", param_hint="--client"
            )
        return get_adapter(name, template=command)
    return get_adapter(name)


def _check_command(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> str | None:
    """Reject a command template that does not split or has unknown placeholders."""
    from harness.adapters.programs import split_template

    if value is not None:
        try:
            split_template(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc), ctx=ctx, param=param) from None
    return value


def _check_report_folder(folder: Path, option: str) -> None:
    """Create ``folder`` if missing and make sure reports can be written there."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise click.BadParameter(
            f"cannot create the folder {folder}: {reason}", param_hint=option
        ) from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise click.BadParameter(
            f"the folder {folder} is not writable", param_hint=option
        )


def _check_report_paths(report_dir: Path | None, paths: dict[str, Path | None]) -> None:
    """Fail before the run if any report destination cannot be written."""
    if report_dir is not None:
        _check_report_folder(report_dir, "--report-dir")
    for key, path in paths.items():
        if path is None:
            continue
        option = f"--{key}"
        if path.is_dir():
            raise click.BadParameter(f"{path} is a folder", param_hint=option)
        _check_report_folder(path.parent, option)
        if path.exists() and not os.access(path, os.W_OK):
            raise click.BadParameter(f"{path} is not writable", param_hint=option)


def _report_paths(
    report_dir: Path | None, **paths: Path | None
) -> dict[str, Path | None]:
    if report_dir is not None:
        defaults = {
            "json": "report.json",
            "junit": "junit.xml",
            "html": "report.html",
            "markdown": "report.md",
        }
        for key, filename in defaults.items():
            if paths.get(key) is None:
                paths[key] = report_dir / filename
    return paths


Writer = Callable[[RunResult, Path, Sequence[RegressionEntry] | None], None]


def _junit(run: RunResult, path: Path, _: Sequence[RegressionEntry] | None) -> None:
    write_junit(run, path)


_WRITERS: dict[str, Writer] = {
    "json": write_json,
    "junit": _junit,
    "html": write_html,
    "markdown": write_markdown,
}


@cli.command("run")
@click.option(
    "--client",
    "clients",
    multiple=True,
    default=(REFERENCE,),
    show_default=True,
    metavar="NAME[,NAME...]",
    help="Client under test: 'reference' (the reference endpoint client), an "
    "adapter name such as curl, openssl, gnutls, node, python-ssl, pyopenssl "
    "or command, or 'all' for the reference client and every real client "
    "found on this machine. With 'all', a client whose program is missing is "
    "reported as skipped, with an install hint, and does not fail the run; a "
    "client named explicitly whose program is missing fails the run. "
    "Repeatable or comma-separated.",
)
@click.option(
    "--command",
    "command",
    default=None,
    metavar="TEMPLATE",
    callback=_check_command,
    help="Command line for the 'command' client, with {host}, {port}, "
    "{servername} and {cafile} placeholders; exit code 0 means accepted.",
)
@click.option(
    "--kinds",
    default=None,
    metavar="NAME[,NAME...]",
    help="Certificate kinds to run; every kind if omitted ('ems-harness certs "
    "list' shows them).",
)
@click.option(
    "--client-versions",
    default=None,
    metavar="V[,V...]",
    help="Client versions of the matrix: any dotted versions, such as 9.9.9 "
    "or 6.4.10, replace the default list "
    f"{','.join(MATRIX_VERSIONS)}. Plain TLS clients have no versions.",
)
@click.option(
    "--ems-versions",
    default=None,
    metavar="V[,V...]",
    help="EMS versions of the matrix: any dotted versions, such as 9.9.9 "
    "or 6.4.10, replace the default list "
    f"{','.join(MATRIX_VERSIONS)}. Plain TLS clients have no versions.",
)
@click.option(
    "--actions",
    default=None,
    metavar="A[,A...]",
    help="Invalid certificate actions to run: allow, warn, deny (default all).",
)
@click.option(
    "--scenarios",
    "scenario_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="TOML or JSON file selecting scenarios (format in "
    "fixtures/scenarios/README.md); command-line filters override its lists.",
)
@click.option(
    "--cn-fallback",
    type=click.Choice([mode.value for mode in CnFallback]),
    default=CnFallback.WHEN_NO_SAN.value,
    show_default=True,
    help="When the subject CN counts as a presented identity, for the oracle "
    "and for the reference client.",
)
@click.option(
    "--lab-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("certs"),
    show_default=True,
    help="Folder of the certificate lab; built there if missing or stale.",
)
@click.option(
    "--jobs",
    type=click.IntRange(min=1),
    default=None,
    help="Scenarios run at once [default: number of CPUs].",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=10.0,
    show_default=True,
    help="Seconds one connection attempt may take before it counts as a timeout.",
)
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the JSON report (schema version 1) here.",
)
@click.option(
    "--junit",
    "junit_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write a JUnit XML report here.",
)
@click.option(
    "--html",
    "html_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write a self-contained HTML report here.",
)
@click.option(
    "--markdown",
    "markdown_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write a Markdown report here.",
)
@click.option(
    "--report-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write all four reports into this folder (report.json, junit.xml, "
    "report.html, report.md); explicit report options take precedence.",
)
@click.option(
    "--no-regressions",
    "no_regressions",
    is_flag=True,
    help="Do not run the regression corpus. By default every real client "
    "(any client but 'reference') is also checked against each non-scripted "
    "regression case under --cn-fallback; an unexplained disagreement there "
    "fails the run.",
)
@click.option(
    "--list",
    "list_only",
    is_flag=True,
    help="Print the selected scenario ids and exit without running.",
)
@click.option(
    "--quiet",
    "-q",
    is_flag=True,
    help="No progress bar and no table: print only the final verdict line.",
)
def run(
    clients: tuple[str, ...],
    command: str | None,
    kinds: str | None,
    client_versions: str | None,
    ems_versions: str | None,
    actions: str | None,
    scenario_file: Path | None,
    cn_fallback: str,
    lab_dir: Path,
    jobs: int | None,
    timeout: float,
    json_path: Path | None,
    junit_path: Path | None,
    html_path: Path | None,
    markdown_path: Path | None,
    report_dir: Path | None,
    no_regressions: bool,
    list_only: bool,
    quiet: bool,
) -> int:
    """Run the scenario matrix against clients and compare with the oracle.

    The matrix covers certificate kind x EMS version x 'use SSL certificate'
    setting x client version x action x prompt answer x remembered state,
    without combinations a dimension cannot affect. Plain TLS clients get one
    scenario per kind, judged by standards validation alone.
    """
    mode = CnFallback(cn_fallback)
    selection = _selection(scenario_file, kinds, client_versions, ems_versions, actions)
    paths = _report_paths(
        report_dir,
        json=json_path,
        junit=junit_path,
        html=html_path,
        markdown=markdown_path,
    )
    if not list_only:
        _check_report_paths(report_dir, paths)
    try:
        lab = build_lab(lab_dir)
    except LabError as exc:
        raise HarnessError(str(exc)) from exc
    drivers, optional = _make_drivers(_split(clients), lab, mode, command)
    matrices = {d.name: _matrix(d, selection, mode) for d in drivers}
    if not any(matrices.values()):
        raise click.UsageError(
            "the selection contains no scenario: "
            f"{_describe_filters(selection, scenario_file)} removed every one"
        )

    if list_only:
        for name, matrix in matrices.items():
            for scenario in matrix.scenarios:
                click.echo(f"{name}:{scenario.id}")
        return EXIT_OK

    result = _run_all(drivers, matrices, lab, mode, jobs, timeout, quiet, optional)
    regressions: list[RegressionEntry] | None = None
    real = [d for d in drivers if isinstance(d, AdapterDriver)]
    if real and not no_regressions:
        adapters = [d.adapter for d in real if d.availability()[0]]
        regressions = run_regressions(
            adapters, lab, mode, jobs=result.jobs, timeout=timeout
        )
    for key, path in paths.items():
        if path is not None:
            try:
                _WRITERS[key](result, path, regressions)
            except OSError as exc:
                message = f"cannot write the {key} report {path}: {exc}"
                raise HarnessError(message) from None
    passed = result.passed and regressions_pass(regressions)
    console = Console(soft_wrap=True)
    if not console.is_terminal:
        # CI logs are often 80 columns wide; long ids then stay on one line.
        console.width = max(console.width, MIN_LOG_WIDTH)
    for driver in drivers:
        available, reason = driver.availability()
        if not available:
            note = "optional, " if driver.name in optional else ""
            click.echo(f"skipped {driver.name} ({note}{reason})")
    if quiet:
        verdict = "PASSED" if passed else "FAILED"
        click.echo(f"{verdict}: {plural(len(result.results), 'scenario')}")
    else:
        print_summary(result, console, regressions)
    return EXIT_OK if passed else EXIT_FAILED


def _regression_case(
    case: RegressionCase,
    adapters: list[Adapter],
    lab: Lab,
    mode: CnFallback,
    timeout: float,
) -> list[RegressionEntry]:
    entries = []
    with serve_case(case, lab) as ems:
        for adapter in adapters:
            status = run_case_with_adapter(
                case, adapter, lab, timeout=timeout, ems=ems
            ).status
            verdict = judge_adapter_result(case, adapter.name, status, mode)
            entries.append(
                RegressionEntry(
                    case=case.name,
                    family=case.family,
                    adapter=adapter.name,
                    status=verdict.status,
                    expected=verdict.expected,
                    agrees=verdict.agrees,
                    explained_by=verdict.explained_by,
                )
            )
    return entries


def run_regressions(
    adapters: list[Adapter],
    lab: Lab,
    mode: CnFallback,
    *,
    jobs: int,
    timeout: float,
) -> list[RegressionEntry]:
    """Check each adapter against every non-scripted regression case.

    Each case is served once; cases run on at most ``jobs`` threads. The
    entries come in corpus order, adapters in the given order within a case.
    """
    cases = [case for case in load_cases() if not case.scripted]
    if not adapters:
        return []
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [
            pool.submit(_regression_case, case, adapters, lab, mode, timeout)
            for case in cases
        ]
        return [entry for future in futures for entry in future.result()]


def _selection(
    scenario_file: Path | None,
    kinds: str | None,
    client_versions: str | None,
    ems_versions: str | None,
    actions: str | None,
) -> MatrixFilter:
    try:
        base = MatrixFilter()
        if scenario_file is not None:
            base = load_scenario_file(scenario_file)
        given = make_filter(
            kinds=_optional_list(kinds),
            ems_versions=_optional_list(ems_versions),
            client_versions=_optional_list(client_versions),
            actions=_optional_list(actions),
        )
    except MatrixError as exc:
        raise click.UsageError(str(exc)) from None
    return base.merged(given)


def _describe_filters(selection: MatrixFilter, scenario_file: Path | None) -> str:
    """Name the filters of ``selection``; empty ones alone if there are any."""
    fields = {
        "--kinds": selection.kinds,
        "--ems-versions": selection.ems_versions,
        "--client-versions": selection.client_versions,
        "--actions": selection.actions,
        "ids": selection.ids,
    }
    given = {name: value for name, value in fields.items() if value is not None}
    empty = [name for name, value in given.items() if not value]
    named = [f"{name} (empty)" for name in empty] or [
        f"{name} {','.join(map(str, value))}" for name, value in given.items()
    ]
    text = ", ".join(named) or "the filters"
    if scenario_file is not None:
        text += f" (with the scenario file {scenario_file})"
    return text


def _matrix(driver: ClientDriver, selection: MatrixFilter, mode: CnFallback) -> Matrix:
    profile = Profile.ENDPOINT if isinstance(driver, ReferenceDriver) else Profile.TLS
    try:
        return build_matrix(selection, cn_fallback=mode, profile=profile)
    except MatrixError as exc:
        raise click.UsageError(str(exc)) from None


def _run_all(
    drivers: list[ClientDriver],
    matrices: dict[str, Matrix],
    lab: Lab,
    mode: CnFallback,
    jobs: int | None,
    timeout: float,
    quiet: bool,
    optional: frozenset[str] = frozenset(),
) -> RunResult:
    jobs = jobs or os.cpu_count() or 1
    total = sum(len(matrix) for matrix in matrices.values())
    started = time.time()
    clock = time.monotonic()
    results: list[ScenarioResult] = []
    servers = MockEmsPool(lab)
    with servers, progress_bar(total, enabled=not quiet) as advance:
        for driver in drivers:
            scenarios = matrices[driver.name].scenarios
            available, reason = driver.availability()
            if not available:
                skipped = skipped_results(driver.name, scenarios, reason)
                for item in skipped:
                    advance(item)
                results += skipped
                continue
            results += run_scenarios(
                driver,
                scenarios,
                servers,
                jobs=jobs,
                timeout=timeout,
                on_result=advance,
            )
    return ClientRunResult(
        optional_clients=optional,
        results=tuple(results),
        matrices=matrices,
        cn_fallback=mode,
        started=started,
        duration=time.monotonic() - clock,
        jobs=jobs,
        server_failures=tuple(servers.failures),
    )
