"""faultline's own trio Kafka client: producer, consumer and group member.

It runs over real TCP and inside the deterministic simulation alike: it dials
through an injected `Network`, reads time only from trio's clock (and an injected
`clock_ms` for record timestamps) and draws randomness from an injected rng.
"""

from .cluster import Cluster, TopicPartition
from .config import ConsumerConfig, ProducerConfig
from .errors import (
    AuthorizationError,
    BootstrapUnreachableError,
    CommitFailedError,
    DefiniteFailure,
    KafkaClientError,
    MessageTooLargeError,
    TransactionAbortableError,
    TransactionFatalError,
    TransactionOutcomeUnknown,
    UnknownOutcome,
    UnknownTopicError,
    UnsupportedVersionError,
)
from .producer import Delivery, Producer, RecordMetadata
from .transport import Network, TcpNetwork

__all__ = [
    "AuthorizationError",
    "BootstrapUnreachableError",
    "Cluster",
    "CommitFailedError",
    "ConsumerConfig",
    "DefiniteFailure",
    "Delivery",
    "KafkaClientError",
    "MessageTooLargeError",
    "Network",
    "Producer",
    "ProducerConfig",
    "RecordMetadata",
    "TcpNetwork",
    "TopicPartition",
    "TransactionAbortableError",
    "TransactionFatalError",
    "TransactionOutcomeUnknown",
    "UnknownOutcome",
    "UnknownTopicError",
    "UnsupportedVersionError",
]
