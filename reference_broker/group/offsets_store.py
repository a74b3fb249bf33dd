"""Committed offsets: written to and replayed from the `__consumer_offsets` partition logs.

Every commit is one record batch (one record per partition) appended to the partition of
`__consumer_offsets` that owns the group, exactly as Kafka's GroupMetadataManager does. The
in-memory view is updated only once the append is complete (high watermark moved and, if
the log's flush policy says so, fsynced), so a fetch never returns an offset that a crash
could still take back. On start the logs are replayed, last record wins; a null value is a
tombstone.

Group metadata (GroupMetadataKey/Value: generation, leader, members) lives in the same
partition as the group's offsets, so a restarted coordinator resumes each group at the
generation it last stored instead of handing generation numbers out a second time.

Transactional offset commits (TxnOffsetCommit) are appended as a transactional batch
carrying the producer's id and epoch, and held pending per producer until the
transaction's marker reaches this partition: COMMIT makes them the group's committed
offsets, ABORT drops them (Kafka's pendingTransactionalOffsetCommits). Replay does the
same with the markers in the log; a transaction still undecided stays pending.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import trio
from kafka.record.default_records import DefaultRecordBatchBuilder
from kafka.record.memory_records import MemoryRecords

from reference_broker.env import Clock
from reference_broker.errors import BrokerError, ErrorCode
from reference_broker.group.records import (
    GroupMetadataKey,
    GroupMetadataValue,
    OffsetCommitKey,
    OffsetsRecordError,
    decode_group_metadata_value,
    decode_key,
    decode_offset_commit_value,
    encode_group_metadata_key,
    encode_group_metadata_value,
    encode_offset_commit_key,
    encode_offset_commit_value,
)
from reference_broker.group.results import OffsetAndMetadata
from reference_broker.log.config import LogConfig
from reference_broker.log.log_manager import LogManager
from reference_broker.log.partition_log import AppendResult, PartitionLog

OFFSETS_TOPIC = "__consumer_offsets"
# Kafka's offsets.topic.segment.bytes default. Kafka compacts this topic; the reference log
# only deletes, so retention is off and replay keeps the last record per key instead.
OFFSETS_LOG_CONFIG = LogConfig(segment_bytes=100 * 1024 * 1024, retention_ms=-1)
_READ_CHUNK_BYTES = 1 << 20

TopicPartition = tuple[str, int]


def java_string_hash(value: str) -> int:
    """Java's String.hashCode: 31-polynomial over UTF-16 code units, as a signed int32."""
    h = 0
    units = value.encode("utf-16-be")
    for i in range(0, len(units), 2):
        h = (31 * h + ((units[i] << 8) | units[i + 1])) & 0xFFFFFFFF
    return h - (1 << 32) if h >= 1 << 31 else h


def partition_for(group_id: str, num_partitions: int) -> int:
    """The `__consumer_offsets` partition of a group: Utils.abs(hashCode) % partitions."""
    h = java_string_hash(group_id)
    # Kafka's Utils.abs maps Integer.MIN_VALUE to 0 rather than overflowing.
    return (0 if h == -(1 << 31) else abs(h)) % num_partitions


class NotCoordinatorError(BrokerError):
    """The group's offsets partition is not led by this node."""

    code = ErrorCode.NOT_LEADER_OR_FOLLOWER


class OffsetsWriter(Protocol):
    """How the store appends to its partitions: locally, or through replication."""

    def append(
        self, partition: int, records: bytes, *, from_coordinator: bool = False
    ) -> AppendResult:
        """Append a batch as the partition's leader; raises BrokerError.

        `from_coordinator`: a transactional offset commit (producer id and epoch, no
        sequence), exempt from the checks of a client's batch."""
        ...

    async def complete(self, partition: int, end_offset: int) -> None:
        """Return once everything below `end_offset` is as durable as a commit must be
        (flush policy; in a cluster, replicated to the ISR); raises BrokerError."""
        ...


