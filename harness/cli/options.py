"""Options that several commands share."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from click.core import ParameterSource

_Command = TypeVar("_Command", bound=Callable[..., Any])


def lab_dir_options(help_text: str) -> Callable[[_Command], _Command]:
    """Add ``--lab-dir`` and its hidden former name ``--lab`` to a command.

    The command receives ``lab_dir`` and ``lab_alias``; pass both to
    :func:`resolve_lab_alias`.
    """

    def decorate(command: _Command) -> _Command:
        # Former name of --lab-dir, kept so that existing scripts still run.
        command = click.option(
            "--lab",
            "lab_alias",
            type=click.Path(file_okay=False, path_type=Path),
            default=None,
            hidden=True,
        )(command)
        return click.option(
            "--lab-dir",
            type=click.Path(file_okay=False, path_type=Path),
            default=Path("certs"),
            show_default=True,
            help=help_text,
        )(command)

    return decorate


def resolve_lab_alias(lab_dir: Path, lab_alias: Path | None) -> Path:
    """Return the lab folder from ``--lab-dir`` or its former name ``--lab``.

    Raises:
        click.UsageError: both options were given.
    """
    if lab_alias is None:
        return lab_dir
    source = click.get_current_context().get_parameter_source("lab_dir")
    if source is ParameterSource.COMMANDLINE:
        raise click.UsageError("give --lab-dir only; --lab is its former name")
    return lab_alias
