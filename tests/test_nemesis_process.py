"""A generated mixed schedule runs against real broker processes and leaves them healthy.

The same executor that drives the simulation drives `ProcessCluster`: SIGKILL, SIGSTOP,
power loss, clock files and trio fault proxies on loopback, in real time. Slow (real
sleeps), so opt in with `-m slow`.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest
import trio

from harness.runtime.process import NodeState, ProcessCluster
from history.model import NemesisEvent
from history.writer import HistoryWriter
from nemesis.executor import Executor, execute
from nemesis.generate import generate
from nemesis.ops import LeaderTarget, StartPartition
from workloads.client import Producer, ProducerConfig


@pytest.mark.slow
async def test_a_mixed_schedule_breaks_broker_processes_and_leaves_them_serving(
    tmp_path: Path,
) -> None:
    async with ProcessCluster(tmp_path, 3, power_loss=True) as cluster:
        schedule = generate(
            "mixed",
            nodes=cluster.nodes,
            clients=cluster.clients,
            duration_ms=12_000,
            interval_ms=800,
            recovery_ms=500,
            seed=3,
        )
        stream = io.BytesIO()
        ledger = await execute(schedule, cluster, HistoryWriter(stream))
        assert ledger.healthy()
        for name in cluster.nodes:
            assert cluster.broker(name).state is NodeState.RUNNING, name
            config = ProducerConfig.from_kafka(
                {"bootstrap.servers": cluster.client_address(name), "linger.ms": 0}
            )
            with trio.fail_after(30):
                async with Producer(config) as producer:
                    sent = await producer.send_and_wait(f"after-{name}", b"ok", partition=0)
            assert sent.offset == 0

    decoder = msgspec.json.Decoder(NemesisEvent)
    events = [decoder.decode(line) for line in stream.getvalue().splitlines()]
    scheduled = [op.__struct_config__.tag for op in schedule.ops]
    assert len(scheduled) >= 8
    assert [e.f for e in events[: len(scheduled)]] == scheduled
    assert all(e.error is None for e in events)


async def _wait_for(predicate: Callable[[], bool], timeout_s: float = 30.0) -> None:
    with trio.fail_after(timeout_s):
        while not predicate():
            await trio.sleep(0.1)


async def test_leader_targeted_partitions_find_the_leader_of_a_process_cluster(
    tmp_path: Path,
) -> None:
    """`leader_of` and `controller` on real broker processes: what the brokers say over
    the wire, followed through a leader kill, so a `leader` partition isolates the
    partition's leader (resolved_by leader_of), not a fallback node."""
    settings = {"default.replication.factor": 3, "min.insync.replicas": 2,
                "num.partitions": 1, "broker.session.timeout.ms": 3000,
                "broker.heartbeat.interval.ms": 500}
    async with ProcessCluster(tmp_path, 3, quorum=True, settings=settings) as cluster:
        config = ProducerConfig.from_kafka({"bootstrap.servers": cluster.bootstrap})
        with trio.fail_after(60):
            async with Producer(config) as producer:
                await producer.send_and_wait("t", b"x", partition=0)
        await _wait_for(lambda: cluster.leader_of("t", 0) is not None
                        and cluster.controller() is not None)
        leader = cluster.leader_of("t", 0)
        assert leader is not None and leader in cluster.nodes
        assert cluster.controller() in cluster.nodes

        await cluster.kill(leader)
        await _wait_for(lambda: cluster.leader_of("t", 0) not in (None, leader))
        moved = cluster.leader_of("t", 0)

        stream = io.BytesIO()
        executor = Executor(cluster, HistoryWriter(stream), origin=trio.current_time())
        async with trio.open_nursery() as strobes:
            await executor.apply(StartPartition(
                at_ms=0, shape="leader", leader=LeaderTarget(log="t/0", fallback="n1")),
                strobes)
            await executor.heal_everything()
        start = msgspec.json.decode(stream.getvalue().splitlines()[0])
        assert start["f"] == "start-partition"
        assert (start["value"]["isolated"], start["value"]["resolved_by"]) == (moved, "leader_of")
