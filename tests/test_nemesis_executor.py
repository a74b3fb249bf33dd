"""The executor makes exactly the calls a schedule says, records them, and heals exactly.

The target here is a small recording class: the thing under test is the executor, and
the recorder both logs every call (with trio time) and refuses calls that make no sense
for the state it is in (restarting a live node, pausing a dead one), so a wrong executor
fails loudly.
"""

from __future__ import annotations

import io
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import msgspec
import pytest
import trio
import trio.testing

from history.model import NemesisEvent
from history.writer import HistoryWriter
from nemesis import grudge as grudges
from nemesis.disk import plan_damage
from nemesis.executor import Executor, execute
from nemesis.generate import generate
from nemesis.ops import (
    AnyFaultOp,
    ClockReset,
    ClockSkew,
    ClockStrobe,
    CorruptFiles,
    Damage,
    Kill,
    LeaderTarget,
    Pause,
    PowerLoss,
    ResetConnections,
    Restart,
    Resume,
    Schedule,
    ScheduleError,
    StartDiskFault,
    StartLinkFault,
    StartPartition,
    StopDiskFault,
    StopLinkFault,
    StopPartition,
)
from nemesis.target import DiskFault, FileDamage, LinkFault, NodeWontStartError

NODES = ["n1", "n2", "n3", "n4", "n5"]
CLIENTS = ["c1", "c2"]
Call = tuple[Any, ...]


