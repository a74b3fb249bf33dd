"""`__transaction_state` records: one per change of a transactional id's metadata.

Kafka's TransactionLog format, version 0 of key and value:

- key: int16 version 0, string transactional id;
- value: int16 version 0, int64 producer id, int16 producer epoch, int32 transaction
  timeout ms, int8 state, array of (string topic, array of int32 partition), int64 last
  update timestamp ms, int64 transaction start timestamp ms.

Replaying a partition's records in order, the last one per key wins, rebuilds every
transactional id it holds; a null value (tombstone) removes one.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

TopicPartition = tuple[str, int]

_VERSION = struct.Struct(">h")
_STRING_LENGTH = struct.Struct(">h")
_VALUE_HEAD = struct.Struct(">hqhib")
_COUNT = struct.Struct(">i")
_PARTITION = struct.Struct(">i")
_TIMES = struct.Struct(">qq")


class TxnRecordError(ValueError):
    """A `__transaction_state` record that does not decode."""


class TxnState(enum.IntEnum):
    """A transactional id's state, with Kafka's numbers (TransactionState.id)."""

    EMPTY = 0
    ONGOING = 1
    PREPARE_COMMIT = 2
    PREPARE_ABORT = 3
    COMPLETE_COMMIT = 4
    COMPLETE_ABORT = 5
    DEAD = 6
    PREPARE_EPOCH_FENCE = 7

    @property
    def preparing(self) -> bool:
        """Whether the outcome is decided and markers may still be missing."""
        return self in (TxnState.PREPARE_COMMIT, TxnState.PREPARE_ABORT)

    @property
    def completed(self) -> bool:
        """Whether no transaction is open (a new one may begin)."""
        return self in (TxnState.EMPTY, TxnState.COMPLETE_COMMIT, TxnState.COMPLETE_ABORT)


@dataclass(frozen=True, slots=True)
class TxnMetadata:
    """What the coordinator knows of one transactional id."""

    transactional_id: str
    producer_id: int
    producer_epoch: int
    timeout_ms: int
    state: TxnState
    partitions: frozenset[TopicPartition] = frozenset()
    update_ms: int = -1
    start_ms: int = -1


def _string(text: str) -> bytes:
    data = text.encode()
    return _STRING_LENGTH.pack(len(data)) + data


def _read_string(data: bytes, pos: int) -> tuple[str, int]:
    (length,) = _STRING_LENGTH.unpack_from(data, pos)
    pos += _STRING_LENGTH.size
    if length < 0 or pos + length > len(data):
        raise TxnRecordError(f"string of length {length} at byte {pos} overruns the record")
    return data[pos : pos + length].decode(), pos + length


def encode_key(transactional_id: str) -> bytes:
    """The record key of a transactional id."""
    return _VERSION.pack(0) + _string(transactional_id)


def decode_key(data: bytes) -> str:
    """The transactional id of a record key."""
    try:
        (version,) = _VERSION.unpack_from(data, 0)
        if version != 0:
            raise TxnRecordError(f"transaction log key version {version} is unknown")
        txn_id, _ = _read_string(data, _VERSION.size)
    except (struct.error, UnicodeDecodeError) as exc:
        raise TxnRecordError(f"transaction log key does not decode: {exc}") from None
    return txn_id


def encode_value(meta: TxnMetadata) -> bytes:
    """The record value of a transactional id's metadata."""
    by_topic: dict[str, list[int]] = {}
    for topic, partition in sorted(meta.partitions):
        by_topic.setdefault(topic, []).append(partition)
    parts = [
        _VALUE_HEAD.pack(
            0, meta.producer_id, meta.producer_epoch, meta.timeout_ms, int(meta.state)
        ),
        _COUNT.pack(len(by_topic)),
    ]
    for topic, indexes in by_topic.items():
        parts.append(_string(topic))
        parts.append(_COUNT.pack(len(indexes)))
        parts.extend(_PARTITION.pack(i) for i in indexes)
    parts.append(_TIMES.pack(meta.update_ms, meta.start_ms))
    return b"".join(parts)


def decode_value(transactional_id: str, data: bytes) -> TxnMetadata:
    """A transactional id's metadata from its record value."""
    try:
        version, pid, epoch, timeout_ms, state = _VALUE_HEAD.unpack_from(data, 0)
        if version != 0:
            raise TxnRecordError(f"transaction log value version {version} is unknown")
        pos = _VALUE_HEAD.size
        (topics,) = _COUNT.unpack_from(data, pos)
        pos += _COUNT.size
        partitions: set[TopicPartition] = set()
        for _ in range(topics):
            topic, pos = _read_string(data, pos)
            (count,) = _COUNT.unpack_from(data, pos)
            pos += _COUNT.size
            for _ in range(count):
                (index,) = _PARTITION.unpack_from(data, pos)
                pos += _PARTITION.size
                partitions.add((topic, index))
        update_ms, start_ms = _TIMES.unpack_from(data, pos)
        return TxnMetadata(
            transactional_id,
            pid,
            epoch,
            timeout_ms,
            TxnState(state),
            frozenset(partitions),
            update_ms,
            start_ms,
        )
    except (struct.error, UnicodeDecodeError, ValueError) as exc:
        if isinstance(exc, TxnRecordError):
            raise
        raise TxnRecordError(f"transaction log value does not decode: {exc}") from None
