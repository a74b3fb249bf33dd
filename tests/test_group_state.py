"""The classic group state machine on its own: no trio, time passed in explicitly."""

from __future__ import annotations

import random
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reference_broker.errors import ErrorCode
from reference_broker.group.config import NEW_MEMBER_JOIN_TIMEOUT_MS, GroupConfig
from reference_broker.group.results import JoinProtocol, JoinResult, SyncResult
from reference_broker.group.state import (
    ClassicGroup,
    GroupState,
    GroupWrite,
    IllegalGroupTransition,
    JoinDelivery,
    SyncDelivery,
)

RANGE = [JoinProtocol("range", b"sub")]
CONFIG = GroupConfig(initial_rebalance_delay_ms=3000)
SESSION_MS = 10_000
REBALANCE_MS = 30_000


def new_group(config: GroupConfig = CONFIG, seed: int = 0) -> ClassicGroup:
    return ClassicGroup("g", config, random.Random(seed))


def join(
    group: ClassicGroup,
    member_id: str = "",
    *,
    now: float,
    protocols: list[JoinProtocol] = RANGE,
    protocol_type: str = "consumer",
    instance: str | None = None,
    client: str = "client",
    require_known: bool = True,
) -> JoinResult | str:
    return group.join(
        member_id=member_id,
        group_instance_id=instance,
        protocol_type=protocol_type,
        protocols=protocols,
        session_timeout_ms=SESSION_MS,
        rebalance_timeout_ms=REBALANCE_MS,
        client_id=client,
        client_host="/127.0.0.1",
        require_known_member_id=require_known,
        now=now,
    )


def join_new(group: ClassicGroup, *, now: float, **kwargs: object) -> str:
    """The v4+ two-step join: MEMBER_ID_REQUIRED, then join with the handed-out id (parks)."""
    first = join(group, now=now, **kwargs)  # type: ignore[arg-type]
    assert isinstance(first, JoinResult) and first.error is ErrorCode.MEMBER_ID_REQUIRED
    parked = join(group, first.member_id, now=now, **kwargs)  # type: ignore[arg-type]
    assert parked == first.member_id
    return parked


def finish_initial_delay(group: ClassicGroup) -> None:
    """Members that all joined at t=0 extend the 3s initial delay once: done at t=6."""
    group.on_timer(3.0)
    group.on_timer(6.0)


def store_writes(
    group: ClassicGroup, now: float, error: ErrorCode = ErrorCode.NONE
) -> list[GroupWrite]:
    """What the coordinator does: store the queued GroupMetadata records, report the outcome."""
    writes = group.take_writes()
    for write in writes:
        if write.assignment is not None:
            group.assignment_stored(write.value.generation, write.assignment, error, now)
    return writes


def joins(group: ClassicGroup) -> dict[str, JoinResult]:
    return {d.member_id: d.result for d in group.take_deliveries() if isinstance(d, JoinDelivery)}


def stable_group(n: int, *, now: float = 0.0) -> tuple[ClassicGroup, list[str]]:
    """A group of n members in generation 1, Stable, member i assigned b'a<i>'."""
    group = new_group()
    ids = [join_new(group, now=now) for _ in range(n)]
    group.on_timer(now + 3.0)  # the initial rebalance delay (no extension: same instant)
    group.on_timer(now + 6.0)
    results = joins(group)
    assert {r.generation_id for r in results.values()} == {1}
    leader = results[ids[0]].leader
    assignment = {mid: f"a{i}".encode() for i, mid in enumerate(ids)}
    assert group.sync(
        generation_id=1, member_id=leader, group_instance_id=None,
        protocol_type="consumer", protocol_name="range", assignments=assignment, now=now + 6,
    ) is None  # fmt: skip
    (write,) = store_writes(group, now + 6)
    assert write.value.generation == 1 and write.assignment == assignment
    group.take_deliveries()
    for mid in ids:
        if mid != leader:
            synced = group.sync(
                generation_id=1, member_id=mid, group_instance_id=None, protocol_type=None,
                protocol_name=None, assignments={}, now=now + 6,
            )  # fmt: skip
            assert synced is not None and synced.assignment == assignment[mid]
    assert group.state is GroupState.STABLE
    return group, ids