class RecordingTarget:
    """A FaultTarget that records each call and checks it against the cluster's state."""

    def __init__(
        self,
        nodes: Sequence[str] = NODES,
        clients: Sequence[str] = CLIENTS,
        *,
        leaders: dict[tuple[str, int], str] | None = None,
        controller: str | None = None,
        isrs: dict[tuple[str, int], list[str]] | None = None,
        coordinators: dict[str, str] | None = None,
        txn_coordinators: dict[str, str] | None = None,
    ) -> None:
        self.isrs = isrs or {}
        self.coordinators = coordinators or {}
        self.txn_coordinators = txn_coordinators or {}
        self.paused_clients: set[str] = set()
        self._nodes = list(nodes)
        self._clients = list(clients)
        self.leaders = leaders or {}
        self._controller = controller
        self.calls: list[Call] = []
        self.times: list[float] = []
        self.blocked: set[tuple[str, str]] = set()
        self.faults: dict[tuple[str, str], LinkFault] = {}
        self.down: set[str] = set()
        self.paused: set[str] = set()
        self.clock_ms: dict[str, int] = {}
        self.files: dict[str, int] = {"t1-0/00000000000000000000.log": 500,
                                      "t1-0/high-watermark.checkpoint": 12}
        self.refusing: dict[str, str] = {}  # node -> why its broker will not start

    @property
    def nodes(self) -> Sequence[str]:
        return self._nodes

    @property
    def clients(self) -> Sequence[str]:
        return self._clients

    def _log(self, *call: Any) -> None:
        self.calls.append(call)
        self.times.append(trio.current_time())

    def _endpoint(self, name: str) -> None:
        assert name in self._nodes or name in self._clients, f"unknown endpoint {name}"

    async def block(self, src: str, dst: str) -> None:
        self._endpoint(src)
        self._endpoint(dst)
        assert not (src in self._clients and dst in self._clients), "client-client link"
        self._log("block", src, dst)
        self.blocked.add((src, dst))

    async def unblock(self, src: str, dst: str) -> None:
        assert (src, dst) in self.blocked, f"unblock of open link {src}->{dst}"
        self._log("unblock", src, dst)
        self.blocked.discard((src, dst))

    async def heal_network(self) -> None:
        self._log("heal_network")
        self.blocked.clear()
        self.faults.clear()

    async def set_link_fault(self, src: str, dst: str, fault: LinkFault | None) -> None:
        self._log("set_link_fault", src, dst, fault)
        if fault is None:
            assert (src, dst) in self.faults, f"restore of healthy link {src}->{dst}"
            del self.faults[(src, dst)]
        else:
            self.faults[(src, dst)] = fault

    async def reset_connections(self, node: str) -> None:
        self._log("reset_connections", node)

    async def kill(self, node: str) -> None:
        assert node not in self.down and node not in self.paused, f"kill of {node}"
        self._log("kill", node)
        self.down.add(node)

    async def power_loss(self, node: str) -> None:
        assert node not in self.down and node not in self.paused, f"power loss of {node}"
        self._log("power_loss", node)
        self.down.add(node)

    async def restart(self, node: str) -> None:
        assert node in self.down, f"restart of live {node}"
        await trio.sleep(0.5)  # a restart takes a while: it returns once the node serves
        if node in self.refusing:
            raise NodeWontStartError(f"{node} did not start: {self.refusing[node]}")
        self._log("restart", node)
        self.down.discard(node)

    async def pause(self, node: str) -> None:
        assert node not in self.down and node not in self.paused, f"pause of {node}"
        self._log("pause", node)
        self.paused.add(node)

    async def resume(self, node: str) -> None:
        assert node in self.paused, f"resume of running {node}"
        self._log("resume", node)
        self.paused.discard(node)

    async def bump_clock(self, node: str, delta_ms: int) -> None:
        assert node not in self.down, f"clock bump of dead {node}"
        self._log("bump_clock", node, delta_ms)
        self.clock_ms[node] = self.clock_ms.get(node, 0) + delta_ms

    async def reset_clock(self, node: str) -> None:
        assert node not in self.down, f"clock reset of dead {node}"
        self._log("reset_clock", node)
        self.clock_ms.pop(node, None)

    def leader_of(self, topic: str, partition: int) -> str | None:
        return self.leaders.get((topic, partition))

    def controller(self) -> str | None:
        return self._controller

    def isr_of(self, topic: str, partition: int) -> Sequence[str]:
        return self.isrs.get((topic, partition), [])

    def coordinator_of(self, group: str) -> str | None:
        return self.coordinators.get(group)

    def txn_coordinator_of(self, transactional_id: str) -> str | None:
        return self.txn_coordinators.get(transactional_id)

    async def pause_client(self, client: str) -> None:
        assert client in self._clients and client not in self.paused_clients, client
        self._log("pause_client", client)
        self.paused_clients.add(client)

    async def resume_client(self, client: str) -> None:
        assert client in self.paused_clients, f"resume of running client {client}"
        self._log("resume_client", client)
        self.paused_clients.discard(client)

    def is_running(self, node: str) -> bool:
        return node not in self.down

    def stored_files(self, node: str) -> dict[str, int]:
        return dict(sorted(self.files.items()))

    async def damage_file(self, node: str, path: str, damage: FileDamage) -> None:
        assert node in self.down, f"damage to a file of live {node}"
        self._log("damage_file", node, path, damage)

    async def set_disk_fault(self, node: str, fault: DiskFault | None) -> None:
        self._log("set_disk_fault", node, fault)

    def healthy(self) -> bool:
        return not (
            self.blocked or self.faults or self.down or self.paused or any(self.clock_ms.values())
            or self.paused_clients
        )


def run_virtual(fn: Any, *args: Any) -> Any:
    """Run an async function under an autojumping MockClock, returning its result."""
    return trio.run(fn, *args, clock=trio.testing.MockClock(autojump_threshold=0))


def events_of(stream: io.BytesIO) -> list[NemesisEvent]:
    decoder = msgspec.json.Decoder(NemesisEvent)
    return [decoder.decode(line) for line in stream.getvalue().splitlines()]


async def run_schedule(schedule: Schedule, target: RecordingTarget) -> list[NemesisEvent]:
    stream = io.BytesIO()
    await execute(schedule, target, HistoryWriter(stream), origin=trio.current_time())
    return events_of(stream)


