"""`__consumer_offsets`: Kafka's record format, group-to-partition mapping, replay on load."""

from __future__ import annotations

import random
import struct
from dataclasses import replace
from pathlib import Path

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st
from kafka.record.default_records import DefaultRecordBatchBuilder
from kafka.record.memory_records import MemoryRecords

from reference_broker.errors import ErrorCode
from reference_broker.group.config import GroupConfig
from reference_broker.group.coordinator import GroupCoordinator
from reference_broker.group.offsets_store import (
    OFFSETS_TOPIC,
    java_string_hash,
    partition_for,
)
from reference_broker.group.records import (
    GroupMemberMetadata,
    GroupMetadataKey,
    GroupMetadataValue,
    OffsetCommitKey,
    OffsetsRecordError,
    decode_group_metadata_value,
    decode_key,
    decode_offset_commit_value,
    encode_group_metadata_key,
    encode_group_metadata_value,
    encode_offset_commit_key,
    encode_offset_commit_value,
)
from reference_broker.group.results import OffsetAndMetadata
from reference_broker.log.config import LogConfig
from reference_broker.log.log_manager import LogManager
from reference_broker.os_env import OsStorage

PARTITIONS = 5


class FixedClock:
    def now_ms(self) -> int:
        return 1_700_000_000_000


def test_java_string_hash_matches_java() -> None:
    assert java_string_hash("") == 0
    assert java_string_hash("hello") == 99162322
    assert java_string_hash("Aa") == java_string_hash("BB") == 2112
    assert java_string_hash("\U0001f600") == 31 * 0xD83D + 0xDE00  # a UTF-16 surrogate pair
    assert java_string_hash("polygenelubricants") == -(2**31)


def test_group_partition_is_kafkas() -> None:
    assert partition_for("my-group", 50) == 12  # what Kafka's own tooling computes
    assert partition_for("polygenelubricants", 50) == 0  # Utils.abs(MIN_VALUE) is 0
    assert partition_for("hello", 7) == 99162322 % 7


@given(
    st.text(max_size=50),
    st.text(min_size=1, max_size=50),
    st.integers(0, 2**31 - 1),
    st.integers(-1, 2**63 - 1),
    st.integers(-1, 2**31 - 1),
    st.one_of(st.none(), st.text(max_size=100)),
    st.integers(-1, 2**62),
)
def test_offset_records_round_trip(
    group: str,
    topic: str,
    partition: int,
    offset: int,
    epoch: int,
    metadata: str | None,
    timestamp: int,
) -> None:
    key = OffsetCommitKey(group, topic, partition)
    assert decode_key(encode_offset_commit_key(key)) == key
    value = OffsetAndMetadata(offset, epoch, metadata, timestamp)
    decoded = decode_offset_commit_value(encode_offset_commit_value(value))
    assert decoded == OffsetAndMetadata(offset, epoch, metadata or "", timestamp)


def test_older_and_newer_value_versions_written_by_kafka_decode() -> None:
    def s(text: str) -> bytes:
        return struct.pack(">h", len(text)) + text.encode()

    v0 = struct.pack(">hq", 0, 5) + s("m") + struct.pack(">q", 77)
    v1 = struct.pack(">hq", 1, 6) + s("") + struct.pack(">qq", 78, 999)
    # v4 is flexible: compact string (length + 1 as a varint) and an empty tagged-field section.
    v4 = struct.pack(">hqi", 4, 7, 3) + bytes([len("meta") + 1]) + b"meta" + struct.pack(">q", 79)
    v4 += b"\x00"
    assert decode_offset_commit_value(v0) == OffsetAndMetadata(5, -1, "m", 77)
    assert decode_offset_commit_value(v1) == OffsetAndMetadata(6, -1, "", 78)
    assert decode_offset_commit_value(v4) == OffsetAndMetadata(7, 3, "meta", 79)
    assert decode_key(struct.pack(">h", 2) + s("grp")) == GroupMetadataKey("grp")
    with pytest.raises(OffsetsRecordError, match="unknown __consumer_offsets key version 9"):
        decode_key(struct.pack(">h", 9))
    with pytest.raises(OffsetsRecordError, match="truncated"):
        decode_offset_commit_value(v0[:-3])


GROUP_VALUE = GroupMetadataValue(
    protocol_type="consumer",
    generation=3,
    protocol="range",
    leader="m-1",
    current_state_timestamp_ms=1_700_000_000_000,
    members=(
        GroupMemberMetadata("m-1", None, "c", "/h", 30_000, 10_000, b"sub", b"asg"),
        GroupMemberMetadata("m-2", "host-b", "c2", "/h2", 5, 6, b"", b"x"),
    ),
)


def _s(text: str) -> bytes:
    return struct.pack(">h", len(text)) + text.encode()


