"""Partition replication state on a real log: roles from metadata, high watermark over the
(maximal) ISR, ISR changes through the controller (pending expand/shrink, stale and failed
answers), acks=all waits, leader-epoch fencing and diverging-epoch checks (Kafka's Partition)."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from reference_broker.errors import (
    ErrorCode,
    FencedLeaderEpochError,
    NotEnoughReplicasError,
    NotLeaderOrFollowerError,
    UnknownLeaderEpochError,
)
from reference_broker.log import LogConfig, PartitionLog
from reference_broker.os_env import os_node_env
from reference_broker.replication.assignment import AlterPartitionResult, PartitionAssignment
from reference_broker.replication.isr import (
    INELIGIBLE_REPLICA,
    INVALID_UPDATE_VERSION,
    RETRY_BACKOFF_S,
    ChangeKind,
    IsrOutcome,
    IsrProposal,
)
from reference_broker.replication.partition import HighWatermarkSignal, Partition
from tests.wire import record_batch

LEADER, F1, F2 = 0, 1, 2
LAG_S = 10.0


def open_log(tmp_path: Path, name: str = "t-0") -> PartitionLog:
    env = os_node_env(tmp_path, seed=0)
    env.storage.makedirs(name)
    return PartitionLog.open(env.storage, name, LogConfig(), env.clock)


def assignment(
    replicas: tuple[int, ...] = (LEADER, F1, F2),
    *,
    isr: tuple[int, ...] | None = None,
    leader: int = LEADER,
    leader_epoch: int = 3,
    partition_epoch: int = 7,
) -> PartitionAssignment:
    return PartitionAssignment(
        "t", 0, replicas, replicas if isr is None else isr, leader, leader_epoch, partition_epoch
    )


class Proposals:
    """Collects what a partition sends to the controller."""

    def __init__(self) -> None:
        self.sent: list[IsrProposal] = []

    def __call__(self, partition: Partition, proposal: IsrProposal) -> None:
        self.sent.append(proposal)


def make_leader(
    tmp_path: Path,
    replicas: tuple[int, ...] = (LEADER, F1, F2),
    *,
    min_isr: int = 1,
    isr: tuple[int, ...] | None = None,
    proposals: Proposals | None = None,
) -> Partition:
    partition = Partition(
        "t",
        0,
        open_log(tmp_path),
        local_id=LEADER,
        signal=HighWatermarkSignal(),
        min_insync_replicas=min_isr,
        isr_listener=proposals,
    )
    assert partition.make_leader(assignment(replicas, isr=isr), now=0.0)
    return partition


def append(partition: Partition, n: int) -> int:
    """Append n records as leader; returns the new log end offset."""
    partition.append_records_as_leader(record_batch([b"v"] * n))
    return partition.log_end_offset


def committed(proposal: IsrProposal, epoch_bump: int = 1) -> AlterPartitionResult:
    """The controller's answer that commits `proposal`."""
    return AlterPartitionResult(
        0, proposal.isr, proposal.leader_epoch, proposal.partition_epoch + epoch_bump
    )


def test_standalone_partition_leads_epoch_zero_and_its_high_watermark_follows_the_log_end(
    tmp_path: Path,
) -> None:
    log = open_log(tmp_path)
    log.append_as_leader(record_batch([b"a", b"b"]), 0)
    partition = Partition.standalone(
        "t", 0, log, local_id=5, signal=HighWatermarkSignal(), min_insync_replicas=2, now=0.0
    )
    # min.insync.replicas is capped at the replication factor for the high watermark.
    assert (partition.is_leader, partition.leader_epoch, partition.high_watermark) == (True, 0, 2)
    assert append(partition, 3) == 5
    assert partition.high_watermark == 5
    with pytest.raises(NotEnoughReplicasError):
        partition.check_enough_replicas(-1)  # but acks=all still needs two in-sync replicas


def test_high_watermark_is_the_minimum_log_end_over_the_isr(tmp_path: Path) -> None:
    partition = make_leader(tmp_path)
    append(partition, 5)
    assert partition.high_watermark == 0  # no follower has fetched in this epoch yet
    partition.update_follower_fetch(F1, 5, now=1.0)
    assert partition.high_watermark == 0  # F2 unknown
    partition.update_follower_fetch(F2, 2, now=1.0)
    assert partition.high_watermark == 2
    partition.update_follower_fetch(F2, 5, now=1.1)
    assert partition.high_watermark == 5


