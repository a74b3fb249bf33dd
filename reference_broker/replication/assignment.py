"""What the controller decides about a partition, and how a leader asks it to change the ISR.

`PartitionAssignment` is one partition's state as the metadata log says (Kafka's
PartitionRegistration): replicas, ISR, leader, leader epoch and partition epoch. The
replica manager turns a set of them into leaders and followers.

A leader never changes its ISR on its own: it proposes a new ISR to the controller
(Kafka's AlterPartition, KIP-497) through an `AlterPartitionSender` and applies what
the controller committed (`AlterPartitionResult`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

NO_LEADER = -1


@dataclass(frozen=True)
class PartitionAssignment:
    """One partition's replicas, ISR and leader, versioned by its epochs."""

    topic: str
    partition: int
    replicas: tuple[int, ...]
    isr: tuple[int, ...]
    leader: int
    leader_epoch: int
    partition_epoch: int

    @property
    def key(self) -> tuple[str, int]:
        """(topic, partition), the key partitions are stored under."""
        return (self.topic, self.partition)


@dataclass(frozen=True)
class AlterPartitionResult:
    """The controller's answer to an AlterPartition.

    `error` is a Kafka error code (0 = committed). On success `isr`, `leader_epoch` and
    `partition_epoch` are the partition's state after the change, as committed.
    """

    error: int
    isr: tuple[int, ...] = ()
    leader_epoch: int = -1
    partition_epoch: int = -1


class AlterPartitionSender(Protocol):
    """Sends a leader's ISR proposal to the active controller and returns its answer."""

    async def alter_partition(
        self,
        topic: str,
        partition: int,
        leader_epoch: int,
        partition_epoch: int,
        new_isr: tuple[int, ...],
    ) -> AlterPartitionResult:
        """Propose `new_isr` for the partition at these epochs; the committed outcome."""
        ...
