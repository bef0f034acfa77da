"""Telemetry frame codec: round trips, incremental decoding and each error rule."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.ems.telemetry import (
    HEADER_SIZE,
    MAGIC,
    MAX_PAYLOAD,
    PROTOCOL_VERSION,
    Frame,
    FrameDecoder,
    FrameError,
    MessageType,
    encode_frame,
)


def _raw(magic: bytes, version: int, msg_type: int, body: bytes) -> bytes:
    return struct.pack("!4sBBI", magic, version, msg_type, len(body)) + body


def test_header_layout() -> None:
    data = encode_frame(MessageType.REGISTER, {"endpoint_id": "e1"})

    assert data[:4] == MAGIC
    assert data[4] == PROTOCOL_VERSION
    assert data[5] == MessageType.REGISTER
    assert struct.unpack("!I", data[6:10])[0] == len(data) - HEADER_SIZE
    assert data[HEADER_SIZE:] == b'{"endpoint_id":"e1"}'


def test_round_trip_every_type() -> None:
    decoder = FrameDecoder()
    stream = b"".join(encode_frame(t, {"n": int(t)}) for t in MessageType)

    frames = decoder.feed(stream)

    assert [f.type for f in frames] == list(MessageType)
    assert [f.payload for f in frames] == [{"n": int(t)} for t in MessageType]
    assert decoder.buffered == 0


def test_decoder_byte_by_byte() -> None:
    data = encode_frame(MessageType.CONFIG, {"profile": {"name": "p", "x": "ü"}})
    decoder = FrameDecoder()

    frames: list[Frame] = []
    for i in range(len(data)):
        frames += decoder.feed(data[i : i + 1])

    assert frames == [
        Frame(MessageType.CONFIG, {"profile": {"name": "p", "x": "ü"}}, 1)
    ]


def test_partial_frame_stays_buffered() -> None:
    data = encode_frame(MessageType.BYE, {})
    decoder = FrameDecoder()

    assert decoder.feed(data[:-1]) == []
    assert decoder.buffered == len(data) - 1


def test_payload_at_maximum_is_accepted() -> None:
    filler = "a" * (MAX_PAYLOAD - len('{"f":""}'))
    data = encode_frame(MessageType.ENDPOINT_INFO, {"f": filler})

    frames = FrameDecoder().feed(data)

    assert len(data) == HEADER_SIZE + MAX_PAYLOAD
    assert frames[0].payload["f"] == filler


def test_encode_rejects_oversized_payload() -> None:
    with pytest.raises(FrameError, match="exceeds the maximum of 65536"):
        encode_frame(MessageType.ENDPOINT_INFO, {"f": "a" * MAX_PAYLOAD})


def test_encode_rejects_non_dict() -> None:
    with pytest.raises(TypeError, match="payload must be a dict"):
        encode_frame(MessageType.BYE, [])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (_raw(b"HTTP", 1, 1, b"{}"), "bad magic"),
        (_raw(MAGIC, 2, 1, b"{}"), "unsupported protocol version 2"),
        (_raw(MAGIC, 1, 0, b"{}"), "unknown message type 0"),
        (_raw(MAGIC, 1, 99, b"{}"), "unknown message type 99"),
        (_raw(MAGIC, 1, 1, b"{not json"), "invalid JSON in REGISTER"),
        (_raw(MAGIC, 1, 1, b"\xff\xfe"), "invalid UTF-8 in REGISTER"),
        (_raw(MAGIC, 1, 1, b"[1, 2]"), "payload is not an object but list"),
        (_raw(MAGIC, 1, 3, b'"text"'), "payload is not an object but str"),
        (_raw(MAGIC, 1, 1, b"[" * 60000), "nests too deeply|invalid JSON"),
    ],
    ids=[
        "bad-magic",
        "version",
        "type-zero",
        "type-99",
        "json",
        "utf8",
        "list",
        "string",
        "deep-nesting",
    ],
)
def test_decoder_rejects(data: bytes, match: str) -> None:
    with pytest.raises(FrameError, match=match):
        FrameDecoder().feed(data)


def test_oversized_length_rejected_from_header_alone() -> None:
    header = struct.pack("!4sBBI", MAGIC, 1, 1, MAX_PAYLOAD + 1)

    with pytest.raises(FrameError, match="oversized payload length 65537"):
        FrameDecoder().feed(header)


def test_header_checked_before_payload_arrives() -> None:
    with pytest.raises(FrameError, match="bad magic"):
        FrameDecoder().feed(b"GET / HTTP/1.1\r\n")


def test_frame_error_is_value_error() -> None:
    assert issubclass(FrameError, ValueError)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@given(
    messages=st.lists(
        st.tuples(
            st.sampled_from(list(MessageType)),
            st.dictionaries(st.text(max_size=8), _json_values, max_size=5),
        ),
        max_size=6,
    ),
    cut=st.integers(min_value=1, max_value=50),
)
def test_any_chunking_round_trips(
    messages: list[tuple[MessageType, dict[str, object]]], cut: int
) -> None:
    stream = b"".join(encode_frame(t, p) for t, p in messages)
    decoder = FrameDecoder()

    frames: list[Frame] = []
    for start in range(0, len(stream), cut):
        frames += decoder.feed(stream[start : start + cut])

    assert [(f.type, f.payload) for f in frames] == messages


@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_crash(data: bytes) -> None:
    decoder = FrameDecoder()
    try:
        frames = decoder.feed(data)
    except FrameError:
        return
    assert all(isinstance(f.type, MessageType) for f in frames)
