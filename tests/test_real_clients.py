"""Unmodified Kafka clients against the reference broker running as a real process.

For each of kafka-python, aiokafka and confluent-kafka: 10,000 keyed messages with
acks=all into a 3-partition topic, read back by a consumer group with nothing lost,
nothing duplicated and per-key order kept; a two-member group where one member is
SIGKILLed and the survivor takes over from the committed offsets; cooperative-sticky
rebalancing with kafka-python and confluent-kafka.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from harness.broker_process import BrokerProcess

MESSAGES = 10_000
KEYS = 50
CLIENTS = ["kafka-python", "aiokafka", "confluent-kafka"]
REPO = Path(__file__).resolve().parent.parent


def create_topic(bootstrap: str, topic: str, partitions: int = 3) -> None:
    """Create a topic through the CreateTopics API and wait for it."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, partitions, 1)]).values():
        future.result(timeout=30)


def key_of(i: int) -> str:
    """The message key of value i."""
    return f"k{i % KEYS}"


# -- producers: every one sends values 0..n-1 in order, keyed, acks=all, library defaults ------


def produce_kafka_python(bootstrap: str, topic: str, values: range) -> None:
    """kafka-python with its defaults (3.x: idempotent, acks=all)."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap)
    futures = [producer.send(topic, key=key_of(i).encode(), value=str(i).encode()) for i in values]
    producer.flush(60)
    for f in futures:
        f.get(timeout=60)
    producer.close()


def produce_aiokafka(bootstrap: str, topic: str, values: range) -> None:
    """aiokafka with acks=all and idempotence on."""
    from aiokafka import AIOKafkaProducer

    async def run() -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, acks="all", enable_idempotence=True
        )
        await producer.start()
        try:
            futures = [
                await producer.send(topic, key=key_of(i).encode(), value=str(i).encode())
                for i in values
            ]
            await asyncio.gather(*futures)
        finally:
            await producer.stop()

    asyncio.run(run())


def produce_confluent(bootstrap: str, topic: str, values: range) -> None:
    """confluent-kafka (librdkafka) with acks=all and idempotence on."""
    from confluent_kafka import Producer

    errors: list[str] = []
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True})
    for i in values:
        producer.produce(
            topic,
            key=key_of(i).encode(),
            value=str(i).encode(),
            on_delivery=lambda err, _m: errors.append(str(err)) if err else None,
        )
        producer.poll(0)
    assert producer.flush(60) == 0
    assert errors == []


PRODUCERS = {
    "kafka-python": produce_kafka_python,
    "aiokafka": produce_aiokafka,
    "confluent-kafka": produce_confluent,
}


# -- group consumers: read until `count` messages arrived, return (partition, offset, key, value) --

Read = tuple[int, int, str, int]


def consume_kafka_python(bootstrap: str, topic: str, group: str, count: int) -> list[Read]:
    """A kafka-python group member."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=group, auto_offset_reset="earliest"
    )
    out: list[Read] = []
    deadline = time.monotonic() + 60
    while len(out) < count and time.monotonic() < deadline:
        for tp, records in consumer.poll(timeout_ms=500).items():
            out += [(tp.partition, r.offset, r.key.decode(), int(r.value)) for r in records]
    consumer.commit()
    consumer.close()
    return out


def consume_aiokafka(bootstrap: str, topic: str, group: str, count: int) -> list[Read]:
    """An aiokafka group member."""
    from aiokafka import AIOKafkaConsumer

    async def run() -> list[Read]:
        consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=bootstrap, group_id=group, auto_offset_reset="earliest"
        )
        await consumer.start()
        out: list[Read] = []
        try:
            deadline = time.monotonic() + 60
            while len(out) < count and time.monotonic() < deadline:
                batches = await consumer.getmany(timeout_ms=500)
                for tp, records in batches.items():
                    out += [(tp.partition, r.offset, r.key.decode(), int(r.value)) for r in records]
            await consumer.commit()
        finally:
            await consumer.stop()
        return out

    return asyncio.run(run())


