"""`ControllerService`: the metadata image every quorum member replays, and the active
controller's RPCs (KRaft's QuorumController on top of the Raft client).

Every node runs one. Committed entries arrive from the `QuorumDriver` in order and
are replayed into `image`; `image_version` is the offset just past the last entry
applied (Kafka's metadata offset), and `wait_image_change` wakes readers.

The node whose quorum leadership is *ready* (its LeaderChange record committed, so
every earlier entry is in its image) becomes the active controller: it gives every
unfenced broker a fresh session (`Controller.reset_sessions`) and serves
BrokerRegistration, BrokerHeartbeat, AlterPartition, CreateTopics and DeleteTopics.
Each RPC computes a `Decision` under one lock, proposes its records as one entry (they
commit together or not at all), waits until they are committed and replayed, then
answers. A node that is not active answers NOT_CONTROLLER, and so does an active one
that loses its leadership before the records commit. While active, a timer fences
each broker as soon as its session expires, and (with auto.leader.rebalance.enable)
another moves leadership back to preferred replicas every
leader.imbalance.check.interval.seconds.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import trio

from ..config import BrokerConfig
from ..errors import ErrorCode
from ..log.config import LogConfig
from ..metadata.store import random_uuid
from .metadata import Controller, ControllerConfig, Decision, Errors, MetadataImage
from .quorum import NotCommittedError, QuorumDriver, now_ms
from .raft import Entry, LeaderChange, NotLeader
from .records import RegisterBrokerRecord

logger = logging.getLogger("faultline.broker.controller")


@dataclass(frozen=True)
class ServiceConfig:
    """The controller settings, under Kafka's names where it has them."""

    session_timeout_ms: int = 9000  # broker.session.timeout.ms
    unclean_leader_election: bool = False  # unclean.leader.election.enable (cluster default)
    eligible_leader_replicas: bool = False  # eligible.leader.replicas.version >= 1
    min_insync_replicas: int = 1  # min.insync.replicas (cluster default)
    auto_leader_rebalance: bool = True  # auto.leader.rebalance.enable
    leader_imbalance_check_interval_ms: int = 300_000  # leader.imbalance.check.interval.seconds
    request_timeout_ms: int = 2000  # how long an RPC waits for its records to commit
    max_broker_partitions: int = 10000  # max.broker.partitions: replicas one broker may host

    @classmethod
    def from_broker_config(cls, config: BrokerConfig) -> ServiceConfig:
        """The controller's settings from a broker's config."""
        return cls(
            session_timeout_ms=config.broker_session_timeout_ms,
            unclean_leader_election=config.unclean_leader_election_enable,
            eligible_leader_replicas=config.eligible_leader_replicas_enable,
            min_insync_replicas=config.log.min_insync_replicas,
            auto_leader_rebalance=config.auto_leader_rebalance_enable,
            leader_imbalance_check_interval_ms=config.leader_imbalance_check_interval_seconds
            * 1000,
            request_timeout_ms=config.controller_quorum_request_timeout_ms,
            max_broker_partitions=config.max_broker_partitions,
        )


@dataclass(frozen=True, slots=True)
class RegistrationResult:
    """BrokerRegistration's answer: the broker's new epoch, or an error."""

    error_code: int
    broker_epoch: int = -1


@dataclass(frozen=True, slots=True)
class HeartbeatResult:
    """BrokerHeartbeat's answer."""

    error_code: int
    is_caught_up: bool = False
    is_fenced: bool = True
    should_shutdown: bool = False


@dataclass(frozen=True, slots=True)
class AlterPartitionResult:
    """AlterPartition's answer for one partition: the state now committed, or an error
    (with the controller's current state when it has one)."""

    error_code: int
    leader: int = -1
    leader_epoch: int = -1
    partition_epoch: int = -1
    isr: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class TopicResult:
    """CreateTopics' or DeleteTopics' answer for one topic."""

    error_code: int
    topic_id: str | None = None
    message: str | None = None


@dataclass(frozen=True, slots=True)
class ReassignmentResult:
    """AlterPartitionReassignments' (or UnregisterBroker's) answer for one item."""

    error_code: int
    message: str | None = None


@dataclass(frozen=True, slots=True)
class OngoingReassignment:
    """ListPartitionReassignments' entry for one partition being reassigned."""

    topic: str
    partition: int
    replicas: tuple[int, ...]
    adding_replicas: tuple[int, ...]
    removing_replicas: tuple[int, ...]


_Decide = Callable[[Controller, int], Decision]


