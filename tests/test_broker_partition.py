"""Partition replication state on a real log: high watermark over the ISR, ISR shrink/expand,
acks=all waits and leader-epoch fencing (Kafka's Partition and Replica semantics)."""

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
from reference_broker.replication.partition import HighWatermarkSignal, Partition
from tests.wire import record_batch

LEADER, F1, F2 = 0, 1, 2
LAG_S = 10.0


def make_partition(
    tmp_path: Path, replicas: list[int], *, min_isr: int = 1, leader_epoch: int = 3
) -> Partition:
    env = os_node_env(tmp_path, seed=0)
    env.storage.makedirs("t-0")
    log = PartitionLog.open(env.storage, "t-0", LogConfig(), env.clock)
    return Partition(
        "t",
        0,
        log,
        local_id=LEADER,
        replicas=replicas,
        leader_id=LEADER,
        leader_epoch=leader_epoch,
        min_insync_replicas=min_isr,
        signal=HighWatermarkSignal(),
    )


def append(partition: Partition, n: int) -> int:
    """Append n records as leader; returns the new log end offset."""
    partition.log.append_as_leader(record_batch([b"v"] * n), partition.leader_epoch)  # type: ignore[attr-defined]
    partition.maybe_advance_high_watermark()
    return partition.log_end_offset


def test_single_replica_high_watermark_follows_the_log_end(tmp_path: Path) -> None:
    partition = make_partition(tmp_path, [LEADER])
    assert append(partition, 3) == 3
    assert partition.high_watermark == 3


def test_high_watermark_is_the_minimum_log_end_over_the_isr(tmp_path: Path) -> None:
    partition = make_partition(tmp_path, [LEADER, F1, F2])
    append(partition, 5)
    assert partition.high_watermark == 0  # no follower has fetched yet
    partition.update_follower_fetch(F1, 5, now=1.0)
    assert partition.high_watermark == 0  # F2 still at 0
    partition.update_follower_fetch(F2, 2, now=1.0)
    assert partition.high_watermark == 2
    partition.update_follower_fetch(F2, 5, now=1.1)
    assert partition.high_watermark == 5


def test_lagging_follower_leaves_the_isr_and_rejoins_once_caught_up(tmp_path: Path) -> None:
    partition = make_partition(tmp_path, [LEADER, F1, F2])
    append(partition, 4)
    partition.update_follower_fetch(F1, 4, now=1.0)
    partition.update_follower_fetch(F2, 1, now=1.0)
    assert partition.high_watermark == 1
    # F1 keeps up; F2, last caught up when the partition was made (t=0), stops fetching.
    assert partition.maybe_shrink_isr(now=LAG_S - 1, max_lag_s=LAG_S) == set()
    partition.update_follower_fetch(F1, 4, now=LAG_S)
    removed = partition.maybe_shrink_isr(now=LAG_S + 1, max_lag_s=LAG_S)
    assert removed == {F2} and partition.isr == {LEADER, F1}
    assert partition.high_watermark == 4  # no longer held back by F2
    partition.update_follower_fetch(F2, 3, now=20.0)
    assert F2 not in partition.isr  # below the high watermark
    partition.update_follower_fetch(F2, 4, now=21.0)
    assert partition.isr == {LEADER, F1, F2}


def test_follower_fetching_behind_a_moving_end_counts_as_caught_up_as_of_its_last_fetch(
    tmp_path: Path,
) -> None:
    partition = make_partition(tmp_path, [LEADER, F1])
    append(partition, 2)
    partition.update_follower_fetch(F1, 2, now=1.0)  # caught up at t=1
    append(partition, 2)  # leader LEO 4
    partition.update_follower_fetch(F1, 2, now=5.0)  # behind: last caught up stays 1
    assert partition.follower(F1).last_caught_up_time == 1.0  # type: ignore[union-attr]
    append(partition, 2)  # leader LEO 6
    # Reaches the LEO the leader had at its previous fetch (4): caught up as of t=5.
    partition.update_follower_fetch(F1, 4, now=9.0)
    assert partition.follower(F1).last_caught_up_time == 5.0  # type: ignore[union-attr]


async def test_acks_all_waiter_is_released_by_a_follower_fetch(tmp_path: Path) -> None:
    partition = make_partition(tmp_path, [LEADER, F1])
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
    partition = make_partition(tmp_path, [LEADER, F1])
    end = append(partition, 1)
    assert await partition.wait_for_high_watermark(end, timeout_s=0.05) == (
        ErrorCode.REQUEST_TIMED_OUT
    )


async def test_isr_shrinking_below_minimum_while_waiting_is_reported(tmp_path: Path) -> None:
    partition = make_partition(tmp_path, [LEADER, F1, F2], min_isr=3)
    partition.check_enough_replicas(-1)  # all three in sync
    end = append(partition, 1)
    partition.update_follower_fetch(F1, end, now=0.0)
    results: list[ErrorCode] = []
    async with trio.open_nursery() as nursery:

        async def wait() -> None:
            results.append(await partition.wait_for_high_watermark(end, timeout_s=30))

        nursery.start_soon(wait)
        await trio.sleep(0.05)
        partition.maybe_shrink_isr(now=LAG_S + 1, max_lag_s=LAG_S)  # F2 never fetched
    assert results == [ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND]
    with pytest.raises(NotEnoughReplicasError):
        partition.check_enough_replicas(-1)
    partition.check_enough_replicas(1)  # acks=1 does not care


def test_leader_epoch_fencing_and_leadership(tmp_path: Path) -> None:
    partition = make_partition(tmp_path, [LEADER], leader_epoch=3)
    partition.check_leader_epoch(-1)
    partition.check_leader_epoch(3)
    with pytest.raises(FencedLeaderEpochError):
        partition.check_leader_epoch(2)
    with pytest.raises(UnknownLeaderEpochError):
        partition.check_leader_epoch(4)
    partition.ensure_leader()
    partition.leader_id = F1
    with pytest.raises(NotLeaderOrFollowerError):
        partition.ensure_leader()
