"""PartitionLog on real files: appends, reads, segments, indexes, retention, recovery."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from reference_broker.errors import (
    CorruptRecordError,
    KafkaStorageError,
    MessageTooLargeError,
    OffsetOutOfRangeError,
)
from reference_broker.log import LogConfig, PartitionLog
from reference_broker.log.record_batch import iter_batches, parse_header
from reference_broker.os_env import OsStorage
from tests.test_log_record_batch import build_batch, decode, decode_batches

T0 = 1_700_000_000_000


class ManualClock:
    """A node clock the test moves by hand."""

    def __init__(self, now_ms: int = T0) -> None:
        self.now = now_ms

    def now_ms(self) -> int:
        return self.now


def open_log(root: Path, clock: ManualClock | None = None, **config: Any) -> PartitionLog:
    return PartitionLog.open(
        OsStorage(root), "events-0", LogConfig(**config), clock or ManualClock()
    )


def values(n: int, start: int = 0) -> list[bytes]:
    return [b"value-%06d" % i for i in range(start, start + n)]


def all_records(log: PartitionLog) -> list[tuple[int, bytes]]:
    out: list[tuple[int, bytes]] = []
    offset = log.log_start_offset
    while offset < log.log_end_offset:
        records = log.read(offset, 1 << 20).records
        batches = [header for header, _ in iter_batches(records)]
        assert batches, f"read at {offset} below LEO {log.log_end_offset} returned nothing"
        # Batches with no records (offsets recovery retired) are read past, as clients do.
        out.extend(decode(records))
        offset = batches[-1].last_offset + 1
    return out


def test_append_then_read_round_trips_through_kafka_python(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    result = log.append_as_leader(build_batch([b"hello", b"world"]), leader_epoch=4)
    assert (result.base_offset, result.last_offset, result.record_count) == (0, 1, 2)
    assert not result.duplicate and result.log_append_time == -1
    read = log.read(0, 1 << 20)
    assert decode(read.records) == [(0, b"hello"), (1, b"world")]
    assert decode_batches(read.records) == [(0, 4, 2)]
    assert read.log_end_offset == 2 and read.log_start_offset == 0


def test_offsets_continue_across_produce_calls(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    bases = [log.append_as_leader(build_batch(values(3, 3 * i)), 0).base_offset for i in range(5)]
    assert bases == [0, 3, 6, 9, 12]
    assert log.log_end_offset == 15
    assert all_records(log) == list(enumerate(values(15)))


def test_several_batches_in_one_request_get_consecutive_offsets(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    log.append_as_leader(build_batch([b"first"]), 0)
    result = log.append_as_leader(build_batch(values(2)) + build_batch(values(3, 2)), 1)
    assert (result.base_offset, result.last_offset, result.record_count) == (1, 5, 5)
    assert decode_batches(log.read(1, 1 << 20).records) == [(1, 1, 2), (3, 1, 3)]


def test_corrupt_crc_is_rejected_and_nothing_of_the_request_is_appended(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    log.append_as_leader(build_batch([b"kept"]), 0)
    good, bad = build_batch(values(2)), bytearray(build_batch(values(2)))
    bad[-2] ^= 0xFF
    with pytest.raises(CorruptRecordError, match="CRC"):
        log.append_as_leader(good + bytes(bad), 0)
    assert log.log_end_offset == 1
    assert all_records(log) == [(0, b"kept")]
    assert log.append_as_leader(good, 0).base_offset == 1


def test_batch_over_max_message_bytes_is_rejected(tmp_path: Path) -> None:
    log = open_log(tmp_path, max_message_bytes=500)
    with pytest.raises(MessageTooLargeError, match=r"max\.message\.bytes=500"):
        log.append_as_leader(build_batch([b"x" * 600]), 0)
    assert log.log_end_offset == 0


def test_read_outside_the_log_raises_offset_out_of_range(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    log.append_as_leader(build_batch(values(3)), 0)
    assert log.read(3, 1000).records == b""
    with pytest.raises(OffsetOutOfRangeError, match="log end offset 3"):
        log.read(4, 1000)
    with pytest.raises(OffsetOutOfRangeError):
        log.read(-1, 1000)


def test_read_respects_max_bytes_but_returns_one_oversized_batch(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    for i in range(4):
        log.append_as_leader(build_batch(values(10, 10 * i)), 0)
    batch_size = len(build_batch(values(10)))
    one = log.read(0, 10)
    assert decode_batches(one.records) == [(0, 0, 10)]
    assert log.read(0, 10, min_one=False).records == b""
    two = log.read(0, 2 * batch_size + batch_size // 2)
    assert [b for b, _, _ in decode_batches(two.records)] == [0, 10]


def test_read_from_inside_a_batch_starts_at_that_batch(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    log.append_as_leader(build_batch(values(5)), 0)
    log.append_as_leader(build_batch(values(5, 5)), 0)
    assert [b for b, _, _ in decode_batches(log.read(7, 1 << 20).records)] == [5]


def test_read_stops_before_max_offset(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    for i in range(3):
        log.append_as_leader(build_batch(values(2, 2 * i)), 0)
    log.update_high_watermark(4)
    read = log.read(0, 1 << 20, max_offset=log.high_watermark)
    assert [o for o, _ in decode(read.records)] == [0, 1, 2, 3]
    assert read.high_watermark == 4
    assert log.read(4, 1 << 20, max_offset=4).records == b""


def test_high_watermark_never_moves_back_or_past_the_leo(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    log.append_as_leader(build_batch(values(5)), 0)
    log.update_high_watermark(3)
    log.update_high_watermark(1)
    assert log.high_watermark == 3
    log.update_high_watermark(100)
    assert log.high_watermark == 5


def test_segments_roll_by_size_and_reads_find_offsets_in_any_segment(tmp_path: Path) -> None:
    log = open_log(tmp_path, segment_bytes=4096, index_interval_bytes=256)
    for i in range(200):
        log.append_as_leader(build_batch(values(3, 3 * i)), 0)
    assert log.segment_count > 5
    bases = log.segment_base_offsets
    files = sorted(os.listdir(tmp_path / "events-0"))
    assert f"{bases[2]:020d}.log" in files and f"{bases[2]:020d}.index" in files
    assert f"{bases[2]:020d}.timeindex" in files
    assert all(os.path.getsize(tmp_path / "events-0" / f"{b:020d}.log") <= 4096 for b in bases)
    expected = dict(enumerate(values(600)))
    # The first offset of the Nth segment, the middle of a segment, each batch's interior.
    probes = [bases[3], bases[3] + 17, bases[-1], bases[-1] - 1, 1, 599, *range(250, 262)]
    for offset in probes:
        got = decode(log.read(offset, 200).records)
        batch_base = offset - offset % 3
        assert got[0] == (batch_base, expected[batch_base]), offset
        assert all(expected[o] == v for o, v in got)
    assert all_records(log) == sorted(expected.items())


def test_sparse_index_gets_an_entry_per_interval(tmp_path: Path) -> None:
    log = open_log(tmp_path, index_interval_bytes=1024)
    batch = build_batch(values(3))
    for i in range(100):
        log.append_as_leader(build_batch(values(3, 3 * i)), 0)
    entries = log._active.index_entry_count()
    total = 100 * len(batch)
    assert total // (1024 + len(batch)) - 1 <= entries <= total // 1024
    assert os.path.getsize(tmp_path / "events-0" / f"{0:020d}.index") == 8 * entries


def test_segments_roll_by_time(tmp_path: Path) -> None:
    log = open_log(tmp_path, segment_ms=1000)
    log.append_as_leader(build_batch([b"a"], timestamp=T0), 0)
    log.append_as_leader(build_batch([b"b"], timestamp=T0 + 500), 0)
    assert log.segment_count == 1
    log.append_as_leader(build_batch([b"c"], timestamp=T0 + 1500), 0)
    assert log.segment_base_offsets == [0, 2]


def test_retention_by_size_deletes_old_segments_and_moves_the_start(tmp_path: Path) -> None:
    log = open_log(tmp_path, segment_bytes=2048, retention_bytes=5000)
    for i in range(100):
        log.append_as_leader(build_batch(values(2, 2 * i)), 0)
    before = log.segment_base_offsets
    log.update_high_watermark(log.log_end_offset)
    deleted = log.enforce_retention(T0)
    assert deleted > 0
    assert log.segment_base_offsets == before[deleted:]
    assert log.log_start_offset == before[deleted]
    # Kafka's rule: delete the oldest segment while the log stays >= retention.bytes
    # without it; so the log ends at least that big, and one more deletion would
    # take it below.
    oldest_left = (tmp_path / "events-0" / f"{before[deleted]:020d}.log").stat().st_size
    assert log.size_in_bytes >= 5000
    assert log.size_in_bytes - oldest_left < 5000
    assert not (tmp_path / "events-0" / f"{before[0]:020d}.log").exists()
    assert not (tmp_path / "events-0" / f"{before[0]:020d}.index").exists()
    with pytest.raises(OffsetOutOfRangeError):
        log.read(before[0], 100)
    assert all_records(log)[0][0] == log.log_start_offset


def test_retention_by_time_keeps_the_active_segment(tmp_path: Path) -> None:
    clock = ManualClock()
    log = open_log(tmp_path, clock, segment_bytes=1024, retention_ms=60_000)
    for i in range(30):
        log.append_as_leader(build_batch(values(2, 2 * i), timestamp=T0 + i), 0)
    log.update_high_watermark(log.log_end_offset)
    assert log.enforce_retention(T0 + 30_000) == 0
    segments = log.segment_count
    assert segments > 2
    assert log.enforce_retention(T0 + 10 * 60_000) == segments - 1
    assert log.segment_count == 1
    assert log.log_start_offset == log.segment_base_offsets[0] > 0
    assert all_records(log)[-1] == (59, values(60)[59])


def test_retention_never_deletes_above_the_high_watermark(tmp_path: Path) -> None:
    log = open_log(tmp_path, segment_bytes=1024, retention_ms=1)
    for i in range(30):
        log.append_as_leader(build_batch(values(2, 2 * i), timestamp=T0), 0)
    assert log.enforce_retention(T0 + 10**9) == 0
    bases = log.segment_base_offsets
    log.update_high_watermark(bases[2])
    assert log.enforce_retention(T0 + 10**9) == 2
    assert log.log_start_offset == bases[2]


def test_appends_continue_after_reopen(tmp_path: Path) -> None:
    log = open_log(tmp_path, segment_bytes=2048)
    for i in range(40):
        log.append_as_leader(build_batch(values(2, 2 * i)), 3)
    log.close_now()
    reopened = open_log(tmp_path, segment_bytes=2048)
    assert reopened.recovery is not None and reopened.recovery.reason is None
    assert reopened.log_end_offset == 80
    assert reopened.append_as_leader(build_batch([b"next"]), 3).base_offset == 80
    assert all_records(reopened) == [*enumerate(values(80)), (80, b"next")]
    assert reopened.end_offset_for_epoch(3) == (3, 81)


def last_segment_file(root: Path) -> Path:
    return sorted((root / "events-0").glob("*.log"))[-1]


def test_recovery_truncates_a_batch_cut_mid_way(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    for i in range(5):
        log.append_as_leader(build_batch(values(4, 4 * i)), 0)
    log.close_now()
    segment = last_segment_file(tmp_path)
    batch_size = len(build_batch(values(4)))
    with segment.open("r+b") as f:
        f.truncate(os.path.getsize(segment) - batch_size // 2)
    reopened = open_log(tmp_path)
    assert reopened.recovery is not None and "torn" in (reopened.recovery.reason or "")
    # Truncated as Kafka does, but the torn header shows offsets 16..19 were handed out.
    assert reopened.log_end_offset == 20
    # The torn batch is cut; an empty batch (61 bytes, no records) holds offsets 16..19.
    assert os.path.getsize(segment) == 4 * batch_size + 61
    assert decode(reopened.read(0, 1 << 20).records) == list(enumerate(values(16)))
    assert decode_batches(reopened.read(16, 1 << 20).records) == [(16, 0, 0)]
    assert reopened.append_as_leader(build_batch([b"after"]), 1).base_offset == 20
    assert decode(reopened.read(16, 1 << 20).records) == [(20, b"after")]


def test_recovery_cuts_a_last_batch_with_a_flipped_byte_and_keeps_it_aside(
    tmp_path: Path,
) -> None:
    log = open_log(tmp_path)
    for i in range(5):
        log.append_as_leader(build_batch(values(4, 4 * i)), 0)
    log.close_now()
    segment = last_segment_file(tmp_path)
    data = bytearray(segment.read_bytes())
    batch_size = len(data) // 5
    data[-5] ^= 0x01
    segment.write_bytes(bytes(data))
    reopened = open_log(tmp_path)
    assert reopened.recovery is not None and "CRC" in (reopened.recovery.reason or "")
    # The damaged batch's header still says it held offsets 16..19: never reuse them.
    assert reopened.log_end_offset == 20
    assert decode(reopened.read(0, 1 << 20).records) == list(enumerate(values(16)))
    aside = tmp_path / "events-0" / f"{0:020d}.{4 * batch_size}-{5 * batch_size}.corrupt"
    assert aside.read_bytes() == bytes(data[4 * batch_size :])
    assert reopened.append_as_leader(build_batch([b"after"]), 1).base_offset == 20


def test_recovery_keeps_every_segment_after_a_corrupt_batch(tmp_path: Path) -> None:
    log = open_log(tmp_path, segment_bytes=1024)
    for i in range(40):
        log.append_as_leader(build_batch(values(2, 2 * i)), 0)
    bases = log.segment_base_offsets
    log.close_now()
    victim = tmp_path / "events-0" / f"{bases[1]:020d}.log"
    data = bytearray(victim.read_bytes())
    first = parse_header(data)
    data[first.size_in_bytes + 30] ^= 0xFF  # inside the second batch of segment 1
    victim.write_bytes(bytes(data))
    reopened = open_log(tmp_path, segment_bytes=1024)
    assert reopened.segment_base_offsets == bases
    assert reopened.log_end_offset == 80
    lost = {first.next_offset, first.next_offset + 1}
    assert all_records(reopened) == [(o, v) for o, v in enumerate(values(80)) if o not in lost]
    assert reopened.recovery is not None and reopened.recovery.deleted_segments == 0
    assert [(g.start, g.end) for g in reopened.recovery.gaps] == [(min(lost), max(lost) + 1)]
    assert len(list((tmp_path / "events-0").glob("*.corrupt"))) == 1


def test_recovery_replaces_garbage_index_files(tmp_path: Path) -> None:
    log = open_log(tmp_path, index_interval_bytes=64)
    for i in range(50):
        log.append_as_leader(build_batch(values(2, 2 * i)), 0)
    log.close_now()
    (tmp_path / "events-0" / f"{0:020d}.index").write_bytes(os.urandom(800))
    reopened = open_log(tmp_path, index_interval_bytes=64)
    for offset in (0, 33, 77, 99):
        assert decode(reopened.read(offset, 1).records)[0][0] == offset - offset % 2


def test_offset_for_timestamp_finds_the_first_record_at_or_after(tmp_path: Path) -> None:
    log = open_log(tmp_path, segment_bytes=1024)
    for i in range(30):
        log.append_as_leader(build_batch(values(3, 3 * i), timestamp=T0 + 100 * i), 0)
    assert log.offset_for_timestamp(T0) == (0, T0)
    assert log.offset_for_timestamp(T0 + 1001) == (31, T0 + 1001)
    assert log.offset_for_timestamp(T0 + 1003) == (33, T0 + 1100)
    assert log.offset_for_timestamp(T0 + 2902) == (89, T0 + 2902)
    assert log.offset_for_timestamp(T0 + 2903) is None


def test_end_offset_for_epoch_follows_kafka(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    log.append_as_leader(build_batch(values(3)), 1)
    log.append_as_leader(build_batch(values(2)), 3)
    log.append_as_leader(build_batch(values(4)), 5)
    assert log.end_offset_for_epoch(5) == (5, 9)
    assert log.end_offset_for_epoch(3) == (3, 5)
    assert log.end_offset_for_epoch(4) == (3, 5)
    assert log.end_offset_for_epoch(1) == (1, 3)
    assert log.end_offset_for_epoch(0) == (0, 0)
    assert log.end_offset_for_epoch(6) == (-1, -1)


def test_truncate_to_cuts_whole_batches_and_forgets_later_epochs(tmp_path: Path) -> None:
    log = open_log(tmp_path, segment_bytes=1024)
    for i in range(40):
        log.append_as_leader(build_batch(values(2, 2 * i)), i // 10)
    log.update_high_watermark(80)
    log.truncate_to(51)
    assert log.log_end_offset == 50
    assert log.high_watermark == 50
    assert all_records(log) == list(enumerate(values(50)))
    assert log.end_offset_for_epoch(2) == (2, 50)
    assert log.end_offset_for_epoch(3) == (-1, -1)
    assert log.append_as_leader(build_batch([b"new"]), 4).base_offset == 50
    log.close_now()
    reopened = open_log(tmp_path, segment_bytes=1024)
    assert all_records(reopened) == [*enumerate(values(50)), (50, b"new")]


def test_truncate_to_the_log_end_forgets_an_epoch_started_without_records(
    tmp_path: Path,
) -> None:
    # A leader in epoch 1 that wrote nothing, then a follower of a leader whose log
    # says epoch 0 ends here: the truncation it is told to do must drop epoch 1, or
    # every fetch names epoch 1 again and diverges again.
    log = open_log(tmp_path)
    log.append_as_leader(build_batch(values(3)), 0)
    log.assign_epoch_start_offset(1)
    assert log.latest_epoch == 1
    log.truncate_to(3)
    assert log.latest_epoch == 0
    assert log.log_end_offset == 3
    assert log.end_offset_for_epoch(0) == (0, 3)
    assert all_records(log) == list(enumerate(values(3)))


def test_follower_append_keeps_offsets_and_epochs(tmp_path: Path) -> None:
    leader = open_log(tmp_path / "leader")
    for epoch in (2, 2, 7):
        leader.append_as_leader(build_batch(values(3)), epoch)
    follower = open_log(tmp_path / "follower")
    data = leader.read(0, 1 << 20).records
    result = follower.append_as_follower(data)
    assert (result.base_offset, result.last_offset) == (0, 8)
    assert follower.read(0, 1 << 20).records == data
    assert follower.end_offset_for_epoch(2) == (2, 6)
    with pytest.raises(OffsetOutOfRangeError):
        follower.append_as_follower(data)


def test_a_new_epoch_at_the_start_of_an_empty_one_replaces_it_as_kafka_does(
    tmp_path: Path,
) -> None:
    # This node led epoch 1 from offset 3 without writing in it, then leads epoch 2 from
    # the same offset. Kafka's LeaderEpochFileCache keeps one entry per start offset, so
    # epoch 1 is gone: asked about it, the log names epoch 0, whose data ends at 3.
    log = open_log(tmp_path)
    log.append_as_leader(build_batch(values(3)), 0)
    log.assign_epoch_start_offset(1)
    log.assign_epoch_start_offset(2)
    assert log.end_offset_for_epoch(1) == (0, 3)
    log.append_as_leader(build_batch(values(2)), 2)
    assert log.end_offset_for_epoch(2) == (2, 5)
    assert log.end_offset_for_epoch(0) == (0, 3)


def test_a_follower_append_of_an_older_epoch_drops_the_entries_it_contradicts(
    tmp_path: Path,
) -> None:
    # A follower's cache says epoch 4 starts at 3 (it led epoch 4 there without writing)
    # when a batch of epoch 2 lands at 3: as Kafka's assign, the cache must now say
    # what the log holds, epoch 2 from 3, not keep describing offset 3 as epoch 4.
    leader = open_log(tmp_path / "leader")
    leader.append_as_leader(build_batch(values(3)), 1)
    leader.append_as_leader(build_batch(values(2)), 2)
    follower = open_log(tmp_path / "follower")
    follower.append_as_follower(leader.read(0, 1 << 20).records[: _first_batch_size(leader)])
    follower.assign_epoch_start_offset(4)
    follower.append_as_follower(leader.read(3, 1 << 20).records)
    assert follower.latest_epoch == 2
    assert follower.end_offset_for_epoch(1) == (1, 3)
    assert follower.end_offset_for_epoch(2) == (2, 5)
    assert follower.end_offset_for_epoch(4) == (-1, -1)


def _first_batch_size(log: PartitionLog) -> int:
    return parse_header(log.read(0, 1 << 20).records, 0).size_in_bytes


async def test_flush_policy_counts_messages_and_time(tmp_path: Path) -> None:
    clock = ManualClock()
    log = open_log(tmp_path, clock, flush_messages=5, flush_ms=1000)
    log.append_as_leader(build_batch(values(3)), 0)
    assert log.unflushed_messages == 3
    assert not log.flush_due(clock.now)
    assert log.flush_due(clock.now + 1000)
    log.append_as_leader(build_batch(values(2)), 0)
    assert log.flush_due(clock.now)
    await log.flush()
    assert log.unflushed_messages == 0 and log.recovery_point == 5
    assert not log.flush_due(clock.now + 10_000)
    never = open_log(tmp_path / "never")
    never.append_as_leader(build_batch(values(100)), 0)
    assert not never.flush_due(clock.now + 10**9)


async def test_a_rolled_segment_is_flushed_even_when_flush_is_never_forced(
    tmp_path: Path,
) -> None:
    """Kafka syncs a segment when it is rolled: with no flush.messages/flush.ms, a roll makes a
    flush due, and after it the rolled segment's records are below the recovery point."""
    clock = ManualClock()
    log = open_log(tmp_path, clock, segment_bytes=300)
    log.append_as_leader(build_batch(values(5)), 0)
    assert not log.flush_due(clock.now + 10**9)
    first_segment_end = log.log_end_offset
    while log.segment_count < 2:
        log.append_as_leader(build_batch(values(5)), 0)
    assert log.flush_due(clock.now)
    await log.flush()
    assert log.recovery_point >= first_segment_end
    assert not log.flush_due(clock.now + 10**9)


