"""`KafkaPythonSession`: the ClientSession of kafka-python (process runtime only).

Error mapping:

- send: `KafkaProducer.send` raising (metadata not available within max.block.ms,
  record too large for max.request.size, unknown topic) -> `fail`: nothing was queued.
  The delivery future's error speaks only for the batch's last attempt (kafka-python
  does not say whether an earlier one may have been appended), so it is `fail` only
  when the broker refuses that batch every time it sees it (`DEFINITE`; kafka-python
  retries a batch with the same bytes): `MessageSizeTooLargeError`,
  `RecordListTooLargeError`, `InvalidTopicError` and topic/cluster authorization
  errors (ACLs do not change during a run); Kafka checks each before the append.
  Anything else from the future -> `info`: `KafkaTimeoutError` (the batch expired,
  perhaps after it was sent), a retriable error after retries ran out
  (NOT_LEADER_OR_FOLLOWER, NOT_ENOUGH_REPLICAS_AFTER_APPEND, REQUEST_TIMED_OUT, a lost
  connection), and errors that depend on the attempt (NOT_ENOUGH_REPLICAS,
  OUT_OF_ORDER_SEQUENCE_NUMBER, CORRUPT_MESSAGE: an earlier attempt may have landed).
- poll: any error -> `info`.
- commit: `CommitFailedError` (the group rebalanced) -> `fail`; anything else -> `info`.
- assign/subscribe: failing to create the consumer (no broker reachable) -> `fail`.

Generations come from kafka-python's coordinator (`_coordinator._generation`, read in
the rebalance callback). A crash stops the heartbeat and closes the connections
without LeaveGroup (kafka-python's private `_coordinator._close_heartbeat` and
`_client.close`), so the group notices only when the session times out.
"""

from __future__ import annotations

from typing import Any

import kafka.errors as kerr
from kafka import KafkaConsumer, KafkaProducer, OffsetAndMetadata
from kafka import TopicPartition as KTopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener

from . import ClientLibraryError  # (imported lazily by open_session: no cycle at import)
from .session import (
    OpFailed,
    OpUnknown,
    PollRecords,
    Rebalance,
    SessionSpec,
    decode_value,
    split_log,
)
from .threaded import ThreadedSession

# Delivery errors that prove the batch was never appended, however often it was retried.
DEFINITE = (
    kerr.MessageSizeTooLargeError,
    kerr.RecordListTooLargeError,
    kerr.InvalidTopicError,
    kerr.TopicAuthorizationFailedError,
    kerr.ClusterAuthorizationFailedError,
)


def delivery_failed_for_certain(error: Exception) -> bool:
    """Whether a delivery future's error proves the batch was not appended (`fail`);
    False means its outcome is unknown (`info`)."""
    return isinstance(error, DEFINITE)


def _tp(log: str) -> KTopicPartition:
    return KTopicPartition(*split_log(log))


class _Listener(ConsumerRebalanceListener):
    def __init__(self, session: KafkaPythonSession) -> None:
        self.session = session

    def on_partitions_revoked(self, revoked: Any) -> None:
        pass

    def on_partitions_assigned(self, assigned: Any) -> None:
        # Runs inside consumer.poll, i.e. in the worker thread that holds the lock.
        consumer = self.session._consumer
        if consumer is None:  # closed while the callback was queued: nothing is owned
            return
        generation = consumer._coordinator._generation.generation_id
        owned = sorted(f"{tp.topic}/{tp.partition}" for tp in consumer.assignment())
        self.session._rebalance = Rebalance(owned, generation)


