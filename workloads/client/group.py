"""The consumer group member: JoinGroup / SyncGroup / Heartbeat / LeaveGroup, as in Kafka.

States (Kafka's MemberState):

    UNJOINED --ensure_active--> REBALANCING --(join+sync ok)--> STABLE
       ^                              |                            |
       +---- leave / fenced ----------+---- needs_rejoin ----------+

`needs_rejoin` is raised by the heartbeat task (REBALANCE_IN_PROGRESS, a fenced
generation, max.poll.interval.ms exceeded), by a cooperative round that revoked
partitions, or by a subscription change; the next `poll()` calls `ensure_active()`,
which runs the rebalance callbacks and the JoinGroup/SyncGroup exchange.

Rebalance protocols (KIP-429): *eager* revokes every owned partition before
joining; *cooperative* keeps them, and after SyncGroup revokes only those that
moved away, then rejoins so their new owners receive them in the next round. The
protocol is cooperative when every configured assignor supports it (the Java
client's rule). `on_partitions_lost` replaces revocation when the member was fenced
(its partitions may already belong to someone else).

The heartbeat task sleeps heartbeat.interval.ms between heartbeats and leaves the
group when `poll()` has not been called for max.poll.interval.ms, as the Java
client's heartbeat thread does.
"""

from __future__ import annotations

import contextlib
import enum
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

import trio
from kafka.protocol.api_message import ApiMessage
from kafka.protocol.consumer import (
    HeartbeatRequest,
    JoinGroupRequest,
    LeaveGroupRequest,
    SyncGroupRequest,
)
from kafka.protocol.data_container import DataContainer

from .assignors import (
    ASSIGNORS,
    Assignor,
    decode_assignment,
    decode_subscription,
    encode_assignment,
    encode_subscription,
)
from .cluster import GROUP, Cluster, TopicPartition
from .config import ConsumerConfig
from .errors import (
    AuthorizationError,
    ConnectionLostError,
    GroupError,
    RequestTimedOutError,
    error_name,
    is_authorization,
)


class MemberState(enum.Enum):
    """Where the member is in the group protocol."""

    UNJOINED = "unjoined"
    REBALANCING = "rebalancing"
    STABLE = "stable"


class RebalanceListener(Protocol):
    """Callbacks around assignment changes (Kafka's ConsumerRebalanceListener)."""

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        """Partitions given up in an orderly rebalance (commit their offsets here)."""
        ...

    async def on_partitions_assigned(self, assigned: set[TopicPartition], generation: int) -> None:
        """Partitions gained; `generation` is the group generation they belong to."""
        ...

    async def on_partitions_lost(self, lost: set[TopicPartition]) -> None:
        """Partitions taken away because this member was fenced (do not commit them)."""
        ...


@dataclass(frozen=True)
class RebalanceEvent:
    """One completed rebalance as this member saw it."""

    generation: int
    member_id: str
    protocol: str
    assignment: frozenset[TopicPartition]
    added: frozenset[TopicPartition]
    revoked: frozenset[TopicPartition]
    leader: bool


