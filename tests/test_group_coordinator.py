"""The group coordinator end to end in-process: real PartitionLogs on disk, trio's MockClock.

Every test runs with `autojump_clock` (MockClock(autojump_threshold=0)), so session and
rebalance timeouts of tens of seconds pass instantly and deterministically.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from reference_broker.errors import ErrorCode
from reference_broker.group.coordinator import (
    GroupConfig,
    GroupCoordinator,
    JoinProtocol,
    JoinResult,
    OffsetAndMetadata,
    SyncResult,
)
from reference_broker.log.config import LogConfig
from reference_broker.log.log_manager import LogManager
from reference_broker.os_env import OsStorage

SESSION_MS = 10_000
REBALANCE_MS = 30_000
RANGE = [JoinProtocol("range", b"subscription")]
CONFIG = GroupConfig(offsets_topic_num_partitions=4)


class TrioClock:
    """The node clock as the simulation runs it: epoch milliseconds following trio's clock."""

    def now_ms(self) -> int:
        return 1_700_000_000_000 + int(trio.current_time() * 1000)


@asynccontextmanager
async def running(
    data_dir: Path, config: GroupConfig = CONFIG, seed: int = 0
) -> AsyncIterator[GroupCoordinator]:
    clock = TrioClock()
    logs = LogManager.open(OsStorage(data_dir), clock, LogConfig())
    coordinator = GroupCoordinator(logs, clock, config, random.Random(seed))
    await coordinator.load()
    async with trio.open_nursery() as nursery:
        await nursery.start(coordinator.run)
        yield coordinator
        nursery.cancel_scope.cancel()
    await logs.close()


async def join(
    c: GroupCoordinator,
    member_id: str = "",
    *,
    group: str = "g",
    protocols: list[JoinProtocol] = RANGE,
    instance: str | None = None,
    client: str = "consumer",
) -> JoinResult:
    return await c.join_group(
        group, member_id, instance, "consumer", protocols, SESSION_MS, REBALANCE_MS,
        client, "/127.0.0.1", True,
    )  # fmt: skip


async def member_id_for(c: GroupCoordinator, client: str = "consumer", group: str = "g") -> str:
    """Step one of a v4+ join: the coordinator hands out the member id."""
    first = await join(c, group=group, client=client)
    assert first.error is ErrorCode.MEMBER_ID_REQUIRED
    return first.member_id


async def join_all(c: GroupCoordinator, member_ids: list[str]) -> dict[str, JoinResult]:
    """Every member joins concurrently; returns once the rebalance released them all."""
    results: dict[str, JoinResult] = {}

    async def one(member_id: str) -> None:
        results[member_id] = await join(c, member_id)

    async with trio.open_nursery() as nursery:
        for member_id in member_ids:
            nursery.start_soon(one, member_id)
    return results


async def sync_all(
    c: GroupCoordinator, generation: int, leader: str, members: list[str]
) -> dict[str, SyncResult]:
    """Followers sync first (and wait), then the leader hands out 'p<i>' assignments."""
    results: dict[str, SyncResult] = {}
    assignment = {m: f"p{i}".encode() for i, m in enumerate(members)}

    async def one(member_id: str, assignments: dict[str, bytes]) -> None:
        results[member_id] = await c.sync_group(
            "g", generation, member_id, None, "consumer", "range", assignments
        )

    async with trio.open_nursery() as nursery:
        for m in members:
            if m != leader:
                nursery.start_soon(one, m, {})
        await trio.sleep(1)
        assert not results, "followers must wait for the leader's assignment"
        nursery.start_soon(one, leader, assignment)
    return results


async def stable(c: GroupCoordinator, n: int) -> tuple[list[str], str]:
    ids = [await member_id_for(c, f"consumer-{i}") for i in range(n)]
    joined = await join_all(c, ids)
    leader = joined[ids[0]].leader
    synced = await sync_all(c, 1, leader, ids)
    assert all(r.error is ErrorCode.NONE for r in synced.values())
    return ids, leader


def beat(c: GroupCoordinator, member_id: str, generation: int) -> ErrorCode:
    return c.heartbeat("g", generation, member_id, None)


