"""Consumer and producer behaviours of faultline's client on the reference broker.

Positions, seek, auto.offset.reset, sync and async commits, eager rebalance callbacks
with generations, max.poll.interval.ms eviction, linger/batch.size batching, acks=0.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import trio

from harness.broker_process import BrokerProcess
from workloads.client import ConsumerConfig, Producer, ProducerConfig, TopicPartition
from workloads.client.consumer import Consumer, OffsetOutOfRangeError

GROUP_SETTINGS = {"num.partitions": 2, "group.initial.rebalance.delay.ms": 0}


async def fill(bootstrap: str, topic: str, partitions: int, count: int) -> None:
    """Create `topic` and write values 0..count-1 round-robin over its partitions."""
    config = ProducerConfig.from_kafka({"bootstrap.servers": bootstrap, "linger.ms": 1})
    async with Producer(config) as producer:
        await producer.cluster.create_topic(topic, partitions)
        for i in range(count):
            await producer.send(topic, str(i).encode(), partition=i % partitions)


def consumer_config(bootstrap: str, **extra: object) -> ConsumerConfig:
    """Consumer settings for tests."""
    settings: dict[str, object] = {"bootstrap.servers": bootstrap, "max.block.ms": 10000}
    settings.update(extra)
    return ConsumerConfig.from_kafka(settings)


async def poll_until(consumer: Consumer, count: int, timeout_s: float = 20) -> list[int]:
    """Values polled until `count` arrived."""
    values: list[int] = []
    with trio.fail_after(timeout_s):
        while len(values) < count:
            values += [int(r.value) for r in await consumer.poll(0.5)]  # type: ignore[arg-type]
    return values


async def test_positions_seek_and_offset_reset(broker: BrokerProcess) -> None:
    await fill(broker.bootstrap, "pos", 1, 10)
    tp = TopicPartition("pos", 0)
    async with Consumer(consumer_config(broker.bootstrap, **{"auto.offset.reset": "latest"})) as c:
        c.assign([tp])
        assert await c.position(tp) == 10
        assert await c.poll(0.2) == []
        c.seek(tp, 4)
        assert await poll_until(c, 6) == [4, 5, 6, 7, 8, 9]
        assert await c.position(tp) == 10
        c.seek_to_beginning([tp])
        assert await c.position(tp) == 0
        c.seek(tp, 1000)  # past the end: OFFSET_OUT_OF_RANGE, reset by policy (latest)
        assert await c.poll(0.5) == []
        assert await c.position(tp) == 10
    config = consumer_config(broker.bootstrap, **{"auto.offset.reset": "none"})
    async with Consumer(config) as c:
        c.assign([tp])
        with pytest.raises(OffsetOutOfRangeError, match=r"auto\.offset\.reset=none"):
            await c.position(tp)


async def test_sync_and_async_commits_are_read_back(broker: BrokerProcess) -> None:
    await fill(broker.bootstrap, "commits", 2, 20)
    tps = [TopicPartition("commits", 0), TopicPartition("commits", 1)]
    config = consumer_config(
        broker.bootstrap,
        **{"group.id": "committer", "enable.auto.commit": False, "auto.offset.reset": "earliest"},
    )
    async with Consumer(config) as c:
        c.assign(tps)
        await poll_until(c, 20)
        await c.commit({tps[0]: 3})
        assert (await c.committed(tps)) == {tps[0]: 3, tps[1]: None}
        done = trio.Event()
        results: list[Exception | None] = []

        def callback(_offsets: object, error: Exception | None) -> None:
            results.append(error)
            done.set()

        c.commit_async(callback=callback)
        with trio.fail_after(10):
            await done.wait()
        assert results == [None]
        assert (await c.committed(tps)) == {tps[0]: 10, tps[1]: 10}
    # A new consumer of the group resumes from the committed offsets.
    async with Consumer(config) as c:
        c.assign(tps)
        assert await c.position(tps[0]) == 10


class Recorder:
    """A rebalance listener that records every callback."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, set[TopicPartition], int | None]] = []

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self.calls.append(("revoked", set(revoked), None))

    async def on_partitions_assigned(self, assigned: set[TopicPartition], generation: int) -> None:
        self.calls.append(("assigned", set(assigned), generation))

    async def on_partitions_lost(self, lost: set[TopicPartition]) -> None:
        self.calls.append(("lost", set(lost), None))