def test_high_watermark_stays_while_the_isr_is_below_min_insync_replicas(tmp_path: Path) -> None:
    partition = make_leader(tmp_path, min_isr=2, isr=(LEADER,))
    append(partition, 3)
    assert partition.high_watermark == 0  # ISR {leader} < 2: nothing commits
    partition.update_follower_fetch(F1, 3, now=1.0)
    proposal = partition.pending_isr_change
    assert proposal is not None and proposal.kind is ChangeKind.EXPAND
    assert partition.high_watermark == 0  # the expansion is not committed yet
    outcome = partition.complete_isr_change(proposal, committed(proposal), now=1.0)
    assert outcome is IsrOutcome.APPLIED
    assert partition.isr == {LEADER, F1} and partition.high_watermark == 3


def test_new_leader_epoch_starts_at_the_log_end_and_answers_older_epochs_with_it(
    tmp_path: Path,
) -> None:
    log = open_log(tmp_path)
    log.append_as_leader(record_batch([b"a", b"b", b"c"]), 1)
    partition = Partition("t", 0, log, local_id=LEADER, signal=HighWatermarkSignal())
    partition.make_leader(assignment(leader_epoch=4), now=0.0)
    assert partition.leader_epoch_start_offset == 3
    # Before any append in epoch 4, epoch 1 already ends at 3 and epoch 4 is the latest.
    assert log.end_offset_for_epoch(1) == (1, 3)
    assert log.latest_epoch == 4
    append(partition, 2)
    assert log.end_offset_for_epoch(4) == (4, 5)


def test_lagging_follower_is_shrunk_out_only_once_the_controller_commits(
    tmp_path: Path,
) -> None:
    proposals = Proposals()
    partition = make_leader(tmp_path, proposals=proposals)
    append(partition, 4)
    partition.update_follower_fetch(F1, 4, now=1.0)
    partition.update_follower_fetch(F2, 1, now=1.0)
    assert partition.high_watermark == 1
    # F1 keeps up; F2, caught up when the partition was made (t=0), stops fetching.
    assert partition.maybe_shrink_isr(now=LAG_S - 1, max_lag_s=LAG_S) is None
    partition.update_follower_fetch(F1, 4, now=LAG_S)
    shrink = partition.maybe_shrink_isr(now=LAG_S + 1, max_lag_s=LAG_S)
    assert shrink is not None and proposals.sent == [shrink]
    assert (shrink.kind, shrink.isr, shrink.changed) == (ChangeKind.SHRINK, (LEADER, F1), {F2})
    assert (shrink.leader_epoch, shrink.partition_epoch) == (3, 7)
    # Pending: the ISR and the high watermark still count F2.
    assert partition.isr == {LEADER, F1, F2} and partition.high_watermark == 1
    assert partition.maybe_shrink_isr(now=LAG_S + 2, max_lag_s=LAG_S) is None  # one in flight
    outcome = partition.complete_isr_change(shrink, committed(shrink), now=LAG_S + 2)
    assert outcome is IsrOutcome.APPLIED
    assert partition.isr == {LEADER, F1} and partition.partition_epoch == 8
    assert partition.high_watermark == 4  # no longer held back by F2


def test_follower_rejoins_once_it_reaches_the_high_watermark_and_counts_while_pending(
    tmp_path: Path,
) -> None:
    partition = make_leader(tmp_path, isr=(LEADER, F1))
    append(partition, 4)
    partition.update_follower_fetch(F1, 4, now=1.0)
    assert partition.high_watermark == 4
    partition.update_follower_fetch(F2, 3, now=2.0)
    assert partition.pending_isr_change is None  # below the high watermark
    partition.update_follower_fetch(F2, 4, now=3.0)
    expand = partition.pending_isr_change
    assert expand is not None and expand.isr == (LEADER, F1, F2)
    assert partition.isr == {LEADER, F1} and partition.maximal_isr == {LEADER, F1, F2}
    append(partition, 2)
    partition.update_follower_fetch(F1, 6, now=4.0)
    assert partition.high_watermark == 4  # the joining F2 holds it back already
    partition.update_follower_fetch(F2, 6, now=4.0)
    assert partition.high_watermark == 6
    assert partition.complete_isr_change(expand, committed(expand), now=4.0) is IsrOutcome.APPLIED
    assert partition.isr == {LEADER, F1, F2}


