"""Workloads in the simulation: valid histories without faults, byte-identical per seed."""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path
from typing import Literal

import trio

from checkers.anomalies import allowed_for
from checkers.verdict import Verdict, check_file
from harness.runtime.sim.cluster import SimCluster
from harness.runtime.sim.run import SimSettings, run_sim
from harness.runtime.sim.scheduler import derive_rng
from history.model import NemesisEvent, Send
from history.reader import HistoryReader
from history.writer import HistoryWriter
from workloads.base import WorkloadEnv, WorkloadOptions
from workloads.recorder import HistoryRecorder
from workloads.registry import WORKLOADS

BROKER_SETTINGS: dict[str, object] = {
    "group.initial.rebalance.delay.ms": 0,
    "log.flush.interval.ms": 500,
}
ENDPOINTS = ("c1", "c2", "c3")


def sim_env(cluster: SimCluster, opts: WorkloadOptions, seed: int) -> WorkloadEnv:
    """topic tK lives on node nK (the runner's single-node-era placement)."""
    nodes = list(cluster.nodes)
    for i, topic in enumerate(opts.topics):
        cluster.topic_homes[topic] = nodes[i % len(nodes)]
    return WorkloadEnv(
        bootstrap_for=lambda topic: cluster.node(cluster.topic_homes[topic]).address,
        network_for=cluster.client_network,
        clock_ms_for=lambda name: cluster.client_clock(name).now_ms,
        client_endpoints=ENDPOINTS,
        rng=derive_rng(seed, "workload"),
    )


def run_in_sim(
    name: str, opts: WorkloadOptions, seed: int, *, duration_s: float = 12.0, final_s: float = 10.0
) -> tuple[bytes, str, HistoryRecorder]:
    """Run workload `name` for `duration_s` simulated seconds plus its final reads."""
    stream = io.BytesIO()
    workload = WORKLOADS[name]()
    holder: list[HistoryRecorder] = []

    async def scenario(cluster: SimCluster) -> None:
        env = sim_env(cluster, opts, seed)
        start = trio.current_time()
        recorder = HistoryRecorder(
            HistoryWriter(stream), lambda: round((trio.current_time() - start) * 1e9)
        )
        holder.append(recorder)
        await workload.setup(env, opts)
        await workload.run(env, opts, recorder, trio.current_time() + duration_s)
        await workload.final_reads(env, opts, recorder, trio.current_time() + final_s)

    run_sim(scenario, seed, SimSettings(broker_settings=BROKER_SETTINGS))
    return stream.getvalue(), workload.checker_mode, holder[0]


def check_bytes(history: bytes, mode: str, tmp_path: Path) -> Verdict:
    path = tmp_path / "history.jsonl"
    path.write_bytes(history)
    return check_file(str(path), mode=mode)


def ops_of(history: bytes, tmp_path: Path) -> dict[str, dict[str, int]]:
    path = tmp_path / "ops.jsonl"
    path.write_bytes(history)
    counts: dict[str, dict[str, int]] = {}
    for event, _invoke in HistoryReader(str(path)):
        by = counts.setdefault(event.f, {})
        by[event.type] = by.get(event.type, 0) + 1
    return counts


QUEUE_OPTS = WorkloadOptions(rate=40.0, concurrency=6, crash_probability=0.02)


def test_queue_workload_without_faults_records_a_valid_history(tmp_path: Path) -> None:
    history, mode, recorder = run_in_sim("queue", QUEUE_OPTS, seed=7)
    verdict = check_bytes(history, mode, tmp_path)
    assert verdict["valid"] is True, verdict
    assert recorder.completions["ok"] == sum(
        by.get("ok", 0) for by in ops_of(history, tmp_path).values()
    )
    ops = ops_of(history, tmp_path)
    # Every kind of operation happened and most of them succeeded.
    assert ops["send"]["ok"] > 100
    assert ops["poll"]["ok"] > 50
    assert ops["assign"]["ok"] > 0 and ops["subscribe"]["ok"] > 0
    assert ops["commit"]["ok"] > 0
    assert ops["crash"]["info"] > 0
    messages = verdict["stats"]["messages"]
    # The final reads caught up: every acknowledged message was read.
    assert messages["acknowledged"] > 100
    assert messages["read"] >= messages["acknowledged"]
    assert mode == "subscribe"


def test_queue_workload_same_seed_writes_the_same_bytes() -> None:
    opts = replace(QUEUE_OPTS, rate=60.0)
    first, _, _ = run_in_sim("queue", opts, seed=11, duration_s=5.0, final_s=5.0)
    second, _, _ = run_in_sim("queue", opts, seed=11, duration_s=5.0, final_s=5.0)
    other, _, _ = run_in_sim("queue", opts, seed=12, duration_s=5.0, final_s=5.0)
    assert first == second
    assert first != other