def consume_confluent(bootstrap: str, topic: str, group: str, count: int) -> list[Read]:
    """A confluent-kafka group member."""
    from confluent_kafka import Consumer

    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([topic])
    out: list[Read] = []
    deadline = time.monotonic() + 60
    while len(out) < count and time.monotonic() < deadline:
        for m in consumer.consume(1000, 0.5):
            assert m.error() is None, m.error()
            partition, offset, key, value = m.partition(), m.offset(), m.key(), m.value()
            assert partition is not None and offset is not None
            assert key is not None and value is not None
            out.append((partition, offset, key.decode(), int(value)))
    consumer.commit(asynchronous=False)
    consumer.close()
    return out


CONSUMERS = {
    "kafka-python": consume_kafka_python,
    "aiokafka": consume_aiokafka,
    "confluent-kafka": consume_confluent,
}


@pytest.mark.parametrize("client", CLIENTS)
def test_ten_thousand_keyed_messages_arrive_once_each_in_key_order(
    broker: BrokerProcess, client: str
) -> None:
    """acks=all produce, group consume: nothing lost or doubled, key order kept."""
    topic = f"keyed-{client}"
    create_topic(broker.bootstrap, topic)
    PRODUCERS[client](broker.bootstrap, topic, range(MESSAGES))
    reads = CONSUMERS[client](broker.bootstrap, topic, f"g-{client}", MESSAGES)

    values = [v for _, _, _, v in reads]
    assert len(values) == len(set(values)), "a message was delivered twice"
    assert set(values) == set(range(MESSAGES)), f"lost {len(set(range(MESSAGES)) - set(values))}"

    partitions_of_key: dict[str, set[int]] = defaultdict(set)
    for partition, _, key, _ in reads:
        partitions_of_key[key].add(partition)
    assert all(len(p) == 1 for p in partitions_of_key.values()), "a key landed in two partitions"

    by_partition: dict[int, list[tuple[int, str, int]]] = defaultdict(list)
    for partition, offset, key, value in reads:
        by_partition[partition].append((offset, key, value))
    assert len(by_partition) == 3, "keys should spread over all 3 partitions"
    for records in by_partition.values():
        records.sort()
        offsets = [o for o, _, _ in records]
        assert offsets == list(range(len(offsets))), "offsets of a partition are not dense from 0"
        last_of_key: dict[str, int] = {}
        for _, key, value in records:
            assert last_of_key.get(key, -1) < value, f"key {key} out of order"
            last_of_key[key] = value


# -- group members in their own processes, for SIGKILL and rebalancing ---------------------------


