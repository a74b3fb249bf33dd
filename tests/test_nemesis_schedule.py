"""Schedules are data: generated deterministically per seed, JSON round-trippable, coherent."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nemesis import packages
from nemesis.generate import generate
from nemesis.ledger import Ledger
from nemesis.ops import (
    AnyFaultOp,
    ClockReset,
    ClockSkew,
    ClockStrobe,
    CorruptFiles,
    Kill,
    Pause,
    PowerLoss,
    Restart,
    Resume,
    Schedule,
    ScheduleError,
    StartDiskFault,
    StartPartition,
    StopDiskFault,
    StopPartition,
)
from nemesis.timing import FaultTimers

NODES = ["n1", "n2", "n3", "n4", "n5"]
CLIENTS = ["c1", "c2"]
package_sets = st.lists(st.sampled_from(list(packages.PACKAGES)), min_size=1, unique=True)
seeds = st.integers(min_value=0, max_value=2**32)


def make(spec: str | list[str], seed: int, duration_ms: int = 300_000) -> Schedule:
    return generate(
        spec,
        nodes=NODES,
        clients=CLIENTS,
        duration_ms=duration_ms,
        interval_ms=5_000,
        seed=seed,
        logs=["t0/0", "t0/1"],
    )


@given(package_sets, seeds)
def test_the_same_seed_gives_the_same_schedule_byte_for_byte(names: list[str], seed: int) -> None:
    assert make(names, seed).to_json() == make(names, seed).to_json()


def test_different_seeds_give_different_schedules() -> None:
    assert make("mixed", 1).ops != make("mixed", 2).ops


@given(package_sets, seeds)
def test_schedules_round_trip_through_json(names: list[str], seed: int) -> None:
    schedule = make(names, seed)
    decoded = Schedule.from_json(schedule.to_json())
    assert decoded == schedule
    assert decoded.to_json() == schedule.to_json()


@given(package_sets, seeds)
def test_ops_are_in_time_order_within_the_duration(names: list[str], seed: int) -> None:
    schedule = make(names, seed)
    times = [op.at_ms for op in schedule.ops]
    assert times == sorted(times)
    assert all(0 <= t < schedule.duration_ms for t in times)
    schedule.validate()


def test_a_fault_starts_at_the_first_staggered_step_after_the_last_repair() -> None:
    # gen/stagger draws each step from [0, 2 x interval) after the last; a step that finds
    # the package's fault in force starts nothing. So a new fault comes less than two
    # intervals after the repair, on average 2/3 of an interval (the residual of a
    # uniform stagger).
    schedule = generate(
        "partition", nodes=NODES, duration_ms=10_000_000, interval_ms=10_000, seed=7
    )
    spans = _fault_spans(schedule.ops)
    assert len(spans) > 300
    gaps = [nxt.at_ms - stop.at_ms for (_, stop), (nxt, _) in itertools.pairwise(spans)]
    assert all(0 <= gap < 2 * schedule.interval_ms for gap in gaps)
    assert 0.5 * schedule.interval_ms < sum(gaps) / len(gaps) < 0.85 * schedule.interval_ms
    assert schedule.interval_ms == 10_000


def _fault_spans(ops: list[AnyFaultOp]) -> list[tuple[AnyFaultOp, AnyFaultOp]]:
    """(start, repair) pairs of a one-package partition, kill or pause schedule."""
    starts = (StartPartition, Kill, PowerLoss, Pause)
    stops = (StopPartition, Restart, Resume)
    pairs: list[tuple[AnyFaultOp, AnyFaultOp]] = []
    for start, stop in zip(ops[::2], ops[1::2], strict=False):
        assert isinstance(start, starts) and isinstance(stop, stops), (start, stop)
        pairs.append((start, stop))
    return pairs


def test_a_package_alternates_its_start_and_stop() -> None:
    ops = make("partition", 3).ops
    assert len(ops) > 10
    kinds = [type(op) for op in ops]
    assert kinds[::2] == [StartPartition] * len(kinds[::2])
    assert kinds[1::2] == [StopPartition] * len(kinds[1::2])


def test_partitions_draw_every_shape_sometimes_one_way_and_with_clients() -> None:
    starts = [
        op
        for seed in range(10)
        for op in make("partition", seed, duration_ms=1_000_000).ops
        if isinstance(op, StartPartition)
    ]
    assert {op.shape for op in starts} == {
        "one", "leader", "halves", "majority", "majorities-ring", "minority-third", "bridge"
    }
    assert any(op.one_way for op in starts)
    assert any(op.clients for op in starts)
    leaders = [op for op in starts if op.shape == "leader"]
    assert all(op.leader is not None and op.grudge == {} for op in leaders)
    assert {op.leader.log for op in leaders if op.leader} == {"t0/0", "t0/1", None}
    assert all(op.grudge for op in starts if op.shape != "leader")


def test_crash_and_pause_packages_hit_one_a_minority_or_all() -> None:
    ops = [op for seed in range(5) for op in make("kill,pause,power-loss", seed).ops]
    kill_sizes = {len(op.nodes) for op in ops if isinstance(op, Kill)}
    power_sizes = {len(op.nodes) for op in ops if isinstance(op, PowerLoss)}
    assert {1, 2, 5} <= kill_sizes | {len(op.nodes) for op in ops if isinstance(op, Pause)}
    assert power_sizes <= {1, 2, 3, 4, 5} and 1 in power_sizes
    assert kill_sizes <= {1, 2, 3, 4, 5}


def _applies(ledger: Ledger, op: AnyFaultOp) -> bool:
    """Apply op to the ledger as the executor would; False if any part would be skipped."""
    match op:
        case Kill() | PowerLoss():
            ok = all(ledger.why_not_crash(n) is None for n in op.nodes)
            ledger.crashed(op.nodes)
        case Restart():
            ok = all(ledger.why_not_restart(n) is None for n in op.nodes)
            ledger.restarted(op.nodes)
        case Pause():
            ok = all(ledger.why_not_pause(n) is None for n in op.nodes)
            ledger.was_paused(op.nodes)
        case Resume():
            ok = all(ledger.why_not_resume(n) is None for n in op.nodes)
            ledger.resumed(op.nodes)
        case ClockSkew() | ClockStrobe():
            ok = ledger.why_not_clock(op.node) is None
        case ClockReset():
            ok = all(ledger.why_not_clock(n) is None for n in op.nodes)
        case _:
            ok = True
    return ok


@settings(max_examples=50)
@given(seeds)
def test_generated_mixed_schedules_never_collide_across_packages(seed: int) -> None:
    ledger = Ledger()
    for op in make("mixed", seed, duration_ms=600_000).ops:
        assert _applies(ledger, op), f"{op} does not apply to {ledger}"


def test_none_gives_no_faults_and_mixed_gives_every_package() -> None:
    assert make("none", 1).ops == []
    # Opt-in packages (disk, membership) join mixed only when named beside it.
    opt_in = packages.OPT_IN
    assert packages.parse("mixed") == tuple(p for p in packages.PACKAGES if p not in opt_in)
    assert packages.parse("mixed,disk") == tuple(p for p in packages.PACKAGES if p != "membership")
    assert "membership" in packages.parse("mixed,membership")
    assert packages.parse("kill, partition") == ("partition", "kill")


def test_unknown_packages_are_refused_naming_them_and_what_is_accepted() -> None:
    with pytest.raises(ValueError, match=r"unknown nemesis package\(s\) chaos; accepted: "):
        packages.parse("partition,chaos")
    with pytest.raises(ValueError, match="'none' cannot be combined"):
        packages.parse("none,kill")


def test_package_help_lists_every_name() -> None:
    text = packages.describe()
    for name in (*packages.PACKAGES, "mixed", "none"):
        assert any(line.startswith(name + " ") for line in text.splitlines()), name


def test_a_schedule_with_ops_out_of_order_is_refused() -> None:
    ops: list[AnyFaultOp] = [Kill(at_ms=50, nodes=["n1"]), Restart(at_ms=10, nodes=["n1"])]
    bad = Schedule(nodes=["n1"], duration_ms=100, ops=ops)
    with pytest.raises(ScheduleError, match="comes before the previous op"):
        Schedule.from_json(bad.to_json())


def test_a_schedule_naming_a_stranger_is_refused() -> None:
    bad = Schedule(nodes=["n1"], duration_ms=100, ops=[Kill(at_ms=5, nodes=["n7"])])
    with pytest.raises(ScheduleError, match=r"names \['n7'\], which are not among"):
        bad.validate()


def test_an_op_after_the_final_heal_is_refused() -> None:
    bad = Schedule(nodes=["n1"], duration_ms=100, ops=[Kill(at_ms=500, nodes=["n1"])])
    with pytest.raises(ScheduleError, match="after the final heal"):
        bad.validate()


def test_malformed_schedule_json_is_a_schedule_error() -> None:
    with pytest.raises(ScheduleError, match="not valid JSON"):
        Schedule.from_json(b"{nope")
    with pytest.raises(ScheduleError, match="invalid schedule"):
        Schedule.from_json(b'{"nodes": ["n1"], "duration_ms": 5, "ops": [{"f": "explode"}]}')


@settings(max_examples=200)
@given(package_sets, seeds)
def test_no_crash_or_pause_outlives_its_longest_duration_class(names: list[str], seed: int) -> None:
    """A node killed, powered off or paused comes back when its drawn duration ends, which
    is at most the top of the longest class (past replica.lag.time.max.ms), plus a retried
    clock reset's delay, however the packages are drawn."""
    schedule = make(names, seed)
    timers = FaultTimers()
    bound = max(timers.bounds(c)[1] for c in timers.classes())
    since: dict[str, int] = {}
    for op in schedule.ops:
        if isinstance(op, Kill | PowerLoss | Pause):
            for node in op.nodes:
                since[node] = op.at_ms
        elif isinstance(op, CorruptFiles | StartDiskFault):
            since[op.node] = op.at_ms  # the disk package's crash, or a disk that may halt it
        elif isinstance(op, Restart | Resume | StopDiskFault):
            for node in op.nodes:
                assert op.at_ms - since.pop(node) <= bound, (node, op)
    for node, start in since.items():
        assert schedule.duration_ms - start <= bound, f"{node} down from {start} to the end"
