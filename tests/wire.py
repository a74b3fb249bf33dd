"""A raw Kafka wire client for tests: exact bytes out, framed responses in.

Requests are encoded with kafka-python's `kafka.protocol` classes so a test controls every
byte (a replayed frame, a mutated one) while the broker under test sees a real TCP peer.
"""

from __future__ import annotations

import importlib
import socket
import struct
from collections.abc import Sequence

import crc32c
from kafka.protocol.api_message import ApiMessage
from kafka.record.default_records import DefaultRecordBatchBuilder


class ConnectionClosedError(ConnectionError):
    """The broker closed the connection instead of answering."""


class WireClient:
    """One blocking TCP connection to a broker."""

    def __init__(self, host: str, port: int, timeout_s: float = 10.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout_s)
        self.correlation_id = 0

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()

    def __enter__(self) -> WireClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send_raw(self, data: bytes) -> None:
        """Write bytes exactly as given."""
        self.sock.sendall(data)

    def _read_exact(self, size: int) -> bytes:
        chunks = bytearray()
        while len(chunks) < size:
            chunk = self.sock.recv(size - len(chunks))
            if not chunk:
                raise ConnectionClosedError("broker closed the connection")
            chunks += chunk
        return bytes(chunks)

    def read_frame(self) -> bytes:
        """One length-prefixed response frame, without its prefix."""
        (size,) = struct.unpack(">i", self._read_exact(4))
        return self._read_exact(size)

    def encode(self, request: ApiMessage, version: int) -> bytes:
        """The framed bytes of a request with this connection's next correlation id."""
        self.correlation_id += 1
        return encode_request(request, version, self.correlation_id)

    def request(self, request: ApiMessage, version: int) -> ApiMessage:
        """Send a request, read and decode its response."""
        self.send_raw(self.encode(request, version))
        return decode_response(request, version, self.read_frame())


def encode_request(request: ApiMessage, version: int, correlation_id: int = 1) -> bytes:
    """The framed bytes of a request with a header, as a client would send them."""
    request.with_header(correlation_id=correlation_id, client_id="faultline-tests")
    return bytes(request.encode(version=version, header=True, framed=True))


def response_class(request: ApiMessage) -> type[ApiMessage]:
    """The response class paired with a request class (FooRequest -> FooResponse)."""
    cls = type(request).mro()[0]
    module = importlib.import_module(cls.__module__)
    name = cls.__name__.split("_v")[0].replace("Request", "Response")
    return getattr(module, name)


def decode_response(request: ApiMessage, version: int, frame: bytes) -> ApiMessage:
    """Decode a response frame (header included) for `request` at `version`."""
    return response_class(request).decode(frame, version=version, header=True)


TIMESTAMP_MS = 1_700_000_000_000


def record_batch(
    values: list[bytes],
    *,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
    first_timestamp: int = TIMESTAMP_MS,
) -> bytes:
    """A v2 record batch as a client builds it (offsets from 0, timestamps 1 ms apart, key b"k")."""
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=0,
        is_transactional=False,
        producer_id=producer_id,
        producer_epoch=producer_epoch,
        base_sequence=base_sequence,
        batch_size=1 << 20,
    )
    for i, value in enumerate(values):
        builder.append(i, timestamp=first_timestamp + i, key=b"k", value=value, headers=[])
    return bytes(builder.build())


def idempotent_batch(
    producer_id: int, producer_epoch: int, base_sequence: int, values: list[bytes]
) -> bytes:
    """A batch carrying producer id, epoch and first sequence, as an idempotent producer sends."""
    return record_batch(
        values,
        producer_id=producer_id,
        producer_epoch=producer_epoch,
        base_sequence=base_sequence,
    )


def zigzag_varint(value: int) -> bytes:
    """Kafka's zigzag varint encoding of a (64-bit) signed integer."""
    n = (value << 1) ^ (value >> 63)
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def encode_record(
    offset_delta: int,
    value: bytes | None,
    *,
    key: bytes | None = None,
    timestamp_delta: int = 0,
    headers: Sequence[tuple[bytes, bytes | None]] = (),
) -> bytes:
    """One v2 record (DefaultRecord layout), length prefix included."""
    body = bytearray(b"\x00")  # attributes
    body += zigzag_varint(timestamp_delta) + zigzag_varint(offset_delta)
    for field in (key, value):
        body += zigzag_varint(-1) if field is None else zigzag_varint(len(field)) + field
    body += zigzag_varint(len(headers))
    for hkey, hvalue in headers:
        body += zigzag_varint(len(hkey)) + hkey
        body += zigzag_varint(-1) if hvalue is None else zigzag_varint(len(hvalue)) + hvalue
    return zigzag_varint(len(body)) + bytes(body)


def raw_batch(
    records: bytes,
    *,
    record_count: int,
    last_offset_delta: int | None = None,
    attributes: int = 0,
    base_timestamp: int = TIMESTAMP_MS,
    max_timestamp: int | None = None,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
    magic: int = 2,
) -> bytes:
    """A v2 batch around an arbitrary records section, with every header field chosen by
    the caller and a correct CRC-32C: what a buggy (or hostile) producer can send."""
    if last_offset_delta is None:
        last_offset_delta = record_count - 1
    if max_timestamp is None:
        max_timestamp = base_timestamp
    after_crc = (
        struct.pack(
            ">hiqqqhii",
            attributes,
            last_offset_delta,
            base_timestamp,
            max_timestamp,
            producer_id,
            producer_epoch,
            base_sequence,
            record_count,
        )
        + records
    )
    crc = crc32c.crc32c(after_crc)
    body = struct.pack(">ibI", 0, magic, crc) + after_crc
    return struct.pack(">qi", 0, len(body)) + body
