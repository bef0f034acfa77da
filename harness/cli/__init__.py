"""Command-line interface: ``ems-harness`` and ``python -m harness``.

Every command lives in its own module of this package and registers itself
on :data:`cli`. :func:`main` runs the group in-process and turns usage errors
and :class:`HarnessError` into one line on stderr and a non-zero exit code.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from typing import Any

import click

from harness import __version__

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class HarnessError(click.ClickException):
    """An error the user can fix; printed as one line, exit code 1."""

    exit_code = EXIT_FAILED


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ems-harness")
@click.option(
    "-v",
    "--verbose",
    count=True,
    help="Log more to stderr: once for INFO, twice for DEBUG.",
)
def cli(verbose: int) -> None:
    """Test harness for the certificate checks of endpoint-control clients.

    Build a certificate lab, serve it from mock EMS servers over TLS 1.3,
    connect clients to it and compare what they do with what the
    specification requires.
    """
    level = logging.WARNING
    if verbose == 1:
        level = logging.INFO
    elif verbose >= 2:
        level = logging.DEBUG
    logging.basicConfig(
        level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )


def _register_commands() -> None:
    # Imported for their side effect: each module adds its commands to ``cli``.
    from harness.cli import (
        certs,  # noqa: F401
        connect,  # noqa: F401
        fuzz,  # noqa: F401
        run,  # noqa: F401
        serve,  # noqa: F401
        simulate,  # noqa: F401
    )


# click 8.2 and later raise this usage error for a group called without a
# command, while click 8.1 prints the help and exits instead.
_NO_ARGS_IS_HELP: Any = getattr(click.exceptions, "NoArgsIsHelpError", ())


def _with_help_hint(exc: click.UsageError) -> str:
    """Return the message of ``exc`` followed by click's hint to run --help."""
    message = exc.format_message().rstrip()
    if exc.ctx is None:
        command = "ems-harness"
        help_options = ["--help"]
    else:
        command = exc.ctx.command_path
        help_options = exc.ctx.help_option_names
    long_options = [name for name in help_options if name.startswith("--")]
    help_option = (long_options or help_options or ["--help"])[0]
    separator = " " if message.endswith((".", "!", "?")) else ". "
    return f"{message}{separator}Try '{command} {help_option}' for help."


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI with ``argv`` (``sys.argv[1:]`` if omitted); return the code."""
    _register_commands()
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        result = cli.main(args=args, prog_name="ems-harness", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.Abort:
        click.echo("Aborted.", err=True)
        return 130
    except _NO_ARGS_IS_HELP as exc:
        # A group called without a command raises this with its help as the message.
        exc.show()
        return int(exc.exit_code)
    except click.UsageError as exc:
        # One line like every other error, ending with the --help hint that
        # click's own usage output carries.
        click.echo(f"Error: {_with_help_hint(exc)}", err=True)
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    return int(result) if isinstance(result, int) else EXIT_OK


def console_main() -> None:
    """Entry point of the ``ems-harness`` console script."""
    sys.exit(main())
