"""One partition on one node: leader, follower or not a replica, after Kafka's `Partition`.

The metadata decides the role (`make_leader`, `make_follower`, `make_offline`); this
class keeps what the role needs:

- as **leader** it appends producers' batches in its leader epoch, tracks each
  follower's log end offset (LEO) from its fetches, proposes ISR changes to the
  controller (expand when a follower caught up with the high watermark of this
  leader epoch, shrink when one has not caught up for replica.lag.time.max.ms) and
  moves the high watermark to the smallest LEO over the (maximal) ISR — but only
  while the committed ISR is at least min.insync.replicas, capped at the number of
  replicas (KIP-966);
- as **follower** it appends what the leader's batches hold, offsets and epochs
  unchanged, truncates where its log diverged, and takes the leader's high
  watermark (bounded by its own LEO); it serves neither producers nor consumers;
- **offline** (not a replica any more, or not yet told) it refuses everything.

The high watermark never moves backwards here except through truncation. Waiters
(acks=all produces, long-polling fetches) are woken through a `HighWatermarkSignal`
shared by all partitions of a broker; it fires when a high watermark moves, when a
leader appends (replica fetches wait for new data, not for a new high watermark) and
when a role or ISR changes.
"""

from __future__ import annotations

import enum
import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import trio

from .. import bugs, events
from ..errors import (
    ErrorCode,
    FencedLeaderEpochError,
    NotEnoughReplicasError,
    NotLeaderOrFollowerError,
    UnknownLeaderEpochError,
)
from ..log.control_batch import TxnMarker
from ..log.partition_log import AppendResult, PartitionLog
from .assignment import NO_LEADER, AlterPartitionResult, PartitionAssignment
from .isr import (
    RETRY_BACKOFF_S,
    ChangeKind,
    IsrOutcome,
    IsrProposal,
    IsrState,
    classify_error,
)

logger = logging.getLogger("faultline.broker.replication")

UNKNOWN_OFFSET = -1


