"""`ConfluentSession`: the ClientSession of confluent-kafka / librdkafka (process runtime only).

Error mapping:

- send: `produce` raising (`BufferError`: the local queue is full; `KafkaException`:
  unknown topic, message over message.max.bytes) -> `fail`: nothing was queued. A
  delivery report's error speaks only for the last attempt, and librdkafka's Python
  binding does not expose whether an earlier attempt may have been persisted
  (`rd_kafka_message_status`), so a delivery error is `fail` only when the broker
  refuses that message every time it sees it (`DEFINITE_DELIVERY`): MSG_SIZE_TOO_LARGE,
  RECORD_LIST_TOO_LARGE, TOPIC_EXCEPTION (an illegal topic) and topic/cluster
  authorization failures (ACLs do not change during a run); Kafka checks each before
  the append. Every other delivery error -> `info`: _MSG_TIMED_OUT (message.timeout.ms
  passed, perhaps after a request went out), retriable errors after retries ran out
  (NOT_LEADER_OR_FOLLOWER, REQUEST_TIMED_OUT, NOT_ENOUGH_REPLICAS_AFTER_APPEND, ...),
  unknown errors, and librdkafka's local _UNKNOWN_TOPIC / _UNKNOWN_PARTITION, which it
  also raises for messages already sent once and queued for a retry when the topic
  or partition vanishes from metadata (a partitioned or restarting cluster can answer
  metadata that way). A message still undelivered when flush() gives up -> `info`.
- poll: a fatal consumer error -> `info`; non-fatal error events (librdkafka reports
  transient connection trouble this way and retries by itself) are not records and
  are skipped.
- commit: REBALANCE_IN_PROGRESS, ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID (the group
  moved on; nothing stored) -> `fail`; anything else -> `info`.
- assign/subscribe: failing to create the consumer -> `fail`.
- transactions (a spec with a transactional_id): librdkafka classifies each error of
  its transactional API. `error.fatal()` (PRODUCER_FENCED, INVALID_PRODUCER_EPOCH,
  authorization) -> `TxnFatal`: the producer is dead. `txn_requires_abort()` ->
  `TxnAbortable`. A retriable error is retried within the request timeout (librdkafka
  documents every transactional call as safe to repeat then). A delivery error inside a
  transaction -> `TxnAbortable`: librdkafka then refuses to commit it. Any other commit
  error, or a commit still retriable at its deadline -> `OpUnknown`. init_transactions
  failing (not fatally) -> `OpFailed`: no transaction began, the next begin retries it.

Known limits, both librdkafka's: it does not expose the group generation, so
rebalances are recorded with `assignment` but without `generation` (the checker's
split-assignment needs generations and skips these); and its Python binding has no way
to drop a consumer without leaving the group, so a crash still sends LeaveGroup (the
producer's queue is purged unsent, as a killed process would lose it).
"""

from __future__ import annotations

import time
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_INVALID,
    OFFSET_STORED,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
)
from confluent_kafka import TopicPartition as CTopicPartition

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
from .threaded import ThreadedSession

# Delivery errors that prove the message is in no log (see the module docstring).
DEFINITE_DELIVERY = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.RECORD_LIST_TOO_LARGE,
        KafkaError.TOPIC_EXCEPTION,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
    }
)
_COMMIT_REJECTED = frozenset(
    {KafkaError.REBALANCE_IN_PROGRESS, KafkaError.ILLEGAL_GENERATION, KafkaError.UNKNOWN_MEMBER_ID}
)


def delivery_failed_for_certain(err: KafkaError) -> bool:
    """Whether a delivery report's error proves the message was not appended (`fail`);
    False means its outcome is unknown (`info`)."""
    return err.code() in DEFINITE_DELIVERY


def _raise_if_fatal(exc: KafkaException, what: str) -> None:
    """Raise TxnFatal when `exc` says the transactional producer is dead (fenced)."""
    err = exc.args[0] if exc.args else None
    if isinstance(err, KafkaError) and err.fatal():
        raise TxnFatal(f"{what}: {err}") from exc


def _tp(log: str, offset: int = OFFSET_INVALID) -> CTopicPartition:
    topic, partition = split_log(log)
    return CTopicPartition(topic, partition, offset)


def _log(tp: CTopicPartition) -> str:
    return f"{tp.topic}/{tp.partition}"


