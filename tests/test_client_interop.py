"""faultline's trio client against the reference broker process, beside kafka-python.

- records produced by our client are read by kafka-python on the partition our client
  reported, which is also the partition kafka-python's partitioner picks for the key;
  and the reverse;
- a group mixing our client and kafka-python members splits the partitions between
  them (range and cooperative-sticky);
- through a small fault proxy (test-only; issue 5 brings the real one): an idempotent
  producer whose Produce response is dropped retries without duplicating, while a
  non-idempotent one whose connection is reset after the broker appended duplicates.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections import Counter, deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
import trio
from kafka import KafkaConsumer, KafkaProducer
from kafka import TopicPartition as KafkaTopicPartition
from kafka.partitioner.default import murmur2 as kafka_python_murmur2

from harness.broker_process import BrokerProcess
from workloads.client import (
    ConsumerConfig,
    Producer,
    ProducerConfig,
    TopicPartition,
    UnknownOutcome,
)
from workloads.client.consumer import Consumer
from workloads.client.partitioner import partition_for_key

PRODUCE = 0
GROUP_SETTINGS = {"num.partitions": 3, "group.initial.rebalance.delay.ms": 0}


def producer_config(bootstrap: str, **overrides: object) -> ProducerConfig:
    """Producer settings for tests: fail fast instead of Kafka's minute-long waits."""
    base: dict[str, object] = {"bootstrap.servers": bootstrap, "max.block.ms": 15000}
    base.update(overrides)
    return ProducerConfig.from_kafka(base)


def read_all(bootstrap: str, topic: str, partitions: int) -> list[tuple[int, int, bytes, bytes]]:
    """Every record of a topic as (partition, offset, key, value), read with kafka-python."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, auto_offset_reset="earliest", consumer_timeout_ms=2000
    )
    consumer.assign([KafkaTopicPartition(topic, p) for p in range(partitions)])
    out = [(m.partition, m.offset, m.key, m.value) for m in consumer]
    consumer.close()
    return out


async def test_records_from_our_producer_land_where_kafka_python_expects(
    broker: BrokerProcess,
) -> None:
    """Same partition per key as kafka-python's partitioner; kafka-python reads each once."""
    keys = [f"key-{i}".encode() for i in range(40)]
    reported: dict[bytes, tuple[int, int | None]] = {}
    async with Producer(producer_config(broker.bootstrap, **{"linger.ms": 2})) as producer:
        await producer.cluster.create_topic("ours", 3)
        deliveries = []
        for i in range(400):
            key = keys[i % len(keys)]
            value = str(i).encode()
            deliveries.append((value, key, await producer.send("ours", value, key)))
        for value, key, delivery in deliveries:
            meta = await delivery.wait()
            reported[value] = (meta.partition, meta.offset)
            assert meta.partition == (kafka_python_murmur2(key) & 0x7FFFFFFF) % 3
    records = await trio.to_thread.run_sync(read_all, broker.bootstrap, "ours", 3)
    assert len(records) == 400
    for partition, offset, key, value in records:
        assert reported[value] == (partition, offset)
        assert partition == partition_for_key(key, 3)


async def test_our_consumer_reads_kafka_python_records_on_their_key_partitions(
    broker: BrokerProcess,
) -> None:
    """kafka-python produces keyed records; our consumer reads them all, key -> partition."""

    def produce() -> None:
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
        for i in range(300):
            producer.send("theirs", key=f"k{i % 25}".encode(), value=str(i).encode())
        producer.flush(30)
        producer.close()

    await trio.to_thread.run_sync(produce)
    config = ConsumerConfig.from_kafka(
        {"bootstrap.servers": broker.bootstrap, "auto.offset.reset": "earliest"}
    )
    seen: dict[bytes, TopicPartition] = {}
    async with Consumer(config) as consumer:
        partitions = consumer.cluster.partitions_for("theirs") or [0, 1, 2]
        consumer.assign([TopicPartition("theirs", p) for p in partitions])
        with trio.fail_after(30):
            while len(seen) < 300:
                for record in await consumer.poll(1.0):
                    assert record.key is not None and record.value is not None
                    assert record.value not in seen, "a record was returned twice"
                    seen[record.value] = TopicPartition(record.topic, record.partition)
                    assert record.partition == partition_for_key(record.key, len(partitions))
    assert set(seen) == {str(i).encode() for i in range(300)}


