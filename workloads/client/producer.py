"""The producer: an accumulator of per-partition batches and a sender task, as in Kafka.

`send()` appends a record to the open batch of its partition and returns a `Delivery`
at once. The sender task drains batches that are full (batch.size), old enough
(linger.ms) or being flushed, groups them by partition leader into Produce
requests (one batch per partition per request), and keeps at most
max.in.flight.requests.per.connection requests outstanding per broker.

Failure handling follows the Java client:

- retriable errors (NOT_LEADER_OR_FOLLOWER, timeouts, disconnects, ...) requeue the
  batch after retry.backoff.ms, refreshing metadata when it is stale, until
  `retries` attempts or delivery.timeout.ms (counted from the batch's creation) run
  out;
- with enable.idempotence the producer gets a producer id (InitProducerId), stamps
  each batch with its epoch and per-partition sequence when first drained, sends
  retried batches in sequence order and only once the partition has nothing else
  in flight, and bumps its epoch locally after a sequenced batch certainly failed,
  restarting that partition's sequences at 0 so that later batches are not rejected
  for a sequence gap. As in Java's TransactionManager, every other partition keeps
  the epoch its sequences were stamped with until nothing of it is in flight or
  waiting for a retry: a batch that may already be in the log must be retried as it
  was sent, or the broker cannot recognise it as a duplicate. A batch that may have
  been appended and then failed leaves its partition's sequence unresolved: new
  batches wait until the partition's earlier ones are done, and the epoch is bumped
  for it only if none of them was acknowledged after it;
- every batch remembers whether any attempt may have been appended (`maybe_appended`):
  it reached the broker and got no answer, or an answer other than the few that prove
  the batch is in no log (`errors.NOT_APPENDED`); that decides between
  `DefiniteFailure` and `UnknownOutcome` when it finally fails (see errors.py).

With transactional.id the producer is transactional, as Java's: `init_transactions()`
(FindCoordinator key_type 1, InitProducerId, fencing older instances),
`begin_transaction()`, sends (AddPartitionsToTxn before a partition's first send of
the transaction; batches flagged transactional), `send_offsets_to_transaction()`
(AddOffsetsToTxn, then TxnOffsetCommit to the group coordinator),
`commit_transaction()` (flush, then EndTxn) and `abort_transaction()`. The state and
the sorting of errors into abortable and fatal live in `transactions.py`; a failed
batch makes the transaction abortable, and the abort that follows bumps the epoch
through the coordinator (InitProducerId with the current id and epoch, KIP-360)
instead of locally, since the coordinator owns a transactional producer's epoch.
"""

from __future__ import annotations

import functools
import math
import random
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from types import TracebackType
from typing import Self

import trio
from kafka.protocol.api_message import ApiMessage
from kafka.protocol.data_container import DataContainer
from kafka.protocol.producer import (
    AddOffsetsToTxnRequest,
    AddPartitionsToTxnRequest,
    EndTxnRequest,
    InitProducerIdRequest,
    ProduceRequest,
    TxnOffsetCommitRequest,
)
from kafka.record.default_records import DefaultRecordBatchBuilder

from .cluster import GROUP, Cluster, TopicPartition
from .config import ProducerConfig
from .connection import Connection
from .errors import (
    STALE_METADATA,
    AuthorizationError,
    BrokerError,
    ConnectionLostError,
    DefiniteFailure,
    KafkaClientError,
    MessageTooLargeError,
    ProduceFailed,
    ProduceOutcomeUnknown,
    ProducerFencedError,
    RequestTimedOutError,
    RetriesExhaustedError,
    TransactionAbortableError,
    TransactionFatalError,
    TransactionOutcomeUnknown,
    UnknownOutcome,
    UnsupportedVersionError,
    error_name,
    is_authorization,
    is_retriable,
    proves_not_appended,
)
from .partitioner import DefaultPartitioner
from .transactions import COORDINATOR_MOVED, FATAL_TXN, RETRY_TXN, TransactionManager, TxnState
from .transport import Network, TcpNetwork, wall_clock_ms

Header = tuple[str, bytes | None]

_BATCH_OVERHEAD = DefaultRecordBatchBuilder.HEADER_STRUCT.size
_RECORD_OVERHEAD = DefaultRecordBatchBuilder.MAX_RECORD_OVERHEAD
_MAX_EPOCH = 32767
# The transaction coordinator gets connections of its own, as the group coordinator does,
# so EndTxn is not queued behind produce requests to the same broker.
TXN = "txn"


@dataclass(frozen=True, slots=True)
class RecordMetadata:
    """Where a record landed: partition and offset (offset None with acks=0)."""

    topic: str
    partition: int
    offset: int | None
    timestamp_ms: int


class _Batch:
    """Records bound for one partition, sent and retried together."""

    __slots__ = (
        "attempts",
        "base_sequence",
        "closed",
        "created_at",
        "done",
        "encoded",
        "error",
        "headers",
        "keys",
        "last_attempt_at",
        "log_append_time",
        "maybe_appended",
        "offset",
        "producer_epoch",
        "producer_id",
        "size",
        "timestamps",
        "tp",
        "transactional",
        "values",
    )

    def __init__(self, tp: TopicPartition, created_at: float, transactional: bool = False) -> None:
        self.tp = tp
        self.transactional = transactional
        self.created_at = created_at
        self.keys: list[bytes | None] = []
        self.values: list[bytes | None] = []
        self.headers: list[Sequence[Header]] = []
        self.timestamps: list[int] = []
        self.size = _BATCH_OVERHEAD
        self.closed = False
        self.attempts = 0
        self.last_attempt_at = -math.inf
        self.maybe_appended = False
        self.base_sequence: int | None = None
        self.producer_id = -1
        self.producer_epoch = -1
        self.encoded: bytes | None = None
        self.done = trio.Event()
        self.offset: int | None = None
        self.log_append_time = -1
        self.error: KafkaClientError | None = None

    def __len__(self) -> int:
        return len(self.values)

    def append(
        self, key: bytes | None, value: bytes | None, headers: Sequence[Header], ts: int, size: int
    ) -> int:
        self.keys.append(key)
        self.values.append(value)
        self.headers.append(headers)
        self.timestamps.append(ts)
        self.size += size
        return len(self.values) - 1

    def encode(self) -> bytes:
        """The v2 record batch, stamped with producer id, epoch and base sequence."""
        if self.encoded is None:
            builder = DefaultRecordBatchBuilder(
                magic=2,
                compression_type=0,
                is_transactional=self.transactional,
                producer_id=self.producer_id,
                producer_epoch=self.producer_epoch,
                base_sequence=-1 if self.base_sequence is None else self.base_sequence,
                batch_size=self.size,
            )
            append = builder.append
            for i, (k, v, h, ts) in enumerate(
                zip(self.keys, self.values, self.headers, self.timestamps, strict=True)
            ):
                append(i, timestamp=ts, key=k, value=v, headers=h)
            self.encoded = bytes(builder.build())
        return self.encoded


