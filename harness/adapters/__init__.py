"""Adapters that drive real TLS clients through one handshake each.

Usage::

    from harness.adapters import get_adapter

    adapter = get_adapter("curl")
    ok, why = adapter.availability()
    result = adapter.check(
        host="127.0.0.1", port=port, servername="ems.example.com", cafile=store
    )
    result.status  # "accepted", "rejected", "error", "timeout" or "skipped"

Known, documented differences of these clients from standards validation
live in :mod:`harness.adapters.deviations`.
"""

from __future__ import annotations

from harness.adapters.base import STATUSES, Adapter, AdapterResult, Status
from harness.adapters.deviations import DEVIATIONS, Deviation, lookup_deviation
from harness.adapters.inprocess import PyOpenSslAdapter, PythonSslAdapter
from harness.adapters.programs import (
    CommandAdapter,
    CurlAdapter,
    GnutlsAdapter,
    NodeAdapter,
    OpensslAdapter,
)

ADAPTERS: dict[str, Adapter] = {
    adapter.name: adapter
    for adapter in (
        PythonSslAdapter(),
        PyOpenSslAdapter(),
        OpensslAdapter(),
        CurlAdapter(),
        GnutlsAdapter(),
        NodeAdapter(),
        CommandAdapter(),
    )
}
"""Every adapter by name. The ``command`` entry has no template, so it is
unavailable; :func:`get_adapter` builds one with a template."""


def get_adapter(name: str, *, template: str | None = None) -> Adapter:
    """Return the adapter called ``name``.

    Args:
        name: One of :data:`ADAPTERS`.
        template: Command template, only for ``command``; see
            :class:`~harness.adapters.programs.CommandAdapter`.

    Raises:
        KeyError: no such adapter; the message lists the known names.
        ValueError: a template given for another adapter, or an empty one.
    """
    if name not in ADAPTERS:
        raise KeyError(
            f"unknown adapter {name!r}; known adapters: {', '.join(ADAPTERS)}"
        )
    if name == "command" and template is not None:
        return CommandAdapter(template)
    if template is not None:
        raise ValueError(f"adapter {name!r} takes no command template")
    return ADAPTERS[name]


__all__ = [
    "ADAPTERS",
    "DEVIATIONS",
    "STATUSES",
    "Adapter",
    "AdapterResult",
    "CommandAdapter",
    "Deviation",
    "Status",
    "get_adapter",
    "lookup_deviation",
]
