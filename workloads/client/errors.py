"""Exceptions of faultline's Kafka client, and what each one means for a history.

Every send either succeeds with a partition and offset, or fails with exactly one of
two kinds of exception, and the difference is the whole point of a Jepsen history:

`DefiniteFailure` -> the history records `fail`
    The client *knows* the records were not appended. Either no request carrying
    them ever left this process (the batch expired in the accumulator, the
    topic does not exist, the message is over `max.request.size`), or every request
    that did leave was answered by the broker with one of the `NOT_APPENDED` codes:
    errors Kafka returns only for a batch it rejected before writing anything.

`UnknownOutcome` -> the history records `info`
    Anything else. At least one request carrying the records was written to the
    connection and either no answer came back for it (the request timed out, the
    connection dropped, the answer was unreadable) or the answer was not one of the
    `NOT_APPENDED` codes: REQUEST_TIMED_OUT and NOT_ENOUGH_REPLICAS_AFTER_APPEND (the
    leader appended but could not replicate in time), NOT_LEADER_OR_FOLLOWER (under
    acks=all a leader appends first and answers it when it loses leadership while
    waiting for the ISR, as Kafka's DelayedProduce does; the client cannot tell that
    from a refusal, so it never claims one), KAFKA_STORAGE_ERROR (the disk failed
    somewhere in the write), UNKNOWN_SERVER_ERROR, and every code this client does
    not know. The records may be in the log now, may appear later, or may never
    appear. A checker must treat them as "maybe".

The history's `fail` is a claim faultline makes, and the checker trusts it (a failed
value that is read is an `aborted-read`). In the simulation the harness checks every
`fail` against everything the brokers ever appended (`harness.oracle`), and a wrong
one is a harness error, never an anomaly of the system.

A retry after an unknown attempt that then fails definitively is still unknown:
the earlier attempt may have landed. The client tracks this per batch
(`maybe_appended`) rather than per attempt, which is why a `DefiniteFailure` can be
trusted.

The other exceptions are configuration or environment problems; their messages say
what to change.
"""

from __future__ import annotations

import kafka.errors as kafka_errors


class KafkaClientError(Exception):
    """Base class of every error raised by faultline's Kafka client."""


class DefiniteFailure(KafkaClientError):
    """The operation certainly did not take effect (history type `fail`)."""


class UnknownOutcome(KafkaClientError):
    """The operation may or may not have taken effect (history type `info`)."""


class BrokerError(KafkaClientError):
    """The broker answered with a Kafka error code."""

    def __init__(self, code: int, context: str, hint: str = "") -> None:
        self.code = code
        self.name = error_name(code)
        self.retriable = is_retriable(code)
        text = f"{context}: broker returned {self.name} ({code})"
        if hint:
            text += f"; {hint}"
        super().__init__(text)


class RetriesExhaustedError(KafkaClientError):
    """A retriable error outlasted `retries` or `delivery.timeout.ms`.

    `code` is the broker's error code from the last attempt, None when the last attempt
    failed without an answer (a timeout or a lost connection).
    """

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class ProduceFailed(DefiniteFailure):
    """A batch was rejected by the broker and not appended."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class MessageTooLargeError(DefiniteFailure):
    """A record is over `max.request.size` (client) or the broker's `message.max.bytes`."""


class ProduceOutcomeUnknown(UnknownOutcome):
    """A batch was sent and its fate is unknown (timeout, disconnect, unreplicated append)."""


class CommitFailedError(DefiniteFailure):
    """The group coordinator rejected an offset commit (rebalance, fenced member)."""


class BootstrapUnreachableError(KafkaClientError):
    """None of `bootstrap.servers` accepted a connection and answered ApiVersions."""


class ConnectionLostError(KafkaClientError):
    """A broker connection could not be opened, or closed while requests were outstanding.

    `maybe_delivered` is False only when the request certainly never reached the wire.
    """

    def __init__(self, message: str, *, maybe_delivered: bool) -> None:
        super().__init__(message)
        self.maybe_delivered = maybe_delivered


class RequestTimedOutError(KafkaClientError):
    """No response arrived within `request.timeout.ms`; the request may have been processed."""

    maybe_delivered = True


class UnknownTopicError(KafkaClientError):
    """The topic does not exist and the broker would not create it."""


class AuthorizationError(KafkaClientError):
    """The broker refused an operation for lack of authorization."""


class UnsupportedVersionError(KafkaClientError):
    """The broker and this client share no version of an API the client needs."""


class ConfigError(KafkaClientError, ValueError):
    """A client setting has an invalid value."""


class ProtocolViolationError(KafkaClientError):
    """The broker sent bytes that are not a valid response; the connection is closed."""


class GroupError(KafkaClientError):
    """The consumer group could not be joined or kept (see the message)."""


class ProducerFencedError(DefiniteFailure):
    """Another producer with a newer epoch took over this producer id; close this producer."""