async def test_clean_close_and_reopen_keeps_high_watermark(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    log.append_as_leader(build_batch(values(10)), 0)
    log.update_high_watermark(7)
    await log.close()
    reopened = open_log(tmp_path)
    assert reopened.high_watermark == 7
    assert reopened.log_end_offset == 10


async def test_failed_fsync_takes_the_log_offline(tmp_path: Path) -> None:
    log = open_log(tmp_path, segment_bytes=1024)
    for i in range(20):
        log.append_as_leader(build_batch(values(2, 2 * i)), 0)
    assert log.segment_count > 1  # rolls left directory entries to fsync
    shutil.rmtree(tmp_path / "events-0")
    with pytest.raises(KafkaStorageError, match="fsync failed"):
        await log.flush()
    with pytest.raises(KafkaStorageError, match="offline"):
        log.append_as_leader(build_batch([b"late"]), 0)
    with pytest.raises(KafkaStorageError, match="offline"):
        log.read(0, 100)


async def test_appends_during_a_flush_are_made_durable_by_the_next_flush(tmp_path: Path) -> None:
    storage = OsStorage(tmp_path, volatile_until_fsync=True)
    log = PartitionLog.open(storage, "events-0", LogConfig(segment_bytes=1024), ManualClock())
    for i in range(10):
        log.append_as_leader(build_batch(values(2, 2 * i)), 0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(log.flush)
        await trio.testing.wait_all_tasks_blocked()  # the first flush is inside fsync
        for i in range(10, 20):
            log.append_as_leader(build_batch(values(2, 2 * i)), 0)
        await log.flush()  # waits for the first, then syncs what it did not cover
    assert log.unflushed_messages == 0 and log.recovery_point == 40
    crashed = OsStorage(tmp_path, volatile_until_fsync=True)
    after = PartitionLog.open(crashed, "events-0", LogConfig(segment_bytes=1024), ManualClock())
    assert all_records(after) == list(enumerate(values(40)))
