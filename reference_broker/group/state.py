"""The classic-protocol group state machine, as Kafka's GroupMetadata plus GroupCoordinator logic.

`ClassicGroup` is a plain class: no I/O, no trio. Every operation takes `now` (trio-clock
seconds) and returns what to answer the caller right away; answers owed to *other* parked
requests (JoinGroup / SyncGroup of other members) are queued as deliveries that the
async edge (`coordinator.py`) drains with `take_deliveries()` after each call and hands to
the waiting handlers. Timers are deadlines the edge reads with `next_deadline()` and fires
with `on_timer(now)`. GroupMetadata records to persist (Kafka's storeGroup) are queued the
same way and drained with `take_writes()`; the leader's assignment takes effect only once
its record is stored (`assignment_stored`), as Kafka's SyncGroup callback.

States and transitions follow Kafka:

    Empty --join--> PreparingRebalance --all joined / timeout--> CompletingRebalance
    CompletingRebalance --leader SyncGroup, group stored--> Stable
    Stable / CompletingRebalance --join, leave, expiry--> PreparingRebalance
    PreparingRebalance --nobody left--> Empty;  any --delete--> Dead
"""

from __future__ import annotations

import enum
import random
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from reference_broker import bugs, events
from reference_broker.errors import ErrorCode
from reference_broker.group.config import NEW_MEMBER_JOIN_TIMEOUT_MS, GroupConfig
from reference_broker.group.member import Member
from reference_broker.group.records import (
    GroupMemberMetadata,
    GroupMetadataValue,
    OffsetsRecordError,
)
from reference_broker.group.results import (
    UNKNOWN_MEMBER_ID,
    DescribedMember,
    GroupDescription,
    JoinProtocol,
    JoinResult,
    MemberInfo,
    SyncResult,
)


class GroupState(enum.Enum):
    """Kafka's classic group states; the value is the name DescribeGroups reports."""

    EMPTY = "Empty"
    PREPARING_REBALANCE = "PreparingRebalance"
    COMPLETING_REBALANCE = "CompletingRebalance"
    STABLE = "Stable"
    DEAD = "Dead"


_VALID_PREVIOUS: dict[GroupState, frozenset[GroupState]] = {
    GroupState.EMPTY: frozenset({GroupState.PREPARING_REBALANCE}),
    GroupState.PREPARING_REBALANCE: frozenset(
        {GroupState.STABLE, GroupState.COMPLETING_REBALANCE, GroupState.EMPTY}
    ),
    GroupState.COMPLETING_REBALANCE: frozenset({GroupState.PREPARING_REBALANCE}),
    GroupState.STABLE: frozenset({GroupState.COMPLETING_REBALANCE}),
    GroupState.DEAD: frozenset(GroupState),
}


class IllegalGroupTransition(RuntimeError):
    """A transition Kafka's state diagram forbids: a bug in the coordinator, not a client error."""


@dataclass(frozen=True)
class JoinDelivery:
    """A JoinGroup response owed to a member whose request is parked."""

    member_id: str
    result: JoinResult


@dataclass(frozen=True)
class SyncDelivery:
    """A SyncGroup response owed to a member whose request is parked."""

    member_id: str
    result: SyncResult


Delivery = JoinDelivery | SyncDelivery


@dataclass(frozen=True)
class GroupWrite:
    """A GroupMetadata record the group asks to have stored, in the order it was produced.

    `assignment` is set when the leader's SyncGroup waits for this write: the edge reports
    the outcome with `ClassicGroup.assignment_stored`.
    """

    value: GroupMetadataValue
    assignment: Mapping[str, bytes] | None = None


