"""Client-side fuzzing: mutated certificates served to clients over real TLS.

Three families of inputs, all drawn by Hypothesis from one lab:

* *declared* leaves: a random :class:`~harness.pki.LeafSpec` issued by the
  lab, including SANs of thousands of entries, labels longer than 63
  characters and validity dates at the edges of what X.509 can encode. The
  oracle can speak to these, so a client's reasons must equal the oracle's.
* *odd* leaves the builder can express but a ``LeafSpec`` cannot: subject
  strings as BMPString, TeletexString or PrintableString, unknown critical
  extensions, chains of many intermediates, two CAs that issue each other,
  and GeneralizedTime dates before 2050.
* *malformed* chains: a broken leaf signature, or bytes of a certificate
  mutated at random (only what OpenSSL can still load, because the server
  must load what it sends).

Each input becomes a :class:`CertCase`; :func:`check_reference_client`
serves it and checks the reference client's properties.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import strategies as st

from harness.fuzz import der
from harness.model import Action, ActionSource, CnFallback, OutcomeName, Reason
from harness.oracle.standards import expected_reasons
from harness.pki import Lab, LeafSpec
from harness.pki.kinds import EMS_FQDN
from harness.pki.roles import DAY

logger = logging.getLogger(__name__)

UNKNOWN_EXTENSION_OID = x509.ObjectIdentifier("1.3.6.1.4.1.55555.1.1")
CLIENT_VERSION = "7.2.0"


@dataclass(frozen=True)
class CertCase:
    """One certificate input: what the server sends and what should happen.

    Attributes:
        family: ``declared``, ``odd`` or ``malformed``.
        label: What was varied, readable in a finding's file name.
        chain_der: The certificates the server sends, leaf first.
        key_pem: The leaf's private key (a throwaway lab key).
        reference: The reference identity the client connects to.
        spec: The declared leaf when a ``LeafSpec`` expresses the input, so
            the oracle can decide it; ``None`` otherwise.
        valid: For inputs without ``spec``: whether standards validation
            must accept, or ``None`` where no rule decides.
        identity_ok: For inputs without ``spec``: whether the leaf presents
            the reference identity, or ``None`` where no rule decides.
        rule: The rule behind ``valid`` and ``identity_ok``.
    """

    family: str
    label: str
    chain_der: tuple[bytes, ...]
    key_pem: bytes
    reference: str
    spec: LeafSpec | None = None
    valid: bool | None = None
    identity_ok: bool | None = None
    rule: str = ""

    @property
    def chain_pem(self) -> str:
        """The served chain as PEM text (raw DER wrapped, never re-encoded)."""
        return "".join(_pem(item) for item in self.chain_der)

    def expected(self, mode: CnFallback, built_at: dt.datetime) -> Expectation:
        """Return what standards validation under ``mode`` must conclude."""
        if self.spec is None:
            return Expectation(self.valid, self.identity_ok, None, self.rule)
        reasons = expected_reasons(
            self.spec, self.reference, mode, built_at, dt.datetime.now(dt.UTC)
        )
        return Expectation(
            not reasons,
            Reason.HOSTNAME_MISMATCH not in reasons,
            frozenset(reasons),
            f"oracle, cn_fallback={mode.value}",
        )


@dataclass(frozen=True)
class Expectation:
    """The specification's verdict for one input; ``None`` where no rule decides."""

    valid: bool | None
    identity_ok: bool | None
    reasons: frozenset[Reason] | None
    rule: str


def _pem(data: bytes) -> str:
    import base64

    body = base64.b64encode(data).decode()
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return (
        "-----BEGIN CERTIFICATE-----\n"
        + "\n".join(lines)
        + "\n-----END CERTIFICATE-----\n"
    )


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


# -- declared leaves -------------------------------------------------------


def case_from_spec(lab: Lab, spec: LeafSpec, reference: str, label: str) -> CertCase:
    """Issue ``spec`` in ``lab`` and wrap it as a declared case."""
    issued = lab.issue(spec)
    chain = (issued.cert, *issued.chain)
    return CertCase(
        "declared",
        label,
        tuple(_der(cert) for cert in chain),
        issued.key_pem,
        reference,
        spec=spec,
    )


