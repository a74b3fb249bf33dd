"""`NativeSession`: the ClientSession of faultline's own trio client (sim and process runtimes).

Error mapping (the client already sorts its errors into the two kinds, see
`workloads.client.errors`):

- send: `Producer.send` raising before the record was queued -> `fail` (nothing left
  this process); a delivery raising `DefiniteFailure` (e.g. MESSAGE_TOO_LARGE,
  exhausted retries on errors that prove the batch was rejected) -> `fail`;
  `UnknownOutcome` (timeout, lost connection after the request was written,
  NOT_ENOUGH_REPLICAS_AFTER_APPEND) -> `info`. A multi-message send is `ok` only if
  every message is, `fail` only if every message definitely failed, else `info`.
- poll: any client error -> `info` (a poll may auto-commit or join a group).
- commit: `CommitFailedError` (rebalance, fenced) -> `fail`; `CommitOutcomeUnknown`
  and anything else -> `info`.
- assign/subscribe: local state changes; failing to bootstrap the consumer -> `fail`.
- transactions (a spec with a transactional_id; the producer runs init_transactions
  on first use, fencing older instances): the client's `TransactionAbortableError`
  (a send of the transaction failed, the coordinator refused a step, EndTxn(commit)
  answered INVALID_TXN_STATE) -> `TxnAbortable`; `TransactionFatalError` (fenced,
  refused the id) -> `TxnFatal`; EndTxn(commit) unanswered -> `OpUnknown`. Inside a
  transaction any failed delivery makes the send `TxnAbortable`: the transaction can
  no longer commit. After an unknown commit or a failed abort the producer is
  dropped, and the next use starts a new instance of the transactional id, whose
  InitProducerId settles (aborts) whatever the old one left open. After a fatal
  error every later send or transactional call is `TxnFatal` too: the process is a
  zombie, and a new instance started from it would fence its successor.

Each client (producer, consumer) lives in its own task of the session's nursery, so
a consumer can be replaced (assign <-> subscribe) while the producer stays, and a
crash cancels them all without LeaveGroup or flush.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any, Self, TypeVar

import trio

from workloads.client import (
    ConsumerConfig,
    DefiniteFailure,
    KafkaClientError,
    Network,
    Producer,
    ProducerConfig,
    TopicPartition,
    UnknownOutcome,
)
from workloads.client.consumer import LATEST, CommitOutcomeUnknown, Consumer
from workloads.client.errors import (
    TransactionAbortableError,
    TransactionFatalError,
    TransactionOutcomeUnknown,
)
from workloads.client.transactions import TxnState

from .session import (
    OpFailed,
    OpUnknown,
    PollRecords,
    Rebalance,
    SessionSpec,
    TxnAbortable,
    TxnFatal,
    decode_value,
    split_log,
)

C = TypeVar("C")


class _Hosted:
    """A client context manager entered and exited in a task of its own."""

    def __init__(self) -> None:
        self.client: Any = None
        self.close = trio.Event()
        self.done = trio.Event()
        self.scope = trio.CancelScope()

    async def host(
        self, manager: AbstractAsyncContextManager[Any], *, task_status: trio.TaskStatus[Any]
    ) -> None:
        started = False
        try:
            with self.scope:
                async with manager as client:
                    self.client = client
                    task_status.started(client)
                    started = True
                    await self.close.wait()
        except KafkaClientError:
            if not started:
                raise  # to `nursery.start`: the client never came up
            # Failing to say goodbye (flush, LeaveGroup) is not an operation of the history.
        finally:
            self.done.set()

    async def shut(self) -> None:
        """Close the client politely, bounded by the caller's cancel scopes."""
        self.close.set()
        await self.done.wait()