class KafkaPythonSession(ThreadedSession):
    """kafka-python's KafkaProducer and KafkaConsumer behind the ClientSession interface."""

    def __init__(self, spec: SessionSpec) -> None:
        super().__init__(spec)
        self._producer: KafkaProducer | None = None
        self._consumer: KafkaConsumer | None = None
        self._subscribed = False
        self._group: str | None = None

    # -- clients (called in the worker thread) ---------------------------------------------

    def _common(self) -> dict[str, Any]:
        s = self.spec
        return {
            "bootstrap_servers": s.bootstrap.split(","),
            "client_id": s.client_id,
            "request_timeout_ms": s.request_timeout_ms,
            "reconnect_backoff_ms": 50,
            "retry_backoff_ms": 100,
        }

    def _producer_client(self) -> KafkaProducer:
        if self._producer is None:
            p = self.spec.producer
            try:
                self._producer = KafkaProducer(
                    **self._common(),
                    acks={"all": "all", "1": 1, "0": 0}[p.acks],
                    enable_idempotence=p.enable_idempotence,
                    retries=p.retries,
                    max_in_flight_requests_per_connection=p.max_in_flight,
                    linger_ms=p.linger_ms,
                    delivery_timeout_ms=p.delivery_timeout_ms,
                    max_block_ms=self.spec.request_timeout_ms,
                )
            except kerr.KafkaError as exc:
                raise OpFailed(f"could not start a KafkaProducer: {exc!r}") from exc
        return self._producer

    def _consumer_client(self, *, group: str | None, subscribe: bool) -> KafkaConsumer:
        current = self._consumer
        if current is not None and (
            self._subscribed != subscribe or (subscribe and self._group != group)
        ):
            current.close(autocommit=False)
            self._consumer = current = None
        if current is None:
            s = self.spec
            try:
                current = KafkaConsumer(
                    **self._common(),
                    group_id=group,
                    enable_auto_commit=False,
                    auto_offset_reset="earliest",
                    fetch_max_wait_ms=s.fetch_max_wait_ms,
                    max_poll_records=s.max_poll_records,
                    session_timeout_ms=s.session_timeout_ms,
                    heartbeat_interval_ms=s.heartbeat_interval_ms,
                    max_poll_interval_ms=s.max_poll_interval_ms,
                )
            except kerr.KafkaError as exc:
                raise OpFailed(f"could not start a KafkaConsumer: {exc!r}") from exc
            self._consumer = current
            self._group = group
            self._subscribed = subscribe
            self._rebalance = None
            self._polled_next = {}
        return current

    def _assigned(self) -> KafkaConsumer:
        if self._consumer is None:
            raise OpFailed("poll before assign or subscribe: the process consumes nothing")
        return self._consumer

    def _close(self, *, polite: bool) -> None:
        consumer, producer = self._consumer, self._producer
        self._consumer = self._producer = None
        if consumer is not None:
            if polite:
                consumer.close(autocommit=False)
            else:
                consumer._coordinator._close_heartbeat()
                consumer._client.close()
        if producer is not None:
            producer.close(timeout=self.spec.request_timeout_ms / 1000 if polite else 0)

    # -- operations ------------------------------------------------------------------------

    async def send(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Produce `messages`; see the module docstring for the outcome mapping."""
        return await self.call(self._send, messages)

    def _send(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        producer = self._producer_client()
        futures = []
        queue_error: Exception | None = None
        for m in messages:
            key = None if m["key"] is None else m["key"].encode()
            try:
                futures.append(producer.send(m["topic"], str(m["value"]).encode(), key))
            except kerr.KafkaError as exc:
                queue_error = exc
                break
        if not futures and queue_error is not None:
            raise OpFailed(f"not queued: {queue_error!r}")
        wait_s = self.spec.send_timeout_s - 1.0
        out: list[dict[str, Any]] = []
        definite: list[Exception] = []
        unknown: list[Exception] = []
        for m, future in zip(messages, futures, strict=False):
            try:
                meta = future.get(timeout=wait_s)
            except kerr.KafkaError as exc:
                (definite if delivery_failed_for_certain(exc) else unknown).append(exc)
            else:
                out.append({**m, "partition": meta.partition, "offset": meta.offset})
        if not unknown and not out and queue_error is None:
            raise OpFailed(repr(definite[0]))
        if unknown or definite or queue_error is not None:
            first = (unknown or definite or [queue_error])[0]  # type: ignore[list-item]  # not None here
            raise OpUnknown(f"{len(out)} of {len(messages)} messages acknowledged: {first!r}")
        return out

    async def poll(self, wait_s: float) -> PollRecords:
        """Poll once (a rebalance inside it is kept for `take_rebalance`)."""
        return await self.call(self._poll, wait_s)

    def _poll(self, wait_s: float) -> PollRecords:
        consumer = self._assigned()
        try:
            batches = consumer.poll(timeout_ms=int(wait_s * 1000))
        except kerr.KafkaError as exc:
            raise OpUnknown(repr(exc)) from exc
        polled: PollRecords = {}
        for tp, records in sorted(batches.items()):
            log = f"{tp.topic}/{tp.partition}"
            polled[log] = [
                [
                    r.offset,
                    None if r.key is None else r.key.decode(errors="replace"),
                    decode_value(r.value, log),
                ]
                for r in records
            ]
            self._polled_next[log] = records[-1].offset + 1
        return polled

    async def assign(self, logs: list[str], seek: str) -> None:
        """Assign `logs`, from the beginning or the group's committed offsets."""
        if seek == "committed" and self.spec.group is None:
            raise OpFailed("seek 'committed' needs a group.id; this session has none")

        def assign() -> None:
            consumer = self._consumer_client(group=self.spec.group, subscribe=False)
            tps = [_tp(log) for log in logs]
            # Assigning nothing first makes a kept log start over from the seek too.
            consumer.assign([])
            consumer.assign(tps)
            if seek == "beginning":
                consumer.seek_to_beginning(*tps)

        await self.call(assign)

    async def subscribe(self, topics: list[str], group: str) -> None:
        """Subscribe as a member of `group`; the join happens in the next poll."""

        def subscribe() -> None:
            consumer = self._consumer_client(group=group, subscribe=True)
            consumer.subscribe(topics, listener=_Listener(self))

        await self.call(subscribe)

    async def commit(self, offsets: dict[str, int]) -> None:
        """Commit synchronously."""

        def commit() -> None:
            consumer = self._assigned()
            payload = {_tp(log): OffsetAndMetadata(o, "", -1) for log, o in offsets.items()}
            try:
                consumer.commit(payload)
            except kerr.CommitFailedError as exc:
                raise OpFailed(repr(exc)) from exc
            except kerr.KafkaError as exc:
                raise OpUnknown(repr(exc)) from exc

        await self.call(commit)

    async def end_offsets(self, logs: list[str]) -> dict[str, int]:
        """Each log's end offset."""

        def ends() -> dict[str, int]:
            try:
                found = self._assigned().end_offsets([_tp(log) for log in logs])
            except kerr.KafkaError as exc:
                raise OpUnknown(repr(exc)) from exc
            return {f"{tp.topic}/{tp.partition}": o for tp, o in found.items()}

        return await self.call(ends)

    async def position(self, log: str) -> int:
        """Where the next poll of `log` starts."""

        def position() -> int:
            try:
                return int(self._assigned().position(_tp(log)))
            except kerr.KafkaError as exc:
                raise OpUnknown(repr(exc)) from exc

        return await self.call(position)

    # -- transactions: not wired for kafka-python (the run settings refuse it first) ------

    def _no_transactions(self) -> ClientLibraryError:
        return ClientLibraryError(
            "faultline's kafka-python session has no transactions: use --client "
            "confluent-kafka or faultline for transactional workloads"
        )

    async def begin_transaction(self) -> None:
        """Not supported: raises ClientLibraryError."""
        raise self._no_transactions()

    async def send_offsets_to_transaction(self, offsets: dict[str, int], group: str) -> None:
        """Not supported: raises ClientLibraryError."""
        raise self._no_transactions()

    async def commit_transaction(self) -> None:
        """Not supported: raises ClientLibraryError."""
        raise self._no_transactions()

    async def abort_transaction(self) -> None:
        """Not supported: raises ClientLibraryError."""
        raise self._no_transactions()
