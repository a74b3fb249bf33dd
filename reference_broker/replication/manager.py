"""`ReplicaManager`: a node's partitions as the metadata assigns them (Kafka's ReplicaManager).

`apply` takes the whole set of partition assignments from a metadata image and makes
this node what each one says: it creates missing logs, becomes leader or follower
when a leader epoch changed (followers' ISR and epoch updates are applied in place),
stops and deletes the replicas it no longer hosts, and moves followed partitions to
the fetcher of their current leader — one `ReplicaFetcher` per source broker.

`run` owns everything that runs on its own, in one nursery: the fetchers, the ISR
expiration check (every replica.lag.time.max.ms / 2, as Kafka), the AlterPartition
senders (one proposal in flight per partition, retried while the controller is
unreachable) and the periodic high-watermark checkpoint.

Damage repaired at start-up (see `PartitionLog`'s recovery) can leave an offset gap
below a replica's log end. Kafka followers fetch from their log end and truncate only
where their log diverged, so such a gap would never be refilled. The first time a
replica with a repaired log becomes a follower of a known leader, it therefore
truncates to the first missing offset and refetches everything from there (the
leader's copy wins, as after divergence). A replica that becomes leader, or the only
replica, has nothing to refetch from: it keeps the gap (reads skip it as after
compaction) and warns.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass

import trio

from ..config import BrokerConfig, Listener
from ..env import Clock, Network
from ..errors import BrokerError
from ..log.config import LogConfig
from ..log.log_manager import LogManager
from .assignment import NO_LEADER, AlterPartitionSender, PartitionAssignment
from .fetcher import PartitionKey, ReplicaFetcher
from .isr import IsrOutcome, IsrProposal
from .partition import HighWatermarkSignal, Partition

logger = logging.getLogger("faultline.broker.replication")

# The Raft metadata log lives beside the partition logs but is never a replica here.
METADATA_TOPIC = "__cluster_metadata"
# Kafka's replica.high.watermark.checkpoint.interval.ms.
HW_CHECKPOINT_INTERVAL_S = 5.0
# Kafka's AlterPartitionManager retries after this long when the controller is unreachable.
ALTER_PARTITION_RETRY_S = 0.1

LogConfigOf = Callable[[str], LogConfig]


@dataclass
class _RunningFetcher:
    """A fetcher and whether its task was started in the manager's nursery."""

    fetcher: ReplicaFetcher
    started: bool = False