class LocalOffsetsWriter:
    """A single node: the node is the ISR, a write is complete once the flush policy ran."""

    def __init__(self, logs: LogManager, clock: Clock) -> None:
        self._logs = logs
        self._clock = clock

    def _log(self, partition: int) -> PartitionLog:
        log = self._logs.get(OFFSETS_TOPIC, partition)
        if log is None:
            raise NotCoordinatorError(f"{OFFSETS_TOPIC}-{partition} has no log on this node")
        return log

    def append(
        self, partition: int, records: bytes, *, from_coordinator: bool = False
    ) -> AppendResult:
        """Append at leader epoch 0; the high watermark follows the log end."""
        log = self._log(partition)
        appended = log.append_as_leader(records, leader_epoch=0, from_coordinator=from_coordinator)
        log.update_high_watermark(log.log_end_offset)
        return appended

    async def complete(self, partition: int, end_offset: int) -> None:
        """Apply the flush policy (the log end covers `end_offset`)."""
        log = self._log(partition)
        if log.flush_due(self._clock.now_ms()):
            await log.flush()


@dataclass(frozen=True)
class _Committed:
    value: OffsetAndMetadata
    log_offset: int  # where the record sits in the group's partition: later wins


class OffsetsStore:
    """Committed offsets of every group, durable in `__consumer_offsets`."""

    def __init__(
        self,
        logs: LogManager,
        clock: Clock,
        num_partitions: int,
        log_config: LogConfig = OFFSETS_LOG_CONFIG,
        writer: OffsetsWriter | None = None,
    ) -> None:
        self._logs = logs
        self._writer = writer or LocalOffsetsWriter(logs, clock)
        self._clock = clock
        self._num_partitions = num_partitions
        self._log_config = log_config
        self._partitions: dict[int, PartitionLog] = {}
        self._offsets: dict[str, dict[TopicPartition, _Committed]] = {}
        # The last GroupMetadataValue of every group that has one and was not deleted.
        self._group_metadata: dict[str, GroupMetadataValue] = {}
        # Transactional commits awaiting their marker: producer id -> group -> offsets,
        # each with the producer epoch that wrote it.
        self._pending: dict[int, dict[str, dict[TopicPartition, tuple[_Committed, int]]]] = {}

    def partition_for(self, group_id: str) -> int:
        """The `__consumer_offsets` partition that stores this group."""
        return partition_for(group_id, self._num_partitions)

    def groups(self) -> set[str]:
        """Groups with at least one committed offset or a stored group metadata record."""
        return {g for g, offsets in self._offsets.items() if offsets} | set(self._group_metadata)

    def group_metadata(self, group_id: str) -> GroupMetadataValue | None:
        """The group's last stored metadata (generation, leader, members), None if none."""
        return self._group_metadata.get(group_id)

    def use_writer(self, writer: OffsetsWriter) -> None:
        """Append through `writer` from now on."""
        self._writer = writer

    @property
    def num_partitions(self) -> int:
        """How many partitions `__consumer_offsets` has."""
        return self._num_partitions

    def owns(self, partition: int) -> bool:
        """Whether `partition` is loaded here (this node coordinates its groups)."""
        return partition in self._partitions

    async def load(self) -> None:
        """Open (creating if needed) every partition and replay the committed offsets.

        The single-node mode: this node is the whole ISR of every partition.
        """
        self._partitions = {}
        self._offsets = {}
        self._group_metadata = {}
        for partition in range(self._num_partitions):
            log = self._logs.get(OFFSETS_TOPIC, partition)
            if log is None:
                log = self._logs.create(OFFSETS_TOPIC, partition, self._log_config)
            self.load_partition(partition, log)
            # One node is the whole ISR: everything in the log is committed.
            log.update_high_watermark(log.log_end_offset)
            await trio.lowlevel.checkpoint()

    def load_partition(self, partition: int, log: PartitionLog) -> set[str]:
        """Replay one partition this node now leads (Kafka's loadGroupsAndOffsets).

        Returns the groups it holds. Reads to the log end, as Kafka does: a new leader's
        log is the partition's truth.
        """
        self.unload_partition(partition)
        self._partitions[partition] = log
        self._replay(partition, log)
        return {g for g in self.groups() if self.partition_for(g) == partition}

    def unload_partition(self, partition: int) -> set[str]:
        """Forget a partition this node no longer leads; returns the groups that went."""
        self._partitions.pop(partition, None)
        gone = {g for g in self.groups() if self.partition_for(g) == partition}
        for group_id in gone:
            self._offsets.pop(group_id, None)
            self._group_metadata.pop(group_id, None)
        for groups in self._pending.values():
            for group_id in [g for g in groups if self.partition_for(g) == partition]:
                del groups[group_id]
        return gone

    def _log_of(self, group_id: str) -> tuple[int, PartitionLog]:
        index = self.partition_for(group_id)
        log = self._partitions.get(index)
        if log is None:
            raise NotCoordinatorError(
                f"{OFFSETS_TOPIC}-{index} (group {group_id!r}) is not led by this node"
            )
        return index, log

    def _replay(self, partition: int, log: PartitionLog) -> None:
        position = log.log_start_offset
        end = log.log_end_offset
        while position < end:
            data = log.read(position, _READ_CHUNK_BYTES, max_offset=end).records
            if not data:
                # Recovery retired offsets up to the log end after damage: nothing follows.
                break
            progressed = False
            records = MemoryRecords(bytes(data))
            while records.has_next():
                batch = records.next_batch()
                next_position = batch.base_offset + batch.last_offset_delta + 1
                if batch.magic >= 2 and batch.is_control_batch:
                    if batch.producer_id >= 0:
                        for control in batch:
                            # kafka-python's ControlRecord: type 1 COMMIT, 0 ABORT.
                            commit = getattr(control, "type", 0) == 1
                            self.complete_transaction(
                                partition, batch.producer_id, batch.producer_epoch, commit
                            )
                elif batch.magic >= 2 and batch.is_transactional:
                    for record in batch:
                        self._apply_pending(
                            partition,
                            batch.producer_id,
                            batch.producer_epoch,
                            record.offset,
                            record.key,
                            record.value,
                        )
                elif batch.magic >= 2:
                    for record in batch:
                        self._apply(partition, record.offset, record.key, record.value)
                if next_position > position:
                    position = next_position
                    progressed = True
            if not progressed:
                raise OffsetsRecordError(
                    f"{OFFSETS_TOPIC}-{partition}: no complete record batch at offset {position} "
                    f"below the log end {end}; the log is damaged"
                )

    def _apply(
        self, partition: int, log_offset: int, key: bytes | None, value: bytes | None
    ) -> None:
        if key is None:
            raise OffsetsRecordError(
                f"{OFFSETS_TOPIC}-{partition} offset {log_offset}: record without a key"
            )
        try:
            decoded = decode_key(bytes(key))
            if isinstance(decoded, GroupMetadataKey):
                if value is None:
                    self._group_metadata.pop(decoded.group, None)
                else:
                    self._group_metadata[decoded.group] = decode_group_metadata_value(bytes(value))
                return
            tp = (decoded.topic, decoded.partition)
            group = self._offsets.setdefault(decoded.group, {})
            if value is None:
                group.pop(tp, None)
            else:
                group[tp] = _Committed(decode_offset_commit_value(bytes(value)), log_offset)
        except OffsetsRecordError as exc:
            raise OffsetsRecordError(
                f"{OFFSETS_TOPIC}-{partition} offset {log_offset}: {exc}"
            ) from None

    def _apply_pending(
        self,
        partition: int,
        producer_id: int,
        producer_epoch: int,
        log_offset: int,
        key: bytes | None,
        value: bytes | None,
    ) -> None:
        if key is None or value is None:
            return
        try:
            decoded = decode_key(bytes(key))
            if isinstance(decoded, GroupMetadataKey):
                return
            committed = _Committed(decode_offset_commit_value(bytes(value)), log_offset)
        except OffsetsRecordError as exc:
            raise OffsetsRecordError(
                f"{OFFSETS_TOPIC}-{partition} offset {log_offset}: {exc}"
            ) from None
        group = self._pending.setdefault(producer_id, {}).setdefault(decoded.group, {})
        group[(decoded.topic, decoded.partition)] = (committed, producer_epoch)

    def complete_transaction(
        self, partition: int, producer_id: int, producer_epoch: int, commit: bool
    ) -> None:
        """A marker reached `partition`: the producer's pending commits of groups stored
        there become committed (COMMIT) or go (ABORT).

        A COMMIT applies only commits written with its own epoch: one an older, fenced
        instance slipped in under the same producer id is dropped, never committed by
        its successor's transaction."""
        groups = self._pending.get(producer_id)
        if not groups:
            return
        for group_id in [g for g in groups if self.partition_for(g) == partition]:
            offsets = groups.pop(group_id)
            if not commit:
                continue
            stored = self._offsets.setdefault(group_id, {})
            for tp, (committed, epoch) in offsets.items():
                if epoch != producer_epoch:
                    continue
                current = stored.get(tp)
                if current is None or current.log_offset < committed.log_offset:
                    stored[tp] = committed
        if not groups:
            del self._pending[producer_id]

    def has_pending(self, group_id: str, tp: TopicPartition) -> bool:
        """Whether a transaction not yet decided commits an offset of `tp` for the group."""
        return any(tp in groups.get(group_id, {}) for groups in self._pending.values())

    async def commit_transactional(
        self,
        group_id: str,
        producer_id: int,
        producer_epoch: int,
        offsets: Mapping[TopicPartition, OffsetAndMetadata],
    ) -> dict[TopicPartition, ErrorCode]:
        """TxnOffsetCommit: append the offsets in the producer's transaction; they stay
        pending until its marker (`complete_transaction`)."""
        if not offsets:
            return {}
        now_ms = self._clock.now_ms()
        stamped = {
            tp: om if om.commit_timestamp_ms >= 0 else replace(om, commit_timestamp_ms=now_ms)
            for tp, om in offsets.items()
        }
        builder = DefaultRecordBatchBuilder(
            magic=2,
            compression_type=0,
            is_transactional=True,
            producer_id=producer_id,
            producer_epoch=producer_epoch,
            base_sequence=-1,
            batch_size=1 << 31,
        )
        for delta, ((topic, partition), om) in enumerate(stamped.items()):
            builder.append(
                delta,
                timestamp=now_ms,
                key=encode_offset_commit_key(OffsetCommitKey(group_id, topic, partition)),
                value=encode_offset_commit_value(om),
                headers=[],
            )
        try:
            index, _log = self._log_of(group_id)
            appended = self._writer.append(index, bytes(builder.build()), from_coordinator=True)
            with trio.CancelScope(shield=True):
                await self._writer.complete(index, appended.last_offset + 1)
        except BrokerError as exc:
            return dict.fromkeys(offsets, _commit_error(exc.code))
        group = self._pending.setdefault(producer_id, {}).setdefault(group_id, {})
        for delta, (tp, om) in enumerate(stamped.items()):
            group[tp] = (_Committed(om, appended.base_offset + delta), producer_epoch)
        return dict.fromkeys(offsets, ErrorCode.NONE)

    async def commit(
        self, group_id: str, offsets: Mapping[TopicPartition, OffsetAndMetadata]
    ) -> dict[TopicPartition, ErrorCode]:
        """Append one batch with these offsets; every partition gets the append's outcome.

        Offsets without a commit timestamp get the node clock's. Append failures map to
        the coordinator errors Kafka gives clients (so they retry or rediscover).
        """
        if not offsets:
            return {}
        now_ms = self._clock.now_ms()
        stamped = {
            tp: om if om.commit_timestamp_ms >= 0 else replace(om, commit_timestamp_ms=now_ms)
            for tp, om in offsets.items()
        }
        builder = _batch_builder()
        for delta, ((topic, partition), om) in enumerate(stamped.items()):
            builder.append(
                delta,
                timestamp=now_ms,
                key=encode_offset_commit_key(OffsetCommitKey(group_id, topic, partition)),
                value=encode_offset_commit_value(om),
                headers=[],
            )
        try:
            index, _log = self._log_of(group_id)
            appended = self._writer.append(index, bytes(builder.build()))
            # Shielded: a client hanging up must not leave a half-acknowledged commit.
            with trio.CancelScope(shield=True):
                await self._writer.complete(index, appended.last_offset + 1)
        except BrokerError as exc:
            error = _commit_error(exc.code)
            return dict.fromkeys(offsets, error)
        group = self._offsets.setdefault(group_id, {})
        for delta, (tp, om) in enumerate(stamped.items()):
            current = group.get(tp)
            log_offset = appended.base_offset + delta
            # Concurrent commits may finish their flushes out of order: the log decides.
            if current is None or current.log_offset < log_offset:
                group[tp] = _Committed(om, log_offset)
        return dict.fromkeys(offsets, ErrorCode.NONE)

    def append_group_metadata(self, group_id: str, value: GroupMetadataValue) -> None:
        """Append the group's metadata record (Kafka's storeGroup) without waiting for a flush.

        Synchronous so that records of one group reach the log in the order the group
        produced them; `flush_if_due` then applies the flush policy. The current state
        timestamp is the node clock's. Raises BrokerError when the log refuses the append.
        """
        now_ms = self._clock.now_ms()
        stamped = replace(value, current_state_timestamp_ms=now_ms)
        index, _log = self._log_of(group_id)
        builder = _batch_builder()
        builder.append(
            0,
            timestamp=now_ms,
            key=encode_group_metadata_key(GroupMetadataKey(group_id)),
            value=encode_group_metadata_value(stamped),
            headers=[],
        )
        self._writer.append(index, bytes(builder.build()))
        self._group_metadata[group_id] = stamped

    async def flush_if_due(self, group_id: str) -> None:
        """Complete the group's appended records: flush policy, and replication (shielded).

        Raises BrokerError when they cannot be completed (e.g. leadership moved).
        """
        index, log = self._log_of(group_id)
        with trio.CancelScope(shield=True):
            await self._writer.complete(index, log.log_end_offset)

    def fetch(
        self, group_id: str, partitions: Sequence[TopicPartition] | None
    ) -> dict[TopicPartition, OffsetAndMetadata | None]:
        """Committed offsets of a group: for `partitions` (None where never committed) or all."""
        group = self._offsets.get(group_id, {})
        if partitions is None:
            return {tp: c.value for tp, c in group.items()}
        return {tp: (group[tp].value if tp in group else None) for tp in partitions}

    async def delete_group(self, group_id: str) -> None:
        """Write tombstones for every offset of a group and for its metadata (DeleteGroups)."""
        group = self._offsets.get(group_id, {})
        await self._append_tombstones(group_id, list(group))
        self._offsets.pop(group_id, None)
        self._group_metadata.pop(group_id, None)

    async def _append_tombstones(self, group_id: str, partitions: Iterable[TopicPartition]) -> None:
        # Kafka's cleanupGroupMetadata: one batch, the offsets' tombstones then the group's.
        keys = [
            encode_offset_commit_key(OffsetCommitKey(group_id, topic, partition))
            for topic, partition in partitions
        ]
        keys.append(encode_group_metadata_key(GroupMetadataKey(group_id)))
        index, _log = self._log_of(group_id)
        now_ms = self._clock.now_ms()
        builder = _batch_builder()
        for delta, key in enumerate(keys):
            builder.append(delta, timestamp=now_ms, key=key, value=None, headers=[])
        appended = self._writer.append(index, bytes(builder.build()))
        with trio.CancelScope(shield=True):
            await self._writer.complete(index, appended.last_offset + 1)


