"""Role targets: what each role kind resolves to, and how the executor acts on and records it.

A recording FaultTarget stands in for the cluster here (it reports leaders, ISRs, the
controller and coordinators as told); the sim and process tests show the same roles
hitting real brokers.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import trio

from history.writer import HistoryWriter
from nemesis.executor import Executor
from nemesis.ops import (
    ClockSkew,
    Kill,
    Pause,
    ResetConnections,
    Restart,
    Schedule,
    ScheduleError,
    StartLinkFault,
    StartPartition,
    StopPartition,
)
from nemesis.roles import Role, minority_size, resolve
from tests.test_nemesis_executor import RecordingTarget, run_schedule, run_virtual

FIVE = ["n1", "n2", "n3", "n4", "n5"]


def target(nodes: list[str] | None = None) -> RecordingTarget:
    return RecordingTarget(
        nodes or ["n1", "n2", "n3"],
        ["c1"],
        leaders={("t1", 0): "n2", ("__consumer_offsets", 7): "n3"},
        isrs={("t1", 0): ["n1", "n2", "n3"]},
        controller="n3",
        coordinators={"g": "n1"},
    )


def test_each_role_kind_resolves_to_its_holders() -> None:
    t = target(FIVE)
    t.isrs[("t1", 0)] = ["n2", "n4", "n5"]
    cases = [
        (Role(kind="leader", log="t1/0"), ["n2"], "leader_of"),
        (Role(kind="followers", log="t1/0"), ["n4", "n5"], "isr_of"),
        (Role(kind="controller"), ["n3"], "controller"),
        (Role(kind="coordinator", group="g"), ["n1"], "coordinator_of"),
        # In-sync followers first, then the others, in cluster order: minority of 5 is 2.
        (Role(kind="minority-with-leader", log="t1/0"), ["n2", "n4"], "leader_of"),
        (Role(kind="minority-without-leader", log="t1/0"), ["n4", "n5"], "leader_of"),
        # No log: the controller counts as the leader.
        (Role(kind="minority-with-leader"), ["n1", "n3"], "controller"),
    ]
    for role, nodes, how in cases:
        found = resolve(role, t)
        assert (found.nodes, found.resolved_by) == (nodes, how), role


def test_a_role_nobody_holds_falls_back_to_its_own_fallback_then_the_ops_nodes() -> None:
    t = target()
    assert resolve(Role(kind="leader", log="t9/0"), t, ["n1"]).nodes == ["n1"]
    found = resolve(Role(kind="leader", log="t9/0", fallback=["n3"]), t, ["n1"])
    assert (found.nodes, found.resolved_by) == (["n3"], "fallback")
    # A leader alone in its ISR has no followers to target.
    t.isrs[("t1", 0)] = ["n2"]
    assert resolve(Role(kind="followers", log="t1/0"), t).nodes == []


def test_minorities_are_strictly_under_half() -> None:
    assert [minority_size(n) for n in (1, 2, 3, 4, 5, 7)] == [1, 1, 1, 1, 2, 3]


def test_a_role_missing_what_it_needs_is_refused_when_the_schedule_loads() -> None:
    for bad in ('{"kind": "leader"}', '{"kind": "coordinator"}', '{"kind": "boss"}',
                '{"kind": "leader", "log": "t1"}'):
        data = ('{"nodes": ["n1", "n2", "n3"], "duration_ms": 10, "ops": [{"f": "kill", '
                f'"at_ms": 0, "role": {bad}}}]}}')
        with pytest.raises(ScheduleError):
            Schedule.from_json(data)


def test_role_ops_act_on_the_holders_at_start_and_record_role_and_nodes() -> None:
    t = target()
    leader = Role(kind="leader", log="t1/0")
    schedule = Schedule(
        nodes=["n1", "n2", "n3"],
        clients=["c1"],
        duration_ms=10_000,
        ops=[
            Kill(at_ms=0, role=Role(kind="coordinator", group="g")),
            Restart(at_ms=1_000, nodes=["n1", "n2", "n3"]),
            Pause(at_ms=2_000, nodes=["n1"], role=Role(kind="controller")),
            ResetConnections(at_ms=3_000, nodes=[], role=leader),
            StartLinkFault(at_ms=4_000, links=[], latency_ms=50.0, role=leader),
            ClockSkew(at_ms=5_000, node="n1", delta_ms=-1_000,
                      role=Role(kind="followers", log="t1/0")),
            StartPartition(at_ms=6_000, shape="role", role=leader, one_way=True, deaf=True),
            StopPartition(at_ms=7_000),
        ],
    )
    events = run_virtual(run_schedule, schedule, t)
    by_f = {e.f: e for e in events if not e.value.get("final")}
    kill = by_f["kill"]
    assert kill.value["nodes"] == ["n1"]
    assert kill.value["role"] == {"kind": "coordinator", "group": "g"}
    assert kill.value["resolved"] == ["n1"] and kill.value["resolved_by"] == "coordinator_of"
    restart = by_f["restart"]
    assert restart.value["nodes"] == ["n1"] and set(restart.value["skipped"]) == {"n2", "n3"}
    assert by_f["pause"].value["nodes"] == ["n3"]
    assert by_f["reset-connections"].value["nodes"] == ["n2"]
    links = {tuple(link) for link in by_f["start-link-fault"].value["links"]}
    assert links == {("n2", x) for x in ("n1", "n3", "c1")} | {
        (x, "n2") for x in ("n1", "n3", "c1")}
    skews = [e for e in events if e.f == "clock-skew"]
    # The ISR's followers of t1/0 (leader n2): n1 and n3, but n3 is paused.
    assert [(e.value["node"], e.error) for e in skews] == [("n1", None), ("n3", "n3 is paused")]
    assert all(e.value["role"] == {"kind": "followers", "log": "t1/0"} for e in skews)
    # Deaf one-way: n2 hears no one (every link into it blocked), everyone still hears n2.
    partition = by_f["start-partition"]
    assert partition.value["grudge"] == {"n2": ["n1", "n3"]}
    assert ("kill", "n1") in t.calls and ("pause", "n3") in t.calls
    assert ("reset_connections", "n2") in t.calls and ("block", "n1", "n2") in t.calls
    assert t.healthy()


def test_the_role_is_resolved_when_the_fault_starts_not_when_scheduled() -> None:
    t = target()
    role = Role(kind="leader", log="t1/0")

    async def scenario() -> list[str]:
        schedule = Schedule(
            nodes=["n1", "n2", "n3"], duration_ms=5_000,
            ops=[Kill(at_ms=1_000, role=role), Kill(at_ms=2_000, role=role)],
        )
        stream = io.BytesIO()
        executor = Executor(t, HistoryWriter(stream), origin=trio.current_time())
        async with trio.open_nursery() as nursery:
            await executor.apply(schedule.ops[0], nursery)
            t.leaders[("t1", 0)] = "n3"  # a new leader was elected meanwhile
            await executor.apply(schedule.ops[1], nursery)
        await executor.heal_everything()
        return [call[1] for call in t.calls if call[0] == "kill"]

    assert run_virtual(scenario) == ["n2", "n3"]


def test_existing_leader_partitions_still_load_and_run() -> None:
    path = Path(__file__).resolve().parent.parent / "examples/schedules/isolate-leader.json"
    schedule = Schedule.read(path)
    events = run_virtual(run_schedule, schedule, target())
    start = next(e for e in events if e.f == "start-partition")
    assert (start.value["isolated"], start.value["resolved_by"]) == ("n2", "leader_of")


def test_a_role_nobody_holds_falls_back_to_the_ops_own_grudge_and_links() -> None:
    nobody = Role(kind="leader", log="t9/0")
    schedule = Schedule(nodes=["n1", "n2", "n3"], clients=["c1"], duration_ms=10_000, ops=[
        StartPartition(at_ms=0, shape="one", grudge={"n3": ["n1"]}, role=nobody),
        StartLinkFault(at_ms=1, links=[("n1", "n2")], latency_ms=5.0, role=nobody),
        StartPartition(at_ms=2, shape="role", role=nobody),
    ])
    events = run_virtual(run_schedule, schedule, target())
    cut, slow, nothing = events[:3]
    assert (cut.value["grudge"], cut.value["resolved_by"]) == ({"n3": ["n1"]}, "fallback")
    assert slow.value["links"] == [["n1", "n2"]]
    assert nothing.error is not None and "nothing was cut" in nothing.error
