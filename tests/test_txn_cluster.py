"""Transactions on a 3-broker KRaft cluster of `faultline broker` processes (RF 3).

confluent-kafka's transactional producer writes each transaction to two partitions of
a replicated topic; `__transaction_state` is replicated too (RF 3, min ISR 2). A
read_committed consumer sees the committed transactions whole and no aborted one. In
the slow test the transaction coordinator (the leader of the transactional id's
`__transaction_state` partition) is SIGKILLed while transactions are running and later
restarted: the coordinator moves, and every transaction is committed on both partitions
or on neither, every acknowledged commit is there and no aborted one is.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio

from harness.runtime.process import ProcessCluster
from reference_broker.group.offsets_store import partition_for

TXN_PARTITIONS = 3
SETTINGS = {
    "default.replication.factor": 3,
    "min.insync.replicas": 2,
    "num.partitions": 2,
    "offsets.topic.num.partitions": 3,
    "transaction.state.log.num.partitions": TXN_PARTITIONS,
    "log.flush.interval.messages": 1,
    "broker.session.timeout.ms": 4000,
    "broker.heartbeat.interval.ms": 500,
    "replica.lag.time.max.ms": 5000,
    "group.initial.rebalance.delay.ms": 0,
    "transaction.abort.timed.out.transaction.cleanup.interval.ms": 500,
}


@dataclass
class TxnLoad:
    """A producer thread running transactions n = 0, 1, ...: value n to partitions 0 and 1,
    committed (odd n aborted on purpose), remembering each outcome it was told."""

    bootstrap: str
    txn_id: str
    committed: set[int] = field(default_factory=set)
    aborted: set[int] = field(default_factory=set)
    unknown: set[int] = field(default_factory=set)
    stop: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # reported by the test
            self.error = exc

    def _producer(self) -> Any:
        from confluent_kafka import Producer

        producer = Producer(
            {
                "bootstrap.servers": self.bootstrap,
                "transactional.id": self.txn_id,
                "transaction.timeout.ms": 20000,
                "message.timeout.ms": 20000,
            }
        )
        producer.init_transactions(60)
        return producer

    def _run(self) -> None:
        from confluent_kafka import KafkaException

        producer = self._producer()
        n = 0
        while not self.stop.is_set():
            value = b"%d" % n
            commit = n % 4 != 3
            try:
                producer.begin_transaction()
                producer.produce("t", value, partition=0)
                producer.produce("t", value, partition=1)
                if commit:
                    producer.commit_transaction(30)
                    self.committed.add(n)
                else:
                    producer.flush(30)
                    producer.abort_transaction(30)
                    self.aborted.add(n)
            except KafkaException as exc:
                error = exc.args[0]
                self.unknown.add(n)
                if error.fatal():
                    producer = self._producer()
                elif error.txn_requires_abort():
                    try:
                        producer.abort_transaction(30)
                    except KafkaException:
                        producer = self._producer()
                else:
                    # A retriable error with the outcome unknown: a new instance fences the
                    # old one and completes or aborts what it left.
                    producer = self._producer()
            n += 1


def read_committed(bootstrap: str, wanted: int) -> dict[int, list[int]]:
    """Values per partition of `t` as a read_committed consumer sees them."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "check", "isolation.level": "read_committed"}
    )
    consumer.assign([TopicPartition("t", 0, 0), TopicPartition("t", 1, 0)])
    seen: dict[int, list[int]] = {0: [], 1: []}
    deadline = time.monotonic() + 60
    quiet_since = time.monotonic()
    while time.monotonic() < deadline:
        message = consumer.poll(0.3)
        if message is None or message.error() is not None:
            done = min(len(v) for v in seen.values()) >= wanted
            if done and time.monotonic() - quiet_since > 3:
                break
            continue
        quiet_since = time.monotonic()
        partition, value = message.partition(), message.value()
        assert partition is not None and value is not None
        seen[partition].append(int(value))
    consumer.close()
    return seen


def coordinator_of(bootstrap: str, txn_id: str) -> int:
    """The node leading the transactional id's `__transaction_state` partition (librdkafka's
    metadata client copes with a dead bootstrap node)."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    index = partition_for(txn_id, TXN_PARTITIONS)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + 60
    while True:
        try:
            topics = admin.list_topics("__transaction_state", timeout=5).topics
            found = topics["__transaction_state"].partitions.get(index)
            if found is not None and found.leader >= 0:
                return int(found.leader)
        except KafkaException:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"__transaction_state-{index} has no leader after 60 s")
        time.sleep(0.5)


async def wait_for_commits(load: TxnLoad, count: int, timeout_s: float = 60) -> None:
    with trio.fail_after(timeout_s):
        while len(load.committed) < count and load.error is None:
            await trio.sleep(0.2)


def check(load: TxnLoad, seen: dict[int, list[int]]) -> None:
    assert load.error is None, load.error
    assert load.committed, "no transaction committed"
    p0, p1 = seen[0], seen[1]
    assert len(p0) == len(set(p0)) and len(p1) == len(set(p1)), "a value was read twice"
    assert set(p0) == set(p1), f"half-committed transactions: {sorted(set(p0) ^ set(p1))}"
    assert not set(p0) & load.aborted, f"aborted data read: {sorted(set(p0) & load.aborted)}"
    missing = load.committed - set(p0)
    assert not missing, f"acknowledged commits lost: {sorted(missing)}"
    assert set(p0) <= load.committed | load.unknown
    assert p0 == sorted(p0) and p1 == sorted(p1), "transactions out of order"


async def test_transactions_on_a_replicated_cluster(tmp_path: Path) -> None:
    async with ProcessCluster(tmp_path, size=3, quorum=True, settings=SETTINGS) as cluster:
        load = TxnLoad(cluster.bootstrap, "tx-rf3")
        thread = threading.Thread(target=load.run, daemon=True)
        thread.start()
        await wait_for_commits(load, 20)
        load.stop.set()
        await trio.to_thread.run_sync(thread.join, 60)
        seen = await trio.to_thread.run_sync(read_committed, cluster.bootstrap, 1)
    check(load, seen)
    assert load.aborted and not load.unknown


@pytest.mark.slow
async def test_coordinator_failover_never_half_commits(tmp_path: Path) -> None:
    async with ProcessCluster(tmp_path, size=3, quorum=True, settings=SETTINGS) as cluster:
        load = TxnLoad(cluster.bootstrap, "tx-failover")
        thread = threading.Thread(target=load.run, daemon=True)
        thread.start()
        await wait_for_commits(load, 10)
        coordinator = await trio.to_thread.run_sync(coordinator_of, cluster.bootstrap, load.txn_id)
        before = len(load.committed)
        await cluster.kill(f"n{coordinator}")
        moved = coordinator
        with trio.fail_after(60):
            while moved == coordinator:
                await trio.sleep(1)
                moved = await trio.to_thread.run_sync(
                    coordinator_of, cluster.bootstrap, load.txn_id
                )
        # Transactions go on with the new coordinator, and after the old one returns.
        await wait_for_commits(load, before + 5, timeout_s=90)
        await cluster.restart(f"n{coordinator}")
        await wait_for_commits(load, len(load.committed) + 5, timeout_s=90)
        load.stop.set()
        await trio.to_thread.run_sync(thread.join, 90)
        seen = await trio.to_thread.run_sync(read_committed, cluster.bootstrap, 1)
    check(load, seen)
