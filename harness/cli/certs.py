"""``certs list`` and ``certs build``: the certificate lab from the shell."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from harness.cli import HarnessError, cli
from harness.pki import CATALOGUE, LabError, build_lab


@cli.group()
def certs() -> None:
    """List and build the certificate kinds of the lab."""


@certs.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def list_kinds(as_json: bool) -> None:
    """Print every certificate kind with its description."""
    if as_json:
        rows = [
            {
                "kind": kind.name,
                "description": kind.description,
                "reference_identity": kind.reference_identity,
                "tags": list(kind.tags),
            }
            for kind in CATALOGUE.values()
        ]
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    table = Table(title=f"{len(CATALOGUE)} certificate kinds")
    table.add_column("kind", no_wrap=True)
    table.add_column("reference identity")
    table.add_column("description")
    for kind in CATALOGUE.values():
        table.add_row(kind.name, repr(kind.reference_identity)[1:-1], kind.description)
    Console(soft_wrap=False).print(table)


@certs.command("build")
@click.option(
    "--out",
    "out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("certs"),
    show_default=True,
    help="Output folder for PEM files and manifest.json.",
)
@click.option(
    "--key-type",
    type=click.Choice(["ecdsa", "rsa"]),
    default="ecdsa",
    show_default=True,
    help="Key algorithm: ECDSA P-256 or RSA 2048.",
)
@click.option(
    "--kinds",
    default=None,
    metavar="NAME[,NAME...]",
    help="Comma-separated kinds to build; all kinds if omitted.",
)
@click.option("--force", is_flag=True, help="Rebuild even if a cached build is valid.")
def build(out: Path, key_type: str, kinds: str | None, force: bool) -> None:
    """Write PEM files and manifest.json for the lab's kinds into --out."""
    names = None
    if kinds:
        names = [name.strip() for name in kinds.split(",") if name.strip()]
        unknown = [name for name in names if name not in CATALOGUE]
        if unknown:
            raise click.BadParameter(
                f"unknown kind {unknown[0]!r}; run 'certs list' for the known kinds",
                param_hint="--kinds",
            )
    try:
        lab = build_lab(out, key_type=key_type, kinds=names, force=force)
    except LabError as exc:
        raise HarnessError(str(exc)) from exc
    click.echo(
        f"built {len(lab.kinds)} kinds in {lab.directory}; "
        f"manifest {lab.manifest_path}; trust store {lab.trust_store_path}"
    )
