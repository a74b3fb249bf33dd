"""Transactional offset commits in `__consumer_offsets`: pending until their marker.

A TxnOffsetCommit is stored as a transactional batch of the producer; the group's
committed offset changes only when a COMMIT marker of the same producer epoch reaches
the partition (an ABORT drops it), live and when the partition is replayed by a new
coordinator, and a commit written by a fenced older epoch is never applied.
"""

from __future__ import annotations

from pathlib import Path

from reference_broker.errors import ErrorCode
from reference_broker.group.offsets_store import OFFSETS_TOPIC, partition_for
from reference_broker.group.results import OffsetAndMetadata
from reference_broker.log.control_batch import TxnMarker
from tests.test_group_offsets import PARTITIONS, _coordinator

TP = ("in", 0)


def om(offset: int) -> OffsetAndMetadata:
    # Stamped with the coordinator's (fixed) clock when committed.
    return OffsetAndMetadata(offset, -1, "", 1_700_000_000_000)


async def test_pending_until_commit_marker_and_replayed_the_same(tmp_path: Path) -> None:
    coordinator, logs = _coordinator(tmp_path)
    await coordinator.load()
    p = partition_for("g", PARTITIONS)
    log = logs.get(OFFSETS_TOPIC, p)
    assert log is not None
    codes = await coordinator.commit_transactional_offsets("g", 7, 0, -1, "", None, {TP: om(5)})
    assert codes == {TP: ErrorCode.NONE}
    assert coordinator.fetch_offsets("g", [TP])[1] == {TP: None}
    assert coordinator.has_pending_offset("g", TP)
    # A fenced older epoch's commit under the same producer id, then the current one's.
    await coordinator.commit_transactional_offsets("g", 9, 0, -1, "", None, {TP: om(99)})
    log.append_marker_as_leader(9, 1, TxnMarker(False, 0), 0)  # the fence aborts epoch 0
    await coordinator.commit_transactional_offsets("g", 9, 1, -1, "", None, {("in", 1): om(3)})
    log.append_marker_as_leader(7, 0, TxnMarker(True, 0), 0)
    coordinator.complete_transaction(p, 9, 1, False)
    coordinator.complete_transaction(p, 7, 0, True)
    log.update_high_watermark(log.log_end_offset)
    assert coordinator.fetch_offsets("g", [TP])[1] == {TP: om(5)}
    assert not coordinator.has_pending_offset("g", TP)
    await logs.close()

    replayed, logs = _coordinator(tmp_path)
    await replayed.load()
    error, offsets = replayed.fetch_offsets("g", [TP, ("in", 1)])
    assert error is ErrorCode.NONE
    assert offsets == {TP: om(5), ("in", 1): None}
    await logs.close()


async def test_a_fenced_epochs_commit_is_not_applied_by_its_successor(tmp_path: Path) -> None:
    coordinator, logs = _coordinator(tmp_path)
    await coordinator.load()
    p = partition_for("g", PARTITIONS)
    await coordinator.commit_transactional_offsets("g", 7, 0, -1, "", None, {TP: om(50)})
    await coordinator.commit_transactional_offsets("g", 7, 2, -1, "", None, {("in", 1): om(8)})
    coordinator.complete_transaction(p, 7, 2, True)
    _error, offsets = coordinator.fetch_offsets("g", [TP, ("in", 1)])
    assert offsets == {TP: None, ("in", 1): om(8)}
    await logs.close()
