"""Public Hypothesis strategies for the harness's inputs.

Downstream suites draw versions, actions, prompt answers, EMS settings,
reference identities, presented names, certificate specifications and whole
identity cases from here. Every strategy builds its values directly (no
``filter`` that rejects most draws) and lists its simplest value first, so a
failing example shrinks towards a short name, one SAN entry, the shortest
chain and a valid certificate. Each docstring names the shrunk value.

Names need care because the lab issues real certificates from them:

* a SAN dNSName holds ASCII only, so IDN names appear there as A-labels and
  as U-labels only in the subject CN (a UTF8String);
* a CN is at most 64 characters, so generated names stay short;
* trustme reads an IP-shaped or ``@``-holding SAN string as an iPAddress or
  email entry, so generated DNS names never look like either;
* every ``xn--`` label is the valid Punycode of a U-label, except inside a
  partial-label wildcard such as ``xn--*.example.com``, which the lab builds
  with cryptography's builder.
"""

from __future__ import annotations

import datetime as dt
import functools
import ipaddress
from dataclasses import dataclass
from datetime import timedelta

import idna
from hypothesis import strategies as st

from harness.ems.settings import (
    CertificateSource,
    EmsSettings,
    ImportedCertificate,
    Installer,
    Profile,
)
from harness.model import Action, ActionSource, Answer, CnFallback
from harness.oracle.decision import SAME_AS_KIND, Remembered, Scenario
from harness.pki.kinds import CATALOGUE, TRUSTME_EKU, CertKind, LeafSpec
from harness.pki.roles import DAY, ROLES
from harness.versions import has_feature

__all__ = [
    "EDGE_VERSIONS",
    "PRESENTED_FORMS",
    "IdentityCase",
    "actions",
    "answers",
    "chains_for",
    "cn_fallback_modes",
    "dns_labels",
    "dns_names",
    "ems_settings",
    "generated_kinds",
    "identity_cases",
    "ip_literals",
    "issuers",
    "kind_names",
    "leaf_specs",
    "presented_name",
    "reference_identities",
    "scenarios",
    "spell_reference",
    "u_labels",
    "validity_windows",
    "versions",
]

# Versions at the edges of both feature branches, simplest first: the first
# version with the feature, then the last legacy version before it, and so on.
EDGE_VERSIONS: tuple[str, ...] = (
    "6.4.7",
    "6.4.6",
    "7.0.2",
    "7.0.1",
    "7.0.0",
    "7.2.0",
    "6.4.0",
    "6.2.9",
    "6.4.8",
    "7.0.3",
)

# (major, minor) branches the version strategy draws patch numbers for.
_BRANCHES: tuple[tuple[int, int], ...] = (
    (6, 4),
    (7, 0),
    (6, 2),
    (7, 2),
    (7, 4),
    (6, 0),
)
_MAX_PATCH = 20


def versions(*, feature: bool | None = None) -> st.SearchStrategy[str]:
    """Generate product versions as dotted strings such as ``"7.0.2"``.

    Draws from :data:`EDGE_VERSIONS` and from patch releases 0 to 20 of the
    6.0, 6.2, 6.4, 7.0, 7.2 and 7.4 branches.

    Args:
        feature: ``True`` for versions with standards validation only,
            ``False`` for legacy versions only, ``None`` for both.

    Shrinks towards the first edge version of the requested class: 6.4.7
    for new and any versions, 6.4.6 for legacy ones.
    """
    edges = [v for v in EDGE_VERSIONS if feature is None or has_feature(v) == feature]
    patches = st.builds(
        lambda branch, patch: f"{branch[0]}.{branch[1]}.{patch}",
        st.sampled_from(_BRANCHES),
        st.integers(0, _MAX_PATCH),
    )
    if feature is not None:
        # About half of the patch releases have the feature, so the filter
        # rejects few draws.
        patches = patches.filter(lambda v: has_feature(v) == feature)
    return st.one_of(st.sampled_from(edges), patches)


def actions() -> st.SearchStrategy[Action]:
    """Generate invalid certificate actions. Shrinks towards ``allow``."""
    return st.sampled_from(Action)


