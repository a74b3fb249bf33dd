"""Kafka v2 record batches, seen from the broker: the 61-byte header and nothing more.

The broker stores batches verbatim. This module reads the header, checks framing,
magic and CRC-32C, and rewrites baseOffset and partitionLeaderEpoch (outside the CRC)
and, when the leader must, maxTimestamp (inside it). The leader's walk over the
records of a produced batch lives in `record_validator`.

Layout (DefaultRecordBatch.java)::

    0  baseOffset            int64
    8  batchLength           int32   bytes after this field
    12 partitionLeaderEpoch  int32
    16 magic                 int8    = 2
    17 crc                   uint32  CRC-32C of bytes 21..end
    21 attributes            int16   bits 0-2 compression, 3 timestamp type,
                                     4 transactional, 5 control
    23 lastOffsetDelta       int32
    27 baseTimestamp         int64
    35 maxTimestamp          int64
    43 producerId            int64
    51 producerEpoch         int16
    53 baseSequence          int32
    57 recordCount           int32
    61 records...
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

import crc32c

from reference_broker.errors import (
    CorruptRecordError,
    InvalidRecordError,
    InvalidTimestampError,
)
from reference_broker.log.compression import decompress

HEADER_SIZE = 61
# baseOffset + batchLength: the part of a batch not counted by batchLength.
LOG_OVERHEAD = 12
CRC_START = 21
MAGIC_OFFSET = 16
CURRENT_MAGIC = 2
NO_PRODUCER_ID = -1
NO_SEQUENCE = -1
INT32_MAX = (1 << 31) - 1

_HEADER = struct.Struct(">qiibIhiqqqhii")
_PREFIX = struct.Struct(">qi")
_INT64 = struct.Struct(">q")
_INT32 = struct.Struct(">i")
_UINT32 = struct.Struct(">I")
_INT16 = struct.Struct(">h")

_COMPRESSION_MASK = 0x07
_TIMESTAMP_TYPE_BIT = 0x08
_TRANSACTIONAL_BIT = 0x10
_CONTROL_BIT = 0x20
COMPRESSION_NAMES = ("none", "gzip", "snappy", "lz4", "zstd")


class RecordMagicError(CorruptRecordError):
    """A batch that is not v2. Corrupt data when read from disk; on produce the leader
    answers INVALID_RECORD, as Kafka does for produce v3+ carrying another magic."""


@dataclass(frozen=True, slots=True)
class BatchHeader:
    """The fixed 61-byte header of a v2 record batch."""

    base_offset: int
    batch_length: int
    partition_leader_epoch: int
    magic: int
    crc: int
    attributes: int
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    record_count: int

    @property
    def last_offset(self) -> int:
        """Offset of the batch's last record."""
        return self.base_offset + self.last_offset_delta

    @property
    def next_offset(self) -> int:
        """The offset just past this batch."""
        return self.base_offset + self.last_offset_delta + 1

    @property
    def size_in_bytes(self) -> int:
        """Total bytes of the batch, header included."""
        return self.batch_length + LOG_OVERHEAD

    @property
    def compression(self) -> int:
        """Compression codec id (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd)."""
        return self.attributes & _COMPRESSION_MASK

    @property
    def is_transactional(self) -> bool:
        """Whether the batch belongs to a transaction."""
        return bool(self.attributes & _TRANSACTIONAL_BIT)

    @property
    def is_control(self) -> bool:
        """Whether the batch holds control records (transaction markers)."""
        return bool(self.attributes & _CONTROL_BIT)

    @property
    def is_log_append_time(self) -> bool:
        """Whether maxTimestamp is the broker's append time rather than the producer's."""
        return bool(self.attributes & _TIMESTAMP_TYPE_BIT)

    @property
    def has_producer_id(self) -> bool:
        """Whether the batch was written by an idempotent or transactional producer."""
        return self.producer_id > NO_PRODUCER_ID

    @property
    def last_sequence(self) -> int:
        """Sequence number of the last record, wrapping at int32 max as Kafka does."""
        return increment_sequence(self.base_sequence, self.last_offset_delta)


def increment_sequence(sequence: int, increment: int) -> int:
    """`sequence + increment` in Kafka's sequence space, which wraps from int32 max to 0."""
    if sequence == NO_SEQUENCE:
        return NO_SEQUENCE
    if sequence > INT32_MAX - increment:
        return increment - (INT32_MAX - sequence) - 1
    return sequence + increment


