"""Each fault of the sim runtime takes effect on real brokers and real trio clients.

Every test runs a whole simulation (`run_sim`): reference brokers serving on the
simulated network, faultline's trio Kafka client dialing through it, faults injected
through `SimCluster`'s FaultTarget primitives, all in virtual time.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest
import trio

from harness.runtime.sim.cluster import SimCluster
from harness.runtime.sim.run import SimSettings, run_sim
from workloads.client import ConsumerConfig, Producer, ProducerConfig, TopicPartition
from workloads.client.consumer import Consumer

T = TypeVar("T")


def simulate(scenario: Callable[[SimCluster], Awaitable[T]], **broker_settings: object) -> T:
    settings = SimSettings(nodes=3, broker_settings={"num.partitions": 1, **broker_settings})
    return run_sim(scenario, seed=7, settings=settings).value


def producer(cluster: SimCluster, client: str, node: str = "n1", **overrides: object) -> Producer:
    config = ProducerConfig(
        bootstrap_servers=[cluster.node(node).address],
        client_id=client,
        request_timeout_ms=1_000,
        delivery_timeout_ms=30_000,
        socket_connection_setup_timeout_ms=1_000,
        linger_ms=0,
        **overrides,  # type: ignore[arg-type]
    )
    return Producer(
        config,
        network=cluster.client_network(client),
        rng=cluster.client_rng(client),
        clock_ms=cluster.client_clock(client).now_ms,
    )


async def read_all(cluster: SimCluster, client: str, topic: str, node: str = "n1") -> list[bytes]:
    config = ConsumerConfig(
        bootstrap_servers=[cluster.node(node).address],
        client_id=client,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=50,
    )
    async with Consumer(
        config, network=cluster.client_network(client), rng=cluster.client_rng(client)
    ) as consumer:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        consumer.seek_to_beginning([tp])
        values: list[bytes] = []
        for _ in range(5):
            values += [r.value or b"" for r in await consumer.poll(0.2)]
        return values


def test_a_partitioned_client_times_out_and_succeeds_after_heal() -> None:
    async def scenario(cluster: SimCluster) -> None:
        async with producer(cluster, "c1") as p:
            await p.send_and_wait("t", b"before")
            await cluster.block("c1", "n1")
            await cluster.block("n1", "c1")
            started = trio.current_time()
            with trio.move_on_after(5) as waited:
                await p.send_and_wait("t", b"during")
            assert waited.cancelled_caught, "a send crossed a partition"
            # A new connection cannot be made across the partition either (a DROP).
            with trio.move_on_after(3) as dialing:
                await cluster.client_network("c1").connect("n1", 9092)
            assert dialing.cancelled_caught
            await cluster.heal_network()
            metadata = await p.send_and_wait("t", b"after")
            assert trio.current_time() - started < 10
        # The held request was delivered after the heal; the producer retried it in order.
        assert metadata.offset is not None and metadata.offset >= 2
        assert await read_all(cluster, "reader", "t") == [b"before", b"during", b"after"]

    simulate(scenario)


def test_a_one_way_partition_holds_only_that_direction() -> None:
    async def scenario(cluster: SimCluster) -> None:
        async with producer(cluster, "c1") as p:
            await p.send_and_wait("t", b"a")
            await cluster.block("n1", "c1")  # answers are held, requests arrive
            with trio.move_on_after(2) as waited:
                await p.send_and_wait("t", b"b")
            assert waited.cancelled_caught
            # The request got through: the record is in the log although unanswered.
            assert await read_all(cluster, "reader", "t") == [b"a", b"b"]
            await cluster.unblock("n1", "c1")
            await p.flush()

    simulate(scenario)


def test_a_killed_node_refuses_connections_at_once_and_keeps_its_data() -> None:
    async def scenario(cluster: SimCluster) -> None:
        async with producer(cluster, "c1") as p:
            for i in range(3):
                await p.send_and_wait("t", b"v%d" % i)
        await cluster.kill("n1")
        before = trio.current_time()
        with pytest.raises(ConnectionRefusedError):
            await cluster.client_network("c2").connect("n1", 9092)
        # Refused within a round trip, not after a timeout.
        assert trio.current_time() - before < 0.01
        await cluster.restart("n1")
        # kill = SIGKILL: the page cache survives, so even unflushed records remain.
        assert await read_all(cluster, "reader", "t") == [b"v0", b"v1", b"v2"]
        assert cluster.node("n1").incarnation == 2

    simulate(scenario)


def test_power_loss_drops_exactly_the_unsynced_suffix() -> None:
    async def scenario(cluster: SimCluster) -> None:
        async with producer(cluster, "c1") as p:
            for i in range(3):
                await p.send_and_wait("t", b"v%d" % i)
        disk = cluster.node("n1").disk
        durable = {path: disk.durable_file(path) for path in disk.files}
        assert any(disk.read_file(p) != durable[p] for p in durable), "nothing was unsynced"
        await cluster.power_loss("n1")
        assert {path: disk.read_file(path) for path in disk.files} == durable
        await cluster.restart("n1")
        # flush.messages=2: the broker fsynced after the second record, not the third.
        assert await read_all(cluster, "reader", "t") == [b"v0", b"v1"]

    simulate(scenario, **{"log.flush.interval.messages": 2})


def test_a_paused_node_stops_answering_and_resumes() -> None:
    async def scenario(cluster: SimCluster) -> None:
        async with producer(cluster, "c1") as p:
            await p.send_and_wait("t", b"a")
            await cluster.pause("n1")
            pending = await p.send("t", b"b")
            await trio.sleep(5)
            assert not pending.done, "a paused node answered"
            await cluster.resume("n1")
            with trio.fail_after(5):
                metadata = await pending.wait()
            assert metadata.offset == 1
        assert await read_all(cluster, "reader", "t") == [b"a", b"b"]

    simulate(scenario)


def test_a_skewed_clock_shows_in_record_timestamps() -> None:
    hour_ms = 3_600_000

    async def scenario(cluster: SimCluster) -> tuple[int, int, int]:
        async with producer(cluster, "c1") as p:
            plain = await p.send_and_wait("t", b"a")
            await cluster.bump_clock("n1", hour_ms)
            skewed = await p.send_and_wait("t", b"b")
            await cluster.reset_clock("n1")
            back = await p.send_and_wait("t", b"c")
        return plain.timestamp_ms, skewed.timestamp_ms, back.timestamp_ms

    # LogAppendTime: the broker's clock stamps the batch, as the nemesis intends.
    plain, skewed, back = simulate(scenario, **{"log.message.timestamp.type": "LogAppendTime"})
    assert hour_ms <= skewed - plain < hour_ms + 1_000
    assert 0 <= back - plain < 1_000


def test_link_latency_and_reset_take_effect_on_a_client() -> None:
    from nemesis.target import LinkFault

    async def scenario(cluster: SimCluster) -> None:
        async with producer(cluster, "c1") as p:
            await p.send_and_wait("t", b"warm")
            start = trio.current_time()
            await p.send_and_wait("t", b"fast")
            fast = trio.current_time() - start
            await cluster.set_link_fault("c1", "n1", LinkFault(latency_ms=100))
            await cluster.set_link_fault("n1", "c1", LinkFault(latency_ms=100))
            start = trio.current_time()
            await p.send_and_wait("t", b"slow")
            slow = trio.current_time() - start
            assert fast < 0.01 and 0.2 <= slow < 0.3
            await cluster.heal_network()
            await cluster.reset_connections("n1")
            # The producer notices the RST, reconnects and delivers.
            await p.send_and_wait("t", b"after-reset")
        assert await read_all(cluster, "reader", "t") == [b"warm", b"fast", b"slow", b"after-reset"]

    simulate(scenario)


def test_a_run_ending_while_nodes_are_paused_still_tears_down() -> None:
    """A paused node's shutdown must not wait on its frozen I/O: with no timer left, the
    idle MockClock would never move and trio would spin forever."""

    async def scenario(cluster: SimCluster) -> str:
        for node in cluster.nodes:
            await cluster.pause(node)
        return "done"

    outcome: list[str] = []
    worker = threading.Thread(
        target=lambda: outcome.append(run_sim(scenario, seed=3).value), daemon=True
    )
    worker.start()
    worker.join(60)
    assert not worker.is_alive(), "run_sim did not return: teardown waits on a paused node"
    assert outcome == ["done"]