def test_follower_counts_as_caught_up_as_of_its_last_fetch_when_the_end_moved(
    tmp_path: Path,
) -> None:
    partition = make_leader(tmp_path, (LEADER, F1))
    append(partition, 2)
    partition.update_follower_fetch(F1, 2, now=1.0)  # caught up at t=1
    append(partition, 2)  # leader LEO 4
    partition.update_follower_fetch(F1, 2, now=5.0)  # behind: last caught up stays 1
    assert partition.follower(F1).last_caught_up_time == 1.0  # type: ignore[union-attr]
    append(partition, 2)  # leader LEO 6
    # Reaches the LEO the leader had at its previous fetch (4): caught up as of t=5.
    partition.update_follower_fetch(F1, 4, now=9.0)
    assert partition.follower(F1).last_caught_up_time == 5.0  # type: ignore[union-attr]


def test_a_follower_holding_the_leaders_end_stays_in_sync_without_fetching(
    tmp_path: Path,
) -> None:
    # Kafka's isCaughtUp: an idle partition does not shrink its ISR.
    partition = make_leader(tmp_path, (LEADER, F1))
    append(partition, 2)
    partition.update_follower_fetch(F1, 2, now=1.0)
    assert partition.maybe_shrink_isr(now=LAG_S * 5, max_lag_s=LAG_S) is None
    append(partition, 1)
    assert partition.maybe_shrink_isr(now=LAG_S * 5, max_lag_s=LAG_S) is not None


def test_fatal_alter_partition_error_waits_for_metadata_and_keeps_the_maximal_isr(
    tmp_path: Path,
) -> None:
    partition = make_leader(tmp_path, isr=(LEADER, F1))
    append(partition, 2)
    partition.update_follower_fetch(F1, 2, now=1.0)
    partition.update_follower_fetch(F2, 2, now=1.0)
    expand = partition.pending_isr_change
    assert expand is not None
    rejected = AlterPartitionResult(INVALID_UPDATE_VERSION)
    assert partition.complete_isr_change(expand, rejected, now=1.0) is IsrOutcome.AWAIT_METADATA
    # Whether an earlier attempt committed is unknown: F2 still holds the HW back.
    append(partition, 1)
    partition.update_follower_fetch(F1, 3, now=2.0)
    assert partition.high_watermark == 2
    assert partition.maybe_shrink_isr(now=100.0, max_lag_s=LAG_S) is None  # nothing proposed
    # Newer metadata says what is committed: F2 is in, at partition epoch 9.
    partition.make_leader(assignment(isr=(LEADER, F1, F2), partition_epoch=9), now=3.0)
    assert partition.pending_isr_change is None and partition.isr == {LEADER, F1, F2}
    assert not partition.make_leader(assignment(partition_epoch=8), now=3.0)  # stale: ignored
    assert partition.partition_epoch == 9


def test_retriable_and_not_applied_errors(tmp_path: Path) -> None:
    partition = make_leader(tmp_path, isr=(LEADER, F1))
    append(partition, 1)
    partition.update_follower_fetch(F2, 1, now=1.0)
    expand = partition.pending_isr_change
    assert expand is not None
    timed_out = AlterPartitionResult(int(ErrorCode.REQUEST_TIMED_OUT))
    assert partition.complete_isr_change(expand, timed_out, now=1.0) is IsrOutcome.RETRY
    assert partition.pending_isr_change is expand
    ineligible = AlterPartitionResult(INELIGIBLE_REPLICA)
    assert partition.complete_isr_change(expand, ineligible, now=1.5) is IsrOutcome.REVERTED
    assert partition.pending_isr_change is None and partition.isr == {LEADER, F1}
    # retry.backoff.ms: the follower's next fetches do not propose it again at once.
    partition.update_follower_fetch(F2, 1, now=1.5 + RETRY_BACKOFF_S / 2)
    assert partition.pending_isr_change is None
    assert partition.maybe_shrink_isr(now=1.5 + RETRY_BACKOFF_S / 2, max_lag_s=0.0) is None
    partition.update_follower_fetch(F2, 1, now=1.5 + RETRY_BACKOFF_S)
    assert partition.pending_isr_change is not None  # may propose again


