"""v2 batch headers, framing and CRC checks against batches built by kafka-python.

Also home of the batch-building helpers the other test_log_* modules import.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import pytest
from kafka.record.default_records import DefaultRecordBatchBuilder
from kafka.record.memory_records import MemoryRecords

from reference_broker.errors import CorruptRecordError, InvalidRecordError
from reference_broker.log.config import LogConfig
from reference_broker.log.record_batch import (
    HEADER_SIZE,
    assign_offset_and_epoch,
    increment_sequence,
    iter_batches,
    parse_header,
    record_timestamps,
    set_log_append_time,
    validate_batch,
    validate_client_batch,
)

GZIP = 1


def build_batch(
    values: Sequence[bytes],
    *,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
    timestamp: int = 1_700_000_000_000,
    compression: int = 0,
    keys: Sequence[bytes | None] | None = None,
) -> bytes:
    """A real v2 batch as kafka-python's producer builds it."""
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=compression,
        is_transactional=False,
        producer_id=producer_id,
        producer_epoch=producer_epoch,
        base_sequence=base_sequence,
        batch_size=1 << 24,
    )
    for i, value in enumerate(values):
        key = keys[i] if keys is not None else None
        builder.append(i, timestamp=timestamp + i, key=key, value=value, headers=[])
    return bytes(builder.build())


def decode(records: bytes) -> list[tuple[int, bytes]]:
    """(offset, value) of every record, parsed by kafka-python's reader."""
    out: list[tuple[int, bytes]] = []
    reader = MemoryRecords(records)
    while reader.has_next():
        batch = reader.next_batch()
        assert batch.validate_crc(), "kafka-python finds a bad CRC in data the log served"
        out.extend((r.offset, r.value) for r in batch)
    return out


def decode_batches(records: bytes) -> list[tuple[int, int, int]]:
    """(base offset, leader epoch, record count) of each batch, by kafka-python."""
    out = []
    reader = MemoryRecords(records)
    while reader.has_next():
        batch = reader.next_batch()
        out.append((batch.base_offset, batch.leader_epoch, len(list(batch))))
    return out


def test_header_fields_match_what_kafka_python_wrote() -> None:
    raw = build_batch(
        [b"a", b"bb", b"ccc"], producer_id=7, producer_epoch=2, base_sequence=40, timestamp=5000
    )
    header = parse_header(raw)
    assert header.magic == 2
    assert header.base_offset == 0
    assert header.record_count == 3
    assert header.last_offset_delta == 2
    assert header.base_timestamp == 5000
    assert header.max_timestamp == 5002
    assert (header.producer_id, header.producer_epoch, header.base_sequence) == (7, 2, 40)
    assert header.last_sequence == 42
    assert header.size_in_bytes == len(raw)
    assert header.compression == 0
    assert not header.is_transactional and not header.is_control


def test_iter_batches_splits_concatenated_batches() -> None:
    first, second = build_batch([b"x"] * 3), build_batch([b"y"] * 5)
    found = [(h.record_count, bytes(raw)) for h, raw in iter_batches(first + second)]
    assert found == [(3, first), (5, second)]


def test_iter_batches_rejects_a_batch_cut_short() -> None:
    raw = build_batch([b"value"] * 4)
    with pytest.raises(CorruptRecordError, match="only"):
        list(iter_batches(raw[:-3]))
    with pytest.raises(CorruptRecordError, match="truncated"):
        list(iter_batches(raw + raw[:20]))


def test_iter_batches_rejects_old_magic() -> None:
    raw = bytearray(build_batch([b"v"]))
    raw[16] = 1
    with pytest.raises(CorruptRecordError, match="magic 1"):
        list(iter_batches(raw))


def test_iter_batches_rejects_an_impossible_length() -> None:
    raw = bytearray(build_batch([b"v"]))
    struct.pack_into(">i", raw, 8, 10)
    with pytest.raises(CorruptRecordError, match="shorter than a v2 header"):
        list(iter_batches(raw))