def test_first_join_without_member_id_is_told_member_id_required_with_a_seeded_id() -> None:
    group = new_group(seed=7)
    result = join(group, now=0.0, client="consumer-1")
    assert isinstance(result, JoinResult)
    assert result.error is ErrorCode.MEMBER_ID_REQUIRED
    prefix, _, suffix = result.member_id.partition("-")
    assert prefix == "consumer" and suffix.startswith("1-")
    uuid.UUID(result.member_id.removeprefix("consumer-1-"))
    assert group.members == {} and result.member_id in group.pending_members
    assert group.state is GroupState.EMPTY
    same_seed = join(new_group(seed=7), now=0.0, client="consumer-1")
    other_seed = join(new_group(seed=8), now=0.0, client="consumer-1")
    assert isinstance(same_seed, JoinResult) and isinstance(other_seed, JoinResult)
    assert same_seed.member_id == result.member_id != other_seed.member_id


def test_join_without_member_id_and_without_requirement_parks_at_once() -> None:
    group = new_group()
    parked = join(group, now=0.0, require_known=False)
    assert isinstance(parked, str) and parked in group.members
    assert group.state is GroupState.PREPARING_REBALANCE


def test_join_with_a_member_id_the_group_never_handed_out_is_unknown() -> None:
    group, _ = stable_group(1)
    result = join(group, "made-up", now=10.0)
    assert isinstance(result, JoinResult) and result.error is ErrorCode.UNKNOWN_MEMBER_ID


def test_pending_member_id_expires_after_the_session_timeout() -> None:
    group = new_group()
    first = join(group, now=0.0)
    assert isinstance(first, JoinResult)
    group.on_timer(SESSION_MS / 1000 - 0.001)
    assert first.member_id in group.pending_members
    group.on_timer(SESSION_MS / 1000)
    assert first.member_id not in group.pending_members
    late = join(group, first.member_id, now=11.0)
    assert isinstance(late, JoinResult) and late.error is ErrorCode.UNKNOWN_MEMBER_ID


def test_initial_delay_extends_while_new_members_keep_arriving() -> None:
    group = new_group()
    a = join_new(group, now=0.0)
    group.on_timer(2.0)
    b = join_new(group, now=2.0)  # arrives within the first delay: one more delay
    group.on_timer(3.0)
    assert group.state is GroupState.PREPARING_REBALANCE and joins(group) == {}
    group.on_timer(6.0)
    results = joins(group)
    assert set(results) == {a, b}
    assert {r.generation_id for r in results.values()} == {1}


def test_initial_delay_extension_is_bounded_by_the_rebalance_timeout() -> None:
    group = new_group(GroupConfig(initial_rebalance_delay_ms=3000))
    join_new(group, now=0.0)  # remaining budget: 30s - 3s = 27s
    t = 0.0
    while group.state is GroupState.PREPARING_REBALANCE:
        t += 1.0
        join_new(group, now=t)  # somebody new every second
        group.on_timer(t)
    assert t == pytest.approx(REBALANCE_MS / 1000)
    assert group.generation_id == 1


def test_protocol_is_the_one_all_members_support_with_the_most_votes() -> None:
    group = new_group()
    rr, rng = JoinProtocol("roundrobin", b"r"), JoinProtocol("range", b"g")
    join_new(group, now=0.0, protocols=[rng, rr])
    join_new(group, now=0.0, protocols=[rng, rr])
    join_new(group, now=0.0, protocols=[rr, rng])
    finish_initial_delay(group)
    assert group.protocol_name == "range"
    # A member that only speaks roundrobin rules range out for everyone.
    group2 = new_group()
    join_new(group2, now=0.0, protocols=[rng, rr])
    join_new(group2, now=0.0, protocols=[rng, rr])
    join_new(group2, now=0.0, protocols=[rr])
    finish_initial_delay(group2)
    assert group2.protocol_name == "roundrobin"
    leader_view = next(r for r in joins(group2).values() if r.members)
    assert {m.metadata for m in leader_view.members} == {b"r"}


