"""Settings for the choices the behaviour specification had to make.

The vendor documentation is silent on a few points. Each choice the oracle
makes there is a named setting with a documented default, so a reviewer who
knows the product better can change it without editing code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields

from harness.model import Action, CnFallback

DEFAULT_LEGACY_SUBJECT_PATTERN = r"^FCTEMS[0-9A-Z]{10}$"


@dataclass(frozen=True)
class Assumptions:
    """The oracle's settings where the product documentation says nothing.

    Attributes:
        legacy_subject_pattern: Regular expression a legacy client (without
            standards validation) applies to the subject CN. Default: the
            vendor serial-number form, ``FCTEMS`` and ten of ``[0-9A-Z]``.
        cn_fallback: When the subject CN counts as a presented identity.
            ``when-no-san`` (default) uses it only if the certificate has no
            SAN dNSName; ``never`` follows RFC 9525; ``always`` is lenient.
        default_action: The invalid certificate action of a client that has
            neither a profile nor an installer action. Default ``warn``.
        aia_fetching: Whether clients fetch missing intermediates from the
            AIA caIssuers URL. Default off, and the only supported value.
    """

    legacy_subject_pattern: str = DEFAULT_LEGACY_SUBJECT_PATTERN
    cn_fallback: CnFallback = CnFallback.WHEN_NO_SAN
    default_action: Action = Action.WARN
    aia_fetching: bool = False

    def __post_init__(self) -> None:
        try:
            re.compile(self.legacy_subject_pattern)
        except re.error as exc:
            raise ValueError(
                f"invalid legacy_subject_pattern {self.legacy_subject_pattern!r}: {exc}"
            ) from exc
        object.__setattr__(self, "cn_fallback", CnFallback(self.cn_fallback))
        object.__setattr__(self, "default_action", Action(self.default_action))
        if self.aia_fetching:
            raise ValueError(
                "aia_fetching=True is not supported: the lab is offline, so set "
                "aia_fetching to false"
            )

    @classmethod
    def names(cls) -> list[str]:
        """Return the setting names, for help texts and documentation."""
        return [field.name for field in fields(cls)]


DEFAULT_ASSUMPTIONS = Assumptions()