def test_each_op_makes_exactly_its_calls_and_writes_one_event() -> None:
    grudge = {"n1": ["n2", "n3"], "n2": ["n1"], "n3": ["n1"]}
    link = LinkFault(latency_ms=50.0, jitter_ms=10.0)
    schedule = Schedule(
        nodes=NODES,
        clients=CLIENTS,
        duration_ms=60_000,
        ops=[
            StartPartition(at_ms=1_000, shape="one", grudge=grudge),
            StopPartition(at_ms=2_000),
            StartLinkFault(at_ms=3_000, links=[("n1", "n2"), ("c1", "n1")], latency_ms=50.0,
                           jitter_ms=10.0),
            StopLinkFault(at_ms=4_000),
            ResetConnections(at_ms=5_000, nodes=["n4"]),
            Kill(at_ms=6_000, nodes=["n1", "n2"]),
            Restart(at_ms=7_000, nodes=["n1", "n2"]),
            Pause(at_ms=8_000, nodes=["n3"]),
            Resume(at_ms=9_000, nodes=["n3"]),
            PowerLoss(at_ms=10_000, nodes=NODES),
            Restart(at_ms=11_000, nodes=NODES),
            ClockSkew(at_ms=12_000, node="n5", delta_ms=-4096),
            ClockReset(at_ms=13_000, nodes=["n5"]),
        ],
    )
    target = RecordingTarget()
    events = run_virtual(run_schedule, schedule, target)

    # {dst: [src...]}: n1 hears neither n2 nor n3, and neither of them hears n1.
    cut = [("n1", "n2"), ("n1", "n3"), ("n2", "n1"), ("n3", "n1")]
    expected: list[list[Call]] = [
        [("block", *link) for link in cut],
        [("unblock", *link) for link in cut],
        [("set_link_fault", "n1", "n2", link), ("set_link_fault", "c1", "n1", link)],
        [("set_link_fault", "c1", "n1", None), ("set_link_fault", "n1", "n2", None)],
        [("reset_connections", "n4")],
        [("kill", "n1"), ("kill", "n2")],
        [("restart", "n1"), ("restart", "n2")],
        [("pause", "n3")],
        [("resume", "n3")],
        [("power_loss", n) for n in NODES],
        [("restart", n) for n in NODES],
        [("bump_clock", "n5", -4096)],
        [("reset_clock", "n5")],
    ]
    calls = iter(target.calls)
    for group in expected:
        made = [next(calls) for _ in group]
        assert Counter(made) == Counter(group)
    assert next(calls, None) is None, "no calls beyond the schedule's, no final heal needed"

    assert [e.f for e in events] == [op.__struct_config__.tag for op in schedule.ops]
    assert all(e.process == "nemesis" and e.type == "info" and e.error is None for e in events)
    # Each event is written once its action is done; a restart takes 0.5 s (virtual).
    restart_lag = {6: 500_000_000, 10: 500_000_000}
    assert [e.time for e in events] == [
        op.at_ms * 1_000_000 + restart_lag.get(i, 0) for i, op in enumerate(schedule.ops)
    ]
    assert events[0].value == {"shape": "one", "one_way": False, "grudge": grudge}
    assert events[2].value["links"] == [["c1", "n1"], ["n1", "n2"]]
    assert events[5].value == {"nodes": ["n1", "n2"]}
    assert events[9].value == {"nodes": NODES}
    assert events[11].value == {"node": "n5", "delta_ms": -4096}
    assert target.healthy()