# Absolute dates at the edges of X.509 time encoding: UTCTime covers 1950 to
# 2049, GeneralizedTime everything after, and 9999-12-31 23:59:59 is the
# RFC 5280 value for "no well-defined expiration".
EDGE_DATES: tuple[dt.datetime, ...] = (
    dt.datetime(1950, 1, 1, tzinfo=dt.UTC),
    dt.datetime(2049, 12, 31, 23, 59, 59, tzinfo=dt.UTC),
    dt.datetime(2050, 1, 1, tzinfo=dt.UTC),
    dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.UTC),
)


@st.composite
def declared_cases(draw: st.DrawFn, lab: Lab) -> CertCase:
    """Draw a lab leaf from a random ``LeafSpec`` and a reference identity."""
    from harness import strategies

    shape = draw(st.sampled_from(("random", "huge-san", "long-label", "edge-dates")))
    fqdn = (EMS_FQDN,)
    if shape == "random":
        spec = draw(strategies.leaf_specs())
        reference = draw(
            st.one_of(
                st.sampled_from(spec.dns_names or fqdn),
                strategies.reference_identities(),
            )
        )
    elif shape == "huge-san":
        count = draw(st.integers(500, 3000))
        position = draw(st.integers(0, count))
        names = [f"host{i}.example.net" for i in range(count)]
        names.insert(position, EMS_FQDN)
        spec = LeafSpec(dns_names=tuple(names))
        reference = EMS_FQDN
    elif shape == "long-label":
        length = draw(st.integers(60, 250))
        # trustme runs names through IDNA, which rejects labels over 63
        # characters; an upper-case letter sends the leaf to the raw builder.
        name = "A" + "a" * (length - 1) + ".example.com"
        spec = LeafSpec(common_names=(), dns_names=(name, EMS_FQDN))
        reference = draw(st.sampled_from((name, EMS_FQDN)))
    else:
        start, end = sorted(
            draw(
                st.lists(
                    st.sampled_from(EDGE_DATES), min_size=2, max_size=2, unique=True
                )
            )
        )
        spec = LeafSpec(
            common_names=fqdn,
            dns_names=fqdn,
            window=(start - lab.built_at, end - lab.built_at),
        )
        reference = EMS_FQDN
    return case_from_spec(lab, spec, reference, shape)


# -- odd leaves --------------------------------------------------------------


def _build(
    lab: Lab,
    *,
    subject: x509.Name,
    issuer_role: str = "public-intermediate",
    san: Sequence[x509.GeneralName] | None = (x509.DNSName(EMS_FQDN),),
    extra: Sequence[tuple[x509.ExtensionType, bool]] = (),
    issuer_cert: x509.Certificate | None = None,
    issuer_key: ec.EllipticCurvePrivateKey | None = None,
    ca: bool = False,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    if issuer_cert is None:
        issuer_cert = lab.role_certs[issuer_role]
        signing_key: Any = lab.role_key(issuer_role)
    else:
        signing_key = issuer_key
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(lab.built_at - DAY)
        .not_valid_after(lab.built_at + 365 * DAY)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(
                issuer_cert.public_key()  # type: ignore[arg-type]
            ),
            critical=False,
        )
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False),
            critical=True,
        )
    if san is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(san)), False)
    for extension, critical in extra:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(signing_key, hashes.SHA256()), key


_STRING_TYPES = {
    "bmp": x509.name._ASN1Type.BMPString,
    "teletex": x509.name._ASN1Type.T61String,
    "visible": x509.name._ASN1Type.VisibleString,
    "printable": x509.name._ASN1Type.PrintableString,
    "ia5": x509.name._ASN1Type.IA5String,
    "universal": x509.name._ASN1Type.UniversalString,
}


def odd_string_case(lab: Lab, string_type: str, with_san: bool) -> CertCase:
    """Build a leaf whose CN ``ems.example.com`` has an unusual string type.

    Identity matching compares the CN's value, not its ASN.1 string type, so
    the oracle decides this input like the same leaf with a UTF8String CN.
    """
    cn = x509.NameAttribute(
        NameOID.COMMON_NAME, EMS_FQDN, _type=_STRING_TYPES[string_type]
    )
    san = (x509.DNSName(EMS_FQDN),) if with_san else None
    cert, key = _build(lab, subject=x509.Name([cn]), san=san)
    spec = LeafSpec(
        common_names=(EMS_FQDN,),
        dns_names=(EMS_FQDN,) if with_san else (),
        san_extension=with_san,
        eku=None,
    )
    chain = (_der(cert), _der(lab.role_certs["public-intermediate"]))
    label = f"cn-{string_type}{'-with-san' if with_san else '-no-san'}"
    return CertCase("odd", label, chain, _key_pem(key), EMS_FQDN, spec=spec)


