"""Hypothesis settings profiles of the harness.

Three profiles are registered when this module is imported (the pytest plugin
imports it), and :func:`load_profile_from_env` selects one from the
``HYPOTHESIS_PROFILE`` environment variable:

``dev``
    The default: 20 examples per property, for a quick local run.
``ci``
    At least 200 examples per property and no deadline, because handshakes
    over loopback on a loaded CI machine vary in time. It is the default
    when the ``CI`` environment variable is set (as CI services do), and the
    tox environments set ``HYPOTHESIS_PROFILE=ci``.
``thorough``
    2000 examples per property, for a long run before a release.

Properties that drive real TLS handshakes keep the profile's example count;
the stateful suites scale it down with :func:`stateful_settings`, because
each of their examples runs many steps.
"""

from __future__ import annotations

import logging
import os

from hypothesis import HealthCheck, settings

logger = logging.getLogger(__name__)

PROFILE_ENV = "HYPOTHESIS_PROFILE"
DEFAULT_PROFILE = "dev"

PROFILES: dict[str, settings] = {
    "dev": settings(max_examples=20, deadline=None),
    "ci": settings(
        max_examples=200,
        deadline=None,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow],
    ),
    "thorough": settings(
        max_examples=2000,
        deadline=None,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow],
    ),
}

for _name, _settings in PROFILES.items():
    settings.register_profile(_name, _settings)


def _default_profile() -> str:
    running_in_ci = os.environ.get("CI", "").strip().lower() not in ("", "0", "false")
    return "ci" if running_in_ci else DEFAULT_PROFILE


def load_profile_from_env() -> str:
    """Load the profile named by ``HYPOTHESIS_PROFILE`` and return its name.

    An unset or empty variable selects ``ci`` when the ``CI`` variable is set
    to anything but an empty string, ``0`` or ``false``, and ``dev`` otherwise.

    Raises:
        ValueError: the variable names a profile that is not registered.
    """
    name = os.environ.get(PROFILE_ENV) or _default_profile()
    if name not in PROFILES:
        raise ValueError(
            f"invalid {PROFILE_ENV}={name!r}: expected one of {', '.join(PROFILES)}"
        )
    settings.load_profile(name)
    logger.debug("loaded Hypothesis profile %s", name)
    return name


def stateful_settings(steps: int = 20) -> settings:
    """Return settings for a stateful suite under the current profile.

    A stateful example runs up to ``steps`` rules, so it gets a tenth of the
    profile's examples (at least five).
    """
    current = settings()
    return settings(
        current,
        max_examples=max(5, current.max_examples // 10),
        stateful_step_count=steps,
    )