def answers() -> st.SearchStrategy[Answer]:
    """Generate prompt answers. Shrinks towards ``allow``."""
    return st.sampled_from(Answer)


def cn_fallback_modes() -> st.SearchStrategy[CnFallback]:
    """Generate ``cn_fallback`` settings. Shrinks towards ``when-no-san``."""
    return st.sampled_from(CnFallback)


def kind_names(*tags: str) -> st.SearchStrategy[str]:
    """Generate names of catalogue kinds, optionally only those with a tag.

    Shrinks towards the first matching kind in catalogue order
    (``correct-fqdn`` when no tag is given).

    Raises:
        ValueError: no kind carries any of ``tags``.
    """
    names = [
        name
        for name, kind in CATALOGUE.items()
        if not tags or set(tags) & set(kind.tags)
    ]
    if not names:
        raise ValueError(f"no catalogue kind has any of the tags {tags}")
    return st.sampled_from(names)


# -- EMS settings ----------------------------------------------------------

_PROFILE_NAMES = ("default", "servers", "laptops")


@st.composite
def ems_settings(draw: st.DrawFn) -> EmsSettings:
    """Generate valid :class:`~harness.ems.settings.EmsSettings`.

    The version, toggle, imported certificate (a catalogue kind, uploaded or
    ACME-managed), profiles and installers vary. Every value passes
    :meth:`EmsSettings.validate`. Shrinks towards EMS 6.4.7 with the toggle
    unset, nothing imported and one ``allow`` profile.
    """
    version = draw(versions())
    toggle = draw(st.none() | st.booleans()) if has_feature(version) else None
    imported = None
    remote_https = redirect = False
    if draw(st.booleans()):
        source = draw(st.sampled_from(CertificateSource))
        kind = draw(kind_names())
        auto_renew = source is CertificateSource.ACME and draw(st.booleans())
        imported = ImportedCertificate(source=source, kind=kind, auto_renew=auto_renew)
        if source is CertificateSource.ACME:
            remote_https = redirect = True
    profile_count = draw(st.integers(1, len(_PROFILE_NAMES)))
    profiles = tuple(
        Profile(name, draw(actions())) for name in _PROFILE_NAMES[:profile_count]
    )
    installer_actions = draw(st.lists(actions(), max_size=2))
    installers = tuple(
        Installer(f"installer-{i}", action)
        for i, action in enumerate(installer_actions)
    )

    settings = EmsSettings(
        ems_version=version,
        remote_https_access=remote_https,
        http_redirect=redirect,
        imported_certificate=imported,
        use_ssl_certificate_for_endpoint_control=toggle,
        profiles=profiles,
        installers=installers,
    )
    settings.validate()
    return settings


# -- DNS names and IP literals ---------------------------------------------

_LDH = "abcdefghijklmnopqrstuvwxyz0123456789"
_U_LETTERS = "äöüéñçåø"


@functools.cache
def dns_labels() -> st.SearchStrategy[str]:
    """Generate lower-case ASCII DNS labels of letters, digits and inner hyphens.

    A label always starts with a letter, so a name of such labels never reads
    as an IP literal, and never starts with ``xn--``. Shrinks towards ``"a"``.
    """
    return st.builds(
        lambda first, rest: first + rest,
        st.sampled_from("abcdefghijklmnopqrstuvwxyz"),
        st.text(alphabet=_LDH + "-", max_size=6).map(lambda s: s.rstrip("-")),
    ).filter(lambda label: label[2:4] != "--")


@functools.cache
def u_labels() -> st.SearchStrategy[str]:
    """Generate internationalized labels (U-labels) that IDNA 2008 encodes.

    Each label mixes lower-case ASCII letters with at least one of
    ``äöüéñçåø``. Shrinks towards ``"ä"``.
    """
    return st.builds(
        lambda prefix, letter, suffix: prefix + letter + suffix,
        st.text(alphabet="abcdefghijklmnopqrstuvwxyz", max_size=3),
        st.sampled_from(_U_LETTERS),
        st.text(alphabet="abcdefghijklmnopqrstuvwxyz" + _U_LETTERS, max_size=3),
    ).filter(_encodes)


def _encodes(label: str) -> bool:
    try:
        idna.encode(label)
    except idna.IDNAError:
        return False
    return True