def parse_header(buf: bytes | bytearray | memoryview, pos: int = 0) -> BatchHeader:
    """Parse the header at `pos`; the caller guarantees HEADER_SIZE bytes are present."""
    return BatchHeader(*_HEADER.unpack_from(buf, pos))


def read_prefix(buf: bytes | bytearray | memoryview, pos: int = 0) -> tuple[int, int]:
    """(baseOffset, total size in bytes) of the batch at `pos`, from its first 12 bytes."""
    base_offset, length = _PREFIX.unpack_from(buf, pos)
    return base_offset, length + LOG_OVERHEAD


def check_framing(buf: bytes | bytearray | memoryview, pos: int, end: int) -> BatchHeader:
    """Parse the header at `pos` and check that the whole batch lies within `end`.

    Raises CorruptRecordError naming the byte position when the length field is
    impossible, the batch runs past `end`, or the magic is not 2.
    """
    remaining = end - pos
    if remaining < HEADER_SIZE:
        raise CorruptRecordError(
            f"truncated record batch at byte {pos}: {remaining} bytes left, "
            f"a v2 batch header needs {HEADER_SIZE}"
        )
    header = parse_header(buf, pos)
    if header.magic != CURRENT_MAGIC:
        raise RecordMagicError(
            f"record batch at byte {pos} has magic {header.magic}; "
            "only v2 record batches (magic 2) are supported"
        )
    size = header.size_in_bytes
    if size < HEADER_SIZE:
        raise CorruptRecordError(
            f"record batch at byte {pos} claims length {header.batch_length}, "
            f"shorter than a v2 header"
        )
    if size > remaining:
        raise CorruptRecordError(
            f"record batch at byte {pos} claims {size} bytes but only {remaining} are present"
        )
    return header


def iter_batches(buf: bytes | bytearray | memoryview) -> Iterator[tuple[BatchHeader, memoryview]]:
    """Yield (header, raw bytes) for each batch in `buf`, checking framing and magic.

    The buffer must hold whole batches only: a trailing fragment raises
    CorruptRecordError, as it would mean the producer's data was cut.
    CRCs are not checked here; see `validate_batch`.
    """
    view = memoryview(buf)
    end = len(view)
    pos = 0
    while pos < end:
        header = check_framing(view, pos, end)
        size = header.size_in_bytes
        yield header, view[pos : pos + size]
        pos += size


def compute_crc(raw: bytes | bytearray | memoryview) -> int:
    """CRC-32C over the CRC-covered part of a batch (attributes to the end)."""
    return crc32c.crc32c(memoryview(raw)[CRC_START:])


def validate_batch(header: BatchHeader, raw: bytes | bytearray | memoryview) -> None:
    """Check magic and CRC-32C of one batch; raises CorruptRecordError on mismatch."""
    if header.magic != CURRENT_MAGIC:
        raise CorruptRecordError(
            f"record batch at offset {header.base_offset} has magic {header.magic}; "
            "only v2 record batches (magic 2) are supported"
        )
    if len(raw) != header.size_in_bytes:
        raise CorruptRecordError(
            f"record batch at offset {header.base_offset} is {len(raw)} bytes, "
            f"its header claims {header.size_in_bytes}"
        )
    actual = compute_crc(raw)
    if actual != header.crc:
        raise CorruptRecordError(
            f"record batch at offset {header.base_offset} fails its CRC-32C check "
            f"(stored {header.crc:#010x}, computed {actual:#010x}); the data was corrupted "
            "in transit or on disk"
        )


def assign_offset_and_epoch(buf: bytearray, pos: int, base_offset: int, leader_epoch: int) -> None:
    """Rewrite baseOffset and partitionLeaderEpoch of the batch at `pos` (outside the CRC)."""
    _INT64.pack_into(buf, pos, base_offset)
    _INT32.pack_into(buf, pos + 12, leader_epoch)


def set_log_append_time(buf: bytearray, pos: int, size: int, timestamp_ms: int) -> None:
    """Stamp the batch at `pos` with the broker's append time and recompute its CRC.

    As Kafka does for message.timestamp.type=LogAppendTime: maxTimestamp becomes the
    append time and the timestamp-type attribute bit is set; both are inside the CRC.
    """
    (attributes,) = _INT16.unpack_from(buf, pos + 21)
    _INT16.pack_into(buf, pos + 21, attributes | _TIMESTAMP_TYPE_BIT)
    set_max_timestamp(buf, pos, size, timestamp_ms)