def _batch_builder() -> DefaultRecordBatchBuilder:
    # Non-transactional, no producer id: what the coordinator appends to its own partitions.
    return DefaultRecordBatchBuilder(
        magic=2,
        compression_type=0,
        is_transactional=False,
        producer_id=-1,
        producer_epoch=-1,
        base_sequence=-1,
        batch_size=1 << 31,
    )


def store_group_error(code: ErrorCode) -> ErrorCode:
    """What a failed GroupMetadata append means to the leader's SyncGroup (storeGroup)."""
    if code in (
        ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
        ErrorCode.NOT_ENOUGH_REPLICAS,
        ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
    ):
        return ErrorCode.COORDINATOR_NOT_AVAILABLE
    if code in (ErrorCode.NOT_LEADER_OR_FOLLOWER, ErrorCode.KAFKA_STORAGE_ERROR):
        return ErrorCode.NOT_COORDINATOR
    if code is ErrorCode.REQUEST_TIMED_OUT:
        return ErrorCode.REBALANCE_IN_PROGRESS
    if code in (
        ErrorCode.MESSAGE_TOO_LARGE,
        ErrorCode.RECORD_LIST_TOO_LARGE,
        ErrorCode.INVALID_FETCH_SIZE,
    ):
        return ErrorCode.UNKNOWN_SERVER_ERROR
    return code


def _commit_error(code: ErrorCode) -> ErrorCode:
    # GroupMetadataManager.storeOffsets: what a failed append means to a committing client.
    if code in (
        ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
        ErrorCode.NOT_ENOUGH_REPLICAS,
        ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
    ):
        return ErrorCode.COORDINATOR_NOT_AVAILABLE
    if code in (ErrorCode.NOT_LEADER_OR_FOLLOWER, ErrorCode.KAFKA_STORAGE_ERROR):
        return ErrorCode.NOT_COORDINATOR
    if code in (
        ErrorCode.MESSAGE_TOO_LARGE,
        ErrorCode.RECORD_LIST_TOO_LARGE,
        ErrorCode.INVALID_FETCH_SIZE,
    ):
        return ErrorCode.INVALID_COMMIT_OFFSET_SIZE
    if code is ErrorCode.INVALID_PRODUCER_EPOCH:
        # A transactional commit from a fenced producer.
        return ErrorCode.PRODUCER_FENCED
    return code
