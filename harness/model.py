"""Vocabulary shared by the oracle and the clients under test.

Only names live here: reasons, actions, outcome names and which certificate
the EMS presents. Decisions do not.
"""

from __future__ import annotations

import enum


class Reason(enum.StrEnum):
    """Reason a certificate is invalid under standards validation."""

    HOSTNAME_MISMATCH = "hostname-mismatch"
    EXPIRED = "expired"
    NOT_YET_VALID = "not-yet-valid"
    SELF_SIGNED = "self-signed"
    UNTRUSTED_ISSUER = "untrusted-issuer"
    INCOMPLETE_CHAIN = "incomplete-chain"
    INVALID_CA = "invalid-ca"
    WRONG_PURPOSE = "wrong-purpose"


# Reasons in report order: identity first, then time, trust and purpose.
REASON_ORDER: tuple[Reason, ...] = tuple(Reason)


def sorted_reasons(reasons: frozenset[Reason] | set[Reason]) -> list[Reason]:
    """Return ``reasons`` in :data:`REASON_ORDER`."""
    return [reason for reason in REASON_ORDER if reason in reasons]


class Action(enum.StrEnum):
    """The admin's *invalid certificate action*."""

    ALLOW = "allow"
    WARN = "warn"
    DENY = "deny"


class Answer(enum.StrEnum):
    """The user's answer to the warning prompt."""

    ALLOW = "allow"
    DENY = "deny"


class ActionSource(enum.StrEnum):
    """Origin of a client's current action, highest priority first."""

    PROFILE = "profile"
    INSTALLER = "installer"
    DEFAULT = "default"


class CnFallback(enum.StrEnum):
    """When the subject common name counts as a presented identity."""

    WHEN_NO_SAN = "when-no-san"
    NEVER = "never"
    ALWAYS = "always"


class PresentedCertificate(enum.StrEnum):
    """The certificate the EMS presents on endpoint control."""

    VENDOR = "vendor"
    IMPORTED = "imported"
    BUILTIN_DEFAULT = "builtin-default"


class OutcomeName(enum.StrEnum):
    """Documented names of what happened on one connection attempt."""

    CONNECTED_VALID = "connected-valid"
    CONNECTED_LEGACY = "connected-legacy"
    CONNECTED_ALLOW = "connected-allow"
    CONNECTED_REMEMBERED = "connected-remembered"
    CONNECTED_PROMPT_ALLOWED = "connected-prompt-allowed"
    REFUSED_LEGACY = "refused-legacy"
    REFUSED_DENY = "refused-deny"
    REFUSED_PROMPT_DENIED = "refused-prompt-denied"
    HANDSHAKE_FAILED = "handshake-failed"