class ConfluentSession(ThreadedSession):
    """confluent-kafka's Producer and Consumer behind the ClientSession interface."""

    def __init__(self, spec: SessionSpec) -> None:
        super().__init__(spec)
        self._producer: Producer | None = None
        self._consumer: Consumer | None = None
        self._subscribed = False
        self._group: str | None = None
        self._txn_ready = False  # init_transactions succeeded
        self._in_txn = False

    # -- clients (called in the worker thread) ---------------------------------------------

    def _common(self) -> dict[str, Any]:
        s = self.spec
        return {
            "bootstrap.servers": s.bootstrap,
            "client.id": s.client_id,
            "socket.timeout.ms": max(s.request_timeout_ms, 10),
            "reconnect.backoff.ms": 50,
            "reconnect.backoff.max.ms": 1000,
            "retry.backoff.ms": 100,
            "broker.address.family": "v4",
        }

    def _producer_client(self) -> Producer:
        if self._producer is None:
            p = self.spec.producer
            try:
                self._producer = Producer(
                    {
                        **self._common(),
                        "acks": p.acks,
                        "enable.idempotence": p.enable_idempotence,
                        "retries": min(p.retries, 2_147_483_647),
                        "max.in.flight.requests.per.connection": p.max_in_flight,
                        "linger.ms": p.linger_ms,
                        "delivery.timeout.ms": p.delivery_timeout_ms,
                        "request.timeout.ms": self.spec.request_timeout_ms,
                        **self._transactional(),
                    }
                )
            except KafkaException as exc:
                raise OpFailed(f"could not start a confluent Producer: {exc}") from exc
        return self._producer

    def _transactional(self) -> dict[str, Any]:
        s = self.spec
        if s.transactional_id is None:
            return {}
        return {
            "transactional.id": s.transactional_id,
            "transaction.timeout.ms": s.transaction_timeout_ms,
        }

    def _consumer_client(self, *, group: str | None, subscribe: bool) -> Consumer:
        current = self._consumer
        if current is not None and (
            self._subscribed != subscribe or (subscribe and self._group != group)
        ):
            current.close()
            self._consumer = current = None
        if current is None:
            s = self.spec
            try:
                current = Consumer(
                    {
                        **self._common(),
                        # librdkafka wants a group.id even for assign(); an assign-only
                        # session gets one of its own that never joins or commits.
                        "group.id": group or f"{s.client_id}-assign",
                        "enable.auto.commit": False,
                        "enable.auto.offset.store": False,
                        "auto.offset.reset": "earliest",
                        "enable.partition.eof": False,
                        "fetch.wait.max.ms": s.fetch_max_wait_ms,
                        "session.timeout.ms": s.session_timeout_ms,
                        "heartbeat.interval.ms": s.heartbeat_interval_ms,
                        "max.poll.interval.ms": s.max_poll_interval_ms,
                        "isolation.level": s.isolation_level,
                    }
                )
            except KafkaException as exc:
                raise OpFailed(f"could not start a confluent Consumer: {exc}") from exc
            self._consumer = current
            self._group = group
            self._subscribed = subscribe
            self._rebalance = None
            self._polled_next = {}
        return current

    def _assigned(self) -> Consumer:
        if self._consumer is None:
            raise OpFailed("poll before assign or subscribe: the process consumes nothing")
        return self._consumer

    def _close(self, *, polite: bool) -> None:
        consumer, producer = self._consumer, self._producer
        self._consumer = self._producer = None
        if consumer is not None:
            consumer.close()
        if producer is not None:
            try:
                if polite:
                    producer.flush(self.spec.request_timeout_ms / 1000)
                else:
                    producer.purge()
            except KafkaException:
                # A transactional producer in a fatal state refuses even a flush; the
                # session is over either way and its outcome was already recorded.
                pass

    # -- operations ------------------------------------------------------------------------

    async def send(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Produce `messages`; see the module docstring for the outcome mapping."""
        return await self.call(self._send, messages)

    def _send(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        producer = self._producer_client()
        reports: dict[int, tuple[KafkaError | None, Any]] = {}
        queued = 0
        queue_error: Exception | None = None
        for i, m in enumerate(messages):

            def report(err: KafkaError | None, msg: Any, i: int = i) -> None:
                reports[i] = (err, msg)

            key = None if m["key"] is None else m["key"].encode()
            try:
                producer.produce(m["topic"], str(m["value"]).encode(), key, on_delivery=report)
            except (BufferError, KafkaException) as exc:
                queue_error = exc
                break
            queued += 1
        if self._in_txn and isinstance(queue_error, KafkaException):
            _raise_if_fatal(queue_error, "produce")
        if queued == 0 and queue_error is not None:
            raise OpFailed(f"not queued: {queue_error}")
        try:
            producer.flush(self.spec.send_timeout_s - 1.0)
        except KafkaException as exc:
            # A transactional producer's flush reports the transaction's own failure.
            _raise_if_fatal(exc, "flush")
            raise (TxnAbortable if self._in_txn else OpUnknown)(f"flush: {exc}") from exc
        out: list[dict[str, Any]] = []
        definite: list[str] = []
        unknown: list[str] = []
        for i in range(queued):
            if i not in reports:
                unknown.append("no delivery report before flush() gave up")
                continue
            err, msg = reports[i]
            if err is None:
                out.append({**messages[i], "partition": msg.partition(), "offset": msg.offset()})
            elif delivery_failed_for_certain(err):
                definite.append(str(err))
            else:
                unknown.append(str(err))
        if self._in_txn and (unknown or definite or queue_error is not None):
            # librdkafka will not commit a transaction one of whose messages failed.
            first = (unknown or definite or [str(queue_error)])[0]
            raise TxnAbortable(f"a send inside the transaction failed: {first}")
        if not unknown and not out and queue_error is None:
            raise OpFailed(definite[0])
        if unknown or definite or queue_error is not None:
            first = (unknown or definite or [str(queue_error)])[0]
            raise OpUnknown(f"{len(out)} of {len(messages)} messages acknowledged: {first}")
        return out

    async def poll(self, wait_s: float) -> PollRecords:
        """Consume one batch (a rebalance inside it is kept for `take_rebalance`)."""
        return await self.call(self._poll, wait_s)

    def _poll(self, wait_s: float) -> PollRecords:
        consumer = self._assigned()
        try:
            batch = consumer.consume(self.spec.max_poll_records, wait_s)
        except KafkaException as exc:
            raise OpUnknown(str(exc)) from exc
        polled: PollRecords = {}
        for msg in batch:
            err = msg.error()
            if err is not None:
                if err.fatal():
                    raise OpUnknown(f"fatal consumer error: {err}")
                continue
            log = f"{msg.topic()}/{msg.partition()}"
            key = msg.key()
            polled.setdefault(log, []).append(
                [
                    msg.offset(),
                    None if key is None else key.decode(errors="replace"),
                    decode_value(msg.value(), log),
                ]
            )
        for log, records in polled.items():
            self._polled_next[log] = records[-1][0] + 1
        return dict(sorted(polled.items()))

    async def assign(self, logs: list[str], seek: str) -> None:
        """Assign `logs`, from the beginning or the group's committed offsets."""
        if seek == "committed" and self.spec.group is None:
            raise OpFailed("seek 'committed' needs a group.id; this session has none")
        offset = OFFSET_BEGINNING if seek == "beginning" else OFFSET_STORED

        def assign() -> None:
            consumer = self._consumer_client(group=self.spec.group, subscribe=False)
            try:
                consumer.assign([_tp(log, offset) for log in logs])
            except KafkaException as exc:
                raise OpFailed(str(exc)) from exc
            self._polled_next = {}

        await self.call(assign)

    def _on_assign(self, consumer: Consumer, partitions: list[CTopicPartition]) -> None:
        # Eager protocol: `partitions` is the whole new assignment.
        self._rebalance = Rebalance(sorted(_log(tp) for tp in partitions), None)

    def _on_revoke(self, consumer: Consumer, partitions: list[CTopicPartition]) -> None:
        for tp in partitions:
            self._polled_next.pop(_log(tp), None)

    async def subscribe(self, topics: list[str], group: str) -> None:
        """Subscribe as a member of `group`; the join happens in the next polls."""

        def subscribe() -> None:
            consumer = self._consumer_client(group=group, subscribe=True)
            try:
                consumer.subscribe(topics, on_assign=self._on_assign, on_revoke=self._on_revoke)
            except KafkaException as exc:
                raise OpFailed(str(exc)) from exc

        await self.call(subscribe)

    async def commit(self, offsets: dict[str, int]) -> None:
        """Commit synchronously."""

        def commit() -> None:
            consumer = self._assigned()
            try:
                results = consumer.commit(
                    offsets=[_tp(log, o) for log, o in offsets.items()], asynchronous=False
                )
            except KafkaException as exc:
                err = exc.args[0] if exc.args else None
                if isinstance(err, KafkaError) and err.code() in _COMMIT_REJECTED:
                    raise OpFailed(str(err)) from exc
                raise OpUnknown(str(exc)) from exc
            errors = [tp.error for tp in results or [] if tp.error is not None]
            if errors:
                if all(e.code() in _COMMIT_REJECTED for e in errors):
                    raise OpFailed(str(errors[0]))
                raise OpUnknown(str(errors[0]))

        await self.call(commit)

    async def end_offsets(self, logs: list[str]) -> dict[str, int]:
        """Each log's end offset (the high watermark)."""

        def ends() -> dict[str, int]:
            consumer = self._assigned()
            out: dict[str, int] = {}
            for log in logs:
                try:
                    _low, high = consumer.get_watermark_offsets(
                        _tp(log), timeout=self.spec.request_timeout_ms / 1000
                    )
                except KafkaException as exc:
                    raise OpUnknown(str(exc)) from exc
                out[log] = high
            return out

        return await self.call(ends)

    async def position(self, log: str) -> int:
        """Where the next poll of `log` starts (librdkafka knows it only after a fetch)."""

        def position() -> int:
            try:
                [tp] = self._assigned().position([_tp(log)])
            except KafkaException as exc:
                raise OpUnknown(str(exc)) from exc
            known = self._polled_next.get(log, 0)
            return max(tp.offset, known) if tp.offset >= 0 else known

        return await self.call(position)

    # -- transactions ------------------------------------------------------------------------

    def _txn_producer(self) -> Producer:
        if self.spec.transactional_id is None:
            raise OpFailed(
                "a transaction needs a transactional producer: this session's spec has no "
                "transactional_id"
            )
        return self._producer_client()

    def _txn_call(self, what: str, fn: Any, *, commit: bool = False) -> None:
        """Run one transactional API call, retrying retriable errors until the request
        timeout; map the rest onto TxnFatal / TxnAbortable / OpUnknown (see module doc)."""
        deadline = time.monotonic() + 2 * self.spec.request_timeout_ms / 1000
        while True:
            try:
                fn(max(0.1, deadline - time.monotonic()))
                return
            except KafkaException as exc:
                err = exc.args[0] if exc.args else None
                if not isinstance(err, KafkaError):
                    raise OpUnknown(f"{what}: {exc}") from exc
                if err.fatal():
                    raise TxnFatal(f"{what}: {err}") from exc
                if err.txn_requires_abort():
                    raise TxnAbortable(f"{what}: {err}") from exc
                if err.retriable() and time.monotonic() < deadline:
                    time.sleep(0.05)
                    continue
                if commit:
                    raise OpUnknown(f"{what}: {err}") from exc
                raise TxnAbortable(f"{what}: {err}") from exc

    @property
    def _txn_limit_s(self) -> float:
        # init_transactions and the retry loop each take up to twice the request timeout.
        return 4 * self.spec.request_timeout_ms / 1000 + 2.0

    async def begin_transaction(self) -> None:
        """Begin a transaction, running init_transactions first on first use."""

        def begin() -> None:
            producer = self._txn_producer()
            if not self._txn_ready:
                try:
                    self._txn_call("init_transactions", producer.init_transactions)
                except TxnAbortable as exc:
                    raise OpFailed(str(exc)) from exc
                self._txn_ready = True
            try:
                producer.begin_transaction()
            except KafkaException as exc:
                err = exc.args[0] if exc.args else None
                if isinstance(err, KafkaError) and err.fatal():
                    raise TxnFatal(f"begin_transaction: {err}") from exc
                raise OpFailed(f"begin_transaction: {exc}") from exc
            self._in_txn = True

        await self.call_bounded(self._txn_limit_s, begin)

    async def send_offsets_to_transaction(self, offsets: dict[str, int], group: str) -> None:
        """Add `group`'s offsets to the transaction (with the group metadata of this
        session's consumer, so a member fenced by a rebalance cannot commit them)."""

        def send_offsets() -> None:
            producer = self._txn_producer()
            consumer = self._consumer
            if consumer is None or self._group != group:
                raise TxnAbortable(
                    f"send_offsets_to_transaction for group {group!r}: this session's "
                    "consumer is not a member of it"
                )
            metadata = consumer.consumer_group_metadata()
            tps = [_tp(log, o) for log, o in offsets.items()]
            self._txn_call(
                "send_offsets_to_transaction",
                lambda timeout: producer.send_offsets_to_transaction(tps, metadata, timeout),
            )

        await self.call_bounded(self._txn_limit_s, send_offsets)

    async def commit_transaction(self) -> None:
        """Commit the open transaction (OpUnknown when its outcome cannot be known)."""

        def commit() -> None:
            producer = self._txn_producer()
            try:
                self._txn_call("commit_transaction", producer.commit_transaction, commit=True)
            finally:
                # Whatever happened, this transaction is no longer open for sends; an
                # abortable commit error leaves the abort to the caller.
                self._in_txn = False

        await self.call_bounded(self._txn_limit_s, commit)

    async def abort_transaction(self) -> None:
        """Abort the open transaction."""

        def abort() -> None:
            producer = self._txn_producer()
            self._in_txn = False
            try:
                self._txn_call("abort_transaction", producer.abort_transaction)
            except TxnAbortable as exc:
                # An abort that fails leaves the producer unusable for this process.
                raise OpUnknown(str(exc)) from exc

        await self.call_bounded(self._txn_limit_s, abort)
