"""Workloads against real broker processes, through faultline's client and third-party ones."""

from __future__ import annotations

import io
import random
from pathlib import Path

import pytest
import trio

from checkers.verdict import Verdict, check_file
from harness.runtime.process import ProcessCluster
from history.reader import HistoryReader
from history.writer import HistoryWriter
from workloads.adapters import ClientLibraryError, SessionSpec, open_session
from workloads.base import WorkloadEnv, WorkloadOptions
from workloads.client import TcpNetwork
from workloads.client.transport import wall_clock_ms
from workloads.recorder import HistoryRecorder
from workloads.registry import WORKLOADS

SETTINGS: dict[str, object] = {"group.initial.rebalance.delay.ms": 0}
OPTS = WorkloadOptions(
    topics=("t1", "t2"), rate=40.0, concurrency=4, crash_probability=0.03, keys=10
)


def process_env(cluster: ProcessCluster, library: str, seed: int = 1) -> WorkloadEnv:
    network = TcpNetwork()
    return WorkloadEnv(
        bootstrap_for=lambda topic: cluster.bootstrap,
        network_for=lambda endpoint: network,
        clock_ms_for=lambda endpoint: wall_clock_ms,
        client_endpoints=cluster.clients,
        rng=random.Random(seed),
        client_library=library,
    )


async def run_queue(
    tmp_path: Path, library: str, duration_s: float = 4.0
) -> tuple[Verdict, dict[str, dict[str, int]]]:
    stream = io.BytesIO()
    workload = WORKLOADS["queue"]()
    async with ProcessCluster(tmp_path / "cluster", 1, settings=SETTINGS) as cluster:
        env = process_env(cluster, library)
        start = trio.current_time()
        recorder = HistoryRecorder(
            HistoryWriter(stream), lambda: round((trio.current_time() - start) * 1e9)
        )
        await workload.setup(env, OPTS)
        await workload.run(env, OPTS, recorder, trio.current_time() + duration_s)
        await workload.final_reads(env, OPTS, recorder, trio.current_time() + 8.0)
    path = tmp_path / "history.jsonl"
    path.write_bytes(stream.getvalue())
    ops: dict[str, dict[str, int]] = {}
    for event, _ in HistoryReader(str(path)):
        by = ops.setdefault(event.f, {})
        by[event.type] = by.get(event.type, 0) + 1
    return check_file(str(path), mode=workload.checker_mode), ops


@pytest.mark.parametrize("library", ["faultline", "kafka-python", "confluent-kafka"])
async def test_queue_run_against_a_process_broker_records_a_valid_history(
    tmp_path: Path, library: str
) -> None:
    verdict, ops = await run_queue(tmp_path, library)
    assert verdict["valid"] is True, verdict
    assert ops["send"]["ok"] > 20, ops
    assert ops["poll"]["ok"] > 10, ops
    messages = verdict["stats"]["messages"]
    # Final reads caught up with every acknowledged message.
    assert messages["read"] >= messages["acknowledged"] > 20


async def test_third_party_clients_refuse_the_simulated_network() -> None:
    class SimLike:
        async def connect(self, host: str, port: int) -> trio.abc.Stream:
            raise AssertionError("never dialled")

    env = WorkloadEnv(
        bootstrap_for=lambda topic: "n1:9092",
        network_for=lambda endpoint: SimLike(),
        clock_ms_for=lambda endpoint: lambda: 0,
        client_endpoints=["c1"],
        rng=random.Random(0),
        client_library="kafka-python",
    )
    with pytest.raises(ClientLibraryError, match="cannot run inside the simulation"):
        open_session(env, "c1", SessionSpec("n1:9092", "x"), random.Random(0))
    env.client_library = "no-such-client"
    with pytest.raises(ClientLibraryError, match="unknown client library"):
        open_session(env, "c1", SessionSpec("n1:9092", "x"), random.Random(0))
