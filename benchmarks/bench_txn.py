"""Transactions per second committed by confluent-kafka against a 3-broker process cluster.

A 3-node KRaft cluster of `faultline broker` processes (through the process runtime's
fault proxies, no faults), topic of 2 partitions at RF 3 and min.insync.replicas 2,
`__transaction_state` at RF 3 / min ISR 2. Each of `--producers` client processes runs
transactions back to back with its own transactional.id: `--messages` messages spread
over both partitions, then commit_transaction. Prints committed transactions/s and
messages/s (sum over producers) for fsync on every message (log.flush.interval.messages=1)
and fsync left to the OS. Not a test: run it by hand,

    python3 benchmarks/bench_txn.py [--seconds 10] [--producers 2] [--messages 10]
"""

from __future__ import annotations

import argparse
import multiprocessing
import tempfile
import time
from pathlib import Path

import trio

from harness.runtime.process import ProcessCluster

BASE_SETTINGS = {
    "default.replication.factor": 3,
    "min.insync.replicas": 2,
    "num.partitions": 2,
    "offsets.topic.num.partitions": 3,
    "transaction.state.log.num.partitions": 3,
    "broker.session.timeout.ms": 6000,
    "broker.heartbeat.interval.ms": 500,
    "group.initial.rebalance.delay.ms": 0,
}


def producer_loop(bootstrap: str, txn_id: str, seconds: float, messages: int) -> int:
    """Run transactions for `seconds` after init; returns how many committed."""
    from confluent_kafka import Producer

    producer = Producer(
        {"bootstrap.servers": bootstrap, "transactional.id": txn_id, "linger.ms": 1}
    )
    producer.init_transactions(60)
    committed = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        producer.begin_transaction()
        for i in range(messages):
            producer.produce("bench", b"x" * 100, partition=i % 2)
        producer.commit_transaction(60)
        committed += 1
    return committed


def _worker(args: tuple[str, str, float, int]) -> int:
    return producer_loop(*args)


async def run_case(flush_each: bool, seconds: float, producers: int, messages: int) -> float:
    settings = dict(BASE_SETTINGS)
    if flush_each:
        settings["log.flush.interval.messages"] = 1
    with tempfile.TemporaryDirectory() as root:
        async with ProcessCluster(Path(root), size=3, quorum=True, settings=settings) as cluster:
            # One warm-up transaction creates the topics and __transaction_state.
            await trio.to_thread.run_sync(producer_loop, cluster.bootstrap, "warmup", 0.1, 1)
            jobs = [(cluster.bootstrap, f"bench-{i}", seconds, messages) for i in range(producers)]

            def fan_out() -> list[int]:
                with multiprocessing.get_context("spawn").Pool(producers) as pool:
                    return pool.map(_worker, jobs)

            started = time.monotonic()
            counts = await trio.to_thread.run_sync(fan_out)
            elapsed = time.monotonic() - started
    # Elapsed includes each producer's init_transactions; the loops run `seconds` each.
    return sum(counts) / max(seconds, min(elapsed, seconds + 5))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--producers", type=int, default=2)
    parser.add_argument("--messages", type=int, default=10, help="messages per transaction")
    args = parser.parse_args()
    for flush_each in (True, False):
        rate = trio.run(run_case, flush_each, args.seconds, args.producers, args.messages)
        label = "fsync every message" if flush_each else "fsync by the OS"
        print(
            f"{label:>20}: {rate:7.1f} committed transactions/s, "
            f"{rate * args.messages:8.1f} messages/s "
            f"({args.producers} producers, {args.messages} messages per transaction, RF 3)"
        )


if __name__ == "__main__":
    main()
