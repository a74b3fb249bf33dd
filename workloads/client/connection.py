"""One connection to one broker: framing, correlation ids and in-order response matching.

Kafka answers requests on a connection in the order it received them, so the
connection keeps a FIFO of requests awaiting answers and checks each response's
correlation id against the head. Many requests may be in flight at once (the
producer's max.in.flight.requests.per.connection is enforced by the caller).

A `Connection` is a plain object plus one async edge, `run()`, the reader loop,
which its owner starts in a nursery. Any failure — EOF, a reset, a frame that does
not decode, a request timeout — closes the connection and fails every request
still waiting on it with `ConnectionLostError`. Like the Java client, a request
timeout closes the connection: the response may still arrive later, and matching
it to nothing would desynchronise the FIFO.
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass, field

import trio
from kafka.protocol.api_message import ApiMessage

from .errors import (
    ConnectionLostError,
    ProtocolViolationError,
    RequestTimedOutError,
    UnsupportedVersionError,
)

_SIZE = struct.Struct(">i")
_RECEIVE_CHUNK = 1 << 16


class _Pending:
    """A request written (or being written) to the connection, awaiting its response."""

    __slots__ = ("correlation_id", "done", "error", "response", "response_class", "version")

    def __init__(self, correlation_id: int, response_class: type[ApiMessage], version: int):
        self.correlation_id = correlation_id
        self.response_class = response_class
        self.version = version
        self.done = trio.Event()
        self.response: ApiMessage | None = None
        self.error: Exception | None = None


class FrameReader:
    """Split a byte stream into size-prefixed frames; sizes are checked before buffering."""

    def __init__(self, max_frame_bytes: int) -> None:
        self.max_frame_bytes = max_frame_bytes
        self._buffer = bytearray()

    def feed(self, data: bytes) -> None:
        """Add received bytes."""
        self._buffer += data

    def frames(self) -> list[bytes]:
        """Every complete frame buffered so far (without size prefixes)."""
        out: list[bytes] = []
        buf = self._buffer
        pos = 0
        while len(buf) - pos >= 4:
            (size,) = _SIZE.unpack_from(buf, pos)
            if size < 0 or size > self.max_frame_bytes:
                raise ProtocolViolationError(
                    f"broker sent a frame of {size} bytes, outside 0..{self.max_frame_bytes}; "
                    "raise receive.message.max.bytes if the broker really sends frames this big"
                )
            if len(buf) - pos - 4 < size:
                break
            out.append(bytes(buf[pos + 4 : pos + 4 + size]))
            pos += 4 + size
        if pos:
            del buf[:pos]
        return out


@dataclass
class ApiVersionRange:
    """The versions of one API a broker serves."""

    min_version: int
    max_version: int


@dataclass
class Connection:
    """A broker connection; `run()` must be running in a nursery for responses to arrive."""

    stream: trio.abc.Stream
    node_id: int
    address: str
    client_id: str
    max_frame_bytes: int = 100 * 1024 * 1024
    api_versions: dict[int, ApiVersionRange] = field(default_factory=dict)
    _pending: deque[_Pending] = field(default_factory=deque)
    _send_lock: trio.Lock = field(default_factory=trio.Lock)
    _next_correlation_id: int = 1
    _closed_reason: str | None = None
    _reader_scope: trio.CancelScope = field(default_factory=trio.CancelScope)

    @property
    def closed(self) -> bool:
        """Whether the connection can no longer carry requests."""
        return self._closed_reason is not None

    @property
    def in_flight(self) -> int:
        """Requests written and not yet answered."""
        return len(self._pending)

    def version_for(self, api_key: int, lo: int, hi: int, api_name: str) -> int:
        """The highest version of an API both this client (lo..hi) and the broker serve."""
        served = self.api_versions.get(api_key)
        if served is None:
            raise UnsupportedVersionError(
                f"broker {self.address} does not serve {api_name} at all; this client needs "
                f"v{lo}..v{hi}: point the client at a Kafka-compatible broker that supports it"
            )
        version = min(hi, served.max_version)
        if version < max(lo, served.min_version):
            raise UnsupportedVersionError(
                f"broker {self.address} serves {api_name} v{served.min_version}.."
                f"v{served.max_version} but this client speaks v{lo}..v{hi}: upgrade the broker "
                "(or the client) so the ranges overlap"
            )
        return version

    async def request(self, message: ApiMessage, version: int, timeout_s: float) -> ApiMessage:
        """Send a request and wait up to `timeout_s` for its response.

        Raises ConnectionLostError (with `maybe_delivered`) or RequestTimedOutError.
        """
        pending = await self._send(message, version, expect_response=True)
        assert pending is not None
        with trio.move_on_after(timeout_s) as scope:
            await pending.done.wait()
        if scope.cancelled_caught:
            self.close(f"request {type(message).__name__} timed out after {timeout_s:.3f}s")
            raise RequestTimedOutError(
                f"{type(message).__name__} to broker {self.address} got no response within "
                f"{timeout_s * 1000:.0f} ms (request.timeout.ms); it may have been processed"
            )
        if pending.error is not None:
            raise pending.error
        assert pending.response is not None
        return pending.response

    async def send_only(self, message: ApiMessage, version: int) -> None:
        """Write a request the broker will not answer (Produce with acks=0)."""
        await self._send(message, version, expect_response=False)

    async def _send(
        self, message: ApiMessage, version: int, *, expect_response: bool
    ) -> _Pending | None:
        if self._closed_reason is not None:
            raise ConnectionLostError(
                f"connection to broker {self.address} is closed ({self._closed_reason})",
                maybe_delivered=False,
            )
        correlation_id = self._next_correlation_id
        self._next_correlation_id = (correlation_id + 1) & 0x7FFFFFFF
        message.API_VERSION = version
        message.with_header(correlation_id=correlation_id, client_id=self.client_id)
        data = message.encode(header=True, framed=True)
        pending = None
        if expect_response:
            response_class = message.header.get_response_class()
            pending = _Pending(correlation_id, response_class, version)
            self._pending.append(pending)
        async with self._send_lock:
            if self._closed_reason is not None:
                raise ConnectionLostError(
                    f"connection to broker {self.address} closed ({self._closed_reason})",
                    maybe_delivered=False,
                )
            try:
                await self.stream.send_all(data)
            except BaseException as exc:
                # A partial write (or a cancelled one) leaves the stream mid-frame.
                self.close(f"write failed: {exc!r}")
                if isinstance(exc, trio.BrokenResourceError | trio.ClosedResourceError | OSError):
                    raise ConnectionLostError(
                        f"connection to broker {self.address} broke while sending "
                        f"{type(message).__name__}: {exc!r}",
                        maybe_delivered=True,
                    ) from exc
                raise
        return pending

    async def run(self) -> None:
        """Read responses until the connection closes; never raises."""
        reader = FrameReader(self.max_frame_bytes)
        reason = "connection closed by broker"
        with self._reader_scope:
            try:
                while True:
                    data = await self.stream.receive_some(_RECEIVE_CHUNK)
                    if not data:
                        break
                    reader.feed(data)
                    for frame in reader.frames():
                        self._deliver(frame)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                reason = f"connection lost: {exc!r}"
            except ProtocolViolationError as exc:
                reason = str(exc)
            finally:
                # The reader owns the stream's lifetime: whoever closes the connection
                # cancels the reader, and the stream is released here.
                self.close(reason)
        await trio.aclose_forcefully(self.stream)

    def _deliver(self, frame: bytes) -> None:
        if not self._pending:
            raise ProtocolViolationError(
                f"broker {self.address} sent a response to no outstanding request"
            )
        pending = self._pending.popleft()
        try:
            response = pending.response_class.decode(frame, version=pending.version, header=True)
        except Exception as exc:
            raise ProtocolViolationError(
                f"broker {self.address} sent an undecodable {pending.response_class.__name__} "
                f"v{pending.version}: {exc!r}"
            ) from exc
        got = response.header.correlation_id
        if got != pending.correlation_id:
            raise ProtocolViolationError(
                f"broker {self.address} answered correlation id {got}, "
                f"expected {pending.correlation_id}"
            )
        pending.response = response
        pending.done.set()

    def close(self, reason: str = "closed by client") -> None:
        """Fail every waiting request and stop the reader, which releases the stream."""
        if self._closed_reason is None:
            self._closed_reason = reason
        self._reader_scope.cancel()
        while self._pending:
            pending = self._pending.popleft()
            pending.error = ConnectionLostError(
                f"connection to broker {self.address} lost before a response: "
                f"{self._closed_reason}",
                maybe_delivered=True,
            )
            pending.done.set()