def test_validate_batch_detects_any_flipped_byte_under_the_crc() -> None:
    raw = build_batch([b"payload-%d" % i for i in range(5)])
    header = parse_header(raw)
    validate_batch(header, raw)
    for position in (21, 30, HEADER_SIZE, len(raw) - 1):
        corrupt = bytearray(raw)
        corrupt[position] ^= 0x40
        with pytest.raises(CorruptRecordError, match="CRC"):
            validate_batch(parse_header(corrupt), corrupt)


def test_offset_and_epoch_rewrite_keeps_the_crc_valid() -> None:
    raw = bytearray(build_batch([b"a", b"b"]))
    assign_offset_and_epoch(raw, 0, 123456, 9)
    header = parse_header(raw)
    validate_batch(header, raw)
    assert (header.base_offset, header.partition_leader_epoch) == (123456, 9)
    assert decode(bytes(raw)) == [(123456, b"a"), (123457, b"b")]


def test_log_append_time_stamp_recomputes_the_crc() -> None:
    raw = bytearray(build_batch([b"a"], timestamp=10))
    set_log_append_time(raw, 0, len(raw), 99_000)
    header = parse_header(raw)
    validate_batch(header, raw)
    assert header.is_log_append_time and header.max_timestamp == 99_000


def test_compressed_batch_timestamps_are_read_after_decompressing() -> None:
    raw = build_batch([b"z" * 100] * 20, compression=GZIP, timestamp=1000)
    header = parse_header(raw)
    assert header.compression == GZIP
    validate_batch(header, raw)
    validate_client_batch(header)
    assert list(record_timestamps(header, raw)) == [(i, 1000 + i) for i in range(20)]


def test_record_timestamps_walks_uncompressed_records() -> None:
    raw = build_batch([b"a", b"b", b"c"], timestamp=1000)
    assert list(record_timestamps(parse_header(raw), raw)) == [(0, 1000), (1, 1001), (2, 1002)]


def test_client_batch_checks_refuse_control_and_sparse_batches() -> None:
    raw = bytearray(build_batch([b"a", b"b"]))
    struct.pack_into(">h", raw, 21, 0x20)  # control bit
    with pytest.raises(InvalidRecordError, match="control"):
        validate_client_batch(parse_header(raw))
    raw = bytearray(build_batch([b"a", b"b"]))
    struct.pack_into(">i", raw, 23, 5)  # lastOffsetDelta 5 with 2 records
    with pytest.raises(InvalidRecordError, match="dense"):
        validate_client_batch(parse_header(raw))


def test_sequence_numbers_wrap_at_int32_max() -> None:
    top = (1 << 31) - 1
    assert increment_sequence(top - 1, 1) == top
    assert increment_sequence(top, 1) == 0
    assert increment_sequence(top - 1, 3) == 1
    assert increment_sequence(-1, 4) == -1


def test_config_from_kafka_names_and_round_trip() -> None:
    config = LogConfig.from_kafka(
        {"segment.bytes": "2048", "retention.ms": -1, "flush.messages": "1", "flush.ms": 500}
    )
    assert config.segment_bytes == 2048
    assert config.retention_ms == -1
    assert config.flush_messages == 1 and config.flush_ms == 500
    assert LogConfig.from_kafka(config.to_kafka()) == config
    assert LogConfig.from_kafka({"flush.messages": str((1 << 63) - 1)}).flush_messages is None


@pytest.mark.parametrize(
    ("props", "message"),
    [
        ({"segment.bytez": "1"}, "segment.bytez"),
        ({"segment.bytes": "lots"}, "segment.bytes"),
        ({"segment.bytes": "10"}, "at least 14"),
        ({"flush.messages": "0"}, "flush.messages"),
        ({"cleanup.policy": "compact"}, "compact"),
        ({"unclean.leader.election.enable": "maybe"}, "unclean.leader.election.enable"),
    ],
)
def test_config_rejects_bad_keys_and_values_by_name(props: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LogConfig.from_kafka(props)