def test_final_heal_undoes_exactly_what_is_still_broken() -> None:
    grudge = grudges.to_json(grudges.complete_grudge([["n1", "n2"], ["n3", "n4", "n5"]]))
    schedule = Schedule(
        nodes=NODES,
        clients=CLIENTS,
        duration_ms=20_000,
        recovery_ms=5_000,
        ops=[
            StartPartition(at_ms=1_000, shape="majority", grudge=grudge),
            StartLinkFault(at_ms=2_000, links=[("n4", "n5")], bandwidth_bytes_per_s=1000),
            Kill(at_ms=3_000, nodes=["n5"]),
            Pause(at_ms=4_000, nodes=["n1", "n2"]),
            ClockSkew(at_ms=5_000, node="n3", delta_ms=100),
        ],
    )
    target = RecordingTarget()

    async def scenario() -> tuple[list[NemesisEvent], float]:
        start = trio.current_time()
        events = await run_schedule(schedule, target)
        return events, trio.current_time() - start

    events, elapsed = run_virtual(scenario)
    heal_calls = target.calls[len(grudges.links(grudges.from_json(grudge))) + 1 + 1 + 2 + 1 :]
    assert Counter(heal_calls) == Counter(
        [("unblock", s, d) for s, d in grudges.links(grudges.from_json(grudge))]
        + [("set_link_fault", "n4", "n5", None), ("resume", "n1"), ("resume", "n2"),
           ("restart", "n5"), ("reset_clock", "n3")]
    )
    assert "heal_network" not in {c[0] for c in target.calls}
    assert target.healthy()
    final = [e for e in events if e.value.get("final")]
    assert [e.f for e in final] == [
        "stop-partition", "stop-link-fault", "resume", "restart", "clock-reset"
    ]
    assert final[0].time == 20_000_000_000
    assert elapsed == pytest.approx(25.0), "the run ends after the recovery period"


def test_leader_partition_isolates_whoever_leads_when_it_starts() -> None:
    def start(leader: LeaderTarget) -> StartPartition:
        return StartPartition(at_ms=0, shape="leader", clients=["c1"], leader=leader)

    cases = [
        (LeaderTarget(log="t0/1", fallback="n5"), {("t0", 1): "n2"}, None, "n2", "leader_of"),
        (LeaderTarget(log=None, fallback="n5"), {}, "n4", "n4", "controller"),
        (LeaderTarget(log="t0/1", fallback="n5"), {}, "n4", "n5", "fallback"),
    ]
    for leader, leaders, controller, isolated, how in cases:
        target = RecordingTarget(leaders=leaders, controller=controller)
        schedule = Schedule(nodes=NODES, clients=CLIENTS, duration_ms=1_000,
                            ops=[start(leader), StopPartition(at_ms=500)])
        events = run_virtual(run_schedule, schedule, target)
        value = events[0].value
        assert (value["isolated"], value["resolved_by"]) == (isolated, how)
        expected = grudges.leader_grudge(isolated, NODES, clients=["c1"])
        blocked = {c[1:] for c in target.calls if c[0] == "block"}
        assert blocked == set(grudges.links(expected))
        assert value["grudge"] == grudges.to_json(expected)
        # c1 stays with the majority, so the isolated leader cannot hear it.
        assert "c1" in value["grudge"][isolated]
        assert target.healthy()


def test_strobe_flips_the_clock_every_period_then_leaves_it_in_step() -> None:
    op = ClockStrobe(at_ms=1_000, node="n2", delta_ms=64, period_ms=100, duration_ms=450)
    target = RecordingTarget()
    schedule = Schedule(nodes=NODES, duration_ms=5_000, ops=[op])
    events = run_virtual(run_schedule, schedule, target)
    # Flips at 1.0, 1.1, ... while now < 1.45: three bump/reset pairs.
    assert target.calls == [("bump_clock", "n2", 64), ("reset_clock", "n2")] * 3
    assert target.times == pytest.approx([1.0, 1.1, 1.2, 1.3, 1.4, 1.5])
    assert [e.f for e in events] == ["clock-strobe"]
    assert target.healthy()


