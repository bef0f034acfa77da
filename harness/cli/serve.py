"""``serve``: run a mock EMS in the foreground until SIGINT or SIGTERM."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import ipaddress
import json
import os
import signal
import tempfile
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

import click
from click.core import ParameterSource

from harness.cli import HarnessError, cli
from harness.ems.server import EmsError, EndpointRecord, MockEms
from harness.ems.settings import (
    EmsSettings,
    ImportedCertificate,
    SettingsError,
)
from harness.model import Action, PresentedCertificate
from harness.pki import CATALOGUE, Lab, LabError, build_lab
from harness.versions import Version, has_feature


def _check_ems_version(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> str | None:
    if value is None:
        return None
    try:
        Version.parse(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None
    return value


def _check_host(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> str | None:
    if value is None:
        return None
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not an IP address; give one such as 127.0.0.1 or ::1",
            ctx,
            param,
        ) from None
    return value


@cli.command()
@click.option(
    "--kind",
    metavar="KIND",
    default=None,
    help="Lab kind to import and serve, for example correct-fqdn "
    "('certs list' shows them all).",
)
@click.option(
    "--lab-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("certs"),
    show_default=True,
    help="Lab folder; built there if missing, reused if already built. With "
    "--cert from a built lab's kinds/ folder, that lab is used by default.",
)
@click.option(
    "--cert",
    "cert_path",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    metavar="CHAIN.pem",
    help="Import this PEM chain (leaf first, sent in file order) instead of a kind.",
)
@click.option(
    "--key",
    "key_path",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    metavar="KEY.pem",
    help="Unencrypted PEM private key of the --cert leaf.",
)
@click.option(
    "--ems-version",
    default=None,
    callback=_check_ems_version,
    help="EMS version to model [default: 7.0.2, or the --settings value].",
)
@click.option(
    "--use-ssl-cert/--no-use-ssl-cert",
    "use_ssl_cert",
    default=None,
    help="Toggle 'use SSL certificate for endpoint control'. Off presents the "
    "vendor certificate. [default: on when a certificate is imported and the "
    "EMS version has the setting]",
)
@click.option(
    "--profile-action",
    type=click.Choice([a.value for a in Action]),
    default=None,
    help="Invalid certificate action of the default profile [default: warn].",
)
@click.option(
    "--host",
    default=None,
    callback=_check_host,
    help="IP address to listen on [default: 127.0.0.1, or the --settings value].",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=None,
    help="TCP port; 0 picks a free one [default: 0, or the --settings value].",
)
@click.option(
    "--settings",
    "settings_path",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    metavar="FILE.toml",
    help="EMS settings file; the options above override its values.",
)
@click.option(
    "--ready-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Once listening, write JSON with host, port, trust_store, kind and "
    "reference_identity to this file; trust_store is null for a --cert chain "
    "that no lab lists. It is written under a temporary name and "
    "renamed, so it never appears half written. A file left from an earlier run "
    "is removed at start, and the file is removed again on SIGINT or SIGTERM.",
)
@click.option(
    "--allow-non-loopback",
    is_flag=True,
    help="Permit listening on an address other than 127.0.0.1 or ::1.",
)
@click.option(
    "--session-tickets",
    is_flag=True,
    help="Let clients resume sessions with TLS session tickets. Off by default: "
    "OpenSSL still sends TLS 1.3 tickets, but the server keeps no session "
    "state, so no ticket resumes a session.",
)
@click.option(
    "--telemetry-command",
    "telemetry_commands",
    multiple=True,
    metavar="NAME",
    help="Name of a telemetry COMMAND frame sent to every endpoint after "
    "ENDPOINT_INFO; repeatable [default: sync].",
)
# Former name of --telemetry-command, kept so that existing scripts still run.
@click.option("--command", "command_alias", multiple=True, hidden=True)
@click.option(
    "--handshake-timeout",
    type=click.FloatRange(min=0.01),
    default=5.0,
    show_default=True,
    help="Seconds a client may take from connecting to finishing the handshake.",
)
@click.option(
    "--idle-timeout",
    type=click.FloatRange(min=0.01),
    default=10.0,
    show_default=True,
    help="Seconds a telemetry session may go without receiving a byte.",
)
def serve(**options: Any) -> None:
    """Serve a certificate over TLS 1.3 as a mock EMS, until SIGINT or SIGTERM.

    The certificate presented follows the EMS rules: the vendor certificate
    unless the version has 'use SSL certificate for endpoint control' and it
    is on, then the imported certificate (--kind or --cert), or without one
    the built-in self-signed certificate. On exit it prints the endpoint
    records as JSON.
    """
    settings, base_dir = _settings_from_options(options)
    _check_loopback(settings.listen_address, options)
    ready_file: Path | None = options["ready_file"]
    if ready_file is not None:
        # A poller must not mistake a file from an earlier run for this one.
        _remove_ready_file(ready_file)
    lab_dir: Path = options["lab_dir"]
    cert_path: Path | None = options["cert_path"]
    source = click.get_current_context().get_parameter_source("lab_dir")
    if cert_path is not None and source is ParameterSource.DEFAULT:
        lab_dir = _lab_listing_chain(cert_path) or lab_dir
    if not (lab_dir / "manifest.json").is_file():
        # The vendor and built-in certificates come from a lab even when the
        # imported chain does not, so the message names the lab's folder.
        click.echo(
            f"building a lab in {lab_dir} for the vendor and built-in "
            "certificates (--lab-dir picks another folder)",
            err=True,
        )
    lab = _lab(lab_dir)
    commands = options["telemetry_commands"] + options["command_alias"]
    try:
        ems = MockEms.from_settings(
            settings,
            lab,
            base_dir=base_dir,
            session_tickets=options["session_tickets"],
            commands=commands or ("sync",),
            handshake_timeout=options["handshake_timeout"],
            idle_timeout=options["idle_timeout"],
            allow_non_loopback=options["allow_non_loopback"],
        )
        ems.start()
    except (EmsError, ValueError, KeyError, OSError) as exc:
        message = _message(exc, from_options=cert_path is not None)
        raise HarnessError(f"cannot start the mock EMS: {message}") from exc

    try:
        _announce(ems, settings, lab, ready_file, cert_path)
        _wait_for_signal()
    finally:
        if ready_file is not None:
            _remove_ready_file(ready_file)
        endpoints = ems.endpoints
        try:
            ems.stop()
        except EmsError as exc:
            raise HarnessError(str(exc)) from exc
    click.echo(json.dumps({"endpoints": _endpoint_records(endpoints)}, sort_keys=True))


def _endpoint_records(endpoints: dict[str, EndpointRecord]) -> list[dict[str, Any]]:
    """Return the endpoint records with ``last_seen`` as ISO 8601 UTC time.

    The server stores ``last_seen`` as a ``time.monotonic()`` reading; one
    offset to the wall clock, taken here, converts every record.
    """
    offset = time.time() - time.monotonic()
    records = []
    for endpoint in endpoints.values():
        record = dataclasses.asdict(endpoint)
        wall = dt.datetime.fromtimestamp(endpoint.last_seen + offset, dt.UTC)
        record["last_seen"] = wall.isoformat(timespec="milliseconds")
        records.append(record)
    return records


def _check_loopback(listen_address: str, options: dict[str, Any]) -> None:
    """Reject a non-loopback listen address unless --allow-non-loopback is given.

    The mock EMS applies the same rule, but its message names the Python
    argument instead of the command-line flag.
    """
    if options["allow_non_loopback"]:
        return
    try:
        loopback = ipaddress.ip_address(listen_address).is_loopback
    except ValueError:
        return  # settings validation has already rejected an invalid address
    if loopback:
        return
    message = (
        f"listen address {listen_address} is not a loopback address; pass "
        "--allow-non-loopback to listen on it"
    )
    if options["host"] is not None:
        raise click.BadParameter(message, param_hint="'--host'")
    raise HarnessError(f"{message} (listen_address is set in the settings file)")


def _remove_ready_file(ready_file: Path) -> None:
    try:
        ready_file.unlink(missing_ok=True)
    except OSError as exc:
        raise HarnessError(f"cannot remove ready file {ready_file}: {exc}") from exc


def _settings_from_options(options: dict[str, Any]) -> tuple[EmsSettings, Path | None]:
    kind, cert_path, key_path = (
        options["kind"],
        options["cert_path"],
        options["key_path"],
    )
    if kind is not None and cert_path is not None:
        raise click.UsageError("give --kind or --cert, not both")
    if (cert_path is None) != (key_path is None):
        raise click.UsageError("--cert and --key go together")
    if kind is not None and kind not in CATALOGUE:
        raise click.BadParameter(
            f"unknown kind {kind!r}; run 'certs list' for the known kinds",
            param_hint="--kind",
        )

    settings = EmsSettings(port=0)
    base_dir = None
    try:
        if options["settings_path"] is not None:
            settings = EmsSettings.load(options["settings_path"])
            base_dir = options["settings_path"].parent
        changes: dict[str, Any] = {}
        if options["ems_version"] is not None:
            changes["ems_version"] = options["ems_version"]
        if options["host"] is not None:
            changes["host"] = options["host"]
        if options["port"] is not None:
            changes["port"] = options["port"]
        if kind is not None:
            changes["imported_certificate"] = ImportedCertificate(kind=kind)
        if cert_path is not None:
            changes["imported_certificate"] = ImportedCertificate(
                chain_file=str(cert_path.resolve()), key_file=str(key_path.resolve())
            )
        if options["profile_action"] is not None:
            first = settings.profiles[0]
            action = Action(options["profile_action"])
            changes["profiles"] = (
                dataclasses.replace(first, invalid_cert_action=action),
                *settings.profiles[1:],
            )
        changes["use_ssl_certificate_for_endpoint_control"] = _toggle(
            options["use_ssl_cert"], settings, changes
        )
        if "host" in changes:
            changes["listen_address"] = changes.pop("host")
        return settings.replace(**changes), base_dir
    except SettingsError as exc:
        raise HarnessError(str(exc)) from exc
    except OSError as exc:
        raise HarnessError(f"cannot read the settings file: {exc}") from exc


def _toggle(
    requested: bool | None, settings: EmsSettings, changes: dict[str, Any]
) -> bool | None:
    """Return the toggle: as requested, else on when a certificate is imported.

    An explicit request on a version without the setting is passed through,
    so validation rejects it with its own message.
    """
    if requested is not None:
        return requested
    try:
        legacy = not has_feature(changes.get("ems_version", settings.ems_version))
    except ValueError:
        return None  # validation reports the invalid version itself
    if legacy:
        return None
    if "imported_certificate" in changes:
        return True
    return settings.use_ssl_certificate_for_endpoint_control


def _lab(directory: Path) -> Lab:
    try:
        return build_lab(directory)
    except LabError as exc:
        raise HarnessError(str(exc)) from exc


def _lab_listing_chain(cert_path: Path) -> Path | None:
    """Return the lab folder whose manifest lists ``cert_path`` as a chain.

    Only the nearest ``manifest.json`` above the file is read. An unreadable
    manifest counts as no lab, so ``serve`` falls back to ``--lab-dir``.
    """
    chain = cert_path.resolve()
    for folder in chain.parents:
        manifest = folder / "manifest.json"
        if not manifest.is_file():
            continue
        try:
            entries = json.loads(manifest.read_text()).get("kinds", [])
        except (OSError, ValueError, AttributeError):
            return None
        for entry in entries if isinstance(entries, list) else []:
            relative = entry.get("chain") if isinstance(entry, dict) else None
            if isinstance(relative, str) and (folder / relative).resolve() == chain:
                return folder
        return None
    return None


def _kind_of_chain(lab: Lab, cert_path: Path) -> str | None:
    """Return the lab kind whose chain file is ``cert_path``, if any."""
    chain = cert_path.resolve()
    for name, built in lab.kinds.items():
        if built.chain_path.resolve() == chain:
            return name
    return None


def _announce(
    ems: MockEms,
    settings: EmsSettings,
    lab: Lab,
    ready_file: Path | None,
    cert_path: Path | None = None,
) -> None:
    kind = ems.kind_name
    presented = ems.presented or PresentedCertificate.VENDOR
    from_files = presented is PresentedCertificate.IMPORTED and cert_path is not None
    trust_store: str | None = str(lab.trust_store_path)
    if from_files:
        assert cert_path is not None
        # A chain from files belongs to this lab only when the lab lists it.
        # Otherwise its issuer, and so the store clients need, is unknown.
        kind = _kind_of_chain(lab, cert_path)
        if kind is None:
            trust_store = None
    if kind is not None and kind in lab.kinds:
        reference_identity = lab.kind(kind).reference_identity
    else:
        reference_identity = settings.fqdn or settings.hostname
    host = f"[{ems.host}]" if ":" in ems.host else ems.host
    store_text = (
        f"trust store {trust_store}"
        if trust_store is not None
        else f"a trust store with the CA that issued {cert_path}"
    )
    click.echo(
        f"mock EMS {settings.ems_version} listening on {host}:{ems.port}, "
        f"presenting the {presented.value} certificate ({kind or 'from files'}); "
        f"clients need {store_text} and reference identity {reference_identity}"
    )
    if ready_file is None:
        return
    ready = {
        "host": ems.host,
        "port": ems.port,
        "trust_store": trust_store,
        "kind": kind,
        "reference_identity": reference_identity,
        "presented": presented.value,
    }
    _write_atomically(ready_file, json.dumps(ready, indent=2) + "\n")


def _write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file next to ``path``, then rename it.

    The rename is atomic on POSIX, so a reader sees either no file or all
    of it.
    """
    try:
        fd, temporary = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
        )
    except OSError as exc:
        raise HarnessError(f"cannot write ready file {path}: {exc}") from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise HarnessError(f"cannot write ready file {path}: {exc}") from exc


def _wait_for_signal() -> None:
    stop = threading.Event()

    def handle(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {
        sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        # A timeout keeps the wait interruptible on every platform.
        while not stop.wait(0.5):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# Settings of an imported certificate that --cert and --key fill in.
_OPTION_OF_SETTING = {
    "imported_certificate.chain_file": "--cert",
    "imported_certificate.key_file": "--key",
}


def _message(exc: BaseException, *, from_options: bool = False) -> str:
    """Return the text of ``exc``, naming --cert or --key when they set the file."""
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0])
    option = None
    if from_options and isinstance(exc, SettingsError):
        option = _OPTION_OF_SETTING.get(exc.setting)
    if option is not None:
        assert isinstance(exc, SettingsError)
        return f"invalid {option} {exc.value}: {exc.rule}"
    return str(exc)
