"""A generated mixed schedule runs against real broker processes and leaves them healthy.

The same executor that drives the simulation drives `ProcessCluster`: SIGKILL, SIGSTOP,
power loss, clock files and trio fault proxies on loopback, in real time. Slow (real
sleeps), so opt in with `-m slow`.
"""

from __future__ import annotations

import io
from pathlib import Path

import msgspec
import pytest
import trio

from harness.runtime.process import NodeState, ProcessCluster
from history.model import NemesisEvent
from history.writer import HistoryWriter
from nemesis.executor import execute
from nemesis.generate import generate
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