def test_join_with_another_protocol_type_or_no_common_protocol_is_inconsistent() -> None:
    group, ids = stable_group(2)
    wrong_type = join(group, now=7.0, protocol_type="connect")
    no_common = join(group, now=7.0, protocols=[JoinProtocol("sticky", b"")])
    rejoin_no_common = join(group, ids[1], now=7.0, protocols=[JoinProtocol("sticky", b"")])
    for result in (wrong_type, no_common, rejoin_no_common):
        assert isinstance(result, JoinResult)
        assert result.error is ErrorCode.INCONSISTENT_GROUP_PROTOCOL
    assert group.state is GroupState.STABLE
    empty = join(new_group(), now=0.0, protocols=[])
    assert isinstance(empty, JoinResult) and empty.error is ErrorCode.INCONSISTENT_GROUP_PROTOCOL


def test_follower_rejoining_unchanged_in_stable_group_gets_the_current_generation() -> None:
    group, ids = stable_group(2)
    result = join(group, ids[1], now=7.0)
    assert isinstance(result, JoinResult)
    assert (result.error, result.generation_id, result.members) == (ErrorCode.NONE, 1, [])
    assert group.state is GroupState.STABLE


@pytest.mark.parametrize("who", ["leader", "follower-with-new-metadata"])
def test_leader_rejoin_or_changed_metadata_in_stable_group_triggers_a_rebalance(who: str) -> None:
    group, ids = stable_group(2)
    if who == "leader":
        parked = join(group, ids[0], now=7.0)
    else:
        # What a cooperative-sticky member does after giving up partitions.
        parked = join(group, ids[1], now=7.0, protocols=[JoinProtocol("range", b"owned:none")])
    assert isinstance(parked, str)
    assert group.state is GroupState.PREPARING_REBALANCE
    other = ids[1] if who == "leader" else ids[0]
    assert (
        group.heartbeat(generation_id=1, member_id=other, group_instance_id=None, now=7.0)
        is ErrorCode.REBALANCE_IN_PROGRESS
    )
    assert join(group, other, now=7.5) == other
    results = joins(group)
    assert {r.generation_id for r in results.values()} == {2}
    assert set(results) == set(ids)


def test_join_during_completing_rebalance_sends_parked_syncs_rebalance_in_progress() -> None:
    group = new_group()
    a = join_new(group, now=0.0)
    b = join_new(group, now=0.0)
    finish_initial_delay(group)
    joins(group)
    assert group.state is GroupState.COMPLETING_REBALANCE
    follower = b if group.leader_id == a else a
    parked = group.sync(
        generation_id=1, member_id=follower, group_instance_id=None, protocol_type=None,
        protocol_name=None, assignments={}, now=6.0,
    )  # fmt: skip
    assert parked is None
    join_new(group, now=6.5)  # a third member arrives before the leader synced
    delivered = group.take_deliveries()
    assert delivered == [SyncDelivery(follower, SyncResult.failed(ErrorCode.REBALANCE_IN_PROGRESS))]
    assert group.state is GroupState.PREPARING_REBALANCE


def test_members_that_never_sync_are_removed_after_the_rebalance_timeout() -> None:
    group = new_group()
    a = join_new(group, now=0.0)
    b = join_new(group, now=0.0)
    finish_initial_delay(group)
    joins(group)
    leader = group.leader_id
    assert leader is not None
    assert group.sync(
        generation_id=1, member_id=leader, group_instance_id=None, protocol_type=None,
        protocol_name=None, assignments={a: b"x", b: b"y"}, now=6.0,
    ) is None  # fmt: skip
    silent = b if leader == a else a
    # The silent member keeps heartbeating, so only the pending-sync timer can catch it.
    t = 6.0
    while t + 2.0 < 6.0 + REBALANCE_MS / 1000:
        t += 2.0
        group.heartbeat(generation_id=1, member_id=silent, group_instance_id=None, now=t)
        group.heartbeat(generation_id=1, member_id=leader, group_instance_id=None, now=t)
        group.on_timer(t)
        assert silent in group.members
    group.on_timer(6.0 + REBALANCE_MS / 1000)
    assert silent not in group.members
    assert group.state is GroupState.PREPARING_REBALANCE