def test_a_follower_the_metadata_shows_fenced_is_not_proposed_for_the_isr(
    tmp_path: Path,
) -> None:
    # Kafka's isReplicaIsrEligible: the controller would answer INELIGIBLE_REPLICA, and
    # a leader asking anyway would ask again on each of the follower's fetches.
    live = {LEADER, F1}
    proposals = Proposals()
    partition = Partition(
        "t",
        0,
        open_log(tmp_path),
        local_id=LEADER,
        signal=HighWatermarkSignal(),
        isr_listener=proposals,
        isr_eligible=live.__contains__,
    )
    partition.make_leader(assignment(isr=(LEADER, F1)), now=0.0)
    append(partition, 2)
    for now in (1.0, 2.0, 3.0):
        partition.update_follower_fetch(F2, 2, now=now)
    assert proposals.sent == [] and partition.pending_isr_change is None
    assert partition.maximal_isr == {LEADER, F1}  # it does not hold the HW back either
    live.add(F2)  # unfenced: its next fetch proposes it
    partition.update_follower_fetch(F2, 2, now=4.0)
    assert [p.isr for p in proposals.sent] == [(LEADER, F1, F2)]


def test_metadata_replaces_a_pending_change_and_its_late_answer_is_ignored(
    tmp_path: Path,
) -> None:
    partition = make_leader(tmp_path)
    append(partition, 1)
    shrink = partition.maybe_shrink_isr(now=LAG_S + 1, max_lag_s=LAG_S)
    assert shrink is not None
    # The same metadata delivered again does not drop the pending change...
    assert not partition.make_leader(assignment(), now=LAG_S + 1)
    assert partition.pending_isr_change is shrink
    # ...newer metadata does, and then the controller's answer is stale.
    partition.make_leader(assignment(isr=(LEADER, F1), partition_epoch=8), now=LAG_S + 1)
    outcome = partition.complete_isr_change(shrink, committed(shrink), now=LAG_S + 1)
    assert outcome is IsrOutcome.IGNORED
    assert partition.isr == {LEADER, F1} and partition.partition_epoch == 8


async def test_acks_all_waiter_is_released_by_a_follower_fetch(tmp_path: Path) -> None:
    partition = make_leader(tmp_path, (LEADER, F1))
    end = append(partition, 2)
    results: list[ErrorCode] = []
    async with trio.open_nursery() as nursery:

        async def wait() -> None:
            results.append(await partition.wait_for_high_watermark(end, timeout_s=30))

        nursery.start_soon(wait)
        await trio.sleep(0.05)
        assert results == []
        partition.update_follower_fetch(F1, end, now=trio.current_time())
    assert results == [ErrorCode.NONE]


async def test_acks_all_waiter_times_out_without_replication(tmp_path: Path) -> None:
    partition = make_leader(tmp_path, (LEADER, F1))
    end = append(partition, 1)
    assert await partition.wait_for_high_watermark(end, timeout_s=0.05) == (
        ErrorCode.REQUEST_TIMED_OUT
    )


async def test_isr_shrinking_below_minimum_while_waiting_is_reported(tmp_path: Path) -> None:
    partition = make_leader(tmp_path, min_isr=3)
    partition.check_enough_replicas(-1)  # all three in sync
    end = append(partition, 1)
    partition.update_follower_fetch(F1, end, now=0.0)
    results: list[ErrorCode] = []
    async with trio.open_nursery() as nursery:

        async def wait() -> None:
            results.append(await partition.wait_for_high_watermark(end, timeout_s=30))

        nursery.start_soon(wait)
        await trio.sleep(0.05)
        shrink = partition.maybe_shrink_isr(now=LAG_S + 1, max_lag_s=LAG_S)  # F2 never fetched
        assert shrink is not None
        await trio.sleep(0.05)
        assert results == []  # not committed yet
        partition.complete_isr_change(shrink, committed(shrink), now=LAG_S + 1)
    assert results == [ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND]
    with pytest.raises(NotEnoughReplicasError):
        partition.check_enough_replicas(-1)
    partition.check_enough_replicas(1)  # acks=1 does not care