class NativeSession:
    """faultline's trio Producer and Consumer behind the ClientSession interface."""

    def __init__(
        self,
        spec: SessionSpec,
        *,
        network: Network,
        clock_ms: Callable[[], int],
        rng: random.Random,
    ) -> None:
        self.spec = spec
        self.network = network
        self.clock_ms = clock_ms
        self.rng = rng
        self._nursery: trio.Nursery | None = None
        self._producer_starting = trio.Lock()
        self._nursery_cm: Any = None
        self._producer: _Hosted | None = None
        self._consumer: _Hosted | None = None
        self._consumer_group: str | None = None
        self._subscribed = False
        self._crashed = False
        self._rebalance: Rebalance | None = None
        # Set once the transactional producer is fenced: this process is a zombie, and
        # starting a new instance of the id from it would fence its successor.
        self._fenced: TxnFatal | None = None

    async def __aenter__(self) -> Self:
        self._nursery_cm = trio.open_nursery()
        self._nursery = await self._nursery_cm.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._nursery is not None
        try:
            if exc is None and not self._crashed:
                with trio.move_on_after(self.spec.admin_timeout_s):
                    for hosted in (self._consumer, self._producer):
                        if hosted is not None:
                            await hosted.shut()
        finally:
            # Anything still running dies without a goodbye: this is the crash path.
            self._nursery.cancel_scope.cancel()
            await self._nursery_cm.__aexit__(None, None, None)

    def crash(self) -> None:
        """Make leaving the block drop every client as a killed process would."""
        self._crashed = True

    # -- clients ---------------------------------------------------------------------------

    async def _start(self, manager: AbstractAsyncContextManager[C]) -> tuple[_Hosted, C]:
        assert self._nursery is not None, "use the session inside `async with`"
        hosted = _Hosted()
        try:
            client = await self._nursery.start(hosted.host, manager)
        except KafkaClientError as exc:
            raise OpFailed(f"could not start a client: {exc}") from exc
        return hosted, client

    async def _producer_client(self) -> Producer:
        if self._fenced is not None:
            raise TxnFatal(f"this process's transactional producer was fenced: {self._fenced}")
        # Pipelined sends call this concurrently: one of them starts the producer.
        async with self._producer_starting:
            return await self._start_producer()

    async def _start_producer(self) -> Producer:
        if self._producer is None:
            s, p = self.spec, self.spec.producer
            config = ProducerConfig(
                bootstrap_servers=s.bootstrap.split(","),
                client_id=s.client_id,
                acks={"all": -1, "1": 1, "0": 0}[p.acks],
                enable_idempotence=p.enable_idempotence,
                retries=p.retries,
                max_in_flight_requests_per_connection=p.max_in_flight,
                linger_ms=p.linger_ms,
                delivery_timeout_ms=p.delivery_timeout_ms,
                request_timeout_ms=s.request_timeout_ms,
                max_block_ms=p.delivery_timeout_ms,
                socket_connection_setup_timeout_ms=s.request_timeout_ms,
                transactional_id=s.transactional_id,
                transaction_timeout_ms=s.transaction_timeout_ms,
            )
            manager = Producer(config, network=self.network, rng=self.rng, clock_ms=self.clock_ms)
            hosted, producer = await self._start(manager)
            self._producer = hosted
            if s.transactional_id is not None:
                try:
                    await producer.init_transactions()
                except TransactionFatalError as exc:
                    self._drop_producer()
                    self._fenced = TxnFatal(str(exc))
                    raise self._fenced from exc
                except KafkaClientError as exc:
                    self._drop_producer()
                    raise OpFailed(f"init_transactions failed: {exc}") from exc
        return self._producer.client

    def _drop_producer(self) -> None:
        """Forget the producer without a goodbye; the next use starts a new instance."""
        if self._producer is not None:
            self._producer.scope.cancel()
            self._producer = None

    async def _consumer_client(self, *, group: str | None, subscribe: bool) -> Consumer:
        """The consumer for this mode, replacing one of another mode or group."""
        current = self._consumer
        if current is not None and (
            self._subscribed != subscribe or (subscribe and self._consumer_group != group)
        ):
            with trio.move_on_after(self.spec.admin_timeout_s):
                await current.shut()
            current.scope.cancel()
            self._consumer = current = None
        if current is None:
            s = self.spec
            config = ConsumerConfig(
                bootstrap_servers=s.bootstrap.split(","),
                client_id=s.client_id,
                group_id=group,
                enable_auto_commit=False,
                # Never "latest": a member that finds no committed offset and skips to
                # the end would make the group commit past messages nobody read.
                auto_offset_reset="earliest",
                request_timeout_ms=s.request_timeout_ms,
                max_block_ms=s.request_timeout_ms * 2,
                socket_connection_setup_timeout_ms=s.request_timeout_ms,
                fetch_max_wait_ms=s.fetch_max_wait_ms,
                max_poll_records=s.max_poll_records,
                session_timeout_ms=s.session_timeout_ms,
                heartbeat_interval_ms=s.heartbeat_interval_ms,
                max_poll_interval_ms=s.max_poll_interval_ms,
                isolation_level=s.isolation_level,
            )
            self._consumer, _ = await self._start(
                Consumer(config, network=self.network, rng=self.rng)
            )
            self._consumer_group = group
            self._subscribed = subscribe
            self._rebalance = None
        assert self._consumer is not None  # started just above, or kept from before
        return self._consumer.client

    def _assigned_consumer(self) -> Consumer:
        if self._consumer is None:
            raise OpFailed("poll before assign or subscribe: the process consumes nothing")
        return self._consumer.client

    # -- operations ------------------------------------------------------------------------

    async def send(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Produce `messages`; see the module docstring for the outcome mapping."""
        producer = await self._producer_client()
        if producer.transactions is not None:
            return await self._send_in_transaction(producer, messages)
        deliveries = []
        queue_error: KafkaClientError | None = None
        for m in messages:
            key = None if m["key"] is None else m["key"].encode()
            try:
                deliveries.append(await producer.send(m["topic"], str(m["value"]).encode(), key))
            except KafkaClientError as exc:
                queue_error = exc
                break
        if not deliveries and queue_error is not None:
            raise OpFailed(f"not queued: {queue_error}") from queue_error
        out: list[dict[str, Any]] = []
        definite: list[BaseException] = []
        unknown: list[BaseException] = []
        for m, delivery in zip(messages, deliveries, strict=False):
            try:
                meta = await delivery.wait()
            except DefiniteFailure as exc:
                definite.append(exc)
            except (UnknownOutcome, KafkaClientError) as exc:
                unknown.append(exc)
            else:
                out.append({**m, "partition": meta.partition, "offset": meta.offset})
        if not unknown and not out and queue_error is None:
            raise OpFailed(str(definite[0]))
        if unknown or definite or queue_error is not None:
            first = (unknown or definite or [queue_error])[0]  # type: ignore[list-item]  # not None here
            raise OpUnknown(f"{len(out)} of {len(messages)} messages acknowledged: {first}")
        return out

    async def _send_in_transaction(
        self, producer: Producer, messages: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """A send of the open transaction: every message acknowledged, or the transaction
        cannot commit (`TxnAbortable`) or the producer is done (`TxnFatal`)."""
        out: list[dict[str, Any]] = []
        try:
            deliveries = []
            for m in messages:
                key = None if m["key"] is None else m["key"].encode()
                deliveries.append(await producer.send(m["topic"], str(m["value"]).encode(), key))
            for m, delivery in zip(messages, deliveries, strict=True):
                meta = await delivery.wait()
                out.append({**m, "partition": meta.partition, "offset": meta.offset})
        except KafkaClientError as exc:
            raise self._txn_error(producer, exc) from exc
        return out

    def _txn_error(self, producer: Producer, exc: KafkaClientError) -> OpFailed | OpUnknown:
        """The session error of a transactional call's client error."""
        txn = producer.transactions
        if isinstance(exc, TransactionFatalError) or (
            txn is not None and txn.state is TxnState.FATAL_ERROR
        ):
            self._drop_producer()
            self._fenced = TxnFatal(str(txn.error if txn is not None and txn.error else exc))
            return self._fenced
        return TxnAbortable(str(exc))

    async def _transactional_producer(self) -> Producer:
        if self.spec.transactional_id is None:
            raise OpFailed("transactions need a session with a transactional_id")
        return await self._producer_client()

    async def begin_transaction(self) -> None:
        """Open a transaction (the first one after init_transactions on first use)."""
        producer = await self._transactional_producer()
        try:
            await producer.begin_transaction()
        except KafkaClientError as exc:
            raise self._txn_error(producer, exc) from exc

    async def send_offsets_to_transaction(self, offsets: dict[str, int], group: str) -> None:
        """Commit `group`'s offsets with the open transaction."""
        producer = await self._transactional_producer()
        tps = {TopicPartition(*split_log(k)): v for k, v in offsets.items()}
        try:
            await producer.send_offsets_to_transaction(tps, group)
        except KafkaClientError as exc:
            raise self._txn_error(producer, exc) from exc

    async def commit_transaction(self) -> None:
        """Commit; an unanswered EndTxn is `OpUnknown` (and the producer is replaced)."""
        producer = await self._transactional_producer()
        try:
            await producer.commit_transaction()
        except TransactionOutcomeUnknown as exc:
            self._drop_producer()
            raise OpUnknown(str(exc)) from exc
        except (TransactionAbortableError, TransactionFatalError) as exc:
            raise self._txn_error(producer, exc) from exc
        except KafkaClientError as exc:
            self._drop_producer()
            raise OpUnknown(str(exc)) from exc

    async def abort_transaction(self) -> None:
        """Abort; if the abort itself fails the producer is replaced (the new instance's
        InitProducerId aborts what is left open)."""
        producer = await self._transactional_producer()
        try:
            await producer.abort_transaction()
        except TransactionFatalError as exc:
            raise self._txn_error(producer, exc) from exc
        except KafkaClientError as exc:
            self._drop_producer()
            raise OpUnknown(f"abort did not complete: {exc}") from exc

    async def poll(self, wait_s: float) -> PollRecords:
        """Poll once; a rebalance during it is kept for `take_rebalance`."""
        consumer = self._assigned_consumer()
        try:
            records = await consumer.poll(wait_s)
        except KafkaClientError as exc:
            raise OpUnknown(str(exc)) from exc
        finally:
            self._note_rebalance(consumer)
        polled: PollRecords = {}
        for r in records:
            log = f"{r.topic}/{r.partition}"
            key = None if r.key is None else r.key.decode(errors="replace")
            polled.setdefault(log, []).append([r.offset, key, decode_value(r.value, log)])
        return polled

    def _note_rebalance(self, consumer: Consumer) -> None:
        events = consumer.take_rebalance_events()
        if events:
            last = events[-1]
            self._rebalance = Rebalance(sorted(str(tp) for tp in last.assignment), last.generation)

    async def assign(self, logs: list[str], seek: str) -> None:
        """Assign `logs`; seek "beginning" or to the group's committed offsets."""
        if seek == "committed" and self.spec.group is None:
            raise OpFailed("seek 'committed' needs a group.id; this session has none")
        consumer = await self._consumer_client(group=self.spec.group, subscribe=False)
        tps = [TopicPartition(*split_log(log)) for log in logs]
        # Assigning nothing first forgets every position, so a log kept from the last
        # assignment starts over from the seek as well.
        consumer.assign([])
        consumer.assign(tps)
        if seek == "beginning":
            consumer.seek_to_beginning(tps)

    async def subscribe(self, topics: list[str], group: str) -> None:
        """Subscribe to `topics` as a member of `group`; the join happens at the next poll."""
        consumer = await self._consumer_client(group=group, subscribe=True)
        consumer.subscribe(topics)

    async def commit(self, offsets: dict[str, int]) -> None:
        """Commit synchronously; `CommitFailedError` is `fail`, anything else unknown."""
        consumer = self._assigned_consumer()
        try:
            await consumer.commit({TopicPartition(*split_log(k)): v for k, v in offsets.items()})
        except CommitOutcomeUnknown as exc:
            raise OpUnknown(str(exc)) from exc
        except DefiniteFailure as exc:
            raise OpFailed(str(exc)) from exc
        except KafkaClientError as exc:
            raise OpUnknown(str(exc)) from exc
        finally:
            self._note_rebalance(consumer)

    async def end_offsets(self, logs: list[str]) -> dict[str, int]:
        """Each log's end offset, from its leader."""
        consumer = self._assigned_consumer()
        tps = [TopicPartition(*split_log(log)) for log in logs]
        try:
            ends = await consumer.list_offsets(tps, LATEST)
        except KafkaClientError as exc:
            raise OpUnknown(str(exc)) from exc
        return {str(tp): offset for tp, offset in ends.items()}

    async def position(self, log: str) -> int:
        """Where the next poll of `log` starts."""
        consumer = self._assigned_consumer()
        try:
            return await consumer.position(TopicPartition(*split_log(log)))
        except KafkaClientError as exc:
            raise OpUnknown(str(exc)) from exc

    def pause_membership(self, paused: bool) -> None:
        """Stop (True) or restart (False) the group heartbeats of the subscribed consumer:
        a stalled member, whose session expires while it still holds its generation."""
        if self._consumer is not None and self._subscribed:
            self._consumer.client.pause_heartbeats(paused)

    def take_rebalance(self) -> Rebalance | None:
        """The assignment after the latest rebalance since the last call, if any."""
        change, self._rebalance = self._rebalance, None
        return change
