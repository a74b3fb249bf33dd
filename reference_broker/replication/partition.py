"""A partition as its leader sees it: replicas, ISR, leader epoch and the high watermark.

Kafka's `Partition`: the leader appends to its log, followers' log end offsets
(LEOs) arrive with their fetches, and the high watermark is the smallest LEO over
the in-sync replicas. An acks=all produce waits until the high watermark passes its
last offset. With one replica the ISR is just the leader and the high watermark
follows the leader's LEO on every append; the same code serves the replicated case.

Waiters are woken through a `HighWatermarkSignal`, shared by all partitions of a
broker, so that one long-polling Fetch over many partitions waits on one event.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import trio

from ..errors import (
    ErrorCode,
    FencedLeaderEpochError,
    NotEnoughReplicasError,
    NotLeaderOrFollowerError,
    UnknownLeaderEpochError,
)


class PartitionLogLike(Protocol):
    """What a Partition needs of `reference_broker.log.PartitionLog`."""

    @property
    def log_end_offset(self) -> int: ...

    @property
    def high_watermark(self) -> int: ...

    @property
    def log_start_offset(self) -> int: ...

    def update_high_watermark(self, offset: int) -> None: ...


class HighWatermarkSignal:
    """Wakes everyone waiting for "some high watermark moved" (long-poll fetches, acks=all).

    A fresh trio.Event per generation: `fire` sets the current one and replaces it,
    so a waiter that looked at state before `wait_after` never misses a change.
    """

    def __init__(self) -> None:
        self._event = trio.Event()

    def current(self) -> trio.Event:
        """The event the next `fire` will set; take it before checking state."""
        return self._event

    def fire(self) -> None:
        """Wake every waiter of the current generation."""
        self._event.set()
        self._event = trio.Event()


@dataclass
class FollowerState:
    """The leader's view of one follower replica (Kafka's Replica state on the leader)."""

    log_end_offset: int = 0
    # trio-clock seconds at which the follower was last known to hold the leader's LEO.
    last_caught_up_time: float = 0.0
    last_fetch_time: float = 0.0
    last_fetch_leader_leo: int = 0


class Partition:
    """Leader-side replication state of one topic partition.

    States, as Kafka: this node is the leader (appends allowed) or a follower (they
    raise NOT_LEADER_OR_FOLLOWER). The leader tracks each replica's LEO; the ISR is
    the set of replicas caught up enough to count towards the high watermark.
    """

    def __init__(
        self,
        topic: str,
        index: int,
        log: PartitionLogLike,
        *,
        local_id: int,
        replicas: Sequence[int],
        leader_id: int,
        leader_epoch: int,
        min_insync_replicas: int,
        signal: HighWatermarkSignal,
        now: float = 0.0,
    ) -> None:
        self.topic = topic
        self.index = index
        self.log = log
        self.local_id = local_id
        self.replicas = list(replicas)
        self.leader_id = leader_id
        self.leader_epoch = leader_epoch
        self.isr: set[int] = set(replicas)
        self.min_insync_replicas = min_insync_replicas
        self._signal = signal
        # What the leader knows of each follower; the local replica is read from the log.
        # Followers in the ISR count as caught up when this node became leader (`now`).
        self._followers: dict[int, FollowerState] = {
            r: FollowerState(last_caught_up_time=now) for r in replicas if r != local_id
        }

    def __repr__(self) -> str:
        return (
            f"Partition({self.topic}-{self.index}, leader={self.leader_id}, "
            f"epoch={self.leader_epoch}, isr={sorted(self.isr)}, hw={self.high_watermark})"
        )

    @property
    def is_leader(self) -> bool:
        """Whether this node leads the partition."""
        return self.leader_id == self.local_id

    @property
    def high_watermark(self) -> int:
        """The offset below which records are committed (visible to consumers)."""
        return self.log.high_watermark

    @property
    def log_end_offset(self) -> int:
        """The offset the next appended record will get."""
        return self.log.log_end_offset

    @property
    def log_start_offset(self) -> int:
        """The first offset still in the log."""
        return self.log.log_start_offset

    def ensure_leader(self) -> None:
        """Raise NOT_LEADER_OR_FOLLOWER unless this node leads."""
        if not self.is_leader:
            raise NotLeaderOrFollowerError(
                f"node {self.local_id} is not the leader of {self.topic}-{self.index} "
                f"(leader is {self.leader_id})"
            )

    def check_leader_epoch(self, current_leader_epoch: int) -> None:
        """Fence requests from clients with a stale (or future) view of the leader epoch.

        -1 means the client does not know the epoch, which is always accepted (KIP-320).
        """
        if current_leader_epoch == -1:
            return
        if current_leader_epoch < self.leader_epoch:
            raise FencedLeaderEpochError(
                f"leader epoch {current_leader_epoch} is older than {self.leader_epoch}"
            )
        if current_leader_epoch > self.leader_epoch:
            raise UnknownLeaderEpochError(
                f"leader epoch {current_leader_epoch} is newer than {self.leader_epoch}"
            )

    def check_enough_replicas(self, required_acks: int) -> None:
        """acks=all needs at least min.insync.replicas in the ISR *before* appending."""
        if required_acks == -1 and len(self.isr) < self.min_insync_replicas:
            raise NotEnoughReplicasError(
                f"{self.topic}-{self.index} has {len(self.isr)} in-sync replicas; "
                f"min.insync.replicas is {self.min_insync_replicas}"
            )

    def follower(self, replica_id: int) -> FollowerState | None:
        """What the leader knows of a follower (None for the leader or a non-replica)."""
        return self._followers.get(replica_id)

    def update_follower_fetch(self, replica_id: int, fetch_offset: int, now: float) -> None:
        """A follower fetched from `fetch_offset` at `now` (trio clock seconds).

        As Kafka's Replica.updateFetchState: the fetch offset is the follower's LEO; the
        follower is caught up at `now` if it asked for the leader's LEO, or caught up as
        of its previous fetch if it has now reached the LEO the leader had then. Then the
        ISR may grow and the high watermark advance.
        """
        state = self._followers.get(replica_id)
        if state is None:
            return
        leader_leo = self.log.log_end_offset
        if fetch_offset >= leader_leo:
            state.last_caught_up_time = now
        elif fetch_offset >= state.last_fetch_leader_leo:
            state.last_caught_up_time = max(state.last_caught_up_time, state.last_fetch_time)
        state.log_end_offset = fetch_offset
        state.last_fetch_leader_leo = leader_leo
        state.last_fetch_time = now
        self.maybe_expand_isr(replica_id)
        self.maybe_advance_high_watermark()

    def maybe_expand_isr(self, replica_id: int) -> bool:
        """Add a follower that has caught up to the high watermark (Kafka's isFollowerInSync)."""
        state = self._followers.get(replica_id)
        if state is None or replica_id in self.isr:
            return False
        if state.log_end_offset < self.log.high_watermark:
            return False
        self.isr.add(replica_id)
        return True

    def maybe_shrink_isr(self, now: float, max_lag_s: float) -> set[int]:
        """Drop followers not caught up for longer than replica.lag.time.max.ms; returns them.

        A smaller ISR may let the high watermark advance (it is a min over the ISR).
        """
        removed = {
            replica
            for replica, state in self._followers.items()
            if replica in self.isr and now - state.last_caught_up_time > max_lag_s
        }
        if removed:
            self.isr -= removed
            self.maybe_advance_high_watermark()
            # Waiters for acks=all re-check the ISR against min.insync.replicas.
            self._signal.fire()
        return removed

    def maybe_advance_high_watermark(self) -> bool:
        """HW = min LEO over the ISR; it never moves backwards. Returns whether it moved."""
        new_hw = self.log.log_end_offset
        for replica in self.isr:
            state = self._followers.get(replica)
            if state is not None:
                new_hw = min(new_hw, state.log_end_offset)
        if new_hw > self.log.high_watermark:
            self.log.update_high_watermark(new_hw)
            self._signal.fire()
            return True
        return False

    def acks_error_after_append(self) -> ErrorCode:
        """NOT_ENOUGH_REPLICAS_AFTER_APPEND if the ISR shrank under the minimum while waiting."""
        if len(self.isr) < self.min_insync_replicas:
            return ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND
        return ErrorCode.NONE

    async def wait_for_high_watermark(self, offset: int, timeout_s: float) -> ErrorCode:
        """Wait until the HW reaches `offset` (acks=all); REQUEST_TIMED_OUT after `timeout_s`."""
        deadline = trio.current_time() + timeout_s if math.isfinite(timeout_s) else math.inf
        while self.log.high_watermark < offset:
            event = self._signal.current()
            if self.log.high_watermark >= offset:
                break
            with trio.move_on_at(deadline):
                await event.wait()
            if trio.current_time() >= deadline and self.log.high_watermark < offset:
                return ErrorCode.REQUEST_TIMED_OUT
            if not self.is_leader:
                return ErrorCode.NOT_LEADER_OR_FOLLOWER
        return self.acks_error_after_append()
