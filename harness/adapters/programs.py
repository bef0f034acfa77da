"""Clients run as programs: openssl s_client, curl, gnutls-cli, Node and a
user-supplied command template.

Each program gets the trust anchors only through its CA-file option, with
every default trust location turned off where the program has a switch for
it, a closed stdin and the environment of
:func:`harness.adapters.base.clean_environment`.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path

from harness.adapters.base import (
    AdapterResult,
    Completed,
    ProgramAdapter,
    short_detail,
)
from harness.adapters.hints import reasons_from_text
from harness.adapters.inprocess import is_ip_literal


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _last_line(*texts: str) -> str:
    for text in texts:
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if lines:
            return lines[-1]
    return "no output"


# Words of a line that explains a failed verification to a person; OpenSSL
# library trace lines such as "40C7...:error:0A000086:SSL routines:..." also
# contain "error:" but are recognised by their colon-separated codes.
_INFORMATIVE = re.compile(r"verif|certificate|hostname|error:", re.IGNORECASE)
_LIBRARY_TRACE = re.compile(r"^[0-9A-Fa-f]+:error:[0-9A-Fa-f]+:")
# Maximum length of the line that :func:`informative_line` returns.
MAX_INFORMATIVE = 200


def informative_line(*texts: str) -> str:
    """Return the most informative line of a failed client's output.

    The first text with any non-empty line is used. The last line that
    mentions verification, a certificate, a hostname or "error:" wins unless
    it is a library trace line; failing that, the last three non-empty lines
    are joined with " | ". The result is one line of at most
    :data:`MAX_INFORMATIVE` characters.
    """
    for text in texts:
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if not lines:
            continue
        human = [
            line
            for line in lines
            if _INFORMATIVE.search(line) and not _LIBRARY_TRACE.match(line)
        ]
        chosen = human[-1] if human else " | ".join(lines[-3:])
        line = " ".join(chosen.split())
        if len(line) > MAX_INFORMATIVE:
            return line[: MAX_INFORMATIVE - 3] + "..."
        return line
    return "no output"


class OpensslAdapter(ProgramAdapter):
    """``openssl s_client`` with ``-verify_return_error``."""

    name = "openssl"
    program = "openssl"
    debian_package = "openssl"
    description = (
        "openssl s_client -tls1_3 -verify_return_error with -verify_hostname "
        "(or -verify_ip for an IP literal), -CAfile only (-no-CApath "
        "-no-CAstore), stdin closed"
    )

    def build_argv(
        self,
        host: str,
        port: int,
        servername: str,
        cafile: Path,
        timeout: float,
        workdir: Path,
    ) -> list[str]:
        argv = ["openssl", "s_client", "-connect", _host_port(host, port), "-tls1_3"]
        if is_ip_literal(servername):
            # RFC 6066 forbids IP literals in SNI.
            argv += ["-noservername", "-verify_ip", servername.strip("[]")]
        else:
            argv += ["-servername", servername, "-verify_hostname", servername]
        argv += [
            "-verify_return_error",
            "-CAfile",
            str(cafile),
            "-no-CApath",
            "-no-CAstore",
            "-brief",
        ]
        return argv

    def classify(self, completed: Completed) -> AdapterResult:
        output = completed.stdout + completed.stderr
        # s_client prints "verify error:num=N:TEXT" for each failed check.
        match = re.search(r"verify error:num=(\d+):(.*)", output)
        # With -verify_return_error, "Verification: OK" appears only after a
        # verified handshake; a server that then resets the connection still
        # makes s_client exit non-zero.
        if "Verification: OK" in output and not match:
            return AdapterResult("accepted", "Verification: OK")
        if match:
            text = match.group(2).strip()
            return AdapterResult(
                "rejected",
                short_detail(f"certificate verify failed: {text}"),
                reasons_from_text(text),
            )
        return AdapterResult(
            "error",
            short_detail(
                f"exit {completed.returncode}: {_last_line(completed.stderr, output)}"
            ),
        )


# curl exit codes (curl 7.88, man page "EXIT CODES").
CURL_REJECTED = frozenset(
    {
        51,  # the peer's certificate or fingerprint was not OK
        60,  # peer certificate cannot be authenticated with known CA certs
        83,  # issuer check failed
        90,  # pinned public key did not match
        91,  # invalid certificate status
    }
)
# Codes that curl can only reach after the handshake: the server speaks a
# binary telemetry protocol, not HTTP, so a verified connection ends in an
# HTTP-level failure.
CURL_AFTER_HANDSHAKE = frozenset(
    {
        0,  # a reply that curl took as HTTP/0.9 or a response
        1,  # unsupported protocol, e.g. an HTTP/0.9 reply curl will not accept
        8,  # weird server reply
        16,  # HTTP/2 framing error
        18,  # partial file
        52,  # empty reply from server
        56,  # failure receiving network data
        92,  # HTTP/2 stream error
    }
)


class CurlAdapter(ProgramAdapter):
    """curl (OpenSSL backend on Debian) fetching ``https://NAME:PORT/``."""

    name = "curl"
    program = "curl"
    debian_package = "curl"
    description = (
        "curl --tlsv1.3 --cacert with an empty --capath, every connection sent "
        "to the server with --connect-to; the EMS speaks no HTTP, so after a verified "
        "handshake curl ends with an HTTP-level error such as 52 (empty reply), "
        "which counts as accepted"
    )

    def build_argv(
        self,
        host: str,
        port: int,
        servername: str,
        cafile: Path,
        timeout: float,
        workdir: Path,
    ) -> list[str]:
        # -q must come first: it stops curl from reading a .curlrc. The empty
        # --capath replaces the CA folder compiled into curl.
        argv = [
            "curl",
            "-q",
            "--silent",
            "--show-error",
            "--tlsv1.3",
            "--cacert",
            str(cafile),
            "--capath",
            str(workdir),
            "--max-time",
            f"{timeout:g}",
            "--output",
            "/dev/null",
        ]
        # "--connect-to ::HOST:PORT" sends every connection to the server,
        # whatever name the URL holds, also after curl's IDNA conversion.
        argv += ["--connect-to", f"::{_host_port(host, port)}"]
        if is_ip_literal(servername):
            address = servername.strip("[]")
            url_host = f"[{address}]" if ":" in address else address
        else:
            url_host = servername
        argv.append(f"https://{url_host}:{port}/")
        return argv

    def classify(self, completed: Completed) -> AdapterResult:
        code = completed.returncode
        # curl's own error line is "curl: (CODE) TEXT"; advice lines follow.
        match = re.search(r"^curl: \(\d+\) (.*)$", completed.stderr, re.MULTILINE)
        message = match.group(1) if match else _last_line(completed.stderr)
        detail = short_detail(f"exit {code}: {message}")
        # SSL_read errors come after the handshake; SSL_connect ones during it.
        in_handshake = re.search(r"ssl_connect|handshake|certificate", message.lower())
        if code in CURL_REJECTED or (code == 35 and "certificate" in message.lower()):
            return AdapterResult("rejected", detail, reasons_from_text(message))
        if code == 28:
            return AdapterResult("timeout", detail)
        if code in CURL_AFTER_HANDSHAKE and not in_handshake:
            return AdapterResult("accepted", detail)
        return AdapterResult("error", detail)


