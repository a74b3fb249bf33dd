"""The Broker: one node's logs, partitions, topics, group and transaction coordinators
and periodic tasks.

Everything the request handlers act on hangs off a `Broker`. It is opened from a
`NodeEnv` (storage, clock, rng) and a `BrokerConfig`; `run` owns the background
work (group coordinator timers, the transaction coordinator's markers and timeouts,
the log flusher, retention, the replica manager's fetchers and ISR checks) in its own
nursery; `close` flushes and closes every log.
The network side lives in `server.py`.

Two modes:

- standalone (no `controller.quorum.voters`): topics live in the node's own
  `TopicRegistry`; every partition is a single replica led by this node in leader
  epoch 0, its high watermark the log end after a restart;
- cluster: the metadata image is the truth. `cluster` (the image's view, set by the
  node assembly) serves topic changes, and `replicas.apply` makes this node leader
  or follower of each partition it hosts; logs found on disk wait for that.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import trio

from .clean_shutdown import NO_PREVIOUS_EPOCH, mark_clean_shutdown, take_previous_broker_epoch
from .config import BrokerConfig, Listener
from .controller.quorum import cluster_id_for
from .env import NodeEnv
from .errors import (
    BrokerError,
    ErrorCode,
    KafkaStorageError,
    NotLeaderOrFollowerError,
    UnknownTopicOrPartitionError,
)
from .group.config import GroupConfig
from .group.coordinator import GroupCoordinator
from .group.offsets_store import OFFSETS_LOG_CONFIG, OFFSETS_TOPIC
from .log.config import LogConfig
from .log.log_manager import LogManager, partition_dirs
from .log.partition_log import PartitionLog
from .metadata import (
    INTERNAL_TOPICS,
    InvalidTopicError,
    MetadataStore,
    ProducerIdManager,
    TopicExistsError,
    TopicRecord,
    TopicRegistry,
    validate_topic_name,
)
from .replication.manager import ReplicaManager
from .replication.partition import HighWatermarkSignal, Partition
from .txn.config import TXN_STATE_TOPIC, TxnConfig
from .txn.coordinator import TransactionCoordinator
from .txn.log_writer import LocalTxnLogWriter
from .txn.markers import TxnMarkerChannel

if TYPE_CHECKING:
    from .controller.client import ControllerClient
    from .controller.service import ControllerService
    from .controller.transport import QuorumEndpoint
    from .metadata.cluster_view import ClusterView

logger = logging.getLogger("faultline.broker")

# With no flush scheduler interval configured, how often the flusher looks for new flush.ms.
_IDLE_FLUSH_CHECK_S = 1.0


class InvalidPartitionsError(BrokerError):
    """A topic must have at least one partition."""

    code = ErrorCode.INVALID_PARTITIONS


class InvalidReplicationFactorError(BrokerError):
    """A replication factor below 1 or above the number of brokers."""

    code = ErrorCode.INVALID_REPLICATION_FACTOR


class InvalidConfigError(BrokerError):
    """A topic config name or value the log layer rejects."""

    code = ErrorCode.INVALID_CONFIG


class PolicyViolationError(BrokerError):
    """A request the broker's limits refuse (Kafka's CreateTopicPolicy answer)."""

    code = ErrorCode.POLICY_VIOLATION


def storage_failure_advice(exc: OSError) -> str:
    """What an OSError from creating files means and what the operator should change."""
    if exc.errno in (errno.EMFILE, errno.ENFILE):
        which = "process" if exc.errno == errno.EMFILE else "system"
        return (
            f"the {which} is out of file descriptors ({errno.errorcode[exc.errno]}); every "
            "partition keeps about four files open: raise the broker's open-file limit "
            "(ulimit -n / RLIMIT_NOFILE, or fs.file-max for ENFILE) or lower "
            "max.broker.partitions"
        )
    return f"storage error: {exc}"


@dataclass(frozen=True)
class BrokerEndpoint:
    """A broker as clients see it in Metadata and FindCoordinator."""

    node_id: int
    host: str
    port: int


class Broker:
    """A single Kafka-style node. Build it with `Broker.open`, then `run` it and `close` it."""

    def __init__(
        self,
        env: NodeEnv,
        config: BrokerConfig,
        store: MetadataStore,
        logs: LogManager,
        coordinator: GroupCoordinator,
    ) -> None:
        self.env = env
        self.config = config
        self.node_id = config.node_id
        self.store = store
        self.topics = TopicRegistry(store, env.rng)
        self.producer_ids = ProducerIdManager(store)
        self.logs = logs
        self.coordinator = coordinator
        self.hw_signal = HighWatermarkSignal()
        self.partitions: dict[tuple[str, int], Partition] = {}
        # Set by the server once the listeners are bound (port 0 becomes a real port).
        self.endpoint = BrokerEndpoint(
            config.node_id, config.inter_broker_listener.host, config.inter_broker_listener.port
        )
        self._topic_lock = trio.Lock()
        # Cluster mode (set by serve_broker): the metadata image's view and the quorum.
        self.cluster: ClusterView | None = None
        self.quorum_endpoint: QuorumEndpoint | None = None
        self.controller_service: ControllerService | None = None
        self.controller_client: ControllerClient | None = None
        # The broker epoch of this node's last clean shutdown, -1 if it crashed (KIP-966).
        self.previous_broker_epoch = NO_PREVIOUS_EPOCH
        self.replicas = ReplicaManager(
            node_id=config.node_id,
            network=env.network,
            clock=env.clock,
            logs=logs,
            partitions=self.partitions,
            signal=self.hw_signal,
            config=config,
            log_config_of=self.log_config_of,
        )
        # Transactions: a coordinator for the `__transaction_state` partitions led here.
        self.txn_config = TxnConfig.from_properties(config.properties)
        self.txn_markers = TxnMarkerChannel(self)
        self.txn_coordinator = TransactionCoordinator(
            self.txn_config,
            env.clock,
            LocalTxnLogWriter(logs, env.clock),
            self.txn_markers,
            lambda: self.producer_ids.next_id(),
        )

    @property
    def cluster_id(self) -> str:
        """This cluster's id: a standalone node's is created with its data dir; every node
        of a KRaft cluster derives the same one from `controller.quorum.voters` (clients
        refuse brokers that report different ids as members of different clusters)."""
        if self.config.cluster_mode:
            return cluster_id_for(self.config.controller_quorum_voters)
        return self.store.state.cluster_id

    @classmethod
    async def open(cls, env: NodeEnv, config: BrokerConfig) -> Broker:
        """Open (or create) the node's metadata and logs, and load the group coordinator."""
        # Taken first: whatever happens from here, a crash must not find it again.
        previous_broker_epoch = await take_previous_broker_epoch(env.storage)
        store = await MetadataStore.open(
            env.storage, env.rng, config.node_id, existing_logs=partition_dirs(env.storage)
        )
        logs = LogManager.open(env.storage, env.clock, config.log)
        for repaired in logs.repaired():
            # Make the repairs (rewritten segments, bytes kept aside) durable before serving.
            await repaired.flush()
        # Offset commits follow the broker's fsync policy like any other log.
        offsets_log = replace(
            OFFSETS_LOG_CONFIG,
            flush_messages=config.log.flush_messages,
            flush_ms=config.log.flush_ms,
        )
        coordinator = GroupCoordinator(
            logs, env.clock, group_config(config), env.rng, offsets_log_config=offsets_log
        )
        broker = cls(env, config, store, logs, coordinator)
        broker.previous_broker_epoch = previous_broker_epoch
        await broker._load_partitions()
        if not config.cluster_mode:
            # In a cluster the coordinator loads a partition's groups only once the metadata
            # makes this node its leader; loading all of them here would create local logs
            # and move their high watermarks as if this node were their only replica.
            await coordinator.load()
            for log in list(logs.all()):
                if log.topic == TXN_STATE_TOPIC:
                    await broker.ensure_local_txn_partition(log.partition)
        return broker

    async def ensure_local_txn_partition(self, index: int) -> None:
        """A standalone node: create (if need be) and coordinate `__transaction_state-<index>`."""
        if self.config.cluster_mode or index in self.txn_coordinator.owned_partitions():
            return
        log = self.logs.get(TXN_STATE_TOPIC, index)
        if log is None:
            log = self.logs.create(TXN_STATE_TOPIC, index, self.log_config_of(TXN_STATE_TOPIC))
        # One node is the whole ISR: everything in the log is committed.
        log.update_high_watermark(log.log_end_offset)
        await self.txn_coordinator.become_coordinator(index, log, 0)

    def advertise(self, bound: Listener) -> None:
        """Set the endpoint clients are told about, given the inter-broker listener's bound
        address: its advertised.listeners entry, else the bound address."""
        listener = self.config.advertised_for(self.config.inter_broker_listener_name, bound)
        self.endpoint = BrokerEndpoint(self.node_id, listener.host, listener.port)

    async def _load_partitions(self) -> None:
        if self.config.cluster_mode:
            # The metadata image decides what this node hosts (ReplicaManager.apply);
            # until it arrives, logs on disk are kept as they are.
            return
        # The registry is the truth: create logs it names that are missing (a crash
        # between registering a topic and creating its logs) and delete logs of topics it
        # records as deleted (a crash in the middle of a deletion). A log of a topic it
        # does not know at all stays on disk, unserved: deleting data on a guess is
        # worse than keeping a stray directory (Kafka deletes only on a deletion record).
        for record in self.topics:
            await self._open_topic(record)
        for log in list(self.logs.all()):
            if log.topic in self.topics or log.topic in INTERNAL_TOPICS:
                continue
            if self.topics.was_deleted(log.topic):
                logger.warning(
                    "deleting log %s of topic %s, whose deletion the metadata records",
                    log.directory,
                    log.topic,
                )
                self.logs.delete(log.topic, log.partition)
            else:
                logger.warning(
                    "keeping log %s of topic %s, which the metadata does not know: not "
                    "served; restore the metadata that names it, or move the directory away",
                    log.directory,
                    log.topic,
                )

    def topic_log_config(self, record: TopicRecord) -> LogConfig:
        """A topic's log config: the broker's log.* defaults overridden by the topic's configs."""
        return LogConfig.from_kafka(record.configs, base=self.config.log)

    def log_config_of(self, topic: str) -> LogConfig:
        """The LogConfig for a partition of `topic` created now (cluster mode: from the image)."""
        if topic == OFFSETS_TOPIC:
            # Offset commits follow the broker's fsync policy like any other log.
            return replace(
                OFFSETS_LOG_CONFIG,
                flush_messages=self.config.log.flush_messages,
                flush_ms=self.config.log.flush_ms,
            )
        if topic == TXN_STATE_TOPIC:
            return replace(
                OFFSETS_LOG_CONFIG,
                flush_messages=self.config.log.flush_messages,
                flush_ms=self.config.log.flush_ms,
                min_insync_replicas=self.txn_config.min_isr,
            )
        record = self.cluster.get(topic) if self.cluster is not None else self.topics.get(topic)
        if record is None:
            return self.config.log
        return self.topic_log_config(record)

    def has_topic(self, name: str) -> bool:
        """Whether the topic exists (cluster mode: in this node's metadata)."""
        if self.cluster is not None:
            return name in self.cluster
        if self.config.cluster_mode:
            return self.replicas.knows_topic(name)
        return name in self.topics

    def _check_topic_admin(self, name: str) -> None:
        # Cluster mode before the node assembly set `cluster`: no controller to ask, and
        # the local registry must not create partitions the metadata does not know.
        if self.config.cluster_mode:
            raise BrokerError(
                f"broker {self.node_id} cannot change topic {name!r}: no controller view yet",
                ErrorCode.NOT_CONTROLLER,
            )

    async def _open_topic(self, record: TopicRecord) -> None:
        log_config = self.topic_log_config(record)
        await self._create_logs(record.name, record.partitions, log_config)
        self._install_partitions(record.name, record.partitions, log_config)

    async def _create_logs(self, name: str, partitions: int, log_config: LogConfig) -> None:
        """Create the missing logs of partitions 0..partitions-1, yielding between them.

        Each log is a directory and a handful of files; thousands of them take seconds,
        which must not stall every other connection's requests: a checkpoint after each
        log lets the event loop serve them. On failure the logs created here are removed
        again and the OSError propagates.
        """
        created: list[int] = []
        try:
            for index in range(partitions):
                if self.logs.get(name, index) is None:
                    self.logs.create(name, index, log_config)
                    created.append(index)
                await trio.lowlevel.checkpoint()
        except BaseException:
            for index in created:
                try:
                    self.logs.delete(name, index)
                except OSError:
                    logger.exception("could not remove the new log %s-%d again", name, index)
            raise

    def _install_partitions(self, name: str, partitions: int, log_config: LogConfig) -> None:
        for index in range(partitions):
            log = self.logs.get(name, index)
            assert log is not None, f"{name}-{index} has no log"
            self.partitions[(name, index)] = Partition.standalone(
                name,
                index,
                log,
                local_id=self.node_id,
                signal=self.hw_signal,
                min_insync_replicas=log_config.min_insync_replicas,
                now=trio.current_time(),
            )

    def check_partition_limit(self, name: str, partitions: int) -> None:
        """Raise POLICY_VIOLATION if `partitions` more would exceed max.broker.partitions."""
        hosted = self.topics.partition_count
        limit = self.config.max_broker_partitions
        if hosted + partitions > limit:
            raise PolicyViolationError(
                f"topic {name!r} with {partitions} partitions would bring this broker to "
                f"{hosted + partitions} partitions, above max.broker.partitions={limit}"
            )

    def partition(self, topic: str, index: int) -> Partition:
        """The partition `topic`-`index` hosted here.

        Raises NOT_LEADER_OR_FOLLOWER for a partition the metadata knows but places on
        other brokers (the client's metadata is stale), else UNKNOWN_TOPIC_OR_PARTITION.
        """
        partition = self.partitions.get((topic, index))
        if partition is None:
            if self.replicas.knows(topic, index):
                raise NotLeaderOrFollowerError(
                    f"broker {self.node_id} is not a replica of {topic}-{index}"
                )
            raise UnknownTopicOrPartitionError(f"this broker does not host {topic}-{index}")
        return partition

    def log_of(self, partition: Partition) -> PartitionLog:
        """The log behind a partition, typed as the log layer's class."""
        return partition.log

    async def create_topic(
        self,
        name: str,
        num_partitions: int = -1,
        replication_factor: int = -1,
        configs: Mapping[str, str] | None = None,
        *,
        validate_only: bool = False,
    ) -> TopicRecord | None:
        """Validate and (unless validate_only) create a topic and its partitions' logs.

        -1 means the broker default (num.partitions, default.replication.factor), as in
        CreateTopics. Raises BrokerError subclasses with the Kafka error to report.
        In cluster mode the active controller decides (through `cluster`).
        """
        if self.cluster is not None:
            return await self.cluster.create_topic(
                name, num_partitions, replication_factor, configs, validate_only=validate_only
            )
        self._check_topic_admin(name)
        validate_topic_name(name)
        if name in INTERNAL_TOPICS:
            raise InvalidTopicError(f"{name} is an internal topic and cannot be created")
        partitions = self.config.num_partitions if num_partitions == -1 else num_partitions
        factor = (
            self.config.default_replication_factor
            if replication_factor == -1
            else replication_factor
        )
        if partitions < 1:
            raise InvalidPartitionsError(
                f"number of partitions must be at least 1, not {partitions}"
            )
        per_request = self.config.create_topics_max_partitions_per_request
        if partitions > per_request:
            raise PolicyViolationError(
                f"topic {name!r} asks for {partitions} partitions, above "
                f"create.topics.max.partitions.per.request={per_request}"
            )
        if factor < 1:
            raise InvalidReplicationFactorError(
                f"replication factor must be at least 1, not {factor}"
            )
        if factor > 1:
            raise InvalidReplicationFactorError(
                f"replication factor {factor} is larger than the 1 available broker"
            )
        topic_configs = {k: v for k, v in (configs or {}).items()}
        try:
            log_config = LogConfig.from_kafka(topic_configs, base=self.config.log)
        except ValueError as exc:
            raise InvalidConfigError(str(exc)) from None
        async with self._topic_lock:
            if name in self.topics:
                raise TopicExistsError(f"topic {name!r} already exists")
            self.check_partition_limit(name, partitions)
            if validate_only:
                return None
            # Logs first, then the registry: a crash in between leaves logs of a topic the
            # registry does not know, which the next start deletes; a failure (EMFILE)
            # removes them and registers nothing, so no topic is ever half created.
            try:
                await self._create_logs(name, partitions, log_config)
                try:
                    record = await self.topics.create(name, partitions, factor, topic_configs)
                except BaseException:
                    for index in range(partitions):
                        self.logs.delete(name, index)
                    raise
            except OSError as exc:
                advice = storage_failure_advice(exc)
                logger.error(
                    "could not create topic %s with %d partitions; nothing was created: %s",
                    name,
                    partitions,
                    advice,
                )
                raise KafkaStorageError(
                    f"could not create topic {name!r} ({partitions} partitions): {advice}"
                ) from exc
            self._install_partitions(name, partitions, log_config)
        logger.info("created topic %s with %d partitions", name, partitions)
        return record

    async def ensure_topic(self, name: str) -> TopicRecord | None:
        """The topic, auto-created with broker defaults if auto.create.topics.enable; else None."""
        if self.cluster is not None:
            return await self.cluster.ensure_topic(name)
        if self.config.cluster_mode:
            return None
        record = self.topics.get(name)
        if record is not None or not self.config.auto_create_topics_enable:
            return record
        try:
            return await self.create_topic(name)
        except BrokerError as exc:
            if exc.code == ErrorCode.TOPIC_ALREADY_EXISTS:
                return self.topics.get(name)
            raise

    async def delete_topic(self, name: str) -> None:
        """Delete a topic durably, then its logs; raises UNKNOWN_TOPIC_OR_PARTITION.

        In cluster mode the active controller deletes it; the logs go when the image
        without it is applied.
        """
        if self.cluster is not None:
            await self.cluster.delete_topic(name)
            return
        self._check_topic_admin(name)
        async with self._topic_lock:
            record = await self.topics.delete(name)
            if record is None:
                raise UnknownTopicOrPartitionError(f"topic {name!r} does not exist")
            for index in range(record.partitions):
                self.partitions.pop((name, index), None)
                self.logs.delete(name, index)
        # Wake long-polling fetches so they notice the partitions are gone.
        self.hw_signal.fire()
        logger.info("deleted topic %s", name)

    async def flush_if_due(self, partition: Partition) -> None:
        """Apply the flush policy after an append (flush.messages / flush.ms)."""
        log = self.log_of(partition)
        if log.flush_due(self.env.clock.now_ms()):
            await log.flush()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the background tasks until cancelled: coordinator timers, flusher, retention,
        and in cluster mode the replica manager (fetchers, ISR checks)."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self.coordinator.run)
            await nursery.start(self.txn_coordinator.run)
            if self.config.cluster_mode:
                # A standalone node has no followers to fetch for or ISR to check.
                await nursery.start(self.replicas.run)
            nursery.start_soon(self._flusher)
            nursery.start_soon(self._retention)
            task_status.started()

    def _flush_check_interval_s(self) -> float:
        if self.config.log_flush_scheduler_interval_ms is not None:
            return self.config.log_flush_scheduler_interval_ms / 1000
        flush_ms = [
            log.config.flush_ms for log in self.logs.all() if log.config.flush_ms is not None
        ]
        if not flush_ms:
            return _IDLE_FLUSH_CHECK_S
        return max(min(flush_ms), 1) / 1000

    async def _flusher(self) -> None:
        # Kafka's LogManager flush scheduler: flush every log whose flush.ms is due.
        while True:
            await trio.sleep(self._flush_check_interval_s())
            now = self.env.clock.now_ms()
            for log in list(self.logs.all()):
                if log.flush_due(now):
                    await log.flush()

    async def _retention(self) -> None:
        interval = self.config.log_retention_check_interval_ms / 1000
        while True:
            await trio.sleep(interval)
            now = self.env.clock.now_ms()
            for log in list(self.logs.all()):
                if log.topic in INTERNAL_TOPICS:
                    continue
                try:
                    deleted = log.enforce_retention(now)
                except (BrokerError, OSError):
                    # One partition's failure must not stop retention (or the broker).
                    logger.exception("retention failed for %s-%d", log.topic, log.partition)
                    continue
                if deleted:
                    logger.info(
                        "retention deleted %s segments of %s-%d", deleted, log.topic, log.partition
                    )

    async def close(self) -> None:
        """Flush and close every log (clean shutdown), then mark the shutdown clean with
        this node's broker epoch, if it registered one."""
        await self.txn_markers.aclose()
        await self.logs.close()
        client = self.controller_client
        if client is not None and client.broker_epoch >= 0:
            await mark_clean_shutdown(self.env.storage, client.broker_epoch)
            logger.info(
                "broker %d shut down cleanly with broker epoch %d",
                self.node_id,
                client.broker_epoch,
            )


def group_config(config: BrokerConfig) -> GroupConfig:
    """The group coordinator's settings from the broker's group.* and offsets.* names."""
    return GroupConfig(
        min_session_timeout_ms=config.group_min_session_timeout_ms,
        max_session_timeout_ms=config.group_max_session_timeout_ms,
        initial_rebalance_delay_ms=config.group_initial_rebalance_delay_ms,
        max_size=config.group_max_size,
        offsets_topic_num_partitions=config.offsets_topic_num_partitions,
        offset_metadata_max_bytes=config.offset_metadata_max_bytes,
    )
