"""The group coordinator's async edge: parked JoinGroup/SyncGroup requests, timers, offsets.

The rules live in `state.ClassicGroup` (one plain state machine per group). This module
only does what needs trio:

- a JoinGroup or SyncGroup that Kafka would park in its purgatory waits here on an event
  until the state machine delivers its response; if the handler is cancelled (the client
  hung up), the state machine is told, so no member counts as "rejoined" without a request;
- one timer loop, `run()`, fires every group's deadlines (session, rebalance, initial delay,
  pending member, pending sync) on trio's clock, so a MockClock drives it in simulation;
- offset commits and GroupMetadata records go through `OffsetsStore` into
  `__consumer_offsets`. A group's records are appended the moment the state machine
  produces them, so they reach the log in order; the leader's SyncGroup additionally waits
  for the flush policy before its assignment goes out, and `run()` applies the flush policy
  to the records nobody waits for (a group turning Empty). On `load()` every group comes
  back at its stored generation, with its members (Kafka's loadGroup).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import random
from collections.abc import Mapping, Sequence
from typing import Generic, TypeVar

import trio

from reference_broker import events
from reference_broker.env import Clock
from reference_broker.errors import BrokerError, ErrorCode
from reference_broker.group.config import GroupConfig
from reference_broker.group.offsets_store import (
    OFFSETS_LOG_CONFIG,
    OFFSETS_TOPIC,
    OffsetsStore,
    OffsetsWriter,
    TopicPartition,
    store_group_error,
)
from reference_broker.group.results import (
    UNKNOWN_MEMBER_ID,
    DescribedMember,
    GroupDescription,
    JoinProtocol,
    JoinResult,
    MemberInfo,
    OffsetAndMetadata,
    SyncResult,
)
from reference_broker.group.state import (
    ClassicGroup,
    GroupState,
    GroupWrite,
    JoinDelivery,
    SyncDelivery,
)
from reference_broker.log.config import LogConfig
from reference_broker.log.log_manager import LogManager
from reference_broker.log.partition_log import PartitionLog

__all__ = [
    "OFFSETS_TOPIC",
    "DescribedMember",
    "GroupConfig",
    "GroupCoordinator",
    "GroupDescription",
    "JoinProtocol",
    "JoinResult",
    "MemberInfo",
    "OffsetAndMetadata",
    "SyncResult",
]

_T = TypeVar("_T")

logger = logging.getLogger("faultline.broker.group")


class _Waiter(Generic[_T]):
    """One parked request: resolved at most once, by the state machine's delivery."""

    def __init__(self) -> None:
        self._event = trio.Event()
        self._result: _T | None = None

    def resolve(self, result: _T) -> None:
        self._result = result
        self._event.set()

    async def wait(self) -> _T:
        await self._event.wait()
        assert self._result is not None
        return self._result


