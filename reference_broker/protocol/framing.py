"""Kafka's framing: every request and response is a 4-byte big-endian size, then that many bytes.

`FrameDecoder` is a plain state machine (feed bytes, take frames) so that it can be
tested without a network; `receive_frame` is the async edge that drives it from a
trio stream. The size is checked against `socket.request.max.bytes` *before* any
buffer for the body is grown, so a hostile length costs nothing.

The broker's connections use `receive_request`, which also reserves each frame's size
from the broker-wide `MemoryPool` (queued.max.request.bytes) before reading its body,
and reads no further than the frame's end, so that a body only grows as its bytes
arrive and never beyond what was reserved.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import trio

from .memory_pool import MemoryPool, Reservation

_SIZE = struct.Struct(">i")
RECEIVE_CHUNK = 65536


class ProtocolError(Exception):
    """The peer sent bytes that are not a valid Kafka request; the connection must close."""


class InvalidFrameSizeError(ProtocolError):
    """A frame announced a negative size or one above `socket.request.max.bytes`."""


class FrameDecoder:
    """Split a byte stream into frames of at most `max_frame_bytes` each.

    States: waiting for a 4-byte size, then waiting for that many body bytes. Bytes
    beyond the current frame stay buffered for the next one (clients pipeline).
    """

    def __init__(self, max_frame_bytes: int) -> None:
        self.max_frame_bytes = max_frame_bytes
        self._buffer = bytearray()
        self._expected: int | None = None  # body size of the frame being read, once known

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as frames."""
        return len(self._buffer)

    def feed(self, data: bytes | bytearray) -> None:
        """Add bytes received from the peer."""
        self._buffer += data

    def announced_size(self) -> int | None:
        """The body size of the frame being read, once its 4-byte prefix is in.

        Raises InvalidFrameSizeError as soon as the size prefix is known to be bad.
        """
        if self._expected is None:
            if len(self._buffer) < 4:
                return None
            (size,) = _SIZE.unpack_from(self._buffer, 0)
            if size < 0 or size > self.max_frame_bytes:
                raise InvalidFrameSizeError(
                    f"frame size {size} is outside 0..{self.max_frame_bytes} "
                    "(socket.request.max.bytes)"
                )
            del self._buffer[:4]
            self._expected = size
        return self._expected

    def read_size(self) -> int:
        """How many bytes to ask the stream for next: up to the end of the current frame's
        body (never into the next frame), or a whole chunk while no size is known."""
        if self._expected is None:
            return RECEIVE_CHUNK
        return max(1, min(RECEIVE_CHUNK, self._expected - len(self._buffer)))

    def next_frame(self) -> bytes | None:
        """The next complete frame body, or None if more bytes are needed.

        Raises InvalidFrameSizeError as soon as the size prefix is known to be bad.
        """
        if self.announced_size() is None:
            return None
        assert self._expected is not None
        if len(self._buffer) < self._expected:
            return None
        size = self._expected
        self._expected = None
        if size == len(self._buffer):
            frame = bytes(self._buffer)
            self._buffer.clear()
        else:
            frame = bytes(self._buffer[:size])
            del self._buffer[:size]
        return frame


async def receive_frame(stream: trio.abc.ReceiveStream, decoder: FrameDecoder) -> bytes | None:
    """Read from `stream` until `decoder` yields a frame; None on a clean EOF between frames.

    Raises ProtocolError on a bad size or on EOF in the middle of a frame.
    """
    while True:
        frame = decoder.next_frame()
        if frame is not None:
            return frame
        data = await stream.receive_some(RECEIVE_CHUNK)
        if not data:
            if decoder.buffered:
                raise ProtocolError(f"connection closed inside a frame ({decoder.buffered} bytes)")
            return None
        decoder.feed(data)


def frame(payload: bytes) -> bytes:
    """Prefix `payload` with its 4-byte size."""
    return _SIZE.pack(len(payload)) + payload


@dataclass
class ReceivedFrame:
    """A request frame's body and the pool bytes it holds until its request is handled."""

    body: bytes
    reservation: Reservation


async def receive_request(
    stream: trio.abc.ReceiveStream, decoder: FrameDecoder, pool: MemoryPool
) -> ReceivedFrame | None:
    """Like `receive_frame`, but reserve each frame's size from `pool` before its body.

    While the pool has no room the stream is not read at all (backpressure). The caller
    must `release` the returned reservation once the request is handled; on an error or
    cancellation here it is released before this returns.
    """
    reservation: Reservation | None = None
    try:
        while True:
            size = decoder.announced_size()
            if size is not None and reservation is None:
                reservation = await pool.reserve(size)
            if reservation is not None:
                body = decoder.next_frame()
                if body is not None:
                    return ReceivedFrame(body, reservation)
            data = await stream.receive_some(decoder.read_size())
            if not data:
                if decoder.buffered or reservation is not None:
                    raise ProtocolError(
                        f"connection closed inside a frame ({decoder.buffered} bytes)"
                    )
                return None
            decoder.feed(data)
    except BaseException:
        if reservation is not None:
            reservation.release()
        raise
