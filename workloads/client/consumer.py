"""The consumer: assign or subscribe, positions, seek, offset reset, fetch, commit.

A `Consumer` is used inside `async with`; its nursery owns the connections' readers,
the auto-commit task and, in subscribe mode, the group member's heartbeat task.
`poll()` is where everything else happens, as in the Java client: it keeps the
group membership current (join, sync, rebalance callbacks), resolves missing
positions (committed offset, else auto.offset.reset via ListOffsets) and fetches
from each partition leader with fetch.max.wait.ms / fetch.min.bytes long polls.

Positions move only when records are handed out by `poll()`, so `position(tp)` is
always the offset of the next record the application will see, and the offset a
commit of "everything polled so far" stores, as Kafka defines it.

Leader epochs follow KIP-320: fetches name the leader epoch the metadata gave (a
broker still leading an older epoch answers FENCED_LEADER_EPOCH), a commit of the
consumed position carries the epoch of the record before it, and the epochs of
fetched batches and committed offsets make metadata of older epochs unusable.
"""

from __future__ import annotations

import contextlib
import math
import random
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

import trio
from kafka.protocol.consumer import (
    FetchRequest,
    ListOffsetsRequest,
    OffsetCommitRequest,
    OffsetFetchRequest,
)
from kafka.record import MemoryRecords

from .cluster import GROUP, Cluster, TopicPartition
from .config import ConsumerConfig
from .errors import (
    STALE_METADATA,
    AuthorizationError,
    BrokerError,
    CommitFailedError,
    ConnectionLostError,
    KafkaClientError,
    ProtocolViolationError,
    RequestTimedOutError,
    UnknownOutcome,
    error_name,
    is_authorization,
    is_retriable,
)
from .group import GroupMember, RebalanceEvent, RebalanceListener
from .read_committed import AbortedSkipper, AbortedTxn
from .transport import Network, TcpNetwork

EARLIEST = -2
LATEST = -1


class OffsetOutOfRangeError(KafkaClientError):
    """The position is outside the log and auto.offset.reset=none forbids resetting it."""


class CommitOutcomeUnknown(UnknownOutcome):
    """An offset commit was sent and not answered: it may or may not have been stored."""


