"""Regression cases from real-world certificate validation bugs, kept as data.

Each file under ``fixtures/regressions/`` is one TOML case (the format is
documented in ``docs/regressions.md``). A case is either

* an *identity or chain* case: one leaf, given as a catalogue kind or as an
  inline leaf spec, a reference identity, and the reasons the certificate is
  invalid under every ``cn_fallback`` mode; or
* a *scripted* case (families 14 and 15): named certificates and a sequence
  of connection steps, each with the client's action, the user's answer and
  whether the client must prompt and connect.

Loading checks every case against the oracle (:mod:`harness.oracle`): a file
whose expected reasons or step outcomes disagree with the behaviour
specification is invalid, so the data cannot drift from the rules. Running a
case serves the leaf from a :class:`~harness.ems.server.MockEms` over real
TLS 1.3 to the reference client or to a real-client adapter.

Inline leaves are issued fresh at run time, and their validity windows count
from the moment of issue, so a leaf that becomes valid in sixty seconds is
still not valid when the client connects.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
import tomllib
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from cryptography import x509
from cryptography.x509.oid import NameOID

from harness.adapters import Adapter, AdapterResult, lookup_deviation
from harness.adapters.base import Status
from harness.adapters.deviations import HOSTNAME_CHECKERS
from harness.ems.server import ConnectionRecord, MockEms
from harness.endpoint import EndpointClient, Observation, PromptInfo
from harness.model import (
    Action,
    ActionSource,
    Answer,
    CnFallback,
    OutcomeName,
    Reason,
    sorted_reasons,
)
from harness.oracle.decision import Remembered, Scenario, expected_outcome
from harness.oracle.standards import expected_reasons
from harness.pki import CATALOGUE, Lab, LeafSpec
from harness.pki.kinds import EMS_FQDN, TRUSTME_EKU

logger = logging.getLogger(__name__)

REGRESSIONS_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "regressions"
FAMILIES = range(1, 16)
SCRIPTED_FAMILIES = frozenset({14, 15})
CLIENT_VERSION = "7.0.2"
EMS_VERSION = "7.0.2"

_LEAF_FIELDS = frozenset(
    {
        "common_names",
        "dns_names",
        "ip_addresses",
        "emails",
        "empty_subject",
        "san_extension",
        "issuer",
        "chain",
        "window",
        "eku",
    }
)
_TOP_FIELDS = frozenset(
    {"family", "title", "description", "input", "expected"}
    | {"reference_identity", "certificates", "steps"}
)
_STEP_FIELDS = frozenset(
    {
        "certificate",
        "server",
        "reference_identity",
        "action",
        "answer",
        "restart",
        "at",
        "expect_prompted",
        "expect_connected",
        "expect_app_bytes",
    }
)
# How long a step waits for application bytes that must not arrive. The
# reference client sends REGISTER right after its decision, so bytes sent
# too early would arrive well within this time on loopback.
_QUIET_WAIT = 0.3
# Highest ``at`` a step may have, so a script stays bounded in time.
MAX_STEP_AT = 30.0


class RegressionCaseError(ValueError):
    """A case file is invalid; the message names the file and the field."""


class RegressionRunError(RuntimeError):
    """A case could not be set up as declared."""


@dataclass(frozen=True)
class Step:
    """One connection of a scripted case.

    Attributes:
        certificate: Name of the certificate the server presents.
        server: Name of the server (one port each) the client connects to.
        reference_identity: The EMS address the client is configured with.
        action: The client's invalid certificate action.
        answer: The user's answer if the client prompts.
        restart: Start a new client process on the same remembered-certificate
            file before this step.
        at: Seconds after the certificates were issued before the step runs.
        expect_prompted: Whether the client must prompt.
        expect_connected: Whether the client must connect.
    """

    certificate: str
    server: str
    reference_identity: str
    action: Action
    answer: Answer | None
    restart: bool
    at: float
    expect_prompted: bool
    expect_connected: bool


@dataclass(frozen=True)
class RegressionCase:
    """One regression case, checked against the oracle when loaded.

    Attributes:
        name: The file name without ``.toml``; the case id.
        path: The file it came from.
        family: Number of the bug family (1 to 15).
        title: The family's title.
        description: The real-world bug class, in a few sentences.
        kind: The catalogue kind, or ``None`` for inline leaves.
        leaf: The declared leaf (the kind's, or the inline spec).
        reference_identity: The EMS address the client connects to.
        expected: Reasons per ``cn_fallback`` mode; empty for scripted cases.
        certificates: Named leaves of a scripted case.
        steps: The connections of a scripted case, in order.
    """

    name: str
    path: Path
    family: int
    title: str
    description: str
    kind: str | None
    leaf: LeafSpec
    reference_identity: str
    expected: Mapping[CnFallback, frozenset[Reason]] = field(default_factory=dict)
    certificates: Mapping[str, LeafSpec] = field(default_factory=dict)
    steps: tuple[Step, ...] = ()

    @property
    def scripted(self) -> bool:
        """Whether this is a scripted case (a sequence of connections)."""
        return bool(self.steps)

    def expected_status(self, mode: CnFallback) -> Status:
        """Return the standards verdict a real client should give under ``mode``."""
        return "rejected" if self.expected[CnFallback(mode)] else "accepted"


# -- parsing -------------------------------------------------------------------


class _Fields:
    """Typed access to one TOML table, with errors that name file and field."""

    def __init__(self, path: Path, prefix: str, table: object) -> None:
        self.path = path
        self.prefix = prefix
        if not isinstance(table, dict):
            self.fail("", f"expected a table, got {_type_name(table)}")
        self.table: dict[str, Any] = dict(table)

    def where(self, key: str) -> str:
        return f"{self.prefix}.{key}" if self.prefix and key else self.prefix or key

    def fail(self, key: str, message: str) -> NoReturn:
        raise RegressionCaseError(f"{self.path.name}: {self.where(key)}: {message}")

    def allow_only(self, allowed: frozenset[str]) -> None:
        for key in self.table:
            if key not in allowed:
                self.fail(key, f"unknown field; allowed: {', '.join(sorted(allowed))}")

    def get(self, key: str, expected: type, default: Any = ...) -> Any:
        if key not in self.table:
            if default is ...:
                self.fail(key, "missing")
            return default
        value = self.table[key]
        # bool is a subclass of int; a TOML boolean is never a number here.
        wrong_bool = isinstance(value, bool) and expected is not bool
        if wrong_bool or not isinstance(value, expected):
            self.fail(key, f"expected {expected.__name__}, got {_type_name(value)}")
        return value

    def strings(self, key: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        values = self.get(key, list, list(default))
        for value in values:
            if not isinstance(value, str):
                self.fail(key, f"expected strings, got {_type_name(value)}")
        return tuple(values)

    def number(self, key: str, default: float) -> float:
        value = self.table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(key, f"expected a number, got {_type_name(value)}")
        return float(value)


_TOML_TYPE_NAMES: dict[type, str] = {dict: "table", list: "array", str: "string"}


def _type_name(value: object) -> str:
    return _TOML_TYPE_NAMES.get(type(value), type(value).__name__)


def _leaf_spec(fields: _Fields) -> LeafSpec:
    """Build a LeafSpec from an inline table; windows are seconds from issue."""
    fields.allow_only(_LEAF_FIELDS)
    window = fields.get("window", list, [-86400, 365 * 86400])
    if len(window) != 2 or not all(
        isinstance(s, int) and not isinstance(s, bool) for s in window
    ):
        fields.fail("window", f"expected two integers (seconds), got {window!r}")
    eku: tuple[str, ...] | None = TRUSTME_EKU
    if "eku" in fields.table:
        eku_value = fields.table["eku"]
        # An empty array means "no extendedKeyUsage extension at all".
        eku = fields.strings("eku") or None
        if eku_value == []:
            eku = None
    try:
        return LeafSpec(
            common_names=fields.strings("common_names"),
            empty_subject=fields.get("empty_subject", bool, False),
            dns_names=fields.strings("dns_names"),
            ip_addresses=fields.strings("ip_addresses"),
            emails=fields.strings("emails"),
            san_extension=fields.get("san_extension", bool, True),
            issuer=fields.get("issuer", str, "public-intermediate"),
            chain=fields.strings("chain", ("public-intermediate",)),
            window=(dt.timedelta(seconds=window[0]), dt.timedelta(seconds=window[1])),
            eku=eku,
        )
    except ValueError as exc:
        fields.fail("", f"invalid leaf: {exc}")


def _certificate(fields: _Fields) -> tuple[str | None, LeafSpec]:
    """Return ``(kind, leaf)`` for a table holding ``kind`` or leaf fields."""
    if "kind" not in fields.table:
        return None, _leaf_spec(fields)
    fields.allow_only(frozenset({"kind"}))
    kind = fields.get("kind", str)
    if kind not in CATALOGUE:
        fields.fail("kind", f"unknown catalogue kind {kind!r}")
    return kind, CATALOGUE[kind].leaf


def _reasons(fields: _Fields, key: str) -> frozenset[Reason]:
    if key not in fields.table:
        fields.fail(key, "missing")
    reasons = set()
    for text in fields.strings(key):
        try:
            reasons.add(Reason(text))
        except ValueError:
            known = ", ".join(r.value for r in Reason)
            fields.fail(key, f"unknown reason {text!r}; known reasons: {known}")
    return frozenset(reasons)


def _oracle_time() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _parse_identity_case(top: _Fields, base: dict[str, Any]) -> RegressionCase:
    path = top.path
    source = _Fields(path, "input", top.get("input", dict))
    kind: str | None
    if "kind" in source.table:
        source.allow_only(frozenset({"kind"}))
        kind, leaf = _certificate(source)
        assert kind is not None
        reference = CATALOGUE[kind].reference_identity
    else:
        source.allow_only(frozenset({"leaf", "reference_identity"}))
        reference = source.get("reference_identity", str)
        kind = None
        leaf = _leaf_spec(_Fields(path, "input.leaf", source.get("leaf", dict)))

    expected_fields = _Fields(path, "expected", top.get("expected", dict))
    expected_fields.allow_only(frozenset(m.value for m in CnFallback))
    expected = {mode: _reasons(expected_fields, mode.value) for mode in CnFallback}

    # The data must agree with the oracle, or it is an error.
    now = _oracle_time()
    for mode, reasons in expected.items():
        right = expected_reasons(leaf, reference, mode, now, now)
        if reasons != right:
            expected_fields.fail(
                mode.value,
                f"expected reasons {_names(reasons)} disagree with the oracle, "
                f"which gives {_names(right)}",
            )
    return RegressionCase(
        **base, kind=kind, leaf=leaf, reference_identity=reference, expected=expected
    )


def _names(reasons: frozenset[Reason]) -> str:
    return "[" + ", ".join(r.value for r in sorted_reasons(reasons)) + "]"


def _parse_step(
    fields: _Fields, names: Mapping[str, LeafSpec], default_ref: str
) -> Step:
    fields.allow_only(_STEP_FIELDS)
    certificate = fields.get("certificate", str)
    if certificate not in names:
        fields.fail("certificate", f"no certificate named {certificate!r}")
    try:
        action = Action(fields.get("action", str))
    except ValueError:
        fields.fail("action", "expected allow, warn or deny")
    answer_text = fields.get("answer", str, None)
    try:
        answer = None if answer_text is None else Answer(answer_text)
    except ValueError:
        fields.fail("answer", "expected allow or deny")
    at = fields.number("at", 0.0)
    if not 0 <= at <= MAX_STEP_AT:
        fields.fail("at", f"expected 0 to {MAX_STEP_AT:g} seconds, got {at:g}")
    step = Step(
        certificate=certificate,
        server=fields.get("server", str, "a"),
        reference_identity=fields.get("reference_identity", str, default_ref),
        action=action,
        answer=answer,
        restart=fields.get("restart", bool, False),
        at=at,
        expect_prompted=fields.get("expect_prompted", bool),
        expect_connected=fields.get("expect_connected", bool),
    )
    # No application byte may leave before the decision or after a refusal,
    # and a connected client always starts its telemetry session.
    app_bytes = fields.get("expect_app_bytes", bool, step.expect_connected)
    if app_bytes != step.expect_connected:
        fields.fail(
            "expect_app_bytes",
            "must equal expect_connected: a client sends application data "
            "exactly when it connects",
        )
    return step


def _memory_key(reference: str, server: str) -> tuple[str, str]:
    name = reference[:-1] if reference.endswith(".") else reference
    return name.lower(), server


def _check_script(
    top: _Fields, certificates: Mapping[str, LeafSpec], steps: list[Step]
) -> None:
    """Walk the steps through the oracle's decision table, tracking memory."""
    issued_at = _oracle_time()
    memory: dict[tuple[str, str], tuple[str, frozenset[Reason]]] = {}
    for index, step in enumerate(steps):
        now = issued_at + dt.timedelta(seconds=step.at)
        leaf = certificates[step.certificate]
        reasons = expected_reasons(
            leaf, step.reference_identity, CnFallback.WHEN_NO_SAN, issued_at, now
        )
        key = _memory_key(step.reference_identity, step.server)
        entry = memory.get(key)
        if entry is None:
            remembered = Remembered.NONE
        elif entry[0] != step.certificate:
            remembered = Remembered.OTHER_LEAF
        elif reasons <= entry[1]:
            remembered = Remembered.THIS_LEAF
        else:
            remembered = Remembered.THIS_LEAF_FEWER_REASONS
        scenario = Scenario.from_leaf(
            leaf,
            step.reference_identity,
            name=step.certificate.replace("_", "-"),
            ems_version=EMS_VERSION,
            use_ssl_cert=True,
            client_version=CLIENT_VERSION,
            action=step.action,
            action_source=ActionSource.PROFILE,
            answer=step.answer or Answer.DENY,
            remembered=remembered,
            built_at=issued_at,
            now=now,
        )
        where = f"steps[{index}]"
        if step.answer is None and _prompts(scenario):
            top.fail(f"{where}.answer", "missing, and the client prompts here")
        outcome = expected_outcome(scenario)
        for attribute, declared, right in (
            ("expect_prompted", step.expect_prompted, outcome.prompted),
            ("expect_connected", step.expect_connected, outcome.connected),
        ):
            if declared != right:
                top.fail(
                    f"{where}.{attribute}",
                    f"{declared} disagrees with the oracle, which gives {right} "
                    f"({outcome.outcome.value}, reasons {_names(reasons)})",
                )
        if outcome.outcome is OutcomeName.CONNECTED_PROMPT_ALLOWED:
            memory[key] = (step.certificate, reasons)


def _prompts(scenario: Scenario) -> bool:
    """Return whether the oracle has the client prompt in ``scenario``."""
    return expected_outcome(scenario).prompted


def _parse_scripted_case(top: _Fields, base: dict[str, Any]) -> RegressionCase:
    path = top.path
    reference = top.get("reference_identity", str, EMS_FQDN)
    table = _Fields(path, "certificates", top.get("certificates", dict))
    certificates: dict[str, LeafSpec] = {}
    for name in table.table:
        _, certificates[name] = _certificate(
            _Fields(path, f"certificates.{name}", table.table[name])
        )
    if not certificates:
        table.fail("", "needs at least one certificate")

    raw_steps = top.get("steps", list)
    if not raw_steps:
        top.fail("steps", "needs at least one step")
    steps = [
        _parse_step(_Fields(path, f"steps[{i}]", raw), certificates, reference)
        for i, raw in enumerate(raw_steps)
    ]
    for index in range(1, len(steps)):
        if steps[index].at < steps[index - 1].at:
            top.fail(f"steps[{index}].at", "steps must be in time order")
    _check_script(top, certificates, steps)

    first = certificates[steps[0].certificate]
    return RegressionCase(
        **base,
        kind=None,
        leaf=first,
        reference_identity=reference,
        certificates=certificates,
        steps=tuple(steps),
    )


def parse_case(path: Path, text: str) -> RegressionCase:
    """Parse and check one case file's text.

    Raises:
        RegressionCaseError: invalid TOML, a missing or malformed field, or
            data that disagrees with the oracle. The message is one line.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RegressionCaseError(f"{path.name}: invalid TOML: {exc}") from None
    top = _Fields(path, "", data)
    top.allow_only(_TOP_FIELDS)
    family = top.get("family", int)
    if family not in FAMILIES:
        top.fail("family", f"expected 1 to 15, got {family}")
    base = {
        "name": path.stem,
        "path": path,
        "family": family,
        "title": top.get("title", str),
        "description": " ".join(top.get("description", str).split()),
    }
    if not base["description"]:
        top.fail("description", "must not be empty")

    if family in SCRIPTED_FAMILIES:
        for key in ("input", "expected"):
            if key in top.table:
                top.fail(key, f"family {family} cases use certificates and steps")
        return _parse_scripted_case(top, base)
    for key in ("certificates", "steps", "reference_identity"):
        if key in top.table:
            top.fail(key, f"only families 14 and 15 use {key}")
    return _parse_identity_case(top, base)


def load_case(path: str | Path) -> RegressionCase:
    """Load one case file; see :func:`parse_case`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RegressionCaseError(f"{path.name}: cannot read: {exc}") from None
    return parse_case(path, text)


def load_cases(folder: str | Path = REGRESSIONS_DIR) -> list[RegressionCase]:
    """Load every ``*.toml`` case in ``folder``, sorted by file name.

    Raises:
        RegressionCaseError: the first invalid file, or a folder with no cases.
    """
    paths = sorted(Path(folder).glob("*.toml"), key=lambda path: path.stem)
    if not paths:
        raise RegressionCaseError(f"{folder}: no *.toml regression cases found")
    return [load_case(path) for path in paths]


# -- issuing and serving ---------------------------------------------------------


@dataclass(frozen=True)
class ServedCertificate:
    """The chain a server sends for a case, and the leaf's key."""

    chain_pem: bytes
    key_pem: bytes


def _issue_fresh(leaf: LeafSpec, lab: Lab, issued_at: dt.datetime) -> ServedCertificate:
    # lab.issue counts windows from lab.built_at, so shift them to count from
    # issued_at instead.
    offset = issued_at - lab.built_at
    shifted = dataclasses.replace(
        leaf, window=(leaf.window[0] + offset, leaf.window[1] + offset)
    )
    issued = lab.issue(shifted)
    _check_issued_names(leaf, issued.cert)
    return ServedCertificate(issued.chain_pem, issued.key_pem)


def _check_issued_names(leaf: LeafSpec, cert: x509.Certificate) -> None:
    """Raise when the lab wrote other names than ``leaf`` declares.

    A case tests the bytes of the names it declares; a builder that
    normalises them (case, IDNA, NUL) would make the case test something else.
    """
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        dns_names = tuple(san.value.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        dns_names = ()
    common_names = tuple(
        str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    )
    if dns_names != leaf.dns_names or common_names != leaf.common_names:
        raise RegressionRunError(
            f"the lab issued SAN {dns_names!r} and CN {common_names!r} for "
            f"declared SAN {leaf.dns_names!r} and CN {leaf.common_names!r}"
        )


def serve_certificate(case: RegressionCase, lab: Lab) -> ServedCertificate:
    """Return the chain and key an identity or chain case serves.

    A catalogue kind comes from the lab's build. An inline leaf is issued
    now, with its window counted from this moment.
    """
    if case.kind is not None:
        built = lab.kind(case.kind)
        return ServedCertificate(
            built.chain_path.read_bytes(), built.key_path.read_bytes()
        )
    return _issue_fresh(case.leaf, lab, _oracle_time())


def listen_host(reference_identity: str) -> str:
    """Return the loopback address a server for ``reference_identity`` uses."""
    return "::1" if ":" in reference_identity else "127.0.0.1"


@contextmanager
def serve_case(case: RegressionCase, lab: Lab) -> Iterator[MockEms]:
    """Run a mock EMS that serves ``case``'s certificate, stopped on exit."""
    served = serve_certificate(case, lab)
    ems = MockEms(
        served.chain_pem,
        served.key_pem,
        host=listen_host(case.reference_identity),
        profile_action=None,
        commands=(),
        ems_version=EMS_VERSION,
    )
    with ems:
        yield ems


def run_case_with_reference(
    case: RegressionCase,
    lab: Lab,
    mode: CnFallback,
    *,
    timeout: float = 10.0,
    ems: MockEms | None = None,
) -> Observation:
    """Connect the reference client (action ``deny``) to the case's server once.

    Args:
        case: An identity or chain case.
        lab: The lab; its trust store is the client's.
        mode: The client's ``cn_fallback`` setting.
        timeout: Seconds for the connection attempt.
        ems: A running server for the case; one is started when omitted.
    """
    if case.scripted:
        raise ValueError(f"case {case.name} is scripted: use run_script")
    with ExitStack() as stack:
        if ems is None:
            ems = stack.enter_context(serve_case(case, lab))
        client = EndpointClient(
            CLIENT_VERSION,
            lab.trust_store_path,
            action=Action.DENY,
            action_source=ActionSource.PROFILE,
            cn_fallback=mode,
            timeout=timeout,
            telemetry_idle=0.05,
        )
        return client.connect(ems.host, ems.port, servername=case.reference_identity)


def check_reference_observation(
    case: RegressionCase, mode: CnFallback, observation: Observation
) -> list[str]:
    """Return how ``observation`` breaks the case's expectation (empty: none)."""
    expected = case.expected[CnFallback(mode)]
    problems = []
    if frozenset(observation.reasons) != expected:
        problems.append(
            f"reasons {_names(frozenset(observation.reasons))}, "
            f"expected {_names(expected)}"
        )
    outcome = OutcomeName.REFUSED_DENY if expected else OutcomeName.CONNECTED_VALID
    if observation.outcome is not outcome:
        problems.append(
            f"outcome {observation.outcome.value}, expected {outcome.value}"
        )
    if observation.prompted:
        problems.append("the client prompted under action deny")
    return problems


def run_case_with_adapter(
    case: RegressionCase,
    adapter: Adapter,
    lab: Lab,
    *,
    timeout: float = 10.0,
    ems: MockEms | None = None,
) -> AdapterResult:
    """Run one real-client adapter against the case's server once."""
    if case.scripted:
        raise ValueError(f"case {case.name} is scripted; adapters run only one leaf")
    with ExitStack() as stack:
        if ems is None:
            ems = stack.enter_context(serve_case(case, lab))
        return adapter.check(
            host=ems.host,
            port=ems.port,
            servername=case.reference_identity,
            cafile=lab.trust_store_path,
            timeout=timeout,
        )


# -- known real-client failures ----------------------------------------------------


@dataclass(frozen=True)
class KnownClientFailure:
    """A real client that gives the wrong verdict on inline regression cases.

    Catalogue kinds use :data:`harness.adapters.deviations.DEVIATIONS`
    instead; this table covers the cases with an inline leaf.

    Attributes:
        adapter: Adapter name.
        cases: Case names (file names without ``.toml``).
        status: The status the client gives.
        reason: Why the client differs, naming the behaviour.
        modes: The ``cn_fallback`` modes under which that status is wrong.
    """

    adapter: str
    cases: tuple[str, ...]
    status: Status
    reason: str
    modes: frozenset[CnFallback] = frozenset(CnFallback)


_NEVER = frozenset({CnFallback.NEVER})
_WITH_CN = frozenset({CnFallback.WHEN_NO_SAN, CnFallback.ALWAYS})
_ALWAYS = frozenset({CnFallback.ALWAYS})

_CN_FALLBACK_OPENSSL = (
    "OpenSSL's X509_check_host reads the subject CN when the SAN has no dNSName "
    "entry, whatever other SAN entries there are"
)
_CN_SKIPPED_WITH_SAN = (
    "{client} skips the subject CN once the SAN has any entry, an iPAddress "
    "included, even for a DNS reference identity"
)
_CN_IGNORED = (
    "{client} ignores every subject CN once the SAN has a dNSName entry "
    "(RFC 6125), unlike the lenient cn_fallback=always"
)
_TRAILING_DOT_KEPT = (
    "{client} keeps the trailing dot of the reference identity, so "
    "ems.example.com. does not match *.example.com"
)
_ADAPTERS = ("python-ssl", "pyopenssl", "openssl", "curl", "gnutls", "node")

# Measured with OpenSSL 3.0 (openssl, Python's ssl), pyOpenSSL with its own
# OpenSSL plus service_identity, curl 7.88 (OpenSSL backend), GnuTLS 3.7 and
# Node.js 20. tests/test_regressions_adapters.py fails on a disagreement
# missing here and on an entry the client no longer matches.
KNOWN_CLIENT_FAILURES: tuple[KnownClientFailure, ...] = (
    # Family 4: internationalized names.
    *(
        KnownClientFailure(
            name,
            ("04-idn-alabel-control",),
            "rejected",
            f"{client} compares the U-label reference identity with the A-label "
            "in the SAN without converting it",
        )
        for name, client in (
            ("openssl", "openssl s_client"),
            ("node", "Node's tls.checkServerIdentity"),
        )
    ),
    KnownClientFailure(
        "node",
        ("04-wildcard-partial-alabel-ascii-reference",),
        "accepted",
        "Node's tls.checkServerIdentity accepts a partial-label wildcard, so "
        "x*.example.org matches the A-label xn--bcher-kva.example.org",
    ),
    # Families 5, 6 and 12: the subject CN.
    *(
        KnownClientFailure(
            name,
            ("05-second-cn-match-san-wildcard-other",),
            "rejected",
            _CN_IGNORED.format(client=client),
            _ALWAYS,
        )
        for name, client in HOSTNAME_CHECKERS
    ),
    *(
        KnownClientFailure(
            name,
            ("06-san-ipv6-only-cn-host", "12-uppercase-cn-only"),
            "accepted",
            reason,
            _NEVER,
        )
        for name, reason in (
            ("python-ssl", _CN_FALLBACK_OPENSSL),
            ("openssl", _CN_FALLBACK_OPENSSL),
            (
                "node",
                "Node's tls.checkServerIdentity reads the subject CN when the "
                "SAN has no DNS entry",
            ),
        )
    ),
    *(
        KnownClientFailure(
            name,
            ("12-uppercase-cn-only",),
            "accepted",
            f"{client} reads the subject CN when the certificate has no SAN",
            _NEVER,
        )
        for name, client in (
            ("curl", "curl 7.88 (OpenSSL backend)"),
            ("gnutls", "GnuTLS"),
        )
    ),
    *(
        KnownClientFailure(
            name,
            ("06-san-ipv6-only-cn-host",),
            "rejected",
            _CN_SKIPPED_WITH_SAN.format(client=client),
            _WITH_CN,
        )
        for name, client in (
            ("curl", "curl 7.88 (OpenSSL backend)"),
            ("gnutls", "GnuTLS"),
        )
    ),
    KnownClientFailure(
        "pyopenssl",
        ("06-san-ipv6-only-cn-host", "12-uppercase-cn-only"),
        "rejected",
        "service_identity matches only SAN entries and never reads the subject "
        "CN, as RFC 9525 requires",
        _WITH_CN,
    ),
    # Family 11: trailing dots.
    *(
        KnownClientFailure(
            name,
            ("11-trailing-dot-wildcard",),
            "rejected",
            _TRAILING_DOT_KEPT.format(client=client),
        )
        for name, client in (
            ("python-ssl", "Python's ssl (OpenSSL's X509_check_host)"),
            ("openssl", "OpenSSL's X509_check_host"),
            ("pyopenssl", "service_identity"),
        )
    ),
    *(
        KnownClientFailure(
            name,
            ("11-trailing-dot-in-san",),
            "accepted",
            f"{client} treats a SAN dNSName with a trailing dot as the same name "
            "without it, although the presented name has an empty label",
        )
        for name, client in (
            ("curl", "curl 7.88 (OpenSSL backend)"),
            ("node", "Node's tls.checkServerIdentity"),
        )
    ),
)


def _check_known_failures(entries: tuple[KnownClientFailure, ...]) -> None:
    seen: set[tuple[str, str, CnFallback]] = set()
    for entry in entries:
        if entry.adapter not in _ADAPTERS:
            raise ValueError(f"known failure names unknown adapter {entry.adapter!r}")
        for case in entry.cases:
            for mode in entry.modes:
                key = (entry.adapter, case, mode)
                if key in seen:
                    raise ValueError(f"two known failures cover {key}")
                seen.add(key)


_check_known_failures(KNOWN_CLIENT_FAILURES)


def known_failure(
    adapter: str, case_name: str, mode: CnFallback
) -> KnownClientFailure | None:
    """Return the known failure of ``adapter`` on ``case_name`` under ``mode``."""
    for entry in KNOWN_CLIENT_FAILURES:
        if (
            adapter == entry.adapter
            and case_name in entry.cases
            and mode in entry.modes
        ):
            return entry
    return None


@dataclass(frozen=True)
class Verdict:
    """An adapter's status on a case under one mode, compared with the rules.

    Attributes:
        agrees: The status is the standards verdict.
        explained_by: The deviation or known-failure reason for a
            disagreement that the tables list with this status, else ``None``.
        expected: The standards verdict.
        status: What the client did.
    """

    agrees: bool
    explained_by: str | None
    expected: Status
    status: Status


def judge_adapter_result(
    case: RegressionCase, adapter: str, status: Status, mode: CnFallback
) -> Verdict:
    """Compare an adapter's status with the case's verdict and the tables."""
    expected = case.expected_status(mode)
    if status == expected:
        return Verdict(True, None, expected, status)
    explained: str | None = None
    if case.kind is not None:
        deviation = lookup_deviation(adapter, case.kind, mode)
        if deviation is not None and deviation.status == status:
            explained = deviation.reason
    entry = known_failure(adapter, case.name, mode)
    if entry is not None and entry.status == status:
        explained = entry.reason
    return Verdict(False, explained, expected, status)


# -- scripted cases ----------------------------------------------------------------


@dataclass(frozen=True)
class StepResult:
    """Result of one scripted step.

    Attributes:
        observation: The reference client's observation.
        app_bytes: Application bytes the server received on the connection.
        app_bytes_at_prompt: Application bytes received when the client
            prompted (after waiting briefly for any in flight), or ``None``
            when it did not prompt.
    """

    observation: Observation
    app_bytes: int
    app_bytes_at_prompt: int | None


def _new_connection(ems: MockEms, before: int, timeout: float) -> ConnectionRecord:
    if not ems.wait_for_connections(before + 1, timeout):
        raise TimeoutError(f"mock EMS {ems.host}:{ems.port} saw no new connection")
    return ems.connections[before]


def _closed(ems: MockEms, index: int, timeout: float) -> ConnectionRecord:
    ems.wait_until(lambda e: e.connections[index].closed_at is not None, timeout)
    return ems.connections[index]


class _PromptRecorder:
    """Answers the prompt and records the application bytes seen by then."""

    def __init__(
        self, ems: MockEms, index: int, answer: Answer | None, timeout: float
    ) -> None:
        self.ems = ems
        self.index = index
        self.answer = answer or Answer.DENY
        self.timeout = timeout
        self.app_bytes: int | None = None

    def __call__(self, info: PromptInfo) -> Answer:
        _new_connection(self.ems, self.index, self.timeout)
        # Give bytes sent before the prompt time to reach the server; the
        # check fails if any arrive.
        self.ems.wait_until(
            lambda e: e.connections[self.index].app_bytes_received > 0, _QUIET_WAIT
        )
        self.app_bytes = self.ems.connections[self.index].app_bytes_received
        return self.answer


def run_script(
    case: RegressionCase,
    lab: Lab,
    memory_dir: Path,
    *,
    timeout: float = 10.0,
    sleep: Callable[[float], None] | None = None,
) -> list[StepResult]:
    """Run a scripted case with the reference client over real TLS.

    Every named certificate is issued once, at the start. Each server name
    gets its own mock EMS (so its own port); before a step the server is
    switched to the step's certificate. The remembered-certificate file lives
    in ``memory_dir``.
    """
    if not case.scripted:
        raise ValueError(f"case {case.name} is not scripted")
    wait = sleep or time.sleep
    issued_at = _oracle_time()
    served = {
        name: _issue_fresh(leaf, lab, issued_at)
        for name, leaf in case.certificates.items()
    }
    memory_path = memory_dir / "memory.json"
    results: list[StepResult] = []

    with ExitStack() as stack:
        servers: dict[str, MockEms] = {}
        client: EndpointClient | None = None
        for step in case.steps:
            cert = served[step.certificate]
            ems = servers.get(step.server)
            if ems is None:
                ems = MockEms(
                    cert.chain_pem,
                    cert.key_pem,
                    host=listen_host(step.reference_identity),
                    profile_action=None,
                    commands=(),
                    ems_version=EMS_VERSION,
                )
                servers[step.server] = stack.enter_context(ems)
            else:
                ems.set_certificate(cert.chain_pem, cert.key_pem)

            if step.at:
                # One extra second, because certificate times have whole-second
                # resolution.
                target = issued_at + dt.timedelta(seconds=step.at + 1)
                wait(max((target - dt.datetime.now(dt.UTC)).total_seconds(), 0.0))

            before = len(ems.connections)
            prompt = _PromptRecorder(ems, before, step.answer, timeout)
            if client is None or step.restart:
                client = EndpointClient(
                    CLIENT_VERSION,
                    lab.trust_store_path,
                    action=step.action,
                    action_source=ActionSource.PROFILE,
                    memory_path=memory_path,
                    timeout=timeout,
                    telemetry_idle=0.05,
                )
            client.action = step.action
            client.prompt = prompt
            observation = client.connect(
                ems.host, ems.port, servername=step.reference_identity
            )
            _new_connection(ems, before, timeout)
            record = _closed(ems, before, timeout)
            results.append(
                StepResult(
                    observation,
                    record.app_bytes_received,
                    prompt.app_bytes,
                )
            )
    return results


def check_step(step: Step, result: StepResult) -> list[str]:
    """Return how a step's result breaks its expectation (empty: none)."""
    observation = result.observation
    problems = []
    if observation.prompted != step.expect_prompted:
        problems.append(
            f"prompted={observation.prompted}, expected {step.expect_prompted}"
        )
    if observation.connected != step.expect_connected:
        problems.append(
            f"connected={observation.connected} ({observation.outcome.value}), "
            f"expected {step.expect_connected}"
        )
    if step.expect_connected and result.app_bytes == 0:
        problems.append("connected but the server received no application data")
    if not step.expect_connected and result.app_bytes != 0:
        problems.append(
            f"refused, yet the server received {result.app_bytes} application bytes"
        )
    if result.app_bytes_at_prompt:
        problems.append(
            f"the server received {result.app_bytes_at_prompt} application bytes "
            "before the user answered the prompt"
        )
    return problems
