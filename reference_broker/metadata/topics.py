"""The topic registry: which topics exist, with their ids, partition counts and configs."""

from __future__ import annotations

import random
import re
from collections.abc import Iterator, Mapping

from ..errors import BrokerError, ErrorCode
from .store import MetadataStore, TopicRecord, random_uuid

MAX_TOPIC_NAME_LENGTH = 249
_LEGAL_NAME = re.compile(r"[a-zA-Z0-9._-]+")
# Topics the broker itself owns: never auto-created, deleted or listed for clients. Their logs
# are left alone at startup even though the registry does not name them.
INTERNAL_TOPICS = frozenset({"__consumer_offsets", "__transaction_state", "__cluster_metadata"})


class InvalidTopicError(BrokerError):
    """A topic name Kafka would not accept, or an internal topic."""

    code = ErrorCode.INVALID_TOPIC_EXCEPTION


class TopicExistsError(BrokerError):
    """CreateTopics for a name that is already registered."""

    code = ErrorCode.TOPIC_ALREADY_EXISTS


def validate_topic_name(name: str) -> None:
    """Kafka's rules (Topic.validate): 1..249 chars of [a-zA-Z0-9._-], not '.' or '..'."""
    if not name:
        raise InvalidTopicError("topic name is empty")
    if name in (".", ".."):
        raise InvalidTopicError(f"topic name cannot be {name!r}")
    if len(name) > MAX_TOPIC_NAME_LENGTH:
        raise InvalidTopicError(
            f"topic name is {len(name)} characters; the limit is {MAX_TOPIC_NAME_LENGTH}"
        )
    if not _LEGAL_NAME.fullmatch(name):
        raise InvalidTopicError(
            f"topic name {name!r} has characters outside ASCII letters, digits, '.', '_', '-'"
        )


class TopicRegistry:
    """The topics of the cluster, kept in the node's `MetadataStore`."""

    def __init__(self, store: MetadataStore, rng: random.Random) -> None:
        self._store = store
        self._rng = rng

    def __contains__(self, name: object) -> bool:
        return name in self._store.state.topics

    def __iter__(self) -> Iterator[TopicRecord]:
        return iter(list(self._store.state.topics.values()))

    def __len__(self) -> int:
        return len(self._store.state.topics)

    def get(self, name: str) -> TopicRecord | None:
        """The topic named `name`, or None."""
        return self._store.state.topics.get(name)

    async def create(
        self, name: str, partitions: int, replication_factor: int, configs: Mapping[str, str]
    ) -> TopicRecord:
        """Register a new topic durably; raises TopicExistsError or InvalidTopicError."""
        validate_topic_name(name)
        if name in self._store.state.topics:
            raise TopicExistsError(f"topic {name!r} already exists")
        record = TopicRecord(
            name=name,
            topic_id=str(random_uuid(self._rng)),
            partitions=partitions,
            replication_factor=replication_factor,
            configs=dict(configs),
        )
        self._store.state.topics[name] = record
        deleted = self._store.state.deleted_topics.pop(name, None)
        try:
            await self._store.save()
        except Exception:
            # Not saved (EMFILE opening the temporary file, a failed fsync): the topic must
            # not exist in memory either, or the next successful save would persist it.
            self._store.state.topics.pop(name, None)
            if deleted is not None:
                self._store.state.deleted_topics[name] = deleted
            raise
        return record

    @property
    def partition_count(self) -> int:
        """Partitions of every registered topic together."""
        return sum(record.partitions for record in self._store.state.topics.values())

    async def delete(self, name: str) -> TopicRecord | None:
        """Forget a topic durably; returns its record, or None if it did not exist."""
        record = self._store.state.topics.pop(name, None)
        if record is not None:
            # Remembered so that a restart after a crash mid-deletion may finish it.
            self._store.state.deleted_topics[name] = record.topic_id
            await self._store.save()
        return record

    def was_deleted(self, name: str) -> bool:
        """Whether the metadata records that topic `name` was deleted (and not recreated)."""
        return name in self._store.state.deleted_topics and name not in self._store.state.topics
