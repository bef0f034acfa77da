"""``certs list`` and ``certs build``: the certificate lab from the shell."""

from __future__ import annotations

import errno
import json
from pathlib import Path
from typing import Any

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


class _FolderPath(click.Path):
    """A folder path that rejects an empty value and a regular file.

    ``click.Path`` turns ``''`` into ``Path('.')``, so without this check an
    empty value writes into the current folder.
    """

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> Any:
        if isinstance(value, str) and not value.strip():
            self.fail(
                f"{value!r} is empty; give a folder path, for example 'certs', "
                "or omit the option for the default",
                param,
                ctx,
            )
        # click.Path rejects a file too, but its message gives no next step.
        if isinstance(value, str) and Path(value).exists() and not Path(value).is_dir():
            self.fail(
                f"{value!r} is a file, not a folder; give the path of a folder, "
                "existing or not",
                param,
                ctx,
            )
        return super().convert(value, param, ctx)


@certs.command("build")
@click.option(
    "--out",
    "out",
    type=_FolderPath(file_okay=False, path_type=Path),
    default=Path("certs"),
    show_default=True,
    help="Output folder for PEM files and manifest.json.",
)
@click.option(
    "--key-type",
    type=click.Choice(["ecdsa", "rsa"], case_sensitive=False),
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
    if kinds is not None:
        names = [name.strip() for name in kinds.split(",") if name.strip()]
        if not names:
            raise click.BadParameter(
                f"{kinds!r} names no kind; give one or more kind names separated "
                "by commas ('certs list' shows them), or omit --kinds for all kinds",
                param_hint="'--kinds'",
            )
        unknown = [name for name in names if name not in CATALOGUE]
        if unknown:
            raise click.BadParameter(
                f"unknown kind {unknown[0]!r}; run 'certs list' for the known kinds",
                param_hint="'--kinds'",
            )
    before = _manifest_stamp(out)
    try:
        lab = build_lab(out, key_type=key_type, kinds=names, force=force)
    except LabError as exc:
        raise HarnessError(_lab_error_message(exc, out)) from exc
    count = len(lab.kinds)
    kinds_text = f"{count} {'kind' if count == 1 else 'kinds'}"
    if before is not None and _manifest_stamp(out) == before:
        # build_lab returned the cached build, which may list more kinds.
        done = (
            f"reused the build from {lab.built_at.isoformat()} with {kinds_text} "
            "(--force rebuilds it)"
        )
    else:
        done = f"built {kinds_text}"
    click.echo(
        f"{done} in {lab.directory}; "
        f"manifest {lab.manifest_path}; trust store {lab.trust_store_path}"
    )


def _manifest_stamp(out: Path) -> tuple[int, int] | None:
    """Return the inode and modification time of --out's manifest, if any."""
    try:
        info = (out / "manifest.json").stat()
    except OSError:
        return None
    return info.st_ino, info.st_mtime_ns


def _lab_error_message(exc: LabError, out: Path) -> str:
    """Return the message for a failed build, in plain words when a file failed."""
    cause = exc.__cause__
    if not isinstance(cause, OSError):
        return str(exc)
    folder = out.resolve()
    failed = Path(cause.filename) if isinstance(cause.filename, str) else folder
    if cause.errno == errno.ENOTDIR:
        blocker = _first_file_in(failed)
        reason = (
            f"{blocker} is a file, not a folder"
            if blocker is not None
            else f"a part of {failed} is a file, not a folder"
        )
    elif cause.strerror:
        reason = f"{cause.strerror.lower()} on {failed}"
    else:
        reason = str(cause)
    return (
        f"cannot create or write the lab folder {folder}: {reason}; "
        "choose an --out folder that can be created and written"
    )


def _first_file_in(path: Path) -> Path | None:
    """Return the first part of ``path``, from the root down, that is not a folder."""
    for part in reversed([path, *path.parents]):
        if part.exists() and not part.is_dir():
            return part
    return None