def _a_label(label: str) -> str:
    """Return the A-label of ``label`` (itself when it is ASCII)."""
    if label.isascii():
        return label
    return idna.encode(label).decode("ascii")


@st.composite
def dns_names(draw: st.DrawFn, *, min_labels: int = 2, max_labels: int = 4) -> str:
    """Generate a DNS name in its U-label spelling, lower case, no trailing dot.

    Roughly one label in five is internationalized; use :func:`spell_reference`
    or :func:`presented_name` for other spellings. Shrinks towards ``"a.a"``
    (or ``min_labels`` labels ``a``).
    """
    count = draw(st.integers(min_labels, max_labels))
    label = st.one_of(
        dns_labels(), dns_labels(), dns_labels(), dns_labels(), u_labels()
    )
    labels = [draw(label) for _ in range(count)]
    # A CN has at most 64 characters, and derived names add a label, so
    # long names lose labels from the left until they fit.
    while len(labels) > min_labels and len(_spell_ascii(labels)) > _MAX_NAME:
        labels.pop(0)
    return ".".join(labels)


_MAX_NAME = 40


@functools.cache
def _any_label() -> st.SearchStrategy[str]:
    # Four ASCII alternatives to one IDN alternative: about one IDN label in five.
    ascii_label = dns_labels()
    return st.one_of(ascii_label, ascii_label, ascii_label, ascii_label, u_labels())


def _spell_ascii(labels: list[str]) -> str:
    return ".".join(_a_label(label) for label in labels)


@functools.cache
def ip_literals() -> st.SearchStrategy[str]:
    """Generate IPv4 and IPv6 address literals in canonical form.

    Shrinks towards ``"0.0.0.0"``.
    """
    v4 = st.ip_addresses(v=4).map(str)
    v6 = st.ip_addresses(v=6).map(str)
    return st.one_of(v4, v6)


@st.composite
def spell_reference(draw: st.DrawFn, name: str) -> str:
    """Generate one spelling of the DNS name ``name`` as a reference identity.

    Each ASCII letter may change case, each label may be written as its
    U-label or its A-label, and one trailing dot may follow; all spellings
    name the same host. Shrinks towards ``name`` unchanged.
    """
    labels = []
    for label in name.split("."):
        if not label.isascii() and draw(st.booleans()):
            label = _a_label(label)
        if label.isascii() and draw(st.booleans()):
            flips = draw(
                st.lists(st.booleans(), min_size=len(label), max_size=len(label))
            )
            label = "".join(
                c.upper() if f else c for c, f in zip(label, flips, strict=True)
            )
        labels.append(label)
    trailing = "." if draw(st.booleans()) else ""
    return ".".join(labels) + trailing


def reference_identities() -> st.SearchStrategy[str]:
    """Generate reference identities: DNS names in any spelling, IP literals,
    and names with a NUL byte.

    Shrinks towards ``"0.0.0.0"``: the IP branch has fewer choices than a
    spelled DNS name, so Hypothesis prefers it. A failure that needs a DNS
    name shrinks towards ``"a.a"``.
    """
    dns = dns_names().flatmap(spell_reference)
    with_nul = dns_names().map(lambda n: n.replace(".", "\x00.", 1))
    return st.one_of(dns, ip_literals(), with_nul)


# How a presented name relates to the reference name it is derived from.
PRESENTED_FORMS: tuple[str, ...] = (
    "exact",
    "wildcard",
    "other-host",
    "wildcard-too-deep",
    "wildcard-bare-domain",
    "wildcard-public-suffix",
    "wildcard-partial-label",
    "wildcard-partial-alabel",
    "wildcard-not-leftmost",
    "trailing-dot",
    "nul-byte",
)


