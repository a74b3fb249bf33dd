"""Cluster metadata of the node: topic registry and producer-id blocks, persisted in storage."""

from .producer_ids import ProducerIdManager
from .store import MetadataCorruptError, MetadataMissingError, MetadataStore, TopicRecord
from .topics import (
    INTERNAL_TOPICS,
    InvalidTopicError,
    TopicExistsError,
    TopicRegistry,
    validate_topic_name,
)

__all__ = [
    "INTERNAL_TOPICS",
    "InvalidTopicError",
    "MetadataCorruptError",
    "MetadataMissingError",
    "MetadataStore",
    "ProducerIdManager",
    "TopicExistsError",
    "TopicRecord",
    "TopicRegistry",
    "validate_topic_name",
]
