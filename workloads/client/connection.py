"""One connection to one broker: framing, correlation ids and in-order response matching.

Kafka answers requests on a connection in the order it received them, so the
connection keeps a FIFO of requests awaiting answers and checks each response's
correlation id against the head. Many requests may be in flight at once (the
producer's max.in.flight.requests.per.connection is enforced by the caller).

A `Connection` is a plain object plus one async edge, `run()`, the reader loop,
which its owner starts in a nursery. The reader is the only task that waits for
responses: it completes each request's `_Pending` as its frame arrives (setting an
event for `request()`, calling a callback for `submit()`), and it owns the
request timeouts too — its cancel scope's deadline is no later than the earliest
deadline of the requests in flight — so a request costs no task and no cancel scope
of its own.

Any failure — EOF, a reset, a frame that does not decode, a request timeout —
closes the connection and fails every request still waiting on it with
`ConnectionLostError`. Like the Java client, a request timeout closes the
connection: the response may still arrive later, and matching it to nothing would
desynchronise the FIFO.
"""

from __future__ import annotations

import math
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import trio
from kafka.protocol.api_header import ResponseClassRegistry
from kafka.protocol.api_key import ApiKey
from kafka.protocol.api_message import ApiMessage
from kafka.protocol.schemas.fields.codecs.encode_buffer import EncodeBuffer

from .errors import (
    ConnectionLostError,
    KafkaClientError,
    ProtocolViolationError,
    RequestTimedOutError,
    UnsupportedVersionError,
)

_SIZE = struct.Struct(">i")
# Frame size, then request header v1/v2: api key, api version, correlation id.
_REQUEST_HEAD = struct.Struct(">ihhi")
_CLIENT_ID_SIZE = struct.Struct(">h")
_RECEIVE_CHUNK = 1 << 16

OnDone = Callable[[ApiMessage | None, KafkaClientError | None], None]


@dataclass(frozen=True, slots=True)
class _ApiShape:
    """What the wire format of one request class at one version depends on."""

    api_key: int
    response_class: type[ApiMessage]
    flexible_request: bool
    flexible_response_header: bool
    # ApiVersions answers with header v0 at every version (KIP-511) and a v0 body on error.
    api_versions: bool
    # kafka-python's compiled codecs for this version (what ApiMessage.encode/decode call
    # after their per-call checks and lookups): encode(message, out), decode(data, pos).
    encode_body: Callable[[ApiMessage, EncodeBuffer], None]
    decode_body: Callable[[memoryview, int], tuple[ApiMessage, int]]


_SHAPES: dict[tuple[type[ApiMessage], int], _ApiShape] = {}


def _shape(message: ApiMessage, version: int) -> _ApiShape:
    cls = type(message)
    shape = _SHAPES.get((cls, version))
    if shape is None:
        if not 0 <= version <= cls.max_version:
            raise ValueError(f"{cls.__name__} has no version {version} (max {cls.max_version})")
        api_key = message.API_KEY
        response_class = ResponseClassRegistry._response_class_registry[api_key]
        api_versions = api_key == ApiKey.ApiVersions
        flexible_request = cls.flexible_version_q(version)
        flexible_response = response_class.flexible_version_q(version)
        shape = _SHAPES[(cls, version)] = _ApiShape(
            api_key,
            response_class,
            flexible_request,
            not api_versions and flexible_response,
            api_versions,
            cls._struct.compiled_encode_into(
                version, compact=flexible_request, tagged=flexible_request
            ),
            response_class._struct.compiled_decode_from(
                version,
                compact=flexible_response,
                tagged=flexible_response,
                data_class=response_class[None],
            ),
        )
    return shape


