"""Produce and consume throughput of the reference broker against Tansu, same load, same run.

The load generator is confluent-kafka (librdkafka): 200-byte messages, keyed, with
batching (linger.ms, batch.size); acks=1 and acks=all; topics of 1 and 8 partitions.
Each case runs `--generators` client processes at once (one Python client loop saturates
before either broker does): producers that split the messages, or consumers that each
read the whole topic, as independent readers do. Both brokers run side by side and the
trials alternate between them (ours, Tansu, ours, ...), so a drift in what else the
machine is doing hits both alike; each case is the median of `--repeat` trials. Every
case also reports the broker process's CPU time per message, read from /proc: on a
2-core machine msg/s alone mostly measures how much CPU a broker leaves to the load
generator. Prints msg/s, MB/s, broker µs/msg and our/Tansu ratios. Not a test: run it
by hand,

    python3 benchmarks/bench_broker.py [--messages 200000] [--generators 2] [--repeat 3]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import tempfile
import time
from collections.abc import Callable
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
    broker_cpu_us_per_msg: float

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
            # When the Python loop lags, librdkafka's prefetch queue fills and it backs off
            # fetching for this long (default 1000 ms): the faster broker got penalised.
            "fetch.queue.backoff.ms": 10,
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


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _produce_worker(bootstrap: str, topic: str, acks: str, count: int) -> None:
    produce(bootstrap, topic, acks, count)


def _consume_worker(bootstrap: str, topic: str, partitions: int, count: int) -> None:
    consume(bootstrap, topic, partitions, count)


def _in_parallel(processes: list[multiprocessing.Process]) -> float:
    """Run the processes at once; the seconds from the first start to the last exit."""
    started = time.perf_counter()
    for p in processes:
        p.start()
    for p in processes:
        p.join()
    elapsed = time.perf_counter() - started
    failed = [p.exitcode for p in processes if p.exitcode != 0]
    if failed:
        raise KafkaException(f"{len(failed)} client processes failed: exit codes {failed}")
    return elapsed


def produce_parallel(bootstrap: str, topic: str, acks: str, count: int, generators: int) -> float:
    """`count` messages split over `generators` producer processes; aggregate msg/s."""
    share = count // generators
    elapsed = _in_parallel(
        [
            multiprocessing.Process(target=_produce_worker, args=(bootstrap, topic, acks, share))
            for _ in range(generators)
        ]
    )
    return share * generators / elapsed


def consume_parallel(
    bootstrap: str, topic: str, partitions: int, count: int, generators: int
) -> float:
    """`generators` consumer processes each read all `count` messages; aggregate msg/s."""
    elapsed = _in_parallel(
        [
            multiprocessing.Process(
                target=_consume_worker, args=(bootstrap, topic, partitions, count)
            )
            for _ in range(generators)
        ]
    )
    return count * generators / elapsed


@dataclass
class Target:
    """A running broker under test."""

    name: str
    bootstrap: str
    pid: int


def run_cases(targets: list[Target], count: int, generators: int, repeat: int) -> list[Figure]:
    """Every case against every target, trials alternating between the targets."""
    figures: list[Figure] = []

    def measure(case: str, trial_rate: Callable[[Target, int], float]) -> None:
        # The median of several trials: one librdkafka client now and then stalls for a
        # moment, against either broker, and a single trial would report the stall.
        rates: dict[str, list[float]] = {t.name: [] for t in targets}
        cpu_us: dict[str, list[float]] = {t.name: [] for t in targets}
        for trial in range(repeat):
            for target in targets:
                before = cpu_seconds(target.pid)
                rate = trial_rate(target, trial)
                messages = count * (generators if case.startswith("consume") else 1)
                rates[target.name].append(rate)
                cpu_us[target.name].append((cpu_seconds(target.pid) - before) / messages * 1e6)
        for target in targets:
            rate = statistics.median(rates[target.name])
            cpu = statistics.median(cpu_us[target.name])
            figures.append(Figure(target.name, case, rate, cpu))
            trials_text = ", ".join(f"{r:,.0f}" for r in rates[target.name])
            print(
                f"  {target.name:9} {case:24} {rate:>10,.0f} msg/s (trials {trials_text})  "
                f"broker {cpu:5.2f} µs/msg",
                flush=True,
            )

    for partitions in (1, 8):
        for acks in ("1", "all"):
            topics = [f"bench-p{partitions}-acks{acks}-{i}" for i in range(repeat)]
            for target in targets:
                for topic in topics:
                    create_topic(target.bootstrap, topic, partitions)
            measure(
                f"produce p={partitions} acks={acks}",
                lambda target, trial, topics=topics, acks=acks: produce_parallel(
                    target.bootstrap, topics[trial], acks, count, generators
                ),
            )
        measure(
            f"consume p={partitions}",
            lambda target, _trial, topic=topics[0], partitions=partitions: consume_parallel(
                target.bootstrap, topic, partitions, count, generators
            ),
        )
    return figures


def main() -> None:
    """Run the matrix against both brokers and print a comparison table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200_000, help="messages per trial")
    parser.add_argument("--generators", type=int, default=2, help="client processes per case")
    parser.add_argument("--repeat", type=int, default=3, help="trials per case (median kept)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="faultline-bench-") as tmp:
        root = Path(tmp)
        print(
            f"{args.messages:,} messages of {len(MESSAGE)} bytes per case, confluent-kafka load, "
            f"{args.generators} client processes per case"
        )
        with (
            running_broker(root / "broker", log_path=root / "broker.log") as ours,
            run_tansu(root / "tansu.log") as tansu,
        ):
            targets = [
                Target("faultline", ours.bootstrap, ours.process.pid),
                Target("tansu", tansu.bootstrap, tansu.process.pid),
            ]
            figures = run_cases(targets, args.messages, args.generators, args.repeat)

    print()
    print(
        f"{'case':24} {'faultline msg/s':>16} {'tansu msg/s':>12} {'ratio':>6} {'MB/s':>7} "
        f"{'µs/msg ours':>11} {'tansu':>6}"
    )
    mine_all = [f for f in figures if f.target == "faultline"]
    theirs_all = [f for f in figures if f.target == "tansu"]
    for mine, other in zip(mine_all, theirs_all, strict=True):
        ratio = mine.msgs_per_s / other.msgs_per_s
        print(
            f"{mine.case:24} {mine.msgs_per_s:>16,.0f} {other.msgs_per_s:>12,.0f} "
            f"{ratio:>6.2f} {mine.mb_per_s:>7.1f} {mine.broker_cpu_us_per_msg:>11.2f} "
            f"{other.broker_cpu_us_per_msg:>6.2f}"
        )


if __name__ == "__main__":
    main()
