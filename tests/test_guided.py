"""Coverage-guided schedules (`nemesis.guided`, `harness.campaign.guided`): proposals are
deterministic for a seed, mutations keep schedules valid, the corpus keeps what reached
new states, a guided plan feeds results in plan order whatever order runs finish in,
and `faultline campaign --guided` runs and shows coverage."""

from __future__ import annotations

import json
import random
from pathlib import Path

from click.testing import CliRunner

from harness.campaign.driver import plan
from harness.campaign.guided import GuidedPlan, base_schedule
from harness.campaign.matrix import build_matrix, parse_seeds
from harness.campaign.task import RunRecord, RunRequest
from harness.cli import cli
from harness.run_config import RunConfig
from nemesis.generate import generate
from nemesis.guided import MUTATIONS, Guide, end_of, mutate
from nemesis.ops import Kill, Restart, Schedule, StartPartition, StopPartition

NODES = ["n1", "n2", "n3"]


def base(seed: int) -> Schedule:
    return generate("mixed", nodes=NODES, clients=["c1", "c2"], duration_ms=20_000,
                    interval_ms=3_000, recovery_ms=2_000, seed=seed, logs=["t1/0", "t1/1"])


def states_of(schedule: Schedule) -> set[str]:
    """Made-up coverage that depends on the schedule, as a run's would."""
    return {f"{type(op).__name__}@{op.at_ms // 5000}" for op in schedule.ops}


def proposals(guide_seed: int, runs: int) -> list[bytes]:
    guide = Guide(guide_seed, base)
    made = []
    for seed in range(1, runs + 1):
        schedule = guide.propose(seed)
        made.append(schedule.to_json())
        guide.feed(schedule, states_of(schedule))
    return made


def test_the_same_seed_gives_the_same_schedules_and_they_are_steered() -> None:
    first, again = proposals(7, 30), proposals(7, 30)
    assert first == again
    assert proposals(8, 30) != first
    plain = [base(seed).to_json() for seed in range(1, 31)]
    # Once the corpus has entries, most proposals are mutations, not the plain schedule.
    assert sum(a != b for a, b in zip(first, plain, strict=True)) >= 15


def test_every_mutation_keeps_a_schedule_valid() -> None:
    rng = random.Random(3)
    for seed in range(40):
        schedule = base(seed)
        for kind in MUTATIONS:
            mutated = mutate(schedule, rng, other=base(seed + 100), fresh=base(seed + 200),
                             kind=kind)
            mutated.validate()
            assert mutated.nodes == schedule.nodes and mutated.duration_ms == 20_000


def test_stretch_moves_a_faults_stop_and_retarget_its_restart() -> None:
    schedule = Schedule(nodes=NODES, duration_ms=60_000, ops=[
        StartPartition(at_ms=1_000, shape="halves", grudge={"n1": ["n2", "n3"]}),
        StopPartition(at_ms=2_000),
    ])
    ends = set()
    for seed in range(30):
        stretched = mutate(schedule, random.Random(seed), kind="stretch")
        stop = [op for op in stretched.ops if isinstance(op, StopPartition)]
        ends.add(stop[0].at_ms if stop else None)
    assert len(ends) >= 4 and max(e for e in ends if e is not None) > 10_000  # > session
    crash = Schedule(nodes=NODES, duration_ms=60_000, ops=[
        Kill(at_ms=1_000, nodes=["n1"]), Restart(at_ms=5_000, nodes=["n1"])])
    assert end_of(list(crash.ops), 0) == 1
    for seed in range(10):
        moved = mutate(crash, random.Random(seed), kind="retarget")
        kill, restart = moved.ops
        assert isinstance(kill, Kill) and isinstance(restart, Restart)
        assert set(kill.nodes) == set(restart.nodes)


def test_aim_points_a_fault_at_a_role_and_its_end_at_every_node() -> None:
    crash = Schedule(nodes=NODES, duration_ms=20_000, ops=[
        Kill(at_ms=1_000, nodes=["n1"]), Restart(at_ms=5_000, nodes=["n1"])])
    kinds = set()
    for seed in range(30):
        kill, restart = mutate(crash, random.Random(seed), kind="aim", logs=["t1/0"]).ops
        assert isinstance(kill, Kill) and kill.role is not None and kill.nodes == ["n1"]
        assert kill.role.log in (None, "t1/0")
        # Whoever held the role is known only at run time: the restart covers them all.
        assert isinstance(restart, Restart) and restart.nodes == NODES
        kinds.add(kill.role.kind)
    assert {"leader", "followers", "controller"} <= kinds
    aimed = mutate(crash, random.Random(0), kind="aim", logs=["t1/0"])
    assert mutate(aimed, random.Random(1), kind="aim", logs=["t1/0"]).ops == aimed.ops


