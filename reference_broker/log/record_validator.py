"""The leader's walk over every record of a produced batch, as Kafka's LogValidator.

A CRC-32C only proves the bytes arrived as the producer made them, not that they
make sense: a batch may claim a codec over garbage, more records than it holds, or
records whose lengths run past the batch. Kafka's leader decodes every record before
appending (LogValidator with DefaultRecordBatch/DefaultRecord) and so must this one,
or consumers are served batches they cannot read.

Record layout inside the records section (DefaultRecord.java), all varints zigzag::

    length          varint   bytes after this field
    attributes      int8
    timestampDelta  varlong
    offsetDelta     varint
    keyLength       varint   -1 = null
    key
    valueLength     varint   -1 = null
    value
    headerCount     varint
    headers         [keyLength varint >= 0, key, valueLength varint (-1 = null), value]

Errors use Kafka's codes: a record that does not parse, a count that does not match
the records present, offset deltas out of order, INVALID_RECORD (Kafka's
InvalidRecordException); negative timestamps and producer-set LogAppendTime,
INVALID_TIMESTAMP; more decompressed bytes than the bound, MESSAGE_TOO_LARGE.

The walk is on the produce hot path: it reads the request's bytes in place with plain
indexing (one- and two-byte varints inline) and makes no per-record objects or slices.
"""

from __future__ import annotations

from reference_broker.errors import InvalidRecordError, InvalidTimestampError
from reference_broker.log.compression import decompress
from reference_broker.log.record_batch import HEADER_SIZE, BatchHeader

NO_TIMESTAMP = -1
INT64_MAX = (1 << 63) - 1
# Varints of int32 fields take at most 5 bytes, varlongs 10 (Kafka's ByteUtils).
_MAX_VARINT_SHIFT = 28
_MAX_VARLONG_SHIFT = 63

# How many times max.message.bytes (or 1 MiB, if larger) one batch may decompress to.
# Real record data compresses 2-10x and producers bound their batches in
# (near-)uncompressed bytes (librdkafka's batch.size, the Java producer's batch.size
# through its compression-ratio estimate), so 32x is far above any sane batch, while a
# decompression bomb (gzip reaches ~1000x, zstd far more) stops there: the broker
# holds at most this much per batch under validation, one batch at a time. A batch
# over it is answered MESSAGE_TOO_LARGE, on which the Java producer splits its batch.
DECOMPRESSION_FACTOR = 32
_DECOMPRESSION_FLOOR = 1 << 20


def decompression_limit(max_message_bytes: int) -> int:
    """The most bytes one batch's records section may decompress to."""
    return DECOMPRESSION_FACTOR * max(max_message_bytes, _DECOMPRESSION_FLOOR)


def validate_records(
    header: BatchHeader,
    buf: bytes,
    pos: int,
    *,
    create_time: bool,
    max_decompressed: int,
) -> int:
    """Walk every record of the batch at `buf[pos:pos + header.size_in_bytes]`.

    Checks that exactly `header.record_count` records fill the records section (no
    byte missing or left over), each record's fields lie within its stated length,
    offset deltas run 0..count-1 and, for a CreateTime topic (`create_time`), that no
    timestamp is negative other than -1 (no timestamp). Returns the largest record
    timestamp (-1 when none has one): the batch's true maxTimestamp.
    """
    end = pos + header.size_in_bytes
    start = pos + HEADER_SIZE
    codec = header.compression
    if codec:
        records: bytes | bytearray = decompress(codec, memoryview(buf)[start:end], max_decompressed)
        start, end = 0, len(records)
    else:
        records = buf
    return _walk(records, start, end, header.record_count, header.base_timestamp, create_time)