def unknown_critical_case(lab: Lab) -> CertCase:
    """Build a valid leaf that also carries an unknown critical extension."""
    extension = x509.UnrecognizedExtension(UNKNOWN_EXTENSION_OID, b"\x05\x00")
    cert, key = _build(
        lab,
        subject=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, EMS_FQDN)]),
        extra=[(extension, True)],
    )
    chain = (_der(cert), _der(lab.role_certs["public-intermediate"]))
    return CertCase(
        "odd",
        "unknown-critical-extension",
        chain,
        _key_pem(key),
        EMS_FQDN,
        valid=False,
        identity_ok=True,
        rule="RFC 5280 4.2: a certificate with an unrecognized critical "
        "extension must be rejected",
    )


def long_chain_case(lab: Lab, depth: int) -> CertCase:
    """Build a valid leaf under ``depth`` intermediates below the public one."""
    parent_cert = lab.role_certs["public-intermediate"]
    parent_key: Any = lab.role_key("public-intermediate")
    intermediates = [parent_cert]
    for level in range(depth):
        name = x509.Name(
            [x509.NameAttribute(NameOID.COMMON_NAME, f"fuzz level {level}")]
        )
        parent_cert, parent_key = _build(
            lab,
            subject=name,
            san=None,
            issuer_cert=parent_cert,
            issuer_key=parent_key,
            ca=True,
        )
        intermediates.append(parent_cert)
    leaf, key = _build(
        lab,
        subject=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, EMS_FQDN)]),
        issuer_cert=parent_cert,
        issuer_key=parent_key,
    )
    chain = (_der(leaf), *(_der(c) for c in reversed(intermediates)))
    # trustme gives each CA a pathLenConstraint, so the public intermediate
    # allows only so many CAs below it.
    constraints = (
        lab.role_certs["public-intermediate"]
        .extensions.get_extension_for_class(x509.BasicConstraints)
        .value
    )
    allowed = constraints.path_length is None or depth <= constraints.path_length
    return CertCase(
        "odd",
        f"chain-depth-{depth + 1}",
        chain,
        _key_pem(key),
        EMS_FQDN,
        valid=allowed,
        identity_ok=True,
        rule=f"trust: every issuer is a CA within its path length "
        f"(the public intermediate allows {constraints.path_length} below it)",
    )


def issuer_loop_case(lab: Lab) -> CertCase:
    """Build two CAs that issue each other, unanchored, and a leaf under one."""
    key_a = ec.generate_private_key(ec.SECP256R1())
    key_b = ec.generate_private_key(ec.SECP256R1())
    name_a = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fuzz loop A")])
    name_b = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fuzz loop B")])

    def ca(
        subject: x509.Name, issuer: x509.Name, key: Any, signer: Any
    ) -> x509.Certificate:
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(lab.built_at - DAY)
            .not_valid_after(lab.built_at + 365 * DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(signer, hashes.SHA256())
        )

    a_by_b = ca(name_a, name_b, key_a, key_b)
    b_by_a = ca(name_b, name_a, key_b, key_a)
    leaf, key = _build(
        lab,
        subject=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, EMS_FQDN)]),
        issuer_cert=a_by_b,
        issuer_key=key_a,
    )
    return CertCase(
        "odd",
        "issuer-loop",
        (_der(leaf), _der(a_by_b), _der(b_by_a)),
        _key_pem(key),
        EMS_FQDN,
        valid=False,
        identity_ok=True,
        rule="trust: no path reaches a store root",
    )


def _time_field(value: str, generalized: bool) -> bytes:
    tag = der.TAG_GENERALIZED_TIME if generalized else der.TAG_UTC_TIME
    return der.encode_tlv(tag, value.encode("ascii"))