async def test_eager_rebalance_revokes_everything_and_reports_generations(
    broker_factory: Callable[..., BrokerProcess],
) -> None:
    broker = broker_factory(settings=GROUP_SETTINGS)
    await fill(broker.bootstrap, "eager", 2, 10)
    config = consumer_config(
        broker.bootstrap,
        **{
            "group.id": "eager-group",
            "auto.offset.reset": "earliest",
            "partition.assignment.strategy": "range",
            "session.timeout.ms": 10000,
            "heartbeat.interval.ms": 300,
        },
    )
    first, second = Recorder(), Recorder()
    async with Consumer(config) as a:
        a.subscribe(["eager"], first)
        await poll_until(a, 10)
        assert first.calls[-1][0] == "assigned" and len(first.calls[-1][1]) == 2
        gen1 = first.calls[-1][2]
        async with Consumer(config) as b:
            b.subscribe(["eager"], second)

            async def keep_polling(c: Consumer) -> None:
                with trio.move_on_after(6):
                    while not (len(a.assignment()) == 1 and len(b.assignment()) == 1):
                        await c.poll(0.2)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(keep_polling, a)
                nursery.start_soon(keep_polling, b)
            assert a.assignment() | b.assignment() == {
                TopicPartition("eager", 0),
                TopicPartition("eager", 1),
            }
            assert not a.assignment() & b.assignment()
            assert a.generation == b.generation > gen1  # type: ignore[operator]
    # Eager: the first member gave up both partitions before it got one back.
    kinds = [(kind, len(tps)) for kind, tps, _ in first.calls]
    assert ("revoked", 2) in kinds
    assert kinds[-1] == ("assigned", 1)
    assert second.calls[-1][2] == first.calls[-1][2]


async def test_member_that_stops_polling_leaves_and_its_partitions_move(
    broker_factory: Callable[..., BrokerProcess],
) -> None:
    broker = broker_factory(settings=GROUP_SETTINGS)
    await fill(broker.bootstrap, "slow", 2, 4)
    base = {
        "group.id": "slow-group",
        "auto.offset.reset": "earliest",
        "partition.assignment.strategy": "cooperative-sticky",
        "session.timeout.ms": 10000,
        "heartbeat.interval.ms": 200,
    }
    slow_config = consumer_config(broker.bootstrap, **base, **{"max.poll.interval.ms": 1500})
    async with (
        Consumer(slow_config) as slow,
        Consumer(consumer_config(broker.bootstrap, **base)) as busy,
    ):
        slow.subscribe(["slow"])
        busy.subscribe(["slow"])

        async def poll_until_both_assigned(consumer: Consumer) -> None:
            # Each member polls on its own: a JoinGroup the coordinator holds until the
            # other member rejoins must not wait for the other's poll to return first.
            while not (slow.assignment() and busy.assignment()):
                await consumer.poll(0.2)

        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(poll_until_both_assigned, slow)
                nursery.start_soon(poll_until_both_assigned, busy)
        # `slow` stops calling poll(); its heartbeat task leaves after max.poll.interval.ms.
        with trio.fail_after(20):
            while len(busy.assignment()) < 2:
                await busy.poll(0.2)
        assert slow.member_id == ""


async def test_linger_and_batch_size_shape_batches(broker: BrokerProcess) -> None:
    config = ProducerConfig.from_kafka(
        {"bootstrap.servers": broker.bootstrap, "linger.ms": 200, "batch.size": 1000}
    )
    async with Producer(config) as producer:
        await producer.cluster.create_topic("batched", 1)
        started = trio.current_time()
        first = await producer.send_and_wait("batched", b"x" * 10)
        # A lone record waits for linger.ms before it is sent.
        assert trio.current_time() - started >= 0.18
        deliveries = [await producer.send("batched", b"y" * 100) for _ in range(30)]
        # 30 records of ~110 bytes cannot share one 1000-byte batch: several are full and
        # go out without waiting for the linger.
        await producer.flush()
        offsets = [(await d.wait()).offset for d in deliveries]
    assert first.offset == 0
    assert offsets == list(range(1, 31))


async def test_acks_zero_reports_no_offset_and_the_record_arrives(broker: BrokerProcess) -> None:
    config = ProducerConfig.from_kafka(
        {"bootstrap.servers": broker.bootstrap, "acks": 0, "linger.ms": 0}
    )
    async with Producer(config) as producer:
        await producer.cluster.create_topic("fire", 1)
        meta = await producer.send_and_wait("fire", b"forgotten")
    assert meta.offset is None and meta.partition == 0
    async with Consumer(
        consumer_config(broker.bootstrap, **{"auto.offset.reset": "earliest"})
    ) as c:
        c.assign([TopicPartition("fire", 0)])
        assert [r.value for r in await c.poll(5)] == [b"forgotten"]