async def test_acks_all_waiter_answers_not_leader_when_leadership_moves(tmp_path: Path) -> None:
    partition = make_leader(tmp_path, (LEADER, F1))
    end = append(partition, 1)
    results: list[ErrorCode] = []
    async with trio.open_nursery() as nursery:

        async def wait() -> None:
            results.append(await partition.wait_for_high_watermark(end, timeout_s=30))

        nursery.start_soon(wait)
        await trio.sleep(0.05)
        assert partition.make_follower(assignment((LEADER, F1), leader=F1, leader_epoch=4))
    assert results == [ErrorCode.NOT_LEADER_OR_FOLLOWER]


def test_leader_epoch_fencing_and_roles(tmp_path: Path) -> None:
    partition = make_leader(tmp_path, (LEADER,))
    partition.check_leader_epoch(-1)
    partition.check_leader_epoch(3)
    with pytest.raises(FencedLeaderEpochError):
        partition.check_leader_epoch(2)
    with pytest.raises(UnknownLeaderEpochError):
        partition.check_leader_epoch(4)
    partition.ensure_leader()
    with pytest.raises(NotLeaderOrFollowerError):
        partition.append_replicated(record_batch([b"x"]))  # a leader does not follow
    partition.make_follower(assignment((LEADER, F1), leader=F1, leader_epoch=4))
    with pytest.raises(NotLeaderOrFollowerError):
        partition.ensure_leader()
    with pytest.raises(NotLeaderOrFollowerError):
        partition.append_records_as_leader(record_batch([b"x"]))
    partition.make_offline()
    with pytest.raises(NotLeaderOrFollowerError):
        partition.append_replicated(record_batch([b"x"]))


def test_replica_fetch_must_come_from_a_follower(tmp_path: Path) -> None:
    partition = make_leader(tmp_path, (LEADER, F1))
    partition.check_follower(F1)
    for stranger in (LEADER, F2):
        with pytest.raises(NotLeaderOrFollowerError):
            partition.check_follower(stranger)


def test_diverging_epoch_names_where_the_followers_last_epoch_ends_here(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    log.append_as_leader(record_batch([b"a"] * 3), 1)  # epoch 1: offsets 0-2
    log.append_as_leader(record_batch([b"b"] * 2), 2)  # epoch 2: offsets 3-4
    partition = Partition("t", 0, log, local_id=LEADER, signal=HighWatermarkSignal())
    partition.make_leader(assignment(leader_epoch=5), now=0.0)
    assert partition.diverging_epoch(2, 5) is None  # in step
    assert partition.diverging_epoch(1, 3) is None  # epoch 1 ends exactly there
    assert partition.diverging_epoch(1, 4) == (1, 3)  # the follower wrote more in epoch 1
    assert partition.diverging_epoch(3, 5) == (2, 5)  # we never had epoch 3
    assert partition.diverging_epoch(2, 6) == (2, 5)


def test_follower_appends_keep_the_leaders_offsets_and_its_high_watermark_is_bounded(
    tmp_path: Path,
) -> None:
    leader_log = open_log(tmp_path / "leader")
    leader_log.append_as_leader(record_batch([b"a"] * 4), 2)
    replicated = leader_log.read(0, 1 << 20).records
    partition = Partition(
        "t", 0, open_log(tmp_path / "follower"), local_id=F1, signal=HighWatermarkSignal()
    )
    assert partition.make_follower(assignment(leader=LEADER, leader_epoch=2))
    assert not partition.make_follower(assignment(leader=LEADER, leader_epoch=2))  # unchanged
    appended = partition.append_replicated(replicated)
    assert (appended.base_offset, appended.last_offset) == (0, 3)
    assert partition.log.latest_epoch == 2
    partition.update_follower_high_watermark(100)
    assert partition.high_watermark == 4
    partition.truncate_to(2)  # batches go whole: the 4-record batch started at 0
    assert partition.log_end_offset == 0 and partition.high_watermark == 0
