"""The controller's metadata state machine (KIP-631), on top of the Raft metadata log.

Two halves, as in Kafka's QuorumController:

- `MetadataImage.replay(record)` applies a committed record. Every controller (and,
  later, every broker) replays the same log, so they all hold the same image.
- `Controller` decides what to write: it reads the image and returns the records a
  request or an expired session calls for, plus the answer to give. The active
  controller proposes those records to Raft and answers once they are committed.

Broker sessions (when each broker last heartbeated) are not in the log: like Kafka's
BrokerHeartbeatManager they live only on the active controller, which gives every
unfenced broker a fresh session when it takes over. A fenced broker has no valid
session, so nothing stops a new incarnation of it from registering.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field, replace
from enum import Enum

from .. import bugs, events
from .partition_change import ElrChange, PartitionView, change_partition
from .reassignment import (
    ReassignmentError,
    ReplicaSets,
    change_record,
    complete_if_ready,
    revert,
    start,
    validate_target,
)
from .records import (
    NO_LEADER,
    FenceBrokerRecord,
    MetadataRecord,
    PartitionChangeRecord,
    PartitionRecord,
    RegisterBrokerRecord,
    RemoveTopicRecord,
    TopicRecord,
    UnfenceBrokerRecord,
    UnregisterBrokerRecord,
)

# The decisions Kafka's ClusterControlManager and ReplicationControlManager log at INFO:
# registrations accepted or refused, fencing and unfencing.
logger = logging.getLogger("faultline.broker.controller")


@dataclass(frozen=True, slots=True)
class BrokerRegistration:
    """A registered broker as the image knows it."""

    broker_id: int
    incarnation_id: str
    broker_epoch: int
    host: str
    port: int
    fenced: bool = True


@dataclass(frozen=True, slots=True)
class PartitionState:
    """A partition's replicas, leader and ISR, with the epochs that version them, its
    eligible leader replicas (KIP-966; empty while the feature is off) and the replicas
    an ongoing reassignment adds and removes (KIP-455; empty when none is)."""

    replicas: tuple[int, ...]
    isr: tuple[int, ...]
    leader: int
    leader_epoch: int
    partition_epoch: int
    elr: tuple[int, ...] = ()
    last_known_elr: tuple[int, ...] = ()
    adding_replicas: tuple[int, ...] = ()
    removing_replicas: tuple[int, ...] = ()

    @property
    def replica_sets(self) -> ReplicaSets:
        """The fields a reassignment changes."""
        return ReplicaSets(
            self.replicas, self.isr, self.leader, self.adding_replicas, self.removing_replicas
        )


UNCLEAN_LEADER_ELECTION_CONFIG = "unclean.leader.election.enable"
MIN_INSYNC_REPLICAS_CONFIG = "min.insync.replicas"


class MetadataImage:
    """Brokers, topics and partitions as replayed from committed records."""

    def __init__(self) -> None:
        self.brokers: dict[int, BrokerRegistration] = {}
        self.topics: dict[str, str] = {}  # name -> topic id
        self.topic_names: dict[str, str] = {}  # topic id -> name
        self.topic_configs: dict[str, tuple[tuple[str, str], ...]] = {}  # topic id -> overrides
        self.partitions: dict[tuple[str, int], PartitionState] = {}  # (topic id, index)
        self.last_broker_epoch = 0

    def topic_config(self, topic_id: str, name: str) -> str | None:
        """A topic's override of config `name`, None when it has none."""
        for key, value in self.topic_configs.get(topic_id, ()):
            if key == name:
                return value
        return None

    def partitions_of(self, topic_id: str) -> list[tuple[int, PartitionState]]:
        """(index, state) of every partition of a topic, by index."""
        return sorted((i, s) for (t, i), s in self.partitions.items() if t == topic_id)

    def is_live(self, broker_id: int) -> bool:
        """Registered and not fenced."""
        broker = self.brokers.get(broker_id)
        return broker is not None and not broker.fenced

    def replay(self, record: MetadataRecord) -> None:
        """Apply one committed record."""
        match record:
            case RegisterBrokerRecord():
                self.brokers[record.broker_id] = BrokerRegistration(
                    record.broker_id,
                    record.incarnation_id,
                    record.broker_epoch,
                    record.host,
                    record.port,
                )
                self.last_broker_epoch = max(self.last_broker_epoch, record.broker_epoch)
            case FenceBrokerRecord() | UnfenceBrokerRecord():
                broker = self.brokers.get(record.broker_id)
                if broker is None or broker.broker_epoch != record.broker_epoch:
                    return  # about an older registration; the new one stands
                fenced = isinstance(record, FenceBrokerRecord)
                self.brokers[record.broker_id] = replace(broker, fenced=fenced)
            case TopicRecord():
                self.topics[record.name] = record.topic_id
                self.topic_names[record.topic_id] = record.name
                self.topic_configs[record.topic_id] = record.configs
            case RemoveTopicRecord():
                name = self.topic_names.pop(record.topic_id, None)
                if name is None:
                    return  # already gone: replaying a delete twice changes nothing
                del self.topics[name]
                self.topic_configs.pop(record.topic_id, None)
                for key in [k for k in self.partitions if k[0] == record.topic_id]:
                    del self.partitions[key]
            case PartitionRecord():
                self.partitions[(record.topic_id, record.partition)] = PartitionState(
                    record.replicas,
                    record.isr,
                    record.leader,
                    record.leader_epoch,
                    record.partition_epoch,
                    record.elr,
                    record.last_known_elr,
                    record.adding_replicas,
                    record.removing_replicas,
                )
            case UnregisterBrokerRecord():
                broker = self.brokers.get(record.broker_id)
                if broker is not None and broker.broker_epoch == record.broker_epoch:
                    del self.brokers[record.broker_id]
            case PartitionChangeRecord():
                key = (record.topic_id, record.partition)
                self.partitions[key] = _applied(self.partitions[key], record)
            case _:
                raise TypeError(f"not a metadata record: {record!r}")


