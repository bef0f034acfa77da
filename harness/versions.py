"""Product versions and which of them have standards certificate validation.

The feature shipped in two maintenance branches at once, so "has the feature"
is not a single ``>=`` comparison: 7.0.0 and 7.0.1 are newer than 6.4.7 and
still legacy. :data:`FEATURE_TABLE` is the one place that records this.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

_VERSION_RE = re.compile(r"^\d+(\.\d+){1,3}$")


@functools.total_ordering
@dataclass(frozen=True)
class Version:
    """A dotted product version that compares numerically part by part."""

    parts: tuple[int, ...]

    @classmethod
    def parse(cls, text: str | Version) -> Version:
        """Parse ``"6.4.7"`` into a :class:`Version`.

        Raises:
            ValueError: the text is not two to four dot-separated integers.
        """
        if isinstance(text, Version):
            return text
        cleaned = text.strip()
        if not _VERSION_RE.match(cleaned):
            raise ValueError(
                f"invalid version {text!r}: expected dotted integers such as 7.0.2"
            )
        return cls(tuple(int(part) for part in cleaned.split(".")))

    @property
    def branch(self) -> tuple[int, int]:
        """The maintenance branch, for example ``(7, 0)``."""
        return (self.parts[0], self.parts[1])

    def _padded(self) -> tuple[int, ...]:
        return self.parts + (0,) * (4 - len(self.parts))

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self._padded() < other._padded()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self._padded() == other._padded()

    def __hash__(self) -> int:
        return hash(self._padded())

    def __str__(self) -> str:
        return ".".join(str(part) for part in self.parts)


# First version of each branch with standards validation (client and EMS alike).
# ``None`` means the branch never got it. Branches newer than every row have it
# in every version; branches older than every row never have it.
FEATURE_TABLE: dict[tuple[int, int], Version | None] = {
    (6, 0): None,
    (6, 2): None,
    (6, 4): Version((6, 4, 7)),
    (7, 0): Version((7, 0, 2)),
}

# Versions the matrix covers by default: both feature branches and their edges.
MATRIX_VERSIONS: tuple[str, ...] = ("6.4.6", "6.4.7", "7.0.1", "7.0.2", "7.2.0")


def has_feature(version: str | Version) -> bool:
    """Return whether ``version`` validates certificates the standard way."""
    parsed = Version.parse(version)
    branch = parsed.branch
    if branch in FEATURE_TABLE:
        first = FEATURE_TABLE[branch]
        return first is not None and parsed >= first
    newest_listed = max(FEATURE_TABLE)
    return branch > newest_listed


def version_class(version: str | Version) -> str:
    """Return ``"new"`` or ``"legacy"`` for ``version``."""
    return "new" if has_feature(version) else "legacy"