@st.composite
def presented_name(draw: st.DrawFn, name: str, *, ascii_only: bool = True) -> str:
    """Generate a presented name derived from the DNS name ``name``.

    The form is one of :data:`PRESENTED_FORMS`: the name itself, a wildcard
    over its parent, another host, and each malformed wildcard (one label
    too deep, over the bare domain, over a public suffix such as ``*.com``,
    partial labels such as ``e*.example.com`` and ``xn--*.example.com``, a
    ``*`` that is not the left-most label), a trailing dot or a NUL byte.
    Letters may change case.

    Args:
        name: The reference name in U-label spelling, from :func:`dns_names`.
        ascii_only: Write internationalized labels as A-labels, as a SAN
            dNSName must. With ``False`` they may stay U-labels (for a CN).

    Shrinks towards ``name`` itself, in A-label spelling.
    """
    labels = name.split(".")
    form = draw(st.sampled_from(PRESENTED_FORMS))
    if form == "exact":
        out = list(labels)
    elif form == "wildcard":
        out = ["*", *labels[1:]]
    elif form == "other-host":
        out = [draw(dns_labels()) + "x", *labels[1:]]
    elif form == "wildcard-too-deep":
        out = ["*", *labels[2:]] if len(labels) > 2 else ["*", *labels]
    elif form == "wildcard-bare-domain":
        out = ["*", *labels]
    elif form == "wildcard-public-suffix":
        out = ["*", labels[-1]]
    elif form == "wildcard-partial-label":
        first = _a_label(labels[0])
        cut = draw(st.integers(0, len(first)))
        out = [first[:cut] + "*" + first[cut + 1 :], *labels[1:]]
    elif form == "wildcard-partial-alabel":
        out = ["xn--*", *labels[1:]]
    elif form == "wildcard-not-leftmost":
        out = [labels[0], "*", *labels[2:]] if len(labels) > 2 else ["*", "*"]
    elif form == "trailing-dot":
        out = [*labels, ""]
    else:
        out = [_a_label(labels[0]) + "\x00", *labels[1:]]

    if ascii_only or draw(st.booleans()):
        out = [_a_label(label) if "*" not in label else label for label in out]
    if draw(st.booleans()):
        out = [label.upper() if label.isascii() else label for label in out]
    return ".".join(out)


# -- certificate specifications --------------------------------------------

# The path each issuing role sends in a correctly configured server: the
# issuer first, up to but not including the trust anchor in the store.
_CORRECT_CHAINS: dict[str, tuple[str, ...]] = {
    "public-intermediate": ("public-intermediate",),
    "public-intermediate-2": ("public-intermediate-2", "public-intermediate"),
    "public-root": (),
    "expired-intermediate": ("expired-intermediate",),
    "non-ca-issuer": ("non-ca-issuer", "public-intermediate"),
    "private-root": ("private-root",),
    "vendor-root": ("vendor-root",),
    "legacy-root": (),
    "cross-root": (),
    "cross-root-by-legacy": ("cross-root-by-legacy",),
    "cross-intermediate": ("cross-intermediate",),
    "self": (),
}
if set(_CORRECT_CHAINS) != {*ROLES, "self"}:
    raise RuntimeError(
        "harness.strategies._CORRECT_CHAINS is out of date with the CA roles: "
        f"roles {sorted(ROLES)}"
    )


def issuers() -> st.SearchStrategy[str]:
    """Generate the issuer of a leaf: a lab CA role, or ``"self"``.

    Shrinks towards ``public-intermediate``, the issuer of a valid leaf.
    """
    return st.sampled_from(tuple(_CORRECT_CHAINS))


@st.composite
def chains_for(draw: st.DrawFn, issuer: str) -> tuple[str, ...]:
    """Generate the CA roles a server sends after a leaf issued by ``issuer``.

    The shape is the correct path without its trust anchor, the path in
    reverse order, the path missing its last certificate, nothing at all,
    or the path followed by an unrelated CA. Shrinks towards the correct
    path, which for most issuers is the shortest chain that validates.
    """
    path = _CORRECT_CHAINS[issuer]
    shape = draw(
        st.sampled_from(("correct", "reversed", "truncated", "empty", "extra"))
    )
    if shape == "correct":
        return path
    if shape == "reversed":
        return tuple(reversed(path))
    if shape == "truncated":
        return path[:-1]
    if shape == "empty":
        return ()
    extra = draw(st.sampled_from([r for r in ROLES if r not in path]))
    return (*path, extra)


