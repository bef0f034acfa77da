"""``connect``: run the reference endpoint client against one TLS 1.3 server."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from harness.assumptions import Assumptions
from harness.cli import HarnessError, cli
from harness.endpoint import (
    EndpointClient,
    MemoryFile,
    MemoryFileError,
    Observation,
    PromptInfo,
    TrustStoreError,
)
from harness.model import Action, Answer, CnFallback, OutcomeName

EXIT_CONNECTED = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_HANDSHAKE_FAILED = 3


def _split_address(address: str) -> tuple[str, int]:
    host, sep, port_text = address.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise click.BadParameter(
            f"{address!r} is not HOST:PORT (write IPv6 as [::1]:8013)",
            param_hint="HOST:PORT",
        )
    port = int(port_text)
    if not 0 < port < 65536:
        raise click.BadParameter(
            f"port {port} is not in 1..65535", param_hint="HOST:PORT"
        )
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise click.BadParameter(
            f"{address!r}: write an IPv6 address in brackets, as [::1]:8013",
            param_hint="HOST:PORT",
        )
    return host, port


def _trust_store_message(path: Path, exc: TrustStoreError) -> str:
    """Return one plain line for a trust store that failed to load.

    cryptography's parse errors carry a FAQ link and an internal error
    name, so they are replaced by what is wrong with the file.
    """
    cause = exc.__cause__
    if isinstance(cause, OSError):
        return f"cannot read trust store {path}: {cause.strerror or cause}"
    if not isinstance(cause, ValueError):
        return str(exc)
    try:
        text = path.read_bytes()
    except OSError as read_error:
        return f"cannot read trust store {path}: {read_error.strerror or read_error}"
    if b"-----BEGIN CERTIFICATE-----" not in text:
        return f"cannot read trust store {path}: no PEM certificate found"
    return (
        f"cannot read trust store {path}: a PEM certificate block is malformed "
        "or is not a valid X.509 certificate"
    )


def _interactive_prompt(info: PromptInfo) -> Answer:
    click.echo(
        f"The certificate of {info.reference_identity}:{info.port} is invalid: "
        f"{', '.join(r.value for r in info.reasons)}",
        err=True,
    )
    click.echo(f"  subject: {info.subject}", err=True)
    click.echo(f"  issuer:  {info.issuer}", err=True)
    click.echo(f"  SHA-256: {info.leaf_sha256}", err=True)
    allowed = click.confirm("Connect anyway?", default=False, err=True)
    return Answer.ALLOW if allowed else Answer.DENY


def _print_text(observation: Observation) -> None:
    click.echo(f"outcome: {observation.outcome.value}")
    if observation.reasons:
        click.echo(f"reasons: {', '.join(r.value for r in observation.reasons)}")
    if observation.action is not None and observation.action_source is not None:
        click.echo(
            f"action: {observation.action.value} "
            f"(from {observation.action_source.value})"
        )
    if observation.tls_version:
        click.echo(f"tls: {observation.tls_version}")
    if observation.leaf_sha256:
        click.echo(f"leaf sha256: {observation.leaf_sha256}")
    if observation.error:
        click.echo(f"error: {observation.error}")
    telemetry = observation.telemetry
    if telemetry is not None:
        status = "completed" if telemetry.completed else f"failed: {telemetry.error}"
        click.echo(f"telemetry: {status}")


@cli.command("connect")
@click.argument("address", metavar="HOST:PORT")
@click.option(
    "--servername",
    default=None,
    help="Reference identity (the configured EMS address), also sent as SNI; "
    "HOST if omitted.",
)
@click.option(
    "--trust-store",
    "trust_store",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="PEM bundle of the simulated OS trust store.",
)
@click.option(
    "--client-version",
    default="7.0.2",
    show_default=True,
    help="Client version; versions without standards validation only check "
    "the subject CN.",
)
@click.option(
    "--action",
    type=click.Choice([a.value for a in Action]),
    default=None,
    help="Installer invalid certificate action. A profile received earlier "
    "(stored in --memory) takes priority; warn is the default.",
)
@click.option(
    "--answer",
    type=click.Choice([a.value for a in Answer]),
    default=None,
    help="Answer to the warning prompt. Without it the client asks on a "
    "terminal, and refuses when stdin is not a terminal.",
)
@click.option(
    "--memory",
    "memory",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="JSON file of remembered certificates and the received profile; "
    "kept in memory for this run if omitted.",
)
@click.option(
    "--cn-fallback",
    type=click.Choice([m.value for m in CnFallback]),
    default=CnFallback.WHEN_NO_SAN.value,
    show_default=True,
    help="When the subject CN counts as a presented name.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=10.0,
    show_default=True,
    help="Seconds for the TCP connect, the handshake and each telemetry step.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def connect(
    address: str,
    servername: str | None,
    trust_store: Path,
    client_version: str,
    action: str | None,
    answer: str | None,
    memory: Path | None,
    cn_fallback: str,
    timeout: float,
    as_json: bool,
) -> int:
    """Connect the reference endpoint client to HOST:PORT over TLS 1.3.

    \b
    Exit codes:
      0  connected (valid, legacy pass, allowed or remembered)
      1  refused (deny, denied prompt, legacy fail) or an error in a file
      2  usage error
      3  handshake failed or server unreachable
    """
    host, port = _split_address(address)
    if answer is not None:
        fixed = Answer(answer)
        prompt = lambda info: fixed  # noqa: E731
    elif sys.stdin.isatty():
        prompt = _interactive_prompt
    else:
        prompt = None

    try:
        if memory is not None:
            # Read it before connecting, so that a missing folder or a corrupt
            # file fails before any traffic instead of after the handshake.
            MemoryFile(memory).load()
        client = EndpointClient(
            client_version,
            trust_store,
            installer_action=None if action is None else Action(action),
            memory_path=memory,
            cn_fallback=CnFallback(cn_fallback),
            assumptions=Assumptions(),
            prompt=prompt,
            timeout=timeout,
        )
        observation = client.connect(host, port, servername=servername)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--client-version") from exc
    except TrustStoreError as exc:
        raise HarnessError(_trust_store_message(trust_store, exc)) from exc
    except MemoryFileError as exc:
        raise HarnessError(str(exc)) from exc

    if as_json:
        click.echo(json.dumps(observation.to_json(), ensure_ascii=False))
    else:
        _print_text(observation)
    if (
        observation.outcome is OutcomeName.REFUSED_PROMPT_DENIED
        and not observation.prompted
    ):
        click.echo(
            "refused: the certificate is invalid, the action is warn and there is "
            "no terminal to ask on; pass --answer allow or --answer deny",
            err=True,
        )
    if observation.outcome is OutcomeName.HANDSHAKE_FAILED:
        return EXIT_HANDSHAKE_FAILED
    return EXIT_CONNECTED if observation.connected else EXIT_REFUSED