def test_a_strobe_cut_short_by_the_final_heal_is_reset() -> None:
    op = ClockStrobe(at_ms=0, node="n2", delta_ms=64, period_ms=1_000, duration_ms=60_000)
    target = RecordingTarget()
    schedule = Schedule(nodes=NODES, duration_ms=500, ops=[op])
    events = run_virtual(run_schedule, schedule, target)
    assert target.calls == [("bump_clock", "n2", 64), ("reset_clock", "n2")]
    assert [e.f for e in events] == ["clock-strobe", "clock-reset"]
    assert events[1].value == {"nodes": ["n2"], "final": True}
    assert target.healthy()


def test_a_strobe_cut_short_in_step_still_records_where_it_ended() -> None:
    # At 1.5 s the clock is back in step (reset at 1.0 s): the final heal stops the strobe
    # and records a final clock reset, so the history shows where the strobe ended.
    op = ClockStrobe(at_ms=0, node="n2", delta_ms=64, period_ms=1_000, duration_ms=60_000)
    target = RecordingTarget()
    schedule = Schedule(nodes=NODES, duration_ms=1_500, ops=[op])
    events = run_virtual(run_schedule, schedule, target)
    assert [e.f for e in events] == ["clock-strobe", "clock-reset"]
    assert events[1].value == {"nodes": ["n2"], "final": True}
    assert target.healthy()


def test_a_kill_stops_the_strobe_on_that_node() -> None:
    ops: list[AnyFaultOp] = [
        ClockStrobe(at_ms=0, node="n2", delta_ms=8, period_ms=100, duration_ms=10_000),
        Kill(at_ms=250, nodes=["n2"]),
    ]
    target = RecordingTarget()  # refuses clock calls on a dead node
    events = run_virtual(run_schedule, Schedule(nodes=NODES, duration_ms=1_000, ops=ops), target)
    assert [e.f for e in events] == ["clock-strobe", "kill", "restart", "clock-reset"]
    assert target.healthy()


def test_ops_that_no_longer_apply_are_skipped_and_say_why() -> None:
    ops: list[AnyFaultOp] = [
        Restart(at_ms=0, nodes=["n1"]),
        Kill(at_ms=1, nodes=["n1"]),
        Kill(at_ms=2, nodes=["n1", "n2"]),
        Resume(at_ms=3, nodes=["n3"]),
    ]
    target = RecordingTarget()
    events = run_virtual(run_schedule, Schedule(nodes=NODES, duration_ms=10, ops=ops), target)
    assert events[0].error == "skipped: n1 is not down"
    assert events[0].value == {"nodes": [], "skipped": {"n1": "n1 is not down"}}
    assert events[2].value == {"nodes": ["n2"], "skipped": {"n1": "n1 is already down"}}
    assert events[2].error is None
    assert events[3].error == "skipped: n3 is not paused"
    assert [c for c in target.calls if c[0] != "restart"] == [("kill", "n1"), ("kill", "n2")]
    assert target.healthy()


def test_generated_mixed_schedules_run_clean_and_end_healed() -> None:
    for seed in range(8):
        schedule = generate("mixed", nodes=NODES, clients=CLIENTS, duration_ms=300_000,
                            interval_ms=3_000, seed=seed, logs=["t0/0"])
        target = RecordingTarget(leaders={("t0", 0): "n3"})
        events = run_virtual(run_schedule, schedule, target)
        assert not [e for e in events if e.error], f"seed {seed}: a generated op was skipped"
        assert [e.f for e in events[: len(schedule.ops)]] == [
            op.__struct_config__.tag for op in schedule.ops
        ]
        assert target.healthy(), f"seed {seed}: not healed: {target.__dict__}"


def test_a_long_schedule_runs_in_virtual_time_only() -> None:
    schedule = generate("mixed", nodes=NODES, clients=CLIENTS, duration_ms=3_600_000,
                        recovery_ms=60_000, seed=11)
    target = RecordingTarget()

    async def scenario() -> float:
        start = trio.current_time()
        await run_schedule(schedule, target)
        return trio.current_time() - start

    wall = time.monotonic()
    virtual = run_virtual(scenario)
    wall = time.monotonic() - wall
    assert virtual == pytest.approx(3_660.0)
    # An hour and a minute of schedule; real sleeping would take that long.
    assert wall < 60
    assert target.healthy()