@dataclass
class KafkaPythonMember:
    """A kafka-python group member polling in its own thread until stopped."""

    bootstrap: str
    topic: str
    group: str
    strategy: str
    seen: list[bytes] = field(default_factory=list)
    assignment: set[tuple[str, int]] = field(default_factory=set)
    stop: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None

    def run(self) -> None:
        from kafka.coordinator.assignors.cooperative_sticky import CooperativeStickyAssignor
        from kafka.coordinator.assignors.range import RangePartitionAssignor

        assignor = {
            "range": RangePartitionAssignor,
            "cooperative-sticky": CooperativeStickyAssignor,
        }[self.strategy]
        try:
            consumer = KafkaConsumer(
                self.topic,
                bootstrap_servers=self.bootstrap,
                group_id=self.group,
                auto_offset_reset="earliest",
                partition_assignment_strategy=[assignor],
                session_timeout_ms=10000,
                heartbeat_interval_ms=500,
            )
            while not self.stop.is_set():
                for records in consumer.poll(timeout_ms=200).values():
                    self.seen.extend(r.value for r in records)
                self.assignment = {(tp.topic, tp.partition) for tp in consumer.assignment()}
            consumer.close()
        except BaseException as exc:  # surfaced by the test
            self.error = exc


@pytest.mark.parametrize("strategy", ["range", "cooperative-sticky"])
async def test_group_of_our_client_and_kafka_python_splits_partitions(
    broker_factory: object, strategy: str
) -> None:
    """Both kinds of member end in one generation with disjoint assignments covering all."""
    broker = broker_factory(settings=GROUP_SETTINGS)  # type: ignore[operator]
    topic, group = "mixed", f"mixed-{strategy}"
    async with Producer(producer_config(broker.bootstrap)) as producer:
        await producer.cluster.create_topic(topic, 6)
        for i in range(600):
            await producer.send(topic, str(i).encode(), f"k{i}".encode())
    member = KafkaPythonMember(broker.bootstrap, topic, group, strategy)
    config = ConsumerConfig.from_kafka(
        {
            "bootstrap.servers": broker.bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "partition.assignment.strategy": strategy,
            "session.timeout.ms": 10000,
            "heartbeat.interval.ms": 500,
        }
    )
    ours_seen: list[bytes] = []
    thread = threading.Thread(target=member.run, daemon=True)
    async with Consumer(config) as consumer:
        consumer.subscribe([topic])
        thread.start()
        try:
            stable_since: float | None = None
            with trio.fail_after(60):
                while True:
                    ours_seen.extend(r.value for r in await consumer.poll(0.3))  # type: ignore[misc]
                    ours = {(tp.topic, tp.partition) for tp in consumer.assignment()}
                    theirs = member.assignment
                    split = ours and theirs and not ours & theirs and len(ours | theirs) == 6
                    everything = set(ours_seen) | set(member.seen)
                    if split and len(everything) == 600:
                        stable_since = stable_since or trio.current_time()
                        if trio.current_time() - stable_since > 1.5:
                            break
                    else:
                        stable_since = None
                    assert member.error is None, member.error
        finally:
            member.stop.set()
            await trio.to_thread.run_sync(thread.join, 15)
        events = consumer.take_rebalance_events()
    assert events, "our member saw no rebalance"
    assert events[-1].protocol == strategy
    assert {int(v) for v in set(ours_seen) | set(member.seen)} == set(range(600))


# -- a tiny fault proxy ---------------------------------------------------------------------


class FaultProxy:
    """Forward Kafka connections to one broker; drop or reset around a Produce response.

    `drop_next_produce_response`: the broker's answer to the next Produce request is
    swallowed (the connection stays up, so the client's request timeout fires).
    `reset_after_next_produce`: once the broker has answered the next Produce (so it
    appended), the client's connection is reset (RST) instead of getting the answer.
    """

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.port = 0
        self.drop_next_produce_response = False
        self.reset_after_next_produce = False
        self.requests: Counter[int] = Counter()
        self.faults_done = 0

    async def serve(self, nursery: trio.Nursery) -> None:
        listeners = await nursery.start(trio.serve_tcp, self._handle, 0)
        self.port = listeners[0].socket.getsockname()[1]

    async def _handle(self, client: trio.SocketStream) -> None:
        upstream = await trio.open_tcp_stream(*self.upstream)
        in_flight: deque[int] = deque()
        async with client, upstream, trio.open_nursery() as nursery:
            nursery.start_soon(self._requests, client, upstream, in_flight, nursery)
            nursery.start_soon(self._responses, upstream, client, in_flight, nursery)

    async def _requests(
        self, src: trio.SocketStream, dst: trio.SocketStream, in_flight: deque[int], nursery
    ) -> None:
        async for frame in _frames(src):
            api_key = struct.unpack_from(">h", frame, 4)[0]
            self.requests[api_key] += 1
            in_flight.append(api_key)
            await dst.send_all(frame)
        nursery.cancel_scope.cancel()

    async def _responses(
        self, src: trio.SocketStream, dst: trio.SocketStream, in_flight: deque[int], nursery
    ) -> None:
        async for frame in _frames(src):
            api_key = in_flight.popleft()
            if api_key == PRODUCE and self.drop_next_produce_response:
                self.drop_next_produce_response = False
                self.faults_done += 1
                continue
            if api_key == PRODUCE and self.reset_after_next_produce:
                self.reset_after_next_produce = False
                self.faults_done += 1
                dst.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                nursery.cancel_scope.cancel()
                return
            await dst.send_all(frame)
        nursery.cancel_scope.cancel()