class Delivery:
    """The outcome of one `send`: await `wait()` for its RecordMetadata or exception."""

    __slots__ = ("_batch", "_index")

    def __init__(self, batch: _Batch, index: int) -> None:
        self._batch = batch
        self._index = index

    @property
    def topic_partition(self) -> TopicPartition:
        """The partition the record was routed to."""
        return self._batch.tp

    @property
    def done(self) -> bool:
        """Whether the outcome is known."""
        return self._batch.done.is_set()

    def result(self) -> RecordMetadata:
        """The outcome of a completed delivery (raises its error)."""
        batch = self._batch
        if not batch.done.is_set():
            raise RuntimeError("delivery not complete yet; await wait() first")
        if batch.error is not None:
            raise batch.error
        ts = batch.log_append_time if batch.log_append_time >= 0 else batch.timestamps[self._index]
        offset = None if batch.offset is None else batch.offset + self._index
        return RecordMetadata(batch.tp.topic, batch.tp.partition, offset, ts)

    async def wait(self) -> RecordMetadata:
        """Wait for the outcome; raises DefiniteFailure or UnknownOutcome on failure."""
        await self._batch.done.wait()
        return self.result()


class _PartitionState:
    """Per-partition sender state: queued batches, in-flight batches, sequences."""

    __slots__ = (
        "in_flight",
        "last_acked_sequence",
        "next_sequence",
        "producer_epoch",
        "producer_id",
        "queue",
        "unresolved",
    )

    def __init__(self) -> None:
        self.queue: deque[_Batch] = deque()
        self.in_flight: list[_Batch] = []
        # The producer id and epoch this partition's sequences belong to.
        self.producer_id = -1
        self.producer_epoch = -1
        self.next_sequence = 0
        self.last_acked_sequence = -1
        # A batch that may be in the log failed: is its sequence taken or a gap?
        self.unresolved = False

    def has_sequenced(self) -> bool:
        """Whether a batch stamped with a sequence is in flight or waits for a retry."""
        return bool(self.in_flight) or any(b.base_sequence is not None for b in self.queue)