# Produce error codes that prove the batch was not appended: Kafka returns each one
# only from a check it makes before writing the batch (KafkaApis.handleProduceRequest,
# ReplicaManager.appendRecords, Partition.appendRecordsToLeader, LogValidator,
# UnifiedLog.analyzeAndValidateRecords, ProducerStateManager), so a batch answered
# with one of them is in no log. Every other answer, and no answer, leaves the batch
# "maybe appended" (see the module docstring). Why each is safe:
NOT_APPENDED: dict[int, str] = {
    2: "CORRUPT_MESSAGE: the batch failed its CRC or framing check (LogValidator)",
    3: "UNKNOWN_TOPIC_OR_PARTITION: the broker hosts no such partition to append to",
    10: "MESSAGE_TOO_LARGE: over max.message.bytes, checked before the append",
    17: "INVALID_TOPIC_EXCEPTION: an internal or illegal topic, refused up front",
    18: "RECORD_LIST_TOO_LARGE: the batch exceeds the segment size, refused up front",
    19: "NOT_ENOUGH_REPLICAS: acks=all with the ISR under min.insync.replicas, checked "
    "before the append (its after-append twin is NOT_ENOUGH_REPLICAS_AFTER_APPEND, 20)",
    21: "INVALID_REQUIRED_ACKS: the request is refused before any partition is touched",
    29: "TOPIC_AUTHORIZATION_FAILED: ACLs are checked before the append",
    31: "CLUSTER_AUTHORIZATION_FAILED: ACLs are checked before the append",
    32: "INVALID_TIMESTAMP: LogValidator refuses the batch before the append",
    35: "UNSUPPORTED_VERSION: the request is refused before it is read",
    43: "UNSUPPORTED_FOR_MESSAGE_FORMAT: LogValidator refuses the batch",
    45: "OUT_OF_ORDER_SEQUENCE_NUMBER: the producer-state check before the append failed",
    47: "INVALID_PRODUCER_EPOCH: the producer-state check before the append failed",
    53: "TRANSACTIONAL_ID_AUTHORIZATION_FAILED: ACLs are checked before the append",
    59: "UNKNOWN_PRODUCER_ID: the producer-state check before the append failed",
    76: "UNSUPPORTED_COMPRESSION_TYPE: LogValidator refuses the batch",
    87: "INVALID_RECORD: LogValidator refuses the batch",
    90: "PRODUCER_FENCED: the producer-state check before the append failed",
}

# Codes that say the client's metadata is stale: refresh before retrying.
STALE_METADATA = frozenset({3, 5, 6, 9, 74, 75})

# Codes Kafka marks retriable (Errors.java / RetriableException), plus the coordinator ones.
_RETRIABLE = frozenset({3, 5, 6, 7, 8, 9, 13, 14, 15, 16, 19, 20, 56, 74, 75, 78, 89})

_AUTHORIZATION = frozenset({29, 30, 31, 53})


def error_name(code: int) -> str:
    """Kafka's name of an error code, e.g. 6 -> NOT_LEADER_OR_FOLLOWER."""
    if code == 6:
        return "NOT_LEADER_OR_FOLLOWER"
    try:
        return kafka_errors.for_code(code).message
    except Exception:
        return f"UNKNOWN_ERROR_CODE_{code}"


def proves_not_appended(code: int) -> bool:
    """Whether a Produce answer with this error code proves the batch is in no log."""
    return code in NOT_APPENDED


def is_retriable(code: int) -> bool:
    """Whether Kafka defines this error as transient (worth a retry after backoff)."""
    return code in _RETRIABLE


def is_authorization(code: int) -> bool:
    """Whether this error code means the principal lacks an ACL."""
    return code in _AUTHORIZATION


def raise_for_code(code: int, context: str) -> None:
    """Raise the exception that fits a non-zero top-level error code, with a hint."""
    if code == 0:
        return
    if is_authorization(code):
        raise AuthorizationError(
            f"{context}: broker returned {error_name(code)} ({code}); grant this client's "
            "principal the needed ACL on the broker, or connect as another principal"
        )
    if code == 35:
        raise UnsupportedVersionError(
            f"{context}: broker returned UNSUPPORTED_VERSION (35); the broker is older or "
            "newer than this client supports, upgrade one of them"
        )
    raise BrokerError(code, context)


class TransactionAbortableError(KafkaClientError):
    """The transaction cannot commit (a send failed, the coordinator refused a step):
    `abort_transaction()` recovers, and the producer goes on with a new transaction."""


class TransactionFatalError(KafkaClientError):
    """The transactional producer cannot go on: a newer instance with the same
    transactional.id fenced it, or the broker refused it the id. Close it; a new
    producer with the same transactional.id takes over."""


class TransactionOutcomeUnknown(UnknownOutcome):
    """EndTxn (commit) was sent and not answered in time: the transaction may have
    committed or aborted. A new instance of the transactional.id settles it."""