def test_static_member_rejoining_stable_group_keeps_generation_and_fences_old_id() -> None:
    group = new_group()
    first = join(group, now=0.0, instance="host-a")  # static members skip MEMBER_ID_REQUIRED
    assert isinstance(first, str) and first.startswith("host-a-")
    group.on_timer(3.0)
    joins(group)
    group.sync(
        generation_id=1, member_id=first, group_instance_id="host-a", protocol_type=None,
        protocol_name=None, assignments={first: b"all"}, now=3.0,
    )  # fmt: skip
    store_writes(group, 3.0)
    group.take_deliveries()
    replacement = join(group, now=5.0, instance="host-a")  # restarted: no member id
    assert isinstance(replacement, str) and replacement != first
    result = joins(group)[replacement]
    assert (result.error, result.generation_id) == (ErrorCode.NONE, 1)
    assert result.leader == first  # the old leader id: no pointless re-assignment
    assert group.state is GroupState.STABLE
    assert (
        group.heartbeat(generation_id=1, member_id=first, group_instance_id="host-a", now=5.0)
        is ErrorCode.FENCED_INSTANCE_ID
    )
    synced = group.sync(
        generation_id=1, member_id=replacement, group_instance_id="host-a", protocol_type=None,
        protocol_name=None, assignments={}, now=5.0,
    )  # fmt: skip
    assert synced is not None and synced.assignment == b"all"


def test_offset_commit_checks_member_generation_and_state() -> None:
    group, ids = stable_group(2)

    def check(generation: int, member: str) -> ErrorCode:
        return group.validate_offset_commit(
            generation_id=generation, member_id=member, group_instance_id=None, now=7.0
        )

    assert check(1, ids[0]) is ErrorCode.NONE
    assert check(0, ids[0]) is ErrorCode.ILLEGAL_GENERATION
    assert check(1, "stranger") is ErrorCode.UNKNOWN_MEMBER_ID
    assert check(-1, "") is ErrorCode.UNKNOWN_MEMBER_ID  # simple commit into a live group
    join(group, ids[0], now=7.0)  # leader rejoins: PreparingRebalance still accepts commits
    assert check(1, ids[1]) is ErrorCode.NONE
    join(group, ids[1], now=7.0)  # everyone rejoined: CompletingRebalance of generation 2
    assert group.state is GroupState.COMPLETING_REBALANCE
    assert check(2, ids[1]) is ErrorCode.REBALANCE_IN_PROGRESS
    assert check(-1, "") is ErrorCode.UNKNOWN_MEMBER_ID
    assert (
        new_group().validate_offset_commit(
            generation_id=-1, member_id="", group_instance_id=None, now=0.0
        )
        is ErrorCode.NONE
    )


def test_group_max_size_refuses_the_extra_member() -> None:
    group = new_group(GroupConfig(max_size=2))
    join_new(group, now=0.0)
    join_new(group, now=0.0)
    finish_initial_delay(group)
    joins(group)
    refused = join(group, now=7.0)  # checked before a member id is even handed out
    assert isinstance(refused, JoinResult) and refused.error is ErrorCode.GROUP_MAX_SIZE_REACHED
    assert len(group.members) == 2


def test_abandoned_join_of_a_new_member_removes_it() -> None:
    group = new_group()
    lonely = join_new(group, now=0.0)
    group.abandon_join(lonely, 0.5)  # request gone: a never-joined member is dropped
    assert lonely not in group.members
    assert group.take_deliveries() == []


def test_abandoned_rejoin_of_an_existing_member_needs_heartbeats_again() -> None:
    group, (a, b) = stable_group(2)
    assert join(group, b, now=7.0, protocols=[JoinProtocol("range", b"new")]) == b
    group.abandon_join(b, 7.0)  # b's connection dropped while parked
    assert join(group, a, now=7.5) == a
    # b no longer counts as rejoined, so the rebalance waits for it...
    assert group.state is GroupState.PREPARING_REBALANCE and joins(group) == {}
    group.on_timer(7.0 + SESSION_MS / 1000 - 0.01)
    assert b in group.members
    # ...until its session runs out; then a's generation goes ahead alone.
    group.on_timer(7.0 + SESSION_MS / 1000)
    results = joins(group)
    assert b not in group.members and set(results) == {a}
    assert results[a].generation_id == 2


