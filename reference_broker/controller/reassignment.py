"""Partition reassignment (KIP-455), as Kafka's ReplicationControlManager drives it.

A reassignment moves a partition from its current replicas to a target set in steps
that each commit as one `PartitionChangeRecord`, so its progress is in the metadata
log and survives a controller failover:

1. start: the replica set becomes the target followed by the replicas leaving it
   (`removing_replicas`); the target's new members are `adding_replicas`. They are
   followers outside the ISR and fetch from the leader like any other.
2. each adding replica that catches up joins the ISR through the leader's
   AlterPartition, as any follower does;
3. once every target replica is in the ISR the controller completes it in the same
   decision: the replica set becomes the target, the ISR loses the removed replicas,
   and a leader outside the target is replaced by the first target replica in the
   ISR that may lead. A replica leaving the set bumps the leader epoch (Kafka's
   triggerLeaderEpochBumpForReplicaReassignmentIfNeeded), so the removed replicas'
   fetches are fenced.

Cancelling (null target replicas) reverts to the original replicas: the adding
replicas leave the replica set and the ISR. A new target for a partition that is
already being reassigned first reverts the ongoing one, then starts from there.

The functions here are pure: a partition's state in, a change record (or an error) out.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass

from .records import NO_LEADER, PartitionChangeRecord


@dataclass(frozen=True, slots=True)
class ReplicaSets:
    """The replica fields of a partition that a reassignment changes."""

    replicas: tuple[int, ...]
    isr: tuple[int, ...]
    leader: int
    adding: tuple[int, ...] = ()
    removing: tuple[int, ...] = ()

    @property
    def reassigning(self) -> bool:
        """Whether a reassignment is in progress."""
        return bool(self.adding or self.removing)

    @property
    def original(self) -> tuple[int, ...]:
        """The replicas before the ongoing reassignment (all of them when none is)."""
        return tuple(r for r in self.replicas if r not in self.adding)

    @property
    def target(self) -> tuple[int, ...]:
        """The replicas once the ongoing reassignment completes."""
        return tuple(r for r in self.replicas if r not in self.removing)


class ReassignmentError(ValueError):
    """A reassignment the controller refuses; `code` is Kafka's error name."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def validate_target(
    target: tuple[int, ...],
    registered: Collection[int],
    *,
    current_factor: int,
    allow_factor_change: bool,
) -> None:
    """Raise ReassignmentError unless `target` is a replica list Kafka would accept
    (validateManualPartitionAssignment)."""
    if not target:
        raise ReassignmentError("INVALID_REPLICA_ASSIGNMENT", "the target replica list is empty")
    if len(set(target)) != len(target):
        raise ReassignmentError(
            "INVALID_REPLICA_ASSIGNMENT", f"the target replicas {list(target)} repeat a broker"
        )
    unknown = [r for r in target if r not in registered]
    if unknown:
        raise ReassignmentError(
            "INVALID_REPLICA_ASSIGNMENT",
            f"the target replicas include broker(s) {unknown}, but no such broker is registered",
        )
    if not allow_factor_change and len(target) != current_factor:
        raise ReassignmentError(
            "INVALID_REPLICATION_FACTOR",
            f"the target has {len(target)} replicas but the partition has {current_factor} and "
            "AllowReplicationFactorChange is false",
        )


def _elect(
    candidates: tuple[int, ...],
    isr: tuple[int, ...],
    leader: int,
    acceptable: Callable[[int], bool],
) -> int:
    """The current leader if it stays a candidate in the ISR, else the first candidate
    (in order) in the ISR that may lead; NO_LEADER if none."""
    if leader in candidates and leader in isr and acceptable(leader):
        return leader
    return next((r for r in candidates if r in isr and acceptable(r)), NO_LEADER)


def revert(state: ReplicaSets, acceptable: Callable[[int], bool]) -> ReplicaSets:
    """`state` with its ongoing reassignment cancelled (Kafka's PartitionReassignmentRevert)."""
    original = state.original
    isr = tuple(r for r in state.isr if r in original)
    if not isr:
        # Only adding replicas were in sync: keep the original ISR's last word rather
        # than an empty one, as the controller never empties an ISR on its own.
        isr = tuple(r for r in state.isr if r not in state.adding) or original[:1]
    return ReplicaSets(original, isr, _elect(original, isr, state.leader, acceptable))


def start(state: ReplicaSets, target: tuple[int, ...]) -> ReplicaSets:
    """The first step towards `target` from a state with no reassignment in progress
    (Kafka's PartitionReassignmentReplicas): target first, then the leaving replicas."""
    removing = tuple(r for r in state.replicas if r not in target)
    adding = tuple(r for r in target if r not in state.replicas)
    return ReplicaSets(target + removing, state.isr, state.leader, adding, removing)


def complete_if_ready(state: ReplicaSets, acceptable: Callable[[int], bool]) -> ReplicaSets:
    """`state` with its reassignment completed if every target replica is in the ISR and
    one of them may lead; otherwise `state` unchanged."""
    if not state.reassigning:
        return state
    target = state.target
    if any(r not in state.isr for r in target):
        return state
    isr = tuple(r for r in state.isr if r in target)
    leader = _elect(target, isr, state.leader, acceptable)
    if leader == NO_LEADER:
        return state
    return ReplicaSets(target, isr, leader)


def change_record(
    topic_id: str, index: int, before: ReplicaSets, after: ReplicaSets
) -> PartitionChangeRecord | None:
    """The record that moves `before` to `after` (unchanged fields None); None if equal."""
    if before == after:
        return None
    return PartitionChangeRecord(
        topic_id,
        index,
        leader=None if after.leader == before.leader else after.leader,
        isr=None if after.isr == before.isr else after.isr,
        replicas=None if after.replicas == before.replicas else after.replicas,
        adding_replicas=None if after.adding == before.adding else after.adding,
        removing_replicas=None if after.removing == before.removing else after.removing,
    )