def test_every_workload_names_a_checker_mode_the_checker_knows() -> None:
    assert set(WORKLOADS) == {"queue", "keyed-order", "group", "txn", "exactly-once"}
    for name, factory in WORKLOADS.items():
        workload = factory()
        assert workload.name == name
        assert allowed_for(workload.checker_mode)


def test_keyed_order_workload_without_faults_records_a_valid_history(tmp_path: Path) -> None:
    history, mode, _ = run_in_sim("keyed-order", QUEUE_OPTS, seed=5)
    assert mode == "assign"
    verdict = check_bytes(history, mode, tmp_path)
    assert verdict["valid"] is True, verdict
    ops = ops_of(history, tmp_path)
    assert ops["send"]["ok"] > 100 and ops["poll"]["ok"] > 50
    messages = verdict["stats"]["messages"]
    assert messages["read"] >= messages["acknowledged"] > 300
    # Several messages per send, several of one key: per-key order has something to prove.
    path = tmp_path / "h.jsonl"
    path.write_bytes(history)
    repeated = 0
    for event, _ in HistoryReader(str(path)):
        if isinstance(event, Send) and event.type == "ok":
            assert event.value is not None
            keys = [m.key for m in event.value]
            repeated += len(keys) - len(set(keys))
    assert repeated > 20


def test_keyed_order_workload_same_seed_writes_the_same_bytes() -> None:
    first, _, _ = run_in_sim("keyed-order", QUEUE_OPTS, seed=3, duration_s=4.0, final_s=4.0)
    second, _, _ = run_in_sim("keyed-order", QUEUE_OPTS, seed=3, duration_s=4.0, final_s=4.0)
    assert first == second


def group_history(
    commit: Literal["before", "after", "auto"], tmp_path: Path, seed: int = 3
) -> tuple[Verdict, dict[str, dict[str, int]]]:
    opts = replace(QUEUE_OPTS, commit=commit, crash_probability=0.05)
    history, mode, _ = run_in_sim("group", opts, seed=seed, duration_s=15.0)
    assert mode == "subscribe"
    return check_bytes(history, mode, tmp_path), ops_of(history, tmp_path)


def test_group_workload_commit_after_with_member_crashes_loses_nothing(tmp_path: Path) -> None:
    verdict, ops = group_history("after", tmp_path)
    assert verdict["valid"] is True, verdict
    assert ops["crash"]["info"] >= 5 and ops["commit"]["ok"] > 20
    assert verdict["stats"]["messages"]["read"] >= verdict["stats"]["messages"]["acknowledged"]


def test_group_workload_auto_commit_records_its_commits_and_is_valid(tmp_path: Path) -> None:
    verdict, ops = group_history("auto", tmp_path)
    assert verdict["valid"] is True, verdict
    # Auto-commits are periodic: far fewer than polls, but recorded.
    assert 0 < ops["commit"]["ok"] < ops["poll"]["ok"] / 2


def test_group_workload_commit_before_with_member_crashes_checks(tmp_path: Path) -> None:
    verdict, ops = group_history("before", tmp_path)
    assert ops["crash"]["info"] >= 5 and ops["commit"]["ok"] > 20
    # At most once: the only anomaly is a commit that passed a batch nobody processed.
    assert verdict["anomaly_types"] == ["lost-by-commit"], verdict["anomaly_types"]
    for evidence in verdict["anomalies"]["lost-by-commit"]:
        assert evidence


def test_group_workload_same_seed_writes_the_same_bytes() -> None:
    opts = replace(QUEUE_OPTS, commit="before", crash_probability=0.05)
    first, _, _ = run_in_sim("group", opts, seed=8, duration_s=8.0, final_s=4.0)
    second, _, _ = run_in_sim("group", opts, seed=8, duration_s=8.0, final_s=4.0)
    assert first == second


def test_group_workload_records_rebalances_on_completions(tmp_path: Path) -> None:
    opts = replace(QUEUE_OPTS, commit="after", crash_probability=0.05)
    history, _, _ = run_in_sim("group", opts, seed=3, duration_s=15.0)
    path = tmp_path / "h.jsonl"
    path.write_bytes(history)
    generations: dict[int, set[int]] = {}
    for event, _ in HistoryReader(str(path)):
        assert not isinstance(event, NemesisEvent), "this run has no faults"
        if event.generation is not None:
            assert event.assignment is not None and event.type in ("ok", "fail")
            generations.setdefault(event.process, set()).add(event.generation)
    # Members came and went: the group went through several generations.
    assert max(max(g) for g in generations.values()) >= 3
