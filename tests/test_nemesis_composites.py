"""Composite packages as data: deterministic per seed, JSON round-trippable, mixable, and
timed by the brokers' own timers (the sim and process tests show them hit the cluster)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from harness.shrink.search import fault_units
from nemesis import packages
from nemesis.generate import generate
from nemesis.ops import Kill, Restart, Schedule, StartPartition, StopPartition
from nemesis.timing import FaultTimers

NODES = ["n1", "n2", "n3", "n4", "n5"]
composite_sets = st.lists(
    st.sampled_from([*packages.COMPOSITES, *packages.PACKAGES]), min_size=1, unique=True)
seeds = st.integers(min_value=0, max_value=2**32)
TIMERS = FaultTimers(broker_session_ms=6_000, replica_lag_ms=20_000)


def make(spec: str | list[str], seed: int, duration_ms: int = 300_000) -> Schedule:
    return generate(spec, nodes=NODES, clients=["c1"], duration_ms=duration_ms,
                    interval_ms=5_000, seed=seed, logs=["t1/0", "t1/1"], timers=TIMERS)


@given(composite_sets, seeds)
def test_composites_are_deterministic_ordered_and_round_trip(names: list[str], seed: int) -> None:
    schedule = make(names, seed)
    assert schedule.to_json() == make(names, seed).to_json()
    assert Schedule.from_json(schedule.to_json()) == schedule
    times = [op.at_ms for op in schedule.ops]
    assert times == sorted(times) and all(0 <= t < schedule.duration_ms for t in times)
    assert schedule.fault_packages() == packages.parse(names)


def test_each_composite_is_a_package_name_and_mixes_with_others() -> None:
    singles = tuple(name for name in packages.PACKAGES if name not in packages.OPT_IN)
    assert packages.parse("mixed") == singles  # single faults only, opt-in ones left out
    assert packages.parse("isolate-leader,kill") == ("kill", "isolate-leader")
    assert packages.parse("mixed,rolling-restart") == (*singles, "rolling-restart")
    text = packages.describe()
    for name in packages.COMPOSITES:
        assert any(line.startswith(name + " ") for line in text.splitlines()), name
        assert make(name, 1).ops, name


def test_isolate_leader_outlasts_the_session_timeout_and_leaves_clients_alone() -> None:
    ops = make("isolate-leader", 4).ops
    for start, stop in zip(ops[::2], ops[1::2], strict=False):
        assert isinstance(start, StartPartition) and isinstance(stop, StopPartition)
        assert start.role is not None and start.role.kind == "leader" and start.clients == []
        assert stop.at_ms - start.at_ms > TIMERS.broker_session_ms


def test_shrink_isr_waits_for_the_shrink_before_killing_the_leader() -> None:
    ops = make("shrink-isr-then-kill-leader", 5).ops
    start, kill = ops[0], ops[1]
    assert isinstance(start, StartPartition) and isinstance(kill, Kill)
    assert start.role is not None and start.role.kind == "minority-without-leader"
    assert kill.role is not None and kill.role.kind == "leader" and kill.role.log == start.role.log
    assert kill.at_ms - start.at_ms >= 1.2 * min(TIMERS.broker_session_ms, TIMERS.replica_lag_ms)


def test_rolling_restart_restarts_each_node_before_the_next_goes_down() -> None:
    ops = make("rolling-restart", 6, duration_ms=120_000).ops
    pairs = list(zip(ops[::2], ops[1::2], strict=False))[: len(NODES)]
    killed = []
    for kill, restart in pairs:
        assert isinstance(kill, Kill) and isinstance(restart, Restart)
        assert len(kill.nodes) == 1 and kill.nodes == restart.nodes
        killed.append(kill.nodes[0])
    assert sorted(killed) == NODES


def test_flapping_phases_are_shorter_than_the_session_timeout() -> None:
    ops = make("flapping-partition", 7, duration_ms=60_000).ops
    assert len(ops) >= 6
    for start, stop in zip(ops[::2], ops[1::2], strict=False):
        assert isinstance(start, StartPartition) and isinstance(stop, StopPartition)
        assert stop.at_ms - start.at_ms < TIMERS.broker_session_ms
    # Healed and cut again within a scenario, too, inside the session timeout.
    assert ops[2].at_ms - ops[1].at_ms < TIMERS.broker_session_ms


def test_shrinking_pairs_a_role_aimed_kill_with_the_restart_that_ends_it() -> None:
    ops = make("shrink-isr-then-kill-leader", 5, duration_ms=40_000).ops
    units = fault_units(Schedule(nodes=NODES, clients=["c1"], duration_ms=40_000, ops=ops))
    kill_unit = next(u for u in units if any(isinstance(op, Kill) for op in u.starts))
    assert [type(op) for op in kill_unit.stops if isinstance(op, Restart)] == [Restart]