class GnutlsAdapter(ProgramAdapter):
    """``gnutls-cli`` limited to TLS 1.3 with a host-name check."""

    name = "gnutls"
    program = "gnutls-cli"
    debian_package = "gnutls-bin"
    # NOTE: gnutls-cli 3.7 loads the system trust store only when no
    # --x509cafile is given, so passing one replaces the defaults.
    description = (
        "gnutls-cli --x509cafile --verify-hostname NAME with priority "
        "NORMAL:-VERS-ALL:+VERS-TLS1.3 and SNI from --sni-hostname, stdin closed"
    )

    def build_argv(
        self,
        host: str,
        port: int,
        servername: str,
        cafile: Path,
        timeout: float,
        workdir: Path,
    ) -> list[str]:
        argv = [
            "gnutls-cli",
            "--x509cafile",
            str(cafile),
            "--verify-hostname",
            servername.strip("[]") if is_ip_literal(servername) else servername,
            "--priority",
            "NORMAL:-VERS-ALL:+VERS-TLS1.3",
            "-p",
            str(port),
        ]
        if is_ip_literal(servername):
            argv.append("--disable-sni")
        else:
            argv += ["--sni-hostname", servername]
        argv.append(host)
        return argv

    def classify(self, completed: Completed) -> AdapterResult:
        output = completed.stdout + "\n" + completed.stderr
        status = re.search(r"- Status: (.*)", output)
        status_text = status.group(1).strip() if status else ""
        # gnutls-cli verifies during the handshake, so a completed handshake
        # means the certificate passed, even if the server then resets the
        # connection ("Error in the pull function", exit 1).
        if "Handshake was completed" in output:
            return AdapterResult("accepted", short_detail(status_text or "trusted"))
        if (
            "NOT trusted" in status_text
            or "verification of server certificate failed" in output
        ):
            return AdapterResult(
                "rejected", short_detail(status_text), reasons_from_text(status_text)
            )
        fatal = re.search(r"\*\*\* Fatal error: (.*)", output)
        message = fatal.group(1) if fatal else _last_line(completed.stderr, output)
        return AdapterResult(
            "error", short_detail(f"exit {completed.returncode}: {message}")
        )