class ControllerService:
    """The replayed image on every node, and the RPCs of the active controller."""

    def __init__(self, driver: QuorumDriver, config: ServiceConfig, rng: random.Random) -> None:
        self.driver = driver
        self.config = config
        self._rng = rng
        self.image = MetadataImage()
        self.image_version = 0
        self._image_changed = trio.Event()
        self._controller: Controller | None = None
        self._active_epoch: int | None = None
        self._lock = trio.Lock()
        # A proposal whose RPC gave up waiting; the next decision waits for it first,
        # so that no decision is made on an image missing our own earlier records.
        self._pending: tuple[int, int] | None = None
        self._registration_offsets: dict[int, int] = {}
        driver.set_listener(self._apply)

    @property
    def node_id(self) -> int:
        """This node's id."""
        return self.driver.node_id

    @property
    def cluster_id(self) -> str:
        """The cluster id of the quorum (brokers registering must name it)."""
        return self.driver.cluster_id

    @property
    def is_active(self) -> bool:
        """Whether this node is the active controller now."""
        return (
            self._active_epoch is not None
            and self.driver.is_leader
            and self.driver.epoch == self._active_epoch
        )

    @property
    def active_id(self) -> int | None:
        """The active controller as this node knows it: itself, or the quorum leader."""
        if self.is_active:
            return self.node_id
        leader = self.driver.leader_id
        return None if leader == self.node_id else leader

    async def wait_image_change(self, seen_version: int) -> int:
        """Return the image version once it differs from `seen_version`."""
        while self.image_version == seen_version:
            await self._image_changed.wait()
        return self.image_version

    # -- running ------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the quorum driver and the active controller's timers until cancelled."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self.driver.run)
            nursery.start_soon(self._fence_expired_sessions)
            if self.config.auto_leader_rebalance:
                nursery.start_soon(self._rebalance_leaders)
            task_status.started()

    async def _fence_expired_sessions(self) -> None:
        # Kafka's QuorumController schedules its fencing check for the moment the
        # earliest session expires (rescheduleMaybeFenceStaleBrokers), so a broker is
        # fenced, and its leadership moved, as soon as its session runs out; a new
        # incarnation registering after that finds it fenced. The periodic check
        # catches brokers left without a session at all.
        period = max(self.config.session_timeout_ms // 4, 1) / 1000
        while True:
            wake = trio.current_time() + period
            controller = self._controller
            if controller is not None and self.is_active:
                expiry = controller.next_session_expiry()
                if expiry is not None:
                    wake = min(wake, expiry / 1000)
            await trio.sleep_until(wake)
            if self.is_active:
                await self._commit(lambda c, now: c.expire_sessions(now))

    async def _rebalance_leaders(self) -> None:
        period = max(self.config.leader_imbalance_check_interval_ms, 1) / 1000
        while True:
            await trio.sleep(period)
            if self.is_active:
                await self._commit(lambda c, _now: c.elect_preferred_leaders())

    def _apply(self, entry: Entry) -> None:
        payload = entry.payload
        if isinstance(payload, LeaderChange):
            if (
                payload.leader_id == self.node_id
                and self.driver.is_leader
                and self.driver.epoch == entry.epoch
            ):
                # Everything before this record is committed and replayed: serve.
                self._controller = Controller(
                    self.image,
                    ControllerConfig(
                        self.config.session_timeout_ms,
                        self.config.unclean_leader_election,
                        self.config.eligible_leader_replicas,
                        self.config.min_insync_replicas,
                    ),
                )
                self._controller.reset_sessions(now_ms())
                self._active_epoch = entry.epoch
                logger.info(
                    "node %d is the active controller in epoch %d; brokers %s",
                    self.node_id,
                    entry.epoch,
                    ", ".join(
                        f"{b} epoch {r.broker_epoch} {'fenced' if r.fenced else 'unfenced'}"
                        for b, r in sorted(self.image.brokers.items())
                    )
                    or "none registered",
                )
                self._pending = None
        else:
            records = payload if isinstance(payload, tuple) else (payload,)
            for record in records:
                self.image.replay(record)
                if isinstance(record, RegisterBrokerRecord):
                    self._registration_offsets[record.broker_id] = entry.offset
        self.image_version = entry.offset + 1
        self._image_changed.set()
        self._image_changed = trio.Event()

    async def _commit(self, decide: _Decide, *, propose: bool = True) -> Decision | int:
        """Decide under the lock and commit the decision's records.

        Returns the decision once its records are committed and replayed, or a Kafka
        error code: NOT_CONTROLLER, or REQUEST_TIMED_OUT when the quorum did not
        commit within the request timeout (the records may still commit later).
        """
        with trio.move_on_after(self.config.request_timeout_ms / 1000):
            async with self._lock:
                try:
                    if self._pending is not None:
                        await self.driver.wait_committed(*self._pending)
                        self._pending = None
                    controller = self._controller
                    if controller is None or not self.is_active:
                        return ErrorCode.NOT_CONTROLLER
                    decision = decide(controller, now_ms())
                    if not decision.records or not propose:
                        return decision
                    epoch = self.driver.epoch
                    offset = self.driver.propose(decision.records)
                    if isinstance(offset, NotLeader):
                        return ErrorCode.NOT_CONTROLLER
                    self._pending = (offset, epoch)
                    await self.driver.wait_committed(offset, epoch)
                    self._pending = None
                    return decision
                except NotCommittedError:
                    self._pending = None
                    return ErrorCode.NOT_CONTROLLER
        return ErrorCode.REQUEST_TIMED_OUT

    # -- brokers --------------------------------------------------------------------------------

    async def register_broker(
        self,
        broker_id: int,
        incarnation_id: str,
        host: str,
        port: int,
        *,
        previous_broker_epoch: int = -1,
    ) -> RegistrationResult:
        """BrokerRegistration: a new broker epoch; the broker starts fenced.

        `previous_broker_epoch` is the epoch of the broker's clean shutdown, -1 after an
        unclean one (see `Controller.register_broker`).
        """
        outcome = await self._commit(
            lambda c, now: c.register_broker(
                broker_id, incarnation_id, host, port, now, previous_broker_epoch
            )
        )
        if isinstance(outcome, int):
            return RegistrationResult(outcome)
        if outcome.error is not Errors.NONE:
            return RegistrationResult(outcome.error.code)
        return RegistrationResult(ErrorCode.NONE, outcome.broker_epoch or -1)

    async def heartbeat(
        self,
        broker_id: int,
        broker_epoch: int,
        *,
        current_metadata_offset: int,
        want_fence: bool,
        want_shutdown: bool = False,
    ) -> HeartbeatResult:
        """BrokerHeartbeat: renew the session; unfence a broker that has caught up.

        As in Kafka, a broker is unfenced only once its metadata has reached its own
        registration record, so it never leads with an image older than its epoch.
        """

        def decide(c: Controller, now: int) -> Decision:
            if want_shutdown:
                return c.shut_down_broker(broker_id, broker_epoch)
            caught_up = current_metadata_offset > self._registration_offsets.get(broker_id, -1)
            return c.heartbeat(broker_id, broker_epoch, want_fence or not caught_up, now)

        outcome = await self._commit(decide)
        if isinstance(outcome, int):
            return HeartbeatResult(outcome)
        if outcome.error is not Errors.NONE:
            return HeartbeatResult(outcome.error.code)
        broker = self.image.brokers.get(broker_id)
        caught_up = current_metadata_offset > self._registration_offsets.get(broker_id, -1)
        return HeartbeatResult(
            ErrorCode.NONE,
            is_caught_up=caught_up,
            is_fenced=broker is None or broker.fenced,
            should_shutdown=want_shutdown,
        )

    # -- partitions -------------------------------------------------------------------------------

    async def alter_partition(
        self,
        broker_id: int,
        broker_epoch: int,
        topic: str,
        partition: int,
        leader_epoch: int,
        partition_epoch: int,
        new_isr: Sequence[int],
    ) -> AlterPartitionResult:
        """AlterPartition from a partition leader: commit its new ISR if it is current."""

        def decide(c: Controller, _now: int) -> Decision:
            broker = self.image.brokers.get(broker_id)
            if broker_epoch >= 0 and (broker is None or broker.broker_epoch != broker_epoch):
                return Decision(error=Errors.STALE_BROKER_EPOCH)
            topic_id = self.image.topics.get(topic)
            if topic_id is None:
                return Decision(error=Errors.UNKNOWN_TOPIC_OR_PARTITION)
            return c.alter_partition(
                topic_id, partition, broker_id, leader_epoch, partition_epoch, tuple(new_isr)
            )

        outcome = await self._commit(decide)
        if isinstance(outcome, int):
            return AlterPartitionResult(outcome)
        state = outcome.partition
        if state is None:
            return AlterPartitionResult(outcome.error.code)
        return AlterPartitionResult(
            outcome.error.code, state.leader, state.leader_epoch, state.partition_epoch, state.isr
        )

    # -- topics -----------------------------------------------------------------------------------

    async def create_topic(
        self,
        name: str,
        partitions: int,
        replication_factor: int,
        configs: Mapping[str, str] | None = None,
        *,
        assignments: Sequence[Sequence[int]] | None = None,
        validate_only: bool = False,
    ) -> TopicResult:
        """CreateTopics for one topic: replicas striped over the unfenced brokers unless
        `assignments` names them; configs are Kafka topic configs."""
        configs = dict(configs or {})
        try:
            LogConfig.from_kafka(configs)
        except ValueError as exc:
            return TopicResult(ErrorCode.INVALID_CONFIG, message=str(exc))
        if not assignments and partitions < 1:
            return TopicResult(
                ErrorCode.INVALID_PARTITIONS,
                message=f"a topic needs at least one partition, not {partitions}",
            )
        if assignments and any(r not in self.image.brokers for a in assignments for r in a):
            return TopicResult(
                ErrorCode.INVALID_REPLICA_ASSIGNMENT,
                message=f"replica assignment {assignments} names unregistered brokers",
            )
        topic_id = str(random_uuid(self._rng))
        start = self._rng.randrange(1 << 16)

        def decide(c: Controller, _now: int) -> Decision:
            if assignments:
                placed: list[tuple[int, ...]] | Errors = [tuple(a) for a in assignments]
            else:
                placed = c.assign_replicas(partitions, replication_factor, start)
            if isinstance(placed, Errors):
                return Decision(error=placed)
            if c.exceeds_broker_partitions(placed, self.config.max_broker_partitions):
                return Decision(error=Errors.POLICY_VIOLATION)
            return c.create_topic(name, topic_id, placed, tuple(sorted(configs.items())))

        outcome = await self._commit(decide, propose=not validate_only)
        if isinstance(outcome, int):
            return TopicResult(outcome)
        if outcome.error is not Errors.NONE:
            return TopicResult(outcome.error.code, message=_why(outcome.error, name))
        return TopicResult(ErrorCode.NONE, None if validate_only else topic_id)

    async def delete_topic(self, name: str) -> TopicResult:
        """DeleteTopics for one topic."""
        outcome = await self._commit(lambda c, _now: c.delete_topic(name))
        if isinstance(outcome, int):
            return TopicResult(outcome)
        if outcome.error is not Errors.NONE:
            return TopicResult(outcome.error.code, message=_why(outcome.error, name))
        return TopicResult(ErrorCode.NONE)


    # -- reassignments and decommissioning ---------------------------------------------------------

    async def alter_reassignment(
        self,
        topic: str,
        partition: int,
        target: Sequence[int] | None,
        *,
        allow_factor_change: bool = True,
    ) -> ReassignmentResult:
        """AlterPartitionReassignments for one partition: start (or replace) a reassignment
        to `target`, or cancel the ongoing one with None. Answers once the first step is
        committed; the controller completes it as the new replicas join the ISR."""

        def decide(c: Controller, _now: int) -> Decision:
            topic_id = self.image.topics.get(topic)
            if topic_id is None:
                return Decision(
                    error=Errors.UNKNOWN_TOPIC_OR_PARTITION,
                    message=f"topic {topic!r} does not exist",
                )
            return c.alter_reassignment(
                topic_id,
                partition,
                None if target is None else tuple(target),
                allow_factor_change=allow_factor_change,
            )

        outcome = await self._commit(decide)
        if isinstance(outcome, int):
            return ReassignmentResult(outcome)
        if outcome.error is not Errors.NONE:
            return ReassignmentResult(outcome.error.code, outcome.message or outcome.error.value)
        return ReassignmentResult(ErrorCode.NONE)

    async def list_reassignments(
        self, partitions: Mapping[str, Sequence[int]] | None = None
    ) -> list[OngoingReassignment] | int:
        """ListPartitionReassignments: the ongoing reassignments (of `partitions` when
        given), or NOT_CONTROLLER, from the active controller's image."""
        if not self.is_active or self._controller is None:
            return ErrorCode.NOT_CONTROLLER
        found = []
        for topic_id, index, state in self._controller.reassignments():
            name = self.image.topic_names.get(topic_id)
            if name is None:
                continue
            if partitions is not None and index not in partitions.get(name, ()):
                continue
            found.append(
                OngoingReassignment(
                    name, index, state.replicas, state.adding_replicas, state.removing_replicas
                )
            )
        return found

    async def unregister_broker(self, broker_id: int) -> ReassignmentResult:
        """UnregisterBroker: remove a decommissioned broker's registration for good."""
        outcome = await self._commit(lambda c, _now: c.unregister_broker(broker_id))
        if isinstance(outcome, int):
            return ReassignmentResult(outcome)
        if outcome.error is not Errors.NONE:
            return ReassignmentResult(outcome.error.code, outcome.message or outcome.error.value)
        return ReassignmentResult(ErrorCode.NONE)


def _why(error: Errors, topic: str) -> str:
    return {
        Errors.TOPIC_ALREADY_EXISTS: f"topic {topic!r} already exists",
        Errors.UNKNOWN_TOPIC_OR_PARTITION: f"topic {topic!r} does not exist",
        Errors.INVALID_REPLICATION_FACTOR: (
            "the replication factor is larger than the number of unfenced brokers"
        ),
        Errors.INVALID_CONFIG: "unclean.leader.election.enable must be true or false",
        Errors.POLICY_VIOLATION: (
            f"topic {topic!r} would put more partitions on a broker than its "
            "max.broker.partitions allows"
        ),
    }.get(error, error.value)
