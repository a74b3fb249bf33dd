"""Workloads in the simulation: histories that check valid without faults, byte-identical per seed."""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import trio

from checkers.anomalies import allowed_for
from checkers.verdict import check_file
from harness.runtime.sim.cluster import SimCluster
from harness.runtime.sim.run import SimSettings, run_sim
from harness.runtime.sim.scheduler import derive_rng
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


def check_bytes(history: bytes, mode: str, tmp_path: Path) -> dict:
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


def test_allowed_modes_exist() -> None:
    for name in WORKLOADS:
        assert allowed_for(WORKLOADS[name]().checker_mode) is not None