def _walk(
    buf: bytes | bytearray, pos: int, end: int, count: int, base_ts: int, check_ts: bool
) -> int:
    # Varints of one and two bytes (every length under 8 KiB, offset deltas under 8192)
    # are decoded inline; longer ones go through _varint. Reads may run past a record
    # (into the next one or the next batch) before the end-of-record check catches it;
    # past `buf` itself they raise IndexError, turned into InvalidRecordError below.
    max_delta = NO_TIMESTAMP - base_ts
    lowest = max_delta if check_ts else -(1 << 80)
    index = 0
    try:
        for index in range(count):
            if pos >= end:
                raise InvalidRecordError(
                    f"record batch claims {count} records but its records section ends "
                    f"after {index}"
                )
            # length, kept in zigzag form: odd is negative
            b = buf[pos]
            if b < 0x80:
                v = b
                pos += 1
            elif buf[pos + 1] < 0x80:
                v = (b & 0x7F) | (buf[pos + 1] << 7)
                pos += 2
            else:
                v, pos = _varint(buf, pos, _MAX_VARINT_SHIFT)
                v = v << 1 if v >= 0 else 1
            length = v >> 1
            record_end = pos + length
            if v & 1 or not length or record_end > end:
                raise InvalidRecordError(
                    f"record {index} claims {(v >> 1) ^ -(v & 1)} bytes but "
                    f"{end - pos} remain in the records section"
                )
            # attributes (unused in v2), then timestampDelta
            b = buf[pos + 1]
            if b < 0x80:
                v = (b >> 1) ^ -(b & 1)
                pos += 2
            elif buf[pos + 2] < 0x80:
                v = (b & 0x7F) | (buf[pos + 2] << 7)
                v = (v >> 1) ^ -(v & 1)
                pos += 3
            else:
                v, pos = _varint(buf, pos + 1, _MAX_VARLONG_SHIFT)
            # Compared as deltas: max_delta starts at the delta of timestamp -1 (none),
            # anything below `lowest` is a negative timestamp.
            if v > max_delta:
                max_delta = v
            elif v < lowest:
                raise InvalidTimestampError(
                    f"record {index} has timestamp {base_ts + v}; timestamps may not be "
                    "negative (-1 means none)"
                )
            # offsetDelta must be `index`: compared in zigzag form (2 * index), undecoded
            b = buf[pos]
            if b < 0x80:
                v = b
                pos += 1
            elif buf[pos + 1] < 0x80:
                v = (b & 0x7F) | (buf[pos + 1] << 7)
                pos += 2
            else:
                v, pos = _varint(buf, pos, _MAX_VARINT_SHIFT)
                v = v << 1 if v >= 0 else -1
            if v != index << 1:
                raise InvalidRecordError(
                    f"record {index} has offset delta {(v >> 1) ^ -(v & 1)}; a produced "
                    "batch's offset deltas must run 0, 1, 2, ... in order"
                )
            # key, then value: zigzag odd is negative, and only -1 (null, zigzag 1) may be
            b = buf[pos]
            if b < 0x80:
                if b & 1 and b != 1:
                    raise InvalidRecordError(f"record {index} has key length {-(b + 1) >> 1}")
                pos += 1 + (b >> 1)
            elif buf[pos + 1] < 0x80:
                if b & 1:
                    raise InvalidRecordError(f"record {index} has a negative key length")
                pos += 2 + (((b & 0x7F) | (buf[pos + 1] << 7)) >> 1)
            else:
                v, pos = _varint(buf, pos, _MAX_VARINT_SHIFT)
                if v < -1:
                    raise InvalidRecordError(f"record {index} has key length {v}")
                pos += max(v, 0)
            b = buf[pos]
            if b < 0x80:
                if b & 1 and b != 1:
                    raise InvalidRecordError(f"record {index} has value length {-(b + 1) >> 1}")
                pos += 1 + (b >> 1)
            elif buf[pos + 1] < 0x80:
                if b & 1:
                    raise InvalidRecordError(f"record {index} has a negative value length")
                pos += 2 + (((b & 0x7F) | (buf[pos + 1] << 7)) >> 1)
            else:
                v, pos = _varint(buf, pos, _MAX_VARINT_SHIFT)
                if v < -1:
                    raise InvalidRecordError(f"record {index} has value length {v}")
                pos += max(v, 0)
            # headers: almost always none (a single zero byte)
            if buf[pos]:
                pos = _skip_headers(buf, pos, record_end, index)
            else:
                pos += 1
            if pos != record_end:
                raise InvalidRecordError(
                    f"record {index} states {length} bytes but its fields take "
                    f"{length + pos - record_end}"
                )
    except IndexError:
        raise InvalidRecordError(f"record {index} runs past the end of its batch") from None
    if pos != end:
        raise InvalidRecordError(
            f"record batch claims {count} records but {end - pos} bytes follow the last one"
        )
    max_ts = base_ts + max_delta
    if check_ts and max_ts > INT64_MAX:
        raise InvalidTimestampError(f"record timestamp {max_ts} does not fit in 64 bits")
    return max_ts


def _skip_headers(buf: bytes | bytearray, pos: int, record_end: int, index: int) -> int:
    count, pos = _varint(buf, pos, _MAX_VARINT_SHIFT)
    if count < 0:
        raise InvalidRecordError(f"record {index} has header count {count}")
    for _ in range(count):
        # Each header takes at least two bytes: a count past the record stops here.
        if pos >= record_end:
            raise InvalidRecordError(f"record {index} claims {count} headers it does not hold")
        size, pos = _varint(buf, pos, _MAX_VARINT_SHIFT)
        if size < 0:
            raise InvalidRecordError(f"record {index} has a header key length {size}")
        pos += size
        size, pos = _varint(buf, pos, _MAX_VARINT_SHIFT)
        if size > 0:
            pos += size
        elif size < -1:
            raise InvalidRecordError(f"record {index} has a header value length {size}")
    return pos


def _varint(buf: bytes | bytearray, pos: int, max_shift: int) -> tuple[int, int]:
    """A zigzag varint at `pos`: (value, position after it); IndexError past `buf`."""
    shift = 0
    result = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return (result >> 1) ^ -(result & 1), pos
        shift += 7
        if shift > max_shift:
            raise InvalidRecordError(f"varint at byte {pos} is longer than Kafka allows")
