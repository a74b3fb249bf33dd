"""The controller's metadata records (KIP-631), as the metadata log carries them.

Names and fields follow Kafka's `metadata/src/main/resources/common/metadata/*.json`
where they exist; `NO_LEADER` is Kafka's -1.
"""

from __future__ import annotations

from dataclasses import dataclass

NO_LEADER = -1


@dataclass(frozen=True, slots=True)
class RegisterBrokerRecord:
    """A broker (re)registered; it starts fenced."""

    broker_id: int
    incarnation_id: str
    broker_epoch: int
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class FenceBrokerRecord:
    """The broker missed its session; it may lead nothing and is out of every ISR it can leave."""

    broker_id: int
    broker_epoch: int


@dataclass(frozen=True, slots=True)
class UnfenceBrokerRecord:
    """The broker heartbeats again and has caught up; it may lead and join ISRs."""

    broker_id: int
    broker_epoch: int


@dataclass(frozen=True, slots=True)
class TopicRecord:
    """A topic exists, with its topic-level config overrides (Kafka property names)."""

    name: str
    topic_id: str
    configs: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class RemoveTopicRecord:
    """A topic and all its partitions are deleted."""

    topic_id: str


@dataclass(frozen=True, slots=True)
class PartitionRecord:
    """A partition's full state, written when it is created.

    `elr` and `last_known_elr` are Kafka's EligibleLeaderReplicas and LastKnownElr
    (KIP-966), empty unless `eligible.leader.replicas.version` is on.
    """

    topic_id: str
    partition: int
    replicas: tuple[int, ...]
    isr: tuple[int, ...]
    leader: int
    leader_epoch: int
    partition_epoch: int
    elr: tuple[int, ...] = ()
    last_known_elr: tuple[int, ...] = ()
    adding_replicas: tuple[int, ...] = ()
    removing_replicas: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class PartitionChangeRecord:
    """A change to a partition: None fields are unchanged.

    Replaying it bumps the partition epoch, and the leader epoch when the leader moves
    or a replica leaves the replica set (a finished reassignment), as Kafka's
    PartitionChangeBuilder does. `adding_replicas` and `removing_replicas` are Kafka's
    fields of an ongoing reassignment (KIP-455): `replicas` then holds the target
    replicas followed by the ones being removed.
    """

    topic_id: str
    partition: int
    leader: int | None = None
    isr: tuple[int, ...] | None = None
    elr: tuple[int, ...] | None = None
    last_known_elr: tuple[int, ...] | None = None
    replicas: tuple[int, ...] | None = None
    adding_replicas: tuple[int, ...] | None = None
    removing_replicas: tuple[int, ...] | None = None


@dataclass(frozen=True, slots=True)
class UnregisterBrokerRecord:
    """A broker is removed from the cluster for good (UnregisterBroker, decommission)."""

    broker_id: int
    broker_epoch: int


MetadataRecord = (
    RegisterBrokerRecord
    | FenceBrokerRecord
    | UnfenceBrokerRecord
    | TopicRecord
    | RemoveTopicRecord
    | PartitionRecord
    | PartitionChangeRecord
    | UnregisterBrokerRecord
)
