"""The 4-byte size framing: bounds checked before buffering, frames split and joined correctly."""

from __future__ import annotations

import struct

import pytest
import trio
import trio.testing

from reference_broker.protocol import FrameDecoder, InvalidFrameSizeError, ProtocolError, frame
from reference_broker.protocol.framing import receive_frame


def test_frames_split_across_reads_are_reassembled() -> None:
    decoder = FrameDecoder(max_frame_bytes=1024)
    data = frame(b"hello") + frame(b"") + frame(b"world!")
    for i in range(len(data)):
        decoder.feed(data[i : i + 1])
    assert [decoder.next_frame(), decoder.next_frame(), decoder.next_frame()] == [
        b"hello",
        b"",
        b"world!",
    ]
    assert decoder.next_frame() is None
    assert decoder.buffered == 0


def test_pipelined_frames_in_one_read_come_out_in_order() -> None:
    decoder = FrameDecoder(max_frame_bytes=1024)
    decoder.feed(b"".join(frame(bytes([i]) * i) for i in range(1, 6)))
    assert [decoder.next_frame() for _ in range(5)] == [bytes([i]) * i for i in range(1, 6)]


def test_oversized_frame_is_rejected_from_its_size_prefix_alone() -> None:
    decoder = FrameDecoder(max_frame_bytes=100)
    decoder.feed(struct.pack(">i", 101))  # no body at all: the prefix alone must be enough
    with pytest.raises(InvalidFrameSizeError, match=r"socket\.request\.max\.bytes"):
        decoder.next_frame()


def test_negative_frame_size_is_rejected() -> None:
    decoder = FrameDecoder(max_frame_bytes=100)
    decoder.feed(struct.pack(">i", -5))
    with pytest.raises(InvalidFrameSizeError):
        decoder.next_frame()


def test_frame_of_exactly_the_limit_is_accepted() -> None:
    decoder = FrameDecoder(max_frame_bytes=8)
    decoder.feed(frame(b"12345678"))
    assert decoder.next_frame() == b"12345678"


async def test_eof_inside_a_frame_is_a_protocol_error() -> None:
    send, receive = trio.testing.memory_stream_pair()
    await send.send_all(struct.pack(">i", 10) + b"abc")
    await send.aclose()
    with pytest.raises(ProtocolError, match="inside a frame"):
        await receive_frame(receive, FrameDecoder(1024))


async def test_eof_between_frames_is_a_clean_end() -> None:
    send, receive = trio.testing.memory_stream_pair()
    await send.send_all(frame(b"one"))
    await send.aclose()
    decoder = FrameDecoder(1024)
    assert await receive_frame(receive, decoder) == b"one"
    assert await receive_frame(receive, decoder) is None
