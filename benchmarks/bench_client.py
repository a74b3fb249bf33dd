"""Producer and consumer throughput of faultline's trio client beside kafka-python and
confluent-kafka, against the same broker in the same run.

200-byte values with short keys, acks=all, the clients' idempotent defaults, linger.ms=5,
batch.size=16384, into a 3-partition topic (a fresh topic per producer); each consumer
then reads one 3-partition topic from the beginning. Prints msg/s per client and our
ratio to kafka-python. Not a test: run it by hand,

    python3 benchmarks/bench_client.py [--messages 50000] [--target reference|tansu]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import trio

from harness.broker_process import running_broker
from harness.tansu import run_tansu
from workloads.client import ConsumerConfig, Producer, ProducerConfig, TopicPartition
from workloads.client.consumer import Consumer

VALUE = b"v" * 200
PARTITIONS = 3


def key(i: int) -> bytes:
    """The key of message i."""
    return b"k%d" % (i % 1000)


def create_topic(bootstrap: str, topic: str) -> None:
    """Create a 3-partition topic with confluent-kafka's admin client."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, PARTITIONS, 1)]).values():
        future.result(timeout=30)


# -- producers -------------------------------------------------------------------------------


def produce_faultline(bootstrap: str, topic: str, count: int) -> float:
    """Our client: send everything, then wait for every delivery."""

    async def run() -> float:
        config = ProducerConfig.from_kafka(
            {"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5, "batch.size": 16384}
        )
        async with Producer(config) as producer:
            await producer.cluster.wait_for_topic(topic)
            started = time.perf_counter()
            deliveries = [await producer.send(topic, VALUE, key(i)) for i in range(count)]
            await producer.flush()
            elapsed = time.perf_counter() - started
            for d in deliveries[:: max(1, count // 100)]:
                await d.wait()
            return count / elapsed

    return trio.run(run)


def produce_kafka_python(bootstrap: str, topic: str, count: int) -> float:
    """kafka-python with its defaults (idempotent, acks=all) and linger.ms=5."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    started = time.perf_counter()
    futures = [producer.send(topic, key=key(i), value=VALUE) for i in range(count)]
    producer.flush(120)
    elapsed = time.perf_counter() - started
    for f in futures[:: max(1, count // 100)]:
        f.get(timeout=30)
    producer.close()
    return count / elapsed


def produce_confluent(bootstrap: str, topic: str, count: int) -> float:
    """confluent-kafka (librdkafka), idempotent, acks=all, linger.ms=5."""
    from confluent_kafka import Producer as CProducer

    failures: list[str] = []
    producer = CProducer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 5,
            "batch.size": 16384,
        }
    )
    started = time.perf_counter()
    for i in range(count):
        while True:
            try:
                producer.produce(
                    topic,
                    VALUE,
                    key(i),
                    on_delivery=lambda err, _m: failures.append(str(err)) if err else None,
                )
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
    assert producer.flush(120) == 0
    elapsed = time.perf_counter() - started
    assert not failures, failures[:3]
    return count / elapsed


# -- consumers -------------------------------------------------------------------------------


def consume_faultline(bootstrap: str, topic: str, count: int) -> float:
    """Our client, assign mode, from the beginning."""

    async def run() -> float:
        config = ConsumerConfig.from_kafka(
            {"bootstrap.servers": bootstrap, "auto.offset.reset": "earliest"}
        )
        async with Consumer(config) as consumer:
            consumer.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
            seen = 0
            started = time.perf_counter()
            while seen < count:
                seen += len(await consumer.poll(1.0))
            return seen / (time.perf_counter() - started)

    return trio.run(run)


def consume_kafka_python(bootstrap: str, topic: str, count: int) -> float:
    """kafka-python, assign mode, from the beginning."""
    from kafka import KafkaConsumer
    from kafka import TopicPartition as KTP

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    consumer.assign([KTP(topic, p) for p in range(PARTITIONS)])
    seen = 0
    started = time.perf_counter()
    while seen < count:
        seen += sum(len(r) for r in consumer.poll(timeout_ms=1000).values())
    elapsed = time.perf_counter() - started
    consumer.close()
    return seen / elapsed


def consume_confluent(bootstrap: str, topic: str, count: int) -> float:
    """confluent-kafka, assign mode, from the beginning."""
    from confluent_kafka import OFFSET_BEGINNING
    from confluent_kafka import Consumer as CConsumer
    from confluent_kafka import TopicPartition as CTP

    consumer = CConsumer(
        {"bootstrap.servers": bootstrap, "group.id": "bench", "enable.auto.commit": False}
    )
    consumer.assign([CTP(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
    seen = 0
    started = time.perf_counter()
    while seen < count:
        seen += sum(1 for m in consumer.consume(1000, timeout=1.0) if m.error() is None)
    elapsed = time.perf_counter() - started
    consumer.close()
    return seen / elapsed


CLIENTS: dict[str, tuple[Callable[[str, str, int], float], Callable[[str, str, int], float]]] = {
    "faultline": (produce_faultline, consume_faultline),
    "kafka-python": (produce_kafka_python, consume_kafka_python),
    "confluent-kafka": (produce_confluent, consume_confluent),
}


@contextmanager
def target(name: str, workdir: Path) -> Iterator[str]:
    """Start the broker under test; yield its bootstrap address."""
    cm: AbstractContextManager
    if name == "tansu":
        cm = run_tansu(workdir / "tansu.log")
    else:
        cm = running_broker(workdir / "broker", settings={"num.partitions": PARTITIONS})
    with cm as broker:
        yield broker.bootstrap


def main() -> None:
    """Run every client's producer, then every client's consumer; print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--target", choices=["reference", "tansu"], default="reference")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, target(args.target, Path(tmp)) as bootstrap:
        produced: dict[str, float] = {}
        consumed: dict[str, float] = {}
        for name, (produce, _) in CLIENTS.items():
            topic = f"bench-produce-{name}"
            create_topic(bootstrap, topic)
            produced[name] = produce(bootstrap, topic, args.messages)
        for name, (_, consume) in CLIENTS.items():
            # Everyone reads the topic our producer wrote.
            consumed[name] = consume(bootstrap, "bench-produce-faultline", args.messages)
        print(f"target: {args.target} broker, {args.messages} messages of {len(VALUE)} bytes")
        print(f"{'client':<16} {'produce msg/s':>14} {'consume msg/s':>14}")
        for name in CLIENTS:
            print(f"{name:<16} {produced[name]:>14,.0f} {consumed[name]:>14,.0f}")
        base_p, base_c = produced["kafka-python"], consumed["kafka-python"]
        print(
            f"faultline / kafka-python: produce {produced['faultline'] / base_p:.2f}x, "
            f"consume {consumed['faultline'] / base_c:.2f}x"
        )


if __name__ == "__main__":
    main()