def test_new_member_whose_join_never_completes_expires_after_the_new_member_timeout() -> None:
    stuck = new_group(GroupConfig(initial_rebalance_delay_ms=NEW_MEMBER_JOIN_TIMEOUT_MS * 2))
    m = join_new(stuck, now=0.0)
    stuck.on_timer(NEW_MEMBER_JOIN_TIMEOUT_MS / 1000 - 1)
    assert m in stuck.members
    stuck.on_timer(NEW_MEMBER_JOIN_TIMEOUT_MS / 1000)
    assert m not in stuck.members
    assert stuck.take_deliveries() == [
        JoinDelivery(m, JoinResult.failed(ErrorCode.UNKNOWN_MEMBER_ID))
    ]


def test_forbidden_transition_raises() -> None:
    group = new_group()
    with pytest.raises(IllegalGroupTransition, match="Empty to Stable"):
        group._transition(GroupState.STABLE)


# -- invariants under arbitrary interleavings ------------------------------------------------

_OPS = st.lists(
    st.tuples(
        st.sampled_from(
            ["join", "rejoin", "sync", "heartbeat", "leave", "abandon", "stored", "lost", "tick"]
        ),
        st.integers(0, 4),
        st.floats(0.0, 12.0, allow_nan=False),
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(_OPS)
def test_group_invariants_hold_under_any_interleaving(ops: list[tuple[str, int, float]]) -> None:
    group = ClassicGroup("g", GroupConfig(initial_rebalance_delay_ms=1000), random.Random(0))
    parked_joins: set[str] = set()
    parked_syncs: set[str] = set()
    known: list[str] = []
    stored_generations: set[int] = set()
    produced: list[int] = []
    now = 0.0
    for op, who, dt in ops:
        now += dt
        member = known[who % len(known)] if known else ""
        if op == "join":
            out = join(group, now=now, require_known=False)
            if isinstance(out, str):
                known.append(out)
                parked_joins.add(out)
        elif op == "rejoin" and member:
            out = join(group, member, now=now)
            if isinstance(out, str):
                parked_joins.add(out)
        elif op == "sync" and member:
            out_sync = group.sync(
                generation_id=group.generation_id, member_id=member, group_instance_id=None,
                protocol_type=None, protocol_name=None, assignments={member: b"x"}, now=now,
            )  # fmt: skip
            if out_sync is None:
                parked_syncs.add(member)
        elif op == "heartbeat" and member:
            group.heartbeat(
                generation_id=group.generation_id,
                member_id=member,
                group_instance_id=None,
                now=now,
            )
        elif op == "leave" and member:
            group.leave([(member, None)], now)
        elif op == "abandon" and member:
            if member in parked_joins:
                group.abandon_join(member, now)
                parked_joins.discard(member)
            if member in parked_syncs:
                group.abandon_sync(member, now)
                parked_syncs.discard(member)
        elif op in ("stored", "lost"):
            # The coordinator reports each append's outcome; "lost" is a failed append.
            error = ErrorCode.NONE if op == "stored" else ErrorCode.NOT_COORDINATOR
            for write in store_writes(group, now, error):
                produced.append(write.value.generation)
                if error is ErrorCode.NONE:
                    stored_generations.add(write.value.generation)
        else:
            group.on_timer(now)
        for delivery in group.take_deliveries():
            pool = parked_joins if isinstance(delivery, JoinDelivery) else parked_syncs
            # Every delivery answers a request that is really parked, exactly once.
            assert delivery.member_id in pool
            pool.discard(delivery.member_id)
        # Parked requests are exactly the members flagged as awaiting.
        assert parked_joins == {m.member_id for m in group.members.values() if m.awaiting_join}
        assert parked_syncs == {m.member_id for m in group.members.values() if m.awaiting_sync}
        assert (group.leader_id in group.members) if group.members else group.leader_id is None
        assert group.pending_sync <= set(group.members)
        if group.state is GroupState.EMPTY:
            assert not group.members
        if group.state in (GroupState.COMPLETING_REBALANCE, GroupState.STABLE):
            assert group.protocol_name is not None and group.members
            assert not parked_joins
        if group.state is GroupState.STABLE:
            # No assignment goes out before its generation is durable.
            assert group.generation_id in stored_generations
        # Records are produced in generation order, so the log's last one is the newest.
        assert produced == sorted(produced)
        if group.state is GroupState.PREPARING_REBALANCE:
            # A rebalance always has a timer that will end it.
            assert group.next_deadline() is not None