class GroupCoordinator:
    """Kafka's classic group coordinator for a single broker that owns every group."""

    def __init__(
        self,
        logs: LogManager,
        clock: Clock,
        config: GroupConfig,
        rng: random.Random,
        *,
        offsets_log_config: LogConfig = OFFSETS_LOG_CONFIG,
        writer: OffsetsWriter | None = None,
    ) -> None:
        self._config = config
        self._rng = rng
        self._store = OffsetsStore(
            logs, clock, config.offsets_topic_num_partitions, offsets_log_config, writer
        )
        self._groups: dict[str, ClassicGroup] = {}
        # `__consumer_offsets` partitions being loaded: their groups answer
        # COORDINATOR_LOAD_IN_PROGRESS; groups of partitions not owned, NOT_COORDINATOR.
        self._loading: set[int] = set(range(config.offsets_topic_num_partitions))
        self._join_waiters: dict[tuple[str, str], _Waiter[JoinResult]] = {}
        self._sync_waiters: dict[tuple[str, str], _Waiter[SyncResult]] = {}
        # Timer heap of (deadline, tie-breaker, group id); `_scheduled` holds each group's
        # live entry, so entries superseded by an earlier deadline are skipped when popped.
        self._timers: list[tuple[float, int, str]] = []
        self._scheduled: dict[str, float] = {}
        self._sequence = itertools.count()
        self._timers_changed = trio.Event()
        # Groups whose appended metadata records still await the flush policy in `run()`.
        self._unflushed: set[str] = set()

    # -- lifecycle ---------------------------------------------------------------------------

    async def load(self) -> None:
        """Open or create the `__consumer_offsets` partitions; replay offsets and groups.

        A group with stored metadata resumes at its generation (Stable with its members,
        whose session timers start now; Empty without); a group with only committed
        offsets is loaded Empty, as Kafka. Until this returns, every request is answered
        COORDINATOR_LOAD_IN_PROGRESS.
        """
        await self._store.load()
        self._restore_groups(self._store.groups())
        self._loading = set()

    def _restore_groups(self, group_ids: set[str]) -> None:
        now = trio.current_time()
        for group_id in sorted(group_ids):
            group = self._groups.setdefault(group_id, self._new_group(group_id))
            stored = self._store.group_metadata(group_id)
            if stored is not None:
                group.restore(stored, now)
                self._schedule(group)

    def use_writer(self, writer: OffsetsWriter) -> None:
        """Write offsets and group records through `writer` (a cluster: through replication).

        A cluster node coordinates no group until its metadata makes it the leader of
        an offsets partition (`become_coordinator`).
        """
        self._store.use_writer(writer)
        self._loading = set()

    def owned_partitions(self) -> set[int]:
        """The `__consumer_offsets` partitions whose groups this node coordinates."""
        return {p for p in range(self._store.num_partitions) if self._store.owns(p)}

    async def become_coordinator(self, partition: int, log: PartitionLog) -> None:
        """This node now leads `__consumer_offsets-<partition>`: load its groups.

        Kafka's onElection: replay the partition, restore each group at its stored
        generation; until done, its groups answer COORDINATOR_LOAD_IN_PROGRESS.
        """
        self._loading.add(partition)
        events.emit("coordinator-load", partition=partition)
        try:
            await trio.lowlevel.checkpoint()
            self._drop_groups(self._store.unload_partition(partition))
            self._restore_groups(self._store.load_partition(partition, log))
        finally:
            self._loading.discard(partition)

    def resign_coordinator(self, partition: int) -> None:
        """This node no longer leads the partition: its groups go (Kafka's onResignation).

        Parked joins and syncs of those groups get NOT_COORDINATOR, so their members
        look the coordinator up again.
        """
        self._loading.discard(partition)
        self._drop_groups(self._store.unload_partition(partition))
        for group_id in [g for g in self._groups if self.partition_for(g) == partition]:
            self._drop_groups({group_id})

    def _drop_groups(self, group_ids: set[str]) -> None:
        for group_id in group_ids:
            group = self._groups.pop(group_id, None)
            if group is None:
                continue
            self._scheduled.pop(group_id, None)
            for key in [k for k in self._join_waiters if k[0] == group_id]:
                self._join_waiters.pop(key).resolve(
                    JoinResult.failed(ErrorCode.NOT_COORDINATOR, key[1])
                )
            for key in [k for k in self._sync_waiters if k[0] == group_id]:
                self._sync_waiters.pop(key).resolve(SyncResult.failed(ErrorCode.NOT_COORDINATOR))
            self._unflushed.discard(group_id)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Fire group timers (session, rebalance, initial delay) and flush group records."""
        task_status.started()
        while True:
            self._timers_changed = trio.Event()
            if not self._unflushed:
                deadline = self._timers[0][0] if self._timers else math.inf
                with trio.move_on_at(deadline):
                    await self._timers_changed.wait()
            self._fire_due_timers(trio.current_time())
            await self._flush_group_records()

    def partition_for(self, group_id: str) -> int:
        """The `__consumer_offsets` partition of a group (Kafka's Utils.abs(hashCode) % n)."""
        return self._store.partition_for(group_id)

    # -- membership --------------------------------------------------------------------------

    async def join_group(
        self,
        group_id: str,
        member_id: str,
        group_instance_id: str | None,
        protocol_type: str,
        protocols: Sequence[JoinProtocol],
        session_timeout_ms: int,
        rebalance_timeout_ms: int,
        client_id: str,
        client_host: str,
        require_known_member_id: bool,
    ) -> JoinResult:
        """JoinGroup: returns when the rebalance it joins completes (at once on error)."""
        error = self._check_group(group_id)
        if error is not ErrorCode.NONE:
            return JoinResult.failed(error, member_id)
        if not (
            self._config.min_session_timeout_ms
            <= session_timeout_ms
            <= self._config.max_session_timeout_ms
        ):
            return JoinResult.failed(ErrorCode.INVALID_SESSION_TIMEOUT, member_id)
        group = self._groups.get(group_id)
        if group is None:
            if member_id != UNKNOWN_MEMBER_ID:
                return JoinResult.failed(ErrorCode.UNKNOWN_MEMBER_ID, member_id)
            group = self._groups[group_id] = self._new_group(group_id)
        outcome = group.join(
            member_id=member_id,
            group_instance_id=group_instance_id,
            protocol_type=protocol_type,
            protocols=protocols,
            session_timeout_ms=session_timeout_ms,
            rebalance_timeout_ms=rebalance_timeout_ms,
            client_id=client_id,
            client_host=client_host,
            require_known_member_id=require_known_member_id,
            now=trio.current_time(),
        )
        if isinstance(outcome, JoinResult):
            self._settle(group)
            return outcome
        key = (group_id, outcome)
        waiter: _Waiter[JoinResult] = _Waiter()
        superseded = self._join_waiters.pop(key, None)
        if superseded is not None:
            # The same member joined again (e.g. after reconnecting); the older request gets
            # a retriable error instead of hanging forever.
            superseded.resolve(JoinResult.failed(ErrorCode.REBALANCE_IN_PROGRESS, outcome))
        self._join_waiters[key] = waiter
        self._settle(group)
        try:
            return await waiter.wait()
        except BaseException:
            if self._join_waiters.get(key) is waiter:
                del self._join_waiters[key]
                group.abandon_join(outcome, trio.current_time())
                self._settle(group)
            raise

    async def sync_group(
        self,
        group_id: str,
        generation_id: int,
        member_id: str,
        group_instance_id: str | None,
        protocol_type: str | None,
        protocol_name: str | None,
        assignments: Mapping[str, bytes],
    ) -> SyncResult:
        """SyncGroup: the leader hands in the assignment; followers wait until it does."""
        error = self._check_group(group_id)
        if error is not ErrorCode.NONE:
            return SyncResult.failed(error)
        group = self._groups.get(group_id)
        if group is None:
            return SyncResult.failed(ErrorCode.UNKNOWN_MEMBER_ID)
        outcome = group.sync(
            generation_id=generation_id,
            member_id=member_id,
            group_instance_id=group_instance_id,
            protocol_type=protocol_type,
            protocol_name=protocol_name,
            assignments=assignments,
            now=trio.current_time(),
        )
        if outcome is not None:
            self._settle(group)
            return outcome
        # Parked (responses the state machine queued, even to this very request, wait in its
        # outbox until `_settle`, so registering the waiter now misses nothing).
        key = (group_id, member_id)
        waiter: _Waiter[SyncResult] = _Waiter()
        superseded = self._sync_waiters.pop(key, None)
        self._sync_waiters[key] = waiter
        if superseded is not None:
            superseded.resolve(SyncResult.failed(ErrorCode.REBALANCE_IN_PROGRESS))
        # The leader's assignment is appended here; it goes out only once stored.
        for write, error in self._settle(group):
            await self._complete_assignment_write(group, write, error)
        try:
            return await waiter.wait()
        except BaseException:
            if self._sync_waiters.get(key) is waiter:
                del self._sync_waiters[key]
                group.abandon_sync(member_id, trio.current_time())
                self._settle(group)
            raise

    def heartbeat(
        self, group_id: str, generation_id: int, member_id: str, group_instance_id: str | None
    ) -> ErrorCode:
        """Heartbeat: keeps the session alive; REBALANCE_IN_PROGRESS asks the member to rejoin."""
        error = self._check_group(group_id)
        if error is not ErrorCode.NONE:
            return error
        group = self._groups.get(group_id)
        if group is None:
            return ErrorCode.UNKNOWN_MEMBER_ID
        result = group.heartbeat(
            generation_id=generation_id,
            member_id=member_id,
            group_instance_id=group_instance_id,
            now=trio.current_time(),
        )
        self._settle(group)
        return result

    def leave_group(
        self, group_id: str, members: Sequence[tuple[str, str | None]]
    ) -> tuple[ErrorCode, list[tuple[str, str | None, ErrorCode]]]:
        """LeaveGroup (v3+ batch): a top-level error and one (member, instance, error) each."""
        error = self._check_group(group_id)
        if error is not ErrorCode.NONE:
            return error, []
        group = self._groups.get(group_id)
        if group is None:
            return ErrorCode.NONE, [(m, i, ErrorCode.UNKNOWN_MEMBER_ID) for m, i in members]
        errors = group.leave(members, trio.current_time())
        self._settle(group)
        if errors is None:
            return ErrorCode.COORDINATOR_NOT_AVAILABLE, []
        return ErrorCode.NONE, [(m, i, e) for (m, i), e in zip(members, errors, strict=True)]

    # -- offsets -----------------------------------------------------------------------------

    async def commit_offsets(
        self,
        group_id: str,
        generation_id: int,
        member_id: str,
        group_instance_id: str | None,
        offsets: Mapping[TopicPartition, OffsetAndMetadata],
    ) -> dict[TopicPartition, ErrorCode]:
        """OffsetCommit: persist offsets in `__consumer_offsets`, one error per partition.

        `generation_id == -1` with an empty member id is a simple (standalone) commit, allowed
        only while the group has no members, as Kafka.
        """
        error = self._check_loaded(group_id)
        if error is not ErrorCode.NONE:
            return dict.fromkeys(offsets, error)
        group = self._groups.get(group_id)
        if group is None:
            if generation_id >= 0:
                # A generation of a group this coordinator does not know: a stale member.
                events.emit("stale-generation", group=group_id, generation=generation_id,
                            current="unknown", request="offset-commit")
                return dict.fromkeys(offsets, ErrorCode.ILLEGAL_GENERATION)
            group = self._groups[group_id] = self._new_group(group_id)
        error = group.validate_offset_commit(
            generation_id=generation_id,
            member_id=member_id,
            group_instance_id=group_instance_id,
            now=trio.current_time(),
        )
        self._settle(group)
        if error is not ErrorCode.NONE:
            return dict.fromkeys(offsets, error)
        valid = self._within_metadata_limit(offsets)
        stored = await self._store.commit(group_id, valid)
        return {tp: stored.get(tp, ErrorCode.OFFSET_METADATA_TOO_LARGE) for tp in offsets}

    async def commit_transactional_offsets(
        self,
        group_id: str,
        producer_id: int,
        producer_epoch: int,
        generation_id: int,
        member_id: str,
        group_instance_id: str | None,
        offsets: Mapping[TopicPartition, OffsetAndMetadata],
    ) -> dict[TopicPartition, ErrorCode]:
        """TxnOffsetCommit: offsets in a producer's transaction, visible once it commits.

        A member's generation is checked when given (v3+, KIP-447); generation -1 is a
        commit on behalf of a group the producer does not belong to, as Kafka allows.
        """
        error = self._check_loaded(group_id)
        if error is not ErrorCode.NONE:
            return dict.fromkeys(offsets, error)
        group = self._groups.get(group_id)
        if group is None:
            group = self._groups[group_id] = self._new_group(group_id)
        if generation_id >= 0:
            error = group.validate_offset_commit(
                generation_id=generation_id,
                member_id=member_id,
                group_instance_id=group_instance_id,
                now=trio.current_time(),
            )
            self._settle(group)
            if error is not ErrorCode.NONE:
                return dict.fromkeys(offsets, error)
        valid = self._within_metadata_limit(offsets)
        stored = await self._store.commit_transactional(
            group_id, producer_id, producer_epoch, valid
        )
        return {tp: stored.get(tp, ErrorCode.OFFSET_METADATA_TOO_LARGE) for tp in offsets}

    def complete_transaction(
        self, partition: int, producer_id: int, producer_epoch: int, commit: bool
    ) -> None:
        """A transaction marker was written to `__consumer_offsets-<partition>`."""
        if self._store.owns(partition):
            self._store.complete_transaction(partition, producer_id, producer_epoch, commit)

    def has_pending_offset(self, group_id: str, tp: TopicPartition) -> bool:
        """Whether an undecided transaction commits an offset of `tp` for the group."""
        return self._store.has_pending(group_id, tp)

    def fetch_offsets(
        self, group_id: str, partitions: Sequence[TopicPartition] | None
    ) -> tuple[ErrorCode, dict[TopicPartition, OffsetAndMetadata | None]]:
        """OffsetFetch: committed offsets (None = never committed) for `partitions`, or all."""
        error = self._check_loaded(group_id)
        if error is not ErrorCode.NONE:
            return error, {}
        group = self._groups.get(group_id)
        if group is None or group.state is GroupState.DEAD:
            return ErrorCode.NONE, dict.fromkeys(partitions or (), None)
        return ErrorCode.NONE, self._store.fetch(group_id, partitions)

    # -- administration ----------------------------------------------------------------------

    def list_groups(self) -> list[tuple[str, str]]:
        """ListGroups: (group id, protocol type) of every live group, sorted by id."""
        return [
            (gid, g.protocol_type or "")
            for gid, g in sorted(self._groups.items())
            if g.state is not GroupState.DEAD and self._check_loaded(gid) is ErrorCode.NONE
        ]

    def describe_group(self, group_id: str) -> GroupDescription:
        """DescribeGroups entry; an unknown group is reported Dead with no error, as Kafka."""
        error = self._check_loaded(group_id)
        group = self._groups.get(group_id)
        if error is not ErrorCode.NONE or group is None:
            state = "" if error is not ErrorCode.NONE else GroupState.DEAD.value
            return GroupDescription(error, group_id, state, "", "", [])
        return group.describe()

    async def delete_groups(self, group_ids: Sequence[str]) -> dict[str, ErrorCode]:
        """DeleteGroups: only Empty groups can go; their offsets get tombstones."""
        results: dict[str, ErrorCode] = {}
        for group_id in group_ids:
            error = self._check_loaded(group_id)
            group = self._groups.get(group_id)
            if error is not ErrorCode.NONE:
                results[group_id] = error
            elif group is None or group.state is GroupState.DEAD:
                results[group_id] = ErrorCode.GROUP_ID_NOT_FOUND
            elif group.state is not GroupState.EMPTY:
                results[group_id] = ErrorCode.NON_EMPTY_GROUP
            else:
                group.mark_dead()
                del self._groups[group_id]
                await self._store.delete_group(group_id)
                results[group_id] = ErrorCode.NONE
        return results

    # -- internals ---------------------------------------------------------------------------

    def _new_group(self, group_id: str) -> ClassicGroup:
        return ClassicGroup(group_id, self._config, self._rng)

    def _check_loaded(self, group_id: str) -> ErrorCode:
        partition = self.partition_for(group_id)
        if partition in self._loading:
            return ErrorCode.COORDINATOR_LOAD_IN_PROGRESS
        if not self._store.owns(partition):
            return ErrorCode.NOT_COORDINATOR
        return ErrorCode.NONE

    def _check_group(self, group_id: str) -> ErrorCode:
        # Membership APIs need a non-empty group id; the offset APIs accept "" as Kafka.
        if not group_id:
            return ErrorCode.INVALID_GROUP_ID
        return self._check_loaded(group_id)

    def _within_metadata_limit(
        self, offsets: Mapping[TopicPartition, OffsetAndMetadata]
    ) -> dict[TopicPartition, OffsetAndMetadata]:
        """The offsets whose metadata fits offset.metadata.max.bytes (the others are
        answered OFFSET_METADATA_TOO_LARGE)."""
        limit = self._config.offset_metadata_max_bytes
        return {
            tp: om
            for tp, om in offsets.items()
            if om.metadata is None or _java_length(om.metadata) <= limit
        }

    def _settle(self, group: ClassicGroup) -> list[tuple[GroupWrite, ErrorCode]]:
        """Append the group's metadata records, hand out the responses it owes parked
        requests, then re-arm its timer.

        Returns the appended records a leader's SyncGroup waits for, each with its append
        outcome; only `sync_group` produces those, and it completes them.
        """
        awaited: list[tuple[GroupWrite, ErrorCode]] = []
        for write in group.take_writes():
            error = ErrorCode.NONE
            try:
                self._store.append_group_metadata(group.group_id, write.value)
            except BrokerError as exc:
                error = store_group_error(exc.code)
                if write.assignment is None:
                    # Kafka only logs a failed store of an Empty group; the generation in
                    # memory still moved on, and the next store carries it.
                    logger.warning(
                        "group %s: storing generation %d failed: %s",
                        group.group_id,
                        write.value.generation,
                        exc,
                    )
            else:
                self._unflushed.add(group.group_id)
                self._timers_changed.set()
            if write.assignment is not None:
                awaited.append((write, error))
        for delivery in group.take_deliveries():
            key = (group.group_id, delivery.member_id)
            if isinstance(delivery, JoinDelivery):
                join_waiter = self._join_waiters.pop(key, None)
                if join_waiter is not None:
                    join_waiter.resolve(delivery.result)
            elif isinstance(delivery, SyncDelivery):
                sync_waiter = self._sync_waiters.pop(key, None)
                if sync_waiter is not None:
                    sync_waiter.resolve(delivery.result)
        self._schedule(group)
        return awaited

    async def _complete_assignment_write(
        self, group: ClassicGroup, write: GroupWrite, error: ErrorCode
    ) -> None:
        # Kafka's storeGroup callback in SyncGroup: flush per policy, then let the group
        # release (or fail) the assignment. Shielded: the leader hanging up must not leave
        # the group waiting for a write whose outcome nobody reports.
        assert write.assignment is not None
        if error is ErrorCode.NONE:
            try:
                await self._store.flush_if_due(group.group_id)
            except BrokerError as exc:
                error = store_group_error(exc.code)
        group.assignment_stored(
            write.value.generation, write.assignment, error, trio.current_time()
        )
        for later, later_error in self._settle(group):
            await self._complete_assignment_write(group, later, later_error)

    async def _flush_group_records(self) -> None:
        groups, self._unflushed = sorted(self._unflushed), set()
        for group_id in groups:
            try:
                await self._store.flush_if_due(group_id)
            except BrokerError as exc:
                logger.warning("group %s: flushing its metadata failed: %s", group_id, exc)

    def _schedule(self, group: ClassicGroup) -> None:
        deadline = group.next_deadline()
        if deadline is None:
            return
        current = self._scheduled.get(group.group_id)
        if current is not None and current <= deadline:
            # An earlier wake-up is already armed; it will re-arm for the later deadline.
            return
        self._scheduled[group.group_id] = deadline
        heapq.heappush(self._timers, (deadline, next(self._sequence), group.group_id))
        self._timers_changed.set()

    def _fire_due_timers(self, now: float) -> None:
        while self._timers and self._timers[0][0] <= now:
            deadline, _, group_id = heapq.heappop(self._timers)
            if self._scheduled.get(group_id) != deadline:
                continue
            del self._scheduled[group_id]
            group = self._groups.get(group_id)
            if group is None:
                continue
            group.on_timer(now)
            self._settle(group)


def _java_length(text: str) -> int:
    # Kafka compares String.length(), which counts UTF-16 code units.
    return len(text.encode("utf-16-le")) // 2
