"""`MetadataPublisher`: every new metadata image becomes the broker's state.

Kafka's BrokerMetadataPublisher: when the node has replayed new committed metadata,
the replica manager becomes leader or follower of each partition assigned to this
node (and drops those it no longer hosts), then the group coordinator takes over (or
gives up) the groups of each `__consumer_offsets` partition whose leadership moved.
One task, one image at a time, so the broker never applies two images at once.

Nothing is published before the image holds this incarnation's own registration
(`registered`), as Kafka's broker publishes nothing before its initial catch-up,
which needs a registration: until then the image may still name this node leader
for its previous incarnation, whose log this one may not have (a power cut loses
the unflushed tail). Leading from it would let the followers truncate to the loss.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from ..group.offsets_store import OFFSETS_TOPIC
from ..txn.config import TXN_STATE_TOPIC

if TYPE_CHECKING:
    from ..broker import Broker
    from ..replication.assignment import PartitionAssignment
    from .cluster_view import ClusterView, ImageSource

logger = logging.getLogger("faultline.broker.metadata")


class MetadataPublisher:
    """Applies the node's replayed metadata image to its replicas and coordinator."""

    def __init__(
        self,
        broker: Broker,
        cluster: ClusterView,
        source: ImageSource,
        registered: Callable[[], bool] | None = None,
    ) -> None:
        self._broker = broker
        self._cluster = cluster
        self._source = source
        self._registered = registered
        self.published_version = -1

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Publish the current image, then every later one, until cancelled."""
        task_status.started()
        while True:
            version = self._source.image_version
            ready = self._registered is None or self._registered()
            if version != self.published_version and ready:
                await self.publish()
                self.published_version = version
            await self._source.wait_image_change(version)

    async def publish(self) -> None:
        """Apply the current image once."""
        assignments = list(self._cluster.assignments())
        await self._broker.replicas.apply(
            assignments,
            self._cluster.endpoints(),
            isr_eligible=[b.node_id for b in self._cluster.live_brokers()],
        )
        coordinator = self._broker.coordinator
        owned = coordinator.owned_partitions()
        for assignment in assignments:
            if assignment.topic != OFFSETS_TOPIC:
                continue
            index = assignment.partition
            leads = assignment.leader == self._broker.node_id
            if leads and index not in owned:
                replica = self._broker.partitions.get((OFFSETS_TOPIC, index))
                if replica is None or not replica.is_leader:
                    continue
                logger.info("node %d coordinates %s-%d", self._broker.node_id, OFFSETS_TOPIC, index)
                await coordinator.become_coordinator(index, self._broker.log_of(replica))
            elif not leads and index in owned:
                logger.info("node %d resigns %s-%d", self._broker.node_id, OFFSETS_TOPIC, index)
                coordinator.resign_coordinator(index)
        await self._publish_transaction_coordinator(assignments)

    async def _publish_transaction_coordinator(
        self, assignments: list[PartitionAssignment]
    ) -> None:
        """Take over (or give up) the transactional ids of `__transaction_state` partitions
        whose leadership moved; a new leader epoch is a new coordinator epoch."""
        txn = self._broker.txn_coordinator
        owned = txn.owned_partitions()
        for assignment in assignments:
            if assignment.topic != TXN_STATE_TOPIC:
                continue
            index = assignment.partition
            leads = assignment.leader == self._broker.node_id
            replica = self._broker.partitions.get((TXN_STATE_TOPIC, index))
            if leads and replica is not None and replica.is_leader:
                if index in owned and txn.coordinator_epoch(index) == replica.leader_epoch:
                    continue
                logger.info(
                    "node %d coordinates %s-%d (epoch %d)",
                    self._broker.node_id,
                    TXN_STATE_TOPIC,
                    index,
                    replica.leader_epoch,
                )
                await txn.become_coordinator(
                    index, self._broker.log_of(replica), replica.leader_epoch
                )
            elif index in owned and not leads:
                logger.info("node %d resigns %s-%d", self._broker.node_id, TXN_STATE_TOPIC, index)
                txn.resign_coordinator(index)
