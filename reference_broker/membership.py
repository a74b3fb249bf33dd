"""`ClusterMembership`: what makes a broker a member of a KRaft cluster (combined mode).

With `controller.quorum.voters` set, a node is a broker and (when its id is listed) a
voter of the controller quorum. This module assembles the parts, in Kafka's order:

1. the quorum member: the durable metadata log (`__cluster_metadata-0`) and vote
   store, the Raft driver and its transport, the controller service that replays the
   committed log into a `MetadataImage` and, when active, answers controller RPCs;
2. the broker's side: a `ControllerClient` to whichever node is the active
   controller, the `BrokerLifecycle` (registration and heartbeats), the `ClusterView`
   the request handlers read, and the `MetadataPublisher` that turns each new image
   into leader/follower replicas and group coordinator ownership;
3. the group coordinator's writes go through replication (`ReplicatedOffsetsWriter`).

The listeners must already be serving when `run` starts: the voters reach each other
through their controller listeners (`controller.quorum.voters`, or `faultline.voter.<id>`
where the harness interposes a proxy). A node without `controller.quorum.voters` is a
standalone broker: no quorum, no controller listener, and no controller API on any port.
"""

from __future__ import annotations

import trio

from .broker import Broker
from .config import BrokerConfig, Listener
from .controller.client import ControllerClient
from .controller.lifecycle import BrokerLifecycle
from .controller.metadata_log import DurableRaftLog
from .controller.quorum import QuorumDriver, cluster_id_for, raft_config_from
from .controller.quorum_store import DurableQuorumStore
from .controller.service import ControllerService, ServiceConfig
from .controller.transport import RaftTransport
from .env import NodeEnv
from .group.offsets_writer import ReplicatedOffsetsWriter
from .metadata.cluster_view import ClusterView
from .metadata.producer_ids import ProducerIdManager
from .metadata.publisher import MetadataPublisher
from .replication.assignment import AlterPartitionResult
from .txn.log_writer import ReplicatedTxnLogWriter

# Each node allocates producer ids below (node id + 1) << PRODUCER_ID_BITS.
PRODUCER_ID_BITS = 40


class _AlterPartitionThroughController:
    """The replica manager's ISR proposals, sent to the active controller."""

    def __init__(self, client: ControllerClient) -> None:
        self._client = client

    async def alter_partition(
        self,
        topic: str,
        partition: int,
        leader_epoch: int,
        partition_epoch: int,
        new_isr: tuple[int, ...],
    ) -> AlterPartitionResult:
        """Propose `new_isr`; the committed state (or the refusal) as the replicas read it."""
        answer = await self._client.alter_partition(
            topic, partition, leader_epoch, partition_epoch, new_isr
        )
        return AlterPartitionResult(
            error=answer.error_code,
            isr=tuple(answer.isr),
            leader_epoch=answer.leader_epoch,
            partition_epoch=answer.partition_epoch,
        )


class ClusterMembership:
    """The quorum member, controller client, lifecycle and metadata publisher of a node."""

    def __init__(self, env: NodeEnv, config: BrokerConfig, broker: Broker) -> None:
        # A node outside controller.quorum.voters is an observer: it fetches the
        # metadata log from the quorum leader without ever voting or standing (a broker
        # added to a running cluster), and its controller service is never active.
        voters = sorted(config.controller_quorum_voters)
        self.cluster_id = cluster_id_for(voters)
        self.broker = broker
        raft = raft_config_from(config)
        log = DurableRaftLog.open(broker.logs)
        store = DurableQuorumStore.open(env.storage, voters, cluster_id=self.cluster_id)
        transport = RaftTransport(
            env.network,
            config.node_id,
            self.cluster_id,
            config.controller_address,
            raft.request_timeout_ms / 1000,
        )
        self.driver = QuorumDriver(config.node_id, voters, log, store, transport, env.rng, raft)
        self.service = ControllerService(
            self.driver, ServiceConfig.from_broker_config(config), env.rng
        )
        self.client = ControllerClient(
            config.node_id,
            env.network,
            voters,
            config.controller_address,
            service=self.service,
            cluster_id=self.cluster_id,
            request_timeout_ms=raft.request_timeout_ms,
            rng=env.rng,
        )
        self.cluster = ClusterView(config, self.service, self.client)
        self.publisher = MetadataPublisher(
            broker, self.cluster, self.service, registered=self._registered
        )
        self._config = config
        self._env = env
        self.lifecycle: BrokerLifecycle | None = None
        broker.cluster = self.cluster
        broker.topics = self.cluster  # type: ignore[assignment]
        broker.quorum_endpoint = self.driver
        broker.controller_service = self.service
        broker.controller_client = self.client
        broker.coordinator.use_writer(ReplicatedOffsetsWriter(broker))
        broker.txn_coordinator.use_writer(ReplicatedTxnLogWriter(broker))
        broker.replicas.alter_partition = _AlterPartitionThroughController(self.client)
        broker.producer_ids = ProducerIdManager(
            broker.store, base=config.node_id << PRODUCER_ID_BITS
        )

    def _registered(self) -> bool:
        """Whether the replayed image holds this incarnation's registration."""
        lifecycle = self.lifecycle
        if lifecycle is None:
            return False
        registration = self.service.image.brokers.get(self._config.node_id)
        return registration is not None and registration.incarnation_id == str(
            lifecycle.incarnation_id
        )

    async def run(
        self, advertised: Listener, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run the quorum, register and heartbeat as `advertised`, publish images."""
        self.lifecycle = BrokerLifecycle(
            self.client,
            host=advertised.host,
            port=advertised.port,
            heartbeat_interval_ms=self._config.broker_heartbeat_interval_ms,
            metadata_offset=lambda: self.driver.applied_offset,
            rng=self._env.rng,
            previous_broker_epoch=self.broker.previous_broker_epoch,
        )
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(self.service.run)
                await nursery.start(self.publisher.run)
                await nursery.start(self.lifecycle.run)
                task_status.started()
        finally:
            with trio.CancelScope(shield=True):
                await self.client.aclose()
                await self.driver.transport.aclose()
