"""What replication costs: produce throughput at acks=all on a 3-broker KRaft cluster
(replication factor 3, min.insync.replicas 2) against acks=1 on one broker, same run.

Both targets are `faultline broker` processes on loopback, dialled directly (no fault
proxies); the load is `bench_broker`'s: confluent-kafka producers in `--generators`
processes, 200-byte keyed messages, batching. Each case is the median of `--repeat`
trials, with the brokers' CPU time per message summed over every broker process (on a
3-broker cluster each message is appended three times and fetched twice). On a 2-core
machine the cluster's three brokers and the load generators share the same cores, so
the ratio is an upper bound on what replication costs a real deployment. Not a test:

    python3 benchmarks/bench_replication.py [--messages 100000] [--generators 2] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from bench_broker import cpu_seconds, produce_parallel  # this folder, run as a script
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from harness.broker_process import BrokerProcess, running_broker
from harness.tansu import free_loopback_port

CLUSTER_SETTINGS = {"default.replication.factor": 3, "min.insync.replicas": 2}


@contextmanager
def single_broker(root: Path) -> Iterator[tuple[str, list[BrokerProcess]]]:
    """One standalone broker."""
    with running_broker(root / "single") as broker:
        yield broker.bootstrap, [broker]


@contextmanager
def kraft_cluster(root: Path) -> Iterator[tuple[str, list[BrokerProcess]]]:
    """Three combined broker+controller nodes, every one a voter."""
    ports = [free_loopback_port() for _ in range(3)]
    controller_ports = [free_loopback_port() for _ in range(3)]
    voters = ",".join(f"{i}@127.0.0.1:{port}" for i, port in enumerate(controller_ports, start=1))
    with ExitStack() as stack:
        brokers = [
            stack.enter_context(
                running_broker(
                    root / f"n{i}",
                    settings={
                        **CLUSTER_SETTINGS,
                        "node.id": i,
                        "listeners": (
                            f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}"
                        ),
                        "controller.listener.names": "CONTROLLER",
                        "controller.quorum.voters": voters,
                    },
                )
            )
            for i, (port, controller) in enumerate(zip(ports, controller_ports, strict=True), 1)
        ]
        bootstrap = ",".join(f"127.0.0.1:{port}" for port in ports)
        wait_for_brokers(bootstrap, 3)
        yield bootstrap, brokers


def wait_for_brokers(bootstrap: str, count: int) -> None:
    """Until Metadata lists `count` live brokers: registered with the controller, unfenced."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + 60
    while True:
        try:
            if len(admin.list_topics(timeout=10).brokers) >= count:
                return
        except KafkaException:
            pass  # no controller yet: the metadata is partial
        if time.monotonic() > deadline:
            raise TimeoutError(f"fewer than {count} brokers registered within 60 s")
        time.sleep(0.2)


def create_topic(bootstrap: str, topic: str, partitions: int, replication_factor: int) -> None:
    """Create a topic, retrying while a new cluster has too few registered brokers."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + 60
    while True:
        try:
            future = admin.create_topics([NewTopic(topic, partitions, replication_factor)])[topic]
            future.result(timeout=30)
            return
        except KafkaException as exc:
            if exc.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
                return  # an earlier attempt's answer was lost, not its effect
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def measure(
    bootstrap: str,
    brokers: list[BrokerProcess],
    acks: str,
    replication_factor: int,
    partitions: int,
    count: int,
    generators: int,
    repeat: int,
    tag: str,
) -> tuple[float, float]:
    """Median msg/s and median broker CPU µs per message over `repeat` fresh topics."""
    rates, cpu = [], []
    for trial in range(repeat):
        topic = f"{tag}-p{partitions}-{trial}"
        create_topic(bootstrap, topic, partitions, replication_factor)
        time.sleep(1.0)  # leaders elected and followers fetching before the clock starts
        before = sum(cpu_seconds(b.process.pid) for b in brokers)
        rates.append(produce_parallel(bootstrap, topic, acks, count, generators))
        after = sum(cpu_seconds(b.process.pid) for b in brokers)
        cpu.append((after - before) / count * 1e6)
    return statistics.median(rates), statistics.median(cpu)


def main() -> None:
    """Run both targets and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000, help="messages per trial")
    parser.add_argument("--generators", type=int, default=2, help="producer processes")
    parser.add_argument("--repeat", type=int, default=3, help="trials per case (median kept)")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-replication-") as tmp:
        root = Path(tmp)
        for partitions in (1, 8):
            with single_broker(root / f"s{partitions}") as (bootstrap, brokers):
                single = measure(bootstrap, brokers, "1", 1, partitions, args.messages,
                                 args.generators, args.repeat, "single")
            with kraft_cluster(root / f"c{partitions}") as (bootstrap, brokers):
                cluster = measure(bootstrap, brokers, "all", 3, partitions, args.messages,
                                  args.generators, args.repeat, "cluster")
            rows.append((partitions, single, cluster))
    print(f"{args.messages} msgs/trial, {args.generators} generators, median of {args.repeat}")
    print(f"{'partitions':>10}  {'acks=1 x1 msg/s':>16}  {'acks=all RF3 msg/s':>19}  "
          f"{'ratio':>6}  {'µs/msg x1':>9}  {'µs/msg RF3':>10}")
    for partitions, (s_rate, s_cpu), (c_rate, c_cpu) in rows:
        print(f"{partitions:>10}  {s_rate:>16,.0f}  {c_rate:>19,.0f}  {c_rate / s_rate:>6.2f}  "
              f"{s_cpu:>9.1f}  {c_cpu:>10.1f}")


if __name__ == "__main__":
    main()