def encode_request(
    message: ApiMessage,
    version: int,
    correlation_id: int,
    client_id_field: bytes,
    out: EncodeBuffer | None = None,
) -> bytes:
    """The framed request: size, header (v1, or v2 when flexible) and body.

    `client_id_field` is the encoded nullable client id (`client_id_field(...)`). The
    body is kafka-python's compiled encoding, written into `out` (a scratch buffer the
    caller owns; a fresh one if None) behind the header, which is packed here:
    building kafka-python's header object per request costs as much as encoding the
    body, and `ApiMessage.encode` adds a buffer pool, checks and a copy around the
    same encoder.
    """
    shape = _shape(message, version)
    if message.version != version:
        message.API_VERSION = version  # as ApiMessage.encode(version=...) leaves it
    if out is None:
        out = EncodeBuffer(1024)
    body_at = _REQUEST_HEAD.size + len(client_id_field) + shape.flexible_request
    out.pos = 0
    out.ensure(body_at)
    out.pos = body_at
    shape.encode_body(message, out)
    buf = out.buf
    _REQUEST_HEAD.pack_into(buf, 0, out.pos - 4, shape.api_key, version, correlation_id)
    buf[_REQUEST_HEAD.size : _REQUEST_HEAD.size + len(client_id_field)] = client_id_field
    if shape.flexible_request:
        buf[body_at - 1] = 0  # no tagged header fields
    return bytes(buf[: out.pos])


def client_id_field(client_id: str | None) -> bytes:
    """The request header's client id: a nullable string (never compact, as Kafka has it)."""
    if client_id is None:
        return _CLIENT_ID_SIZE.pack(-1)
    raw = client_id.encode()
    return _CLIENT_ID_SIZE.pack(len(raw)) + raw


def _skip_tagged_fields(frame: bytes, pos: int) -> int:
    count, pos = _read_varint(frame, pos)
    for _ in range(count):
        _, pos = _read_varint(frame, pos)  # tag
        size, pos = _read_varint(frame, pos)
        pos += size
    if pos > len(frame):
        raise ValueError("tagged fields run past the end of the frame")
    return pos


