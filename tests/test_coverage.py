"""Fault-space coverage (`harness.coverage`): states read from hand-made cluster.jsonl,
history and node-log lines, and from real runs (sim and process); the brokers' event
lines at their code sites; results.json, the run report and the campaign output show
coverage."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest

from harness.coverage import (
    KINDS,
    Coverage,
    FaultTimeline,
    Observation,
    coverage_of,
    node_log_observations,
    parse_event_line,
    read_coverage,
    timeline_observations,
)
from harness.run_config import RunConfig
from harness.runner import run
from nemesis import Schedule
from nemesis.ops import AnyFaultOp, Kill, PowerLoss, Restart

S = 1_000_000_000  # ns per second


def _write_lines(path: Path, lines: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))


def _nemesis(time_s: float, f: str, **value: Any) -> dict[str, Any]:
    return {"index": 0, "time": round(time_s * S), "process": "nemesis", "type": "info",
            "f": f, "value": value}


def test_timeline_lines_yield_leader_changes_elections_and_controller_moves() -> None:
    lines = [
        {"kind": "start", "origin_s": 0.0, "nodes": ["n1", "n2", "n3"]},
        {"kind": "log", "time": 1 * S, "log": "t1/0", "leader": "n1", "epoch": 0,
         "isr": ["n1", "n2", "n3"], "unclean": None},
        {"kind": "controller", "time": 1 * S, "controller": "n2"},
        # n1 dies: no leader, then n2 in a new epoch, cleanly.
        {"kind": "log", "time": 2 * S, "log": "t1/0", "leader": None, "epoch": None,
         "isr": [], "unclean": None},
        {"kind": "log", "time": 3 * S, "log": "t1/0", "leader": "n2", "epoch": 1,
         "isr": ["n2", "n3"], "unclean": False},
        {"kind": "controller", "time": 3 * S, "controller": None},
        {"kind": "controller", "time": 4 * S, "controller": "n3"},
        # n3 from outside the ISR: unclean.
        {"kind": "log", "time": 5 * S, "log": "t1/0", "leader": "n3", "epoch": 2,
         "isr": ["n3"], "unclean": True},
        {"kind": "power-loss", "time": 6 * S, "node": "n1", "lost": {"t1/0": [[4, 9]]},
         "unsynced_bytes": 70},
        {"kind": "power-loss", "time": 7 * S, "node": "n2", "lost": {}, "unsynced_bytes": 0},
    ]
    kinds = [(o.kind, o.time_ns) for o in timeline_observations(lines)]
    assert kinds == [("leader-change", 3 * S), ("clean-election", 3 * S),
                     ("controller-move", 4 * S), ("leader-change", 5 * S),
                     ("unclean-election", 5 * S), ("recovery-truncation", 6 * S)]


def test_fault_context_follows_the_nemesis_events_and_lingers_after_a_heal() -> None:
    timeline = FaultTimeline.from_events([
        _nemesis(1, "kill", nodes=["n1"]),
        _nemesis(2, "start-partition", shape="halves"),
        _nemesis(3, "stop-partition"),
        _nemesis(4, "restart", nodes=["n1"]),
        _nemesis(5, "clock-strobe", node="n2", delta_ms=100, period_ms=8, duration_ms=500),
    ], linger_s=1.0)
    assert timeline.at(round(0.5 * S)) == frozenset()
    assert timeline.at(round(2.5 * S)) == {"kill", "partition"}
    assert timeline.at(round(3.5 * S)) == {"kill", "partition"}  # healed < 1 s ago
    assert timeline.at(round(4.5 * S)) == {"kill"}
    assert timeline.at(round(5.2 * S)) == {"clock"}  # the kill healed 1.2 s before
    assert timeline.at(round(7 * S)) == frozenset()
    coverage = coverage_of([Observation("isr-shrink", round(2.5 * S)),
                            Observation("isr-shrink", round(2.6 * S)),
                            Observation("rebalance", None)], timeline)
    assert dict(coverage.counts) == {"isr-shrink@kill+partition": 2, "rebalance@unknown": 1}


def test_broker_event_lines_from_sim_and_process_logs(tmp_path: Path) -> None:
    nodes = tmp_path / "nodes"
    (nodes / "n2").mkdir(parents=True)
    (nodes / "n1.log").write_text(
        "[     2.500 sim s] INFO faultline.broker.replication: t1-0: leader in epoch 1\n"
        "[     3.000 sim s] INFO faultline.broker.events: event=isr-shrink log=t1/0 "
        "removed=3 isr=1,2 by=leader\n"
        "[     3.000 sim s] INFO faultline.broker.events: event=coordinator-load partition=4\n"
        "[     9.000 sim s] INFO faultline.broker.events: event=coordinator-load partition=4\n")
    origin_wall = time.mktime(time.strptime("2026-01-02 03:04:05", "%Y-%m-%d %H:%M:%S"))
    (nodes / "n2" / "broker.log").write_text(
        "2026-01-02 03:04:07,250 INFO faultline.broker.events: event=producer-fenced "
        "producer=7 epoch=0 current=1\n")
    observations = node_log_observations(nodes, origin_s=1.0, origin_wall=origin_wall)
    assert [(o.kind, o.time_ns, o.node) for o in observations] == [
        ("isr-shrink", 2 * S, "n1"),
        ("producer-fenced", round(2.25 * S), "n2"),
        # The partition's first load is its initial coordinator, the second a move.
        ("coordinator-move", 8 * S, "n1"),
    ]
    assert parse_event_line("INFO faultline.broker.events: event=rebalance group=g "
                            "generation=2") == ("rebalance", {"group": "g", "generation": "2"})
    assert parse_event_line("INFO faultline.broker.log: event=rebalance") is None


def test_read_coverage_puts_each_event_in_its_fault_context(tmp_path: Path) -> None:
    _write_lines(tmp_path / "cluster.jsonl", [
        {"kind": "start", "origin_s": 10.0, "nodes": ["n1", "n2"]},
        {"kind": "log", "time": 1 * S, "log": "t1/0", "leader": "n1", "epoch": 0,
         "isr": ["n1", "n2"], "unclean": None},
        {"kind": "log", "time": 5 * S, "log": "t1/0", "leader": "n2", "epoch": 1,
         "isr": ["n2"], "unclean": False},
    ])
    _write_lines(tmp_path / "history.jsonl", [
        {"index": 0, "time": 0, "process": 0, "type": "invoke", "f": "send", "value": []},
        _nemesis(2, "kill", nodes=["n1"]),
        _nemesis(30, "restart", nodes=["n1"]),
    ])
    (tmp_path / "nodes").mkdir()
    (tmp_path / "nodes" / "n2.log").write_text(
        "[    21.000 sim s] INFO faultline.broker.events: event=broker-fenced broker=1 "
        "reason=session-timeout\n"
        "[    60.000 sim s] INFO faultline.broker.events: event=isr-expand log=t1/0 added=1 "
        "isr=1,2 by=leader\n")
    coverage = read_coverage(tmp_path)
    assert dict(coverage.counts) == {"leader-change@kill": 1, "clean-election@kill": 1,
                                     "broker-fenced@kill": 1, "isr-expand@quiet": 1}
    data = coverage.to_json()
    assert data["distinct_states"] == 4
    assert data["kinds"]["leader-change"] == 1 and data["kinds"]["unclean-election"] == 0
    assert "unclean-election" in data["kinds_missing"]
    assert Coverage.from_json(data) == coverage
    assert set(data["kinds"]) == set(KINDS)


def _sim_run(tmp_path: Path, ops: list[AnyFaultOp], duration_ms: int,
             **settings: Any) -> dict[str, Any]:
    config = RunConfig.build({"seed": 2, "time-limit": duration_ms / 1000, "recovery": 1.0,
                              "final-read": 5.0, "nemesis": "kill,power-loss", **settings})
    schedule = Schedule(nodes=config.node_names, duration_ms=duration_ms, recovery_ms=1_000,
                        ops=ops)
    outcome = run(config, tmp_path, schedule=schedule, index=False)
    results: dict[str, Any] = json.loads((outcome.run_dir / "results.json").read_text())
    return results


def test_a_sim_kill_of_a_leader_yields_leader_change_and_election_states(
        tmp_path: Path) -> None:
    # n1 leads t1/0 (replicas n1, n2, n3); killed past the session timeout (9 s), it is
    # fenced and another replica is elected.
    results = _sim_run(tmp_path, [Kill(at_ms=1_000, nodes=["n1"]),
                                  Restart(at_ms=12_000, nodes=["n1"])], 12_000)
    states = results["coverage"]["states"]
    assert states.get("leader-change@kill", 0) >= 1, states
    assert states.get("clean-election@kill", 0) >= 1, states
    assert states.get("broker-fenced@kill", 0) >= 1, states


def test_a_sim_power_loss_with_unsynced_data_yields_recovery_truncation(
        tmp_path: Path) -> None:
    # --flush never (Kafka's default): n2's appends since the last fsync are lost.
    results = _sim_run(tmp_path, [PowerLoss(at_ms=2_000, nodes=["n2"]),
                                  Restart(at_ms=3_000, nodes=["n2"])], 4_000, flush="never")
    states = results["coverage"]["states"]
    assert states.get("recovery-truncation@power-loss", 0) >= 1, states
    # Without the power loss, nothing is lost and no recovery truncates.
    quiet = _sim_run(tmp_path / "quiet", [], 4_000, flush="never")
    assert quiet["coverage"]["kinds"]["recovery-truncation"] == 0, quiet["coverage"]


@pytest.mark.slow
def test_a_process_run_records_coverage_in_results_json(tmp_path: Path) -> None:
    config = RunConfig(target="process", seed=5, time_limit_s=14.0, recovery_s=2.0,
                       final_read_s=10.0, nemesis="kill", flush="every")
    schedule = Schedule(nodes=config.node_names, duration_ms=14_000, recovery_ms=2_000,
                        ops=[Kill(at_ms=2_000, nodes=["n1"]),
                             Restart(at_ms=13_000, nodes=["n1"])])
    outcome = run(config, tmp_path, schedule=schedule, index=False)
    results = json.loads((outcome.run_dir / "results.json").read_text())
    coverage = results["coverage"]
    timeline = (outcome.run_dir / "cluster.jsonl").read_text().splitlines()
    assert "origin_wall" in json.loads(timeline[0])
    # The broker processes' event lines are read and placed in the kill's context.
    assert coverage["states"].get("broker-fenced@kill", 0) >= 1, coverage["states"]
    assert coverage["kinds"]["leader-change"] >= 1, coverage
    report = (outcome.run_dir / "report.html").read_text()
    assert "<h2>Coverage</h2>" in report and "broker-fenced" in report


# -- the brokers' event lines at their code sites ---------------------------------------


def test_a_stale_producer_epoch_logs_producer_fenced(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from reference_broker.errors import InvalidProducerEpochError
    from tests.test_log_producer_state import PID, open_log, produce

    log = open_log(tmp_path)
    produce(log, 0, epoch=3)
    with caplog.at_level(logging.INFO, logger="faultline.broker.events"), \
            pytest.raises(InvalidProducerEpochError):
        produce(log, 2, epoch=2)
    assert (f"event=producer-fenced producer={PID} epoch=2 current=3"
            in [r.getMessage() for r in caplog.records])


def test_schedule_contexts_are_the_fault_combinations_a_schedule_puts_in_force() -> None:
    from harness.coverage import schedule_contexts
    from nemesis.ops import Kill, Restart, Schedule, StartPartition, StopPartition

    schedule = Schedule(nodes=["n1", "n2", "n3"], duration_ms=60_000, ops=[
        Kill(at_ms=1_000, nodes=["n1"]),
        StartPartition(at_ms=2_000, shape="halves", grudge={"n2": ["n3"]}),
        Restart(at_ms=3_000, nodes=["n1"]),
        StopPartition(at_ms=30_000),
    ])
    # quiet before, both while they overlap (and kill lingers 10 s after its restart),
    # the partition alone after that, quiet again 10 s after the last heal.
    assert schedule_contexts(schedule) == {"quiet", "kill", "kill+partition", "partition"}
    assert schedule_contexts(Schedule(nodes=["n1"], duration_ms=5_000)) == {"quiet"}
