"""Render ``docs/catalogue.md`` from the CA roles and the certificate catalogue.

Run ``python -m harness.docs_catalogue > docs/catalogue.md`` after changing
:mod:`harness.pki.roles` or :mod:`harness.pki.kinds`; a test fails while the
file is stale. Windows are rendered relative to the lab's build time, and the
expected reasons are computed by the oracle for a fixed build time, so the
page does not change from one day to the next.
"""

from __future__ import annotations

import datetime as dt
import sys

from harness.model import CnFallback
from harness.oracle.standards import expected_reasons_for_kind
from harness.pki.kinds import CATALOGUE, CertKind
from harness.pki.roles import ROLES, CaRole

REGENERATE_COMMAND = "python -m harness.docs_catalogue > docs/catalogue.md"
# Any build time gives the same reasons, because every window is relative to
# it and trustme's fixed CA window (2000 to 3000) contains it.
_REFERENCE_BUILD_TIME = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)


def _escape(text: str) -> str:
    """Return ``text`` with unprintable characters (such as NUL) as ``\\xNN``."""
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)


def _code(text: str) -> str:
    return f"`{_escape(text)}`"


def _codes(items: tuple[str, ...] | list[str], empty: str = "none") -> str:
    return ", ".join(_code(item) for item in items) if items else empty


def _offset(delta: dt.timedelta) -> str:
    """Render an offset from the build time, e.g. ``-1 day`` or ``+365 days``."""
    sign = "-" if delta < dt.timedelta(0) else "+"
    delta = abs(delta)
    if delta % dt.timedelta(days=1):
        hours = delta / dt.timedelta(hours=1)
        return f"{sign}{hours:g} hours"
    days = delta.days
    return f"{sign}{days} day" if days == 1 else f"{sign}{days} days"


def _window(window: tuple[dt.timedelta, dt.timedelta] | None) -> str:
    if window is None:
        return "2000-01-01 .. 3000-01-01 (trustme's fixed CA window)"
    return f"{_offset(window[0])} .. {_offset(window[1])}"


def _reasons(kind: CertKind, mode: CnFallback) -> str:
    reasons = expected_reasons_for_kind(kind, mode, _REFERENCE_BUILD_TIME)
    return ", ".join(_code(r.value) for r in reasons) if reasons else "valid"


def _role_row(role: CaRole) -> str:
    cells = [
        _code(role.name),
        role.description,
        _code(role.issuer) if role.issuer else "self-signed",
        "yes" if role.in_store else "no",
        "yes" if role.is_ca else "no",
        _window(role.window),
        role.built_with,
    ]
    return "| " + " | ".join(cells) + " |"


def _kind_section(kind: CertKind) -> list[str]:
    leaf = kind.leaf
    subject = "empty" if leaf.empty_subject else f"CN {_codes(leaf.common_names)}"
    if leaf.san_extension:
        san = _codes([*leaf.dns_names, *leaf.ip_addresses, *leaf.emails])
    else:
        san = "no subjectAltName extension"
    eku = "no extension" if leaf.eku is None else _codes(leaf.eku)
    lines = [
        f"### `{kind.name}`",
        "",
        f"{kind.description}.",
        "",
        f"- reference identity: {_code(kind.reference_identity)}",
        f"- subject: {subject}",
        f"- SAN: {san}",
        f"- extendedKeyUsage: {eku}",
        f"- issuer: {'self-signed' if leaf.issuer == 'self' else _code(leaf.issuer)}",
        f"- chain sent after the leaf: {_codes(leaf.chain, empty='nothing')}",
        f"- leaf window: {_window(leaf.window)}",
        f"- tags: {_codes(kind.tags)}",
        "",
        "| cn_fallback | expected reasons |",
        "|---|---|",
    ]
    lines += [f"| `{mode.value}` | {_reasons(kind, mode)} |" for mode in CnFallback]
    return [*lines, ""]


def render_catalogue() -> str:
    """Render the Markdown page that documents the CA roles and every kind."""
    lines = [
        "# Certificate catalogue",
        "",
        "This page is generated from `harness.pki`; edit the code, then run",
        "",
        f"    {REGENERATE_COMMAND}",
        "",
        "Windows are relative to the lab's build time. Expected reasons are the",
        "oracle's standards validation at build time, for each `cn_fallback`",
        "setting.",
        "",
        "## CA roles",
        "",
        "| role | description | issuer | in trust store | CA | window | built with |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [_role_row(role) for role in ROLES.values()]
    lines += [
        "",
        "## Expected reasons at a glance",
        "",
        "| kind | " + " | ".join(f"`{m.value}`" for m in CnFallback) + " |",
        "|---|" + "---|" * len(CnFallback),
    ]
    for kind in CATALOGUE.values():
        cells = [_reasons(kind, mode) for mode in CnFallback]
        lines.append(f"| `{kind.name}` | " + " | ".join(cells) + " |")
    lines += ["", f"## Kinds ({len(CATALOGUE)})", ""]
    for kind in CATALOGUE.values():
        lines += _kind_section(kind)
    return "\n".join(lines).rstrip("\n") + "\n"


def main() -> int:
    """Write the rendered page to stdout; return the exit code."""
    sys.stdout.write(render_catalogue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
