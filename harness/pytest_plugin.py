"""pytest plugin of the harness, registered through the ``pytest11`` entry point.

Installing the package is enough: the fixtures below are available in every
test session.

Fixtures:
    cert_lab: the certificate lab, built once per session (per worker under
        pytest-xdist) in a temporary folder.
"""

from __future__ import annotations

import pytest

from harness.pki import Lab, build_lab


@pytest.fixture(scope="session")
def cert_lab(tmp_path_factory: pytest.TempPathFactory) -> Lab:
    """Return the certificate lab with every catalogue kind built."""
    return build_lab(tmp_path_factory.mktemp("cert-lab"))
