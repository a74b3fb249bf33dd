"""A consumer-group member in its own process, so a test can SIGKILL it like a crash.

    python -m tests.clients.member LIB BOOTSTRAP TOPIC GROUP ASSIGNOR

LIB is kafka-python, aiokafka or confluent-kafka; ASSIGNOR is range, roundrobin or
cooperative-sticky. It commits synchronously after processing each poll (at-least-once)
and prints one line per event, flushed, for the test to read:

    assigned t-0,t-2        (after every rebalance, the full assignment)
    record P OFFSET KEY VALUE
    committed P OFFSET      (offset = next offset to read, as Kafka commits)
"""

from __future__ import annotations

import asyncio
import sys

SESSION_TIMEOUT_MS = 6000
HEARTBEAT_MS = 1000


def emit(line: str) -> None:
    """Print one event line and flush, so it survives a SIGKILL right after."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def emit_assignment(owned: set[int]) -> None:
    """Print the member's whole assignment after a change."""
    emit("assigned " + ",".join(map(str, sorted(owned))))


def run_kafka_python(bootstrap: str, topic: str, group: str, assignor: str) -> None:
    """Consume with kafka-python's KafkaConsumer."""
    from kafka import KafkaConsumer, TopicPartition
    from kafka.consumer.subscription_state import ConsumerRebalanceListener
    from kafka.coordinator.assignors.cooperative_sticky import CooperativeStickyAssignor
    from kafka.coordinator.assignors.range import RangePartitionAssignor
    from kafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
    from kafka.structs import OffsetAndMetadata

    assignors = {
        "range": RangePartitionAssignor,
        "roundrobin": RoundRobinPartitionAssignor,
        "cooperative-sticky": CooperativeStickyAssignor,
    }
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=SESSION_TIMEOUT_MS,
        heartbeat_interval_ms=HEARTBEAT_MS,
        partition_assignment_strategy=[assignors[assignor]],
    )

    owned: set[int] = set()

    class Listener(ConsumerRebalanceListener):
        # Under cooperative rebalancing the callbacks carry only what changed.
        def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
            owned.difference_update(tp.partition for tp in revoked)
            emit_assignment(owned)

        def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
            owned.update(tp.partition for tp in assigned)
            emit_assignment(owned)

    consumer.subscribe([topic], listener=Listener())
    while True:
        batches = consumer.poll(timeout_ms=500)
        positions: dict[int, int] = {}
        for tp, records in batches.items():
            for r in records:
                emit(f"record {tp.partition} {r.offset} {r.key.decode()} {r.value.decode()}")
                positions[tp.partition] = r.offset + 1
        if positions:
            consumer.commit(
                {
                    TopicPartition(topic, p): OffsetAndMetadata(o, "", -1)
                    for p, o in positions.items()
                }
            )
            for p, o in sorted(positions.items()):
                emit(f"committed {p} {o}")


def run_confluent(bootstrap: str, topic: str, group: str, assignor: str) -> None:
    """Consume with confluent-kafka (librdkafka)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": SESSION_TIMEOUT_MS,
            "heartbeat.interval.ms": HEARTBEAT_MS,
            "partition.assignment.strategy": assignor,
        }
    )

    owned: set[int] = set()

    # librdkafka's assignment() is not yet updated inside the callbacks; under cooperative
    # rebalancing the callbacks carry only what changed.
    def on_assign(_c: Consumer, partitions: list[TopicPartition]) -> None:
        owned.update(tp.partition for tp in partitions)
        emit_assignment(owned)

    def on_revoke(_c: Consumer, partitions: list[TopicPartition]) -> None:
        owned.difference_update(tp.partition for tp in partitions)
        emit_assignment(owned)

    consumer.subscribe([topic], on_assign=on_assign, on_revoke=on_revoke)
    while True:
        messages = consumer.consume(500, 0.5)
        positions: dict[int, int] = {}
        for m in messages:
            if m.error() is not None:
                continue
            partition, offset, key, value = m.partition(), m.offset(), m.key(), m.value()
            assert partition is not None and offset is not None
            assert key is not None and value is not None
            emit(f"record {partition} {offset} {key.decode()} {value.decode()}")
            positions[partition] = offset + 1
        if positions:
            consumer.commit(
                offsets=[TopicPartition(topic, p, o) for p, o in positions.items()],
                asynchronous=False,
            )
            for p, o in sorted(positions.items()):
                emit(f"committed {p} {o}")


async def run_aiokafka(bootstrap: str, topic: str, group: str, assignor: str) -> None:
    """Consume with aiokafka."""
    from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
    from aiokafka.coordinator.assignors.range import RangePartitionAssignor
    from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor

    assignors = {"range": RangePartitionAssignor, "roundrobin": RoundRobinPartitionAssignor}
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=SESSION_TIMEOUT_MS,
        heartbeat_interval_ms=HEARTBEAT_MS,
        partition_assignment_strategy=(assignors[assignor],),
    )

    owned: set[int] = set()

    class Listener(ConsumerRebalanceListener):
        async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
            owned.difference_update(tp.partition for tp in revoked)
            emit_assignment(owned)

        async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
            owned.update(tp.partition for tp in assigned)
            emit_assignment(owned)

    await consumer.start()
    consumer.subscribe([topic], listener=Listener())
    while True:
        batches = await consumer.getmany(timeout_ms=500)
        positions: dict[int, int] = {}
        for tp, records in batches.items():
            for r in records:
                emit(f"record {tp.partition} {r.offset} {r.key.decode()} {r.value.decode()}")
                positions[tp.partition] = r.offset + 1
        if positions:
            await consumer.commit({TopicPartition(topic, p): o for p, o in positions.items()})
            for p, o in sorted(positions.items()):
                emit(f"committed {p} {o}")


def main() -> None:
    """Entry point: dispatch on the client library name."""
    lib, bootstrap, topic, group, assignor = sys.argv[1:6]
    if lib == "kafka-python":
        run_kafka_python(bootstrap, topic, group, assignor)
    elif lib == "confluent-kafka":
        run_confluent(bootstrap, topic, group, assignor)
    elif lib == "aiokafka":
        asyncio.run(run_aiokafka(bootstrap, topic, group, assignor))
    else:
        raise SystemExit(f"unknown client library {lib!r}")


if __name__ == "__main__":
    main()