def set_max_timestamp(buf: bytearray, pos: int, size: int, timestamp_ms: int) -> None:
    """Rewrite maxTimestamp of the batch at `pos` and recompute its CRC.

    As Kafka's setMaxTimestamp: the leader stores the largest record timestamp it
    found, whatever the producer wrote in the header.
    """
    _INT64.pack_into(buf, pos + 35, timestamp_ms)
    crc = crc32c.crc32c(memoryview(buf)[pos + CRC_START : pos + size])
    _UINT32.pack_into(buf, pos + 17, crc)


def validate_client_batch(header: BatchHeader) -> None:
    """Checks a leader applies to a batch header from a producer, beyond framing and CRC.

    As Kafka's LogValidator.validateBatch: InvalidRecordError for batches no
    well-behaved producer sends (empty, offsets not dense, control batches, producer
    id, epoch and sequence not all set or all -1), InvalidTimestampError for a producer
    claiming LogAppendTime. Transactional batches are checked against the producer's
    state (`producer_state`). The records themselves are checked by
    `record_validator.validate_records`.
    """
    if header.record_count <= 0:
        raise InvalidRecordError(
            f"record batch has {header.record_count} records; a produced batch needs at least one"
        )
    if header.last_offset_delta != header.record_count - 1:
        raise InvalidRecordError(
            f"record batch has {header.record_count} records but lastOffsetDelta "
            f"{header.last_offset_delta}; produced batches must have dense offsets"
        )
    if header.is_control:
        raise InvalidRecordError("producers may not write control batches (transaction markers)")
    if header.compression >= len(COMPRESSION_NAMES):
        raise InvalidRecordError(f"unknown compression codec id {header.compression}")
    pid, epoch, sequence = header.producer_id, header.producer_epoch, header.base_sequence
    if pid == NO_PRODUCER_ID:
        if epoch != -1 or sequence != NO_SEQUENCE:
            raise InvalidRecordError(
                f"record batch has no producer id but producer epoch {epoch} and base "
                f"sequence {sequence}; without a producer id both must be -1"
            )
    elif pid < 0 or epoch < 0 or sequence < 0:
        raise InvalidRecordError(
            f"record batch has producer id {pid}, epoch {epoch}, base sequence {sequence}: "
            "an idempotent producer sets all three (none negative), others set all to -1"
        )
    if header.is_log_append_time:
        raise InvalidTimestampError(
            "producers may not set the LogAppendTime timestamp type; the broker sets it "
            "for topics with message.timestamp.type=LogAppendTime"
        )


def _read_varint(buf: bytes | bytearray | memoryview, pos: int, end: int) -> tuple[int, int]:
    """A zigzag varint at `pos`, not reading at or past `end`: (value, next position)."""
    shift = 0
    result = 0
    while True:
        if pos >= end:
            raise CorruptRecordError(f"record varint at byte {pos} runs past the end of its batch")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            break
        shift += 7
        if shift > 63:
            raise CorruptRecordError("varint longer than 10 bytes in a record")
    return (result >> 1) ^ -(result & 1), pos


def record_timestamps(
    header: BatchHeader,
    raw: bytes | bytearray | memoryview,
    max_decompressed: int = 32 << 20,
) -> Iterator[tuple[int, int]]:
    """(offset, timestamp) of each record of a batch, in order.

    Used off the hot path only (ListOffsets by timestamp). A compressed batch is
    decompressed first, at most `max_decompressed` bytes. Every read is bounded by the
    batch: a record that runs past it (data written before the leader checked records)
    raises CorruptRecordError; a payload that does not decompress raises the errors of
    `compression.decompress`.
    """
    end = min(len(raw), header.size_in_bytes)
    pos = HEADER_SIZE
    data: bytes | bytearray | memoryview = raw
    if header.compression != 0:
        data = decompress(header.compression, memoryview(raw)[HEADER_SIZE:end], max_decompressed)
        pos, end = 0, len(data)
    for _ in range(header.record_count):
        length, pos = _read_varint(data, pos, end)
        record_end = pos + length
        if length <= 0 or record_end > end:
            raise CorruptRecordError(
                f"record at byte {pos} claims {length} bytes, past the end of its batch"
            )
        pos += 1  # record attributes
        timestamp_delta, pos = _read_varint(data, pos, record_end)
        offset_delta, pos = _read_varint(data, pos, record_end)
        yield header.base_offset + offset_delta, header.base_timestamp + timestamp_delta
        pos = record_end
