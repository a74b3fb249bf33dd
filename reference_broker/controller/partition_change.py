"""Partition changes under eligible leader replicas (KIP-966), as Kafka's PartitionChangeBuilder.

With `eligible.leader.replicas.version` on, the controller keeps, beside the ISR,
the replicas that left it while it was below min.insync.replicas: the eligible
leader replicas (ELR). The leader's high watermark only advances while the ISR
holds min.insync.replicas (`Partition.maybe_advance_high_watermark`), so a replica
that left a too-small ISR still holds every committed record, and may be elected
once the ISR is empty. The ISR itself may then become empty (without the feature
the controller keeps its last member instead).

A replica that shut down uncleanly (registered without the epoch of its clean
shutdown) may have lost its unflushed tail: it leaves both the ISR and the ELR, and
can come back only by catching up with a leader that lets it rejoin the ISR.

Leader preference, as Kafka's electAnyLeader:

1. the current leader if it is still in the ISR and acceptable;
2. the first acceptable replica (replica order) in the ISR, or in the ELR when the
   ISR is empty (it becomes the ISR on its own);
3. the last known leader, when ISR and ELR are both empty and it is acceptable again
   (Kafka's balanced recovery: the pre-KIP-966 behaviour when every replica is down;
   unclean, since it may have lost data);
4. with unclean leader election, the first acceptable replica (unclean).

`last_known_elr` holds that last known leader while the partition is leaderless with
an empty ISR, as Kafka stores it in LastKnownElr in balanced recovery.

The functions here are pure: a state and targets in, the change record out.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass

from .records import NO_LEADER, PartitionChangeRecord


@dataclass(frozen=True, slots=True)
class PartitionView:
    """The fields of a partition's state a change is computed from."""

    replicas: tuple[int, ...]
    isr: tuple[int, ...]
    leader: int
    elr: tuple[int, ...]
    last_known_elr: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ElrChange:
    """The partition's next leader, ISR, ELR and last known ELR, and whether the leader
    was elected uncleanly (it may lack records that were committed)."""

    leader: int
    isr: tuple[int, ...]
    elr: tuple[int, ...]
    last_known_elr: tuple[int, ...]
    unclean: bool = False

    def record(
        self, topic_id: str, index: int, state: PartitionView
    ) -> PartitionChangeRecord | None:
        """The record that moves `state` to this change (unchanged fields None); None if
        nothing changes."""
        record = PartitionChangeRecord(
            topic_id,
            index,
            leader=None if self.leader == state.leader else self.leader,
            isr=None if self.isr == state.isr else self.isr,
            elr=None if self.elr == state.elr else self.elr,
            last_known_elr=(
                None if self.last_known_elr == state.last_known_elr else self.last_known_elr
            ),
        )
        if (record.leader, record.isr, record.elr, record.last_known_elr) == (None,) * 4:
            return None
        return record


def _in_replica_order(members: Collection[int], replicas: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(r for r in replicas if r in members)


def next_elr(
    state: PartitionView,
    target_isr: tuple[int, ...],
    min_isr: int,
    unclean_shutdown: Collection[int] = (),
) -> tuple[int, ...]:
    """The ELR once the ISR becomes `target_isr` (Kafka's maybePopulateTargetElr).

    An ISR at or above min.insync.replicas needs no ELR. Below it, every replica that
    was in the ISR or ELR and is not in the new ISR is eligible, except those that
    shut down uncleanly.
    """
    if len(target_isr) >= min_isr:
        return ()
    candidates = (set(state.elr) | set(state.isr)) - set(target_isr) - set(unclean_shutdown)
    return _in_replica_order(candidates, state.replicas)


def change_partition(
    state: PartitionView,
    *,
    target_isr: tuple[int, ...],
    acceptable: Callable[[int], bool],
    min_isr: int,
    unclean_election: bool,
    unclean_shutdown: Collection[int] = (),
) -> ElrChange:
    """The partition after its ISR becomes `target_isr`, electing a leader if the
    current one is no longer valid (see the module docstring for the order).

    `acceptable(r)`: whether replica r may lead now (registered, unfenced, not leaving).
    """
    isr = _in_replica_order(target_isr, state.replicas)
    elr = next_elr(state, isr, min_isr, unclean_shutdown)

    def valid(replica: int) -> bool:
        in_isr = replica in isr or (not isr and replica in elr)
        return replica != NO_LEADER and in_isr and acceptable(replica)

    leader = NO_LEADER
    unclean = False
    if valid(state.leader):
        leader = state.leader
    else:
        leader = next((r for r in state.replicas if valid(r)), NO_LEADER)
        if leader == NO_LEADER and not isr and not elr:
            last_known = state.last_known_elr
            if len(last_known) == 1 and acceptable(last_known[0]):
                leader, unclean = last_known[0], True
        if leader == NO_LEADER and unclean_election:
            leader = next((r for r in state.replicas if acceptable(r)), NO_LEADER)
            unclean = leader != NO_LEADER

    if unclean:
        # The ISR restarts from the new leader; what the others hold may be lost.
        return ElrChange(leader, (leader,), (), (), unclean=True)
    if leader != NO_LEADER and leader in elr:
        # Elected from the ELR: it alone is in sync now.
        isr = (leader,)
        elr = tuple(r for r in elr if r != leader)
    if leader != NO_LEADER:
        last_known_elr: tuple[int, ...] = ()
    elif not isr and state.leader != NO_LEADER:
        # The partition loses its leader with an empty ISR: remember who led last.
        last_known_elr = (state.leader,)
    else:
        last_known_elr = state.last_known_elr
    return ElrChange(leader, isr, elr, last_known_elr)