def test_group_metadata_records_are_kafkas_key_v2_and_value_v3_byte_for_byte() -> None:
    key = encode_group_metadata_key(GroupMetadataKey("billing"))
    assert key == struct.pack(">hh", 2, 7) + b"billing"
    assert decode_key(key) == GroupMetadataKey("billing")
    value = encode_group_metadata_value(GROUP_VALUE)
    # Laid out by hand from GroupMetadataValue.json, independent of the encoder under test.
    assert value == (
        struct.pack(">h", 3) + _s("consumer") + struct.pack(">i", 3) + _s("range") + _s("m-1")
        + struct.pack(">qi", 1_700_000_000_000, 2)
        + _s("m-1") + struct.pack(">h", -1) + _s("c") + _s("/h")
        + struct.pack(">iii", 30_000, 10_000, 3) + b"sub" + struct.pack(">i", 3) + b"asg"
        + _s("m-2") + _s("host-b") + _s("c2") + _s("/h2")
        + struct.pack(">iii", 5, 6, 0) + struct.pack(">i", 1) + b"x"
    )  # fmt: skip
    assert decode_group_metadata_value(value) == GROUP_VALUE
    empty = replace(GROUP_VALUE, protocol=None, leader=None, members=())
    assert encode_group_metadata_value(empty) == (
        struct.pack(">h", 3) + _s("consumer")
        + struct.pack(">ihhqi", 3, -1, -1, 1_700_000_000_000, 0)
    )  # fmt: skip
    assert decode_group_metadata_value(encode_group_metadata_value(empty)) == empty


def test_older_and_flexible_group_metadata_versions_written_by_kafka_decode() -> None:
    # v0: no rebalance timeout (read as the session timeout), timestamp or instance id.
    v0 = (
        struct.pack(">h", 0) + _s("consumer") + struct.pack(">i", 7) + _s("range") + _s("m")
        + struct.pack(">i", 1) + _s("m") + _s("c") + _s("/h")
        + struct.pack(">ii", 6000, 1) + b"s" + struct.pack(">i", 0)
    )  # fmt: skip
    assert decode_group_metadata_value(v0) == GroupMetadataValue(
        "consumer", 7, "range", "m", -1,
        (GroupMemberMetadata("m", None, "c", "/h", 6000, 6000, b"s", b""),),
    )  # fmt: skip

    def c(text: str | None) -> bytes:  # compact (nullable) string
        return b"\x00" if text is None else bytes([len(text) + 1]) + text.encode()

    # v4: compact strings, arrays and bytes, an empty tagged-field section per struct.
    v4 = (
        struct.pack(">h", 4) + c("consumer") + struct.pack(">i", 9) + c(None) + c(None)
        + struct.pack(">q", 5) + b"\x02"
        + c("m") + c("inst") + c("c") + c("/h") + struct.pack(">ii", 7, 8)
        + b"\x02s" + b"\x03ab" + b"\x00"
        + b"\x00"
    )  # fmt: skip
    assert decode_group_metadata_value(v4) == GroupMetadataValue(
        "consumer", 9, None, None, 5,
        (GroupMemberMetadata("m", "inst", "c", "/h", 7, 8, b"s", b"ab"),),
    )  # fmt: skip
    with pytest.raises(OffsetsRecordError, match="unknown GroupMetadataValue version 5"):
        decode_group_metadata_value(struct.pack(">h", 5))
    with pytest.raises(OffsetsRecordError, match="truncated"):
        decode_group_metadata_value(v0[:-2])


def _coordinator(data_dir: Path) -> tuple[GroupCoordinator, LogManager]:
    logs = LogManager.open(OsStorage(data_dir), FixedClock(), LogConfig())
    config = GroupConfig(offsets_topic_num_partitions=PARTITIONS)
    return GroupCoordinator(logs, FixedClock(), config, random.Random(0)), logs


def _batch(records: list[tuple[bytes, bytes | None]]) -> bytes:
    builder = DefaultRecordBatchBuilder(2, 0, False, -1, -1, -1, 1 << 20)
    for i, (key, value) in enumerate(records):
        builder.append(i, timestamp=1, key=key, value=value, headers=[])
    return bytes(builder.build())


async def test_commit_writes_kafkas_record_format_into_the_groups_partition(
    tmp_path: Path,
) -> None:
    coordinator, logs = _coordinator(tmp_path)
    await coordinator.load()
    offsets = {("orders", 2): OffsetAndMetadata(41, 6, "hi")}
    assert await coordinator.commit_offsets("billing", -1, "", None, offsets) == {
        ("orders", 2): ErrorCode.NONE
    }
    target = partition_for("billing", PARTITIONS)
    assert coordinator.partition_for("billing") == target
    for p in range(PARTITIONS):
        log = logs.get(OFFSETS_TOPIC, p)
        assert log is not None
        assert log.log_end_offset == (1 if p == target else 0)
    log = logs.get(OFFSETS_TOPIC, target)
    assert log is not None and log.high_watermark == 1
    batch = MemoryRecords(log.read(0, 1 << 20).records).next_batch()
    (record,) = list(batch)
    # Parsed by hand from Kafka's schemas, independent of the encoder under test.
    assert record.key == (
        struct.pack(">hh", 1, 7) + b"billing" + struct.pack(">h", 6) + b"orders"
    ) + struct.pack(">i", 2)
    assert record.value == struct.pack(">hqih", 3, 41, 6, 2) + b"hi" + struct.pack(
        ">q", 1_700_000_000_000
    )
    await logs.close()