@dataclass
class Member:
    """A `tests.clients.member` process and what it printed so far."""

    process: subprocess.Popen[str]
    assignments: list[list[int]] = field(default_factory=list)
    records: list[tuple[int, int, str, int]] = field(default_factory=list)
    commits: dict[int, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def start(cls, lib: str, bootstrap: str, topic: str, group: str, assignor: str) -> Member:
        """Launch a member and a thread that parses its output lines."""
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.clients.member", lib, bootstrap, topic, group, assignor],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        member = cls(process)
        threading.Thread(target=member._read, daemon=True).start()
        return member

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            kind, *rest = line.split()
            with self.lock:
                if kind == "assigned":
                    self.assignments.append([int(p) for p in rest[0].split(",")] if rest else [])
                elif kind == "record":
                    p, o, k, v = rest
                    self.records.append((int(p), int(o), k, int(v)))
                elif kind == "committed":
                    self.commits[int(rest[0])] = int(rest[1])

    def current(self) -> list[int]:
        """The member's latest assignment, or [] before its first."""
        with self.lock:
            return self.assignments[-1] if self.assignments else []

    def stop(self) -> None:
        """Kill the process if it still runs."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def wait_until(predicate: object, timeout_s: float, what: str) -> None:
    """Poll `predicate()` until true or fail the test naming `what`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


@pytest.mark.parametrize("client", CLIENTS)
def test_killed_member_partitions_move_to_survivor_from_committed_offsets(
    broker: BrokerProcess, client: str
) -> None:
    """SIGKILL one of two members: after the session timeout the survivor owns all partitions,
    starts each taken-over one at the dead member's committed offset, and nothing is lost."""
    topic, group = f"takeover-{client}", f"takeover-{client}"
    create_topic(broker.bootstrap, topic)
    a = Member.start(client, broker.bootstrap, topic, group, "range")
    b = Member.start(client, broker.bootstrap, topic, group, "range")
    try:
        wait_until(
            lambda: sorted(a.current() + b.current()) == [0, 1, 2] and a.current() and b.current(),
            60,
            "both members to share the 3 partitions",
        )
        produce_confluent(broker.bootstrap, topic, range(3000))
        wait_until(lambda: len(a.records) + len(b.records) >= 1500, 60, "half the messages read")
        victim, survivor = (a, b) if a.current() else (b, a)
        taken_over = victim.current()
        victim.process.kill()
        victim.process.wait()
        with victim.lock:
            last_commit = dict(victim.commits)
            victim_read = {(p, o) for p, o, _, _ in victim.records}
        produce_confluent(broker.bootstrap, topic, range(3000, 4000))

        wait_until(lambda: sorted(survivor.current()) == [0, 1, 2], 60, "the survivor to own all")
        wait_until(
            lambda: (
                {v for *_, v in victim.records} | {v for *_, v in survivor.records}
                >= set(range(4000))
            ),
            60,
            "every message to be read by someone",
        )
        with survivor.lock:
            survivor_records = list(survivor.records)
        for partition in taken_over:
            first = min(o for p, o, _, _ in survivor_records if p == partition)
            committed = last_commit.get(partition, 0)
            read_up_to = max((o for p, o in victim_read if p == partition), default=-1) + 1
            # The victim may have committed once more after its last printed line, never past
            # what it had read; the survivor must start exactly at a committed position.
            assert committed <= first <= read_up_to, (
                f"partition {partition}: survivor resumed at {first}; the victim's last printed "
                f"commit was {committed} and it had read up to {read_up_to}"
            )
    finally:
        a.stop()
        b.stop()


@pytest.mark.parametrize("client", ["kafka-python", "confluent-kafka"])
def test_cooperative_sticky_third_member_takes_partitions_without_moving_others(
    broker: BrokerProcess, client: str
) -> None:
    """With cooperative-sticky, a joining member gets partitions and the others keep the rest:
    no partition is owned by two members at the end and every message is read."""
    topic, group = f"coop-{client}", f"coop-{client}"
    create_topic(broker.bootstrap, topic, partitions=6)
    a = Member.start(client, broker.bootstrap, topic, group, "cooperative-sticky")
    try:
        wait_until(lambda: sorted(a.current()) == list(range(6)), 60, "first member owns all 6")
        b = Member.start(client, broker.bootstrap, topic, group, "cooperative-sticky")
        try:
            wait_until(
                lambda: len(a.current()) == 3 and len(b.current()) == 3,
                60,
                "the two members to split 6 partitions 3/3",
            )
            assert set(a.current()).isdisjoint(b.current())
            # Sticky: what b took, a had owned; what a kept, it never gave up in between.
            kept = set(a.current())
            assert all(kept <= set(assignment) for assignment in a.assignments), a.assignments
            produce_confluent(broker.bootstrap, topic, range(600))
            wait_until(
                lambda: {v for *_, v in a.records} | {v for *_, v in b.records} >= set(range(600)),
                60,
                "all messages read",
            )
        finally:
            b.stop()
    finally:
        a.stop()