async def _frames(stream: trio.SocketStream) -> AsyncIterator[bytes]:
    buffer = bytearray()
    while True:
        try:
            data = await stream.receive_some(65536)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return
        if not data:
            return
        buffer += data
        while len(buffer) >= 4:
            size = struct.unpack_from(">i", buffer, 0)[0]
            if len(buffer) < 4 + size:
                break
            yield bytes(buffer[: 4 + size])
            del buffer[: 4 + size]


class ViaProxy:
    """A client Network that dials the proxy whatever broker address it is asked for."""

    def __init__(self, proxy: FaultProxy) -> None:
        self.proxy = proxy

    async def connect(self, host: str, port: int) -> trio.abc.Stream:
        return await trio.open_tcp_stream("127.0.0.1", self.proxy.port)


async def _produce_through_fault(
    broker: BrokerProcess, topic: str, *, idempotent: bool, fault: str
) -> tuple[list[bytes], int]:
    """Send 20 values one at a time with one fault on the 10th; return the log and attempts."""
    async with trio.open_nursery() as nursery:
        proxy = FaultProxy((broker.host, broker.port))
        await proxy.serve(nursery)
        config = producer_config(
            broker.bootstrap,
            **{
                "enable.idempotence": idempotent,
                "acks": "all",
                "request.timeout.ms": 1500,
                "delivery.timeout.ms": 20000,
                "retry.backoff.ms": 50,
                "linger.ms": 0,
            },
        )
        async with Producer(config, network=ViaProxy(proxy)) as producer:
            await producer.cluster.create_topic(topic, 1)
            for i in range(20):
                if i == 10:
                    setattr(proxy, fault, True)
                await producer.send_and_wait(topic, str(i).encode(), b"k")
        assert proxy.faults_done == 1
        produce_requests = proxy.requests[PRODUCE]
        nursery.cancel_scope.cancel()
    records = await trio.to_thread.run_sync(read_all, broker.bootstrap, topic, 1)
    return [value for _, _, _, value in records], produce_requests


async def test_idempotent_retry_after_dropped_response_writes_once(broker: BrokerProcess) -> None:
    """The broker appended, the answer was lost, the retry is deduplicated by sequence."""
    values, requests = await _produce_through_fault(
        broker, "idem-drop", idempotent=True, fault="drop_next_produce_response"
    )
    assert requests == 21, "the dropped request must have been retried once"
    assert values == [str(i).encode() for i in range(20)]


async def test_idempotent_retry_after_reset_writes_once(broker: BrokerProcess) -> None:
    """Same as above with a connection reset instead of a silent drop."""
    values, requests = await _produce_through_fault(
        broker, "idem-reset", idempotent=True, fault="reset_after_next_produce"
    )
    assert requests == 21
    assert values == [str(i).encode() for i in range(20)]


async def test_non_idempotent_retry_after_reset_duplicates(broker: BrokerProcess) -> None:
    """Without idempotence the retry of an appended batch is appended again."""
    values, requests = await _produce_through_fault(
        broker, "plain-reset", idempotent=False, fault="reset_after_next_produce"
    )
    assert requests == 21
    counts = Counter(values)
    assert counts[b"10"] == 2, f"expected value 10 twice in the log, got {values}"
    assert all(counts[str(i).encode()] == 1 for i in range(20) if i != 10)


async def test_unanswered_send_with_no_retries_is_unknown_outcome(broker: BrokerProcess) -> None:
    """retries=0 and a dropped response: the send ends UnknownOutcome, and it did land."""
    async with trio.open_nursery() as nursery:
        proxy = FaultProxy((broker.host, broker.port))
        await proxy.serve(nursery)
        config = producer_config(
            broker.bootstrap,
            **{
                "enable.idempotence": False,
                "retries": 0,
                "request.timeout.ms": 1000,
                "delivery.timeout.ms": 5000,
                "linger.ms": 0,
            },
        )
        async with Producer(config, network=ViaProxy(proxy)) as producer:
            await producer.cluster.create_topic("unknown-outcome", 1)
            proxy.drop_next_produce_response = True
            started = time.monotonic()
            with pytest.raises(UnknownOutcome, match="may or may not"):
                await producer.send_and_wait("unknown-outcome", b"maybe", b"k")
            assert time.monotonic() - started < 4
        nursery.cancel_scope.cancel()
    records = await trio.to_thread.run_sync(read_all, broker.bootstrap, "unknown-outcome", 1)
    assert [v for *_, v in records] == [b"maybe"]