async def test_replay_takes_the_last_record_and_honours_tombstones(tmp_path: Path) -> None:
    logs = LogManager.open(OsStorage(tmp_path), FixedClock(), LogConfig())
    p = partition_for("g", PARTITIONS)
    log = logs.create(OFFSETS_TOPIC, p)

    def key(topic: str, partition: int) -> bytes:
        return encode_offset_commit_key(OffsetCommitKey("g", topic, partition))

    def value(offset: int) -> bytes:
        return encode_offset_commit_value(OffsetAndMetadata(offset, 0, "", 5))

    log.append_as_leader(_batch([(key("t", 0), value(1)), (key("t", 1), value(2))]), 0)
    log.append_as_leader(_batch([(key("t", 0), value(3))]), 0)
    log.append_as_leader(_batch([(key("t", 1), None)]), 0)  # tombstone
    group_key = struct.pack(">hh", 2, 1) + b"g"
    empty_group = struct.pack(">hh", 3, 8) + b"consumer" + struct.pack(">ihhqi", 4, -1, -1, 9, 0)
    log.append_as_leader(_batch([(group_key, empty_group)]), 0)
    await logs.close()

    coordinator, logs = _coordinator(tmp_path)
    await coordinator.load()
    error, offsets = coordinator.fetch_offsets("g", [("t", 0), ("t", 1)])
    assert error is ErrorCode.NONE
    assert offsets == {("t", 0): OffsetAndMetadata(3, 0, "", 5), ("t", 1): None}
    await logs.close()


async def test_undecodable_record_fails_load_naming_partition_and_offset(tmp_path: Path) -> None:
    logs = LogManager.open(OsStorage(tmp_path), FixedClock(), LogConfig())
    log = logs.create(OFFSETS_TOPIC, 3)
    log.append_as_leader(_batch([(struct.pack(">h", 7), b"")]), 0)
    await logs.close()
    coordinator, logs = _coordinator(tmp_path)
    with pytest.raises(OffsetsRecordError, match=r"__consumer_offsets-3 offset 0: unknown"):
        await coordinator.load()
    await logs.close()


async def test_commit_with_flush_every_message_is_durable_before_it_is_visible(
    tmp_path: Path,
) -> None:
    storage = OsStorage(tmp_path, volatile_until_fsync=True)
    logs = LogManager.open(storage, FixedClock(), LogConfig())
    config = GroupConfig(offsets_topic_num_partitions=PARTITIONS)
    coordinator = GroupCoordinator(
        logs,
        FixedClock(),
        config,
        random.Random(0),
        offsets_log_config=LogConfig(flush_messages=1, retention_ms=-1),
    )
    await coordinator.load()
    await coordinator.commit_offsets("g", -1, "", None, {("t", 0): OffsetAndMetadata(9, 0, "")})
    log = logs.get(OFFSETS_TOPIC, partition_for("g", PARTITIONS))
    assert log is not None and log.unflushed_messages == 0
    # Power cut: whatever was not fsynced is gone. The commit must survive it.
    for each in logs.all():
        each.close_now()
    del storage
    await trio.lowlevel.checkpoint()
    again, logs = _coordinator(tmp_path)
    await again.load()
    stored = again.fetch_offsets("g", [("t", 0)])[1][("t", 0)]
    assert stored is not None and stored.offset == 9
    await logs.close()


async def test_replay_stops_at_offsets_recovery_retired_after_a_damaged_last_batch(
    tmp_path: Path,
) -> None:
    logs = LogManager.open(OsStorage(tmp_path), FixedClock(), LogConfig())
    p = partition_for("g", PARTITIONS)
    log = logs.create(OFFSETS_TOPIC, p)

    def commit(offset: int) -> bytes:
        key = encode_offset_commit_key(OffsetCommitKey("g", "t", 0))
        return _batch([(key, encode_offset_commit_value(OffsetAndMetadata(offset, 0, "", 5)))])

    log.append_as_leader(commit(1), 0)
    log.append_as_leader(commit(2), 0)
    await logs.close()
    segment = tmp_path / f"{OFFSETS_TOPIC}-{p}" / f"{0:020d}.log"
    data = bytearray(segment.read_bytes())
    data[-3] ^= 0x01  # the second commit's batch fails its CRC
    segment.write_bytes(bytes(data))
    coordinator, logs = _coordinator(tmp_path)
    reopened = logs.get(OFFSETS_TOPIC, p)
    assert reopened is not None and reopened.log_end_offset == 2  # offset 1 is never reused
    await coordinator.load()
    error, offsets = coordinator.fetch_offsets("g", [("t", 0)])
    assert error is ErrorCode.NONE
    assert offsets == {("t", 0): OffsetAndMetadata(1, 0, "", 5)}
    await logs.close()
