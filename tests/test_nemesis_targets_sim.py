"""Role targets and composite packages on the simulated cluster, as `faultline run` drives it.

Each fault names a role; these runs show it hit the node holding that role at the moment
the fault started (after an earlier leader change), judged by the cluster's own timeline
(`cluster.jsonl`, written from the brokers' state independently of the nemesis) or by
the broker's own FindCoordinator answer. The composites are generated from their seed by
the runner, exactly as `--nemesis NAME` runs them.
"""

from __future__ import annotations

import io
import itertools
import json
from pathlib import Path
from typing import Any

import trio

from harness.run_config import RunConfig
from harness.runner import execute
from harness.runtime.sim.cluster import SimCluster
from harness.runtime.sim.run import SimSettings, run_sim
from history.writer import HistoryWriter
from nemesis.executor import Executor
from nemesis.ops import (
    AnyFaultOp,
    ClockReset,
    ClockSkew,
    Kill,
    Pause,
    PowerLoss,
    ResetConnections,
    Restart,
    Resume,
    Schedule,
    StartLinkFault,
    StartPartition,
    StopLinkFault,
    StopPartition,
)
from nemesis.roles import Role
from nemesis.timing import DEFAULT_BROKER_SESSION_MS
from workloads.client import KafkaClientError, Producer, ProducerConfig

NODES = ["n1", "n2", "n3"]
ALL = list(NODES)
T1 = Role(kind="leader", log="t1/0")
SESSION_NS = DEFAULT_BROKER_SESSION_MS * 1_000_000


