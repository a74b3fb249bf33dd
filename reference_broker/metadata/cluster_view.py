"""What a broker in a KRaft cluster reads from the replicated metadata image.

In cluster mode the controller quorum's log is the truth about topics, partitions
and brokers. `ClusterView` answers the broker's questions from the latest image its
node has replayed (a follower's image may lag the active controller's by a fetch,
exactly as a Kafka broker's metadata cache does) and sends topic changes to the
active controller through the `ControllerClient`.

It offers the same read interface as the single-node `TopicRegistry` (`in`,
iteration, `get`), so handlers that list topics work in both modes.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import trio

from ..config import BrokerConfig, Listener
from ..controller.records import NO_LEADER
from ..errors import BrokerError, ErrorCode
from ..replication.assignment import PartitionAssignment
from .store import TopicRecord
from .topics import INTERNAL_TOPICS, InvalidTopicError, validate_topic_name

if TYPE_CHECKING:
    from ..controller.metadata import MetadataImage


class TopicAdmin(Protocol):
    """Topic changes, as the active controller serves them (ControllerClient)."""

    async def create_topic(
        self,
        name: str,
        partitions: int,
        replication_factor: int,
        configs: Mapping[str, str],
        *,
        validate_only: bool = False,
    ) -> ErrorCode: ...

    async def delete_topic(self, name: str) -> ErrorCode: ...


class ImageSource(Protocol):
    """The node's replayed metadata (ControllerService)."""

    image: MetadataImage
    image_version: int

    @property
    def active_id(self) -> int | None: ...

    async def wait_image_change(self, seen_version: int) -> int: ...


@dataclass(frozen=True)
class LiveBroker:
    """A registered, unfenced broker as Metadata lists it."""

    node_id: int
    host: str
    port: int


