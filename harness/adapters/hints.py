"""Map the error texts of real clients to the reasons they can stand for.

The mapping is a hint for reports, never a verdict. One client error often
covers several reasons: OpenSSL's "unable to get local issuer certificate"
is both an unknown issuer and a chain sent without its intermediate. A
client also stops at its first error, where the oracle lists every reason.
"""

from __future__ import annotations

import re

from harness.model import Reason, sorted_reasons

_R = Reason

# Patterns over the lower-cased error text. OpenSSL's X509 verify messages
# (also used by Python's ssl, curl and Node) come first, then GnuTLS status
# texts, then Node error codes and service_identity messages.
_PATTERNS: tuple[tuple[re.Pattern[str], tuple[Reason, ...]], ...] = tuple(
    (re.compile(pattern), reasons)
    for pattern, reasons in (
        (r"hostname mismatch|ip address mismatch", (_R.HOSTNAME_MISMATCH,)),
        (r"no alternative certificate subject name", (_R.HOSTNAME_MISMATCH,)),
        (r"subject name does not match", (_R.HOSTNAME_MISMATCH,)),
        (r"certificate has expired", (_R.EXPIRED,)),
        (r"certificate is not yet valid", (_R.NOT_YET_VALID,)),
        (r"self[- ]signed certificate in certificate chain", (_R.UNTRUSTED_ISSUER,)),
        (r"self[- ]signed certificate(?! in)", (_R.SELF_SIGNED,)),
        (
            r"unable to get local issuer certificate|unable to get issuer certificate"
            r"|unable to verify the first certificate",
            (_R.UNTRUSTED_ISSUER, _R.INCOMPLETE_CHAIN),
        ),
        (r"invalid ca certificate|path length constraint", (_R.INVALID_CA,)),
        (
            r"unsupported certificate purpose|unsuitable certificate purpose",
            (_R.WRONG_PURPOSE,),
        ),
        # GnuTLS certificate status texts.
        (r"name in the certificate does not match", (_R.HOSTNAME_MISMATCH,)),
        (r"uses expired certificate|certificate has expired", (_R.EXPIRED,)),
        (r"not activated certificate|not yet activated", (_R.NOT_YET_VALID,)),
        (
            r"certificate issuer is unknown|signer not found",
            (_R.UNTRUSTED_ISSUER, _R.INCOMPLETE_CHAIN),
        ),
        (r"issuer is not a ca|signer is not a ca|not a ca", (_R.INVALID_CA,)),
        (r"purpose|key usage violation", (_R.WRONG_PURPOSE,)),
        # Node error codes.
        (r"err_tls_cert_altname_invalid", (_R.HOSTNAME_MISMATCH,)),
        (r"cert_has_expired", (_R.EXPIRED,)),
        (r"cert_not_yet_valid", (_R.NOT_YET_VALID,)),
        (r"depth_zero_self_signed_cert", (_R.SELF_SIGNED,)),
        (r"self_signed_cert_in_chain", (_R.UNTRUSTED_ISSUER,)),
        (
            r"unable_to_get_issuer_cert|unable_to_verify_leaf_signature",
            (_R.UNTRUSTED_ISSUER, _R.INCOMPLETE_CHAIN),
        ),
        (r"invalid_ca", (_R.INVALID_CA,)),
        (r"invalid_purpose", (_R.WRONG_PURPOSE,)),
        # service_identity.
        (r"no_subject_alt_name|does not match|dns-id|ip-id", (_R.HOSTNAME_MISMATCH,)),
    )
)


def reasons_from_text(text: str) -> tuple[Reason, ...]:
    """Return the reasons that a client's error ``text`` can stand for."""
    lowered = text.lower()
    found: set[Reason] = set()
    for pattern, reasons in _PATTERNS:
        if pattern.search(lowered):
            found.update(reasons)
    return tuple(sorted_reasons(found))


def openssl_verify_error(code: int) -> str:
    """Return the text of X509 verify error ``code`` in pyOpenSSL's OpenSSL.

    The codes differ between OpenSSL releases, and pyOpenSSL may link another
    release than the system's, so the text comes from the linked library.
    """
    try:
        # NOTE: OpenSSL._util is private to pyOpenSSL. Without it the detail
        # shows only the code number.
        from OpenSSL._util import ffi, lib

        text = ffi.string(lib.X509_verify_cert_error_string(code))
    except (ImportError, AttributeError):
        return f"verify error {code}"
    return text.decode("ascii", "replace") if isinstance(text, bytes) else str(text)