class Errors(Enum):
    """Kafka's error names for what the controller refuses."""

    NONE = "NONE"
    DUPLICATE_BROKER_REGISTRATION = "DUPLICATE_BROKER_REGISTRATION"
    STALE_BROKER_EPOCH = "STALE_BROKER_EPOCH"
    TOPIC_ALREADY_EXISTS = "TOPIC_ALREADY_EXISTS"
    INVALID_REPLICATION_FACTOR = "INVALID_REPLICATION_FACTOR"
    UNKNOWN_TOPIC_OR_PARTITION = "UNKNOWN_TOPIC_OR_PARTITION"
    NOT_LEADER_OR_FOLLOWER = "NOT_LEADER_OR_FOLLOWER"
    FENCED_LEADER_EPOCH = "FENCED_LEADER_EPOCH"
    INVALID_UPDATE_VERSION = "INVALID_UPDATE_VERSION"
    INVALID_REQUEST = "INVALID_REQUEST"
    INELIGIBLE_REPLICA = "INELIGIBLE_REPLICA"
    INVALID_CONFIG = "INVALID_CONFIG"
    POLICY_VIOLATION = "POLICY_VIOLATION"
    INVALID_REPLICA_ASSIGNMENT = "INVALID_REPLICA_ASSIGNMENT"
    NO_REASSIGNMENT_IN_PROGRESS = "NO_REASSIGNMENT_IN_PROGRESS"
    BROKER_ID_NOT_REGISTERED = "BROKER_ID_NOT_REGISTERED"

    @property
    def code(self) -> int:
        """Kafka's numeric error code (clients' Errors.java)."""
        return _KAFKA_CODES[self]


_KAFKA_CODES = {
    Errors.NONE: 0,
    Errors.UNKNOWN_TOPIC_OR_PARTITION: 3,
    Errors.NOT_LEADER_OR_FOLLOWER: 6,
    Errors.TOPIC_ALREADY_EXISTS: 36,
    Errors.INVALID_REPLICATION_FACTOR: 38,
    Errors.INVALID_REPLICA_ASSIGNMENT: 39,
    Errors.INVALID_CONFIG: 40,
    Errors.INVALID_REQUEST: 42,
    Errors.POLICY_VIOLATION: 44,
    Errors.FENCED_LEADER_EPOCH: 74,
    Errors.NO_REASSIGNMENT_IN_PROGRESS: 85,
    Errors.STALE_BROKER_EPOCH: 77,
    Errors.INVALID_UPDATE_VERSION: 95,
    Errors.DUPLICATE_BROKER_REGISTRATION: 101,
    Errors.BROKER_ID_NOT_REGISTERED: 102,
    Errors.INELIGIBLE_REPLICA: 107,
}