def run(folder: Path, nemesis: str, *, seed: int = 3, time_limit: float = 30.0,
        ops: list[AnyFaultOp] | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """One sim run; its nemesis events and its cluster timeline."""
    folder.mkdir()
    # A light workload: these runs are about where the faults land, not about load.
    config = RunConfig.build({"seed": seed, "nemesis": nemesis, "time-limit": time_limit,
                              "recovery": 2.0, "final-read": 5.0, "partitions": 1,
                              "rate": 10.0, "concurrency": 2})
    schedule = None
    if ops is not None:
        schedule = Schedule(nodes=NODES, duration_ms=round(time_limit * 1000),
                            recovery_ms=2000, ops=ops)
    execute(config, folder, schedule=schedule)
    events = [json.loads(line) for line in (folder / "history.jsonl").read_text().splitlines()]
    timeline = [json.loads(line) for line in (folder / "cluster.jsonl").read_text().splitlines()]
    return [e for e in events if e["process"] == "nemesis"], timeline


def log_before(timeline: list[dict[str, Any]], time: int, log: str = "t1/0") -> dict[str, Any]:
    """The log's last state the cluster showed strictly before `time` (ns)."""
    lines = [e for e in timeline if e["kind"] == "log" and e["log"] == log and e["time"] < time]
    return lines[-1]


def controller_before(timeline: list[dict[str, Any]], time: int) -> str | None:
    lines = [e for e in timeline if e["kind"] == "controller" and e["time"] < time]
    return lines[-1]["controller"]


def starts(events: list[dict[str, Any]], f: str) -> list[dict[str, Any]]:
    return [e for e in events if e["f"] == f and not e["value"].get("final")]


def test_leader_role_hits_whoever_leads_when_the_fault_starts(tmp_path: Path) -> None:
    # Whoever leads after the power cut is elected some 10 s later (session timeout).
    events, timeline = run(tmp_path / "run", "kill,power-loss,partition", time_limit=36.0, ops=[
        Kill(at_ms=3_000, role=T1),
        Restart(at_ms=15_000, nodes=ALL),
        PowerLoss(at_ms=20_000, role=T1),
        Restart(at_ms=22_000, nodes=ALL),
        StartPartition(at_ms=33_000, shape="role", role=T1),
        StopPartition(at_ms=35_000),
    ])
    kill, cut = starts(events, "kill")[0], starts(events, "power-loss")[0]
    partition = starts(events, "start-partition")[0]
    for event in (kill, cut, partition):
        assert event["value"]["role"] == {"kind": "leader", "log": "t1/0"}
        assert event["value"]["resolved_by"] == "leader_of"
        assert event["value"]["resolved"] == [log_before(timeline, event["time"])["leader"]]
    # The kill moved the leadership: the power cut found the new leader, not the old one.
    assert kill["value"]["nodes"] != cut["value"]["nodes"]
    isolated = partition["value"]["resolved"][0]
    assert partition["value"]["isolated"] == isolated
    others = sorted(set(NODES) - {isolated})
    assert partition["value"]["grudge"] == {isolated: others, **{o: [isolated] for o in others}}


def test_followers_controller_and_minority_roles_hit_their_holders(tmp_path: Path) -> None:
    followers = Role(kind="followers", log="t1/0")
    events, timeline = run(tmp_path / "run", "kill,pause,clock,link", ops=[
        Kill(at_ms=2_000, role=T1),
        Restart(at_ms=14_000, nodes=ALL),
        Pause(at_ms=22_000, role=followers),
        Resume(at_ms=23_000, nodes=ALL),
        ClockSkew(at_ms=24_000, node="n1", delta_ms=60_000, role=Role(kind="controller")),
        ClockReset(at_ms=25_000, nodes=ALL),
        ResetConnections(at_ms=26_000, nodes=[],
                         role=Role(kind="minority-with-leader", log="t1/0")),
        StartLinkFault(at_ms=27_000, links=[], latency_ms=20.0,
                       role=Role(kind="minority-without-leader", log="t1/0")),
        StopLinkFault(at_ms=28_000),
    ])
    pause = starts(events, "pause")[0]
    state = log_before(timeline, pause["time"])
    assert len(state["isr"]) == 3  # the killed leader is back in sync by then
    assert pause["value"]["nodes"] == sorted(set(state["isr"]) - {state["leader"]})
    assert pause["value"]["resolved_by"] == "isr_of"
    skew = starts(events, "clock-skew")[0]
    assert skew["value"]["resolved"] == [controller_before(timeline, skew["time"])]
    assert skew["value"]["node"] == skew["value"]["resolved"][0]
    reset = starts(events, "reset-connections")[0]
    leader = log_before(timeline, reset["time"])["leader"]
    assert reset["value"]["nodes"] == [leader]  # a minority of 3 is one node
    link = starts(events, "start-link-fault")[0]
    state = log_before(timeline, link["time"])
    (slowed,) = link["value"]["resolved"]
    assert slowed != state["leader"] and slowed in state["isr"]
    assert all(slowed in pair for pair in link["value"]["links"])


def test_coordinator_role_hits_the_node_findcoordinator_names(tmp_path: Path) -> None:
    """Twice, with the coordinator moved in between by killing it: each kill finds the
    node the brokers' FindCoordinator answers with at that moment."""

    async def scenario(cluster: SimCluster) -> list[tuple[str, list[str]]]:
        cluster.client_network("c1")
        executor = Executor(cluster, HistoryWriter(io.BytesIO()), origin=trio.current_time())
        hits: list[tuple[str, list[str]]] = []
        async with trio.open_nursery() as nursery:
            for _ in range(2):
                answer = await _find_coordinator(cluster, "g")
                await executor.apply(Kill(at_ms=0, role=Role(kind="coordinator", group="g")),
                                     nursery)
                hits.append((answer, sorted(executor.ledger.down)))
                await trio.sleep(15)  # the controller fences it; another leader takes over
                await executor.apply(Restart(at_ms=0, nodes=ALL), nursery)
                await trio.sleep(5)
        return hits

    settings = SimSettings(nodes=3, quorum=True, broker_settings={
        "default.replication.factor": 3, "min.insync.replicas": 2,
        "offsets.topic.num.partitions": 5, "group.initial.rebalance.delay.ms": 0})
    hits = run_sim(scenario, seed=4, settings=settings).value
    (first, killed_first), (second, killed_second) = hits
    assert killed_first == [first] and killed_second == [second]
    assert first != second


async def _find_coordinator(cluster: SimCluster, group: str) -> str:
    """The node the brokers name as the group's coordinator (retrying while it moves),
    once the answer has held for a second: FindCoordinator answers from the metadata,
    which may name the new leader a moment before it has taken the partition over."""
    config = ProducerConfig(bootstrap_servers=cluster.bootstrap.split(","), client_id="c1",
                            request_timeout_ms=1_000, max_block_ms=3_000)
    with trio.fail_after(60):
        while True:
            try:
                async with Producer(config, network=cluster.client_network("c1"),
                                    rng=cluster.client_rng("c1")) as p:
                    answer = await p.cluster.find_coordinator(group)
                    await trio.sleep(1)
                    if answer == await p.cluster.find_coordinator(group):
                        return f"n{answer}"
            except KafkaClientError:  # not created yet, or moving
                await trio.sleep(0.5)


# -- composite packages ------------------------------------------------------------------


def test_isolate_leader_cuts_the_leader_off_past_the_session_timeout(tmp_path: Path) -> None:
    events, timeline = run(tmp_path / "run", "isolate-leader", time_limit=40.0)
    start = starts(events, "start-partition")[0]
    stop = starts(events, "stop-partition")[0]
    isolated = start["value"]["resolved"][0]
    log = start["value"]["role"].get("log", "t1/0")
    assert isolated == log_before(timeline, start["time"], log)["leader"]
    assert set(start["value"]["grudge"]) <= set(NODES)  # clients still reach everyone
    assert stop["time"] - start["time"] > SESSION_NS
    # Long enough that the others replaced it while it was cut off.
    during = [e for e in timeline if e["kind"] == "log" and e["log"] == log
              and start["time"] < e["time"] < stop["time"] and e["leader"]]
    assert any(e["leader"] != isolated for e in during)


def test_shrink_isr_then_kill_leader_kills_the_leader_after_the_isr_shrank(
    tmp_path: Path,
) -> None:
    events, timeline = run(tmp_path / "run", "shrink-isr-then-kill-leader", time_limit=30.0)
    start, kill = starts(events, "start-partition")[0], starts(events, "kill")[0]
    log = kill["value"]["role"]["log"]
    before = log_before(timeline, start["time"], log)
    (cut,) = start["value"]["resolved"]
    assert cut != before["leader"] and cut in before["isr"]
    at_kill = log_before(timeline, kill["time"], log)
    assert cut not in at_kill["isr"]  # the ISR shrank
    assert kill["value"]["nodes"] == [at_kill["leader"]]


def test_rolling_restart_restarts_every_broker_one_at_a_time(tmp_path: Path) -> None:
    events, _ = run(tmp_path / "run", "rolling-restart", time_limit=30.0)
    steps = [(e["f"], e["value"]["nodes"]) for e in events if e["f"] in ("kill", "restart")]
    killed = [nodes[0] for f, nodes in steps[0::2]]
    assert sorted(killed[:3]) == NODES
    assert steps[:6] == [step for node in killed[:3]
                         for step in (("kill", [node]), ("restart", [node]))]
    assert all(e.get("error") is None for e in events)


def test_flapping_partition_cuts_and_heals_inside_the_session_timeout(tmp_path: Path) -> None:
    events, timeline = run(tmp_path / "run", "flapping-partition", time_limit=30.0)
    flips = [e for e in events if e["f"] in ("start-partition", "stop-partition")]
    assert len(flips) >= 6 and [e["f"] for e in flips[:2]] == ["start-partition", "stop-partition"]
    for a, b in itertools.pairwise(flips):
        assert b["time"] - a["time"] < SESSION_NS
    for start in (e for e in flips if e["f"] == "start-partition" and "role" in e["value"]):
        assert start["value"]["resolved"] == [log_before(timeline, start["time"])["leader"]]


def test_controller_only_partitions_the_controller_one_way(tmp_path: Path) -> None:
    events, timeline = run(tmp_path / "run", "controller-only", time_limit=30.0)
    start = starts(events, "start-partition")[0]
    (controller,) = start["value"]["resolved"]
    assert controller == controller_before(timeline, start["time"])
    others = sorted(set(NODES) - {controller})
    if start["value"]["deaf"]:
        assert start["value"]["grudge"] == {controller: others}
    else:
        assert start["value"]["grudge"] == {o: [controller] for o in others}


def test_clock_jump_controller_jumps_the_controllers_clock(tmp_path: Path) -> None:
    events, timeline = run(tmp_path / "run", "clock-jump-controller", time_limit=30.0)
    skew = starts(events, "clock-skew")[0]
    assert skew["value"]["resolved"] == [controller_before(timeline, skew["time"])]
    assert abs(skew["value"]["delta_ms"]) >= 1024
    assert starts(events, "clock-reset")