# Windows relative to the lab's build time. Every bound is at least a day
# away from the build time, so no window changes class while a cached lab
# (at most twelve hours old) is in use.
_NAMED_WINDOWS: tuple[tuple[timedelta, timedelta], ...] = (
    (-1 * DAY, 365 * DAY),
    (-60 * DAY, -1 * DAY),
    (30 * DAY, 400 * DAY),
)


def validity_windows() -> st.SearchStrategy[tuple[timedelta, timedelta]]:
    """Generate leaf validity windows relative to the lab's build time.

    Draws a valid, an expired or a not-yet-valid window, or a window of
    whole days whose bounds are each at least a day from the build time.
    Shrinks towards one day before to 365 days after the build time.
    """
    days = st.integers(1, 800)
    span = st.builds(
        lambda start, length: (start * DAY, (start + length) * DAY),
        st.one_of(days.map(lambda d: -d), days),
        days,
    ).filter(lambda w: w[1] <= -DAY or w[1] >= DAY)
    return st.one_of(st.sampled_from(_NAMED_WINDOWS), span)


_EKUS: tuple[tuple[str, ...] | None, ...] = (
    TRUSTME_EKU,
    None,
    ("serverAuth",),
    ("clientAuth",),
    ("clientAuth", "emailProtection"),
)


@st.composite
def leaf_specs(
    draw: st.DrawFn,
    *,
    names: st.SearchStrategy[str] | None = None,
    issuer: st.SearchStrategy[str] | None = None,
) -> LeafSpec:
    """Generate :class:`~harness.pki.LeafSpec` values the lab can issue.

    The subject has zero to two CNs or is empty; the SAN has zero to three
    dNSName and zero to two iPAddress entries (no SAN extension when both are
    empty); the issuer is any lab CA role or ``"self"``; the chain shape,
    validity window and extendedKeyUsage vary.

    Args:
        names: Strategy for ASCII DNS names in SANs and CNs; defaults to
            :func:`dns_names` in A-label spelling.
        issuer: Strategy for the issuing role; defaults to :func:`issuers`.

    Shrinks towards one SAN dNSName, no CN, issued by the public
    intermediate, the correct chain, a currently valid window and trustme's
    extendedKeyUsage: a valid leaf for the name ``"a.a"``.
    """
    if names is None:
        names = dns_names().map(lambda n: ".".join(_a_label(x) for x in n.split(".")))
    dns = tuple(draw(st.lists(names, min_size=1, max_size=3)))
    if draw(st.integers(0, 4)) == 4:
        dns = ()
    ips = tuple(draw(st.lists(ip_literals(), max_size=2)))
    common_names = tuple(draw(st.lists(names, max_size=2)))
    empty_subject = not common_names and draw(st.booleans())
    chosen_issuer = draw(issuer if issuer is not None else issuers())

    return LeafSpec(
        common_names=common_names,
        empty_subject=empty_subject,
        dns_names=dns,
        ip_addresses=ips,
        san_extension=bool(dns or ips),
        issuer=chosen_issuer,
        chain=draw(chains_for(chosen_issuer)),
        window=draw(validity_windows()),
        eku=draw(st.sampled_from(_EKUS)),
    )


# -- identity cases --------------------------------------------------------


@dataclass(frozen=True)
class IdentityCase:
    """A leaf and a reference identity, for identity-matching properties.

    Attributes:
        leaf: The declared leaf; its chain always validates, so only the
            identity can fail.
        reference: The reference identity a client connects to.
    """

    leaf: LeafSpec
    reference: str

    def describe(self) -> dict[str, object]:
        """Return the case as plain JSON values, for regression files."""
        return {
            "reference": self.reference,
            "common_names": list(self.leaf.common_names),
            "dns_names": list(self.leaf.dns_names),
            "ip_addresses": list(self.leaf.ip_addresses),
        }