def test_a_schedule_for_another_cluster_is_refused() -> None:
    schedule = Schedule(nodes=["n1", "n9"], duration_ms=10)
    with pytest.raises(ScheduleError, match=r"nodes \['n9'\].*generate the schedule for this"):
        run_virtual(run_schedule, schedule, RecordingTarget())


async def test_a_cancelled_run_leaves_a_ledger_that_heal_everything_clears(
    autojump_clock: trio.testing.MockClock,
) -> None:
    schedule = Schedule(
        nodes=NODES,
        clients=CLIENTS,
        duration_ms=100_000,
        ops=[Kill(at_ms=0, nodes=["n1"]), Pause(at_ms=0, nodes=["n2"])],
    )
    target = RecordingTarget()
    stream = io.BytesIO()
    executor = Executor(target, HistoryWriter(stream), origin=trio.current_time())
    with trio.move_on_after(1):
        await executor.run(schedule)
    assert executor.ledger.down == {"n1"} and executor.ledger.paused == {"n2"}
    await executor.heal_everything()
    assert executor.ledger.healthy()
    assert target.healthy()
    assert [e.f for e in events_of(stream)] == ["kill", "pause", "resume", "restart"]


def test_disk_ops_kill_damage_and_restart_and_record_what_they_did() -> None:
    three = ["n1", "n2", "n3"]
    target = RecordingTarget(three)
    target.refusing["n2"] = "t1-0/high-watermark.checkpoint is corrupt"
    flip = Damage(kind="segment", action="flip", pick=5)
    schedule = Schedule(nodes=three, clients=CLIENTS, duration_ms=20_000, ops=[
        CorruptFiles(at_ms=1_000, node="n1", damages=[flip]),
        Restart(at_ms=2_000, nodes=["n1"]),
        StartDiskFault(at_ms=3_000, node="n3", enospc_write=True),
        StopDiskFault(at_ms=4_000, nodes=["n3"]),
        CorruptFiles(at_ms=5_000, node="n2",
                     damages=[Damage(kind="checkpoint", action="truncate", pick=1)]),
        Restart(at_ms=6_000, nodes=["n2"]),
        # n2 stays down (its broker refuses its files): a second node's fault is skipped.
        CorruptFiles(at_ms=7_000, node="n3", damages=[flip]),
        StartDiskFault(at_ms=8_000, node="n1", fsync_delay_ms=50.0),
    ])
    events = run_virtual(run_schedule, schedule, target)
    by_f = [(e.f, e.error is None) for e in events]
    assert by_f[:8] == [("disk-corrupt", True), ("restart", True), ("start-disk-fault", True),
                        ("stop-disk-fault", True), ("disk-corrupt", True), ("restart", False),
                        ("disk-corrupt", False), ("start-disk-fault", False)]
    [damaged] = events[0].value["damaged"]
    planned = plan_damage(flip, target.files)
    assert planned is not None and damaged["file"] == planned.path
    assert damaged["offset"] == planned.damage.flip_offset and damaged["bit"] == planned.damage.bit
    assert ("kill", "n1") in target.calls
    assert ("damage_file", "n1", planned.path, planned.damage) in target.calls
    assert ("set_disk_fault", "n3", DiskFault(enospc_write=True)) in target.calls
    assert ("set_disk_fault", "n3", None) in target.calls
    assert "high-watermark.checkpoint is corrupt" in events[5].value["skipped"]["n2"]
    assert "at most 1 at a time" in (events[6].error or "")
    # The final heal tries n2 again and records that it still refuses.
    final = [e for e in events if e.f == "restart" and e.value.get("final")]
    assert final and "n2" in final[0].value["skipped"]
