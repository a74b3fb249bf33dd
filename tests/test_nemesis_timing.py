"""Fault durations span Kafka's own timers, read from the run's configuration."""

from __future__ import annotations

import random

import pytest

from harness.fault_timers import fault_timers
from harness.run_config import RunConfig
from nemesis.generate import generate
from nemesis.ops import AnyFaultOp, Kill, Pause, Restart, Resume, StartPartition, StopPartition
from nemesis.timing import FaultTimers, draw_duration

NODES = ["n1", "n2", "n3"]


def _durations(ops: list[AnyFaultOp]) -> list[int]:
    """How long each fault of a one-package schedule stayed in force."""
    starts = (StartPartition, Kill, Pause)
    stops = (StopPartition, Restart, Resume)
    out = []
    for start, stop in zip(ops[::2], ops[1::2], strict=False):
        assert isinstance(start, starts) and isinstance(stop, stops), (start, stop)
        out.append(stop.at_ms - start.at_ms)
    return out


@pytest.mark.parametrize("package", ["partition", "kill", "pause"])
def test_fault_durations_reach_each_timer_class(package: str) -> None:
    timers = FaultTimers()
    durations = [
        d
        for seed in range(20)
        for d in _durations(generate(package, nodes=NODES, duration_ms=600_000,
                                     interval_ms=5_000, seed=seed, timers=timers).ops)
    ]
    session, lag = timers.broker_session_ms, timers.replica_lag_ms
    short = [d for d in durations if d < 0.7 * session]
    around_session = [d for d in durations if 0.8 * session <= d < 1.3 * session]
    past_lag = [d for d in durations if d > lag]
    # Each class is drawn about a quarter of the time.
    assert len(short) > len(durations) / 8
    assert len(around_session) > len(durations) / 8
    assert len(past_lag) > len(durations) / 8
    assert any(d > session for d in around_session) and any(d < session for d in around_session)
    assert max(durations) < 1.6 * lag


def test_durations_follow_the_timers_given() -> None:
    """Halving the replica lag timer moves the long faults with it: no copy of 30 s."""
    timers = FaultTimers(broker_session_ms=4_000, replica_lag_ms=12_000,
                         group_session_ms=3_000, group_rebalance_ms=5_000)
    durations = [
        d
        for seed in range(10)
        for d in _durations(generate("kill", nodes=NODES, duration_ms=600_000,
                                     interval_ms=5_000, seed=seed, timers=timers).ops)
    ]
    assert max(durations) < 1.6 * 12_000
    assert len([d for d in durations if d > 12_000]) > len(durations) / 8
    assert any(d < 0.7 * 4_000 for d in durations)


def test_each_class_draws_inside_its_bounds_and_transactions_only_when_configured() -> None:
    rng = random.Random(3)
    plain = FaultTimers()
    assert "transaction" not in plain.classes()
    drawn = {draw_duration(plain, rng).cls for _ in range(200)}
    assert drawn == {"short", "session", "lag", "group"}
    txn = FaultTimers(transaction_timeout_ms=20_000)
    draws = [draw_duration(txn, rng) for _ in range(500)]
    assert {d.cls for d in draws} == {"short", "session", "lag", "group", "transaction"}
    for d in draws:
        low, high = txn.bounds(d.cls)
        assert low <= d.ms < high
    assert txn.bounds("transaction") == (16_000, 26_000)
    with pytest.raises(ValueError, match="no duration class 'transaction'"):
        plain.bounds("transaction")


def test_the_same_seed_and_timers_give_the_same_schedule() -> None:
    timers = FaultTimers(replica_lag_ms=20_000)
    one = generate("mixed", nodes=NODES, clients=["c1"], duration_ms=120_000, seed=5,
                   timers=timers)
    two = generate("mixed", nodes=NODES, clients=["c1"], duration_ms=120_000, seed=5,
                   timers=timers)
    assert one.to_json() == two.to_json()
    other = generate("mixed", nodes=NODES, clients=["c1"], duration_ms=120_000, seed=5)
    assert other.to_json() != one.to_json()


def test_a_run_reads_its_timers_from_the_broker_settings_it_starts_brokers_with() -> None:
    default = fault_timers(RunConfig.build({"seed": 1}))
    assert default.broker_session_ms == 9_000  # the broker's own default
    assert default.replica_lag_ms == 30_000
    assert default.transaction_timeout_ms is None
    tuned = fault_timers(RunConfig.build({"seed": 1, "replica-lag-time-max-ms": 12_000}))
    assert tuned.replica_lag_ms == 12_000


def test_clock_strobes_last_a_drawn_duration_too() -> None:
    from nemesis.ops import ClockStrobe

    timers = FaultTimers()
    strobes = [op for seed in range(10)
               for op in generate("clock", nodes=NODES, duration_ms=600_000, seed=seed,
                                  timers=timers).ops if isinstance(op, ClockStrobe)]
    assert len(strobes) > 20
    assert any(op.duration_ms > timers.replica_lag_ms for op in strobes)
    assert any(op.duration_ms < timers.broker_session_ms for op in strobes)


def test_a_fault_that_takes_out_every_node_stays_short_or_around_the_session() -> None:
    """The long classes are for partial faults; with every node out there is no cluster
    left to shrink an ISR or move a partition."""
    timers = FaultTimers()
    whole: list[int] = []
    partial: list[int] = []
    for seed in range(30):
        ops = generate("kill", nodes=NODES, duration_ms=600_000, seed=seed, timers=timers).ops
        for start, stop in zip(ops[::2], ops[1::2], strict=False):
            assert isinstance(start, Kill) and isinstance(stop, Restart)
            (whole if len(start.nodes) == len(NODES) else partial).append(
                stop.at_ms - start.at_ms)
    assert whole and partial
    assert max(whole) < timers.bounds("session")[1]
    assert max(partial) > timers.replica_lag_ms
