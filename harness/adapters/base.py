"""The adapter interface, its result type and the subprocess runner.

An adapter drives one real TLS client through a single TLS 1.3 handshake
against a server and reports whether that client accepted the server's
certificate for a reference identity. Adapters decide nothing themselves:
the status comes from the client's own verdict (exit code, error text or
library exception), and the reason hints are read from that verdict.
"""

from __future__ import annotations

import abc
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from harness.model import Reason

logger = logging.getLogger(__name__)

Status = Literal["accepted", "rejected", "error", "timeout", "skipped"]
STATUSES: tuple[Status, ...] = ("accepted", "rejected", "error", "timeout", "skipped")

# Maximum length of ``AdapterResult.detail``, in characters.
MAX_DETAIL = 300


@dataclass(frozen=True)
class AdapterResult:
    """The outcome of one client's connection attempt.

    Attributes:
        status: ``accepted`` (handshake done and the certificate verified),
            ``rejected`` (the client rejected the certificate, or rejected
            the reference identity as invalid before connecting), ``error``
            (anything else went wrong, e.g. connection refused or a protocol
            failure), ``timeout`` (no verdict within the timeout; a spawned
            client is killed) or ``skipped`` (the client is not available).
        detail: The client's own message, shortened to one line.
        reasons_hint: The :class:`~harness.model.Reason` values that the
            client's error can stand for. Best effort, and may be empty.
        duration: Wall-clock seconds the attempt took.
        command: The argv that was run, or a pseudo-argv for an in-process
            client, for reports.
    """

    status: Status
    detail: str
    reasons_hint: tuple[Reason, ...] = ()
    duration: float = 0.0
    command: tuple[str, ...] = ()


def short_detail(text: str) -> str:
    """Return ``text`` as one line of at most :data:`MAX_DETAIL` characters."""
    line = " ".join(text.split())
    if len(line) > MAX_DETAIL:
        return line[: MAX_DETAIL - 3] + "..."
    return line


def clean_environment() -> dict[str, str]:
    """Return the environment for a client process.

    Only ``PATH`` is inherited. The locale is ``C.UTF-8``, so that error
    texts are the English ones the adapters parse while clients that convert
    internationalized names (curl through libidn2) still read UTF-8. Trust
    settings of the caller (``SSL_CERT_FILE``, ``SSL_CERT_DIR``,
    ``CURL_CA_BUNDLE``, ``NODE_EXTRA_CA_CERTS``, ``NODE_OPTIONS`` and the
    like) never reach the client, and without ``HOME`` no per-user
    configuration file is found.
    """
    return {
        "PATH": os.environ.get("PATH", os.defpath),
        "LC_ALL": "C.UTF-8",
        "LANG": "C.UTF-8",
    }


@dataclass(frozen=True)
class Completed:
    """A finished client process: exit code and decoded output."""

    returncode: int
    stdout: str
    stderr: str


class ClientTimeout(Exception):
    """The client process did not finish within its timeout and was killed."""


def run_client(argv: Sequence[str], timeout: float) -> Completed:
    """Run ``argv`` with stdin closed, a clean environment and a timeout.

    The process gets its own session, so on timeout the whole process group
    is killed, including any helper it started.

    Raises:
        ClientTimeout: the process ran for longer than ``timeout`` seconds.
        OSError: the program could not be started.
    """
    process = subprocess.Popen(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=clean_environment(),
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise ClientTimeout(
            f"{argv[0]} gave no verdict within {timeout:g} s and was killed"
        ) from None
    return Completed(
        process.returncode,
        stdout.decode("utf-8", "replace"),
        stderr.decode("utf-8", "replace"),
    )


class Adapter(abc.ABC):
    """One real TLS client, driven through a single handshake per check.

    Subclasses set :attr:`name` and :attr:`description` and implement
    :meth:`availability` and :meth:`_check`.
    """

    name: str
    description: str

    @abc.abstractmethod
    def availability(self) -> tuple[bool, str]:
        """Return whether the client can run here, and if not, how to get it."""

    def check(
        self,
        *,
        host: str,
        port: int,
        servername: str,
        cafile: Path,
        timeout: float = 10.0,
    ) -> AdapterResult:
        """Connect to ``host:port`` and report the client's verdict.

        Args:
            host: Address to connect to (an IP literal on this machine).
            port: TCP port of the server.
            servername: Reference identity: the DNS name (sent as SNI where
                the client does so) or IP literal the certificate must match.
            cafile: PEM bundle of the trust anchors; the client trusts
                nothing else.
            timeout: Seconds before the attempt counts as a ``timeout``.

        Returns:
            The result; a missing client gives status ``skipped``.
        """
        available, why = self.availability()
        if not available:
            return AdapterResult("skipped", why)
        started = time.monotonic()
        result = self._check(host, port, servername, Path(cafile), timeout)
        duration = time.monotonic() - started
        logger.debug(
            "%s %s:%s as %r: %s (%s)",
            self.name,
            host,
            port,
            servername,
            result.status,
            result.detail,
        )
        return AdapterResult(
            result.status,
            result.detail,
            result.reasons_hint,
            duration,
            result.command,
        )

    @abc.abstractmethod
    def _check(
        self, host: str, port: int, servername: str, cafile: Path, timeout: float
    ) -> AdapterResult:
        """Run one attempt; :meth:`check` fills in ``duration``."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


class ProgramAdapter(Adapter):
    """An adapter that runs an external client program once per check."""

    program: str
    debian_package: str

    def availability(self) -> tuple[bool, str]:
        if shutil.which(self.program) is None:
            return (
                False,
                f"{self.program} not found; install Debian package "
                f"{self.debian_package}",
            )
        return True, f"{self.program} found at {shutil.which(self.program)}"

    @abc.abstractmethod
    def build_argv(
        self,
        host: str,
        port: int,
        servername: str,
        cafile: Path,
        timeout: float,
        workdir: Path,
    ) -> list[str]:
        """Return the client's argv for one attempt.

        ``workdir`` is an empty private folder that lives for the attempt.
        """

    @abc.abstractmethod
    def classify(self, completed: Completed) -> AdapterResult:
        """Turn the finished process into a result (without ``command``)."""

    def _check(
        self, host: str, port: int, servername: str, cafile: Path, timeout: float
    ) -> AdapterResult:
        with tempfile.TemporaryDirectory(prefix="harness-client-") as workdir:
            argv = self.build_argv(
                host, port, servername, cafile, timeout, Path(workdir)
            )
            command = tuple(argv)
            try:
                completed = run_client(argv, timeout)
            except ClientTimeout as exc:
                return AdapterResult("timeout", str(exc), command=command)
            except OSError as exc:
                return AdapterResult(
                    "error", f"cannot run {argv[0]}: {exc}", command=command
                )
        result = self.classify(completed)
        return AdapterResult(
            result.status, result.detail, result.reasons_hint, command=command
        )
