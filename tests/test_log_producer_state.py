"""Idempotent producer state on a real log: dedup, sequence gaps, fencing, restarts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from reference_broker.errors import InvalidProducerEpochError, OutOfOrderSequenceError
from reference_broker.log import LogConfig, PartitionLog
from reference_broker.os_env import OsStorage
from tests.test_log_partition import T0, ManualClock, all_records, values
from tests.test_log_record_batch import build_batch

PID = 4242


def open_log(root: Path, **config: Any) -> PartitionLog:
    return PartitionLog.open(OsStorage(root), "orders-3", LogConfig(**config), ManualClock())


def produce(log: PartitionLog, seq: int, n: int = 2, *, epoch: int = 0, pid: int = PID) -> int:
    batch = build_batch(
        values(n, seq), producer_id=pid, producer_epoch=epoch, base_sequence=seq, timestamp=T0
    )
    return log.append_as_leader(batch, leader_epoch=1).base_offset


def test_retried_batch_gets_its_original_offsets_and_is_not_appended(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    produce(log, 0)
    first = build_batch(values(3, 2), producer_id=PID, producer_epoch=0, base_sequence=2)
    original = log.append_as_leader(first, 1)
    produce(log, 5)
    retry = log.append_as_leader(first, 1)
    assert retry.duplicate
    assert (retry.base_offset, retry.last_offset) == (original.base_offset, original.last_offset)
    assert retry.record_count == 3
    assert log.log_end_offset == 7
    assert [v for _, v in all_records(log)] == values(7)


def test_only_the_last_five_batches_are_remembered(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    batches = [
        build_batch([b"v%d" % i], producer_id=PID, producer_epoch=0, base_sequence=i)
        for i in range(6)
    ]
    offsets = [log.append_as_leader(b, 1).base_offset for b in batches]
    for i in range(1, 6):
        assert log.append_as_leader(batches[i], 1).base_offset == offsets[i]
    with pytest.raises(OutOfOrderSequenceError):
        log.append_as_leader(batches[0], 1)
    assert log.log_end_offset == 6


def test_sequence_gap_is_out_of_order(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    produce(log, 0, 2)
    with pytest.raises(OutOfOrderSequenceError, match="sequence 3"):
        produce(log, 3)
    assert log.log_end_offset == 2
    assert produce(log, 2) == 2


def test_new_producer_must_start_at_sequence_zero(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    with pytest.raises(OutOfOrderSequenceError, match="unknown"):
        produce(log, 10)
    assert log.log_end_offset == 0


def test_older_epoch_is_fenced(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    produce(log, 0, epoch=3)
    with pytest.raises(InvalidProducerEpochError, match="fenced"):
        produce(log, 2, epoch=2)
    assert log.log_end_offset == 2


def test_newer_epoch_restarts_at_sequence_zero(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    produce(log, 0, epoch=1)
    with pytest.raises(OutOfOrderSequenceError, match="epoch"):
        produce(log, 2, epoch=2)
    assert produce(log, 0, epoch=2) == 2
    entry = log.producer_state()[PID]
    assert entry.producer_epoch == 2 and len(entry.batches) == 1


def test_sequence_wraps_from_int32_max_to_zero(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    top = (1 << 31) - 1
    # A replica learns a long-lived producer's state from the log, unvalidated.
    seeded = build_batch([b"x"], producer_id=PID, producer_epoch=0, base_sequence=top - 1)
    log.append_as_follower(seeded)
    assert log.producer_state()[PID].last_seq == top - 1
    wrapping = build_batch([b"y", b"z"], producer_id=PID, producer_epoch=0, base_sequence=top)
    assert log.append_as_leader(wrapping, 1).base_offset == 1
    assert log.producer_state()[PID].last_seq == 0
    with pytest.raises(OutOfOrderSequenceError):
        produce(log, 0)
    assert produce(log, 1) == 3


def _at(batch: bytes, offset: int) -> bytes:
    data = bytearray(batch)
    data[0:8] = offset.to_bytes(8, "big", signed=True)
    return bytes(data)


def test_multiple_producers_are_tracked_apart(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    produce(log, 0, pid=1)
    produce(log, 0, pid=2)
    produce(log, 2, pid=1)
    with pytest.raises(OutOfOrderSequenceError):
        produce(log, 4, pid=2)
    assert produce(log, 2, pid=2) == 6


def test_state_survives_a_crash_by_replaying_the_log(tmp_path: Path) -> None:
    log = open_log(tmp_path, segment_bytes=1024)
    batches = [
        build_batch(values(3, 3 * i), producer_id=PID, producer_epoch=0, base_sequence=3 * i)
        for i in range(20)
    ]
    offsets = [log.append_as_leader(b, 1).base_offset for b in batches]
    log.close_now()  # no snapshot at the LEO: the tail must be replayed
    reopened = open_log(tmp_path, segment_bytes=1024)
    assert reopened.producer_state()[PID].last_seq == 59
    retry = reopened.append_as_leader(batches[-1], 1)
    assert retry.duplicate and retry.base_offset == offsets[-1]
    with pytest.raises(OutOfOrderSequenceError):
        produce(reopened, 61)
    assert produce(reopened, 60) == 60


async def test_state_survives_clean_restart_from_snapshot(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    produce(log, 0, epoch=5)
    produce(log, 2, epoch=5)
    await log.close()
    assert (tmp_path / "orders-3" / f"{4:020d}.snapshot").exists()
    reopened = open_log(tmp_path)
    assert reopened.producer_state()[PID].producer_epoch == 5
    with pytest.raises(InvalidProducerEpochError):
        produce(reopened, 4, epoch=4)
    assert produce(reopened, 4, epoch=5) == 4


def test_state_of_deleted_segments_survives_through_roll_snapshots(tmp_path: Path) -> None:
    log = open_log(tmp_path, segment_bytes=1024, retention_bytes=1)
    produce(log, 0, pid=9)  # a producer seen only in the oldest segment
    for i in range(30):
        produce(log, 2 * i)
    log.update_high_watermark(log.log_end_offset)
    assert log.enforce_retention(T0) > 0
    assert log.log_start_offset > 2
    log.close_now()
    reopened = open_log(tmp_path, segment_bytes=1024, retention_bytes=1)
    assert reopened.producer_state()[9].last_seq == 1
    assert produce(reopened, 2, pid=9) == reopened.log_end_offset - 2


def test_truncation_rolls_producer_state_back(tmp_path: Path) -> None:
    log = open_log(tmp_path, segment_bytes=1024)
    for i in range(20):
        produce(log, 2 * i)
    log.truncate_to(10)
    assert log.producer_state()[PID].last_seq == 9
    assert produce(log, 10) == 10
    log.truncate_to(0)
    assert PID not in log.producer_state()
    assert produce(log, 0) == 0


def test_torn_snapshot_is_ignored_and_state_is_replayed(tmp_path: Path) -> None:
    log = open_log(tmp_path, segment_bytes=1024)
    for i in range(20):
        produce(log, 2 * i)
    log.close_now()
    snapshots = sorted((tmp_path / "orders-3").glob("*.snapshot"))
    assert snapshots, "rolling segments writes producer snapshots"
    for snapshot in snapshots:
        snapshot.write_bytes(snapshot.read_bytes()[:-3])
    reopened = open_log(tmp_path, segment_bytes=1024)
    assert reopened.producer_state()[PID].last_seq == 39
    assert not list((tmp_path / "orders-3").glob("*.snapshot"))