@dataclass(frozen=True, slots=True)
class ConsumerRecord:
    """One record as fetched."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int
    headers: list[tuple[str, bytes | None]] = field(default_factory=list)
    # The leader epoch of the batch it came in (-1 if unknown).
    leader_epoch: int = -1


class _Assigned:
    """Per-partition fetch state: position, pending reset, buffered records."""

    __slots__ = ("buffer", "next_fetch", "position", "position_epoch", "reset")

    def __init__(self) -> None:
        self.position: int | None = None
        # Leader epoch of the record before `position` (-1 if unknown), committed with it.
        self.position_epoch = -1
        self.reset: int | None = None  # EARLIEST / LATEST when a seek-to was asked
        self.buffer: deque[ConsumerRecord] = deque()
        self.next_fetch: int | None = None


class Consumer:
    """faultline's Kafka consumer; use as `async with Consumer(config, ...) as consumer:`."""

    def __init__(
        self,
        config: ConsumerConfig,
        *,
        network: Network | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.network = network or TcpNetwork()
        self.rng = rng or random.Random(0)
        self._cluster: Cluster | None = None
        self._nursery: trio.Nursery | None = None
        self._nursery_cm: contextlib.AbstractAsyncContextManager[trio.Nursery] | None = None
        self._assigned: dict[TopicPartition, _Assigned] = {}
        self._subscription: list[str] | None = None
        self._group: GroupMember | None = None
        self._last_commit_at = 0.0
        self._closed = False
        self._fetch_requests: dict[
            tuple[int, tuple[TopicPartition, ...]],
            tuple[FetchRequest, list[FetchRequest.FetchTopic.FetchPartition]],
        ] = {}

    # -- lifecycle -----------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._nursery_cm = trio.open_nursery()
        self._nursery = await self._nursery_cm.__aenter__()
        try:
            self._cluster = Cluster(
                self.config, network=self.network, rng=self.rng, nursery=self._nursery
            )
            await self._cluster.bootstrap_cluster()
        except BaseException:
            # Stop the background tasks, then raise the original error unwrapped.
            self._nursery.cancel_scope.cancel()
            await self._nursery_cm.__aexit__(None, None, None)
            raise
        self._last_commit_at = trio.current_time()
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
                await self.close()
        finally:
            self._nursery.cancel_scope.cancel()
            if self._cluster is not None:
                self._cluster.close()
        # The body's own exception propagates as itself, not inside an ExceptionGroup;
        # a failure of a background task (a bug) still surfaces from the nursery.
        await self._nursery_cm.__aexit__(None, None, None)
        return None

    async def close(self, *, leave_group: bool = True) -> None:
        """Auto-commit (if enabled), leave the group, stop background tasks."""
        if self._closed:
            return
        self._closed = True
        with trio.move_on_after(self.config.request_timeout_ms / 1000):
            if self.config.enable_auto_commit and self.config.group_id and self._assigned:
                with contextlib.suppress(KafkaClientError):
                    await self.commit()
            if self._group is not None and leave_group:
                await self._group.leave("consumer closed")

    @property
    def cluster(self) -> Cluster:
        """The consumer's cluster view (valid inside `async with`)."""
        if self._cluster is None:
            raise RuntimeError("use the consumer inside `async with Consumer(...) as c:`")
        return self._cluster

    # -- assignment ----------------------------------------------------------------------

    def assign(self, partitions: Iterable[TopicPartition]) -> None:
        """Consume exactly these partitions (no group membership)."""
        if self._subscription is not None:
            raise KafkaClientError("assign() after subscribe(): use one mode per consumer")
        # A dict keeps the caller's order: iteration order reaches the history, and a set's
        # order would vary with PYTHONHASHSEED and break replay across processes.
        wanted = dict.fromkeys(partitions)
        for tp in list(self._assigned):
            if tp not in wanted:
                del self._assigned[tp]
        for tp in wanted:
            self._assigned.setdefault(tp, _Assigned())

    def subscribe(self, topics: Iterable[str], listener: RebalanceListener | None = None) -> None:
        """Join `group.id` and consume the partitions the group assigns from `topics`."""
        if not self.config.group_id:
            raise KafkaClientError("subscribe() needs group.id; set it or use assign()")
        if self._assigned and self._subscription is None:
            raise KafkaClientError("subscribe() after assign(): use one mode per consumer")
        assert self._nursery is not None, "subscribe inside `async with`"
        self._subscription = sorted(set(topics))
        if self._group is None:
            self._group = GroupMember(
                self.config,
                self.cluster,
                self.rng,
                on_assignment=self._apply_assignment,
                commit_before_revoke=self._commit_before_revoke,
                listener=listener,
            )
            self._nursery.start_soon(self._group.heartbeat_loop)
        self._group.subscribe(self._subscription)
        if listener is not None:
            self._group.listener = listener

    def assignment(self) -> set[TopicPartition]:
        """The partitions currently assigned to this consumer."""
        return set(self._assigned)

    @property
    def generation(self) -> int:
        """The group generation of the current assignment (-1 outside a group)."""
        return self._group.generation if self._group else -1

    @property
    def member_id(self) -> str:
        """This member's id in the group ('' outside a group)."""
        return self._group.member_id if self._group else ""

    def take_rebalance_events(self) -> list[RebalanceEvent]:
        """Assignment changes since the last call (for a history's `assignment` field)."""
        if self._group is None:
            return []
        events, self._group.events = self._group.events, []
        return events

    def _apply_assignment(self, assigned: set[TopicPartition]) -> None:
        for tp in list(self._assigned):
            if tp not in assigned:
                del self._assigned[tp]
        for tp in sorted(assigned):  # sorted: hash order would vary between processes
            self._assigned.setdefault(tp, _Assigned())

    async def _commit_before_revoke(self, revoked: set[TopicPartition]) -> None:
        # As the Java client: with auto-commit, commit what was consumed from partitions
        # about to be revoked, so their next owner resumes where this one stopped.
        if not self.config.enable_auto_commit:
            return
        offsets = {
            tp: s.position
            for tp, s in self._assigned.items()
            if tp in revoked and s.position is not None
        }
        if offsets:
            with contextlib.suppress(KafkaClientError):
                await self.commit(offsets)

    # -- positions -----------------------------------------------------------------------

    def seek(self, tp: TopicPartition, offset: int) -> None:
        """Make `offset` the next one `poll()` returns for `tp`."""
        state = self._state(tp)
        state.position = offset
        state.position_epoch = -1
        state.reset = None
        state.buffer.clear()
        state.next_fetch = None

    def seek_to_beginning(self, partitions: Iterable[TopicPartition] | None = None) -> None:
        """Reset positions to the log start offset (resolved lazily)."""
        for tp in self._assigned if partitions is None else partitions:
            self.seek(tp, 0)
            self._state(tp).position = None
            self._state(tp).reset = EARLIEST

    def seek_to_end(self, partitions: Iterable[TopicPartition] | None = None) -> None:
        """Reset positions to the log end offset (resolved lazily)."""
        for tp in self._assigned if partitions is None else partitions:
            self.seek(tp, 0)
            self._state(tp).position = None
            self._state(tp).reset = LATEST

    async def position(self, tp: TopicPartition) -> int:
        """The offset of the next record `poll()` will return for `tp`."""
        state = self._state(tp)
        if state.position is None:
            await self._resolve_positions([tp])
        assert state.position is not None
        return state.position

    def _state(self, tp: TopicPartition) -> _Assigned:
        state = self._assigned.get(tp)
        if state is None:
            raise KafkaClientError(f"partition {tp} is not assigned to this consumer")
        return state

    async def _resolve_positions(self, tps: list[TopicPartition]) -> None:
        """Committed offsets first (with a group id), then auto.offset.reset."""
        missing = [tp for tp in tps if self._assigned[tp].position is None]
        if not missing:
            return
        need_committed = [tp for tp in missing if self._assigned[tp].reset is None]
        if self.config.group_id and need_committed:
            committed = await self._fetch_committed(need_committed)
            for tp, found in committed.items():
                if found is not None and tp in self._assigned:
                    self._assigned[tp].position, self._assigned[tp].position_epoch = found
        by_strategy: dict[int, list[TopicPartition]] = {}
        for tp in missing:
            state = self._assigned.get(tp)
            if state is None or state.position is not None:
                continue
            strategy = state.reset
            if strategy is None:
                if self.config.auto_offset_reset == "none":
                    raise OffsetOutOfRangeError(
                        f"no committed offset for {tp} and auto.offset.reset=none; seek() "
                        "first, or set auto.offset.reset=earliest/latest"
                    )
                strategy = EARLIEST if self.config.auto_offset_reset == "earliest" else LATEST
            by_strategy.setdefault(strategy, []).append(tp)
        for strategy, group in by_strategy.items():
            offsets = await self.list_offsets(group, strategy)
            for tp, offset in offsets.items():
                state = self._assigned.get(tp)
                if state is not None and state.position is None:
                    state.position = offset
                    state.position_epoch = -1
                    state.reset = None

    async def list_offsets(
        self, tps: Iterable[TopicPartition], timestamp: int
    ) -> dict[TopicPartition, int]:
        """Offsets for a timestamp (EARLIEST=-2, LATEST=-1) from each partition's leader."""
        cluster = self.cluster
        deadline = trio.current_time() + self.config.max_block_ms / 1000
        result: dict[TopicPartition, int] = {}
        todo = dict.fromkeys(tps)  # ordered, so requests go out in the same order every run
        while todo:
            by_leader = await self._group_by_leader(todo, deadline)
            for leader, group in by_leader.items():
                topic_cls = ListOffsetsRequest.ListOffsetsTopic
                part_cls = topic_cls.ListOffsetsPartition
                topics: dict[str, list[int]] = {}
                for tp in group:
                    topics.setdefault(tp.topic, []).append(tp.partition)
                request = ListOffsetsRequest(
                    replica_id=-1,
                    isolation_level=self._isolation(),
                    topics=[
                        topic_cls(
                            name=t,
                            partitions=[
                                part_cls(
                                    partition_index=p,
                                    current_leader_epoch=cluster.leader_epoch_for(
                                        TopicPartition(t, p)
                                    ),
                                    timestamp=timestamp,
                                    max_num_offsets=1,
                                )
                                for p in ps
                            ],
                        )
                        for t, ps in topics.items()
                    ],
                )
                try:
                    response = await cluster.send(leader, request)
                except (ConnectionLostError, RequestTimedOutError):
                    continue
                for t in response.topics:
                    for p in t.partitions:
                        tp = TopicPartition(t.name, p.partition_index)
                        if p.error_code == 0:
                            result[tp] = p.offset
                            todo.pop(tp, None)
                        elif is_authorization(p.error_code):
                            raise AuthorizationError(
                                f"ListOffsets {tp}: {error_name(p.error_code)}; grant Describe "
                                f"on topic {tp.topic!r} to this client's principal"
                            )
                        elif not is_retriable(p.error_code):
                            raise BrokerError(p.error_code, f"ListOffsets {tp}")
            if todo:
                if trio.current_time() >= deadline:
                    raise KafkaClientError(
                        f"could not list offsets of {sorted(map(str, todo))} within "
                        f"max.block.ms={self.config.max_block_ms}; check the brokers are up"
                    )
                await cluster.refresh_metadata({tp.topic for tp in todo})
                await trio.sleep(self.config.retry_backoff_ms / 1000)
        return result

    async def _group_by_leader(
        self, tps: Iterable[TopicPartition], deadline: float
    ) -> dict[int, list[TopicPartition]]:
        cluster = self.cluster
        out: dict[int, list[TopicPartition]] = {}
        for tp in tps:
            leader = cluster.leader_for(tp)
            if leader is None:
                await cluster.wait_for_topic(
                    tp.topic, timeout_s=max(0.0, deadline - trio.current_time())
                )
                leader = cluster.leader_for(tp)
                if leader is None:
                    raise KafkaClientError(
                        f"partition {tp} does not exist; the topic has partitions "
                        f"{cluster.partitions_for(tp.topic)}"
                    )
            out.setdefault(leader, []).append(tp)
        return out

    def _isolation(self) -> int:
        return 1 if self.config.isolation_level == "read_committed" else 0

    # -- poll ----------------------------------------------------------------------------

    async def poll(self, timeout_s: float = 1.0) -> list[ConsumerRecord]:
        """Return up to max.poll.records records, waiting up to `timeout_s` for some.

        In subscribe mode this also joins or rejoins the group and runs the rebalance
        callbacks; the time spent there counts against `timeout_s` only loosely, as in
        the Java client.
        """
        deadline = trio.current_time() + timeout_s
        if self._group is not None:
            self._group.polled()
            await self._group.ensure_active()
        await self._maybe_auto_commit()
        while True:
            records = self._drain_buffers()
            if records:
                return records
            await self._resolve_positions(
                [tp for tp, s in self._assigned.items() if s.position is None]
            )
            remaining = deadline - trio.current_time()
            if remaining <= 0 or not self._assigned:
                if not self._assigned and remaining > 0:
                    await trio.sleep(min(remaining, self.config.retry_backoff_ms / 1000))
                    if self._group is not None and self._group.needs_rejoin:
                        await self._group.ensure_active()
                        continue
                    if trio.current_time() < deadline:
                        continue
                return []
            await self._fetch(min(remaining, self.config.fetch_max_wait_ms / 1000))
            if self._group is not None and self._group.needs_rejoin:
                records = self._drain_buffers()
                if records:
                    return records
                await self._group.ensure_active()

    def _drain_buffers(self) -> list[ConsumerRecord]:
        out: list[ConsumerRecord] = []
        limit = self.config.max_poll_records
        for state in self._assigned.values():
            buffer = state.buffer
            while buffer and len(out) < limit:
                record = buffer.popleft()
                out.append(record)
                state.position = record.offset + 1
                state.position_epoch = record.leader_epoch
            if not buffer and state.next_fetch is not None:
                if state.position is None or state.next_fetch > state.position:
                    state.position = state.next_fetch
                state.next_fetch = None
            if len(out) >= limit:
                break
        return out

    async def _fetch(self, max_wait_s: float) -> None:
        """One round of fetches, one request per leader, concurrently."""
        by_leader: dict[int, list[TopicPartition]] = {}
        stale: set[str] = set()
        for tp, state in self._assigned.items():
            if state.position is None or state.buffer:
                continue
            leader = self.cluster.leader_for(tp)
            if leader is None:
                stale.add(tp.topic)
                continue
            by_leader.setdefault(leader, []).append(tp)
        if stale:
            try:
                await self.cluster.refresh_metadata(stale)
            except ConnectionLostError:
                await trio.sleep(self.config.retry_backoff_ms / 1000)
        if not by_leader:
            await trio.sleep(min(max_wait_s, self.config.retry_backoff_ms / 1000))
            return
        if len(by_leader) == 1:
            # One leader (the common case): no nursery and no task for a lone request.
            [(leader, tps)] = by_leader.items()
            await self._fetch_from(leader, tps, max_wait_s)
            return
        async with trio.open_nursery() as nursery:
            for leader, tps in by_leader.items():
                nursery.start_soon(self._fetch_from, leader, tps, max_wait_s)

    def _fetch_request(
        self, leader: int, tps: list[TopicPartition]
    ) -> tuple[FetchRequest, list[FetchRequest.FetchTopic.FetchPartition]]:
        """The Fetch request for these partitions of this leader, and its partition entries.

        Built once per (leader, partitions) and reused with new offsets and wait: the
        request objects cost more to build than to encode, and a poll loop sends the
        same shape again and again. Safe because a request is encoded when written,
        and one leader is fetched from by one task at a time.
        """
        key = (leader, tuple(tps))
        cached = self._fetch_requests.get(key)
        if cached is not None:
            return cached
        config = self.config
        topic_cls = FetchRequest.FetchTopic
        part_cls = topic_cls.FetchPartition
        fields: dict[TopicPartition, FetchRequest.FetchTopic.FetchPartition] = {}
        topics: dict[str, list[TopicPartition]] = {}
        for tp in tps:
            topics.setdefault(tp.topic, []).append(tp)
            fields[tp] = part_cls(
                partition=tp.partition,
                current_leader_epoch=-1,
                fetch_offset=0,
                last_fetched_epoch=-1,
                log_start_offset=-1,
                partition_max_bytes=config.max_partition_fetch_bytes,
            )
        request = FetchRequest(
            replica_id=-1,
            max_wait_ms=0,
            min_bytes=config.fetch_min_bytes,
            max_bytes=config.fetch_max_bytes,
            isolation_level=self._isolation(),
            session_id=0,
            session_epoch=-1,
            topics=[
                topic_cls(topic=t, partitions=[fields[tp] for tp in group])
                for t, group in topics.items()
            ],
            forgotten_topics_data=[],
            rack_id="",
            # Unset, the tagged field is looked up through DataContainer.__getattr__ (an
            # AttributeError caught) on every encode.
            cluster_id=None,
        )
        if len(self._fetch_requests) >= 64:
            self._fetch_requests.clear()  # assignments churned: start over
        cached = self._fetch_requests[key] = (request, [fields[tp] for tp in tps])
        return cached

    async def _fetch_from(self, leader: int, tps: list[TopicPartition], max_wait_s: float) -> None:
        config = self.config
        topics: dict[str, list[TopicPartition]] = {}
        for tp in tps:
            topics.setdefault(tp.topic, []).append(tp)
        positions = {tp: self._assigned[tp].position for tp in tps}
        request, fields = self._fetch_request(leader, tps)
        # Round up: a sub-millisecond remainder sent as 0 would spin without time passing.
        request.max_wait_ms = math.ceil(max_wait_s * 1000)
        leader_epoch_for = self.cluster.leader_epoch_for
        for tp, field_ in zip(tps, fields, strict=True):
            field_.fetch_offset = positions[tp]
            # A broker that still leads an older epoch (it has not heard of the newer
            # leader) answers FENCED_LEADER_EPOCH instead of serving its stale log.
            field_.current_leader_epoch = leader_epoch_for(tp)
        try:
            response = await self.cluster.send(leader, request)
        except (ConnectionLostError, RequestTimedOutError):
            await self._refresh_quietly(topics)
            await trio.sleep(config.retry_backoff_ms / 1000)
            return
        if response.error_code:
            if is_authorization(response.error_code):
                raise AuthorizationError(
                    f"Fetch: {error_name(response.error_code)}; grant Read on the topics"
                )
            await trio.sleep(config.retry_backoff_ms / 1000)
            return
        stale: set[str] = set()
        for topic_response in response.responses:
            for pd in topic_response.partitions:
                tp = TopicPartition(topic_response.topic, pd.partition_index)
                state = self._assigned.get(tp)
                if state is None or state.position != positions.get(tp):
                    continue  # reassigned or sought while the fetch was out
                code = pd.error_code
                if code == 0:
                    aborted = None
                    if self._isolation():
                        aborted = [
                            AbortedTxn(a.producer_id, a.first_offset)
                            for a in getattr(pd, "aborted_transactions", None) or ()
                        ]
                    self._buffer_records(tp, state, pd.records, aborted)
                elif code == 1:  # OFFSET_OUT_OF_RANGE
                    if config.auto_offset_reset == "none":
                        raise OffsetOutOfRangeError(
                            f"offset {state.position} is out of range for {tp} and "
                            "auto.offset.reset=none; seek() to a valid offset"
                        )
                    state.position = None
                    state.reset = EARLIEST if config.auto_offset_reset == "earliest" else LATEST
                elif code in STALE_METADATA:
                    stale.add(tp.topic)
                elif is_authorization(code):
                    raise AuthorizationError(
                        f"Fetch {tp}: {error_name(code)}; grant Read on topic {tp.topic!r}"
                    )
        if stale:
            await self._refresh_quietly(stale)

    async def _refresh_quietly(self, topics: Iterable[str]) -> None:
        with contextlib.suppress(ConnectionLostError):
            await self.cluster.refresh_metadata(topics)

    def _buffer_records(
        self,
        tp: TopicPartition,
        state: _Assigned,
        raw: bytes | None,
        aborted: list[AbortedTxn] | None = None,
    ) -> None:
        """Buffer a fetched partition's records; under read_committed (`aborted` given),
        without those of aborted transactions."""
        if not raw:
            return
        position = state.position
        assert position is not None
        records = MemoryRecords(bytes(raw))
        next_fetch = position
        skipper = None if aborted is None else AbortedSkipper(aborted)
        while True:
            batch = records.next_batch()
            if batch is None:
                break
            if self.config.check_crcs and not batch.validate_crc():
                raise ProtocolViolationError(
                    f"record batch at offset {batch.base_offset} of {tp} failed its CRC "
                    "check: the log or the network corrupted it"
                )
            next_fetch = max(next_fetch, batch.next_offset)
            if skipper is not None and skipper.skip(batch):
                continue
            if batch.is_control_batch:
                continue
            epoch = batch.leader_epoch
            self.cluster.observe_leader_epoch(tp, epoch)
            for record in batch:
                if record.offset < position:
                    continue
                state.buffer.append(
                    ConsumerRecord(
                        tp.topic,
                        tp.partition,
                        record.offset,
                        record.key,
                        record.value,
                        record.timestamp,
                        list(record.headers),
                        epoch,
                    )
                )
        state.next_fetch = next_fetch

    def pause_heartbeats(self, paused: bool) -> None:
        """Stop (True) or restart (False) the group member's heartbeats, as a stalled
        process would; the member keeps its generation until the coordinator says
        otherwise."""
        if self._group is not None:
            self._group.heartbeats_paused = paused

    # -- commits -------------------------------------------------------------------------

    def consumed_offsets(self) -> dict[TopicPartition, int]:
        """Every assigned partition's position: what a commit of "all polled" stores."""
        return {tp: s.position for tp, s in self._assigned.items() if s.position is not None}

    async def commit(self, offsets: Mapping[TopicPartition, int] | None = None) -> None:
        """Commit offsets (default: the positions of everything polled) and wait.

        Raises CommitFailedError when the coordinator rejected the commit (it did not
        happen) and CommitOutcomeUnknown when no answer came (it may have happened).
        """
        group_id = self.config.group_id
        if not group_id:
            raise KafkaClientError("commit() needs group.id: set it in the consumer config")
        offsets = dict(self.consumed_offsets() if offsets is None else offsets)
        if not offsets:
            return
        deadline = trio.current_time() + self.config.request_timeout_ms / 1000
        maybe_sent = False
        while True:
            generation, member_id = -1, ""
            if self._group is not None:
                generation, member_id = self._group.generation, self._group.member_id
            try:
                coordinator = await self._coordinator()
                response = await self.cluster.send(
                    coordinator,
                    self._commit_request(group_id, generation, member_id, offsets),
                    channel=GROUP,
                )
            except (ConnectionLostError, RequestTimedOutError) as exc:
                maybe_sent |= exc.maybe_delivered
                if self._group is not None:
                    self._group.coordinator_dead()
                self._coordinator_id = None
                if trio.current_time() >= deadline:
                    if maybe_sent:
                        raise CommitOutcomeUnknown(
                            f"offset commit for group {group_id!r} got no answer: {exc}"
                        ) from exc
                    raise CommitFailedError(
                        f"offset commit for group {group_id!r} could not be sent: {exc}"
                    ) from exc
                await trio.sleep(self.config.retry_backoff_ms / 1000)
                continue
            codes = {p.error_code for t in response.topics for p in t.partitions} - {0}
            if not codes:
                self._last_commit_at = trio.current_time()
                return
            code = min(codes)
            if code in (22, 25, 27):  # ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID, REBALANCE_IN_PROGRESS
                if self._group is not None:
                    self._group.commit_rejected(code)
                raise CommitFailedError(
                    f"offset commit for group {group_id!r} rejected with {error_name(code)}: the "
                    "group rebalanced and these partitions may belong to another member now. "
                    "Nothing was committed; poll() to rejoin and commit again"
                )
            if code in (14, 15, 16) and trio.current_time() < deadline:
                if self._group is not None:
                    self._group.coordinator_dead()
                self._coordinator_id = None
                await trio.sleep(self.config.retry_backoff_ms / 1000)
                continue
            if is_authorization(code):
                raise AuthorizationError(
                    f"offset commit for group {group_id!r}: {error_name(code)}; grant Read on "
                    "the group and topics to this client's principal"
                )
            raise CommitFailedError(
                f"offset commit for group {group_id!r} failed with {error_name(code)}"
            )

    def commit_async(
        self,
        offsets: Mapping[TopicPartition, int] | None = None,
        callback: Callable[[Mapping[TopicPartition, int], Exception | None], None] | None = None,
    ) -> None:
        """Start a commit in the consumer's nursery; `callback(offsets, error)` reports it."""
        assert self._nursery is not None
        snapshot = dict(self.consumed_offsets() if offsets is None else offsets)

        async def run() -> None:
            error: Exception | None = None
            try:
                await self.commit(snapshot)
            except KafkaClientError as exc:
                error = exc
            if callback is not None:
                callback(snapshot, error)

        self._nursery.start_soon(run)

    async def _maybe_auto_commit(self) -> None:
        if not (self.config.enable_auto_commit and self.config.group_id and self._assigned):
            return
        now = trio.current_time()
        if now - self._last_commit_at < self.config.auto_commit_interval_ms / 1000:
            return
        self._last_commit_at = now
        # A failed auto-commit is retried at the next interval, as the Java client does.
        with contextlib.suppress(KafkaClientError):
            await self.commit()

    def _commit_request(
        self,
        group_id: str,
        generation: int,
        member_id: str,
        offsets: Mapping[TopicPartition, int],
    ) -> OffsetCommitRequest:
        topic_cls = OffsetCommitRequest.OffsetCommitRequestTopic
        part_cls = topic_cls.OffsetCommitRequestPartition
        by_topic: dict[str, list[tuple[int, int, int]]] = {}
        for tp, offset in offsets.items():
            # Committing the consumed position: with the epoch of the record before it, so
            # the next owner knows not to trust metadata older than that (KIP-320).
            state = self._assigned.get(tp)
            epoch = state.position_epoch if state is not None and state.position == offset else -1
            by_topic.setdefault(tp.topic, []).append((tp.partition, offset, epoch))
        return OffsetCommitRequest(
            group_id=group_id,
            generation_id_or_member_epoch=generation,
            member_id=member_id,
            group_instance_id=self.config.group_instance_id,
            retention_time_ms=-1,
            topics=[
                topic_cls(
                    name=t,
                    partitions=[
                        part_cls(
                            partition_index=p,
                            committed_offset=o,
                            committed_leader_epoch=e,
                            commit_timestamp=-1,
                            committed_metadata="",
                        )
                        for p, o, e in sorted(ps)
                    ],
                )
                for t, ps in by_topic.items()
            ],
        )

    _coordinator_id: int | None = None

    async def _coordinator(self) -> int:
        if self._group is not None:
            return await self._group.coordinator()
        if self._coordinator_id is None:
            assert self.config.group_id
            self._coordinator_id = await self.cluster.find_coordinator(self.config.group_id)
        return self._coordinator_id

    async def committed(self, tps: Iterable[TopicPartition]) -> dict[TopicPartition, int | None]:
        """The group's committed offsets for `tps` (None where nothing is committed)."""
        found = await self._fetch_committed(tps)
        return {tp: None if c is None else c[0] for tp, c in found.items()}

    async def _fetch_committed(
        self, tps: Iterable[TopicPartition]
    ) -> dict[TopicPartition, tuple[int, int] | None]:
        """(offset, leader epoch) committed for each of `tps`, None where nothing is."""
        group_id = self.config.group_id
        if not group_id:
            raise KafkaClientError("committed() needs group.id")
        tps = list(tps)
        topics: dict[str, list[int]] = {}
        for tp in tps:
            topics.setdefault(tp.topic, []).append(tp.partition)
        request = OffsetFetchRequest(
            group_id=group_id,
            topics=[
                OffsetFetchRequest.OffsetFetchRequestTopic(name=t, partition_indexes=sorted(ps))
                for t, ps in topics.items()
            ],
            # As Java: a read_committed consumer does not start from offsets an undecided
            # transaction commits (KIP-447); the coordinator answers UNSTABLE_OFFSET_COMMIT.
            require_stable=bool(self._isolation()),
        )
        deadline = trio.current_time() + self.config.max_block_ms / 1000
        while True:
            try:
                coordinator = await self._coordinator()
                response = await self.cluster.send(coordinator, request, channel=GROUP)
            except (ConnectionLostError, RequestTimedOutError, BrokerError) as exc:
                self._coordinator_id = None
                if self._group is not None:
                    self._group.coordinator_dead()
                if trio.current_time() >= deadline:
                    raise KafkaClientError(
                        f"could not fetch committed offsets of group {group_id!r}: {exc}"
                    ) from exc
                await trio.sleep(self.config.retry_backoff_ms / 1000)
                continue
            code = getattr(response, "error_code", 0)
            if code in (14, 15, 16) and trio.current_time() < deadline:
                self._coordinator_id = None
                if self._group is not None:
                    self._group.coordinator_dead()
                await trio.sleep(self.config.retry_backoff_ms / 1000)
                continue
            if code:
                raise BrokerError(code, f"OffsetFetch for group {group_id!r}")
            if any(p.error_code == 88 for t in response.topics for p in t.partitions):
                if trio.current_time() >= deadline:
                    raise KafkaClientError(
                        f"committed offsets of group {group_id!r} stayed UNSTABLE_OFFSET_COMMIT "
                        f"(a transaction committing them is undecided) for max.block.ms="
                        f"{self.config.max_block_ms}"
                    )
                await trio.sleep(self.config.retry_backoff_ms / 1000)
                continue
            out: dict[TopicPartition, tuple[int, int] | None] = dict.fromkeys(tps)
            for t in response.topics:
                for p in t.partitions:
                    tp = TopicPartition(t.name, p.partition_index)
                    if p.error_code == 0 and p.committed_offset >= 0:
                        epoch = getattr(p, "committed_leader_epoch", -1)
                        self.cluster.observe_leader_epoch(tp, epoch)
                        out[tp] = (p.committed_offset, epoch)
            return out
