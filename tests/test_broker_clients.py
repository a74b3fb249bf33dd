"""Unmodified Kafka clients against the broker: kafka-python, aiokafka, confluent-kafka.

The broker runs in the test's trio run on a real loopback port; each (blocking) client
runs in a worker thread. Every test checks values end to end: what was acknowledged is
what is read back, in order per partition.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import trio

from tests.broker_process import bootstrap_of, in_process_broker

SETTINGS = {"num.partitions": "3", "group.initial.rebalance.delay.ms": "0"}
COUNT = 300


def _values(n: int) -> list[bytes]:
    return [f"value-{i}".encode() for i in range(n)]


def kafka_python_round_trip(
    bootstrap: str,
) -> tuple[dict[int, list[bytes]], dict[int, list[bytes]]]:
    """Produce with kafka-python's defaults (idempotent, acks=all), read back from the start."""
    from kafka import KafkaConsumer, KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap)
    assert producer.config["acks"] in (-1, "all")
    futures = [
        producer.send("kp", key=str(i % 7).encode(), value=v) for i, v in enumerate(_values(COUNT))
    ]
    producer.flush(30)
    sent: dict[int, list[bytes]] = defaultdict(list)
    for future, value in zip(futures, _values(COUNT), strict=True):
        metadata = future.get(timeout=30)
        assert metadata.offset == len(sent[metadata.partition])
        sent[metadata.partition].append(value)
    producer.close()

    consumer = KafkaConsumer(
        "kp",
        bootstrap_servers=bootstrap,
        group_id="kp-readers",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=10_000,
    )
    read: dict[int, list[bytes]] = defaultdict(list)
    for message in consumer:
        assert message.offset == len(read[message.partition])
        read[message.partition].append(message.value)
        if sum(map(len, read.values())) == COUNT:
            break
    consumer.commit()
    committed = {p: consumer.committed(p) for p in consumer.assignment()}
    consumer.close()
    assert sorted(committed.values()) == sorted(len(v) for v in read.values())
    return dict(sent), dict(read)


async def test_kafka_python_idempotent_producer_and_group_consumer_round_trip(
    tmp_path: Path,
) -> None:
    async with in_process_broker(tmp_path, SETTINGS) as running:
        sent, read = await trio.to_thread.run_sync(kafka_python_round_trip, bootstrap_of(running))
    assert len(sent) == 3  # the key spread reached every partition
    assert read == sent


def aiokafka_round_trip(
    bootstrap: str,
) -> tuple[list[tuple[int, int, bytes]], list[tuple[int, int, bytes]]]:
    """Produce with aiokafka (acks=all, idempotent) and read back with a group consumer."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    async def run() -> tuple[list[tuple[int, int, bytes]], list[tuple[int, int, bytes]]]:
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, acks="all", enable_idempotence=True
        )
        await producer.start()
        try:
            futures = [
                await producer.send("ak", key=str(i % 5).encode(), value=v)
                for i, v in enumerate(_values(COUNT))
            ]
            sent = [
                (m.partition, m.offset, v)
                for m, v in zip(await asyncio.gather(*futures), _values(COUNT), strict=True)
            ]
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            "ak",
            bootstrap_servers=bootstrap,
            group_id="ak-readers",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        read: list[tuple[int, int, bytes]] = []
        try:
            deadline = time.monotonic() + 30
            while len(read) < COUNT and time.monotonic() < deadline:
                for tp, messages in (await consumer.getmany(timeout_ms=500)).items():
                    read.extend((tp.partition, m.offset, m.value) for m in messages)
            await consumer.commit()
        finally:
            await consumer.stop()
        return sent, read

    return asyncio.run(run())


async def test_aiokafka_idempotent_producer_and_group_consumer_round_trip(tmp_path: Path) -> None:
    async with in_process_broker(tmp_path, SETTINGS) as running:
        sent, read = await trio.to_thread.run_sync(aiokafka_round_trip, bootstrap_of(running))
    assert sorted(read) == sorted(sent)
    assert len({(p, o) for p, o, _ in sent}) == COUNT


def confluent_round_trip(
    bootstrap: str,
) -> tuple[list[tuple[int, int, bytes]], list[tuple[int, int, bytes]]]:
    """Produce with librdkafka (idempotent, acks=all) and read back with a group consumer."""
    from confluent_kafka import Consumer, Producer

    sent: list[tuple[int, int, bytes]] = []
    errors: list[str] = []

    def delivered(err: object, message: object) -> None:
        if err is not None:
            errors.append(str(err))
        else:
            sent.append((message.partition(), message.offset(), message.value()))  # type: ignore[attr-defined]

    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all"})
    for i, value in enumerate(_values(COUNT)):
        producer.produce("ck", key=str(i % 5).encode(), value=value, on_delivery=delivered)
    assert producer.flush(30) == 0
    assert errors == []

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "ck-readers",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe(["ck"])
    read: list[tuple[int, int, bytes]] = []
    deadline = time.monotonic() + 30
    while len(read) < COUNT and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is None:
            continue
        assert message.error() is None, message.error()
        partition, offset, payload = message.partition(), message.offset(), message.value()
        assert partition is not None and offset is not None and payload is not None
        read.append((partition, offset, payload))
    consumer.commit(asynchronous=False)
    consumer.close()
    return sent, read


async def test_confluent_kafka_idempotent_producer_and_group_consumer_round_trip(
    tmp_path: Path,
) -> None:
    async with in_process_broker(tmp_path, SETTINGS) as running:
        sent, read = await trio.to_thread.run_sync(confluent_round_trip, bootstrap_of(running))
    assert sorted(read) == sorted(sent)
    assert len(sent) == COUNT


class GroupMember:
    """A kafka-python group consumer polling in its own thread until told to stop."""

    def __init__(self, bootstrap: str, topic: str, group: str) -> None:
        self.bootstrap, self.topic, self.group = bootstrap, topic, group
        self.values: list[bytes] = []
        self.assignment: set[int] = set()
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        from kafka import KafkaConsumer

        try:
            consumer = KafkaConsumer(
                bootstrap_servers=self.bootstrap,
                group_id=self.group,
                auto_offset_reset="earliest",
                enable_auto_commit=False,
                session_timeout_ms=6000,
                heartbeat_interval_ms=200,
            )
            consumer.subscribe([self.topic])
            # kafka-python 3.0.12 strands a group leader whose only reason to rejoin is
            # that its metadata changed after it assigned: assigning clears that reason,
            # so if poll() times out mid-rebalance no later poll awaits the join, and the
            # member never takes its assignment nor heartbeats again (the broker answers
            # every request; seen 1 run in 3 on a loaded machine). A blocking metadata
            # fetch after subscribing makes the leader's first assignment use current
            # metadata, so no such rejoin happens.
            consumer.topics()
            while not self.stop.is_set():
                for messages in consumer.poll(timeout_ms=100).values():
                    self.values.extend(m.value for m in messages)
                    consumer.commit()
                self.assignment = {tp.partition for tp in consumer.assignment()}
            consumer.close()
        except BaseException as exc:  # reported to the test, which asserts on it
            self.error = exc


def produce_values(bootstrap: str, topic: str, values: list[bytes]) -> None:
    """Send values round-robin over the topic's partitions with kafka-python, acks=all."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap)
    for i, value in enumerate(values):
        producer.send(topic, value=value, partition=i % 3)
    producer.flush(30)
    producer.close()


