"""The certificate lab: CA roles, certificate kinds, and the builder."""

from harness.pki.kinds import CATALOGUE, CertKind, LeafSpec, get_kind, kind_names
from harness.pki.lab import BuiltKind, IssuedLeaf, Lab, LabError, build_lab
from harness.pki.roles import ROLES, CaRole

__all__ = [
    "CATALOGUE",
    "ROLES",
    "BuiltKind",
    "CaRole",
    "CertKind",
    "IssuedLeaf",
    "Lab",
    "LabError",
    "LeafSpec",
    "build_lab",
    "get_kind",
    "kind_names",
]
