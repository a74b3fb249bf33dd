"""The transaction coordinator's async edge: storing states, sending markers, timers.

The rules are `state.py`'s. This module does what needs trio and the log:

- every transactional id belongs to the `__transaction_state` partition
  `abs(hash(id)) % n` (Java's String.hashCode, as Kafka) and is served by that
  partition's leader; until the partition is loaded its ids answer
  COORDINATOR_LOAD_IN_PROGRESS, ids of partitions led elsewhere NOT_COORDINATOR;
- a transition's new metadata is appended to the partition and memory changes only
  once the append is committed (`TxnLogWriter`); one transition at a time per id;
- a prepared transaction (PrepareCommit / PrepareAbort) gets its markers written to
  every partition in it by a task of `run()`'s nursery, retried until each partition's
  leader took it, then CompleteCommit / CompleteAbort is stored. The coordinator epoch
  on the markers is the partition's leader epoch, so a deposed coordinator's markers
  are refused (TRANSACTION_COORDINATOR_FENCED);
- `become_coordinator` replays the partition (last record per id wins) and resumes the
  markers of every prepared transaction; an Ongoing one is left to its timeout, which
  aborts it. A transaction is therefore committed everywhere or aborted everywhere,
  never half, whatever coordinator failovers happen in between;
- `run()` also aborts Ongoing transactions past their timeout (Kafka's
  abortTimedOutTransactions), bumping the epoch to fence their producer.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

import trio
from kafka.record.default_records import DefaultRecordBatchBuilder
from kafka.record.memory_records import MemoryRecords

from ..env import Clock
from ..errors import BrokerError, ErrorCode
from ..group.offsets_store import partition_for
from ..log.partition_log import PartitionLog
from . import state
from .config import TXN_STATE_TOPIC, TxnConfig
from .log_writer import TxnLogWriter
from .records import (
    TopicPartition,
    TxnMetadata,
    TxnRecordError,
    decode_key,
    decode_value,
    encode_key,
    encode_value,
)

logger = logging.getLogger("faultline.broker.txn")

_READ_CHUNK_BYTES = 1 << 20
# How long a marker task waits before retrying partitions whose leader did not take them.
_MARKER_RETRY_S = 0.2


@dataclass(frozen=True, slots=True)
class MarkerRequest:
    """Markers of one transaction outcome for some partitions."""

    producer_id: int
    producer_epoch: int
    commit: bool
    coordinator_epoch: int
    partitions: frozenset[TopicPartition]


class MarkerSender(Protocol):
    """Writes markers through the partitions' leaders (Kafka's marker channel manager)."""

    async def send(self, request: MarkerRequest) -> dict[TopicPartition, ErrorCode]:
        """One attempt per partition; the error of each (NONE when written)."""
        ...


# Marker errors after which the partition needs no marker from this coordinator: written,
# the topic is gone, or a newer producer epoch or coordinator already ended it there.
_MARKER_DONE = frozenset(
    {
        ErrorCode.NONE,
        ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
        ErrorCode.INVALID_PRODUCER_EPOCH,
        ErrorCode.TRANSACTION_COORDINATOR_FENCED,
    }
)


def _store_error(code: ErrorCode) -> ErrorCode:
    # TransactionStateManager.appendTransactionToLog: what a failed append means to a client.
    if code in (
        ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
        ErrorCode.NOT_ENOUGH_REPLICAS,
        ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
        ErrorCode.REQUEST_TIMED_OUT,
    ):
        return ErrorCode.COORDINATOR_NOT_AVAILABLE
    if code in (ErrorCode.NOT_LEADER_OR_FOLLOWER, ErrorCode.KAFKA_STORAGE_ERROR):
        return ErrorCode.NOT_COORDINATOR
    return ErrorCode.UNKNOWN_SERVER_ERROR


class TransactionCoordinator:
    """Kafka's TransactionCoordinator + TransactionStateManager for the partitions led here."""

    def __init__(
        self,
        config: TxnConfig,
        clock: Clock,
        writer: TxnLogWriter,
        markers: MarkerSender,
        allocate_producer_id: Callable[[], Awaitable[int]],
    ) -> None:
        self.config = config
        self._clock = clock
        self._writer = writer
        self._markers = markers
        self._allocate = allocate_producer_id
        self._txns: dict[str, TxnMetadata] = {}
        # Loaded partition -> coordinator epoch (the partition's leader epoch).
        self._owned: dict[int, int] = {}
        self._loading: set[int] = set()
        self._locks: dict[str, trio.Lock] = {}
        self._nursery: trio.Nursery | None = None
        # Prepared transactions whose markers were found before `run()` started.
        self._deferred: list[tuple[str, TxnMetadata, int]] = []

    # -- ownership -----------------------------------------------------------------------

    def use_writer(self, writer: TxnLogWriter) -> None:
        """Append through `writer` from now on (a cluster: through replication)."""
        self._writer = writer

    def partition_for(self, transactional_id: str) -> int:
        """The `__transaction_state` partition of a transactional id."""
        return partition_for(transactional_id, self.config.num_partitions)

    def coordinator_epoch(self, partition: int) -> int | None:
        """The epoch this node coordinates `partition` in (None when it does not)."""
        return self._owned.get(partition)

    def owned_partitions(self) -> set[int]:
        """The `__transaction_state` partitions whose ids this node coordinates."""
        return set(self._owned)

    def check(self, transactional_id: str) -> ErrorCode:
        """Whether this node serves the id now (NONE), is loading it, or is not its home."""
        if not transactional_id:
            return ErrorCode.INVALID_REQUEST
        partition = self.partition_for(transactional_id)
        if partition in self._loading:
            return ErrorCode.COORDINATOR_LOAD_IN_PROGRESS
        if partition not in self._owned:
            return ErrorCode.NOT_COORDINATOR
        return ErrorCode.NONE

    async def become_coordinator(
        self, partition: int, log: PartitionLog, coordinator_epoch: int
    ) -> None:
        """This node now leads `__transaction_state-<partition>`: load its ids.

        Prepared transactions resume their markers (with this coordinator's epoch).
        """
        self._loading.add(partition)
        try:
            await trio.lowlevel.checkpoint()
            self._unload(partition)
            loaded = _replay(partition, log)
            for txn_id, meta in loaded.items():
                self._txns[txn_id] = meta
            self._owned[partition] = coordinator_epoch
        finally:
            self._loading.discard(partition)
        prepared = [(i, m) for i, m in sorted(loaded.items()) if m.state.preparing]
        logger.info(
            "coordinating %s-%d (epoch %d): %d transactional ids, %d prepared",
            TXN_STATE_TOPIC,
            partition,
            coordinator_epoch,
            len(loaded),
            len(prepared),
        )
        for txn_id, meta in prepared:
            self._start_markers(txn_id, meta, coordinator_epoch)

    def resign_coordinator(self, partition: int) -> None:
        """This node no longer leads the partition: forget its ids (marker tasks stop)."""
        self._owned.pop(partition, None)
        self._loading.discard(partition)
        self._unload(partition)

    def _unload(self, partition: int) -> None:
        for txn_id in [t for t in self._txns if self.partition_for(t) == partition]:
            del self._txns[txn_id]

    def _epoch_of(self, transactional_id: str) -> int | None:
        return self._owned.get(self.partition_for(transactional_id))

    def _lock(self, transactional_id: str) -> trio.Lock:
        lock = self._locks.get(transactional_id)
        if lock is None:
            lock = self._locks[transactional_id] = trio.Lock()
        return lock

    def describe(self, transactional_id: str) -> TxnMetadata | None:
        """The id's metadata as this coordinator holds it (tests, diagnostics)."""
        return self._txns.get(transactional_id)

    # -- requests ------------------------------------------------------------------------

    async def init_producer_id(
        self,
        transactional_id: str,
        timeout_ms: int,
        expected: tuple[int, int] | None = None,
    ) -> tuple[ErrorCode, int, int]:
        """InitProducerId with a transactional id: (error, producer id, epoch)."""
        if not 0 < timeout_ms <= self.config.max_timeout_ms:
            return ErrorCode.INVALID_TRANSACTION_TIMEOUT, -1, -1
        error = self.check(transactional_id)
        if error is not ErrorCode.NONE:
            return error, -1, -1
        async with self._lock(transactional_id):
            current = self._txns.get(transactional_id)
            new_id = await self._allocate() if state.needs_new_producer_id(current) else None
            transition = state.init_producer_id(
                current, transactional_id, timeout_ms, self._clock.now_ms(), new_id, expected
            )
            error = await self._apply(transactional_id, transition)
        if error is not ErrorCode.NONE:
            return error, -1, -1
        meta = self._txns[transactional_id]
        return ErrorCode.NONE, meta.producer_id, meta.producer_epoch

    async def add_partitions(
        self,
        transactional_id: str,
        producer_id: int,
        producer_epoch: int,
        partitions: Iterable[TopicPartition],
    ) -> ErrorCode:
        """AddPartitionsToTxn / AddOffsetsToTxn."""
        error = self.check(transactional_id)
        if error is not ErrorCode.NONE:
            return error
        async with self._lock(transactional_id):
            transition = state.add_partitions(
                self._txns.get(transactional_id),
                producer_id,
                producer_epoch,
                partitions,
                self._clock.now_ms(),
            )
            return await self._apply(transactional_id, transition)

    async def end_txn(
        self, transactional_id: str, producer_id: int, producer_epoch: int, commit: bool
    ) -> ErrorCode:
        """EndTxn: answered once the decision is stored; markers follow."""
        error = self.check(transactional_id)
        if error is not ErrorCode.NONE:
            return error
        async with self._lock(transactional_id):
            transition = state.end_txn(
                self._txns.get(transactional_id),
                producer_id,
                producer_epoch,
                commit,
                self._clock.now_ms(),
            )
            return await self._apply(transactional_id, transition)

    def check_producer(self, transactional_id: str, producer_id: int, epoch: int) -> ErrorCode:
        """TxnOffsetCommit's check: the id is served here and the producer is current."""
        error = self.check(transactional_id)
        if error is not ErrorCode.NONE:
            return error
        meta = self._txns.get(transactional_id)
        if meta is None or meta.producer_id != producer_id:
            return ErrorCode.INVALID_PRODUCER_ID_MAPPING
        if meta.producer_epoch != epoch:
            return ErrorCode.PRODUCER_FENCED
        return ErrorCode.NONE

    # -- storing and markers -------------------------------------------------------------

    async def _apply(self, transactional_id: str, transition: state.Transition) -> ErrorCode:
        """Store the transition's metadata (if any), then start its markers; the caller holds
        the id's lock."""
        if transition.write is None:
            return transition.error
        epoch = self._epoch_of(transactional_id)
        if epoch is None:
            return ErrorCode.NOT_COORDINATOR
        error = await self._store(transition.write)
        if error is not ErrorCode.NONE:
            return error
        if self._epoch_of(transactional_id) != epoch:
            # Resigned while writing: the new coordinator replays the record.
            return ErrorCode.NOT_COORDINATOR
        self._txns[transactional_id] = transition.write
        if transition.send_markers:
            self._start_markers(transactional_id, transition.write, epoch)
        return transition.error

    async def _store(self, meta: TxnMetadata) -> ErrorCode:
        partition = self.partition_for(meta.transactional_id)
        now_ms = self._clock.now_ms()
        builder = DefaultRecordBatchBuilder(
            magic=2,
            compression_type=0,
            is_transactional=False,
            producer_id=-1,
            producer_epoch=-1,
            base_sequence=-1,
            batch_size=1 << 31,
        )
        builder.append(
            0,
            timestamp=now_ms,
            key=encode_key(meta.transactional_id),
            value=encode_value(meta),
            headers=[],
        )
        try:
            appended = self._writer.append(partition, bytes(builder.build()))
            # Shielded: a client hanging up must not leave a state half acknowledged.
            with trio.CancelScope(shield=True):
                await self._writer.complete(partition, appended.last_offset + 1)
        except BrokerError as exc:
            logger.info(
                "transactional id %s: storing %s failed: %s",
                meta.transactional_id,
                meta.state.name,
                exc,
            )
            return _store_error(exc.code)
        return ErrorCode.NONE

    def _start_markers(self, transactional_id: str, meta: TxnMetadata, epoch: int) -> None:
        if self._nursery is None:
            self._deferred.append((transactional_id, meta, epoch))
            return
        self._nursery.start_soon(self._complete_transaction, transactional_id, meta, epoch)

    async def _complete_transaction(
        self, transactional_id: str, prepared: TxnMetadata, epoch: int
    ) -> None:
        """Write the markers of a prepared transaction, then store its completion."""
        request = MarkerRequest(
            prepared.producer_id,
            prepared.producer_epoch,
            prepared.state is state.TxnState.PREPARE_COMMIT,
            epoch,
            prepared.partitions,
        )
        pending = set(prepared.partitions)
        while pending:
            if self._epoch_of(transactional_id) != epoch:
                return  # resigned: the next coordinator resumes the markers
            try:
                results = await self._markers.send(
                    MarkerRequest(
                        request.producer_id,
                        request.producer_epoch,
                        request.commit,
                        epoch,
                        frozenset(pending),
                    )
                )
            except BrokerError as exc:
                logger.info("transactional id %s: markers failed: %s", transactional_id, exc)
                results = {}
            for tp, code in results.items():
                if code in _MARKER_DONE:
                    pending.discard(tp)
            if pending:
                await trio.sleep(_MARKER_RETRY_S)
        while True:
            async with self._lock(transactional_id):
                if self._epoch_of(transactional_id) != epoch:
                    return
                if self._txns.get(transactional_id) != prepared:
                    return  # already completed (a retry) or replaced
                done = state.complete(prepared, self._clock.now_ms())
                error = await self._apply(transactional_id, state.Transition(ErrorCode.NONE, done))
                if error is ErrorCode.NONE:
                    logger.debug("transactional id %s: %s", transactional_id, done.state.name)
                    return
            await trio.sleep(_MARKER_RETRY_S)

    # -- timers --------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the marker tasks and abort timed-out transactions, until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            deferred, self._deferred = self._deferred, []
            for txn_id, meta, epoch in deferred:
                self._start_markers(txn_id, meta, epoch)
            task_status.started()
            interval = self.config.abort_check_interval_ms / 1000
            while True:
                await trio.sleep(interval if math.isfinite(interval) else 1.0)
                await self._abort_timed_out()

    async def _abort_timed_out(self) -> None:
        now_ms = self._clock.now_ms()
        for txn_id, meta in list(self._txns.items()):
            if state.expire(meta, now_ms) is None:
                continue
            async with self._lock(txn_id):
                current = self._txns.get(txn_id)
                if current is None:
                    continue
                transition = state.expire(current, self._clock.now_ms())
                if transition is None:
                    continue
                logger.info(
                    "transactional id %s: aborting producer %d epoch %d's transaction after "
                    "its timeout of %d ms",
                    txn_id,
                    current.producer_id,
                    current.producer_epoch,
                    current.timeout_ms,
                )
                await self._apply(txn_id, transition)