class Producer:
    """faultline's Kafka producer; use as `async with Producer(config, ...) as producer:`."""

    def __init__(
        self,
        config: ProducerConfig,
        *,
        network: Network | None = None,
        rng: random.Random | None = None,
        clock_ms: Callable[[], int] | None = None,
    ) -> None:
        self.config = config
        self.network = network or TcpNetwork()
        self.rng = rng or random.Random(0)
        self.clock_ms = clock_ms or wall_clock_ms
        self.partitioner = DefaultPartitioner(self.rng)
        self._cluster: Cluster | None = None
        self._nursery: trio.Nursery | None = None
        self._nursery_cm: AbstractAsyncContextManager[trio.Nursery] | None = None
        self._partitions: dict[TopicPartition, _PartitionState] = {}
        self._wakeup = trio.Event()
        self._in_flight_requests: dict[int, int] = {}
        self._incomplete: set[_Batch] = set()
        self._flushing = 0
        self._closing = False
        self._metadata_stale: set[str] = set()
        self._refreshing = False
        self.producer_id = -1
        self.producer_epoch = -1
        self._epoch_bump_required = False
        # Partitions whose sequences restart at 0 under the next epoch.
        self._rewrite: set[TopicPartition] = set()
        self._fatal: KafkaClientError | None = None
        self._buffered_bytes = 0
        self._space = trio.Event()
        self.epoch_bumps = 0
        self.transactions: TransactionManager | None = None
        if config.transactional_id is not None:
            self.transactions = TransactionManager(
                config.transactional_id, config.transaction_timeout_ms
            )
        self._txn_coordinator: int | None = None
        self._group_coordinators: dict[str, int] = {}
        self._add_lock = trio.Lock()
        self._released = trio.Event()

    # -- lifecycle -----------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._nursery_cm = trio.open_nursery()
        self._nursery = await self._nursery_cm.__aenter__()
        try:
            self._cluster = Cluster(
                self.config, network=self.network, rng=self.rng, nursery=self._nursery
            )
            await self._cluster.bootstrap_cluster()
            # A transactional producer gets its id from init_transactions().
            if self.config.enable_idempotence and self.transactions is None:
                await self._init_producer_id()
            self._nursery.start_soon(self._sender)
        except BaseException:
            # Stop the background tasks, then raise the original error unwrapped.
            self._nursery.cancel_scope.cancel()
            await self._nursery_cm.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._nursery is not None and self._nursery_cm is not None
        try:
            if exc is None:
                txn = self.transactions
                if txn is not None and txn.state in _NO_SENDS:
                    # Batches of a transaction that must abort never go out: drop them
                    # rather than wait for them to expire.
                    self._drop_queued()
                await self.flush()
        finally:
            self._abort_incomplete("producer closed before delivery")
            self._nursery.cancel_scope.cancel()
            if self._cluster is not None:
                self._cluster.close()
        # The body's own exception propagates as itself, not inside an ExceptionGroup;
        # a failure of a background task (a bug) still surfaces from the nursery.
        await self._nursery_cm.__aexit__(None, None, None)
        return None

    @property
    def cluster(self) -> Cluster:
        """The producer's cluster view (valid inside `async with`)."""
        if self._cluster is None:
            raise RuntimeError("use the producer inside `async with Producer(...) as p:`")
        return self._cluster

    # -- public API ----------------------------------------------------------------------

    async def send(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        *,
        partition: int | None = None,
        headers: Sequence[Header] = (),
        timestamp_ms: int | None = None,
    ) -> Delivery:
        """Queue a record; returns its Delivery. Waits only for metadata or buffer space.

        Raises UnknownTopicError / AuthorizationError if the topic cannot be used and
        MessageTooLargeError if the record can never fit in a request. Inside a
        transaction, such an error leaves the transaction abortable (as in Java).
        """
        try:
            return await self._send(topic, value, key, partition, headers, timestamp_ms, True)
        except (TransactionAbortableError, TransactionFatalError):
            raise
        except KafkaClientError as exc:
            txn = self.transactions
            if txn is not None and txn.state is TxnState.IN_TRANSACTION:
                raise txn.abortable(exc) from exc
            raise

    async def _send(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None,
        partition: int | None,
        headers: Sequence[Header],
        timestamp_ms: int | None,
        may_reroute: bool,
    ) -> Delivery:
        if self._fatal is not None:
            raise self._fatal
        if self._closing:
            raise DefiniteFailure("send() on a closed producer; open a new one")
        if not (value is None or isinstance(value, bytes | bytearray)):
            raise TypeError(f"value must be bytes or None, not {type(value).__name__}")
        if not (key is None or isinstance(key, bytes | bytearray)):
            raise TypeError(f"key must be bytes or None, not {type(key).__name__}")
        cluster = self.cluster
        info = cluster.topics.get(topic)
        if info is None or info.error_code != 0 or not info.partitions:
            await cluster.wait_for_topic(topic)
        size = _RECORD_OVERHEAD + DefaultRecordBatchBuilder.size_of(key, value, headers)
        if size + _BATCH_OVERHEAD > self.config.max_request_size:
            raise MessageTooLargeError(
                f"record of {size} bytes (serialized) is larger than max.request.size="
                f"{self.config.max_request_size}; send smaller records or raise max.request.size "
                "(and the broker's message.max.bytes)"
            )
        partitions = cluster.partitions_for(topic)
        if partition is None:
            available = cluster.available_partitions_for(topic)
            partition = self.partitioner.partition(topic, key, partitions, available)
            sticky = key is None and may_reroute
        else:
            if partition not in partitions:
                raise DefiniteFailure(
                    f"partition {partition} of topic {topic!r} does not exist "
                    f"(it has partitions {partitions[0]}..{partitions[-1]})"
                )
            sticky = False
        if self._buffered_bytes + size > self.config.buffer_memory:
            await self._wait_for_space(size)
        ts = self.clock_ms() if timestamp_ms is None else timestamp_ms
        tp = TopicPartition(topic, partition)
        txn = self.transactions
        if txn is not None:
            txn.check_can_send()
            if txn.needs_adding(tp):
                await self._add_partitions_to_txn(tp)
        state = self._partitions.get(tp)
        if state is None:
            state = self._partitions[tp] = _PartitionState()
        queue = state.queue
        batch = queue[-1] if queue else None
        if (
            batch is None
            or batch.closed
            or batch.base_sequence is not None
            or (len(batch) > 0 and batch.size + size > self.config.batch_size)
        ):
            if batch is not None and not batch.closed:
                batch.closed = True
                self._wake()
            if sticky and batch is not None and batch.base_sequence is None:
                self.partitioner.on_new_batch(
                    topic, partitions, cluster.available_partitions_for(topic), partition
                )
                # The sticky partition moved on: route this record to the new one.
                return await self._send(topic, value, key, None, headers, ts, False)
            batch = _Batch(tp, trio.current_time(), txn is not None)
            queue.append(batch)
            self._incomplete.add(batch)
            self._wake()
        index = batch.append(
            None if key is None else bytes(key),
            None if value is None else bytes(value),
            headers,
            ts,
            size,
        )
        self._buffered_bytes += size
        if batch.size >= self.config.batch_size:
            batch.closed = True
            self._wake()
        return Delivery(batch, index)

    async def send_and_wait(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        *,
        partition: int | None = None,
        headers: Sequence[Header] = (),
        timestamp_ms: int | None = None,
    ) -> RecordMetadata:
        """Send one record and wait for its outcome."""
        delivery = await self.send(
            topic, value, key, partition=partition, headers=headers, timestamp_ms=timestamp_ms
        )
        return await delivery.wait()

    async def flush(self) -> None:
        """Send everything queued now and wait until each of those batches has an outcome."""
        pending = list(self._incomplete)
        if not pending:
            return
        self._flushing += 1
        self._wake()
        try:
            for batch in pending:
                await batch.done.wait()
        finally:
            self._flushing -= 1

    # -- sender --------------------------------------------------------------------------

    def _wake(self) -> None:
        self._wakeup.set()

    async def _wait_for_space(self, size: int) -> None:
        deadline = trio.current_time() + self.config.max_block_ms / 1000
        while self._buffered_bytes + size > self.config.buffer_memory:
            self._space = trio.Event()
            with trio.move_on_at(deadline):
                await self._space.wait()
            if trio.current_time() >= deadline:
                raise DefiniteFailure(
                    f"buffer.memory={self.config.buffer_memory} bytes stayed full for "
                    f"max.block.ms={self.config.max_block_ms}; the broker is not keeping up or "
                    "unreachable: raise buffer.memory or max.block.ms, or send less"
                )

    async def _sender(self) -> None:
        while True:
            self._wakeup = trio.Event()
            now = trio.current_time()
            self._expire(now)
            if self._epoch_bump_required and not any(
                s.in_flight for s in self._partitions.values()
            ):
                await self._bump_epoch()
            next_at, requests = self._drain(now)
            for node, batches in requests:
                conn = self.cluster.open_connection(node)
                if conn is None or self.config.acks == 0:
                    # Dialing can take a while: it gets a task so other nodes' batches go.
                    self.cluster_nursery.start_soon(self._produce, node, batches)
                else:
                    await self._submit(conn, node, batches)
            if self._metadata_stale and not self._refreshing:
                self._refreshing = True
                self.cluster_nursery.start_soon(self._refresh_metadata)
            if self._wakeup.is_set():
                continue
            if next_at == math.inf:
                await self._wakeup.wait()  # nothing queued: no timer (and no cancel scope)
            else:
                with trio.move_on_at(next_at):
                    await self._wakeup.wait()

    @property
    def cluster_nursery(self) -> trio.Nursery:
        assert self._nursery is not None
        return self._nursery

    async def _refresh_metadata(self) -> None:
        try:
            topics = set(self._metadata_stale)
            self._metadata_stale.clear()
            try:
                await self.cluster.refresh_metadata(topics)
            except ConnectionLostError:
                self._metadata_stale |= topics
            await trio.sleep(self.config.retry_backoff_ms / 1000)
        finally:
            self._refreshing = False
            self._wake()

    def _drain(self, now: float) -> tuple[float, list[tuple[int, list[_Batch]]]]:
        """Take every ready batch; return when to look again and the requests to send."""
        config = self.config
        linger = config.linger_ms / 1000
        backoff = config.retry_backoff_ms / 1000
        # Only queued batches need the sender at a time (linger, backoff, expiry); in-flight
        # ones are timed by their connection.
        next_at = math.inf
        per_node: dict[int, list[_Batch]] = {}
        node_bytes: dict[int, int] = {}
        for tp, state in self._partitions.items():
            queue = state.queue
            if not queue:
                continue
            batch = queue[0]
            if batch.attempts > 0 and now < batch.last_attempt_at + backoff:
                next_at = min(next_at, batch.last_attempt_at + backoff)
                continue
            ready = (
                batch.closed
                or len(queue) > 1
                or self._flushing > 0
                or self._closing
                or now >= batch.created_at + linger
            )
            if not ready:
                next_at = min(next_at, batch.created_at + linger)
                continue
            if self._epoch_bump_required or (config.enable_idempotence and self.producer_id < 0):
                continue
            if self.transactions is not None and self.transactions.state in _NO_SENDS:
                continue  # the transaction is going to abort: its batches wait to be dropped
            if state.in_flight and (
                batch.base_sequence is not None or config.max_in_flight_requests_per_connection == 1
            ):
                # A retried idempotent batch goes out only once nothing of its partition is
                # in flight, so sequences reach the broker in order.
                continue
            if config.enable_idempotence and batch.base_sequence is None:
                if state.unresolved:
                    continue
                if (state.producer_id, state.producer_epoch) != (
                    self.producer_id,
                    self.producer_epoch,
                ):
                    if state.in_flight:
                        continue  # batches of the old epoch first
                    state.producer_id = self.producer_id
                    state.producer_epoch = self.producer_epoch
                    state.next_sequence = 0
                    state.last_acked_sequence = -1
            leader = self.cluster.leader_for(tp)
            if leader is None:
                self._metadata_stale.add(tp.topic)
                continue
            if (
                self._in_flight_requests.get(leader, 0)
                >= config.max_in_flight_requests_per_connection
            ):
                continue
            if leader in per_node and node_bytes[leader] + batch.size > config.max_request_size:
                continue
            queue.popleft()
            batch.closed = True
            if config.enable_idempotence and batch.base_sequence is None:
                batch.producer_id = state.producer_id
                batch.producer_epoch = state.producer_epoch
                batch.base_sequence = state.next_sequence
                state.next_sequence = (state.next_sequence + len(batch)) & 0x7FFFFFFF
                batch.encoded = None
            state.in_flight.append(batch)
            per_node.setdefault(leader, []).append(batch)
            node_bytes[leader] = node_bytes.get(leader, 0) + batch.size
        for node, batches in per_node.items():
            self._in_flight_requests[node] = self._in_flight_requests.get(node, 0) + 1
            for b in batches:
                b.attempts += 1
                b.last_attempt_at = now
        timeout = config.delivery_timeout_ms / 1000
        for state in self._partitions.values():
            if state.queue:  # what stays queued expires at delivery.timeout.ms
                next_at = min(next_at, state.queue[0].created_at + timeout)
        return next_at, list(per_node.items())

    def _produce_request(self, batches: list[_Batch]) -> ProduceRequest:
        by_topic: dict[str, list[_Batch]] = {}
        for b in batches:
            by_topic.setdefault(b.tp.topic, []).append(b)
        # The topic and partition entries are tuples of their fields in schema order
        # (TopicProduceData: name, partition_data; PartitionProduceData: index,
        # records; the same in v3..v9), which kafka-python's compiled encoder takes
        # as it takes its data objects: building those costs more than encoding them.
        return ProduceRequest(
            transactional_id=self.config.transactional_id,
            acks=self.config.acks,
            timeout_ms=self.config.request_timeout_ms,
            topic_data=[
                (topic, [(b.tp.partition, b.encode()) for b in bs])
                for topic, bs in by_topic.items()
            ],
        )

    async def _produce(self, node: int, batches: list[_Batch]) -> None:
        """Dial the node, then send (the path for a node without an open connection)."""
        try:
            conn = await self.cluster.connection(node)
        except (ConnectionLostError, RequestTimedOutError) as exc:
            self._produced(node, batches, None, exc)
            return
        except BaseException:
            self._release(node, batches)
            raise
        await self._submit(conn, node, batches)

    async def _submit(self, conn: Connection, node: int, batches: list[_Batch]) -> None:
        """Write one Produce request; its outcome arrives in `_produced`."""
        request = self._produce_request(batches)
        if self.config.acks == 0:
            try:
                version = conn.version_for(request.API_KEY, 3, 9, "ProduceRequest")
                await conn.send_only(request, version)
            except (ConnectionLostError, UnsupportedVersionError) as exc:
                self._produced(node, batches, None, exc)
                return
            except BaseException:
                self._release(node, batches)
                raise
            for b in batches:
                self._complete(b, None, -1)
            self._release(node, batches)
            return
        try:
            await self.cluster.submit_on(
                conn, request, functools.partial(self._produced, node, batches)
            )
        except UnsupportedVersionError as exc:
            self._produced(node, batches, None, exc)

    def _produced(
        self,
        node: int,
        batches: list[_Batch],
        response: ApiMessage | None,
        error: KafkaClientError | None,
    ) -> None:
        """The outcome of one Produce request: per-partition results, or why none came."""
        try:
            # A producer that closed meanwhile has already failed its batches.
            live = [b for b in batches if not b.done.is_set()]
            if isinstance(error, ConnectionLostError | RequestTimedOutError):
                for b in live:
                    b.maybe_appended |= error.maybe_delivered
                    self._retry_or_fail(b, error, code=None)
                self._metadata_stale.update(b.tp.topic for b in batches)
                return
            if error is not None:
                for b in live:
                    self._fail(b, error)
                return
            assert response is not None
            answered: set[TopicPartition] = set()
            for topic_response in response.responses:
                for pr in topic_response.partition_responses:
                    tp = TopicPartition(topic_response.name, pr.index)
                    batch = next((b for b in batches if b.tp == tp), None)
                    if batch is None:
                        continue
                    answered.add(tp)
                    self._handle_partition_response(batch, pr)
            for b in live:
                if b.tp not in answered:
                    # The broker dropped the partition from its answer: treat as unknown.
                    b.maybe_appended = True
                    self._retry_or_fail(
                        b, KafkaClientError(f"Produce response has no entry for {b.tp}"), None
                    )
        finally:
            self._release(node, batches)

    def _release(self, node: int, batches: list[_Batch]) -> None:
        """The request is over: its in-flight slot and its batches' places are free."""
        self._in_flight_requests[node] -= 1
        self._released.set()
        for b in batches:
            state = self._partitions[b.tp]
            if b in state.in_flight:
                state.in_flight.remove(b)
            self._maybe_resolve(b.tp, state)
        # The sender cares about a freed slot only if something waits to go out (or an
        # epoch bump waits for the partitions to drain).
        if self._epoch_bump_required or any(s.queue for s in self._partitions.values()):
            self._wake()

    def _handle_partition_response(self, batch: _Batch, pr: DataContainer) -> None:
        code: int = pr.error_code
        if batch.done.is_set():
            return
        state = self._partitions[batch.tp]
        if code == 0 or code == 46:  # NONE, DUPLICATE_SEQUENCE_NUMBER (already appended)
            offset = pr.base_offset if pr.base_offset >= 0 else None
            if batch.base_sequence is not None:
                state.last_acked_sequence = batch.base_sequence + len(batch) - 1
            self._complete(batch, offset, pr.log_append_time_ms)
            return
        message = getattr(pr, "error_message", None)
        context = f"Produce to {batch.tp}"
        if not proves_not_appended(code):
            # Only a few answers prove the batch is in no log (errors.NOT_APPENDED);
            # after any other, this attempt may have been appended.
            batch.maybe_appended = True
        if code in STALE_METADATA:
            self._metadata_stale.add(batch.tp.topic)
        if code == 45 and batch.base_sequence is not None:  # OUT_OF_ORDER_SEQUENCE_NUMBER
            if not state.unresolved and (
                batch.base_sequence != state.last_acked_sequence + 1 or batch.tp in self._rewrite
            ):
                # An earlier batch of this partition failed or is being retried: retry
                # this one in order behind it.
                self._requeue(batch)
                return
            # Not in the log (neither appended in sequence nor a duplicate): a gap.
            self._request_rewrite(batch.tp)
            self._fail(batch, ProduceFailed(_describe(code, context, message), code))
            return
        if code == 59 and self.transactions is not None:
            # A transaction's batch cannot be re-sequenced under a new epoch mid-transaction:
            # the transaction aborts, and the abort bumps the epoch (Java's transactional path).
            self._fail(batch, ProduceFailed(_describe(code, context, message), code))
            return
        if code == 59 and batch.base_sequence is not None:  # UNKNOWN_PRODUCER_ID
            # The broker forgot our producer state (e.g. retention removed it): restart
            # sequences under a new epoch and retry (KIP-360).
            self._request_rewrite(batch.tp)
            self._requeue(batch)
            return
        if code in (47, 90):  # INVALID_PRODUCER_EPOCH, PRODUCER_FENCED
            fenced = ProducerFencedError(
                f"{context}: {error_name(code)}; another producer took over this producer id. "
                "Close this producer and create a new one"
            )
            self._fatal = fenced
            if self.transactions is not None:
                self._fatal = self.transactions.fatal(fenced)
            self._fail(batch, fenced)
            return
        if code == 10:
            self._fail(
                batch,
                MessageTooLargeError(
                    f"{context}: broker rejected a batch of {batch.size} bytes with "
                    "MESSAGE_TOO_LARGE; lower batch.size or the record size, or raise the "
                    "topic's max.message.bytes / broker's message.max.bytes"
                ),
            )
            return
        if is_authorization(code):
            self._fail(
                batch,
                AuthorizationError(
                    f"{context}: {error_name(code)}; grant this client's principal Write on "
                    f"topic {batch.tp.topic!r}"
                ),
            )
            return
        error = BrokerError(code, context, message or "")
        if is_retriable(code):
            self._retry_or_fail(batch, error, code)
        else:
            self._fail(batch, ProduceFailed(_describe(code, context, message), code))

    def _retry_or_fail(self, batch: _Batch, error: Exception, code: int | None) -> None:
        expired = trio.current_time() >= batch.created_at + self.config.delivery_timeout_ms / 1000
        if batch.attempts > self.config.retries or expired:
            why = (
                "delivery.timeout.ms expired" if expired else f"retries={self.config.retries} used"
            )
            self._fail(batch, RetriesExhaustedError(f"{error} ({why})", code))
            return
        self._requeue(batch)

    def _requeue(self, batch: _Batch) -> None:
        """Put a batch back at the head of its queue, keeping sequence order."""
        queue = self._partitions[batch.tp].queue
        if batch.base_sequence is None:
            queue.appendleft(batch)
            return
        index = 0
        for index, other in enumerate(queue):  # noqa: B007 - index used after the loop
            if other.base_sequence is None or other.base_sequence > batch.base_sequence:
                break
        else:
            index = len(queue)
        queue.insert(index, batch)

    def _complete(self, batch: _Batch, offset: int | None, log_append_time: int) -> None:
        batch.offset = offset
        batch.log_append_time = log_append_time
        self._finish(batch)

    def _fail(self, batch: _Batch, error: Exception) -> None:
        """Finish a batch with the error kind its history allows."""
        if isinstance(error, UnknownOutcome | DefiniteFailure) and not (
            batch.maybe_appended and isinstance(error, DefiniteFailure)
        ):
            final: KafkaClientError = error
        elif batch.maybe_appended:
            final = ProduceOutcomeUnknown(
                f"{len(batch)} record(s) to {batch.tp} may or may not be in the log: an attempt "
                f"may have been appended without being acknowledged; last error: {error}"
            )
        else:
            final = ProduceFailed(
                f"{len(batch)} record(s) to {batch.tp} were not appended: {error}",
                getattr(error, "code", None),
            )
        if batch.base_sequence is not None and batch.tp not in self._rewrite:
            state = self._partitions[batch.tp]
            if batch.maybe_appended:
                # Its sequence may be taken: only later acknowledgements can tell.
                state.unresolved = True
                self._maybe_resolve(batch.tp, state)
            else:
                # A sequence that will never be acknowledged leaves a gap.
                self._request_rewrite(batch.tp)
        batch.error = final
        if self.transactions is not None and batch.transactional:
            # As Java: a failed send leaves the transaction unable to commit.
            if isinstance(error, ProducerFencedError):
                self.transactions.fatal(error)
            else:
                self.transactions.abortable(final)
        self._finish(batch)

    def _request_rewrite(self, tp: TopicPartition) -> None:
        """Restart `tp`'s sequences at 0 under a new epoch once nothing is in flight."""
        self._rewrite.add(tp)
        if self.transactions is not None:
            # The coordinator owns a transactional producer's epoch: the bump is an
            # InitProducerId after the abort this failure forces, not a local one.
            self.transactions.needs_epoch_bump = True
            return
        self._epoch_bump_required = True
        self._wake()

    def _maybe_resolve(self, tp: TopicPartition, state: _PartitionState) -> None:
        """Settle an unresolved sequence once nothing of the partition is pending.

        If the last acknowledged sequence is the last one sent, a batch after the failed
        one was appended, so the failed one was too; otherwise the sequence may have a
        gap, and the partition restarts under a new epoch (Java's maybeResolveSequences).
        """
        if not state.unresolved or state.has_sequenced():
            return
        state.unresolved = False
        if (state.last_acked_sequence + 1) & 0x7FFFFFFF != state.next_sequence:
            self._request_rewrite(tp)

    def _finish(self, batch: _Batch) -> None:
        if batch.done.is_set():
            return
        self._incomplete.discard(batch)
        self._buffered_bytes -= batch.size - _BATCH_OVERHEAD
        self._space.set()
        batch.done.set()

    def _expire(self, now: float) -> None:
        timeout = self.config.delivery_timeout_ms / 1000
        for state in self._partitions.values():
            queue = state.queue
            while queue and now >= queue[0].created_at + timeout:
                batch = queue.popleft()
                self._fail(
                    batch,
                    KafkaClientError(
                        f"delivery.timeout.ms={self.config.delivery_timeout_ms} expired after "
                        f"{batch.attempts} attempt(s)"
                    ),
                )

    def _abort_incomplete(self, reason: str) -> None:
        self._closing = True
        for state in self._partitions.values():
            for batch in [*state.queue, *state.in_flight]:
                if not batch.done.is_set():
                    maybe = batch.maybe_appended or batch in state.in_flight
                    batch.maybe_appended = maybe
                    self._fail(batch, KafkaClientError(reason))
            state.queue.clear()

    # -- idempotence ---------------------------------------------------------------------

    async def _init_producer_id(self) -> None:
        """Get a producer id and epoch (InitProducerId), retrying within max.block.ms."""
        deadline = trio.current_time() + self.config.max_block_ms / 1000
        last: Exception | None = None
        while trio.current_time() < deadline:
            node = self.cluster._candidates()[0]
            try:
                response = await self.cluster.send(
                    node,
                    InitProducerIdRequest(
                        transactional_id=None,
                        transaction_timeout_ms=2_147_483_647,
                        producer_id=-1,
                        producer_epoch=-1,
                    ),
                )
            except UnsupportedVersionError as exc:
                raise UnsupportedVersionError(
                    f"{exc}; this broker cannot do idempotent produce: set enable.idempotence=false"
                ) from exc
            except (ConnectionLostError, RequestTimedOutError) as exc:
                last = exc
                await trio.sleep(self.config.retry_backoff_ms / 1000)
                continue
            code = response.error_code
            if code == 0:
                self.producer_id = response.producer_id
                self.producer_epoch = response.producer_epoch
                return
            if is_authorization(code):
                raise AuthorizationError(
                    f"InitProducerId: {error_name(code)}; grant IdempotentWrite on the cluster "
                    "to this client's principal, or set enable.idempotence=false"
                )
            if not is_retriable(code):
                raise BrokerError(code, "InitProducerId", "set enable.idempotence=false to skip")
            last = BrokerError(code, "InitProducerId")
            await trio.sleep(self.config.retry_backoff_ms / 1000)
        raise KafkaClientError(
            f"no producer id within max.block.ms={self.config.max_block_ms}: {last}"
        )

    async def _bump_epoch(self) -> None:
        """A new epoch (Java's local bump); the partitions that asked restart at sequence 0.

        Their waiting batches cannot be in the log (a gap precedes them), so they are
        stamped again. Other partitions move to the new epoch when their batches are done.
        """
        self._epoch_bump_required = False
        self.epoch_bumps += 1
        if self.producer_epoch >= _MAX_EPOCH:
            self.producer_id = -1
            await self._init_producer_id()
        else:
            self.producer_epoch += 1
        rewrite, self._rewrite = self._rewrite, set()
        for tp in rewrite:
            state = self._partitions[tp]
            state.producer_id = self.producer_id
            state.producer_epoch = self.producer_epoch
            state.next_sequence = 0
            state.last_acked_sequence = -1
            state.unresolved = False
            for batch in state.queue:
                if batch.base_sequence is not None:
                    batch.producer_id = self.producer_id
                    batch.producer_epoch = self.producer_epoch
                    batch.base_sequence = state.next_sequence
                    state.next_sequence += len(batch)
                    batch.encoded = None

    # -- transactions --------------------------------------------------------------------

    def _txn(self) -> TransactionManager:
        if self.transactions is None:
            raise KafkaClientError(
                "transactional call on a producer without transactional.id; set transactional.id"
            )
        return self.transactions

    async def init_transactions(self) -> None:
        """Get the transactional id's producer id and a new epoch (fencing older instances).

        Retries while the coordinator moves, loads or finishes an earlier transaction of
        the id (which the new epoch aborts), within max.block.ms.
        """
        txn = self._txn()
        txn.start_init()
        try:
            await self._init_transactional_id(None)
        except TransactionFatalError:
            raise
        except BaseException:
            txn.init_failed()
            raise
        txn.initialized()

    async def begin_transaction(self) -> None:
        """Open a transaction: sends until commit or abort belong to it."""
        self._txn().begin()

    async def send_offsets_to_transaction(
        self, offsets: Mapping[TopicPartition, int], group_id: str
    ) -> None:
        """Commit `offsets` (next offset to read) for `group_id` with the transaction:
        AddOffsetsToTxn to the transaction coordinator, TxnOffsetCommit to the group's."""
        txn = self._txn()
        txn.check_can_send()
        if group_id not in txn.groups:
            await self._call_coordinator(
                AddOffsetsToTxnRequest(
                    transactional_id=txn.transactional_id,
                    producer_id=self.producer_id,
                    producer_epoch=self.producer_epoch,
                    group_id=group_id,
                ),
                f"AddOffsetsToTxn for group {group_id!r}",
            )
            txn.groups.add(group_id)
        by_topic: dict[str, list[tuple[int, int]]] = {}
        for tp, offset in offsets.items():
            by_topic.setdefault(tp.topic, []).append((tp.partition, offset))
        topic_cls = TxnOffsetCommitRequest.TxnOffsetCommitRequestTopic
        part_cls = topic_cls.TxnOffsetCommitRequestPartition
        request = TxnOffsetCommitRequest(
            transactional_id=txn.transactional_id,
            group_id=group_id,
            producer_id=self.producer_id,
            producer_epoch=self.producer_epoch,
            generation_id=-1,
            member_id="",
            group_instance_id=None,
            topics=[
                topic_cls(
                    name=topic,
                    partitions=[
                        part_cls(
                            partition_index=p,
                            committed_offset=o,
                            committed_leader_epoch=-1,
                            committed_metadata="",
                        )
                        for p, o in sorted(parts)
                    ],
                )
                for topic, parts in by_topic.items()
            ],
        )
        await self._call_coordinator(
            request, f"TxnOffsetCommit for group {group_id!r}", group=group_id
        )

    async def commit_transaction(self) -> None:
        """Flush the transaction's sends, then EndTxn(commit).

        Raises TransactionAbortableError when a send failed or the coordinator refused
        (abort, then go on), TransactionFatalError when fenced, and
        TransactionOutcomeUnknown when EndTxn went out and no answer came back.
        """
        txn = self._txn()
        txn.begin_commit()
        await self.flush()
        if txn.state in (TxnState.ABORTABLE_ERROR, TxnState.FATAL_ERROR):
            assert txn.error is not None
            raise txn.error
        if txn.partitions or txn.groups:
            await self._end_txn(commit=True)
        # Nothing was added: the coordinator never heard of this transaction (Java skips EndTxn).
        txn.completed()

    async def abort_transaction(self) -> None:
        """Drop the transaction's unsent batches, wait for those in flight, EndTxn(abort).

        After a failed send the epoch is bumped (InitProducerId with the current id and
        epoch, KIP-360) so the partitions' sequences can restart.
        """
        txn = self._txn()
        if txn.state is TxnState.FATAL_ERROR:
            assert txn.error is not None
            raise txn.error
        if not txn.begin_abort():
            return
        # Markers must follow every batch of the transaction: what is in flight is
        # answered (or times out) first, and nothing new goes out meanwhile.
        while True:
            self._drop_queued()
            if not any(s.in_flight for s in self._partitions.values()):
                break
            self._released = trio.Event()
            await self._released.wait()
        if txn.partitions or txn.groups:
            await self._end_txn(commit=False)
        if txn.needs_epoch_bump:
            txn.start_init()
            try:
                await self._init_transactional_id((self.producer_id, self.producer_epoch))
            except TransactionFatalError:
                raise
            except BaseException:
                txn.init_failed()
                raise
            txn.initialized()
        else:
            txn.completed()

    def _drop_queued(self) -> None:
        for state in self._partitions.values():
            queue, state.queue = state.queue, deque()
            for batch in queue:
                self._fail(
                    batch,
                    TransactionAbortableError("the transaction aborted before this batch went out"),
                )

    async def _end_txn(self, *, commit: bool) -> None:
        txn = self._txn()
        await self._call_coordinator(
            EndTxnRequest(
                transactional_id=txn.transactional_id,
                producer_id=self.producer_id,
                producer_epoch=self.producer_epoch,
                committed=commit,
            ),
            "EndTxn(commit)" if commit else "EndTxn(abort)",
            unknown_on_timeout=commit,
        )

    async def _add_partitions_to_txn(self, tp: TopicPartition) -> None:
        """AddPartitionsToTxn before the transaction's first send to `tp`."""
        txn = self._txn()
        async with self._add_lock:
            if not txn.needs_adding(tp):
                return
            txn.check_can_send()
            await self._call_coordinator(
                AddPartitionsToTxnRequest(
                    v3_and_below_transactional_id=txn.transactional_id,
                    v3_and_below_producer_id=self.producer_id,
                    v3_and_below_producer_epoch=self.producer_epoch,
                    v3_and_below_topics=[
                        AddPartitionsToTxnRequest.AddPartitionsToTxnTopic(
                            name=tp.topic, partitions=[tp.partition]
                        )
                    ],
                ),
                f"AddPartitionsToTxn {tp}",
            )
            txn.added({tp})

    async def _coordinator_node(self, group: str | None) -> int:
        txn = self._txn()
        if group is not None:
            node = self._group_coordinators.get(group)
            if node is None:
                node = self._group_coordinators[group] = await self.cluster.find_coordinator(group)
            return node
        if self._txn_coordinator is None:
            self._txn_coordinator = await self.cluster.find_coordinator(
                txn.transactional_id, key_type=1
            )
        return self._txn_coordinator

    def _forget_coordinator(self, group: str | None) -> None:
        if group is None:
            self._txn_coordinator = None
        else:
            self._group_coordinators.pop(group, None)

    async def _call_coordinator(
        self,
        request: ApiMessage,
        context: str,
        *,
        group: str | None = None,
        unknown_on_timeout: bool = False,
    ) -> ApiMessage:
        """Send a transactional request to the transaction coordinator (or `group`'s),
        retrying moves and concurrent transactions within max.block.ms; a refusal
        becomes the abortable or fatal error Java's handlers make of it."""
        txn = self._txn()
        deadline = trio.current_time() + self.config.max_block_ms / 1000
        backoff = self.config.retry_backoff_ms / 1000
        maybe_sent = False
        last: Exception | None = None
        while trio.current_time() < deadline:
            try:
                node = await self._coordinator_node(group)
                response = await self.cluster.send(
                    node, request, channel=TXN if group is None else GROUP
                )
            except (ConnectionLostError, RequestTimedOutError) as exc:
                maybe_sent |= exc.maybe_delivered
                last = exc
                self._forget_coordinator(group)
                await trio.sleep(backoff)
                continue
            except BrokerError as exc:  # FindCoordinator: the coordinator is moving or loading
                last = exc
                await trio.sleep(backoff)
                continue
            codes = _txn_error_codes(response) - {0, 55}  # 55: OPERATION_NOT_ATTEMPTED
            if not codes:
                return response
            fatal = codes & FATAL_TXN
            if fatal or any(is_authorization(c) for c in codes):
                code = min(fatal) if fatal else min(codes)
                raise txn.fatal(TransactionFatalError(_describe(code, context, None)))
            code = min(codes)
            if codes <= _RETRY_TXN_CALL:
                if codes & COORDINATOR_MOVED:
                    self._forget_coordinator(group)
                last = BrokerError(code, context)
                await trio.sleep(backoff)
                continue
            raise txn.coordinator_error(code, context)
        if unknown_on_timeout and maybe_sent:
            raise TransactionOutcomeUnknown(
                f"{context} for {txn.transactional_id!r} got no answer within "
                f"max.block.ms={self.config.max_block_ms}: the transaction may have committed "
                f"or aborted; last error: {last}"
            )
        raise txn.abortable(
            KafkaClientError(
                f"{context} for {txn.transactional_id!r} did not succeed within "
                f"max.block.ms={self.config.max_block_ms}: {last}"
            )
        )

    async def _init_transactional_id(self, expected: tuple[int, int] | None) -> None:
        """InitProducerId for the transactional id at its coordinator: a new epoch (and a
        fresh start for every partition's sequences); `expected` is this instance's own
        id and epoch when it bumps its epoch after an abort (KIP-360)."""
        txn = self._txn()
        pid, epoch = expected if expected is not None else (-1, -1)
        response = await self._call_coordinator(
            InitProducerIdRequest(
                transactional_id=txn.transactional_id,
                transaction_timeout_ms=txn.timeout_ms,
                producer_id=pid,
                producer_epoch=epoch,
            ),
            "InitProducerId",
        )
        self.producer_id = response.producer_id
        self.producer_epoch = response.producer_epoch
        self._rewrite.clear()
        for state in self._partitions.values():
            state.producer_id = self.producer_id
            state.producer_epoch = self.producer_epoch
            state.next_sequence = 0
            state.last_acked_sequence = -1
            state.unresolved = False
        self._wake()


# The transaction is going to abort: its batches are not sent (Java's Sender fails them).
_NO_SENDS = frozenset({TxnState.ABORTING, TxnState.ABORTABLE_ERROR, TxnState.FATAL_ERROR})
# Coordinator answers retried by `_call_coordinator`: the RETRY_TXN codes, and a
# TxnOffsetCommit's UNKNOWN_TOPIC_OR_PARTITION (the offsets topic is still loading).
_RETRY_TXN_CALL = RETRY_TXN | {3}


def _txn_error_codes(response: ApiMessage) -> set[int]:
    """Every error code of a transactional response, top level and per partition."""
    codes: set[int] = set()
    top = getattr(response, "error_code", None)
    if top is not None:
        codes.add(top)
    for t in getattr(response, "results_by_topic_v3_and_below", None) or ():
        codes.update(p.partition_error_code for p in t.results_by_partition)
    for t in getattr(response, "topics", None) or ():
        codes.update(p.error_code for p in t.partitions)
    return codes


def _describe(code: int, context: str, message: str | None) -> str:
    text = f"{context}: broker returned {error_name(code)} ({code})"
    return f"{text}: {message}" if message else text