def test_an_overlay_adds_one_packages_faults_from_another_schedule() -> None:
    crash = Schedule(nodes=NODES, duration_ms=20_000, ops=[
        Kill(at_ms=1_000, nodes=["n1"]), Restart(at_ms=5_000, nodes=["n1"])])
    partitions = Schedule(nodes=NODES, duration_ms=20_000, ops=[
        StartPartition(at_ms=2_000, shape="halves", grudge={"n1": ["n2", "n3"]}),
        StopPartition(at_ms=9_000)])
    merged = mutate(crash, random.Random(1), fresh=partitions, kind="overlay")
    assert [type(op).__name__ for op in merged.ops] == [
        "Kill", "StartPartition", "Restart", "StopPartition"]


def test_ranked_proposals_go_where_the_fed_runs_did_not() -> None:
    def packages(schedule: Schedule) -> set[str]:
        return {op.PACKAGE for op in schedule.ops if op.PACKAGE} or {"quiet"}

    guide = Guide(1, base, contexts=packages)
    guide.feed(base(1), {"a@partition", "b@partition", "c@kill"})
    unranked = Guide(1, base)
    unranked.feed(base(1), {"a@partition", "b@partition", "c@kill"})
    # With every context but clock reached often, a proposal putting clock in force wins.
    for context in ("partition", "kill", "pause", "link", "power-loss", "quiet"):
        guide.context_hits[context] += 100
    ranked = sum("clock" in packages(guide.propose(seed)) for seed in range(20, 30))
    plain = sum("clock" in packages(unranked.propose(seed)) for seed in range(20, 30))
    assert ranked >= 8 and ranked > plain


def test_the_corpus_keeps_schedules_that_reached_new_states() -> None:
    guide = Guide(1, base)
    assert guide.feed(base(1), {"a@quiet", "b@kill"}) == {"a@quiet", "b@kill"}
    assert guide.feed(base(2), {"a@quiet"}) == frozenset()
    assert guide.feed(base(3), {"a@quiet", "c@pause"}) == {"c@pause"}
    assert [e.states for e in guide.corpus] == [{"a@quiet", "b@kill"}, {"a@quiet", "c@pause"}]


def _plan() -> GuidedPlan:
    matrix = build_matrix(None, fixed={"time-limit": 10.0, "nemesis-interval": 2.0},
                          axes=[], seeds=parse_seeds(6, None))
    return GuidedPlan(matrix, plan(matrix), batch=3)


def _record(request: RunRequest) -> RunRecord:
    assert request.schedule is not None
    schedule = Schedule.from_json(json.dumps(request.schedule))
    states = {state: 1 for state in states_of(schedule)}
    return RunRecord(cell=request.cell, seed=request.seed, run_name=request.run_name,
                     valid=True, coverage={"states": states})


def _drive(guided: GuidedPlan, *, reverse: bool) -> list[dict[str, object] | None]:
    schedules = []
    while len(guided):
        batch = []
        while (request := guided.take()) is not None:
            batch.append(request)
        assert batch, "a generation must hand out runs once the previous one settled"
        schedules += [r.schedule for r in batch]
        for request in (reversed(batch) if reverse else batch):
            guided.settle(request, _record(request))
    return schedules


def test_a_guided_plan_waits_for_each_generation_and_ignores_finishing_order() -> None:
    guided = _plan()
    first = [guided.take() for _ in range(4)]
    assert None not in first[:3] and first[3] is None  # generation of 3 seeds
    forward, backward = _drive(_plan(), reverse=False), _drive(_plan(), reverse=True)
    assert len(forward) == 6 and forward == backward
    config = RunConfig.build({"time-limit": 10.0, "nemesis-interval": 2.0, "seed": 1})
    assert json.loads(json.dumps(forward[0])) == json.loads(base_schedule(config, 1).to_json())


def test_a_guided_campaign_runs_and_shows_coverage(tmp_path: Path) -> None:
    out = tmp_path / "results"
    result = CliRunner().invoke(cli, [
        "campaign", "--guided", "--guided-batch", "1", "--seeds", "2", "--workers", "1",
        "--time-limit", "4", "--recovery", "1", "--final-read", "4",
        "--nemesis", "kill,power-loss", "--nemesis-interval", "1", "--out", str(out)])
    assert result.exit_code in (0, 1), result.output
    header = [line for line in result.output.splitlines() if line.startswith("#  ")]
    assert header and "states" in header[0].split(), result.output
    (folder,) = [p for p in out.iterdir() if p.is_dir() and not p.is_symlink()]
    data = json.loads((folder / "campaign.json").read_text())
    coverage = data["configurations"][0]["coverage"]
    assert coverage["distinct_states"] == len(coverage["states"]) > 0
    assert all(run["coverage"]["states"] for run in data["runs"])
    assert "<h2>Coverage</h2>" in (folder / "campaign.html").read_text()
    # Each run followed the schedule the plan sent (its nemesis.json).
    second = Schedule.read(folder / "runs" / data["runs"][1]["run"] / "nemesis.json")
    assert second.seed == 2