async def test_two_members_join_one_generation_leader_gets_metadata_both_get_assignments(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with running(tmp_path) as c:
        a = await member_id_for(c, "consumer-a")
        b = await member_id_for(c, "consumer-b")
        joined = await join_all(c, [a, b])
        # group.initial.rebalance.delay.ms (3s) for a new group, extended once because a
        # second member arrived during the first delay.
        assert trio.current_time() == 6.0
        assert {r.error for r in joined.values()} == {ErrorCode.NONE}
        assert {r.generation_id for r in joined.values()} == {1}
        assert {r.protocol_name for r in joined.values()} == {"range"}
        leader = joined[a].leader
        assert joined[b].leader == leader
        follower = b if leader == a else a
        assert {m.member_id for m in joined[leader].members} == {a, b}
        assert {m.metadata for m in joined[leader].members} == {b"subscription"}
        assert joined[follower].members == []
        synced = await sync_all(c, 1, leader, [a, b])
        assert synced[a].assignment == b"p0" and synced[b].assignment == b"p1"
        assert {r.protocol_name for r in synced.values()} == {"range"}
        assert beat(c, a, 1) is ErrorCode.NONE and beat(c, b, 1) is ErrorCode.NONE
        description = c.describe_group("g")
        assert description.state == "Stable"
        assert {m.assignment for m in description.members} == {b"p0", b"p1"}
        assert c.list_groups() == [("g", "consumer")]


async def test_member_ids_come_from_the_seeded_rng(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    ids = []
    for run in range(2):
        async with running(tmp_path / f"run{run}", seed=42) as c:
            ids.append(await member_id_for(c, "my-client"))
    assert ids[0] == ids[1] and ids[0].startswith("my-client-")


async def test_third_member_triggers_rebalance_seen_by_heartbeats(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with running(tmp_path) as c:
        (a, b), _ = await stable(c, 2)
        c_id = await member_id_for(c, "consumer-c")
        async with trio.open_nursery() as nursery:
            third: list[JoinResult] = []

            async def third_joins() -> None:
                third.append(await join(c, c_id))

            nursery.start_soon(third_joins)
            await trio.sleep(1)
            assert not third, "the newcomer waits for the rebalance"
            assert beat(c, a, 1) is ErrorCode.REBALANCE_IN_PROGRESS
            assert beat(c, b, 1) is ErrorCode.REBALANCE_IN_PROGRESS
            rejoined = await join_all(c, [a, b])
        assert {r.generation_id for r in [*rejoined.values(), *third]} == {2}
        leader = rejoined[a].leader
        leader_view = rejoined[leader] if leader in rejoined else third[0]
        assert {m.member_id for m in leader_view.members} == {a, b, c_id}
        assert beat(c, a, 1) is ErrorCode.ILLEGAL_GENERATION


async def test_member_that_stops_heartbeating_expires_after_session_timeout(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with running(tmp_path) as c:
        (a, b), _ = await stable(c, 2)
        last_b_activity = trio.current_time()
        errors: list[tuple[float, ErrorCode]] = []
        while True:  # only a heartbeats, every 3s
            await trio.sleep(3)
            error = beat(c, a, 1)
            errors.append((trio.current_time(), error))
            if error is not ErrorCode.NONE:
                break
        when, error = errors[-1]
        assert error is ErrorCode.REBALANCE_IN_PROGRESS
        assert when - last_b_activity >= SESSION_MS / 1000
        assert when - last_b_activity < SESSION_MS / 1000 + 3
        assert c.describe_group("g").state == "PreparingRebalance"
        rejoined = await join(c, a)  # a alone: the rebalance completes at once
        assert (rejoined.generation_id, [m.member_id for m in rejoined.members]) == (2, [a])
        assert beat(c, b, 1) is ErrorCode.UNKNOWN_MEMBER_ID


async def test_member_that_does_not_rejoin_is_removed_after_rebalance_timeout(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with running(tmp_path) as c:
        (a, b), leader = await stable(c, 2)
        follower = b if leader == a else a
        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            rejoined: list[JoinResult] = []

            async def leader_rejoins() -> None:
                rejoined.append(await join(c, leader))
                nursery.cancel_scope.cancel()

            nursery.start_soon(leader_rejoins)
            # The follower stays alive (heartbeats) but never rejoins: a stuck poll loop.
            while not rejoined:
                await trio.sleep(2)
                beat(c, follower, 1)
        assert trio.current_time() - start == REBALANCE_MS / 1000
        assert rejoined[0].generation_id == 2
        assert [m.member_id for m in rejoined[0].members] == [leader]
        assert beat(c, follower, 1) is ErrorCode.UNKNOWN_MEMBER_ID


async def test_leave_triggers_a_rebalance(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with running(tmp_path) as c:
        (a, b), _ = await stable(c, 2)
        top, per_member = c.leave_group("g", [(b, None), ("stranger", None)])
        assert top is ErrorCode.NONE
        assert per_member == [
            (b, None, ErrorCode.NONE),
            ("stranger", None, ErrorCode.UNKNOWN_MEMBER_ID),
        ]
        assert beat(c, a, 1) is ErrorCode.REBALANCE_IN_PROGRESS
        rejoined = await join(c, a)
        assert rejoined.generation_id == 2 and rejoined.leader == a
        assert c.leave_group("unknown-group", [(a, None)])[1] == [
            (a, None, ErrorCode.UNKNOWN_MEMBER_ID)
        ]


async def test_member_id_required_flow(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with running(tmp_path) as c:
        first = await join(c, client="rdkafka")
        assert first.error is ErrorCode.MEMBER_ID_REQUIRED
        assert first.member_id.startswith("rdkafka-") and first.generation_id == -1
        assert (await join(c, "not-handed-out")).error is ErrorCode.UNKNOWN_MEMBER_ID
        second = await join(c, first.member_id)
        assert (second.error, second.member_id, second.generation_id) == (
            ErrorCode.NONE,
            first.member_id,
            1,
        )
        unknown_group = await join(c, first.member_id, group="other")
        assert unknown_group.error is ErrorCode.UNKNOWN_MEMBER_ID


async def test_protocol_selection_and_inconsistent_group_protocol(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    rr, rng, coop = (
        JoinProtocol("roundrobin", b"r"),
        JoinProtocol("range", b"g"),
        JoinProtocol("cooperative-sticky", b"c"),
    )
    async with running(tmp_path) as c:
        ids = [await member_id_for(c, f"c{i}") for i in range(3)]
        results: dict[str, JoinResult] = {}

        async def one(member_id: str, protocols: list[JoinProtocol]) -> None:
            results[member_id] = await join(c, member_id, protocols=protocols)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(one, ids[0], [coop, rng, rr])
            nursery.start_soon(one, ids[1], [rr, rng])
            nursery.start_soon(one, ids[2], [rng, rr, coop])
        # cooperative-sticky is not supported by all; range has 2 first-choice votes.
        assert {r.protocol_name for r in results.values()} == {"range"}
        mismatch = await c.join_group(
            "g", "", None, "connect", [rng], SESSION_MS, REBALANCE_MS, "x", "h", True
        )
        assert mismatch.error is ErrorCode.INCONSISTENT_GROUP_PROTOCOL
        no_common = await join(c, protocols=[coop])
        assert no_common.error is ErrorCode.INCONSISTENT_GROUP_PROTOCOL


async def test_invalid_requests_get_kafka_errors(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with running(tmp_path) as c:
        bad_session = await c.join_group(
            "g", "", None, "consumer", RANGE, 100, REBALANCE_MS, "x", "h", True
        )
        assert bad_session.error is ErrorCode.INVALID_SESSION_TIMEOUT
        no_group = await c.join_group(
            "", "", None, "consumer", RANGE, SESSION_MS, REBALANCE_MS, "x", "h", True
        )
        assert no_group.error is ErrorCode.INVALID_GROUP_ID
        assert c.heartbeat("nope", 1, "m", None) is ErrorCode.UNKNOWN_MEMBER_ID
        sync = await c.sync_group("nope", 1, "m", None, None, None, {})
        assert sync.error is ErrorCode.UNKNOWN_MEMBER_ID


async def test_requests_before_load_are_told_to_retry(tmp_path: Path) -> None:
    clock = TrioClock()
    logs = LogManager.open(OsStorage(tmp_path), clock, LogConfig())
    c = GroupCoordinator(logs, clock, CONFIG, random.Random(0))
    assert (await join(c)).error is ErrorCode.COORDINATOR_LOAD_IN_PROGRESS
    committed = await c.commit_offsets("g", -1, "", None, {("t", 0): OffsetAndMetadata(1, -1, "")})
    assert committed == {("t", 0): ErrorCode.COORDINATOR_LOAD_IN_PROGRESS}
    assert c.fetch_offsets("g", None)[0] is ErrorCode.COORDINATOR_LOAD_IN_PROGRESS
    await logs.close()


async def test_cancelled_join_leaves_the_group_consistent(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with running(tmp_path) as c:
        (a, b), leader = await stable(c, 2)
        follower = b if leader == a else a
        newcomer = await member_id_for(c, "newcomer")
        with trio.move_on_after(1):  # the newcomer's connection drops while it is parked
            await join(c, newcomer)
        assert newcomer not in {m.member_id for m in c.describe_group("g").members}
        # A follower's rejoin is cancelled too: it must not count as rejoined.
        with trio.move_on_after(1):
            await join(c, follower, protocols=[JoinProtocol("range", b"changed")])
        async with trio.open_nursery() as nursery:
            leader_result: list[JoinResult] = []

            async def leader_rejoins() -> None:
                leader_result.append(await join(c, leader))

            nursery.start_soon(leader_rejoins)
            await trio.sleep(1)
            assert not leader_result, "the rebalance waits for the follower"
            follower_result = await join(c, follower)  # it reconnects and rejoins
        assert follower_result.generation_id == leader_result[0].generation_id == 2
        assert {m.member_id for m in leader_result[0].members} == {a, b}


async def test_cancelled_sync_restarts_the_session_timer(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with running(tmp_path) as c:
        a = await member_id_for(c, "a")
        b = await member_id_for(c, "b")
        joined = await join_all(c, [a, b])
        leader = joined[a].leader
        follower = b if leader == a else a
        with trio.move_on_after(1):
            await c.sync_group("g", 1, follower, None, None, None, {})
        # The leader syncs; the follower, gone, never heartbeats and expires.
        leader_sync = await c.sync_group("g", 1, leader, None, None, None, {leader: b"x"})
        assert leader_sync.error is ErrorCode.NONE and leader_sync.assignment == b"x"
        for _ in range(4):
            await trio.sleep(3)
            last = beat(c, leader, 1)
        assert last is ErrorCode.REBALANCE_IN_PROGRESS
        assert beat(c, follower, 1) is ErrorCode.UNKNOWN_MEMBER_ID


async def test_static_member_is_accepted_and_replaces_itself_without_rebalance(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with running(tmp_path) as c:
        first = await join(c, instance="pod-0")
        assert first.error is ErrorCode.NONE and first.member_id.startswith("pod-0-")
        await c.sync_group("g", 1, first.member_id, "pod-0", None, None, {first.member_id: b"a"})
        again = await join(c, instance="pod-0")  # restarted process, same instance id
        assert (again.error, again.generation_id) == (ErrorCode.NONE, 1)
        synced = await c.sync_group("g", 1, again.member_id, "pod-0", None, None, {})
        assert synced.assignment == b"a"
        assert c.heartbeat("g", 1, first.member_id, "pod-0") is ErrorCode.FENCED_INSTANCE_ID


async def test_commit_with_wrong_generation_is_illegal_generation(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with running(tmp_path) as c:
        (a, _), _ = await stable(c, 2)
        offsets = {("t", 0): OffsetAndMetadata(10, 0, "")}
        assert await c.commit_offsets("g", 0, a, None, offsets) == {
            ("t", 0): ErrorCode.ILLEGAL_GENERATION
        }
        assert await c.commit_offsets("g", 1, "stranger", None, offsets) == {
            ("t", 0): ErrorCode.UNKNOWN_MEMBER_ID
        }
        assert await c.commit_offsets("g", -1, "", None, offsets) == {
            ("t", 0): ErrorCode.UNKNOWN_MEMBER_ID
        }
        assert await c.commit_offsets("new-group", 3, a, None, offsets) == {
            ("t", 0): ErrorCode.ILLEGAL_GENERATION
        }
        assert c.fetch_offsets("g", [("t", 0)]) == (ErrorCode.NONE, {("t", 0): None})


async def test_commit_between_join_and_sync_is_rebalance_in_progress(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with running(tmp_path) as c:
        a = await member_id_for(c, "a")
        joined = await join(c, a)
        assert c.describe_group("g").state == "CompletingRebalance"
        result = await c.commit_offsets(
            "g", joined.generation_id, a, None, {("t", 0): OffsetAndMetadata(1, 0, "")}
        )
        assert result == {("t", 0): ErrorCode.REBALANCE_IN_PROGRESS}


async def test_commit_fetch_round_trip(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with running(tmp_path) as c:
        (a, b), _ = await stable(c, 2)
        first = {("t", 0): OffsetAndMetadata(10, 3, "m0"), ("t", 1): OffsetAndMetadata(20, 3, None)}
        assert await c.commit_offsets("g", 1, a, None, first) == dict.fromkeys(
            first, ErrorCode.NONE
        )
        await c.commit_offsets("g", 1, b, None, {("t", 0): OffsetAndMetadata(15, 4, "m1")})
        error, fetched = c.fetch_offsets("g", [("t", 0), ("t", 1), ("t", 2)])
        assert error is ErrorCode.NONE
        assert fetched[("t", 2)] is None
        t0, t1 = fetched[("t", 0)], fetched[("t", 1)]
        assert t0 is not None and (t0.offset, t0.leader_epoch, t0.metadata) == (15, 4, "m1")
        assert t1 is not None and (t1.offset, t1.metadata) == (20, None)
        assert t0.commit_timestamp_ms == TrioClock().now_ms()
        assert set(c.fetch_offsets("g", None)[1]) == {("t", 0), ("t", 1)}
        too_big = await c.commit_offsets(
            "g", 1, a, None,
            {("t", 0): OffsetAndMetadata(99, 0, "x" * 4097), ("t", 5): OffsetAndMetadata(5, 0, "")},
        )  # fmt: skip
        assert too_big == {
            ("t", 0): ErrorCode.OFFSET_METADATA_TOO_LARGE,
            ("t", 5): ErrorCode.NONE,
        }
        t0_after = c.fetch_offsets("g", [("t", 0)])[1][("t", 0)]
        assert t0_after is not None and t0_after.offset == 15


async def test_simple_commit_into_unknown_group_creates_an_empty_group(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with running(tmp_path) as c:
        result = await c.commit_offsets(
            "loner", -1, "", None, {("t", 0): OffsetAndMetadata(7, -1, "")}
        )
        assert result == {("t", 0): ErrorCode.NONE}
        assert c.describe_group("loner").state == "Empty"
        stored = c.fetch_offsets("loner", [("t", 0)])[1][("t", 0)]
        assert stored is not None and stored.offset == 7


async def test_offsets_survive_reopening_the_log(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with running(tmp_path) as c:
        ids, _ = await stable(c, 2)
        a = ids[0]
        await c.commit_offsets("g", 1, a, None, {("t", 0): OffsetAndMetadata(5, 1, "x")})
        await c.commit_offsets("g", 1, a, None, {("t", 0): OffsetAndMetadata(8, 1, "y")})
        await c.commit_offsets("g2", -1, "", None, {("u", 3): OffsetAndMetadata(42, -1, "")})
    async with running(tmp_path) as reopened:
        t0 = reopened.fetch_offsets("g", [("t", 0)])[1][("t", 0)]
        assert t0 is not None and (t0.offset, t0.leader_epoch, t0.metadata) == (8, 1, "y")
        u3 = reopened.fetch_offsets("g2", None)[1][("u", 3)]
        assert u3 is not None and u3.offset == 42
        # The group comes back as stored (Kafka's loadGroup): Stable, same members.
        described = reopened.describe_group("g")
        assert described.state == "Stable"
        assert {m.member_id for m in described.members} == set(ids)
        assert sorted(g for g, _ in reopened.list_groups()) == ["g", "g2"]


async def test_delete_groups_removes_empty_groups_and_their_offsets_for_good(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with running(tmp_path) as c:
        await c.commit_offsets("gone", -1, "", None, {("t", 0): OffsetAndMetadata(5, -1, "")})
        await stable(c, 1)
        assert await c.delete_groups(["gone", "g", "never"]) == {
            "gone": ErrorCode.NONE,
            "g": ErrorCode.NON_EMPTY_GROUP,
            "never": ErrorCode.GROUP_ID_NOT_FOUND,
        }
        assert c.fetch_offsets("gone", [("t", 0)])[1] == {("t", 0): None}
    async with running(tmp_path) as reopened:
        assert reopened.fetch_offsets("gone", [("t", 0)])[1] == {("t", 0): None}
        assert "gone" not in {g for g, _ in reopened.list_groups()}


# -- group metadata across a coordinator restart ---------------------------------------------


async def generations(c: GroupCoordinator, member_id: str, first: int, last: int) -> None:
    """One member runs rebalances `first`..`last`, leading and assigning itself each time."""
    for generation in range(first, last + 1):
        joined = await join(c, member_id)
        assert (joined.error, joined.generation_id) == (ErrorCode.NONE, generation)
        synced = await c.sync_group(
            "g", generation, member_id, None, "consumer", "range",
            {member_id: f"gen{generation}".encode()},
        )  # fmt: skip
        assert (synced.error, synced.assignment) == (ErrorCode.NONE, f"gen{generation}".encode())


async def test_generation_survives_a_restart_and_the_next_rebalance_is_the_next_generation(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with running(tmp_path) as c:
        member = await member_id_for(c)
        await generations(c, member, 1, 3)
    async with running(tmp_path) as reopened:
        # Kafka's loadGroup: the member is back, Stable, still in generation 3.
        described = reopened.describe_group("g")
        assert described.state == "Stable"
        assert [(m.member_id, m.assignment) for m in described.members] == [(member, b"gen3")]
        assert beat(reopened, member, 3) is ErrorCode.NONE
        assert beat(reopened, member, 2) is ErrorCode.ILLEGAL_GENERATION
        await generations(reopened, member, 4, 4)
    async with running(tmp_path) as again:
        assert beat(again, member, 4) is ErrorCode.NONE


async def test_restored_member_that_never_heartbeats_expires_and_generations_move_on(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with running(tmp_path) as c:
        gone = await member_id_for(c, "consumer-gone")
        await generations(c, gone, 1, 3)
    async with running(tmp_path) as reopened:
        start = trio.current_time()
        newcomer = await member_id_for(reopened, "consumer-new")
        # The rebalance waits for the restored member until its session expires.
        joined = await join(reopened, newcomer)
        assert trio.current_time() - start >= SESSION_MS / 1000
        assert (joined.error, joined.generation_id, joined.leader) == (
            ErrorCode.NONE, 4, newcomer,
        )  # fmt: skip
        assert beat(reopened, gone, 3) is ErrorCode.UNKNOWN_MEMBER_ID


async def test_empty_group_keeps_its_generation_across_a_restart(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with running(tmp_path) as c:
        member = await member_id_for(c)
        await generations(c, member, 1, 2)
        await c.commit_offsets("g", 2, member, None, {("t", 0): OffsetAndMetadata(3, -1, "")})
        assert c.leave_group("g", [(member, None)])[0] is ErrorCode.NONE
        await trio.sleep(1)  # the timer loop completes the rebalance nobody rejoins
        # Leaving completes a rebalance with nobody in it: generation 3, Empty.
        assert c.describe_group("g").state == "Empty"
    async with running(tmp_path) as reopened:
        assert reopened.describe_group("g").state == "Empty"
        assert reopened.list_groups() == [("g", "consumer")]
        newcomer = await member_id_for(reopened)
        await generations(reopened, newcomer, 4, 4)
        committed = reopened.fetch_offsets("g", [("t", 0)])[1][("t", 0)]
        assert committed is not None and committed.offset == 3


async def test_deleted_group_stays_deleted_across_a_restart(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with running(tmp_path) as c:
        member = await member_id_for(c)
        await generations(c, member, 1, 2)
        c.leave_group("g", [(member, None)])
        await trio.sleep(1)
        assert await c.delete_groups(["g"]) == {"g": ErrorCode.NONE}
    async with running(tmp_path) as reopened:
        assert reopened.list_groups() == []
        assert reopened.describe_group("g").state == "Dead"
        # A group created under the same name afterwards is a new group.
        fresh = await member_id_for(reopened)
        await generations(reopened, fresh, 1, 1)


async def test_assignment_is_durable_before_the_leader_sees_it_with_flush_every_message(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    storage = OsStorage(tmp_path, volatile_until_fsync=True)
    clock = TrioClock()
    logs = LogManager.open(storage, clock, LogConfig())
    c = GroupCoordinator(
        logs, clock, CONFIG, random.Random(0),
        offsets_log_config=LogConfig(flush_messages=1, retention_ms=-1),
    )  # fmt: skip
    await c.load()
    async with trio.open_nursery() as nursery:
        await nursery.start(c.run)
        member = await member_id_for(c)
        await generations(c, member, 1, 2)
        nursery.cancel_scope.cancel()
    # Power cut straight after the SyncGroup answer: only fsynced bytes survive.
    for log in logs.all():
        log.close_now()
    del storage
    async with running(tmp_path) as reopened:
        assert beat(reopened, member, 2) is ErrorCode.NONE
        await generations(reopened, member, 3, 3)