def _read_varint(frame: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(frame) or shift > 28:
            raise ValueError("malformed unsigned varint in the response header")
        byte = frame[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


class _Pending:
    """A request being written or written, awaiting its response."""

    __slots__ = (
        "correlation_id",
        "deadline",
        "error",
        "finished",
        "name",
        "on_done",
        "response",
        "sent",
        "shape",
        "timeout_s",
        "version",
        "waiter",
    )

    def __init__(
        self,
        name: str,
        shape: _ApiShape,
        version: int,
        timeout_s: float,
        on_done: OnDone | None,
    ) -> None:
        self.name = name
        self.shape = shape
        self.version = version
        self.timeout_s = timeout_s
        self.on_done = on_done
        # The task parked in `wait` (request()); rescheduled directly, as a trio.Event
        # per request would cost an Event and a parking lot.
        self.waiter: trio.lowlevel.Task | None = None
        self.correlation_id = 0
        self.deadline = math.inf  # armed once the request is on the wire
        self.sent = False  # some of its bytes may have reached the wire
        self.finished = False
        self.response: ApiMessage | None = None
        self.error: KafkaClientError | None = None

    def complete(self, response: ApiMessage | None, error: KafkaClientError | None) -> None:
        """Record the outcome once; later outcomes (a close after the answer) are ignored."""
        if self.finished:
            return
        self.finished = True
        self.response = response
        self.error = error
        if self.on_done is not None:
            self.on_done(response, error)
        elif self.waiter is not None:
            task, self.waiter = self.waiter, None
            trio.lowlevel.reschedule(task)

    async def wait(self) -> None:
        """Wait until `complete` was called (a checkpoint only when it must wait)."""
        if self.finished:
            return
        self.waiter = trio.lowlevel.current_task()
        await trio.lowlevel.wait_task_rescheduled(self._abort_wait)

    def _abort_wait(self, _: object) -> trio.lowlevel.Abort:
        self.waiter = None  # cancelled: the outcome, when it comes, goes to no one
        return trio.lowlevel.Abort.SUCCEEDED


class FrameReader:
    """Split a byte stream into size-prefixed frames; sizes are checked before buffering."""

    def __init__(self, max_frame_bytes: int) -> None:
        self.max_frame_bytes = max_frame_bytes
        self._buffer = bytearray()

    def feed(self, data: bytes | bytearray) -> None:
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
    # One writer at a time, in arrival order: a trio.Lock's semantics (ownership passes
    # straight to the longest waiter) without its owner bookkeeping on every request.
    _writing: bool = False
    _write_queue: trio.lowlevel.ParkingLot = field(default_factory=trio.lowlevel.ParkingLot)
    _next_correlation_id: int = 1
    _closed_reason: str | None = None
    _reader_scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    _client_id_field: bytes = b""
    # Scratch space for encoding requests; writers take turns under the send lock.
    _encode_buffer: EncodeBuffer = field(default_factory=lambda: EncodeBuffer(1024))

    def __post_init__(self) -> None:
        self._client_id_field = client_id_field(self.client_id)

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
        pending = _Pending(
            type(message).__name__, _shape(message, version), version, timeout_s, None
        )
        await self._write(message, pending)
        await pending.wait()
        if pending.error is not None:
            raise pending.error
        assert pending.response is not None
        return pending.response

    async def submit(
        self, message: ApiMessage, version: int, timeout_s: float, on_done: OnDone
    ) -> None:
        """Send a request; `on_done(response, error)` is called exactly once with its outcome.

        The callback runs in whichever task learns the outcome (usually the reader), so
        it must not block. Connection failures go to the callback, never raised here;
        a cancellation while writing is raised after the callback saw the failure.
        """
        pending = _Pending(
            type(message).__name__, _shape(message, version), version, timeout_s, on_done
        )
        await self._write(message, pending)

    async def send_only(self, message: ApiMessage, version: int) -> None:
        """Write a request the broker will not answer (Produce with acks=0)."""
        pending = _Pending(type(message).__name__, _shape(message, version), version, 0.0, None)
        await self._write(message, pending, expect_response=False)
        if pending.error is not None:
            raise pending.error

    async def _write(
        self, message: ApiMessage, pending: _Pending, *, expect_response: bool = True
    ) -> None:
        if self._writing:
            await self._write_queue.park()  # woken holding the connection
        else:
            # Uncontended (the usual case): no schedule point here, send_all has one.
            self._writing = True
        try:
            if self._closed_reason is not None:
                pending.complete(
                    None,
                    ConnectionLostError(
                        f"connection to broker {self.address} is closed ({self._closed_reason})",
                        maybe_delivered=False,
                    ),
                )
                return
            correlation_id = self._next_correlation_id
            self._next_correlation_id = (correlation_id + 1) & 0x7FFFFFFF
            pending.correlation_id = correlation_id
            data = encode_request(
                message,
                pending.version,
                correlation_id,
                self._client_id_field,
                self._encode_buffer,
            )
            if expect_response:
                # Queued before the write, in write order: the lock serialises writers.
                # Timed from here, as Java times a request from when it is handed to the
                # network: a write stuck behind a full socket buffer times out too.
                self._pending.append(pending)
                pending.deadline = trio.current_time() + pending.timeout_s
                self._arm(pending.deadline)
            pending.sent = True
            try:
                await self.stream.send_all(data)
            except BaseException as exc:
                # A partial write (or a cancelled one) leaves the stream mid-frame.
                if isinstance(exc, trio.BrokenResourceError | trio.ClosedResourceError | OSError):
                    pending.complete(
                        None,
                        ConnectionLostError(
                            f"connection to broker {self.address} broke while sending "
                            f"{pending.name}: {exc!r}",
                            maybe_delivered=True,
                        ),
                    )
                    self.close(f"write failed: {exc!r}")
                    return
                self.close(f"write failed: {exc!r}")
                raise
            if not expect_response:
                pending.complete(None, None)
        finally:
            if self._write_queue:
                self._write_queue.unpark()  # the next writer holds it now
            else:
                self._writing = False

    def _arm(self, deadline: float) -> None:
        """Make sure the reader wakes by `deadline`.

        Deadlines only ever move earlier here: one left behind by a request answered
        since is cheaper to let fire (the reader then finds nothing late and reads on)
        than to move on every response.
        """
        if deadline < self._reader_scope.deadline:
            self._reader_scope.deadline = deadline

    async def run(self) -> None:
        """Read responses until the connection closes; never raises."""
        reader = FrameReader(self.max_frame_bytes)
        reason = "connection closed by broker"
        try:
            while self._closed_reason is None:
                with self._reader_scope:
                    try:
                        while True:
                            data = await self.stream.receive_some(_RECEIVE_CHUNK)
                            if not data:
                                return
                            reader.feed(data)
                            for frame in reader.frames():
                                self._deliver(frame)
                    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                        reason = f"connection lost: {exc!r}"
                        return
                    except ProtocolViolationError as exc:
                        reason = str(exc)
                        return
                # Cancelled: by close(), or by a deadline.
                if self._closed_reason is None and not self._time_out():
                    # A stale deadline (its request was answered): read on.
                    earliest = min((p.deadline for p in self._pending), default=math.inf)
                    self._reader_scope = trio.CancelScope(deadline=earliest)
        finally:
            # The reader owns the stream's lifetime: whoever closes the connection
            # cancels the reader, and the stream is released here.
            self.close(reason)
            await trio.aclose_forcefully(self.stream)

    def _time_out(self) -> bool:
        """Fail the requests past their deadline and close, as Java does; False if none is."""
        now = trio.current_time()
        late = [p for p in self._pending if p.deadline <= now]
        if not late:
            return False
        for p in late:
            p.complete(
                None,
                RequestTimedOutError(
                    f"{p.name} to broker {self.address} got no response within "
                    f"{p.timeout_s * 1000:.0f} ms (request.timeout.ms); it may have been processed"
                ),
            )
        first = late[0]
        self.close(f"request {first.name} timed out after {first.timeout_s:.3f}s")
        return True

    def _deliver(self, frame: bytes) -> None:
        if not self._pending:
            raise ProtocolViolationError(
                f"broker {self.address} sent a response to no outstanding request"
            )
        # Peeked, not popped: if the frame is bad, close() fails this request too.
        pending = self._pending[0]
        shape = pending.shape
        if len(frame) < 4:
            raise ProtocolViolationError(
                f"broker {self.address} sent a {len(frame)}-byte frame, too short for a "
                "response header"
            )
        (got,) = _SIZE.unpack_from(frame, 0)
        if got != pending.correlation_id:
            raise ProtocolViolationError(
                f"broker {self.address} answered correlation id {got}, "
                f"expected {pending.correlation_id}"
            )
        try:
            if shape.api_versions:
                # Its decode has its own rules; let kafka-python apply them.
                response = shape.response_class.decode(frame, version=pending.version, header=True)
            else:
                pos = _skip_tagged_fields(frame, 4) if shape.flexible_response_header else 4
                response, end = shape.decode_body(memoryview(frame), pos)
                if end > len(frame):
                    raise ValueError(f"the body runs {end - len(frame)} bytes past the frame")
        except Exception as exc:
            raise ProtocolViolationError(
                f"broker {self.address} sent an undecodable {shape.response_class.__name__} "
                f"v{pending.version}: {exc!r}"
            ) from exc
        self._pending.popleft()
        pending.complete(response, None)

    def close(self, reason: str = "closed by client") -> None:
        """Fail every waiting request and stop the reader, which releases the stream."""
        if self._closed_reason is None:
            self._closed_reason = reason
        self._reader_scope.cancel()
        while self._pending:
            pending = self._pending.popleft()
            pending.complete(
                None,
                ConnectionLostError(
                    f"connection to broker {self.address} lost before a response: "
                    f"{self._closed_reason}",
                    maybe_delivered=True,
                ),
            )
