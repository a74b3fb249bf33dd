"""Unmodified transactional clients against one broker: confluent-kafka and aiokafka.

confluent-kafka's transactional producer commits and aborts; a read_committed consumer
sees committed data only, a read_uncommitted one the aborted data too; offsets sent with
send_offsets_to_transaction become the group's only if the transaction commits; a
zombie (an older instance of the same transactional.id) is fenced and its open
transaction aborted; a transaction left open past transaction.timeout.ms is aborted by
the coordinator. aiokafka's and kafka-python's transactional producers commit and
abort the same way; ListOffsets answers the LSO to read_committed consumers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import trio

from tests.broker_process import bootstrap_of, in_process_broker

SETTINGS = {
    "offsets.topic.num.partitions": 3,
    "transaction.state.log.num.partitions": 3,
    "transaction.abort.timed.out.transaction.cleanup.interval.ms": 200,
    "group.initial.rebalance.delay.ms": 0,
}


T = TypeVar("T")


async def with_broker(tmp_path: Path, client: Callable[[str], T]) -> T:
    async with in_process_broker(tmp_path, SETTINGS) as running:
        return await trio.to_thread.run_sync(client, bootstrap_of(running))


def read_all(
    bootstrap: str, topic: str, isolation: str, expect: int, wait_s: float = 10.0
) -> list[bytes]:
    """The values of partition 0 of `topic` a consumer with `isolation` gets: once it has
    `expect` and nothing more comes, or after `wait_s`."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{isolation}",
            "isolation.level": isolation,
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(topic, 0, 0)])
    values: list[bytes] = []
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        message = consumer.poll(0.2)
        if message is None:
            if len(values) >= expect:
                break
            continue
        value = message.value()
        if message.error() is None and value is not None:
            values.append(value)
    consumer.close()
    return values


def txn_producer(bootstrap: str, txn_id: str, **extra: object) -> Any:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": txn_id, **extra})
    producer.init_transactions(10)
    return producer


async def test_confluent_commit_and_abort_by_isolation_level(tmp_path: Path) -> None:
    def client(bootstrap: str) -> tuple[list[bytes], list[bytes]]:
        producer = txn_producer(bootstrap, "tx-commit-abort")
        for value, commit in ((b"c1", True), (b"a1", False), (b"c2", True), (b"a2", False)):
            producer.begin_transaction()
            producer.produce("t", value)
            producer.flush(10)
            if commit:
                producer.commit_transaction(10)
            else:
                producer.abort_transaction(10)
        return (
            read_all(bootstrap, "t", "read_committed", 2),
            read_all(bootstrap, "t", "read_uncommitted", 4),
        )

    committed, uncommitted = await with_broker(tmp_path, client)
    assert committed == [b"c1", b"c2"]
    assert uncommitted == [b"c1", b"a1", b"c2", b"a2"]


async def test_read_committed_waits_for_an_open_transaction(tmp_path: Path) -> None:
    def client(bootstrap: str) -> tuple[list[bytes], list[bytes], list[bytes]]:
        from confluent_kafka import Producer

        plain = Producer({"bootstrap.servers": bootstrap})
        producer = txn_producer(bootstrap, "tx-open")
        producer.begin_transaction()
        producer.produce("t", b"pending")
        producer.flush(10)
        plain.produce("t", b"after")
        plain.flush(10)
        # Data after an open transaction is invisible to read_committed: the LSO stops.
        during = read_all(bootstrap, "t", "read_committed", 1, wait_s=2)
        uncommitted = read_all(bootstrap, "t", "read_uncommitted", 2)
        producer.commit_transaction(10)
        after = read_all(bootstrap, "t", "read_committed", 2)
        return during, uncommitted, after

    during, uncommitted, after = await with_broker(tmp_path, client)
    assert during == []
    assert uncommitted == [b"pending", b"after"]
    assert after == [b"pending", b"after"]


async def test_send_offsets_to_transaction_commits_offsets_only_with_it(tmp_path: Path) -> None:
    def client(bootstrap: str) -> tuple[int, int]:
        from confluent_kafka import Consumer, Producer, TopicPartition

        seed = Producer({"bootstrap.servers": bootstrap})
        for i in range(5):
            seed.produce("in", b"m%d" % i)
        seed.flush(10)
        consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": "eos",
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
            }
        )
        consumer.subscribe(["in"])
        got: list[Any] = []
        deadline = time.monotonic() + 30
        while len(got) < 5 and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                got.append(message)
        assert len(got) == 5
        producer = txn_producer(bootstrap, "tx-eos")
        metadata = consumer.consumer_group_metadata()
        producer.begin_transaction()
        producer.produce("out", b"M0")
        producer.send_offsets_to_transaction([TopicPartition("in", 0, 3)], metadata, 10)
        producer.commit_transaction(10)
        (after_commit,) = consumer.committed([TopicPartition("in", 0)], 10)
        producer.begin_transaction()
        producer.produce("out", b"M1")
        producer.send_offsets_to_transaction([TopicPartition("in", 0, 5)], metadata, 10)
        producer.abort_transaction(10)
        (after_abort,) = consumer.committed([TopicPartition("in", 0)], 10)
        consumer.close()
        return after_commit.offset, after_abort.offset

    after_commit, after_abort = await with_broker(tmp_path, client)
    assert after_commit == 3
    assert after_abort == 3