@st.composite
def identity_cases(draw: st.DrawFn) -> IdentityCase:
    """Generate a leaf whose names relate to a reference identity.

    The reference is a DNS name in any spelling (or, less often, an IP
    literal); the leaf presents one to three names derived from it with
    :func:`presented_name`, each in the SAN, in the CN, or in both, and may
    carry an iPAddress SAN. The leaf is otherwise valid: issued by the public
    intermediate with the correct chain. Shrinks towards the reference
    ``"0.0.0.0"`` with that address as the only SAN (the IP branch draws
    fewest choices); a failure that needs a DNS name shrinks towards the
    reference ``"a.a"`` and a leaf with the single SAN dNSName ``a.a``.
    """
    if draw(st.integers(0, 5)) == 5:
        address = draw(ip_literals())
        other = draw(ip_literals())
        ips = draw(st.sampled_from([(address,), (other,), (other, address)]))
        cn = draw(st.sampled_from([(), (address,)]))
        spec = LeafSpec(common_names=cn, ip_addresses=ips, dns_names=())
        return IdentityCase(spec, draw(st.sampled_from([address, f"[{address}]"])))

    name = draw(dns_names())
    reference = draw(spell_reference(name))
    dns: list[str] = []
    common_names: list[str] = []
    for _ in range(draw(st.integers(1, 3))):
        place = draw(st.sampled_from(("san", "cn", "both")))
        if place in ("san", "both"):
            dns.append(draw(presented_name(name)))
        if place in ("cn", "both"):
            common_names.append(draw(presented_name(name, ascii_only=False)))
    ips = (str(ipaddress.ip_address("127.0.0.1")),) if draw(st.booleans()) else ()
    spec = LeafSpec(
        common_names=tuple(common_names),
        dns_names=tuple(dns),
        ip_addresses=ips,
        san_extension=bool(dns or ips),
    )
    return IdentityCase(spec, reference)


# -- whole scenarios -------------------------------------------------------


@st.composite
def generated_kinds(draw: st.DrawFn) -> CertKind:
    """Generate a certificate kind outside the catalogue.

    Half of the kinds come from :func:`identity_cases` (valid chain, names
    related to the reference), half from :func:`leaf_specs` with a reference
    taken from the leaf's own names. Shrinks towards a valid leaf for
    ``a.a`` connected to as ``a.a``.
    """
    if draw(st.booleans()):
        spec = draw(leaf_specs())
        names = [*spec.dns_names, *spec.ip_addresses, *spec.common_names]
        reference = draw(st.sampled_from(names)) if names else draw(dns_names())
    else:
        case = draw(identity_cases())
        spec, reference = case.leaf, case.reference
    return CertKind("generated", "leaf generated by Hypothesis", spec, reference)


@st.composite
def scenarios(
    draw: st.DrawFn,
    built_at: dt.datetime,
    *,
    kinds: st.SearchStrategy[CertKind] | None = None,
    client_versions: st.SearchStrategy[str] | None = None,
) -> Scenario:
    """Generate whole :class:`~harness.oracle.decision.Scenario` values.

    The certificate kind, EMS version and toggle, import, client version,
    action and its source, prompt answer and remembered state all vary.

    Args:
        built_at: The lab build time the declared windows refer to.
        kinds: Strategy for the kind; catalogue kinds and
            :func:`generated_kinds` by default.
        client_versions: Strategy for the client version; :func:`versions`
            by default.

    Shrinks towards the ``correct-fqdn`` kind imported on EMS 6.4.7 with the
    toggle on, client 6.4.7 with the default action, answer ``allow`` and
    nothing remembered: a new client connecting silently to a valid
    certificate.
    """
    if kinds is None:
        kinds = st.one_of(st.sampled_from(list(CATALOGUE.values())), generated_kinds())
    kind = draw(kinds)
    ems_version = draw(versions())
    toggle = None if not has_feature(ems_version) else not draw(st.booleans())
    imported = SAME_AS_KIND if draw(st.integers(0, 4)) else None
    action: Action | None = None
    source: ActionSource | None = None
    if draw(st.integers(0, 3)) == 3:
        action = draw(actions())
        source = draw(st.sampled_from(ActionSource))
    return Scenario(
        kind=kind,
        ems_version=ems_version,
        use_ssl_cert=toggle,
        imported=imported,
        client_version=draw(versions() if client_versions is None else client_versions),
        action=action,
        action_source=source,
        profile_action=draw(st.none() | actions()),
        installer_action=draw(st.none() | actions()),
        answer=draw(answers()),
        remembered=draw(st.sampled_from(Remembered)),
        built_at=built_at,
    )
