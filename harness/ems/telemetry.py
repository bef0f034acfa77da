"""Framing of the mock telemetry protocol spoken after the TLS handshake.

The real endpoint-control protocol is private, so the mock defines its own.
A frame is a fixed 10-byte header followed by a JSON object::

    magic   b"EMST"          4 bytes
    version 1                1 byte (PROTOCOL_VERSION)
    type    MessageType      1 byte
    length  payload length   4 bytes, big-endian unsigned, at most MAX_PAYLOAD
    payload UTF-8 JSON object

:class:`FrameDecoder` is incremental: it buffers partial frames across
:meth:`FrameDecoder.feed` calls, so it works on a stream read in arbitrary
chunks. Every malformed input raises :class:`FrameError`; once that happens
the stream is out of sync and the connection should be closed.
"""

from __future__ import annotations

import enum
import json
import struct
from dataclasses import dataclass
from typing import Any

MAGIC = b"EMST"
PROTOCOL_VERSION = 1
MAX_PAYLOAD = 65536

_HEADER = struct.Struct("!4sBBI")
HEADER_SIZE = _HEADER.size


class MessageType(enum.IntEnum):
    """Message types; the comment names the sender."""

    REGISTER = 1  # client
    LICENSE = 2  # server
    ENDPOINT_INFO = 3  # client
    CONFIG = 4  # server
    COMMAND = 5  # server
    COMMAND_RESULT = 6  # client
    ERROR = 7  # server, before it closes on a protocol error
    BYE = 8  # client, before a clean close


CLIENT_MESSAGES = frozenset(
    {
        MessageType.REGISTER,
        MessageType.ENDPOINT_INFO,
        MessageType.COMMAND_RESULT,
        MessageType.BYE,
    }
)
SERVER_MESSAGES = frozenset(MessageType) - CLIENT_MESSAGES


class FrameError(ValueError):
    """A frame that breaks the wire format; the message names the rule."""


@dataclass(frozen=True)
class Frame:
    """One decoded message."""

    type: MessageType
    payload: dict[str, Any]
    version: int = PROTOCOL_VERSION


def encode_frame(msg_type: MessageType, payload: dict[str, Any]) -> bytes:
    """Encode one message as header plus compact UTF-8 JSON.

    Raises:
        FrameError: the encoded payload is longer than :data:`MAX_PAYLOAD`.
        TypeError: ``payload`` is not a dict or contains values JSON cannot encode.
    """
    if not isinstance(payload, dict):
        raise TypeError(f"payload must be a dict, got {type(payload).__name__}")
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    if len(body) > MAX_PAYLOAD:
        raise FrameError(
            f"payload of {len(body)} bytes exceeds the maximum of {MAX_PAYLOAD}"
        )
    header = _HEADER.pack(
        MAGIC, PROTOCOL_VERSION, int(MessageType(msg_type)), len(body)
    )
    return header + body


class FrameDecoder:
    """Incremental decoder: feed bytes as they arrive, get complete frames."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    @property
    def buffered(self) -> int:
        """Number of bytes received that do not yet form a complete frame."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Frame]:
        """Append ``data`` and return every frame it completes, in order.

        The header is checked as soon as its 10 bytes are present, so an
        oversized length is rejected before its payload is buffered.

        Raises:
            FrameError: bad magic, unsupported version, unknown type, oversized
                length, invalid UTF-8 or JSON, or a payload that is not an
                object.
        """
        self._buffer += data
        frames: list[Frame] = []
        while len(self._buffer) >= HEADER_SIZE:
            msg_type, version, length = _parse_header(bytes(self._buffer[:HEADER_SIZE]))
            end = HEADER_SIZE + length
            if len(self._buffer) < end:
                break
            body = bytes(self._buffer[HEADER_SIZE:end])
            del self._buffer[:end]
            frames.append(Frame(msg_type, _parse_payload(msg_type, body), version))
        return frames


def _parse_header(header: bytes) -> tuple[MessageType, int, int]:
    magic, version, raw_type, length = _HEADER.unpack(header)
    if magic != MAGIC:
        raise FrameError(f"bad magic {magic!r}, expected {MAGIC!r}")
    if version != PROTOCOL_VERSION:
        raise FrameError(
            f"unsupported protocol version {version}, expected {PROTOCOL_VERSION}"
        )
    try:
        msg_type = MessageType(raw_type)
    except ValueError:
        raise FrameError(f"unknown message type {raw_type}") from None
    if length > MAX_PAYLOAD:
        raise FrameError(
            f"oversized payload length {length}, the maximum is {MAX_PAYLOAD}"
        )
    return msg_type, version, length


def _parse_payload(msg_type: MessageType, body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise FrameError(f"invalid UTF-8 in {msg_type.name} payload: {exc}") from None
    except json.JSONDecodeError as exc:
        raise FrameError(f"invalid JSON in {msg_type.name} payload: {exc}") from None
    except RecursionError:
        # A 64 KiB payload of nested brackets exceeds the parser's recursion limit.
        raise FrameError(f"{msg_type.name} payload nests too deeply") from None
    if not isinstance(payload, dict):
        raise FrameError(
            f"{msg_type.name} payload is not an object but {type(payload).__name__}"
        )
    return payload
