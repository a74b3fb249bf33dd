"""Every fault of the process runtime takes effect on real broker processes, seen by real
clients (faultline's trio client over TCP) through the harness's fault proxies."""

from __future__ import annotations

import struct
import time
from pathlib import Path

import pytest
import trio

from harness.runtime.process import NodeState, ProcessCluster
from workloads.client import (
    ConsumerConfig,
    KafkaClientError,
    Producer,
    ProducerConfig,
    TopicPartition,
    UnknownOutcome,
)
from workloads.client.consumer import Consumer, ConsumerRecord

FAST = {"request.timeout.ms": 500, "delivery.timeout.ms": 1000, "retries": 0, "linger.ms": 0}


def producer_config(bootstrap: str, **extra: object) -> ProducerConfig:
    """A producer that gives up fast: one attempt, 500 ms per request."""
    settings: dict[str, object] = {"bootstrap.servers": bootstrap, **FAST}
    settings.update(extra)
    return ProducerConfig.from_kafka(settings)


async def read_all(bootstrap: str, topic: str, expected: int, timeout_s: float = 10) -> list[bytes]:
    """Values of partition 0 of `topic` from the beginning, until `expected` arrived."""
    config = ConsumerConfig.from_kafka(
        {"bootstrap.servers": bootstrap, "auto.offset.reset": "earliest", "max.block.ms": 5000}
    )
    values: list[bytes] = []
    async with Consumer(config) as consumer:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        with trio.move_on_after(timeout_s):
            while len(values) < expected:
                values += [r.value or b"" for r in await consumer.poll(0.2)]
        # Anything beyond `expected` would show up in one more poll.
        values += [r.value or b"" for r in await consumer.poll(0.3)]
    return values


async def produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    """Send each value as its own request (acks=1), waiting for every ack."""
    async with Producer(producer_config(bootstrap, acks=1, **{"enable.idempotence": False})) as p:
        await p.cluster.create_topic(topic, 1)
        for value in values:
            await p.send_and_wait(topic, value, partition=0)


async def test_a_partitioned_client_times_out_and_succeeds_after_heal(tmp_path: Path) -> None:
    async with ProcessCluster(tmp_path, 1) as cluster:
        bootstrap = cluster.client_address("n1")
        async with Producer(producer_config(bootstrap)) as producer:
            await producer.cluster.create_topic("part", 1)
            await producer.send_and_wait("part", b"before", partition=0)
            await cluster.block("clients", "n1")
            started = trio.current_time()
            with pytest.raises(UnknownOutcome):
                await producer.send_and_wait("part", b"during", partition=0)
            assert trio.current_time() - started >= 0.5  # it waited for request.timeout.ms
            await cluster.heal_network()
        async with Producer(producer_config(bootstrap)) as producer:
            meta = await producer.send_and_wait("part", b"after", partition=0)
        # The held request reached the broker at heal: its outcome was truly unknown.
        values = await read_all(bootstrap, "part", 3)
        assert values[0] == b"before" and values[-1] == b"after"
        assert set(values) <= {b"before", b"during", b"after"}
        assert meta.offset == len(values) - 1


async def test_a_one_way_partition_from_the_broker_also_times_out(tmp_path: Path) -> None:
    async with ProcessCluster(tmp_path, 1) as cluster:
        bootstrap = cluster.client_address("n1")
        async with Producer(producer_config(bootstrap)) as producer:
            await producer.cluster.create_topic("oneway", 1)
            # On an open connection; a new one could not even complete its handshake.
            await producer.send_and_wait("oneway", b"heard", partition=0)
            await cluster.block("n1", "clients")
            with pytest.raises(UnknownOutcome):
                await producer.send_and_wait("oneway", b"unheard", partition=0)
            await cluster.unblock("n1", "clients")
        # The broker heard the request; only its answer was held.
        assert await read_all(bootstrap, "oneway", 2) == [b"heard", b"unheard"]


async def api_versions_round_trip(address: str) -> bytes:
    """One ApiVersions v0 request on a fresh connection; returns the response frame."""
    host, port = address.rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        client_id = b"probe"
        body = struct.pack(">hhih", 18, 0, 7, len(client_id)) + client_id
        await stream.send_all(struct.pack(">i", len(body)) + body)
        data = b""
        while len(data) < 4 or len(data) < 4 + struct.unpack(">i", data[:4])[0]:
            chunk = await stream.receive_some(65536)
            if not chunk:
                raise trio.BrokenResourceError("connection closed")
            data += chunk
        return data


async def test_a_killed_node_refuses_connections_and_recovers_its_data_on_restart(
    tmp_path: Path,
) -> None:
    async with ProcessCluster(tmp_path, 2) as cluster:
        bootstrap = cluster.client_address("n1")
        await produce(bootstrap, "durable", [b"a", b"b", b"c"])
        pid = cluster.broker("n1").pid
        await cluster.kill("n1")
        assert cluster.broker("n1").state is NodeState.STOPPED
        assert cluster.broker("n1").exit_codes == [-9]  # SIGKILL
        started = time.monotonic()
        with trio.fail_after(1), pytest.raises(trio.BrokenResourceError):
            await api_versions_round_trip(bootstrap)
        assert time.monotonic() - started < 0.5  # refused at once, not timed out
        # n2 is untouched.
        assert await api_versions_round_trip(cluster.client_address("n2"))
        await cluster.restart("n1")
        assert cluster.broker("n1").pid != pid
        assert await read_all(bootstrap, "durable", 3) == [b"a", b"b", b"c"]