# Node prints one JSON line. With rejectUnauthorized false the handshake
# completes, and `authorized` with `authorizationError` carry Node's verdict
# (path validation first, then checkServerIdentity). The reference identity
# goes to tls.checkServerIdentity directly because Node sends no SNI for, and
# takes no servername of, an IP literal.
NODE_SCRIPT = r"""
const tls = require('node:tls');
const net = require('node:net');
const fs = require('node:fs');
const o = JSON.parse(process.argv[process.argv.length - 1]);
let identityError = null;
const options = {
  host: o.host, port: o.port, ca: fs.readFileSync(o.cafile),
  minVersion: 'TLSv1.3', maxVersion: 'TLSv1.3', rejectUnauthorized: false,
  checkServerIdentity: (_host, cert) => {
    const err = tls.checkServerIdentity(o.servername, cert);
    if (err) identityError = err.message;
    return err;
  },
};
if (!net.isIP(o.servername)) options.servername = o.servername;
const out = (v) => process.stdout.write(JSON.stringify(v) + '\n');
const socket = tls.connect(options, () => {
  out({handshake: true, authorized: socket.authorized,
       error: socket.authorized ? null : String(socket.authorizationError),
       message: identityError});
  socket.destroy();
});
socket.on('error', (e) => {
  out({handshake: false, authorized: false, error: e.code || null,
       message: e.message});
  process.exitCode = 2;
});
"""


class NodeAdapter(ProgramAdapter):
    """Node.js ``tls.connect`` with the default checkServerIdentity."""

    name = "node"
    program = "node"
    debian_package = "nodejs"
    description = (
        "Node.js tls.connect with ca=cafile (replacing Node's bundled roots), "
        "TLS 1.3 only, SNI for DNS names, and tls.checkServerIdentity applied "
        "to the reference identity (DNS name or IP literal)"
    )

    def build_argv(
        self,
        host: str,
        port: int,
        servername: str,
        cafile: Path,
        timeout: float,
        workdir: Path,
    ) -> list[str]:
        params = {
            "host": host,
            "port": port,
            "servername": servername.strip("[]")
            if is_ip_literal(servername)
            else servername,
            "cafile": str(cafile),
        }
        return ["node", "-e", NODE_SCRIPT, json.dumps(params)]

    def classify(self, completed: Completed) -> AdapterResult:
        line = _last_line(completed.stdout)
        try:
            verdict = json.loads(line)
        except ValueError:
            message = _last_line(completed.stderr, completed.stdout)
            return AdapterResult(
                "error", short_detail(f"exit {completed.returncode}: {message}")
            )
        if not isinstance(verdict, dict):
            return AdapterResult("error", short_detail(f"unexpected output {line!r}"))
        error = str(verdict.get("error") or "")
        message = str(verdict.get("message") or "")
        detail = short_detail(f"{error}: {message}" if message else error)
        if verdict.get("handshake") and verdict.get("authorized") is True:
            return AdapterResult("accepted", "authorized")
        if verdict.get("handshake"):
            return AdapterResult("rejected", detail, reasons_from_text(error))
        return AdapterResult("error", detail)