async def test_two_kafka_python_consumers_share_three_partitions(tmp_path: Path) -> None:
    values = _values(60)
    async with in_process_broker(tmp_path, SETTINGS) as running:
        bootstrap = bootstrap_of(running)
        await trio.to_thread.run_sync(produce_values, bootstrap, "shared", values)
        members = [GroupMember(bootstrap, "shared", "sharers") for _ in range(2)]
        threads = [threading.Thread(target=m.run, daemon=True) for m in members]
        for thread in threads:
            thread.start()
        shared: list[set[int]] = []
        try:
            with trio.fail_after(45):
                while True:
                    # Each member records its assignment after a poll returns, so one may
                    # still show the previous generation's: wait for a view in which the
                    # group has split the partitions. Taken here because the members stop
                    # next, and the first to leave hands its partitions to the other.
                    shared = [set(m.assignment) for m in members]
                    seen = {v for m in members for v in m.values}
                    split = all(shared) and shared[0].isdisjoint(shared[1])
                    if split and set().union(*shared) == {0, 1, 2} and seen == set(values):
                        break
                    assert not any(m.error for m in members), [m.error for m in members]
                    await trio.sleep(0.1)
        finally:

            def join_all() -> None:
                for t in threads:
                    t.join(15)

            for member in members:
                member.stop.set()
            await trio.to_thread.run_sync(join_all)
    a, b = shared
    assert a.isdisjoint(b) and a | b == {0, 1, 2}
    assert {v for m in members for v in m.values} == set(values)


def admin_session(bootstrap: str) -> dict[str, Any]:
    """Drive kafka-python's admin client through topics, configs and group administration."""
    from kafka import KafkaConsumer, KafkaProducer
    from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    # What kafka-python's admin calls returned (kafka-python is untyped).
    out: dict[str, Any] = {}
    admin.create_topics([NewTopic("adm", 2, 1, topic_configs={"retention.ms": "60000"})])
    configs = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, "adm")])
    out["modified_configs"] = configs["topic"]["adm"]
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    producer.send("adm", b"v", partition=1)
    producer.flush(10)
    producer.close()
    consumer = KafkaConsumer(
        "adm", bootstrap_servers=bootstrap, group_id="adm-group", auto_offset_reset="earliest"
    )
    while not consumer.poll(timeout_ms=200):
        pass
    consumer.commit()
    out["described"] = admin.describe_groups(["adm-group"])["adm-group"]
    out["listed"] = admin.list_groups()
    out["delete_while_member"] = admin.delete_groups(["adm-group"])
    consumer.close()
    out["offsets_before_delete"] = admin.list_group_offsets("adm-group")["adm-group"]
    out["delete_after_close"] = admin.delete_groups(["adm-group"])
    out["offsets_after_delete"] = admin.list_group_offsets("adm-group")["adm-group"]
    admin.close()
    return out


async def test_admin_client_manages_topics_configs_and_groups(tmp_path: Path) -> None:
    async with in_process_broker(tmp_path, SETTINGS) as running:
        out = await trio.to_thread.run_sync(admin_session, bootstrap_of(running))
    assert set(out["modified_configs"]) == {"retention.ms"}
    described = out["described"]
    assert described["group_state"] == "Stable" and len(described["members"]) == 1
    assert {"group_id": "adm-group", "protocol_type": "consumer"} in out["listed"]
    assert out["delete_while_member"] == {"adm-group": "NonEmptyGroupError"}
    committed = {tp.partition: om.offset for tp, om in out["offsets_before_delete"].items()}
    assert committed == {0: 0, 1: 1}
    assert out["delete_after_close"] == {"adm-group": "OK"}
    assert not out["offsets_after_delete"]