async def test_power_loss_drops_exactly_the_unsynced_suffix_while_kill_keeps_it(
    tmp_path: Path,
) -> None:
    settings = {"log.flush.interval.messages": 3}
    values = [str(i).encode() for i in range(7)]
    async with ProcessCluster(tmp_path, 2, settings=settings, power_loss=True) as cluster:
        on_n1, on_n2 = cluster.client_address("n1"), cluster.client_address("n2")
        await produce(on_n1, "cut", values)
        await produce(on_n2, "cut", values)
        await cluster.power_loss("n1")
        await cluster.kill("n2")
        # SIGUSR2: the broker left its buffers to the OS and exited as if SIGKILLed.
        assert cluster.broker("n2").exit_codes == [137]
        assert "unsynced bytes left to the OS" in cluster.broker("n2").log_path.read_text()
        await cluster.restart("n1")
        await cluster.restart("n2")
        # 7 acknowledged, fsync every 3 messages: a power cut keeps the first 6 ...
        assert await read_all(on_n1, "cut", 6) == values[:6]
        # ... a process crash keeps everything the broker wrote, synced or not.
        assert await read_all(on_n2, "cut", 7) == values


async def test_a_paused_node_stops_answering_and_resumes(tmp_path: Path) -> None:
    async with ProcessCluster(tmp_path, 1) as cluster:
        bootstrap = cluster.client_address("n1")
        async with Producer(producer_config(bootstrap)) as producer:
            await producer.cluster.create_topic("nap", 1)
            await cluster.pause("n1")
            assert cluster.broker("n1").state is NodeState.PAUSED
            with pytest.raises(KafkaClientError):
                await producer.send_and_wait("nap", b"asleep", partition=0)
            with trio.move_on_after(0.5) as silent:
                await api_versions_round_trip(bootstrap)
            assert silent.cancelled_caught, "a paused broker answered"
            await cluster.resume("n1")
            with trio.fail_after(5):
                assert await api_versions_round_trip(bootstrap)
            await producer.send_and_wait("nap", b"awake", partition=0)


async def test_a_skewed_clock_shows_in_log_append_timestamps(tmp_path: Path) -> None:
    hour_ms = 3_600_000
    async with ProcessCluster(tmp_path, 1) as cluster:
        bootstrap = cluster.client_address("n1")
        config = producer_config(
            bootstrap, **{"request.timeout.ms": 5000, "delivery.timeout.ms": 10000}
        )
        async with Producer(config) as producer:
            topic_config = {"message.timestamp.type": "LogAppendTime"}
            await producer.cluster.create_topic("ticks", 1, configs=topic_config)
            in_step = await producer.send_and_wait("ticks", b"0", partition=0)
            await cluster.bump_clock("n1", hour_ms)
            await trio.sleep(0.2)  # SIGUSR1 is acted on by the broker's event loop
            skewed = await producer.send_and_wait("ticks", b"1", partition=0)
            await cluster.reset_clock("n1")
            await trio.sleep(0.2)
            back = await producer.send_and_wait("ticks", b"2", partition=0)
        now_ms = time.time_ns() // 1_000_000
        assert abs(in_step.timestamp_ms - now_ms) < 60_000
        assert abs(skewed.timestamp_ms - (now_ms + hour_ms)) < 60_000
        assert abs(back.timestamp_ms - now_ms) < 60_000
        # The consumer sees the broker-assigned timestamps too.
        consumer_config = ConsumerConfig.from_kafka(
            {"bootstrap.servers": bootstrap, "auto.offset.reset": "earliest"}
        )
        async with Consumer(consumer_config) as consumer:
            consumer.assign([TopicPartition("ticks", 0)])
            records: list[ConsumerRecord] = []
            with trio.fail_after(10):
                while len(records) < 3:
                    records += await consumer.poll(0.2)
        assert [r.timestamp_ms for r in records] == [
            in_step.timestamp_ms,
            skewed.timestamp_ms,
            back.timestamp_ms,
        ]


async def test_a_skew_survives_a_restart(tmp_path: Path) -> None:
    async with ProcessCluster(tmp_path, 1) as cluster:
        await cluster.bump_clock("n1", -86_400_000)
        await cluster.kill("n1")
        await cluster.restart("n1")
        assert "clock skewed by -86400000 ms" in cluster.broker("n1").log_path.read_text()


async def test_reset_connections_breaks_the_clients_connection(tmp_path: Path) -> None:
    async with ProcessCluster(tmp_path, 1) as cluster:
        host, port = cluster.client_address("n1").rsplit(":", 1)
        stream = await trio.open_tcp_stream(host, int(port))
        await trio.sleep(0.1)  # let the proxy connect upstream
        await cluster.reset_connections("n1")
        with trio.fail_after(2), pytest.raises(trio.BrokenResourceError) as reset:
            await stream.receive_some(10)
        assert isinstance(reset.value.__cause__, ConnectionResetError)
        # New connections work at once.
        assert await api_versions_round_trip(cluster.client_address("n1"))


async def test_broker_to_broker_links_go_through_their_own_faultable_proxies(
    tmp_path: Path,
) -> None:
    async with ProcessCluster(tmp_path, 3) as cluster:
        n1_to_n2 = cluster.peer_addresses("n1")[2]
        n3_to_n2 = cluster.peer_addresses("n3")[2]
        assert await api_versions_round_trip(n1_to_n2)  # relayed to n2
        await cluster.block("n1", "n2")
        with trio.move_on_after(0.5) as held:
            await api_versions_round_trip(n1_to_n2)
        assert held.cancelled_caught, "n1 reached n2 across a blocked link"
        # Other links into n2 are untouched.
        assert await api_versions_round_trip(n3_to_n2)
        assert await api_versions_round_trip(cluster.client_address("n2"))
        await cluster.heal_network()
        assert await api_versions_round_trip(n1_to_n2)