def _replay(partition: int, log: PartitionLog) -> dict[str, TxnMetadata]:
    """Every transactional id a `__transaction_state` partition holds (last record wins)."""
    found: dict[str, TxnMetadata] = {}
    position = log.log_start_offset
    end = log.log_end_offset
    while position < end:
        data = log.read(position, _READ_CHUNK_BYTES, max_offset=end).records
        if not data:
            break
        records = MemoryRecords(bytes(data))
        progressed = False
        while records.has_next():
            batch = records.next_batch()
            next_position = batch.base_offset + batch.last_offset_delta + 1
            if not batch.is_control_batch:
                for record in batch:
                    _apply_record(partition, found, record.offset, record.key, record.value)
            if next_position > position:
                position = next_position
                progressed = True
        if not progressed:
            raise TxnRecordError(
                f"{TXN_STATE_TOPIC}-{partition}: no complete batch at offset {position} below "
                f"the log end {end}; the log is damaged"
            )
    return found


def _apply_record(
    partition: int,
    found: dict[str, TxnMetadata],
    offset: int,
    key: bytes | None,
    value: bytes | None,
) -> None:
    if key is None:
        logger.warning("%s-%d offset %d: record without a key", TXN_STATE_TOPIC, partition, offset)
        return
    try:
        txn_id = decode_key(bytes(key))
        if value is None:
            found.pop(txn_id, None)
        else:
            found[txn_id] = decode_value(txn_id, bytes(value))
    except TxnRecordError as exc:
        raise TxnRecordError(f"{TXN_STATE_TOPIC}-{partition} offset {offset}: {exc}") from None


def loaded_states(coordinator: TransactionCoordinator) -> Mapping[str, TxnMetadata]:
    """Every transactional id the coordinator holds now (tests, diagnostics)."""
    return dict(coordinator._txns)