@dataclass
class GroupMember:
    """One consumer's membership in a group; driven by `poll()` and its heartbeat task."""

    config: ConsumerConfig
    cluster: Cluster
    rng: random.Random
    on_assignment: Callable[[set[TopicPartition]], None]
    commit_before_revoke: Callable[[set[TopicPartition]], Awaitable[None]]
    listener: RebalanceListener | None = None
    state: MemberState = MemberState.UNJOINED
    member_id: str = ""
    generation: int = -1
    protocol: str | None = None
    owned: set[TopicPartition] = field(default_factory=set)
    events: list[RebalanceEvent] = field(default_factory=list)
    topics: list[str] = field(default_factory=list)
    needs_rejoin: bool = True
    _coordinator_id: int | None = None
    _last_poll: float = 0.0
    _lost: bool = False
    _rebalance_lock: trio.Lock = field(default_factory=trio.Lock)
    # A stalled process (a long GC pause, a stuck processing step): no heartbeats go out,
    # so the coordinator expels the member after its session timeout, while the member
    # still holds its old generation and member id.
    heartbeats_paused: bool = False

    def __post_init__(self) -> None:
        names = self.config.partition_assignment_strategy
        self.assignors: list[Assignor] = [ASSIGNORS[n] for n in names]
        self.cooperative = all(a.cooperative for a in self.assignors)
        self._last_poll = trio.current_time()
        if self.config.group_id is None:
            raise GroupError("group membership needs group.id")
        self.group_id: str = self.config.group_id

    # -- signals from the consumer ---------------------------------------------------------

    def subscribe(self, topics: list[str]) -> None:
        """Change the subscription; takes effect at the next rebalance, which it requests."""
        if topics != self.topics:
            self.topics = list(topics)
            self.needs_rejoin = True

    def polled(self) -> None:
        """The application called poll(): the max.poll.interval.ms timer restarts."""
        self._last_poll = trio.current_time()

    def coordinator_dead(self) -> None:
        """Forget the coordinator; the next request rediscovers it."""
        self._coordinator_id = None

    def commit_rejected(self, code: int) -> None:
        """An offset commit said the generation is gone: rejoin (fenced if 22/25)."""
        if code in (22, 25):
            self._fenced(reset_member_id=code == 25)
        self.needs_rejoin = True

    async def coordinator(self) -> int:
        """The coordinator's node id, discovered (FindCoordinator) if unknown."""
        deadline = trio.current_time() + self.config.max_block_ms / 1000
        while self._coordinator_id is None:
            try:
                self._coordinator_id = await self.cluster.find_coordinator(self.group_id)
            except Exception as exc:
                code = getattr(exc, "code", None)
                if code is not None and is_authorization(code):
                    raise AuthorizationError(
                        f"FindCoordinator for group {self.group_id!r}: {error_name(code)}; "
                        "grant Describe on the group to this client's principal"
                    ) from exc
                if trio.current_time() >= deadline:
                    raise GroupError(
                        f"no coordinator found for group {self.group_id!r} within "
                        f"max.block.ms={self.config.max_block_ms}: {exc}"
                    ) from exc
                # COORDINATOR_NOT_AVAILABLE while the offsets partition moves, or no broker
                # reachable: both pass; asking again at once would only spin.
                await trio.sleep(self.config.retry_backoff_ms / 1000)
        return self._coordinator_id

    # -- rebalancing ---------------------------------------------------------------------

    async def ensure_active(self) -> None:
        """Join (or rejoin) the group until this member is STABLE with a fresh assignment."""
        async with self._rebalance_lock:
            while self.needs_rejoin or self.state is not MemberState.STABLE:
                await self._prepare_join()
                await self._join_and_sync()

    async def _prepare_join(self) -> None:
        """Give up partitions before JoinGroup as the rebalance protocol requires."""
        self.state = MemberState.REBALANCING
        if self._lost:
            lost = set(self.owned)
            self._lost = False
            self._set_owned(set())
            if lost and self.listener is not None:
                await self.listener.on_partitions_lost(lost)
            return
        if self.cooperative:
            gone = {tp for tp in self.owned if tp.topic not in self.topics}
        else:
            gone = set(self.owned)
        if gone:
            await self.commit_before_revoke(gone)
            self._set_owned(self.owned - gone)
            if self.listener is not None:
                await self.listener.on_partitions_revoked(gone)

    def _set_owned(self, owned: set[TopicPartition]) -> None:
        self.owned = owned
        self.on_assignment(set(owned))

    def _fenced(self, *, reset_member_id: bool) -> None:
        """The coordinator no longer knows this generation: owned partitions are lost."""
        self.generation = -1
        if reset_member_id:
            self.member_id = ""
        self.state = MemberState.UNJOINED
        self.needs_rejoin = True
        if self.owned:
            self._lost = True

    def _join_timeout_s(self) -> float:
        # JoinGroup is held by the coordinator until the rebalance completes, up to the
        # rebalance timeout (max.poll.interval.ms); the Java client adds 5 s on top.
        return max(self.config.request_timeout_ms, self.config.max_poll_interval_ms + 5000) / 1000

    async def _send_group(
        self, request: ApiMessage, timeout_s: float | None = None
    ) -> ApiMessage:
        coordinator = await self.coordinator()
        try:
            return await self.cluster.send(
                coordinator,
                request,
                channel=GROUP,
                timeout_s=timeout_s,
            )
        except (ConnectionLostError, RequestTimedOutError):
            self.coordinator_dead()
            raise

    async def _backoff(self) -> None:
        await trio.sleep(self.config.retry_backoff_ms / 1000)

    async def _join_and_sync(self) -> None:
        """One JoinGroup + SyncGroup round; on a retriable error, returns to be retried."""
        config = self.config
        protocols = [
            JoinGroupRequest.JoinGroupRequestProtocol(
                name=a.name,
                metadata=encode_subscription(
                    self.topics,
                    self.owned if self.cooperative else (),
                    self.generation,
                    a.subscription_version,
                ),
            )
            for a in self.assignors
        ]
        request = JoinGroupRequest(
            group_id=self.group_id,
            session_timeout_ms=config.session_timeout_ms,
            rebalance_timeout_ms=config.max_poll_interval_ms,
            member_id=self.member_id,
            group_instance_id=config.group_instance_id,
            protocol_type="consumer",
            protocols=protocols,
            reason="rebalance requested by faultline client",
        )
        self.needs_rejoin = False
        try:
            join = await self._send_group(request, self._join_timeout_s())
        except (ConnectionLostError, RequestTimedOutError):
            self.needs_rejoin = True
            await self._backoff()
            return
        code = join.error_code
        if code != 0:
            self.needs_rejoin = True
            if code == 79:  # MEMBER_ID_REQUIRED: rejoin at once with the id given
                self.member_id = join.member_id
                return
            self._handle_group_error(code, "JoinGroup")
            await self._backoff()
            return
        self.member_id = join.member_id
        generation = join.generation_id
        protocol = join.protocol_name
        leader = join.leader == self.member_id
        assignments = []
        if leader:
            assignments = await self._lead(protocol, join.members)
        sync = SyncGroupRequest(
            group_id=self.group_id,
            generation_id=generation,
            member_id=self.member_id,
            group_instance_id=config.group_instance_id,
            protocol_type="consumer",
            protocol_name=protocol,
            assignments=assignments,
        )
        try:
            response = await self._send_group(sync, self._join_timeout_s())
        except (ConnectionLostError, RequestTimedOutError):
            self.needs_rejoin = True
            await self._backoff()
            return
        code = response.error_code
        if code != 0:
            self.needs_rejoin = True
            self._handle_group_error(code, "SyncGroup")
            if code != 27:
                await self._backoff()
            return
        self.generation = generation
        self.protocol = protocol
        new = decode_assignment(response.assignment)
        await self._install(new, leader)

    async def _lead(
        self, protocol: str, members: list[DataContainer]
    ) -> list[DataContainer]:
        """Run the chosen assignor over the members' subscriptions (leader only)."""
        assignor = ASSIGNORS.get(protocol)
        if assignor is None:
            raise GroupError(
                f"the coordinator chose assignor {protocol!r}, which this client does not have"
            )
        subs = [
            decode_subscription(m.member_id, m.group_instance_id, m.metadata)
            for m in members
        ]
        topics = sorted({t for s in subs for t in s.topics})
        with contextlib.suppress(ConnectionLostError):
            await self.cluster.refresh_metadata(topics)
        counts = {
            t: len(self.cluster.partitions_for(t)) for t in topics if self.cluster.partitions_for(t)
        }
        plan = assignor.assign(counts, subs)
        version = 1 if assignor.cooperative else 0
        return [
            SyncGroupRequest.SyncGroupRequestAssignment(
                member_id=member, assignment=encode_assignment(tps, version)
            )
            for member, tps in sorted(plan.items())
        ]

    async def _install(self, new: set[TopicPartition], leader: bool) -> None:
        """Apply a SyncGroup assignment: callbacks, then STABLE (or another round)."""
        old = set(self.owned)
        if self.cooperative:
            revoked = old - new
            added = new - old
            if revoked:
                await self.commit_before_revoke(revoked)
                self._set_owned(old - revoked)
                if self.listener is not None:
                    await self.listener.on_partitions_revoked(revoked)
                # Partitions we gave up are assigned to their new owners next round.
                self.needs_rejoin = True
        else:
            revoked = set()
            added = new
        self._set_owned(new)
        self.state = MemberState.STABLE
        self.events.append(
            RebalanceEvent(
                self.generation,
                self.member_id,
                self.protocol or "",
                frozenset(new),
                frozenset(added),
                frozenset(revoked),
                leader,
            )
        )
        if self.listener is not None:
            await self.listener.on_partitions_assigned(added, self.generation)

    def _handle_group_error(self, code: int, api: str) -> None:
        if code in (15, 16):  # COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR
            self.coordinator_dead()
        elif code in (22, 25):  # ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID
            self._fenced(reset_member_id=code == 25)
        elif code == 82:  # FENCED_INSTANCE_ID
            raise GroupError(
                f"{api}: another consumer uses group.instance.id="
                f"{self.config.group_instance_id!r}; give every member a unique instance id"
            )
        elif code == 23:
            raise GroupError(
                f"{api}: INCONSISTENT_GROUP_PROTOCOL; members of group {self.group_id!r} share "
                "no assignor: give them a common partition.assignment.strategy"
            )
        elif code == 26:
            raise GroupError(
                f"{api}: INVALID_SESSION_TIMEOUT; session.timeout.ms="
                f"{self.config.session_timeout_ms} is outside the broker's "
                "group.min/max.session.timeout.ms"
            )
        elif is_authorization(code):
            raise AuthorizationError(
                f"{api}: {error_name(code)}; grant Read on group {self.group_id!r} to this "
                "client's principal"
            )
        elif code not in (14, 27):  # COORDINATOR_LOAD_IN_PROGRESS, REBALANCE_IN_PROGRESS
            raise GroupError(f"{api} for group {self.group_id!r} failed: {error_name(code)}")

    # -- heartbeat and leave -------------------------------------------------------------

    async def heartbeat_loop(self) -> None:
        """Heartbeat while STABLE; enforce max.poll.interval.ms; runs until cancelled."""
        config = self.config
        interval = config.heartbeat_interval_ms / 1000
        last_ok = trio.current_time()
        while True:
            await trio.sleep(interval)
            now = trio.current_time()
            if self.heartbeats_paused:
                continue
            if self.state is not MemberState.STABLE:
                last_ok = now
                continue
            if now - self._last_poll > config.max_poll_interval_ms / 1000:
                # The application stopped polling: give the partitions to someone who will.
                await self.leave("max.poll.interval.ms exceeded")
                continue
            request = HeartbeatRequest(
                group_id=self.group_id,
                generation_id=self.generation,
                member_id=self.member_id,
                group_instance_id=config.group_instance_id,
            )
            try:
                response = await self._send_group(request)
            except (ConnectionLostError, RequestTimedOutError, GroupError):
                if now - last_ok > config.session_timeout_ms / 1000:
                    self.coordinator_dead()
                continue
            code = response.error_code
            if code == 0:
                last_ok = now
            elif code == 27:
                self.needs_rejoin = True
            elif code in (22, 25):
                self._fenced(reset_member_id=code == 25)
            elif code in (14, 15, 16):
                self.coordinator_dead()

    async def leave(self, reason: str) -> None:
        """Send LeaveGroup (dynamic members) and forget the generation."""
        if self.member_id and self.config.group_instance_id is None:
            request = LeaveGroupRequest(
                group_id=self.group_id,
                member_id=self.member_id,
                members=[
                    LeaveGroupRequest.MemberIdentity(
                        member_id=self.member_id, group_instance_id=None, reason=reason
                    )
                ],
            )
            with contextlib.suppress(ConnectionLostError, RequestTimedOutError, GroupError):
                await self._send_group(request)
        self._fenced(reset_member_id=True)
