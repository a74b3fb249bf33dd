"""Batches a buggy or hostile producer can send under a valid CRC-32C, each with the error
code Kafka answers it with, for the unit tests of the leader's record walk and the wire test.

Kept free of broker imports so the wire test runs (and fails) against a broker without the
record walk.
"""

from __future__ import annotations

import gzip
import struct

import cramjam

from tests.wire import encode_record, raw_batch, zigzag_varint

GZIP, SNAPPY, LZ4, ZSTD = 1, 2, 3, 4


def records(n: int, *, ts_step: int = 1, value: bytes = b"value") -> bytes:
    """The records section of n well-formed records (offset deltas 0..n-1)."""
    return b"".join(
        encode_record(i, value + b"%d" % i, key=b"k", timestamp_delta=i * ts_step) for i in range(n)
    )


def xerial(payload: bytes, block: int = 64) -> bytes:
    """Snappy in the xerial framing the Java client writes: header, then length + block."""
    out = bytearray(b"\x82SNAPPY\x00" + struct.pack(">ii", 1, 1))
    for i in range(0, len(payload), block):
        chunk = bytes(cramjam.snappy.compress_raw(payload[i : i + block]))
        out += struct.pack(">i", len(chunk)) + chunk
    return bytes(out)


COMPRESS = {
    GZIP: lambda data: gzip.compress(data),
    SNAPPY: lambda data: bytes(cramjam.snappy.compress_raw(data)),
    LZ4: lambda data: bytes(cramjam.lz4.compress(data)),
    ZSTD: lambda data: bytes(cramjam.zstd.compress(data)),
}


# name -> (batch, Kafka error code): 87 INVALID_RECORD, 32 INVALID_TIMESTAMP, 48 INVALID_TXN_STATE
POISON = {
    "gzip flag over garbage": (raw_batch(b"garbage!" * 8, record_count=1, attributes=GZIP), 87),
    "garbage records": (raw_batch(b"\xff\x13garbage" * 6, record_count=3), 87),
    "count 1, no record bytes": (raw_batch(b"", record_count=1), 87),
    "count 1000 over 3 records": (raw_batch(records(3), record_count=1000), 87),
    "3 records, count 2": (raw_batch(records(3), record_count=2), 87),
    "trailing byte": (raw_batch(records(2) + b"\x00", record_count=2), 87),
    "offset deltas out of order": (
        raw_batch(encode_record(1, b"a") + encode_record(0, b"b"), record_count=2),
        87,
    ),
    "offset deltas with a gap": (
        raw_batch(encode_record(0, b"a") + encode_record(2, b"b"), record_count=2),
        87,
    ),
    "maxTimestamp -5, record at -5": (
        raw_batch(records(1), record_count=1, base_timestamp=-5, max_timestamp=-5),
        32,
    ),
    "negative record timestamp": (
        raw_batch(records(2), record_count=2, base_timestamp=-5, max_timestamp=-4),
        32,
    ),
    "negative timestamp delta": (
        raw_batch(encode_record(0, b"a", timestamp_delta=-10), record_count=1, base_timestamp=3),
        32,
    ),
    "record length past the batch": (raw_batch(b"\x7e" + records(1)[1:], record_count=1), 87),
    "key length past the record": (
        raw_batch(b"\x0e\x00\x00\x00\x64abcdefg", record_count=1),
        87,
    ),
    # attributes, timestamp delta, offset delta 0, key length zigzag(-5) = 9, value b"a"
    "key length -5": (raw_batch(b"\x0e\x00\x00\x00\x09\x02a\x00", record_count=1), 87),
    "header count 1000000": (
        raw_batch(encode_record(0, b"v")[:-1] + zigzag_varint(1_000_000), record_count=1),
        87,
    ),
    "varint of 11 bytes": (raw_batch(b"\x80" * 11 + b"\x01", record_count=1), 87),
    "control bit": (raw_batch(records(1), record_count=1, attributes=0x20), 87),
    "producer id without epoch or sequence": (
        raw_batch(records(1), record_count=1, producer_id=7),
        87,
    ),
    "sequence without producer id": (raw_batch(records(1), record_count=1, base_sequence=0), 87),
    "epoch without producer id": (raw_batch(records(1), record_count=1, producer_epoch=3), 87),
    "producer id -7": (
        raw_batch(records(1), record_count=1, producer_id=-7, producer_epoch=0, base_sequence=0),
        87,
    ),
    "producer set LogAppendTime": (raw_batch(records(1), record_count=1, attributes=0x08), 32),
    "unknown codec 6": (raw_batch(records(1), record_count=1, attributes=6), 87),
}
for _codec in (GZIP, SNAPPY, LZ4, ZSTD):
    _payload = bytearray(COMPRESS[_codec](records(30, value=b"y" * 40)))
    _payload[len(_payload) // 2] ^= 0xFF
    POISON[f"codec {_codec} corrupted payload"] = (
        raw_batch(bytes(_payload), record_count=30, attributes=_codec),
        87,
    )
    _cut = COMPRESS[_codec](records(30, value=b"y" * 40))
    POISON[f"codec {_codec} cut short"] = (
        raw_batch(_cut[: len(_cut) - 9], record_count=30, attributes=_codec),
        87,
    )
