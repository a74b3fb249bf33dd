"""Transaction markers: the control batches that end a transaction in a partition's log.

A marker is a v2 batch with the transactional and control attribute bits set, the
transaction's producer id and epoch, no sequence (-1), and exactly one control record:
key = (version int16 0, type int16: 0 ABORT, 1 COMMIT), value = (version int16 0,
coordinator epoch int32), as Kafka's EndTransactionMarker. Consumers skip control
batches; brokers read them to close a producer's ongoing transaction.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import crc32c

from reference_broker.errors import CorruptRecordError
from reference_broker.log.record_batch import HEADER_SIZE, BatchHeader

ABORT = 0
COMMIT = 1
_CONTROL_ATTRIBUTES = 0x10 | 0x20  # transactional | control
_HEADER = struct.Struct(">qiibIhiqqqhii")
_KEY = struct.Struct(">hh")
_VALUE = struct.Struct(">hi")
# CRC-32C covers the batch from its attributes (offset 21) to the end.
_CRC_START = 21
_CRC_AT = 17


@dataclass(frozen=True, slots=True)
class TxnMarker:
    """What a control record says: which way the transaction ended, and who said so."""

    commit: bool
    coordinator_epoch: int


def _zigzag_varint(value: int) -> bytes:
    encoded = (value << 1) ^ (value >> 63)
    out = bytearray()
    while True:
        byte = encoded & 0x7F
        encoded >>= 7
        if encoded:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_varint(data: bytes | memoryview, pos: int) -> tuple[int, int]:
    shift = 0
    raw = 0
    while True:
        if pos >= len(data):
            raise CorruptRecordError("control record ends inside a varint")
        byte = data[pos]
        pos += 1
        raw |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return (raw >> 1) ^ -(raw & 1), pos
        shift += 7
        if shift > 63:
            raise CorruptRecordError("control record has a varint longer than 10 bytes")


def build_marker(
    producer_id: int, producer_epoch: int, marker: TxnMarker, timestamp_ms: int
) -> bytes:
    """A marker batch at offset 0 (the leader assigns the real offset and epoch)."""
    key = _KEY.pack(0, COMMIT if marker.commit else ABORT)
    value = _VALUE.pack(0, marker.coordinator_epoch)
    body = (
        b"\x00"  # record attributes
        + _zigzag_varint(0)  # timestamp delta
        + _zigzag_varint(0)  # offset delta
        + _zigzag_varint(len(key))
        + key
        + _zigzag_varint(len(value))
        + value
        + _zigzag_varint(0)  # no headers
    )
    record = _zigzag_varint(len(body)) + body
    batch_length = HEADER_SIZE - 12 + len(record)
    buf = bytearray(
        _HEADER.pack(
            0,  # base offset
            batch_length,
            -1,  # partition leader epoch
            2,  # magic
            0,  # crc, below
            _CONTROL_ATTRIBUTES,
            0,  # last offset delta
            timestamp_ms,
            timestamp_ms,
            producer_id,
            producer_epoch,
            -1,  # base sequence
            1,  # record count
        )
    )
    buf += record
    struct.pack_into(">I", buf, _CRC_AT, crc32c.crc32c(bytes(buf[_CRC_START:])))
    return bytes(buf)


def parse_marker(header: BatchHeader, raw: bytes | memoryview) -> TxnMarker:
    """The marker in a control batch (`raw` is the whole batch); raises CorruptRecordError."""
    if not header.is_control:
        raise CorruptRecordError(f"batch at offset {header.base_offset} is not a control batch")
    if header.compression:
        raise CorruptRecordError(
            f"control batch at offset {header.base_offset} is compressed; markers never are"
        )
    data = memoryview(raw)
    try:
        _length, pos = _read_varint(data, HEADER_SIZE)
        pos += 1  # attributes
        _ts, pos = _read_varint(data, pos)
        _delta, pos = _read_varint(data, pos)
        key_length, pos = _read_varint(data, pos)
        if key_length < _KEY.size:
            raise CorruptRecordError(f"control record key of {key_length} bytes")
        _version, kind = _KEY.unpack_from(data, pos)
        pos += key_length
        value_length, pos = _read_varint(data, pos)
        coordinator_epoch = -1
        if value_length >= _VALUE.size:
            _version, coordinator_epoch = _VALUE.unpack_from(data, pos)
    except struct.error as exc:
        raise CorruptRecordError(
            f"control batch at offset {header.base_offset} is truncated: {exc}"
        ) from None
    if kind not in (ABORT, COMMIT):
        raise CorruptRecordError(
            f"control batch at offset {header.base_offset} has control type {kind}, "
            "not a transaction marker (0 abort, 1 commit)"
        )
    return TxnMarker(kind == COMMIT, coordinator_epoch)