class ClusterView:
    """Topics, partition assignments and brokers of the node's current metadata image."""

    def __init__(self, config: BrokerConfig, source: ImageSource, admin: TopicAdmin) -> None:
        self.config = config
        self._source = source
        self._admin = admin

    @property
    def image(self) -> MetadataImage:
        """The latest image this node replayed."""
        return self._source.image

    # -- reading (the TopicRegistry interface) ------------------------------------------------

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self.image.topics

    def __iter__(self) -> Iterator[TopicRecord]:
        for name in sorted(self.image.topics):
            if name in INTERNAL_TOPICS:
                continue
            record = self.get(name)
            if record is not None:
                yield record

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def get(self, name: str) -> TopicRecord | None:
        """The topic as a TopicRecord (partitions, replication factor, config overrides)."""
        topic_id = self.image.topics.get(name)
        if topic_id is None:
            return None
        partitions = self.image.partitions_of(topic_id)
        factor = len(partitions[0][1].replicas) if partitions else 0
        return TopicRecord(
            name=name,
            topic_id=_canonical_uuid(topic_id),
            partitions=len(partitions),
            replication_factor=factor,
            configs=dict(self.image.topic_configs.get(topic_id, ())),
        )

    def assignment(self, topic: str, partition: int) -> PartitionAssignment | None:
        """Replicas, ISR, leader and epochs of one partition, None if unknown."""
        topic_id = self.image.topics.get(topic)
        if topic_id is None:
            return None
        state = self.image.partitions.get((topic_id, partition))
        if state is None:
            return None
        return PartitionAssignment(
            topic=topic,
            partition=partition,
            replicas=tuple(state.replicas),
            isr=tuple(state.isr),
            leader=state.leader,
            leader_epoch=state.leader_epoch,
            partition_epoch=state.partition_epoch,
        )

    def assignments(self) -> Iterator[PartitionAssignment]:
        """Every partition of every topic (internal ones included)."""
        for name, topic_id in sorted(self.image.topics.items()):
            for index, _state in self.image.partitions_of(topic_id):
                found = self.assignment(name, index)
                if found is not None:
                    yield found

    def live_brokers(self) -> list[LiveBroker]:
        """Registered, unfenced brokers, by id (Metadata's broker list)."""
        return [
            LiveBroker(b.broker_id, b.host, b.port)
            for b in sorted(self.image.brokers.values(), key=lambda b: b.broker_id)
            if not b.fenced
        ]

    def endpoints(self) -> dict[int, Listener]:
        """How this node dials every registered broker (faultline.peer, voters, registered)."""
        found: dict[int, Listener] = {}
        for broker in self.image.brokers.values():
            address = self.config.peer_address(
                broker.broker_id, Listener(broker.host, broker.port)
            )
            if address is not None:
                found[broker.broker_id] = address
        return found

    def endpoint_of(self, broker_id: int) -> LiveBroker | None:
        """A registered broker's advertised endpoint (fenced or not)."""
        broker = self.image.brokers.get(broker_id)
        if broker is None:
            return None
        return LiveBroker(broker.broker_id, broker.host, broker.port)

    @property
    def controller_id(self) -> int:
        """The active controller's id as this node knows it, -1 when unknown."""
        active = self._source.active_id
        return -1 if active is None else active

    def leader_of(self, topic: str, partition: int) -> int:
        """The partition's leader id, -1 (NO_LEADER) when it has none or is unknown."""
        found = self.assignment(topic, partition)
        return NO_LEADER if found is None else found.leader

    # -- changing (through the active controller) -----------------------------------------------

    async def create_topic(
        self,
        name: str,
        num_partitions: int = -1,
        replication_factor: int = -1,
        configs: Mapping[str, str] | None = None,
        *,
        validate_only: bool = False,
        internal: bool = False,
    ) -> TopicRecord | None:
        """Ask the active controller for a topic; wait until this node's image has it.

        -1 means the broker default (num.partitions, default.replication.factor).
        Raises BrokerError with Kafka's code on refusal.
        """
        validate_topic_name(name)
        if name in INTERNAL_TOPICS and not internal:
            raise InvalidTopicError(f"{name} is an internal topic and cannot be created")
        partitions = self.config.num_partitions if num_partitions == -1 else num_partitions
        factor = (
            self.config.default_replication_factor
            if replication_factor == -1
            else replication_factor
        )
        code = await self._admin.create_topic(
            name, partitions, factor, dict(configs or {}), validate_only=validate_only
        )
        if code is not ErrorCode.NONE:
            raise BrokerError(
                f"the controller refused to create topic {name!r}: {code.name}", code
            )
        if validate_only:
            return None
        # Committed at the active controller; this node's image catches up within a fetch.
        with trio.move_on_after(self.config.controller_quorum_request_timeout_ms / 1000):
            version = self._source.image_version
            while self.get(name) is None:
                version = await self._source.wait_image_change(version)
        return self.get(name)

    async def ensure_topic(self, name: str) -> TopicRecord | None:
        """The topic, auto-created with defaults if auto.create.topics.enable; else None."""
        record = self.get(name)
        if record is not None or not self.config.auto_create_topics_enable:
            return record
        try:
            return await self.create_topic(name)
        except BrokerError as exc:
            if exc.code == ErrorCode.TOPIC_ALREADY_EXISTS:
                return self.get(name)
            raise

    async def delete_topic(self, name: str) -> None:
        """Ask the active controller to delete a topic; raises BrokerError on refusal."""
        code = await self._admin.delete_topic(name)
        if code is not ErrorCode.NONE:
            raise BrokerError(f"the controller refused to delete topic {name!r}: {code.name}", code)
        with trio.move_on_after(self.config.controller_quorum_request_timeout_ms / 1000):
            version = self._source.image_version
            while name in self:
                version = await self._source.wait_image_change(version)


def _canonical_uuid(topic_id: str) -> str:
    # The controller's ids are UUID strings; anything else is mapped to a stable UUID so
    # that Metadata can always carry it.
    try:
        return str(uuid.UUID(topic_id))
    except ValueError:
        return str(uuid.uuid5(uuid.NAMESPACE_OID, topic_id))
