"""Just enough DER to edit a certificate's bytes and sign them again.

cryptography's builder refuses to emit some encodings the fuzzers need (a
GeneralizedTime before 2050, for example). These helpers split a
certificate into its three top-level parts, let a caller edit the
``tbsCertificate`` bytes, and sign the result with a lab key so that only
the edited field is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

TAG_SEQUENCE = 0x30
TAG_BIT_STRING = 0x03
TAG_UTC_TIME = 0x17
TAG_GENERALIZED_TIME = 0x18


class DerError(ValueError):
    """Bytes that are not the DER structure a helper expected."""


@dataclass(frozen=True)
class Tlv:
    """One DER element: its tag, and where its header and content lie."""

    tag: int
    start: int
    content_start: int
    end: int

    def content(self, data: bytes) -> bytes:
        """Return the element's content octets inside ``data``."""
        return data[self.content_start : self.end]

    def whole(self, data: bytes) -> bytes:
        """Return the element's full encoding inside ``data``."""
        return data[self.start : self.end]


def read_tlv(data: bytes, offset: int = 0) -> Tlv:
    """Parse the element that starts at ``offset`` (single-byte tags only).

    Raises:
        DerError: truncated input, an indefinite or over-long length.
    """
    if offset + 2 > len(data):
        raise DerError(f"truncated element header at offset {offset}")
    tag = data[offset]
    first = data[offset + 1]
    position = offset + 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4:
            raise DerError(f"unsupported length form 0x{first:02x} at offset {offset}")
        if position + count > len(data):
            raise DerError(f"truncated length at offset {offset}")
        length = int.from_bytes(data[position : position + count], "big")
        position += count
    end = position + length
    if end > len(data):
        raise DerError(f"element at offset {offset} runs past the end ({end})")
    return Tlv(tag, offset, position, end)


def children(data: bytes, parent: Tlv) -> list[Tlv]:
    """Return the elements directly inside the constructed element ``parent``."""
    items = []
    offset = parent.content_start
    while offset < parent.end:
        item = read_tlv(data, offset)
        items.append(item)
        offset = item.end
    return items


def encode_tlv(tag: int, content: bytes) -> bytes:
    """Encode one element with a definite, minimal length."""
    length = len(content)
    if length < 0x80:
        return bytes([tag, length]) + content
    size = (length.bit_length() + 7) // 8
    return bytes([tag, 0x80 | size]) + length.to_bytes(size, "big") + content


def split_certificate(der: bytes) -> tuple[bytes, bytes, bytes]:
    """Split a certificate into tbsCertificate, signatureAlgorithm, signature.

    Each part is returned as its full encoding.
    """
    outer = read_tlv(der)
    if outer.tag != TAG_SEQUENCE:
        raise DerError(f"certificate starts with tag 0x{outer.tag:02x}")
    parts = children(der, outer)
    if len(parts) != 3:
        raise DerError(f"certificate has {len(parts)} parts, expected 3")
    tbs, algorithm, signature = (part.whole(der) for part in parts)
    return tbs, algorithm, signature


def tbs_fields(tbs: bytes) -> list[Tlv]:
    """Return the top-level fields of a tbsCertificate encoding, with offsets.

    With an explicit version the order is version, serialNumber, signature,
    issuer, validity, subject, subjectPublicKeyInfo, then optional fields.
    """
    return children(tbs, read_tlv(tbs))


def replace_tbs_field(tbs: bytes, index: int, new_field: bytes) -> bytes:
    """Return ``tbs`` with its top-level field ``index`` replaced."""
    fields = tbs_fields(tbs)
    parts = [field.whole(tbs) for field in fields]
    parts[index] = new_field
    return encode_tlv(TAG_SEQUENCE, b"".join(parts))


def sign_tbs(tbs: bytes, algorithm: bytes, key: PrivateKey) -> bytes:
    """Sign ``tbs`` with SHA-256 and assemble a certificate.

    ``algorithm`` must already name the matching signature algorithm, which
    holds whenever it comes from a certificate the same key signed.
    """
    if isinstance(key, ec.EllipticCurvePrivateKey):
        signature = key.sign(tbs, ec.ECDSA(hashes.SHA256()))
    else:
        signature = key.sign(tbs, padding.PKCS1v15(), hashes.SHA256())
    bit_string = encode_tlv(TAG_BIT_STRING, b"\x00" + signature)
    return encode_tlv(TAG_SEQUENCE, tbs + algorithm + bit_string)
