"""The certificate lab: CA roles, certificate kinds, and the builder."""

from harness.pki.kinds import CATALOGUE, CertKind, LeafSpec, get_kind, kind_names
from harness.pki.lab import BuiltKind, Lab, LabError, build_lab
from harness.pki.roles import ROLES, CaRole

__all__ = [
    "CATALOGUE",
    "ROLES",
    "BuiltKind",
    "CaRole",
    "CertKind",
    "Lab",
    "LabError",
    "LeafSpec",
    "build_lab",
    "get_kind",
    "kind_names",
]
