"""Produce and consume throughput of the reference broker against Tansu, same load, same run.

The load generator is confluent-kafka (librdkafka): 200-byte messages, keyed, with
batching (linger.ms, batch.size); acks=1 and acks=all; topics of 1 and 8 partitions.
Prints msg/s and MB/s per case and our/Tansu ratios. Not a test: run it by hand,

    python3 benchmarks/bench_broker.py [--messages 300000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from harness.broker_process import running_broker
from harness.tansu import run_tansu

MESSAGE = b"m" * 200


@dataclass
class Figure:
    """One measured case."""

    target: str
    case: str
    msgs_per_s: float

    @property
    def mb_per_s(self) -> float:
        """Payload megabytes per second."""
        return self.msgs_per_s * len(MESSAGE) / 1e6


def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    """Create a topic and wait for the broker to confirm it."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, partitions, 1)]).values():
        future.result(timeout=30)


def produce(bootstrap: str, topic: str, acks: str, count: int) -> float:
    """Send `count` keyed messages; return msg/s from first send to last acknowledgement."""
    failures: list[str] = []

    def on_delivery(err: object, _msg: object) -> None:
        if err is not None:
            failures.append(str(err))

    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": acks,
            "linger.ms": 5,
            "batch.size": 1_000_000,
            "queue.buffering.max.messages": 1_000_000,
            "enable.idempotence": False,
        }
    )
    started = time.perf_counter()
    for i in range(count):
        while True:
            try:
                producer.produce(
                    topic, MESSAGE, key=str(i % 1000).encode(), on_delivery=on_delivery
                )
                break
            except BufferError:
                producer.poll(0.005)
        if i % 10_000 == 0:
            producer.poll(0)
    remaining = producer.flush(120)
    elapsed = time.perf_counter() - started
    if remaining or failures:
        raise KafkaException(f"{remaining} unsent, {len(failures)} failed: {failures[:3]}")
    return count / elapsed


def consume(bootstrap: str, topic: str, partitions: int, count: int) -> float:
    """Read `count` messages from the beginning of every partition; return msg/s."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-{topic}",
            "enable.auto.commit": False,
            "fetch.max.bytes": 50 * 1024 * 1024,
        }
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    seen = 0
    started = time.perf_counter()
    deadline = started + 120
    while seen < count and time.perf_counter() < deadline:
        for message in consumer.consume(10_000, 1.0):
            if message.error() is None:
                seen += 1
    elapsed = time.perf_counter() - started
    consumer.close()
    if seen < count:
        raise KafkaException(f"consumed only {seen} of {count}")
    return count / elapsed


def run_target(
    name: str, start: Callable[[], AbstractContextManager[str]], count: int
) -> list[Figure]:
    """Every case against one target."""
    figures: list[Figure] = []
    with start() as bootstrap:
        for partitions in (1, 8):
            for acks in ("1", "all"):
                topic = f"bench-p{partitions}-acks{acks}"
                create_topic(bootstrap, topic, partitions)
                rate = produce(bootstrap, topic, acks, count)
                figures.append(Figure(name, f"produce p={partitions} acks={acks}", rate))
                print(
                    f"  {name:8} produce p={partitions} acks={acks:3}  {rate:>10,.0f} msg/s",
                    flush=True,
                )
            rate = consume(bootstrap, topic, partitions, count)
            figures.append(Figure(name, f"consume p={partitions}", rate))
            print(f"  {name:8} consume p={partitions}           {rate:>10,.0f} msg/s", flush=True)
    return figures


def main() -> None:
    """Run the matrix against both brokers and print a comparison table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=300_000, help="messages per case")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="faultline-bench-") as tmp:
        root = Path(tmp)

        @contextmanager
        def ours() -> Iterator[str]:
            with running_broker(root / "broker", log_path=root / "broker.log") as broker:
                yield broker.bootstrap

        @contextmanager
        def tansu() -> Iterator[str]:
            with run_tansu(root / "tansu.log") as broker:
                yield broker.bootstrap

        print(f"{args.messages:,} messages of {len(MESSAGE)} bytes per case, confluent-kafka load")
        ours = run_target("faultline", ours, args.messages)
        theirs = run_target("tansu", tansu, args.messages)

    print()
    print(f"{'case':28} {'faultline msg/s':>16} {'tansu msg/s':>12} {'ratio':>6} {'MB/s':>7}")
    for mine, other in zip(ours, theirs, strict=True):
        ratio = mine.msgs_per_s / other.msgs_per_s
        print(
            f"{mine.case:28} {mine.msgs_per_s:>16,.0f} {other.msgs_per_s:>12,.0f} "
            f"{ratio:>6.2f} {mine.mb_per_s:>7.1f}"
        )


if __name__ == "__main__":
    main()