class CommandAdapter(ProgramAdapter):
    """A user command template; exit code 0 means the client accepted.

    The template is split like a shell would (``shlex.split``), then each
    word has ``{host}``, ``{port}``, ``{servername}`` and ``{cafile}``
    replaced, so a value never splits into several arguments. No shell runs.
    """

    name = "command"
    debian_package = ""
    description = (
        "a user-supplied command template with {host}, {port}, {servername} and "
        "{cafile}; exit code 0 means accepted, any other rejected"
    )

    def __init__(self, template: str | None = None) -> None:
        self.template = template
        self.words: list[str] = [] if template is None else split_template(template)
        self.program = self.words[0] if self.words else ""
        if template is not None:
            self.description = f"command template: {template}"

    def availability(self) -> tuple[bool, str]:
        if self.template is None:
            return False, "the command adapter needs a template, e.g. 'mytool {host}'"
        if shutil.which(self.program) is None:
            return False, f"{self.program} not found on PATH"
        return True, f"{self.program} found at {shutil.which(self.program)}"

    def build_argv(
        self,
        host: str,
        port: int,
        servername: str,
        cafile: Path,
        timeout: float,
        workdir: Path,
    ) -> list[str]:
        values = {
            "host": host,
            "port": str(port),
            "servername": servername,
            "cafile": str(cafile),
        }
        return [_fill(word, values) for word in self.words]

    def classify(self, completed: Completed) -> AdapterResult:
        if completed.returncode == 0:
            message = _last_line(completed.stderr, completed.stdout)
        else:
            message = informative_line(completed.stderr, completed.stdout)
        detail = short_detail(f"exit {completed.returncode}: {message}")
        if completed.returncode == 0:
            return AdapterResult("accepted", detail)
        return AdapterResult("rejected", detail, reasons_from_text(message))


_PLACEHOLDER = re.compile(r"\{(host|port|servername|cafile)\}")
# Any {identifier}; braces around other text (JSON, shell) are not placeholders.
_ANY_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
PLACEHOLDERS = ("host", "port", "servername", "cafile")


def split_template(template: str) -> list[str]:
    """Split a command template into words and check its placeholders.

    Raises:
        ValueError: The template does not split with ``shlex``, is empty, or
            uses a placeholder other than {host}, {port}, {servername} and
            {cafile}.
    """
    try:
        words = shlex.split(template)
    except ValueError as exc:
        raise ValueError(f"the command template does not split: {exc}") from None
    if not words:
        raise ValueError("the command template is empty")
    unknown = sorted(
        {
            match.group(1)
            for word in words
            for match in _ANY_PLACEHOLDER.finditer(word)
            if match.group(1) not in PLACEHOLDERS
        }
    )
    if unknown:
        names = ", ".join("{" + name + "}" for name in unknown)
        known = ", ".join("{" + name + "}" for name in PLACEHOLDERS)
        raise ValueError(f"unknown placeholder {names}; use only {known}")
    return words


def _fill(word: str, values: dict[str, str]) -> str:
    # Only the four known placeholders are replaced; other braces stay as
    # they are, so templates may carry JSON or shell-like text.
    return _PLACEHOLDER.sub(lambda match: values[match.group(1)], word)
