"""FindCoordinator for a transactional id (key_type 1).

The coordinator is the leader of the id's `__transaction_state` partition. The topic is
created on first use with transaction.state.log.replication.factor replicas and
transaction.state.log.min.isr; with fewer live brokers than that factor the answer is
COORDINATOR_NOT_AVAILABLE, as Kafka refuses to create it smaller. A standalone node is
every id's coordinator; it opens the partition's log on demand.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..broker import BrokerEndpoint
from ..errors import BrokerError, ErrorCode
from ..txn.config import TXN_STATE_TOPIC

if TYPE_CHECKING:
    from ..broker import Broker


async def transaction_coordinator_of(
    broker: Broker, transactional_id: str
) -> tuple[ErrorCode, str | None, BrokerEndpoint | None]:
    """(error, message, endpoint) of the node coordinating `transactional_id`."""
    index = broker.txn_coordinator.partition_for(transactional_id)
    cluster = broker.cluster
    if cluster is None:
        await broker.ensure_local_txn_partition(index)
        return ErrorCode.NONE, None, broker.endpoint
    config = broker.txn_config
    if TXN_STATE_TOPIC not in cluster:
        live = len(cluster.live_brokers())
        if live < config.replication_factor:
            return (
                ErrorCode.COORDINATOR_NOT_AVAILABLE,
                f"{TXN_STATE_TOPIC} needs {config.replication_factor} live brokers "
                f"(transaction.state.log.replication.factor); {live} are live",
                None,
            )
        try:
            await cluster.create_topic(
                TXN_STATE_TOPIC,
                config.num_partitions,
                config.replication_factor,
                {
                    "cleanup.policy": "delete",
                    "retention.ms": "-1",
                    "min.insync.replicas": str(config.min_isr),
                },
                internal=True,
            )
        except BrokerError as exc:
            if exc.code != ErrorCode.TOPIC_ALREADY_EXISTS:
                return ErrorCode.COORDINATOR_NOT_AVAILABLE, str(exc), None
    leader = cluster.leader_of(TXN_STATE_TOPIC, index)
    found = cluster.endpoint_of(leader) if leader >= 0 else None
    if found is None:
        return ErrorCode.COORDINATOR_NOT_AVAILABLE, "the id's partition has no leader", None
    return ErrorCode.NONE, None, BrokerEndpoint(found.node_id, found.host, found.port)
