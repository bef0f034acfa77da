"""pytest plugin of the harness, registered through the ``pytest11`` entry point.

Installing the package is enough: the fixtures below are available in every
test session, and importing the plugin registers the Hypothesis profiles of
:mod:`harness.hypothesis_profiles` and loads the one named by the
``HYPOTHESIS_PROFILE`` environment variable (``dev`` when unset).

Fixtures:
    cert_lab: the certificate lab, built once per session (per worker under
        pytest-xdist) in a temporary folder.
    ems_factory: starts mock EMS servers serving a lab kind, an issued leaf
        or :class:`~harness.ems.settings.EmsSettings`; every server it
        started is stopped at teardown.
    endpoint_factory: creates reference endpoint clients that trust the
        lab's store, each with a fresh remembered-certificate file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from harness.ems.server import MockEms
from harness.ems.settings import EmsSettings
from harness.endpoint import EndpointClient
from harness.hypothesis_profiles import load_profile_from_env
from harness.model import Action
from harness.pki import Lab, build_lab
from harness.pki.lab import IssuedLeaf

load_profile_from_env()

EmsFactory = Callable[..., MockEms]


@pytest.fixture(scope="session")
def cert_lab(tmp_path_factory: pytest.TempPathFactory) -> Lab:
    """Return the certificate lab with every catalogue kind built."""
    return build_lab(tmp_path_factory.mktemp("cert-lab"))


@pytest.fixture
def ems_factory(cert_lab: Lab) -> Iterator[EmsFactory]:
    """Return a factory that starts a mock EMS on loopback.

    Call it as ``ems_factory(kind="correct-fqdn", profile_action="warn")``,
    ``ems_factory(leaf=cert_lab.issue(spec))`` or
    ``ems_factory(settings=EmsSettings(...))``; further keyword arguments go
    to :class:`~harness.ems.server.MockEms`. The server listens on an
    ephemeral port unless ``port`` is given, and is stopped at teardown.
    """
    started: list[MockEms] = []

    def start(
        kind: str | None = None,
        *,
        leaf: IssuedLeaf | None = None,
        settings: EmsSettings | None = None,
        profile_action: Action | str | None = Action.WARN,
        **kwargs: Any,
    ) -> MockEms:
        sources = [kind is not None, leaf is not None, settings is not None]
        if sum(sources) > 1:
            raise TypeError("give at most one of kind, leaf and settings")
        if settings is not None:
            kwargs.setdefault("port", 0)
            ems = MockEms.from_settings(settings, cert_lab, **kwargs)
        else:
            action = None if profile_action is None else Action(profile_action)
            kwargs["profile_action"] = action
            if leaf is not None:
                ems = MockEms(leaf.chain_pem, leaf.key_pem, **kwargs)
            else:
                ems = MockEms.from_kind(cert_lab, kind or "correct-fqdn", **kwargs)
        ems.start()
        started.append(ems)
        return ems

    yield start

    for ems in reversed(started):
        ems.stop()


@pytest.fixture
def endpoint_factory(
    cert_lab: Lab, tmp_path_factory: pytest.TempPathFactory
) -> Callable[..., EndpointClient]:
    """Return a factory of reference clients, each with its own memory file.

    Call it as ``endpoint_factory("7.0.2", prompt=..., action=...)``; keyword
    arguments go to :class:`~harness.endpoint.EndpointClient`. The trust
    store is the lab's, and the remembered-certificate file is a fresh file
    in a temporary folder unless ``memory_path`` is given.
    """

    def create(version: str = "7.0.2", **kwargs: Any) -> EndpointClient:
        if "memory_path" not in kwargs:
            folder = tmp_path_factory.mktemp("endpoint")
            kwargs["memory_path"] = folder / "memory.json"
        return EndpointClient(version, cert_lab.trust_store_path, **kwargs)

    return create