class ClassicGroup:
    """One consumer group's membership, generation and rebalance progress."""

    def __init__(self, group_id: str, config: GroupConfig, rng: random.Random) -> None:
        self.group_id = group_id
        self.config = config
        self._rng = rng
        self.state = GroupState.EMPTY
        self.generation_id = 0
        self.protocol_type: str | None = None
        self.protocol_name: str | None = None
        self.leader_id: str | None = None
        # Insertion-ordered, so leader fallback and the leader's member list are deterministic.
        self.members: dict[str, Member] = {}
        # Member ids handed out with MEMBER_ID_REQUIRED, each with its expiry deadline.
        self.pending_members: dict[str, float] = {}
        self.static_members: dict[str, str] = {}  # group.instance.id -> member id
        # Members of the new generation that have not yet sent SyncGroup.
        self.pending_sync: set[str] = set()
        self.new_member_added = False
        self._join_deadline: float | None = None
        self._join_is_initial = False  # Kafka's InitialDelayedJoin rather than DelayedJoin
        self._initial_remaining_ms = 0
        self._sync_deadline: float | None = None
        self._outbox: list[Delivery] = []
        self._writes: list[GroupWrite] = []

    # -- queries -----------------------------------------------------------------------------

    def __repr__(self) -> str:
        return (
            f"<ClassicGroup {self.group_id!r} {self.state.value} gen={self.generation_id} "
            f"members={list(self.members)} leader={self.leader_id!r}>"
        )

    def is_leader(self, member_id: str) -> bool:
        """Whether `member_id` leads the group (computes the assignment)."""
        return self.leader_id == member_id

    def rebalance_timeout_ms(self) -> int:
        """The largest rebalance timeout among members: how long a rebalance waits for rejoins."""
        return max((m.rebalance_timeout_ms for m in self.members.values()), default=0)

    def has_all_members_joined(self) -> bool:
        """Every member has a JoinGroup parked and no MEMBER_ID_REQUIRED member is outstanding."""
        return not self.pending_members and all(m.awaiting_join for m in self.members.values())

    def supports_protocols(self, protocol_type: str, protocol_names: Sequence[str]) -> bool:
        """Whether a member with these protocols may join (Kafka's `supportsProtocols`)."""
        if self.state is GroupState.EMPTY:
            return bool(protocol_type) and bool(protocol_names)
        return self.protocol_type == protocol_type and any(
            self._support_count(name) == len(self.members) for name in protocol_names
        )

    def select_protocol(self) -> str:
        """The protocol every member supports with the most first-choice votes, as Kafka.

        Ties go to the protocol voted for by the earliest-joined member, so the choice is
        deterministic.
        """
        candidates = {
            name
            for m in self.members.values()
            for name in m.protocol_names
            if self._support_count(name) == len(self.members)
        }
        if not candidates:
            raise IllegalGroupTransition(
                f"group {self.group_id!r} has no protocol supported by all members"
            )
        votes = Counter(m.vote(candidates) for m in self.members.values())
        return max(votes, key=lambda name: votes[name])

    def next_deadline(self) -> float | None:
        """The earliest timer of this group (trio-clock seconds), or None without timers."""
        deadlines = [
            *self.pending_members.values(),
            *(
                m.heartbeat_deadline
                for m in self.members.values()
                if m.heartbeat_deadline is not None
            ),
        ]
        if self._join_deadline is not None:
            deadlines.append(self._join_deadline)
        if self._sync_deadline is not None:
            deadlines.append(self._sync_deadline)
        return min(deadlines, default=None)

    def take_writes(self) -> list[GroupWrite]:
        """The GroupMetadata records to store since the last call, in order."""
        out, self._writes = self._writes, []
        return out

    def metadata_value(self, assignment: Mapping[str, bytes] | None = None) -> GroupMetadataValue:
        """The group as Kafka's GroupMetadataValue records it (timestamp left to the store).

        `assignment` overrides the members' current assignments (the leader's pending one).
        """
        protocol = self.protocol_name
        members = tuple(
            GroupMemberMetadata(
                member_id=m.member_id,
                group_instance_id=m.group_instance_id,
                client_id=m.client_id,
                client_host=m.client_host,
                rebalance_timeout_ms=m.rebalance_timeout_ms,
                session_timeout_ms=m.session_timeout_ms,
                subscription=m.metadata_for(protocol) if protocol is not None else b"",
                assignment=assignment.get(m.member_id, b"")
                if assignment is not None
                else m.assignment,
            )
            for m in self.members.values()
        )
        return GroupMetadataValue(
            protocol_type=self.protocol_type or "",
            generation=self.generation_id,
            protocol=protocol,
            leader=self.leader_id if self.members else None,
            current_state_timestamp_ms=-1,
            members=members,
        )

    def restore(self, value: GroupMetadataValue, now: float) -> None:
        """Load a stored GroupMetadataValue into this fresh group, as Kafka's loadGroup.

        The group comes back Stable with its members (Empty without), at the stored
        generation; every member's session timer starts afresh at `now`, so members that
        no longer heartbeat expire and the next rebalance moves past the stored generation.
        """
        if self.state is not GroupState.EMPTY or self.members or self.generation_id:
            raise IllegalGroupTransition(f"group {self.group_id!r} restored twice")
        if value.members and value.protocol is None:
            raise OffsetsRecordError(
                f"group {self.group_id!r}: stored metadata has members but no protocol"
            )
        self.generation_id = value.generation
        self.protocol_type = value.protocol_type or None
        self.protocol_name = value.protocol if value.members else None
        for stored in value.members:
            member = Member(
                member_id=stored.member_id,
                group_instance_id=stored.group_instance_id,
                client_id=stored.client_id,
                client_host=stored.client_host,
                rebalance_timeout_ms=stored.rebalance_timeout_ms,
                session_timeout_ms=stored.session_timeout_ms,
                protocol_type=value.protocol_type,
                protocols=[JoinProtocol(value.protocol or "", stored.subscription)],
                assignment=stored.assignment,
            )
            member.reset_heartbeat(now)
            self.members[member.member_id] = member
            if member.group_instance_id is not None:
                self.static_members[member.group_instance_id] = member.member_id
        if self.members:
            leader = value.leader
            self.leader_id = leader if leader in self.members else next(iter(self.members))
            self.state = GroupState.STABLE  # loaded, not transitioned: no rebalance ran here

    def take_deliveries(self) -> list[Delivery]:
        """The responses owed to parked requests since the last call, in order."""
        out, self._outbox = self._outbox, []
        return out

    def describe(self) -> GroupDescription:
        """A DescribeGroups entry: metadata and assignments only once Stable, as Kafka."""
        stable = self.state is GroupState.STABLE
        members = [
            DescribedMember(
                member_id=m.member_id,
                group_instance_id=m.group_instance_id,
                client_id=m.client_id,
                client_host=m.client_host,
                metadata=m.metadata_for(self.protocol_name)
                if stable and self.protocol_name
                else b"",
                assignment=m.assignment if stable else b"",
            )
            for m in self.members.values()
        ]
        return GroupDescription(
            error=ErrorCode.NONE,
            group_id=self.group_id,
            state=self.state.value,
            protocol_type=self.protocol_type or "",
            protocol_name=(self.protocol_name or "") if stable else "",
            members=members,
        )

    # -- JoinGroup ---------------------------------------------------------------------------

    def join(
        self,
        *,
        member_id: str,
        group_instance_id: str | None,
        protocol_type: str,
        protocols: Sequence[JoinProtocol],
        session_timeout_ms: int,
        rebalance_timeout_ms: int,
        client_id: str,
        client_host: str,
        require_known_member_id: bool,
        now: float,
    ) -> JoinResult | str:
        """Handle a JoinGroup: a result to send now, or the member id whose join is now parked.

        A parked join is answered through a JoinDelivery once the rebalance completes (which
        may already be queued when this returns).
        """
        result: JoinResult | str
        if not self._accept_joining_member(member_id):
            if member_id in self.members:
                self._remove(member_id)
            result = JoinResult.failed(ErrorCode.GROUP_MAX_SIZE_REACHED)
        elif member_id == UNKNOWN_MEMBER_ID:
            result = self._join_new_member(
                group_instance_id, protocol_type, protocols, session_timeout_ms,
                rebalance_timeout_ms, client_id, client_host, require_known_member_id, now,
            )  # fmt: skip
        else:
            result = self._join_current_member(
                member_id, group_instance_id, protocol_type, protocols, session_timeout_ms,
                rebalance_timeout_ms, client_id, client_host, now,
            )  # fmt: skip
        self._maybe_complete_join(now)
        return result

    def abandon_join(self, member_id: str, now: float) -> None:
        """The parked JoinGroup of `member_id` went away (client disconnected, request cancelled).

        The member no longer counts as rejoined: a member that never completed a join is
        removed (it cannot heartbeat, so nothing else would clean it up soon); an existing
        member must heartbeat or rejoin within its session timeout like any other.
        """
        member = self.members.get(member_id)
        if member is None or not member.awaiting_join:
            return
        member.awaiting_join = False
        if member.is_new:
            self._remove_member_and_update_group(member, now)
        else:
            member.reset_heartbeat(now)

    def _accept_joining_member(self, member_id: str) -> bool:
        # Kafka's acceptJoiningMember: awaiting members count during PreparingRebalance so that
        # a lowered group.max.size can kick out the last rejoiners.
        if self.state in (GroupState.EMPTY, GroupState.DEAD):
            return True
        if self.state is GroupState.PREPARING_REBALANCE:
            member = self.members.get(member_id)
            if member is not None and member.awaiting_join:
                return True
            awaiting = sum(1 for m in self.members.values() if m.awaiting_join)
            return awaiting < self.config.max_size
        return member_id in self.members or len(self.members) < self.config.max_size

    def _join_new_member(
        self,
        group_instance_id: str | None,
        protocol_type: str,
        protocols: Sequence[JoinProtocol],
        session_timeout_ms: int,
        rebalance_timeout_ms: int,
        client_id: str,
        client_host: str,
        require_known_member_id: bool,
        now: float,
    ) -> JoinResult | str:
        if self.state is GroupState.DEAD:
            return JoinResult.failed(ErrorCode.COORDINATOR_NOT_AVAILABLE)
        if not self.supports_protocols(protocol_type, [p.name for p in protocols]):
            return JoinResult.failed(ErrorCode.INCONSISTENT_GROUP_PROTOCOL)
        new_member_id = self._generate_member_id(client_id, group_instance_id)
        if group_instance_id is not None:
            old_member_id = self.static_members.get(group_instance_id)
            if old_member_id is not None:
                return self._update_static_member_and_rebalance(
                    group_instance_id, old_member_id, new_member_id, protocols,
                    session_timeout_ms, rebalance_timeout_ms, now,
                )  # fmt: skip
        elif require_known_member_id:
            # JoinGroup v4+: hand out the id first, so that a client that times out and
            # retries does not leave a trail of defunct members behind (KIP-394).
            self.pending_members[new_member_id] = now + session_timeout_ms / 1000
            return JoinResult.failed(ErrorCode.MEMBER_ID_REQUIRED, new_member_id)
        return self._add_member_and_rebalance(
            new_member_id, group_instance_id, protocol_type, protocols, session_timeout_ms,
            rebalance_timeout_ms, client_id, client_host, now,
        )  # fmt: skip

    def _join_current_member(
        self,
        member_id: str,
        group_instance_id: str | None,
        protocol_type: str,
        protocols: Sequence[JoinProtocol],
        session_timeout_ms: int,
        rebalance_timeout_ms: int,
        client_id: str,
        client_host: str,
        now: float,
    ) -> JoinResult | str:
        if self.state is GroupState.DEAD:
            return JoinResult.failed(ErrorCode.COORDINATOR_NOT_AVAILABLE, member_id)
        if not self.supports_protocols(protocol_type, [p.name for p in protocols]):
            return JoinResult.failed(ErrorCode.INCONSISTENT_GROUP_PROTOCOL, member_id)
        if member_id in self.pending_members:
            if group_instance_id is not None:
                # Pending ids are only handed to dynamic members; make the client start over.
                return JoinResult.failed(ErrorCode.UNKNOWN_MEMBER_ID, member_id)
            return self._add_member_and_rebalance(
                member_id, None, protocol_type, protocols, session_timeout_ms,
                rebalance_timeout_ms, client_id, client_host, now,
            )  # fmt: skip
        if self._is_static_member_fenced(member_id, group_instance_id):
            return JoinResult.failed(ErrorCode.FENCED_INSTANCE_ID, member_id)
        instance_unknown = (
            group_instance_id is not None and group_instance_id not in self.static_members
        )
        member = self.members.get(member_id)
        if member is None or instance_unknown:
            return JoinResult.failed(ErrorCode.UNKNOWN_MEMBER_ID, member_id)
        if self.state is GroupState.PREPARING_REBALANCE:
            return self._update_member_and_rebalance(
                member, protocols, session_timeout_ms, rebalance_timeout_ms, now
            )
        if self.state is GroupState.COMPLETING_REBALANCE:
            if member.matches(protocols):
                # The member lost its JoinGroup response: repeat it for this generation.
                return self._generation_join_result(member, with_members=True)
            return self._update_member_and_rebalance(
                member, protocols, session_timeout_ms, rebalance_timeout_ms, now
            )
        if self.state is GroupState.STABLE:
            # The leader rejoining forces a rebalance (it may have seen topic metadata change);
            # so does a follower with new metadata (e.g. cooperative members reporting what they
            # gave up). A follower rejoining unchanged just gets the current generation back.
            if self.is_leader(member_id) or not member.matches(protocols):
                return self._update_member_and_rebalance(
                    member, protocols, session_timeout_ms, rebalance_timeout_ms, now
                )
            return self._generation_join_result(member, with_members=False)
        return JoinResult.failed(ErrorCode.UNKNOWN_MEMBER_ID, member_id)

    def _add_member_and_rebalance(
        self,
        member_id: str,
        group_instance_id: str | None,
        protocol_type: str,
        protocols: Sequence[JoinProtocol],
        session_timeout_ms: int,
        rebalance_timeout_ms: int,
        client_id: str,
        client_host: str,
        now: float,
    ) -> str:
        member = Member(
            member_id=member_id,
            group_instance_id=group_instance_id,
            client_id=client_id,
            client_host=client_host,
            rebalance_timeout_ms=rebalance_timeout_ms,
            session_timeout_ms=session_timeout_ms,
            protocol_type=protocol_type,
            protocols=list(protocols),
            awaiting_join=True,
            is_new=True,
        )
        member.heartbeat_deadline = now + NEW_MEMBER_JOIN_TIMEOUT_MS / 1000
        if self.state is GroupState.PREPARING_REBALANCE and self.generation_id == 0:
            # Extends group.initial.rebalance.delay.ms for a brand-new group.
            self.new_member_added = True
        if not self.members:
            self.protocol_type = protocol_type
        if self.leader_id is None:
            self.leader_id = member_id
        self.members[member_id] = member
        if group_instance_id is not None:
            self.static_members[group_instance_id] = member_id
        else:
            self.pending_members.pop(member_id, None)
        self._maybe_prepare_rebalance(now)
        return member_id

    def _update_member_and_rebalance(
        self,
        member: Member,
        protocols: Sequence[JoinProtocol],
        session_timeout_ms: int,
        rebalance_timeout_ms: int,
        now: float,
    ) -> str:
        self._update_member(member, protocols, session_timeout_ms, rebalance_timeout_ms)
        self._maybe_prepare_rebalance(now)
        return member.member_id

    @staticmethod
    def _update_member(
        member: Member,
        protocols: Sequence[JoinProtocol],
        session_timeout_ms: int,
        rebalance_timeout_ms: int,
    ) -> None:
        member.protocols = list(protocols)
        member.session_timeout_ms = session_timeout_ms
        member.rebalance_timeout_ms = rebalance_timeout_ms
        member.awaiting_join = True

    def _update_static_member_and_rebalance(
        self,
        group_instance_id: str,
        old_member_id: str,
        new_member_id: str,
        protocols: Sequence[JoinProtocol],
        session_timeout_ms: int,
        rebalance_timeout_ms: int,
        now: float,
    ) -> str:
        # A known group.instance.id rejoining with no member id: a restarted static member.
        # It takes over the old member's place; the old member id is fenced from now on.
        current_leader = self.leader_id
        member = self._replace_static_member(group_instance_id, old_member_id, new_member_id)
        member.reset_heartbeat(now)
        self._update_member(member, protocols, session_timeout_ms, rebalance_timeout_ms)
        if self.state is GroupState.STABLE:
            if self.select_protocol() == self.protocol_name:
                # No rebalance: hand back the current generation. The old leader id is
                # returned so that even a replaced leader does not run a pointless
                # assignment that a Stable group would never distribute.
                self._deliver_join(
                    member,
                    JoinResult(
                        error=ErrorCode.NONE,
                        generation_id=self.generation_id,
                        protocol_type=self.protocol_type,
                        protocol_name=self.protocol_name,
                        leader=current_leader or "",
                        member_id=new_member_id,
                        members=[],
                    ),
                )
            else:
                self._maybe_prepare_rebalance(now)
        elif self.state is GroupState.COMPLETING_REBALANCE:
            # The leader may already be assigning to the old member id; start over.
            self._prepare_rebalance(now)
        elif self.state is not GroupState.PREPARING_REBALANCE:
            raise IllegalGroupTransition(
                f"static member {group_instance_id!r} known to group {self.group_id!r} in state "
                f"{self.state.value}"
            )
        return new_member_id

    def _replace_static_member(
        self, group_instance_id: str, old_member_id: str, new_member_id: str
    ) -> Member:
        member = self.members.pop(old_member_id)
        # Fence a duplicate instance immediately if it has a request parked.
        self._deliver_join(member, JoinResult.failed(ErrorCode.FENCED_INSTANCE_ID, old_member_id))
        self._deliver_sync(member, SyncResult.failed(ErrorCode.FENCED_INSTANCE_ID))
        member.member_id = new_member_id
        self.members[new_member_id] = member
        if self.leader_id == old_member_id:
            self.leader_id = new_member_id
        self.static_members[group_instance_id] = new_member_id
        if old_member_id in self.pending_sync:
            self.pending_sync.discard(old_member_id)
            self.pending_sync.add(new_member_id)
        return member

    def _generation_join_result(self, member: Member, *, with_members: bool) -> JoinResult:
        return JoinResult(
            error=ErrorCode.NONE,
            generation_id=self.generation_id,
            protocol_type=self.protocol_type,
            protocol_name=self.protocol_name,
            leader=self.leader_id or "",
            member_id=member.member_id,
            members=self._member_infos()
            if with_members and self.is_leader(member.member_id)
            else [],
        )

    def _member_infos(self) -> list[MemberInfo]:
        assert self.protocol_name is not None
        return [
            MemberInfo(m.member_id, m.group_instance_id, m.metadata_for(self.protocol_name))
            for m in self.members.values()
        ]

    def _generate_member_id(self, client_id: str, group_instance_id: str | None) -> str:
        # Kafka: clientId-UUID, or groupInstanceId-UUID for static members. The UUID comes from
        # the node's seeded rng so that simulated runs are reproducible.
        prefix = group_instance_id if group_instance_id is not None else client_id
        return f"{prefix}-{uuid.UUID(int=self._rng.getrandbits(128), version=4)}"

    def _is_static_member_fenced(self, member_id: str, group_instance_id: str | None) -> bool:
        if group_instance_id is None:
            return False
        current = self.static_members.get(group_instance_id)
        return current is not None and current != member_id

    def _stale_generation(self, generation_id: int, request: str) -> None:
        events.emit("stale-generation", group=self.group_id, generation=generation_id,
                    current=self.generation_id, request=request)

    def _support_count(self, protocol_name: str) -> int:
        return sum(1 for m in self.members.values() if protocol_name in m.protocol_names)

    # -- SyncGroup ---------------------------------------------------------------------------

    def sync(
        self,
        *,
        generation_id: int,
        member_id: str,
        group_instance_id: str | None,
        protocol_type: str | None,
        protocol_name: str | None,
        assignments: Mapping[str, bytes],
        now: float,
    ) -> SyncResult | None:
        """Handle a SyncGroup: a result to send now, or None when the request is parked.

        A parked SyncGroup is answered through a SyncDelivery when the leader's assignment
        arrives (for the leader itself, that delivery is queued before this returns).
        """
        if self.state is GroupState.DEAD:
            return SyncResult.failed(ErrorCode.COORDINATOR_NOT_AVAILABLE)
        if self._is_static_member_fenced(member_id, group_instance_id):
            return SyncResult.failed(ErrorCode.FENCED_INSTANCE_ID)
        member = self.members.get(member_id)
        if member is None:
            return SyncResult.failed(ErrorCode.UNKNOWN_MEMBER_ID)
        if generation_id != self.generation_id:
            self._stale_generation(generation_id, "sync")
            return SyncResult.failed(ErrorCode.ILLEGAL_GENERATION)
        if (protocol_type is not None and protocol_type != self.protocol_type) or (
            protocol_name is not None and protocol_name != self.protocol_name
        ):
            return SyncResult.failed(ErrorCode.INCONSISTENT_GROUP_PROTOCOL)
        if self.state is GroupState.EMPTY:
            return SyncResult.failed(ErrorCode.UNKNOWN_MEMBER_ID)
        if self.state is GroupState.PREPARING_REBALANCE:
            return SyncResult.failed(ErrorCode.REBALANCE_IN_PROGRESS)
        if self.state is GroupState.STABLE:
            self._synced(member_id)
            member.reset_heartbeat(now)
            return SyncResult(
                ErrorCode.NONE, self.protocol_type, self.protocol_name, member.assignment
            )
        # CompletingRebalance: park; the leader's assignment releases everyone.
        member.awaiting_sync = True
        self._synced(member_id)
        if self.is_leader(member_id):
            # Members the leader left out get an empty assignment; ids it invented are ignored.
            assignment = {mid: bytes(assignments.get(mid, b"")) for mid in self.members}
            # Kafka's storeGroup: nobody sees the assignment before the generation is stored,
            # so a restarted coordinator can never hand this generation number out again.
            self._writes.append(GroupWrite(self.metadata_value(assignment), assignment))
        return None

    def assignment_stored(
        self, generation_id: int, assignment: Mapping[str, bytes], error: ErrorCode, now: float
    ) -> None:
        """The leader's assignment record for `generation_id` was stored (or failed to be).

        Ignored if the group moved on meanwhile (a member joined, left or expired); on
        success the assignment goes out and the group is Stable; on failure the parked
        SyncGroups get the error and the group rebalances, as Kafka.
        """
        if self.state is not GroupState.COMPLETING_REBALANCE or generation_id != self.generation_id:
            return
        if error is not ErrorCode.NONE:
            self._reset_and_propagate_assignment_error(error, now)
            self._maybe_prepare_rebalance(now)
            return
        for m in self.members.values():
            m.assignment = bytes(assignment.get(m.member_id, b""))
        self._propagate_assignment(ErrorCode.NONE, now)
        self._transition(GroupState.STABLE)

    def abandon_sync(self, member_id: str, now: float) -> None:
        """The parked SyncGroup of `member_id` went away; it must heartbeat from now on."""
        member = self.members.get(member_id)
        if member is None or not member.awaiting_sync:
            return
        member.awaiting_sync = False
        member.reset_heartbeat(now)

    def _synced(self, member_id: str) -> None:
        self.pending_sync.discard(member_id)
        if not self.pending_sync:
            self._sync_deadline = None

    def _propagate_assignment(self, error: ErrorCode, now: float) -> None:
        ok = error is ErrorCode.NONE
        for m in self.members.values():
            if m.awaiting_sync:
                result = SyncResult(
                    error,
                    self.protocol_type if ok else None,
                    self.protocol_name if ok else None,
                    m.assignment,
                )
                self._deliver_sync(m, result)
                # Expiry was suspended while the SyncGroup was parked; restart it.
                m.reset_heartbeat(now)

    # -- Heartbeat, LeaveGroup, OffsetCommit checks -------------------------------------------

    def heartbeat(
        self, *, generation_id: int, member_id: str, group_instance_id: str | None, now: float
    ) -> ErrorCode:
        """Handle a Heartbeat; REBALANCE_IN_PROGRESS tells a member to rejoin."""
        if self.state is GroupState.DEAD:
            return ErrorCode.COORDINATOR_NOT_AVAILABLE
        if self._is_static_member_fenced(member_id, group_instance_id):
            return ErrorCode.FENCED_INSTANCE_ID
        member = self.members.get(member_id)
        if member is None:
            return ErrorCode.UNKNOWN_MEMBER_ID
        if generation_id != self.generation_id:
            self._stale_generation(generation_id, "heartbeat")
            return ErrorCode.ILLEGAL_GENERATION
        if self.state is GroupState.EMPTY:
            return ErrorCode.UNKNOWN_MEMBER_ID
        member.reset_heartbeat(now)
        if self.state is GroupState.PREPARING_REBALANCE:
            return ErrorCode.REBALANCE_IN_PROGRESS
        # CompletingRebalance: clients may heartbeat between JoinGroup and SyncGroup.
        return ErrorCode.NONE

    def leave(
        self, members: Sequence[tuple[str, str | None]], now: float
    ) -> list[ErrorCode] | None:
        """Handle a LeaveGroup (v3+ batch): one error per leaving member; None if the group is Dead.

        A member may be named by group.instance.id alone (empty member id), as Kafka allows
        for administrative removal of static members.
        """
        if self.state is GroupState.DEAD:
            return None
        errors: list[ErrorCode] = []
        for member_id, group_instance_id in members:
            if member_id == UNKNOWN_MEMBER_ID:
                current = (
                    self.static_members.get(group_instance_id)
                    if group_instance_id is not None
                    else None
                )
                if current is None:
                    errors.append(ErrorCode.UNKNOWN_MEMBER_ID)
                else:
                    self._remove_member_and_update_group(self.members[current], now)
                    errors.append(ErrorCode.NONE)
            elif member_id in self.pending_members:
                self._remove_pending_member_and_update_group(member_id, now)
                errors.append(ErrorCode.NONE)
            elif self._is_static_member_fenced(member_id, group_instance_id):
                errors.append(ErrorCode.FENCED_INSTANCE_ID)
            elif member_id in self.members:
                self._remove_member_and_update_group(self.members[member_id], now)
                errors.append(ErrorCode.NONE)
            else:
                errors.append(ErrorCode.UNKNOWN_MEMBER_ID)
        return errors

    def validate_offset_commit(
        self, *, generation_id: int, member_id: str, group_instance_id: str | None, now: float
    ) -> ErrorCode:
        """Whether a commit may be stored now (NONE) or the error every partition gets.

        A simple commit (generation -1, no member id) is allowed only while the group is
        Empty; a member commit must name a current member and generation, and is refused with
        REBALANCE_IN_PROGRESS between JoinGroup and SyncGroup, as Kafka.
        """
        if self.state is GroupState.DEAD:
            return ErrorCode.COORDINATOR_NOT_AVAILABLE
        if generation_id >= 0 or member_id != UNKNOWN_MEMBER_ID or group_instance_id is not None:
            if self._is_static_member_fenced(member_id, group_instance_id):
                return ErrorCode.FENCED_INSTANCE_ID
            if bugs.enabled("commit-stale-generation"):
                # PLANTED BUG commit-stale-generation: neither member nor generation checked.
                pass
            elif member_id not in self.members:
                if generation_id >= 0:
                    # A member expelled from an earlier generation (a zombie) commits.
                    self._stale_generation(generation_id, "offset-commit")
                return ErrorCode.UNKNOWN_MEMBER_ID
            elif generation_id != self.generation_id:
                self._stale_generation(generation_id, "offset-commit")
                return ErrorCode.ILLEGAL_GENERATION
        elif self.state is not GroupState.EMPTY:
            return ErrorCode.UNKNOWN_MEMBER_ID
        if self.state is GroupState.COMPLETING_REBALANCE:
            return ErrorCode.REBALANCE_IN_PROGRESS
        if self.state is not GroupState.EMPTY and member_id in self.members:
            # Stable or PreparingRebalance: a commit counts as a sign of life.
            self.members[member_id].reset_heartbeat(now)
        return ErrorCode.NONE

    def mark_dead(self) -> None:
        """The group was deleted: every later request is told to look for its coordinator."""
        self._transition(GroupState.DEAD)
        self._join_deadline = None
        self._sync_deadline = None

    # -- timers ------------------------------------------------------------------------------

    def on_timer(self, now: float) -> None:
        """Fire every timer due at `now`: pending-member, session, join and sync expiries."""
        for member_id, deadline in list(self.pending_members.items()):
            if deadline <= now and member_id in self.pending_members:
                self._remove_pending_member_and_update_group(member_id, now)
        for member in list(self.members.values()):
            due = member.heartbeat_deadline
            if due is not None and due <= now and member.member_id in self.members:
                self._on_heartbeat_expired(member, now)
        if self._join_deadline is not None and self._join_deadline <= now:
            self._on_join_deadline(now)
        if self._sync_deadline is not None and self._sync_deadline <= now:
            self._on_sync_deadline(now)

    def _on_heartbeat_expired(self, member: Member, now: float) -> None:
        member.heartbeat_deadline = None
        # A parked join/sync stands in for heartbeats, except for a member that never
        # completed a join: it is bounded by NEW_MEMBER_JOIN_TIMEOUT_MS instead.
        if member.is_new or not (member.awaiting_join or member.awaiting_sync):
            self._remove_member_and_update_group(member, now)

    def _on_join_deadline(self, now: float) -> None:
        self._join_deadline = None
        if self.state is not GroupState.PREPARING_REBALANCE:
            return
        if self._join_is_initial and self.new_member_added and self._initial_remaining_ms > 0:
            # New members keep arriving at a new group: wait one more delay, bounded by the
            # rebalance timeout, so the first generation is not immediately outdated.
            self.new_member_added = False
            delay = min(self.config.initial_rebalance_delay_ms, self._initial_remaining_ms)
            self._initial_remaining_ms = max(self._initial_remaining_ms - delay, 0)
            self._join_deadline = now + delay / 1000
            return
        self._complete_join(now)

    def _on_sync_deadline(self, now: float) -> None:
        self._sync_deadline = None
        if self.state not in (GroupState.COMPLETING_REBALANCE, GroupState.STABLE):
            return
        if not self.pending_sync:
            return
        # Members that got the generation but never synced within the rebalance timeout
        # hold partitions nobody consumes: drop them and rebalance.
        for member_id in sorted(self.pending_sync):
            if member_id in self.members:
                self._remove(member_id)
        self.pending_sync.clear()
        self._prepare_rebalance(now)

    # -- rebalance mechanics -----------------------------------------------------------------

    def _maybe_prepare_rebalance(self, now: float) -> None:
        if self.state in (GroupState.STABLE, GroupState.COMPLETING_REBALANCE, GroupState.EMPTY):
            self._prepare_rebalance(now)

    def _prepare_rebalance(self, now: float) -> None:
        if self.state is GroupState.COMPLETING_REBALANCE:
            self._reset_and_propagate_assignment_error(ErrorCode.REBALANCE_IN_PROGRESS, now)
        self._sync_deadline = None
        self.pending_sync.clear()
        if self.state is GroupState.EMPTY:
            delay = self.config.initial_rebalance_delay_ms
            self._join_is_initial = True
            self._initial_remaining_ms = max(self.rebalance_timeout_ms() - delay, 0)
            self._join_deadline = now + delay / 1000
        else:
            self._join_is_initial = False
            self._join_deadline = now + self.rebalance_timeout_ms() / 1000
        self._transition(GroupState.PREPARING_REBALANCE)

    def _maybe_complete_join(self, now: float) -> None:
        # The initial delay never completes early: that is its point.
        if (
            self.state is GroupState.PREPARING_REBALANCE
            and not self._join_is_initial
            and self.has_all_members_joined()
        ):
            self._complete_join(now)

    def _complete_join(self, now: float) -> None:
        self._join_deadline = None
        # Dynamic members that did not rejoin in time are gone; static ones keep their place.
        for member in list(self.members.values()):
            if not member.awaiting_join and member.group_instance_id is None:
                self._remove(member.member_id)
        if self.members and not self._maybe_elect_joined_leader():
            # Only static members that have not rejoined remain: wait for them (or for their
            # session to expire) another rebalance timeout.
            self._join_is_initial = False
            self._join_deadline = now + self.rebalance_timeout_ms() / 1000
            return
        # PLANTED BUG rebalance-keeps-generation: only the first rebalance bumps it.
        if not (self.generation_id > 0 and bugs.enabled("rebalance-keeps-generation")):
            self.generation_id += 1
        events.emit("rebalance", group=self.group_id, generation=self.generation_id,
                    members=len(self.members))
        if not self.members:
            self.protocol_name = None
            self._transition(GroupState.EMPTY)
            # Stored so that an empty group keeps its generation across a restart.
            self._writes.append(GroupWrite(self.metadata_value()))
            return
        self.protocol_name = self.select_protocol()
        self._transition(GroupState.COMPLETING_REBALANCE)
        for member in self.members.values():
            self._deliver_join(member, self._generation_join_result(member, with_members=True))
            member.reset_heartbeat(now)
            member.is_new = False
        self.pending_sync = set(self.members)
        self._sync_deadline = now + self.rebalance_timeout_ms() / 1000

    def _maybe_elect_joined_leader(self) -> bool:
        leader = self.members.get(self.leader_id) if self.leader_id is not None else None
        if leader is not None and leader.awaiting_join:
            return True
        for member in self.members.values():
            if member.awaiting_join:
                self.leader_id = member.member_id
                return True
        return False

    def _reset_and_propagate_assignment_error(self, error: ErrorCode, now: float) -> None:
        for m in self.members.values():
            m.assignment = b""
        self._propagate_assignment(error, now)

    def _remove_member_and_update_group(self, member: Member, now: float) -> None:
        self._remove(member.member_id)
        if self.state in (GroupState.STABLE, GroupState.COMPLETING_REBALANCE):
            self._prepare_rebalance(now)
        elif self.state is GroupState.PREPARING_REBALANCE:
            self._maybe_complete_join(now)

    def _remove_pending_member_and_update_group(self, member_id: str, now: float) -> None:
        del self.pending_members[member_id]
        if self.state is GroupState.PREPARING_REBALANCE:
            self._maybe_complete_join(now)

    def _remove(self, member_id: str) -> None:
        member = self.members.pop(member_id)
        # Nothing parked may be left hanging: a removed member's requests fail now.
        self._deliver_join(member, JoinResult.failed(ErrorCode.UNKNOWN_MEMBER_ID))
        self._deliver_sync(member, SyncResult.failed(ErrorCode.UNKNOWN_MEMBER_ID))
        if (
            member.group_instance_id is not None
            and self.static_members.get(member.group_instance_id) == member_id
        ):
            del self.static_members[member.group_instance_id]
        self.pending_sync.discard(member_id)
        if self.leader_id == member_id:
            self.leader_id = next(iter(self.members), None)

    def _deliver_join(self, member: Member, result: JoinResult) -> None:
        if member.awaiting_join:
            member.awaiting_join = False
            self._outbox.append(JoinDelivery(member.member_id, result))

    def _deliver_sync(self, member: Member, result: SyncResult) -> None:
        if member.awaiting_sync:
            member.awaiting_sync = False
            self._outbox.append(SyncDelivery(member.member_id, result))

    def _transition(self, target: GroupState) -> None:
        if self.state not in _VALID_PREVIOUS[target]:
            raise IllegalGroupTransition(
                f"group {self.group_id!r} cannot go from {self.state.value} to {target.value}"
            )
        self.state = target
