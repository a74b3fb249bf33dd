"""Transactions in one partition log: open transactions bound the LSO, markers close them,
aborts enter the aborted-transactions index, and all of it survives a restart."""

from __future__ import annotations

from pathlib import Path

import pytest
from kafka.record.default_records import DefaultRecordBatchBuilder

from reference_broker.errors import (
    InvalidProducerEpochError,
    InvalidTxnStateError,
    TransactionCoordinatorFencedError,
)
from reference_broker.log import LogConfig, PartitionLog
from reference_broker.log.control_batch import TxnMarker, build_marker, parse_marker
from reference_broker.log.record_batch import parse_header
from reference_broker.log.txn_index import AbortedTxn
from reference_broker.os_env import OsStorage
from tests.test_log_partition import ManualClock
from tests.test_log_record_batch import build_batch


def open_log(root: Path, **config: object) -> PartitionLog:
    return PartitionLog.open(OsStorage(root), "t-0", LogConfig(**config), ManualClock())  # type: ignore[arg-type]


def txn_batch(pid: int, epoch: int, seq: int, n: int = 2) -> bytes:
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=0,
        is_transactional=True,
        producer_id=pid,
        producer_epoch=epoch,
        base_sequence=seq,
        batch_size=1 << 20,
    )
    for i in range(n):
        builder.append(i, timestamp=1_700_000_000_000, key=None, value=b"v%d" % i, headers=[])
    return bytes(builder.build())


def committed(log: PartitionLog) -> None:
    log.update_high_watermark(log.log_end_offset)


def test_marker_round_trips_through_kafka_python() -> None:
    from kafka.record.memory_records import MemoryRecords

    raw = build_marker(9, 2, TxnMarker(commit=False, coordinator_epoch=4), 1000)
    header = parse_header(raw)
    assert header.is_control and header.is_transactional
    assert parse_marker(header, raw) == TxnMarker(False, 4)
    (record,) = list(MemoryRecords(raw).next_batch())
    assert record.type == 0  # ABORT, as a consumer reads it


def test_open_transaction_bounds_the_lso_until_its_marker(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    log.append_as_leader(build_batch([b"a", b"b"]), 0)
    log.append_as_leader(txn_batch(1, 0, 0), 0)  # offsets 2-3
    log.append_as_leader(txn_batch(2, 0, 0), 0)  # offsets 4-5
    committed(log)
    assert log.high_watermark == 6
    assert log.last_stable_offset == 2
    log.append_marker_as_leader(1, 0, TxnMarker(True, 0), 0)  # offset 6
    committed(log)
    assert log.last_stable_offset == 4
    log.append_marker_as_leader(2, 0, TxnMarker(False, 0), 0)  # offset 7
    committed(log)
    assert log.last_stable_offset == log.high_watermark == 8
    assert log.aborted_transactions(0, 8) == [AbortedTxn(2, 4, 7, 8)]
    # Only aborts overlapping the fetched range are listed.
    assert log.aborted_transactions(0, 4) == []
    assert log.aborted_transactions(8, 100) == []


def test_aborts_and_open_transactions_survive_a_restart(tmp_path: Path) -> None:
    log = open_log(tmp_path, segment_bytes=300)
    log.append_as_leader(txn_batch(1, 0, 0), 0)
    log.append_marker_as_leader(1, 0, TxnMarker(False, 0), 0)
    for seq in range(0, 20, 2):
        log.append_as_leader(
            build_batch([b"x" * 40, b"y"], producer_id=3, producer_epoch=0, base_sequence=seq), 0
        )
    log.append_as_leader(txn_batch(5, 0, 0), 0)
    open_at = log.log_end_offset - 2
    committed(log)
    assert log.segment_count > 1
    aborted = log.aborted_transactions(0, log.log_end_offset)
    import trio

    trio.run(log.close)
    again = open_log(tmp_path, segment_bytes=300)
    assert again.aborted_transactions(0, again.log_end_offset) == aborted
    assert again.first_unstable_offset == open_at
    assert again.last_stable_offset == open_at


def test_open_transaction_survives_a_crash_through_replay(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    log.append_as_leader(txn_batch(1, 0, 0), 0)
    log.append_as_leader(txn_batch(2, 0, 0), 0)
    log.append_marker_as_leader(2, 0, TxnMarker(False, 0), 0)
    log.close_now()  # no snapshot, no clean shutdown
    again = open_log(tmp_path)
    assert again.first_unstable_offset == 0
    assert again.aborted_transactions(0, 10) == [AbortedTxn(2, 2, 4, 0)]


def test_truncation_forgets_aborts_past_the_cut(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    log.append_as_leader(txn_batch(1, 0, 0), 0)
    log.append_marker_as_leader(1, 0, TxnMarker(False, 0), 0)  # offset 2
    log.truncate_to(2)
    assert log.aborted_transactions(0, 10) == []
    assert log.first_unstable_offset == 0  # the transaction is open again


def test_follower_learns_transactions_from_replicated_markers(tmp_path: Path) -> None:
    leader = open_log(tmp_path / "a")
    leader.append_as_leader(txn_batch(1, 0, 0), 0)
    leader.append_marker_as_leader(1, 0, TxnMarker(False, 0), 0)
    leader.append_as_leader(txn_batch(1, 0, 2), 0)
    follower = open_log(tmp_path / "b")
    follower.append_as_follower(leader.read(0, 1 << 20).records)
    assert follower.aborted_transactions(0, 10) == leader.aborted_transactions(0, 10)
    assert follower.first_unstable_offset == leader.first_unstable_offset == 3


def test_plain_batch_during_an_open_transaction_is_invalid(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    log.append_as_leader(txn_batch(1, 0, 0), 0)
    with pytest.raises(InvalidTxnStateError):
        log.append_as_leader(
            build_batch([b"z"], producer_id=1, producer_epoch=0, base_sequence=2), 0
        )


def test_stale_markers_are_fenced(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    log.append_as_leader(txn_batch(1, 3, 0), 0)
    with pytest.raises(InvalidProducerEpochError):
        log.append_marker_as_leader(1, 2, TxnMarker(True, 0), 0)
    log.append_marker_as_leader(1, 3, TxnMarker(True, 5), 0)
    with pytest.raises(TransactionCoordinatorFencedError):
        log.append_marker_as_leader(1, 3, TxnMarker(True, 4), 0)
