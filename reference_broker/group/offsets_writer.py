"""`ReplicatedOffsetsWriter`: the offsets store's writes in a cluster go through replication.

Kafka's GroupMetadataManager appends commits and group records to its
`__consumer_offsets` partition as that partition's leader, with acks=-1: a commit is
acknowledged only once the ISR holds it (high watermark past it) and the flush policy
ran, so it survives the loss of any minority. Leadership moving away mid-write surfaces
as NOT_LEADER_OR_FOLLOWER, which the coordinator turns into NOT_COORDINATOR.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import bugs
from ..errors import BrokerError, ErrorCode
from ..log.partition_log import AppendResult
from .offsets_store import OFFSETS_TOPIC

if TYPE_CHECKING:
    from ..broker import Broker

# Kafka's offsets.commit.timeout.ms.
OFFSETS_COMMIT_TIMEOUT_S = 5.0


class ReplicatedOffsetsWriter:
    """Appends to `__consumer_offsets` partitions this node leads, waiting for the ISR."""

    def __init__(self, broker: Broker, timeout_s: float = OFFSETS_COMMIT_TIMEOUT_S) -> None:
        self._broker = broker
        self._timeout_s = timeout_s

    def append(
        self, partition: int, records: bytes, *, from_coordinator: bool = False
    ) -> AppendResult:
        """Append as the partition's leader in its current leader epoch; raises BrokerError."""
        replica = self._broker.partition(OFFSETS_TOPIC, partition)
        replica.ensure_leader()
        replica.check_enough_replicas(-1)
        return replica.append_records_as_leader(records, from_coordinator=from_coordinator)

    async def complete(self, partition: int, end_offset: int) -> None:
        """Flush per policy, then wait until the high watermark reaches `end_offset`."""
        replica = self._broker.partition(OFFSETS_TOPIC, partition)
        await self._broker.flush_if_due(replica)
        if bugs.enabled("offsets-ack-before-replication"):
            # PLANTED BUG offsets-ack-before-replication: the leader's append is enough.
            return
        code = await replica.wait_for_high_watermark(end_offset, self._timeout_s)
        if code is not ErrorCode.NONE:
            raise BrokerError(
                f"{OFFSETS_TOPIC}-{partition}: the write to offset {end_offset} did not "
                f"complete: {code.name}",
                code,
            )