def generalized_time_case(lab: Lab, not_after_year: int) -> CertCase:
    """notAfter encoded as GeneralizedTime although it falls before 2050.

    RFC 5280 4.1.2.5 requires UTCTime through 2049, so the encoding is
    invalid; the date itself is in the future, and no rule says whether a
    validator must reject or may read it.
    """
    cert, key = _build(
        lab, subject=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, EMS_FQDN)])
    )
    tbs, algorithm, _ = der.split_certificate(_der(cert))
    start = (lab.built_at - DAY).strftime("%y%m%d%H%M%SZ")
    end = f"{not_after_year}1231235959Z"
    validity = der.encode_tlv(
        der.TAG_SEQUENCE, _time_field(start, False) + _time_field(end, True)
    )
    tbs = der.replace_tbs_field(tbs, 4, validity)
    signed = der.sign_tbs(tbs, algorithm, lab.role_key("public-intermediate"))
    return CertCase(
        "odd",
        f"generalized-time-{not_after_year}",
        (signed, _der(lab.role_certs["public-intermediate"])),
        _key_pem(key),
        EMS_FQDN,
        valid=None,
        identity_ok=True,
        rule="RFC 5280 4.1.2.5 requires UTCTime before 2050; validator "
        "behaviour on a violation is not specified",
    )


@st.composite
def odd_cases(draw: st.DrawFn, lab: Lab) -> CertCase:
    """Draw one of the leaves a ``LeafSpec`` cannot express."""
    shape = draw(
        st.sampled_from(
            ("string-type", "unknown-critical", "long-chain", "loop", "gentime")
        )
    )
    if shape == "string-type":
        return odd_string_case(
            lab, draw(st.sampled_from(sorted(_STRING_TYPES))), draw(st.booleans())
        )
    if shape == "unknown-critical":
        return unknown_critical_case(lab)
    if shape == "long-chain":
        return long_chain_case(lab, draw(st.integers(2, 12)))
    if shape == "loop":
        return issuer_loop_case(lab)
    return generalized_time_case(lab, draw(st.sampled_from((2030, 2049))))


# -- malformed chains ----------------------------------------------------------


def bad_signature_case(lab: Lab) -> CertCase:
    """Build a leaf whose signature value has one byte flipped."""
    base = case_from_spec(
        lab, LeafSpec(common_names=(EMS_FQDN,), dns_names=(EMS_FQDN,)), EMS_FQDN, ""
    )
    leaf = bytearray(base.chain_der[0])
    leaf[-1] ^= 0x01
    return dataclasses.replace(
        base,
        family="malformed",
        label="bad-signature",
        chain_der=(bytes(leaf), *base.chain_der[1:]),
        spec=None,
        valid=False,
        identity_ok=True,
        rule="trust: the leaf's signature does not verify, so no path exists",
    )


@st.composite
def garbage_chain_cases(draw: st.DrawFn, lab: Lab) -> CertCase:
    """Draw a valid chain followed by an extra certificate with mutated bytes.

    The trust rule ignores extra certificates the server sends, so the
    chain stays valid however the extra one is damaged.
    """
    base = case_from_spec(
        lab, LeafSpec(common_names=(EMS_FQDN,), dns_names=(EMS_FQDN,)), EMS_FQDN, ""
    )
    victim = bytearray(_der(lab.role_certs["private-root"]))
    for _ in range(draw(st.integers(1, 8))):
        position = draw(st.integers(0, 1 << 16)) % len(victim)
        victim[position] = draw(st.integers(0, 255))
    return dataclasses.replace(
        base,
        family="malformed",
        label="garbage-extra-cert",
        chain_der=(*base.chain_der, bytes(victim)),
        spec=None,
        valid=True,
        identity_ok=True,
        rule="trust: extra certificates sent after a valid chain are ignored",
    )