async def test_zombie_instance_is_fenced_and_its_transaction_aborted(tmp_path: Path) -> None:
    def client(bootstrap: str) -> tuple[str, bool, list[bytes]]:
        from confluent_kafka import KafkaException

        zombie = txn_producer(bootstrap, "tx-zombie")
        zombie.begin_transaction()
        zombie.produce("out", b"from-zombie")
        zombie.flush(10)
        successor = txn_producer(bootstrap, "tx-zombie")
        try:
            zombie.commit_transaction(10)
            outcome, fatal = "committed", False
        except KafkaException as exc:
            outcome, fatal = exc.args[0].name(), exc.args[0].fatal()
        successor.begin_transaction()
        successor.produce("out", b"from-successor")
        successor.commit_transaction(10)
        return outcome, fatal, read_all(bootstrap, "out", "read_committed", 1)

    outcome, fatal, values = await with_broker(tmp_path, client)
    assert outcome == "_FENCED" and fatal
    assert values == [b"from-successor"]


async def test_transaction_timeout_aborts_and_fences_the_producer(tmp_path: Path) -> None:
    def client(bootstrap: str) -> tuple[list[bytes], bool]:
        from confluent_kafka import KafkaException

        producer = txn_producer(bootstrap, "tx-slow", **{"transaction.timeout.ms": 1000})
        producer.begin_transaction()
        producer.produce("t", b"too-slow")
        producer.flush(10)
        time.sleep(2.5)
        # The coordinator aborted it: the LSO moved past it and its data is aborted.
        committed = read_all(bootstrap, "t", "read_committed", 0)
        uncommitted = read_all(bootstrap, "t", "read_uncommitted", 1)
        try:
            producer.commit_transaction(10)
            failed = False
        except KafkaException:
            failed = True
        return [*committed, b"|", *uncommitted], failed

    values, failed = await with_broker(tmp_path, client)
    assert values == [b"|", b"too-slow"]
    assert failed


async def test_aiokafka_transactional_producer(tmp_path: Path) -> None:
    def client(bootstrap: str) -> tuple[list[bytes], list[bytes]]:
        from aiokafka import AIOKafkaProducer

        async def produce() -> None:
            producer = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id="tx-aio")
            await producer.start()
            try:
                async with producer.transaction():
                    await producer.send_and_wait("t", b"aio-commit")
                await producer.begin_transaction()
                await producer.send_and_wait("t", b"aio-abort")
                await producer.abort_transaction()
                async with producer.transaction():
                    await producer.send_and_wait("t", b"aio-commit-2")
            finally:
                await producer.stop()

        asyncio.run(produce())
        return (
            read_all(bootstrap, "t", "read_committed", 2),
            read_all(bootstrap, "t", "read_uncommitted", 3),
        )

    committed, uncommitted = await with_broker(tmp_path, client)
    assert committed == [b"aio-commit", b"aio-commit-2"]
    assert uncommitted == [b"aio-commit", b"aio-abort", b"aio-commit-2"]


async def test_list_offsets_latest_is_the_lso_under_read_committed(tmp_path: Path) -> None:
    def client(bootstrap: str) -> tuple[int, int, int]:
        from kafka import KafkaConsumer, TopicPartition

        seed = txn_producer(bootstrap, "tx-list")
        seed.begin_transaction()
        seed.produce("t", b"a")
        seed.produce("t", b"b")
        seed.commit_transaction(10)
        seed.begin_transaction()
        seed.produce("t", b"open")
        seed.flush(10)
        tp = TopicPartition("t", 0)
        ends = []
        for isolation in ("read_committed", "read_uncommitted"):
            consumer = KafkaConsumer(bootstrap_servers=bootstrap, isolation_level=isolation)
            ends.append(consumer.end_offsets([tp])[tp])
            consumer.close()
        seed.abort_transaction(10)
        consumer = KafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_committed")
        deadline = time.monotonic() + 10
        while True:
            after = consumer.end_offsets([tp])[tp]
            if after > ends[0] or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        consumer.close()
        return ends[0], ends[1], after

    committed_end, uncommitted_end, after_abort = await with_broker(tmp_path, client)
    # a, b, their COMMIT marker at 2; the open transaction starts at 3.
    assert committed_end == 3
    assert uncommitted_end == 4
    assert after_abort == 5  # past the ABORT marker


async def test_kafka_python_transactional_producer(tmp_path: Path) -> None:
    def client(bootstrap: str) -> tuple[list[bytes], list[bytes]]:
        from kafka import KafkaProducer

        producer = KafkaProducer(bootstrap_servers=bootstrap, transactional_id="tx-kp")
        producer.init_transactions()
        producer.begin_transaction()
        producer.send("t", b"kp-commit")
        producer.commit_transaction()
        producer.begin_transaction()
        producer.send("t", b"kp-abort")
        producer.flush()
        producer.abort_transaction()
        producer.close()
        return (
            read_all(bootstrap, "t", "read_committed", 1),
            read_all(bootstrap, "t", "read_uncommitted", 2),
        )

    committed, uncommitted = await with_broker(tmp_path, client)
    assert committed == [b"kp-commit"]
    assert uncommitted == [b"kp-commit", b"kp-abort"]