class HighWatermarkSignal:
    """Wakes everyone waiting for "some partition changed" (long-poll fetches, acks=all).

    A fresh trio.Event per generation: `fire` sets the current one and replaces it,
    so a waiter that took `current()` before looking at state never misses a change.
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


class ReplicaRole(enum.Enum):
    """What this node is for a partition."""

    LEADER = "leader"
    FOLLOWER = "follower"
    OFFLINE = "offline"


@dataclass
class FollowerState:
    """The leader's view of one follower replica (Kafka's ReplicaState on the leader)."""

    log_end_offset: int = UNKNOWN_OFFSET
    # trio-clock seconds at which the follower was last known to hold the leader's LEO.
    last_caught_up_time: float = -math.inf
    last_fetch_time: float = -math.inf
    last_fetch_leader_leo: int = UNKNOWN_OFFSET

    def is_caught_up(self, leader_leo: int, now: float, max_lag_s: float) -> bool:
        """Kafka's isCaughtUp: holds the leader's LEO, or did so within the lag limit."""
        return self.log_end_offset == leader_leo or now - self.last_caught_up_time <= max_lag_s


IsrListener = Callable[["Partition", IsrProposal], None]
# Whether the metadata shows a broker that may join an ISR (registered and not fenced).
IsrEligibility = Callable[[int], bool]


def _ordered(members: Iterable[int], replicas: tuple[int, ...]) -> tuple[int, ...]:
    """ISR members in replica-list order (extras, which metadata should not have, last)."""
    wanted = set(members)
    ordered = [r for r in replicas if r in wanted]
    return (*ordered, *sorted(wanted - set(ordered)))


class Partition:
    """Replication state of one topic partition on this node.

    Created offline; the replica manager (or, for a standalone node, the broker) makes
    it leader or follower from a `PartitionAssignment`.
    """

    def __init__(
        self,
        topic: str,
        index: int,
        log: PartitionLog,
        *,
        local_id: int,
        signal: HighWatermarkSignal,
        min_insync_replicas: int = 1,
        isr_listener: IsrListener | None = None,
        isr_eligible: IsrEligibility | None = None,
    ) -> None:
        self.topic = topic
        self.index = index
        self.log = log
        self.local_id = local_id
        self._min_insync_replicas = min_insync_replicas
        self.role = ReplicaRole.OFFLINE
        self.replicas: tuple[int, ...] = ()
        self.leader_id = NO_LEADER
        self.leader_epoch = -1
        self.partition_epoch = -1
        # First offset of this node's current leader epoch (Kafka's leaderEpochStartOffsetOpt).
        self.leader_epoch_start_offset = UNKNOWN_OFFSET
        self._isr = IsrState(frozenset())
        self._followers: dict[int, FollowerState] = {}
        self._signal = signal
        self._isr_listener = isr_listener
        self._isr_eligible = isr_eligible
        # (stale epoch, leader epoch) pairs already reported as `leader-epoch-fenced`.
        self._fenced_epochs_seen: set[tuple[int, int]] = set()

    @classmethod
    def standalone(
        cls,
        topic: str,
        index: int,
        log: PartitionLog,
        *,
        local_id: int,
        signal: HighWatermarkSignal,
        min_insync_replicas: int,
        now: float,
    ) -> Partition:
        """The only replica of a partition on a node without a controller: leader in epoch 0.

        Its ISR is itself, so the high watermark catches up with the recovered log end at
        once, as a new leader's does in Kafka.
        """
        partition = cls(
            topic,
            index,
            log,
            local_id=local_id,
            signal=signal,
            min_insync_replicas=min_insync_replicas,
        )
        partition.make_leader(
            PartitionAssignment(topic, index, (local_id,), (local_id,), local_id, 0, 0), now
        )
        return partition

    def __repr__(self) -> str:
        return (
            f"Partition({self.topic}-{self.index} on {self.local_id}: {self.role.value}, "
            f"leader={self.leader_id}, epoch={self.leader_epoch}, isr={sorted(self.isr)}, "
            f"hw={self.high_watermark}, leo={self.log_end_offset})"
        )

    # -- offsets and membership ---------------------------------------------------------

    @property
    def min_insync_replicas(self) -> int:
        """The topic's min.insync.replicas (acks=all needs this many in the ISR)."""
        if bugs.enabled("min-isr-ignored"):
            # PLANTED BUG min-isr-ignored: the topic's setting is dropped for Kafka's default.
            return 1
        return self._min_insync_replicas

    @min_insync_replicas.setter
    def min_insync_replicas(self, value: int) -> None:
        self._min_insync_replicas = value

    @property
    def is_leader(self) -> bool:
        """Whether this node leads the partition."""
        return self.role is ReplicaRole.LEADER

    @property
    def is_follower(self) -> bool:
        """Whether this node follows the partition's leader."""
        return self.role is ReplicaRole.FOLLOWER

    @property
    def isr(self) -> frozenset[int]:
        """The in-sync replicas as committed by the controller (what metadata shows)."""
        return self._isr.committed

    @property
    def maximal_isr(self) -> frozenset[int]:
        """The replicas the high watermark waits for (committed ISR plus a joining one)."""
        return self._isr.maximal

    @property
    def pending_isr_change(self) -> IsrProposal | None:
        """The ISR proposal sent to the controller and not answered yet."""
        return self._isr.pending

    @property
    def high_watermark(self) -> int:
        """The offset below which records are committed (visible to consumers)."""
        return self.log.high_watermark

    @property
    def last_stable_offset(self) -> int:
        """The high watermark capped by the earliest open transaction (read_committed)."""
        return self.log.last_stable_offset

    @property
    def log_end_offset(self) -> int:
        """The offset the next appended record will get."""
        return self.log.log_end_offset

    @property
    def log_start_offset(self) -> int:
        """The first offset still in the log."""
        return self.log.log_start_offset

    @property
    def effective_min_isr(self) -> int:
        """min.insync.replicas, capped at the replication factor (Kafka's effectiveMinIsr)."""
        return max(1, min(self.min_insync_replicas, len(self.replicas)))

    def follower(self, replica_id: int) -> FollowerState | None:
        """What the leader knows of a follower (None for the leader or a non-replica)."""
        return self._followers.get(replica_id)

    # -- role changes -------------------------------------------------------------------

    def _is_stale(self, assignment: PartitionAssignment) -> bool:
        # Older than what we act on, or exactly it again (a full image re-delivers
        # partitions that did not change; re-applying one would drop a pending change).
        if self.role is ReplicaRole.OFFLINE:
            return False
        if assignment.leader_epoch != self.leader_epoch:
            return assignment.leader_epoch < self.leader_epoch
        return assignment.partition_epoch <= self.partition_epoch

    def make_leader(self, assignment: PartitionAssignment, now: float) -> bool:
        """Lead the partition as `assignment` says; returns whether a new leader epoch began.

        A new leader epoch starts at the log end offset (recorded in the leader-epoch
        cache, as Kafka's maybeAssignEpochStartOffset), forgets what followers had
        fetched and counts the ISR's followers as caught up as of `now`. The high
        watermark starts from the local one and only moves forward. The same epoch
        with a newer partition epoch only updates replicas and the committed ISR.
        """
        if assignment.leader != self.local_id:
            raise ValueError(f"{assignment} names leader {assignment.leader}, not {self.local_id}")
        if self._is_stale(assignment):
            return False
        new_epoch = (
            self.role is not ReplicaRole.LEADER or assignment.leader_epoch != self.leader_epoch
        )
        isr = frozenset(assignment.isr)
        if new_epoch:
            self.log.assign_epoch_start_offset(assignment.leader_epoch)
            self.leader_epoch_start_offset = self.log.log_end_offset
            self._followers = {
                r: FollowerState(last_caught_up_time=now if r in isr else -math.inf)
                for r in assignment.replicas
                if r != self.local_id
            }
            logger.info(
                "%s-%d: leader in epoch %d from offset %d, isr %s",
                self.topic,
                self.index,
                assignment.leader_epoch,
                self.leader_epoch_start_offset,
                sorted(isr),
            )
        else:
            for replica in assignment.replicas:
                if replica != self.local_id and replica not in self._followers:
                    self._followers[replica] = FollowerState()
            for replica in set(self._followers) - set(assignment.replicas):
                del self._followers[replica]
            # Same leader epoch, new partition epoch: the controller changed the ISR
            # (a fenced follower left it) or confirmed the leader's own change.
            _emit_isr_change(self, frozenset(self.isr), isr, by="controller")
        self.role = ReplicaRole.LEADER
        self.replicas = tuple(assignment.replicas)
        self.leader_id = self.local_id
        self.leader_epoch = assignment.leader_epoch
        self.partition_epoch = assignment.partition_epoch
        self._isr.reset(isr)
        self.maybe_advance_high_watermark()
        self._signal.fire()
        return new_epoch

    def make_follower(self, assignment: PartitionAssignment) -> bool:
        """Follow `assignment.leader` (or wait for one: NO_LEADER); returns whether it changed.

        True means a new leader epoch or a new leader: the fetcher must (re)start from
        the log end, letting the leader tell it where its log diverged. Produce and
        consumer fetches are refused from now on; waiting acks=all produces are woken
        and answer NOT_LEADER_OR_FOLLOWER.
        """
        if assignment.leader == self.local_id:
            raise ValueError(f"{assignment} makes {self.local_id} the leader, not a follower")
        if self._is_stale(assignment):
            return False
        changed = (
            self.role is not ReplicaRole.FOLLOWER
            or assignment.leader_epoch != self.leader_epoch
            or assignment.leader != self.leader_id
        )
        self.role = ReplicaRole.FOLLOWER
        self.replicas = tuple(assignment.replicas)
        self.leader_id = assignment.leader
        self.leader_epoch = assignment.leader_epoch
        self.partition_epoch = assignment.partition_epoch
        self.leader_epoch_start_offset = UNKNOWN_OFFSET
        self._isr.reset(frozenset(assignment.isr))
        self._followers = {}
        if changed and bugs.enabled("truncate-to-hw"):
            # PLANTED BUG truncate-to-hw: cut back to our own (lagging) high watermark
            # instead of letting the leader say where the logs diverged.
            self.log.truncate_to(self.log.high_watermark)
        if changed:
            logger.info(
                "%s-%d: follower of %d in epoch %d at offset %d",
                self.topic,
                self.index,
                self.leader_id,
                self.leader_epoch,
                self.log_end_offset,
            )
        self._signal.fire()
        return changed

    def make_offline(self) -> None:
        """Stop being a replica: refuse every request; waiters are woken."""
        self.role = ReplicaRole.OFFLINE
        self.leader_id = NO_LEADER
        self._followers = {}
        self._isr.reset(frozenset())
        self._signal.fire()

    # -- request checks -----------------------------------------------------------------

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
            if (current_leader_epoch, self.leader_epoch) not in self._fenced_epochs_seen:
                self._fenced_epochs_seen.add((current_leader_epoch, self.leader_epoch))
                events.emit("leader-epoch-fenced", log=f"{self.topic}/{self.index}",
                            epoch=current_leader_epoch, leader_epoch=self.leader_epoch)
            raise FencedLeaderEpochError(
                f"leader epoch {current_leader_epoch} of {self.topic}-{self.index} is older "
                f"than {self.leader_epoch}; refresh metadata"
            )
        if current_leader_epoch > self.leader_epoch:
            raise UnknownLeaderEpochError(
                f"leader epoch {current_leader_epoch} of {self.topic}-{self.index} is newer "
                f"than {self.leader_epoch}; this node has not caught up with metadata yet"
            )

    def check_follower(self, replica_id: int) -> None:
        """A replica fetch must come from one of the partition's other replicas."""
        if replica_id not in self._followers:
            raise NotLeaderOrFollowerError(
                f"broker {replica_id} is not a follower of {self.topic}-{self.index} "
                f"(replicas {list(self.replicas)})"
            )

    def check_enough_replicas(self, required_acks: int) -> None:
        """acks=all needs at least min.insync.replicas in the ISR *before* appending."""
        if required_acks == -1 and len(self.isr) < self.min_insync_replicas:
            raise NotEnoughReplicasError(
                f"{self.topic}-{self.index} has {len(self.isr)} in-sync replicas; "
                f"min.insync.replicas is {self.min_insync_replicas}"
            )

    def diverging_epoch(self, last_fetched_epoch: int, fetch_offset: int) -> tuple[int, int] | None:
        """(epoch, end offset) where a follower's log left ours, or None when it did not.

        As Kafka's fetch validation (KIP-595 style, Fetch v12): the follower's last
        fetched epoch must end, in our log, at or after its fetch offset.
        """
        epoch, end_offset = self.log.end_offset_for_epoch(last_fetched_epoch)
        if epoch < 0 or end_offset < 0:
            return None  # no epoch information to compare; the offset range check decides
        if epoch < last_fetched_epoch or end_offset < fetch_offset:
            return epoch, end_offset
        return None

    # -- leader: appends, follower fetches, ISR and high watermark ----------------------

    def append_records_as_leader(
        self, records: bytes, required_acks: int = 1, *, from_coordinator: bool = False
    ) -> AppendResult:
        """Append a producer's batches in this leader epoch (checks leadership and acks).

        Raises NOT_LEADER_OR_FOLLOWER, NOT_ENOUGH_REPLICAS (acks=all, ISR too small) or the
        log's errors. A retried idempotent batch answers its original offsets.
        """
        self.ensure_leader()
        self.check_enough_replicas(required_acks)
        result = self.log.append_as_leader(
            records, self.leader_epoch, from_coordinator=from_coordinator
        )
        if not result.duplicate:
            # Followers long-poll for new data, not only for a new high watermark.
            self._signal.fire()
            self.maybe_advance_high_watermark()
        return result

    def append_marker_as_leader(
        self, producer_id: int, producer_epoch: int, marker: TxnMarker
    ) -> AppendResult:
        """Write a transaction marker in this leader epoch (WriteTxnMarkers).

        Markers are always written with acks=all semantics by the caller; like any
        append they wake followers and may move the high watermark.
        """
        self.ensure_leader()
        result = self.log.append_marker_as_leader(
            producer_id, producer_epoch, marker, self.leader_epoch
        )
        self._signal.fire()
        self.maybe_advance_high_watermark()
        return result

    def update_follower_fetch(self, replica_id: int, fetch_offset: int, now: float) -> None:
        """A follower fetched from `fetch_offset` at `now` (trio clock seconds).

        As Kafka's updateFollowerFetchState: the fetch offset is the follower's LEO; the
        follower is caught up at `now` if it asked for the leader's LEO, or caught up as
        of its previous fetch if it has now reached the LEO the leader had then. Then the
        ISR may grow and the high watermark advance.
        """
        state = self._followers.get(replica_id)
        if state is None or not self.is_leader:
            return
        leader_leo = self.log.log_end_offset
        if fetch_offset >= leader_leo:
            state.last_caught_up_time = max(state.last_caught_up_time, now)
        elif fetch_offset >= state.last_fetch_leader_leo:
            state.last_caught_up_time = max(state.last_caught_up_time, state.last_fetch_time)
        state.log_end_offset = fetch_offset
        state.last_fetch_leader_leo = max(leader_leo, state.last_fetch_leader_leo)
        state.last_fetch_time = now
        self.maybe_expand_isr(replica_id, now)
        self.maybe_advance_high_watermark()

    def _propose(self, kind: ChangeKind, members: Iterable[int], changed: set[int]) -> IsrProposal:
        proposal = IsrProposal(
            kind,
            _ordered(members, self.replicas),
            self.leader_epoch,
            self.partition_epoch,
            frozenset(changed),
        )
        self._isr.pending = proposal
        logger.info(
            "%s-%d: proposing to %s the ISR %s -> %s",
            self.topic,
            self.index,
            kind.value,
            sorted(self.isr),
            list(proposal.isr),
        )
        if self._isr_listener is not None:
            self._isr_listener(self, proposal)
        return proposal

    def maybe_expand_isr(self, replica_id: int, now: float) -> IsrProposal | None:
        """Propose adding a follower that reached the high watermark of this leader epoch.

        As Kafka's isReplicaIsrEligible, not one the metadata shows fenced or unregistered:
        the controller would refuse it (INELIGIBLE_REPLICA), and every fetch of that
        follower would propose it again.
        """
        if not self.is_leader or not self._isr.may_propose(now) or replica_id in self.isr:
            return None
        if self._isr_eligible is not None and not self._isr_eligible(replica_id):
            return None
        state = self._followers.get(replica_id)
        if state is None:
            return None
        if (
            # PLANTED BUG isr-expand-lagging: a follower below the HW counts as caught up.
            (state.log_end_offset < self.log.high_watermark
             and not bugs.enabled("isr-expand-lagging"))
            or state.log_end_offset < self.leader_epoch_start_offset
        ):
            return None
        return self._propose(ChangeKind.EXPAND, self.isr | {replica_id}, {replica_id})

    def out_of_sync_replicas(self, now: float, max_lag_s: float) -> set[int]:
        """ISR followers that have not held the leader's LEO for longer than `max_lag_s`."""
        leader_leo = self.log.log_end_offset
        return {
            replica
            for replica in self.isr
            if replica != self.local_id
            and not self._followers.get(replica, FollowerState()).is_caught_up(
                leader_leo, now, max_lag_s
            )
        }

    def maybe_shrink_isr(self, now: float, max_lag_s: float) -> IsrProposal | None:
        """Propose dropping followers not caught up for longer than replica.lag.time.max.ms.

        Until the controller commits it, the high watermark still waits for them.
        """
        if not self.is_leader or not self._isr.may_propose(now):
            return None
        lagging = self.out_of_sync_replicas(now, max_lag_s)
        if not lagging:
            return None
        return self._propose(ChangeKind.SHRINK, self.isr - lagging, lagging)

    def complete_isr_change(
        self, proposal: IsrProposal, result: AlterPartitionResult, now: float
    ) -> IsrOutcome:
        """Apply the controller's answer to `proposal`, received at `now` (trio clock seconds).

        As Kafka's handleAlterPartitionUpdate.
        """
        if self._isr.pending is not proposal or not self.is_leader:
            return IsrOutcome.IGNORED  # metadata replaced the proposal meanwhile
        if result.error != 0:
            outcome = classify_error(result.error)
            if outcome is IsrOutcome.REVERTED:
                self._isr.pending = None
                self._isr.backoff_until = now + RETRY_BACKOFF_S
            elif outcome is IsrOutcome.AWAIT_METADATA:
                # Whether the controller applied an earlier attempt is unknown: keep
                # counting the maximal ISR until metadata says what is committed.
                self._isr.awaiting_metadata = True
            logger.info(
                "%s-%d: ISR change %s failed with error %d (%s)",
                self.topic,
                self.index,
                list(proposal.isr),
                result.error,
                outcome.value,
            )
            return outcome
        if result.leader_epoch != self.leader_epoch:
            self._isr.awaiting_metadata = True
            return IsrOutcome.AWAIT_METADATA
        if result.partition_epoch < self.partition_epoch:
            return IsrOutcome.IGNORED
        _emit_isr_change(self, frozenset(self.isr), frozenset(result.isr), by="leader")
        self._isr.reset(frozenset(result.isr))
        self.partition_epoch = result.partition_epoch
        logger.info(
            "%s-%d: ISR is now %s (partition epoch %d)",
            self.topic,
            self.index,
            list(result.isr),
            result.partition_epoch,
        )
        self.maybe_advance_high_watermark()
        # acks=all waiters re-check the ISR against min.insync.replicas.
        self._signal.fire()
        return IsrOutcome.APPLIED

    def maybe_advance_high_watermark(self) -> bool:
        """HW = min LEO over the maximal ISR, while the ISR holds min.insync.replicas.

        It never moves backwards. Returns whether it moved.
        """
        if not self.is_leader or len(self.isr) < self.effective_min_isr:
            return False
        new_hw = self.log.log_end_offset
        follower_leos = [
            state.log_end_offset if state is not None else UNKNOWN_OFFSET
            for state in (self._followers.get(r) for r in self._isr.maximal if r != self.local_id)
        ]
        if follower_leos and bugs.enabled("hw-max-isr-leo"):
            # PLANTED BUG hw-max-isr-leo: committed once the fastest follower has it.
            new_hw = min(new_hw, max(follower_leos))
        else:
            new_hw = min([new_hw, *follower_leos])
        if new_hw > self.log.high_watermark:
            self.log.update_high_watermark(new_hw)
            self._signal.fire()
            return True
        return False

    def acks_error_after_append(self) -> ErrorCode:
        """NOT_ENOUGH_REPLICAS_AFTER_APPEND if the ISR is under min.insync.replicas."""
        if len(self.isr) < self.min_insync_replicas:
            return ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND
        return ErrorCode.NONE

    async def wait_for_high_watermark(
        self, offset: int, timeout_s: float, leader_epoch: int | None = None
    ) -> ErrorCode:
        """Wait until the HW reaches `offset` (acks=all) and say how the produce ended.

        NONE once committed with the ISR at min.insync.replicas;
        NOT_ENOUGH_REPLICAS_AFTER_APPEND as soon as the ISR falls under it;
        NOT_LEADER_OR_FOLLOWER when this node stops leading the epoch that appended
        (`leader_epoch`); REQUEST_TIMED_OUT after `timeout_s`.
        """
        deadline = trio.current_time() + timeout_s if math.isfinite(timeout_s) else math.inf
        epoch = self.leader_epoch if leader_epoch is None else leader_epoch
        while True:
            event = self._signal.current()
            if not self.is_leader or self.leader_epoch != epoch:
                return ErrorCode.NOT_LEADER_OR_FOLLOWER
            if self.log.high_watermark >= offset:
                return self.acks_error_after_append()
            if len(self.isr) < self.min_insync_replicas:
                return ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND
            if trio.current_time() >= deadline:
                return ErrorCode.REQUEST_TIMED_OUT
            with trio.move_on_at(deadline):
                await event.wait()

    # -- follower: replicated appends, truncation, high watermark -----------------------

    def _ensure_follower(self) -> None:
        if not self.is_follower:
            raise NotLeaderOrFollowerError(
                f"node {self.local_id} does not follow {self.topic}-{self.index} "
                f"(it is {self.role.value})"
            )

    def append_replicated(self, records: bytes) -> AppendResult:
        """Append batches fetched from the leader, keeping their offsets and epochs."""
        self._ensure_follower()
        return self.log.append_as_follower(records)

    def update_follower_high_watermark(self, leader_high_watermark: int) -> None:
        """A follower's high watermark: the leader's, bounded by its own log end."""
        self._ensure_follower()
        self.log.update_high_watermark(min(leader_high_watermark, self.log.log_end_offset))

    def truncate_to(self, offset: int) -> None:
        """Cut a follower's log back to `offset` (its divergent suffix goes)."""
        self._ensure_follower()
        if offset < self.log.high_watermark:
            # Kafka allows this (the leader's log wins); only an unclean election or lost
            # unflushed data can make a follower hold a high watermark the leader lacks.
            logger.warning(
                "%s-%d: truncating to %d, below the high watermark %d",
                self.topic,
                self.index,
                offset,
                self.log.high_watermark,
            )
        if offset < self.log.log_end_offset:
            events.emit(
                "truncation-below-hw" if offset < self.log.high_watermark
                else "follower-truncation",
                log=f"{self.topic}/{self.index}", to=offset, hw=self.log.high_watermark,
                leo=self.log.log_end_offset,
            )
        self.log.truncate_to(offset)

    def truncate_fully_and_start_at(self, offset: int) -> None:
        """Empty a follower's log and restart it at `offset` (the leader's log start)."""
        self._ensure_follower()
        self.log.truncate_fully_and_start_at(offset)


def _emit_isr_change(partition: Partition, old: frozenset[int], new: frozenset[int], *,
                     by: str) -> None:
    """An `isr-shrink` and/or `isr-expand` event for a leader's committed ISR change."""
    log = f"{partition.topic}/{partition.index}"
    if old - new:
        events.emit("isr-shrink", log=log, removed=",".join(map(str, sorted(old - new))),
                    isr=",".join(map(str, sorted(new))), by=by)
    if new - old:
        events.emit("isr-expand", log=log, added=",".join(map(str, sorted(new - old))),
                    isr=",".join(map(str, sorted(new))), by=by)