@st.composite
def mutated_leaf_cases(draw: st.DrawFn, lab: Lab) -> CertCase:
    """Draw a leaf with random bytes changed outside its public key.

    Keeping the key intact lets OpenSSL pair the leaf with its private key.
    No rule decides these inputs; they only test that clients survive them.
    """
    base = case_from_spec(
        lab, LeafSpec(common_names=(EMS_FQDN,), dns_names=(EMS_FQDN,)), EMS_FQDN, ""
    )
    leaf = bytearray(base.chain_der[0])
    tbs_der, _, _ = der.split_certificate(bytes(leaf))
    fields = der.tbs_fields(tbs_der)
    tbs_offset = der.read_tlv(bytes(leaf)).content_start
    spki = fields[6]
    protected = range(tbs_offset + spki.start, tbs_offset + spki.end)
    # Positions are drawn independently of the leaf's length, which varies
    # with its random key and signature, so Hypothesis gets the same draws on a replay.
    for _ in range(draw(st.integers(1, 6))):
        position = draw(st.integers(0, 1 << 16)) % len(leaf)
        value = draw(st.integers(0, 255))
        if position not in protected:
            leaf[position] = value
    return dataclasses.replace(
        base,
        family="malformed",
        label="mutated-leaf",
        chain_der=(bytes(leaf), *base.chain_der[1:]),
        spec=None,
        valid=None,
        identity_ok=None,
        rule="mutated bytes: no rule decides, clients must only survive",
    )


def malformed_cases(lab: Lab) -> st.SearchStrategy[CertCase]:
    """Draw a chain that is damaged but that OpenSSL can still send."""
    return st.one_of(
        st.just(None).map(lambda _: bad_signature_case(lab)),
        garbage_chain_cases(lab),
        mutated_leaf_cases(lab),
    )


def cert_cases(lab: Lab) -> st.SearchStrategy[CertCase]:
    """Draw any client-side input: declared, odd or malformed."""
    return st.one_of(declared_cases(lab), odd_cases(lab), malformed_cases(lab))


# -- the reference client's properties -----------------------------------------


@dataclass(frozen=True)
class ClientCheck:
    """The reference client's result on one input and the properties broken.

    Attributes:
        verdict: ``"accepted"``, ``"rejected"`` or ``"error"``.
        reasons: The reasons the client reported.
        detail: The client's error text or outcome name.
        elapsed: Seconds the connect took.
        problems: Every broken property, empty when all held.
    """

    verdict: str
    reasons: tuple[str, ...]
    detail: str
    elapsed: float
    problems: tuple[str, ...]


def check_reference_client(
    case: CertCase,
    store: Path,
    built_at: dt.datetime,
    host: str,
    port: int,
    timeout: float = 5.0,
) -> ClientCheck:
    """Connect the reference client to a server sending ``case`` and check it.

    The properties: the client returns within ``timeout`` plus a second of
    slack, never raises, reports a decision with reasons, and reports
    exactly the oracle's reasons when the oracle can speak to the input.
    """
    from harness.endpoint.client import EndpointClient

    client = EndpointClient(
        CLIENT_VERSION,
        store,
        action=Action.ALLOW,
        action_source=ActionSource.INSTALLER,
        cn_fallback=CnFallback.WHEN_NO_SAN,
        timeout=timeout,
        telemetry_idle=0.05,
    )
    problems: list[str] = []
    started = time.monotonic()
    try:
        observation = client.connect(host, port, servername=case.reference)
    except Exception as exc:
        elapsed = time.monotonic() - started
        return ClientCheck("error", (), repr(exc), elapsed, (f"client raised {exc!r}",))
    elapsed = time.monotonic() - started
    # The client bounds the connect, the handshake and each telemetry read
    # by ``timeout``, so a whole attempt stays within a few timeouts.
    if elapsed > 3 * timeout:
        problems.append(f"client took {elapsed:.1f} s with a {timeout} s timeout")

    reasons = tuple(reason.value for reason in observation.reasons)
    detail = observation.error or observation.outcome.value
    if observation.outcome is OutcomeName.HANDSHAKE_FAILED:
        problems.append(f"no certificate decision: {detail}")
        verdict = "error"
    else:
        verdict = "rejected" if reasons else "accepted"

    expectation = case.expected(CnFallback.WHEN_NO_SAN, built_at)
    expected = expectation.reasons
    if expected is not None and verdict != "error" and set(reasons) != set(expected):
        problems.append(
            f"reasons {sorted(reasons)} differ from the oracle's "
            f"{sorted(r.value for r in expected)}"
        )
    return ClientCheck(verdict, reasons, detail, elapsed, tuple(problems))
