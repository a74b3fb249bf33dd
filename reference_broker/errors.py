"""Kafka error codes and the exceptions the broker raises internally to carry them.

The numbers are Kafka's (clients/src/main/java/org/apache/kafka/common/protocol/Errors.java);
a handler catches `BrokerError` and puts `.code` into the response.
"""

from __future__ import annotations

from enum import IntEnum


class ErrorCode(IntEnum):
    """Kafka protocol error codes used by the reference broker."""

    UNKNOWN_SERVER_ERROR = -1
    NONE = 0
    OFFSET_OUT_OF_RANGE = 1
    CORRUPT_MESSAGE = 2
    UNKNOWN_TOPIC_OR_PARTITION = 3
    INVALID_FETCH_SIZE = 4
    LEADER_NOT_AVAILABLE = 5
    NOT_LEADER_OR_FOLLOWER = 6
    REQUEST_TIMED_OUT = 7
    BROKER_NOT_AVAILABLE = 8
    REPLICA_NOT_AVAILABLE = 9
    MESSAGE_TOO_LARGE = 10
    OFFSET_METADATA_TOO_LARGE = 12
    NETWORK_EXCEPTION = 13
    COORDINATOR_LOAD_IN_PROGRESS = 14
    COORDINATOR_NOT_AVAILABLE = 15
    NOT_COORDINATOR = 16
    INVALID_TOPIC_EXCEPTION = 17
    RECORD_LIST_TOO_LARGE = 18
    NOT_ENOUGH_REPLICAS = 19
    NOT_ENOUGH_REPLICAS_AFTER_APPEND = 20
    INVALID_REQUIRED_ACKS = 21
    ILLEGAL_GENERATION = 22
    INCONSISTENT_GROUP_PROTOCOL = 23
    INVALID_GROUP_ID = 24
    UNKNOWN_MEMBER_ID = 25
    INVALID_SESSION_TIMEOUT = 26
    REBALANCE_IN_PROGRESS = 27
    INVALID_COMMIT_OFFSET_SIZE = 28
    TOPIC_AUTHORIZATION_FAILED = 29
    CLUSTER_AUTHORIZATION_FAILED = 31
    INVALID_TIMESTAMP = 32
    UNSUPPORTED_VERSION = 35
    TOPIC_ALREADY_EXISTS = 36
    INVALID_PARTITIONS = 37
    INVALID_REPLICATION_FACTOR = 38
    INVALID_REPLICA_ASSIGNMENT = 39
    INVALID_CONFIG = 40
    NOT_CONTROLLER = 41
    INVALID_REQUEST = 42
    POLICY_VIOLATION = 44
    OUT_OF_ORDER_SEQUENCE_NUMBER = 45
    DUPLICATE_SEQUENCE_NUMBER = 46
    INVALID_PRODUCER_EPOCH = 47
    INVALID_TXN_STATE = 48
    INVALID_PRODUCER_ID_MAPPING = 49
    INVALID_TRANSACTION_TIMEOUT = 50
    CONCURRENT_TRANSACTIONS = 51
    TRANSACTION_COORDINATOR_FENCED = 52
    OPERATION_NOT_ATTEMPTED = 55
    KAFKA_STORAGE_ERROR = 56
    UNKNOWN_PRODUCER_ID = 59
    NON_EMPTY_GROUP = 68
    GROUP_ID_NOT_FOUND = 69
    FETCH_SESSION_ID_NOT_FOUND = 70
    INVALID_FETCH_SESSION_EPOCH = 71
    FENCED_LEADER_EPOCH = 74
    UNKNOWN_LEADER_EPOCH = 75
    UNSUPPORTED_COMPRESSION_TYPE = 76
    STALE_BROKER_EPOCH = 77
    OFFSET_NOT_AVAILABLE = 78
    MEMBER_ID_REQUIRED = 79
    GROUP_MAX_SIZE_REACHED = 81
    FENCED_INSTANCE_ID = 82
    INVALID_RECORD = 87
    UNSTABLE_OFFSET_COMMIT = 88
    PRODUCER_FENCED = 90
    INVALID_UPDATE_VERSION = 95
    UNKNOWN_TOPIC_ID = 100
    DUPLICATE_BROKER_REGISTRATION = 101
    INCONSISTENT_CLUSTER_ID = 104
    INELIGIBLE_REPLICA = 107


class BrokerError(Exception):
    """An error the broker reports to a client as a Kafka error code."""

    code: ErrorCode = ErrorCode.UNKNOWN_SERVER_ERROR

    def __init__(self, message: str = "", code: ErrorCode | None = None) -> None:
        super().__init__(message or self.__class__.__name__)
        if code is not None:
            self.code = code


class OffsetOutOfRangeError(BrokerError):
    code = ErrorCode.OFFSET_OUT_OF_RANGE


class CorruptRecordError(BrokerError):
    code = ErrorCode.CORRUPT_MESSAGE


class UnknownTopicOrPartitionError(BrokerError):
    code = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION


class NotLeaderOrFollowerError(BrokerError):
    code = ErrorCode.NOT_LEADER_OR_FOLLOWER


class MessageTooLargeError(BrokerError):
    code = ErrorCode.MESSAGE_TOO_LARGE


class RecordListTooLargeError(BrokerError):
    code = ErrorCode.RECORD_LIST_TOO_LARGE


class InvalidRecordError(BrokerError):
    code = ErrorCode.INVALID_RECORD


class InvalidTimestampError(BrokerError):
    code = ErrorCode.INVALID_TIMESTAMP


class InvalidTxnStateError(BrokerError):
    code = ErrorCode.INVALID_TXN_STATE


class NotEnoughReplicasError(BrokerError):
    code = ErrorCode.NOT_ENOUGH_REPLICAS


class OutOfOrderSequenceError(BrokerError):
    code = ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER


class InvalidProducerEpochError(BrokerError):
    code = ErrorCode.INVALID_PRODUCER_EPOCH


class UnknownProducerIdError(BrokerError):
    code = ErrorCode.UNKNOWN_PRODUCER_ID


class UnsupportedCompressionTypeError(BrokerError):
    code = ErrorCode.UNSUPPORTED_COMPRESSION_TYPE


class FencedLeaderEpochError(BrokerError):
    code = ErrorCode.FENCED_LEADER_EPOCH


class UnknownLeaderEpochError(BrokerError):
    code = ErrorCode.UNKNOWN_LEADER_EPOCH


class KafkaStorageError(BrokerError):
    code = ErrorCode.KAFKA_STORAGE_ERROR


class InvalidRequestError(BrokerError):
    code = ErrorCode.INVALID_REQUEST


class TransactionCoordinatorFencedError(BrokerError):
    """A transaction marker from a coordinator older than one this partition heard from."""

    code = ErrorCode.TRANSACTION_COORDINATOR_FENCED