class ReplicaManager:
    """Leaders, followers and fetchers of one node. `alter_partition` is wired by the node."""

    def __init__(
        self,
        *,
        node_id: int,
        network: Network,
        clock: Clock,
        logs: LogManager,
        partitions: dict[PartitionKey, Partition],
        signal: HighWatermarkSignal,
        config: BrokerConfig,
        log_config_of: LogConfigOf,
        alter_partition: AlterPartitionSender | None = None,
    ) -> None:
        self.node_id = node_id
        self.alter_partition = alter_partition
        self._network = network
        self._clock = clock
        self._logs = logs
        self._partitions = partitions
        self._signal = signal
        self._config = config
        self._log_config_of = log_config_of
        self._lag_s = config.replica_lag_time_max_ms / 1000
        # Partitions this manager created (standalone partitions are the broker's).
        self._managed: set[PartitionKey] = set()
        # Every partition named by the last metadata applied, hosted here or not.
        self._known: set[PartitionKey] = set()
        self._endpoints: dict[int, Listener] = {}
        # Brokers that may join an ISR, per the last metadata applied (None: all may).
        self._isr_eligible: frozenset[int] | None = None
        self._fetchers: dict[int, _RunningFetcher] = {}
        self._proposals: list[tuple[Partition, IsrProposal]] = []
        self._proposed = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._apply_lock = trio.Lock()
        self.applied = 0
        """How many metadata updates were applied (for tests and diagnostics)."""

    # -- what the node knows ----------------------------------------------------------------

    def knows(self, topic: str, partition: int) -> bool:
        """Whether the last metadata applied names this partition (hosted here or not)."""
        return (topic, partition) in self._known

    def knows_topic(self, topic: str) -> bool:
        """Whether the last metadata applied names a partition of `topic`."""
        return any(t == topic for t, _ in self._known)

    def fetcher_partitions(self) -> dict[int, set[PartitionKey]]:
        """Source broker -> the partitions fetched from it."""
        return {source: r.fetcher.partitions for source, r in self._fetchers.items()}

    # -- applying metadata ----------------------------------------------------------------

    async def apply(
        self,
        assignments: Iterable[PartitionAssignment],
        endpoints: Mapping[int, Listener],
        log_config_of: LogConfigOf | None = None,
        isr_eligible: Collection[int] | None = None,
    ) -> None:
        """Make this node leader, follower or nothing of each partition, as `assignments` say.

        `assignments` is the complete set (a partition missing from it is stopped and its
        log deleted); `endpoints` is how to dial each broker; `log_config_of(topic)` gives
        the LogConfig for logs created now (default: the one given at construction);
        `isr_eligible` the brokers a leader may propose for an ISR (registered and
        unfenced; None: any replica).
        """
        config_of = log_config_of or self._log_config_of
        async with self._apply_lock:
            now = trio.current_time()
            self._endpoints = dict(endpoints)
            self._isr_eligible = None if isr_eligible is None else frozenset(isr_eligible)
            hosted: dict[PartitionKey, PartitionAssignment] = {}
            known: set[PartitionKey] = set()
            for assignment in assignments:
                known.add(assignment.key)
                if self.node_id in assignment.replicas:
                    hosted[assignment.key] = assignment
            self._known = known
            for key in sorted(self._managed - set(hosted)):
                self._stop_replica(key)
            configs: dict[str, LogConfig] = {}
            for key, assignment in sorted(hosted.items()):
                if assignment.topic not in configs:
                    configs[assignment.topic] = config_of(assignment.topic)
                created = key not in self._partitions
                self._become(assignment, configs[assignment.topic], now)
                if created:
                    # Creating a log opens and syncs files: thousands of new partitions
                    # must not hold every connection's requests until the last is made.
                    await trio.lowlevel.checkpoint()
            self._reconcile_fetchers()
            self.applied += 1
            self._signal.fire()

    def _become(self, assignment: PartitionAssignment, log_config: LogConfig, now: float) -> None:
        key = assignment.key
        partition = self._partitions.get(key)
        if partition is None:
            log = self._logs.get(*key) or self._logs.create(
                assignment.topic, assignment.partition, log_config
            )
            partition = Partition(
                assignment.topic,
                assignment.partition,
                log,
                local_id=self.node_id,
                signal=self._signal,
                min_insync_replicas=log_config.min_insync_replicas,
                isr_listener=self._on_proposal,
                isr_eligible=self._may_join_isr,
            )
            self._partitions[key] = partition
        self._managed.add(key)
        partition.min_insync_replicas = log_config.min_insync_replicas
        if assignment.leader == self.node_id:
            self._settle_repair(partition, assignment)
            partition.make_leader(assignment, now)
        elif partition.make_follower(assignment):
            self._settle_repair(partition, assignment)
            # A new leader or epoch: fetch from the start of the new state, no backoff.
            for running in self._fetchers.values():
                running.fetcher.remove(key)

    def _settle_repair(self, partition: Partition, assignment: PartitionAssignment) -> None:
        """Refill what recovery cut out of this replica's log, where a leader has it.

        A follower fetches from its log end only, so a gap that recovery left below it
        would never be filled: a follower of a replicated partition truncates to the
        first missing offset instead and refetches everything above it from the leader.
        A leader (or the only replica) has nowhere to refetch from and keeps the gap.
        """
        if assignment.leader == NO_LEADER:
            return  # decide once a leader is known
        start = partition.log.take_refill_offset()
        if start is None:
            return
        others = [r for r in assignment.replicas if r != self.node_id]
        if assignment.leader == self.node_id or not others:
            logger.warning(
                "%s-%d: node %d leads with offsets from %d lost to damage; no replica "
                "to refetch them from, the gap stays",
                partition.topic,
                partition.index,
                self.node_id,
                start,
            )
            return
        logger.warning(
            "%s-%d: truncating to %d, where recovery found damage, to refetch the rest "
            "from leader %d",
            partition.topic,
            partition.index,
            start,
            assignment.leader,
        )
        partition.truncate_to(start)

    def _stop_replica(self, key: PartitionKey) -> None:
        """No longer a replica (topic deleted or reassigned away): stop and delete the log."""
        if key[0] == METADATA_TOPIC:
            return
        partition = self._partitions.pop(key, None)
        self._managed.discard(key)
        for running in self._fetchers.values():
            running.fetcher.remove(key)
        if partition is not None:
            partition.make_offline()
        self._logs.delete(*key)
        logger.info("node %d no longer hosts %s-%d; log deleted", self.node_id, *key)

    def _reconcile_fetchers(self) -> None:
        """One fetcher per leader we follow something from, at that leader's address."""
        wanted: dict[int, list[Partition]] = {}
        for key in sorted(self._managed):
            partition = self._partitions[key]
            if partition.is_follower and partition.leader_id != NO_LEADER:
                wanted.setdefault(partition.leader_id, []).append(partition)
        for source in list(self._fetchers):
            address = self._endpoints.get(source)
            existing = self._fetchers[source]
            if source not in wanted or address != existing.fetcher.address:
                existing.fetcher.stop()
                del self._fetchers[source]
        for source, partitions in sorted(wanted.items()):
            address = self._endpoints.get(source)
            if address is None:
                logger.warning(
                    "node %d cannot fetch %d partitions from broker %d: no address for it",
                    self.node_id,
                    len(partitions),
                    source,
                )
                continue
            running = self._fetchers.get(source)
            if running is None:
                running = self._fetchers[source] = _RunningFetcher(
                    ReplicaFetcher(
                        node_id=self.node_id,
                        source_id=source,
                        address=address,
                        network=self._network,
                        clock=self._clock,
                        config=self._config,
                    )
                )
            fetcher = running.fetcher
            wanted_keys = {(p.topic, p.index) for p in partitions}
            for key in fetcher.partitions - wanted_keys:
                fetcher.remove(key)
            for partition in partitions:
                if (partition.topic, partition.index) not in fetcher.partitions:
                    fetcher.add(partition)
        self._start_fetchers()

    def _start_fetchers(self) -> None:
        if self._nursery is None:
            return  # `run` starts them
        for running in self._fetchers.values():
            if not running.started:
                running.started = True
                self._nursery.start_soon(running.fetcher.run, name=repr(running.fetcher))

    # -- ISR changes ----------------------------------------------------------------------

    def _may_join_isr(self, broker_id: int) -> bool:
        return self._isr_eligible is None or broker_id in self._isr_eligible

    def _on_proposal(self, partition: Partition, proposal: IsrProposal) -> None:
        self._proposals.append((partition, proposal))
        self._proposed.set()

    async def _send_proposals(self, nursery: trio.Nursery) -> None:
        while True:
            await self._proposed.wait()
            self._proposed = trio.Event()
            proposals, self._proposals = self._proposals, []
            for partition, proposal in proposals:
                nursery.start_soon(self._send_proposal, partition, proposal)

    async def _send_proposal(self, partition: Partition, proposal: IsrProposal) -> None:
        """Send one ISR proposal until the controller answers it or metadata replaces it."""
        while partition.pending_isr_change is proposal:
            sender = self.alter_partition
            outcome = IsrOutcome.RETRY
            if sender is None:
                logger.warning(
                    "node %d has no controller to send the ISR change of %s-%d to",
                    self.node_id,
                    partition.topic,
                    partition.index,
                )
            else:
                try:
                    result = await sender.alter_partition(
                        partition.topic,
                        partition.index,
                        proposal.leader_epoch,
                        proposal.partition_epoch,
                        proposal.isr,
                    )
                except Exception as exc:
                    # An unreachable or failing controller must not take the broker down:
                    # the proposal stays pending and is sent again, as Kafka retries.
                    logger.warning(
                        "AlterPartition for %s-%d failed: %r; retrying",
                        partition.topic,
                        partition.index,
                        exc,
                    )
                else:
                    outcome = partition.complete_isr_change(
                        proposal, result, trio.current_time()
                    )
            if outcome is not IsrOutcome.RETRY:
                return
            await trio.sleep(ALTER_PARTITION_RETRY_S)

    def check_isr(self) -> None:
        """Propose shrinking the ISR of every partition led here that has a lagging follower."""
        now = trio.current_time()
        for partition in list(self._partitions.values()):
            partition.maybe_shrink_isr(now, self._lag_s)

    async def _isr_expiration(self) -> None:
        while True:
            await trio.sleep(self._lag_s / 2)
            self.check_isr()

    async def _checkpoint_high_watermarks(self) -> None:
        while True:
            await trio.sleep(HW_CHECKPOINT_INTERVAL_S)
            for key in sorted(self._managed):
                partition = self._partitions.get(key)
                if partition is None:
                    continue
                try:
                    await partition.log.checkpoint_high_watermark()
                except (BrokerError, OSError) as exc:
                    # A log deleted or taken offline meanwhile; the next round goes on.
                    logger.info("high watermark checkpoint of %s-%d skipped: %s", *key, exc)

    # -- running --------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run fetchers, ISR checks, AlterPartition senders and checkpoints until cancelled."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self._start_fetchers()
                nursery.start_soon(self._send_proposals, nursery)
                nursery.start_soon(self._isr_expiration)
                nursery.start_soon(self._checkpoint_high_watermarks)
                task_status.started()
        finally:
            # The fetchers died with the nursery; a later `apply` starts afresh.
            self._nursery = None
            self._fetchers.clear()