@dataclass(frozen=True, slots=True)
class Decision:
    """What the controller will write, and the answer to give once it is committed."""

    records: tuple[MetadataRecord, ...] = ()
    error: Errors = Errors.NONE
    message: str | None = None
    broker_epoch: int | None = None
    partition: PartitionState | None = None


@dataclass
class ControllerConfig:
    """Kafka's `broker.session.timeout.ms`, `unclean.leader.election.enable`,
    `eligible.leader.replicas.version` (on or off) and `min.insync.replicas`.

    `unclean_leader_election` and `min_insync_replicas` are cluster defaults; a topic's
    own config overrides them for that topic.
    """

    session_timeout_ms: int = 9000
    unclean_leader_election: bool = False
    eligible_leader_replicas: bool = False
    min_insync_replicas: int = 1


@dataclass
class Controller:
    """The active controller's decisions over an image (which the caller keeps replayed).

    Methods return a `Decision`; the caller proposes its records, replays them once
    committed, and only then answers. The controller itself never mutates the image.
    """

    image: MetadataImage
    config: ControllerConfig = field(default_factory=ControllerConfig)
    sessions: dict[int, int] = field(default_factory=dict)  # broker id -> session expiry

    # -- brokers ----------------------------------------------------------------------

    def has_valid_session(self, broker_id: int, now_ms: int) -> bool:
        """Whether the broker is unfenced and heartbeated within the session timeout.

        As Kafka's BrokerHeartbeatManager.hasValidSession: a fenced broker never has
        one, whenever it last heartbeated.
        """
        broker = self.image.brokers.get(broker_id)
        if broker is None or broker.fenced:
            return False
        return self.sessions.get(broker_id, now_ms) > now_ms

    def next_session_expiry(self) -> int | None:
        """When the earliest session of an unfenced broker expires, None if none can
        (Kafka's BrokerHeartbeatManager.nextCheckTimeNs): the controller fences then."""
        expiries = [
            self.sessions[b]
            for b, broker in self.image.brokers.items()
            if not broker.fenced and b in self.sessions
        ]
        return min(expiries, default=None)

    def register_broker(
        self,
        broker_id: int,
        incarnation_id: str,
        host: str,
        port: int,
        now_ms: int,
        previous_broker_epoch: int = -1,
    ) -> Decision:
        """A broker starts: a new epoch, fenced until it heartbeats (BrokerRegistration).

        A new incarnation is refused (DUPLICATE_BROKER_REGISTRATION) only while the
        registered one is unfenced and its session valid: another process may be
        serving with this id. A fenced registration, or one whose session ran out,
        gives way at once, as in Kafka's ClusterControlManager.registerBroker.

        `previous_broker_epoch` is the epoch the broker's clean-shutdown marker named
        (-1 without one). A new incarnation whose previous epoch is not the registered
        one shut down uncleanly and may have lost unflushed records: with eligible
        leader replicas on, it leaves every ISR and ELR it is in, in the same decision.
        """
        existing = self.image.brokers.get(broker_id)
        if (
            existing is not None
            and existing.incarnation_id != incarnation_id
            and self.has_valid_session(broker_id, now_ms)
        ):
            logger.info(
                "refusing to register incarnation %s of broker %d: incarnation %s "
                "(epoch %d) is unfenced and its session is valid for another %d ms",
                incarnation_id,
                broker_id,
                existing.incarnation_id,
                existing.broker_epoch,
                self.sessions[broker_id] - now_ms,
            )
            return Decision(error=Errors.DUPLICATE_BROKER_REGISTRATION)
        if existing is not None and existing.incarnation_id == incarnation_id:
            return Decision(broker_epoch=existing.broker_epoch)
        epoch = self.image.last_broker_epoch + 1
        self.sessions[broker_id] = now_ms + self.config.session_timeout_ms
        if existing is None:
            logger.info(
                "registering broker %d (incarnation %s) with epoch %d",
                broker_id,
                incarnation_id,
                epoch,
            )
        else:
            logger.info(
                "registering a new incarnation %s of broker %d with epoch %d; the previous "
                "one was %s (epoch %d, %s)",
                incarnation_id,
                broker_id,
                epoch,
                existing.incarnation_id,
                existing.broker_epoch,
                "fenced" if existing.fenced else "unfenced",
            )
        records: list[MetadataRecord] = []
        if (
            existing is not None
            and self.config.eligible_leader_replicas
            and previous_broker_epoch != existing.broker_epoch
        ):
            records += self._changes_for_unclean_shutdown(broker_id)
            logger.info(
                "broker %d shut down uncleanly (previous epoch %d, registered epoch %d): "
                "removing it from the ISR and ELR of %d partitions",
                broker_id,
                previous_broker_epoch,
                existing.broker_epoch,
                len(records),
            )
        # As Kafka, the partition changes go before the registration that fences it.
        records.append(RegisterBrokerRecord(broker_id, incarnation_id, epoch, host, port))
        return Decision(tuple(records), broker_epoch=epoch)

    def heartbeat(
        self, broker_id: int, broker_epoch: int, want_fence: bool, now_ms: int
    ) -> Decision:
        """Renew the session; unfence a fenced broker that asks to be active."""
        broker = self.image.brokers.get(broker_id)
        if broker is None or broker.broker_epoch != broker_epoch:
            return Decision(error=Errors.STALE_BROKER_EPOCH)
        self.sessions[broker_id] = now_ms + self.config.session_timeout_ms
        if broker.fenced and not want_fence:
            logger.info("unfencing broker %d (epoch %d)", broker_id, broker_epoch)
            unfence = UnfenceBrokerRecord(broker_id, broker_epoch)
            return Decision((unfence, *self._elect_for_unfenced(broker_id)))
        return Decision()

    def expire_sessions(self, now_ms: int) -> Decision:
        """Fence every live broker whose session ran out, moving leadership off it."""
        records: list[MetadataRecord] = []
        fenced: set[int] = set()
        for broker_id in sorted(self.image.brokers):
            broker = self.image.brokers[broker_id]
            if broker.fenced or self.sessions.get(broker_id, now_ms) > now_ms:
                continue
            logger.info(
                "fencing broker %d (epoch %d): its session has timed out",
                broker_id,
                broker.broker_epoch,
            )
            events.emit("broker-fenced", broker=broker_id, reason="session-timeout")
            records.append(FenceBrokerRecord(broker_id, broker.broker_epoch))
            fenced.add(broker_id)
        if fenced:
            records += self._changes_for_fenced(fenced)
        return Decision(tuple(records))

    def shut_down_broker(self, broker_id: int, broker_epoch: int) -> Decision:
        """A broker asks to shut down (controlled shutdown): fence it now, moving its
        leadership and ISR memberships to the others before it goes."""
        broker = self.image.brokers.get(broker_id)
        if broker is None or broker.broker_epoch != broker_epoch:
            return Decision(error=Errors.STALE_BROKER_EPOCH)
        self.sessions.pop(broker_id, None)
        if broker.fenced:
            return Decision()
        logger.info(
            "fencing broker %d (epoch %d) for its controlled shutdown", broker_id, broker_epoch
        )
        events.emit("broker-fenced", broker=broker_id, reason="controlled-shutdown")
        records: list[MetadataRecord] = [FenceBrokerRecord(broker_id, broker_epoch)]
        return Decision((*records, *self._changes_for_fenced({broker_id})))

    def unregister_broker(self, broker_id: int) -> Decision:
        """Remove a broker from the cluster for good (UnregisterBroker): it leaves every ISR
        and ELR and loses every leadership, as Kafka's handleBrokerUnregistered. Its
        replicas stay assigned; move them off first (a reassignment), as Kafka expects."""
        broker = self.image.brokers.get(broker_id)
        if broker is None:
            return Decision(
                error=Errors.BROKER_ID_NOT_REGISTERED,
                message=f"broker {broker_id} is not registered",
            )
        logger.info("unregistering broker %d (epoch %d)", broker_id, broker.broker_epoch)
        self.sessions.pop(broker_id, None)
        records = self._changes_for_fenced({broker_id})
        return Decision((*records, UnregisterBrokerRecord(broker_id, broker.broker_epoch)))

    def reset_sessions(self, now_ms: int) -> None:
        """On becoming the active controller, give every unfenced broker a full session.

        The new controller cannot know when a broker last heartbeated its predecessor,
        so an unfenced broker gets the benefit of the doubt (Kafka's
        ClusterControlManager.activate); a fenced one stays without a session, so its
        next incarnation can register at once.
        """
        self.sessions = {
            b: now_ms + self.config.session_timeout_ms
            for b, broker in self.image.brokers.items()
            if not broker.fenced
        }

    # -- topics -----------------------------------------------------------------------

    def create_topic(
        self,
        name: str,
        topic_id: str,
        assignments: list[tuple[int, ...]],
        configs: tuple[tuple[str, str], ...] = (),
    ) -> Decision:
        """A topic with one replica list per partition; leaders are the first live replica."""
        if name in self.image.topics:
            return Decision(error=Errors.TOPIC_ALREADY_EXISTS)
        if not assignments or any(not r or len(set(r)) != len(r) for r in assignments):
            return Decision(error=Errors.INVALID_REPLICATION_FACTOR)
        for key, value in configs:
            if key == UNCLEAN_LEADER_ELECTION_CONFIG and _parse_bool(value) is None:
                return Decision(error=Errors.INVALID_CONFIG)
        records: list[MetadataRecord] = [TopicRecord(name, topic_id, tuple(configs))]
        for index, replicas in enumerate(assignments):
            live = tuple(r for r in replicas if self.image.is_live(r))
            leader = live[0] if live else NO_LEADER
            isr = live or replicas
            records.append(PartitionRecord(topic_id, index, replicas, isr, leader, 0, 0))
        return Decision(tuple(records))

    def exceeds_broker_partitions(self, assignments: list[tuple[int, ...]], limit: int) -> bool:
        """Whether adding `assignments` would give some broker more than `limit` replicas
        (max.broker.partitions, counted over every topic's partitions)."""
        hosted = Counter(r for state in self.image.partitions.values() for r in state.replicas)
        hosted.update(r for replicas in assignments for r in replicas)
        return any(count > limit for count in hosted.values())

    def assign_replicas(
        self, partitions: int, replication_factor: int, start: int
    ) -> list[tuple[int, ...]] | Errors:
        """Replica lists for a new topic, striped over the unfenced brokers.

        Partition p gets `replication_factor` consecutive brokers (by id) beginning
        at `start + p`, so leaders (first replicas) spread evenly, as Kafka's
        StripedReplicaPlacer does without racks. Fewer unfenced brokers than the
        replication factor is INVALID_REPLICATION_FACTOR, as in Kafka.
        """
        live = sorted(b for b in self.image.brokers if self.image.is_live(b))
        if partitions < 1 or replication_factor < 1 or replication_factor > len(live):
            return Errors.INVALID_REPLICATION_FACTOR
        return [
            tuple(live[(start + p + i) % len(live)] for i in range(replication_factor))
            for p in range(partitions)
        ]

    def delete_topic(self, name: str) -> Decision:
        """Remove a topic and its partitions (DeleteTopics)."""
        topic_id = self.image.topics.get(name)
        if topic_id is None:
            return Decision(error=Errors.UNKNOWN_TOPIC_OR_PARTITION)
        return Decision((RemoveTopicRecord(topic_id),))

    def unclean_election_enabled(self, topic_id: str) -> bool:
        """The topic's `unclean.leader.election.enable`, else the cluster default."""
        if bugs.enabled("unclean-election-when-disabled"):
            # PLANTED BUG unclean-election-when-disabled: the setting is never consulted.
            return True
        override = _parse_bool(self.image.topic_config(topic_id, UNCLEAN_LEADER_ELECTION_CONFIG))
        return self.config.unclean_leader_election if override is None else override

    def min_insync_replicas(self, topic_id: str, state: PartitionState) -> int:
        """The topic's `min.insync.replicas` (else the cluster default), capped at the
        replication factor as the leader caps it (Partition.effective_min_isr)."""
        override = self.image.topic_config(topic_id, MIN_INSYNC_REPLICAS_CONFIG)
        try:
            configured = int(override) if override is not None else None
        except ValueError:
            configured = None
        value = self.config.min_insync_replicas if configured is None else configured
        return max(1, min(value, len(state.replicas)))

    # -- partitions ---------------------------------------------------------------------

    def alter_partition(
        self,
        topic_id: str,
        partition: int,
        leader_id: int,
        leader_epoch: int,
        partition_epoch: int,
        new_isr: tuple[int, ...],
    ) -> Decision:
        """A leader asks to shrink or expand its ISR (AlterPartition), validated as Kafka does."""
        state = self.image.partitions.get((topic_id, partition))
        if state is None:
            return Decision(error=Errors.UNKNOWN_TOPIC_OR_PARTITION)
        if leader_id != state.leader:
            return Decision(error=Errors.NOT_LEADER_OR_FOLLOWER, partition=state)
        if leader_epoch < state.leader_epoch:
            return Decision(error=Errors.FENCED_LEADER_EPOCH, partition=state)
        if partition_epoch != state.partition_epoch or leader_epoch != state.leader_epoch:
            return Decision(error=Errors.INVALID_UPDATE_VERSION, partition=state)
        if leader_id not in new_isr or any(r not in state.replicas for r in new_isr):
            return Decision(error=Errors.INVALID_REQUEST, partition=state)
        if any(r not in state.isr and not self.image.is_live(r) for r in new_isr):
            return Decision(error=Errors.INELIGIBLE_REPLICA, partition=state)
        change = PartitionChangeRecord(topic_id, partition, isr=tuple(new_isr))
        if self.config.eligible_leader_replicas:
            # The ISR grows back to min.insync.replicas (the ELR empties) or shrinks
            # below it (the replicas leaving it become eligible).
            after = self._elr_change(
                topic_id,
                partition,
                state,
                tuple(new_isr),
                lambda r: r == leader_id or self.image.is_live(r),
            )
            change = replace(
                change,
                elr=None if after.elr == state.elr else after.elr,
                last_known_elr=(
                    None if after.last_known_elr == state.last_known_elr else after.last_known_elr
                ),
            )
        change = self._complete_reassignment(topic_id, partition, state, change)
        return Decision((change,), partition=_applied(state, change))

    def _complete_reassignment(
        self, topic_id: str, index: int, state: PartitionState, change: PartitionChangeRecord
    ) -> PartitionChangeRecord:
        """`change`, extended to complete the partition's reassignment when it brings the
        last target replica into the ISR (Kafka's completeReassignmentIfNeeded)."""
        after = _applied(state, change)
        if not after.replica_sets.reassigning:
            return change
        done = complete_if_ready(after.replica_sets, self.image.is_live)
        if done == after.replica_sets:
            return change
        logger.info(
            "completing the reassignment of %s-%d to %s (leader %d, ISR %s)",
            self.image.topic_names.get(topic_id, topic_id),
            index,
            list(done.replicas),
            done.leader,
            list(done.isr),
        )
        return PartitionChangeRecord(
            topic_id,
            index,
            leader=None if done.leader == state.leader else done.leader,
            isr=None if done.isr == state.isr else done.isr,
            elr=tuple(r for r in after.elr if r in done.replicas) if after.elr else change.elr,
            last_known_elr=change.last_known_elr,
            replicas=done.replicas,
            adding_replicas=(),
            removing_replicas=(),
        )

    # -- reassignments (KIP-455) -----------------------------------------------------------

    def alter_reassignment(
        self,
        topic_id: str,
        index: int,
        target: tuple[int, ...] | None,
        *,
        allow_factor_change: bool = True,
    ) -> Decision:
        """Start, replace or (with `target` None) cancel the reassignment of one partition
        (AlterPartitionReassignments); see `reassignment.py` for the steps."""
        state = self.image.partitions.get((topic_id, index))
        if state is None:
            return Decision(error=Errors.UNKNOWN_TOPIC_OR_PARTITION)
        name = self.image.topic_names.get(topic_id, topic_id)
        current = state.replica_sets
        if target is None:
            if not current.reassigning:
                return Decision(
                    error=Errors.NO_REASSIGNMENT_IN_PROGRESS,
                    message=f"no reassignment of {name}-{index} is in progress",
                )
            after = revert(current, self.image.is_live)
            logger.info("cancelling the reassignment of %s-%d", name, index)
        else:
            try:
                validate_target(
                    target,
                    self.image.brokers,
                    current_factor=len(current.original),
                    allow_factor_change=allow_factor_change,
                )
            except ReassignmentError as exc:
                return Decision(error=Errors(exc.code), message=str(exc))
            base = revert(current, self.image.is_live) if current.reassigning else current
            after = complete_if_ready(start(base, target), self.image.is_live)
            logger.info(
                "reassigning %s-%d from %s to %s (adding %s, removing %s)",
                name,
                index,
                list(current.original),
                list(target),
                list(after.adding),
                list(after.removing),
            )
        record = change_record(topic_id, index, current, after)
        if record is None:
            return Decision(partition=state)
        if state.elr and record.replicas is not None:
            record = replace(record, elr=tuple(r for r in state.elr if r in record.replicas))
        return Decision((record,), partition=_applied(state, record))

    def reassignments(self) -> list[tuple[str, int, PartitionState]]:
        """(topic id, index, state) of every partition being reassigned, in order."""
        return [
            (topic_id, index, state)
            for (topic_id, index), state in sorted(self.image.partitions.items())
            if state.replica_sets.reassigning
        ]

    def elect_preferred_leaders(self) -> Decision:
        """Move leadership back to each partition's first replica where it is live and in sync."""
        records: list[MetadataRecord] = []
        for (topic_id, index), state in sorted(self.image.partitions.items()):
            preferred = state.replicas[0]
            if (
                state.leader != preferred
                and preferred in state.isr
                and self.image.is_live(preferred)
            ):
                records.append(PartitionChangeRecord(topic_id, index, leader=preferred))
        return Decision(tuple(records))

    # -- elections ------------------------------------------------------------------------

    def _elect(
        self, topic_id: str, state: PartitionState, unavailable: set[int]
    ) -> tuple[int, tuple[int, ...]]:
        """(leader, isr) after removing `unavailable` brokers: clean from the ISR first."""

        def live(r: int) -> bool:
            return r not in unavailable and self.image.is_live(r)

        isr = tuple(r for r in state.isr if r not in unavailable)
        for replica in state.replicas:
            if replica in isr and live(replica):
                return replica, isr
        if self.unclean_election_enabled(topic_id):
            for replica in state.replicas:
                if live(replica):
                    # Unclean: the ISR restarts from the new leader; what others held may be lost.
                    events.emit("unclean-election",
                                topic=self.image.topic_names.get(topic_id, topic_id),
                                leader=replica)
                    return replica, (replica,)
        # Kafka never empties the ISR: the last member stays, so a clean election can
        # happen when it returns.
        return NO_LEADER, isr or state.isr

    def _elr_change(
        self,
        topic_id: str,
        index: int,
        state: PartitionState,
        target_isr: tuple[int, ...],
        acceptable: Callable[[int], bool],
        unclean_shutdown: Collection[int] = (),
    ) -> ElrChange:
        view = PartitionView(
            state.replicas, state.isr, state.leader, state.elr, state.last_known_elr
        )
        change = change_partition(
            view,
            target_isr=target_isr,
            acceptable=acceptable,
            min_isr=self.min_insync_replicas(topic_id, state),
            unclean_election=self.unclean_election_enabled(topic_id),
            unclean_shutdown=unclean_shutdown,
        )
        if change.unclean:
            logger.info(
                "electing %d leader of %s-%d uncleanly: no in-sync or eligible replica is "
                "available (ISR %s, ELR %s)",
                change.leader,
                self.image.topic_names.get(topic_id, topic_id),
                index,
                list(state.isr),
                list(state.elr),
            )
            events.emit("unclean-election",
                        log=f"{self.image.topic_names.get(topic_id, topic_id)}/{index}",
                        leader=change.leader)
        return change

    def _elr_records(
        self,
        partitions: Iterable[tuple[tuple[str, int], PartitionState]],
        target_isr: Callable[[PartitionState], tuple[int, ...]],
        acceptable: Callable[[int], bool],
        unclean_shutdown: Collection[int] = (),
    ) -> list[MetadataRecord]:
        records: list[MetadataRecord] = []
        for (topic_id, index), state in partitions:
            change = self._elr_change(
                topic_id, index, state, target_isr(state), acceptable, unclean_shutdown
            )
            view = PartitionView(
                state.replicas, state.isr, state.leader, state.elr, state.last_known_elr
            )
            record = change.record(topic_id, index, view)
            if record is not None:
                records.append(record)
        return records

    def _changes_for_unclean_shutdown(self, broker_id: int) -> list[MetadataRecord]:
        """Take `broker_id` out of every ISR and ELR (it may have lost records), moving
        leadership off it (Kafka's handleBrokerUncleanShutdown)."""
        affected = [
            (key, state)
            for key, state in sorted(self.image.partitions.items())
            if broker_id in state.isr or broker_id in state.elr
        ]
        return self._elr_records(
            affected,
            lambda state: tuple(r for r in state.isr if r != broker_id),
            lambda r: r != broker_id and self.image.is_live(r),
            unclean_shutdown=(broker_id,),
        )

    def _changes_for_fenced(self, fenced: set[int]) -> list[MetadataRecord]:
        if self.config.eligible_leader_replicas:
            # The ISR may empty: its last members become eligible leader replicas.
            affected = [
                (key, state)
                for key, state in sorted(self.image.partitions.items())
                if fenced & set(state.isr) or state.leader in fenced
            ]
            return self._elr_records(
                affected,
                lambda state: tuple(r for r in state.isr if r not in fenced),
                lambda r: r not in fenced and self.image.is_live(r),
            )
        records: list[MetadataRecord] = []
        for (topic_id, index), state in sorted(self.image.partitions.items()):
            if not (fenced & set(state.isr)) and state.leader not in fenced:
                continue
            if state.leader in fenced or state.leader == NO_LEADER:
                leader, isr = self._elect(topic_id, state, fenced)
            else:
                leader, isr = state.leader, tuple(r for r in state.isr if r not in fenced)
            records.append(
                PartitionChangeRecord(
                    topic_id,
                    index,
                    leader=None if leader == state.leader else leader,
                    isr=None if isr == state.isr else isr,
                )
            )
        return records

    def _elect_for_unfenced(self, broker_id: int) -> list[MetadataRecord]:
        """Leaderless partitions this broker can now lead (treating it as live)."""
        if self.config.eligible_leader_replicas:
            # From the ISR, else the ELR, else its last leader, else unclean if allowed.
            leaderless = [
                (key, state)
                for key, state in sorted(self.image.partitions.items())
                if state.leader == NO_LEADER and broker_id in state.replicas
            ]
            return self._elr_records(
                leaderless,
                lambda state: state.isr,
                lambda r: r == broker_id or self.image.is_live(r),
            )
        records: list[MetadataRecord] = []
        for (topic_id, index), state in sorted(self.image.partitions.items()):
            if state.leader != NO_LEADER or broker_id not in state.replicas:
                continue
            if broker_id in state.isr:
                records.append(PartitionChangeRecord(topic_id, index, leader=broker_id))
            elif self.unclean_election_enabled(topic_id):
                records.append(
                    PartitionChangeRecord(topic_id, index, leader=broker_id, isr=(broker_id,))
                )
        return records


def _parse_bool(value: str | None) -> bool | None:
    """Kafka's boolean config syntax (case-insensitive true/false); None if absent or not one."""
    if value is None:
        return None
    return {"true": True, "false": False}.get(value.strip().lower())


def _applied(state: PartitionState, change: PartitionChangeRecord) -> PartitionState:
    """`state` after `change`: the partition epoch always moves, the leader epoch when the
    leader does or a replica leaves the replica set."""
    leader = state.leader if change.leader is None else change.leader
    replicas = state.replicas if change.replicas is None else change.replicas
    shrunk = any(r not in replicas for r in state.replicas)
    return PartitionState(
        replicas,
        state.isr if change.isr is None else change.isr,
        leader,
        state.leader_epoch + (1 if leader != state.leader or shrunk else 0),
        state.partition_epoch + 1,
        state.elr if change.elr is None else change.elr,
        state.last_known_elr if change.last_known_elr is None else change.last_known_elr,
        state.adding_replicas if change.adding_replicas is None else change.adding_replicas,
        state.removing_replicas if change.removing_replicas is None else change.removing_replicas,
    )
