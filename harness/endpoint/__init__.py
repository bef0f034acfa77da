"""The reference endpoint client and its remembered-certificate file.

It decides from the bytes it receives, with OpenSSL and cryptography, and
never consults :mod:`harness.oracle`.
"""

from harness.endpoint.client import (
    EndpointClient,
    Observation,
    PromptInfo,
    TelemetrySummary,
)
from harness.endpoint.identity import matches_reference, normalize_reference
from harness.endpoint.memory import MemoryFile, MemoryFileError, RememberedCert
from harness.endpoint.validation import (
    TrustStore,
    TrustStoreError,
    Validation,
    validate,
    validate_der,
)

__all__ = [
    "EndpointClient",
    "MemoryFile",
    "MemoryFileError",
    "Observation",
    "PromptInfo",
    "RememberedCert",
    "TelemetrySummary",
    "TrustStore",
    "TrustStoreError",
    "Validation",
    "matches_reference",
    "normalize_reference",
    "validate",
    "validate_der",
]
