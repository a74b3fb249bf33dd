"""SIGKILL of the broker process mid-production, then restart on the same data directory.

With fsync after every batch (log.flush.interval.messages=1) no acknowledged message may be
lost. With writes held in process memory until fsync and fsync never forced (a power cut), the
unsynced suffix is lost, and the recovered log must be valid: dense offsets, CRCs intact, no
torn batch served, and new appends continue from the recovered end. (That a segment roll
syncs the rolled segment, as in Kafka, is proven in tests/test_log_partition.py.)
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from confluent_kafka import Consumer, Producer, TopicPartition

from harness.broker_process import BrokerProcess
from tests.conftest import StartBroker
from tests.test_real_clients import create_topic

TOPIC = "crash"


def produce_until_killed(
    broker: BrokerProcess, kill_after_acks: int, first_value: int = 0
) -> tuple[set[int], int]:
    """Send increasing values from `first_value` with acks=all; SIGKILL the broker once
    `kill_after_acks` are acknowledged. Returns (acknowledged values, next unsent value)."""
    acked: set[int] = set()

    def on_delivery(err: object, message: object) -> None:
        if err is None:
            acked.add(int(message.value()))  # type: ignore[attr-defined]

    producer = Producer(
        {
            "bootstrap.servers": broker.bootstrap,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 1,
            "message.timeout.ms": 3000,
        }
    )
    sent = first_value
    while len(acked) < kill_after_acks:
        assert sent - first_value < 100 * kill_after_acks, "the broker stopped acknowledging"
        producer.produce(TOPIC, value=str(sent).encode(), on_delivery=on_delivery)
        sent += 1
        producer.poll(0)
        if sent % 500 == 0:
            producer.poll(0.01)
    broker.kill()
    # Responses already on the wire still count; undelivered ones time out as failures.
    producer.flush(5)
    return acked, sent


def read_all(bootstrap: str) -> list[tuple[int, int]]:
    """Every (offset, value) of partition 0 from offset 0, with CRC checks on."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "crash-reader",
            "check.crcs": True,
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    consumer.assign([TopicPartition(TOPIC, 0, 0)])
    out: list[tuple[int, int]] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        message = consumer.poll(1.0)
        if message is None:
            continue
        error = message.error()
        if error is not None:
            assert error.code() == -191, error  # _PARTITION_EOF
            break
        offset, value = message.offset(), message.value()
        assert offset is not None and value is not None
        out.append((offset, int(value)))
    consumer.close()
    return out


def restart(
    start: StartBroker, killed: BrokerProcess, settings: Mapping[str, object]
) -> BrokerProcess:
    """Start a new broker process on the killed one's data directory."""
    return start(settings=settings, data_dir=killed.data_dir)


def check_valid_log(reads: list[tuple[int, int]], sent: int) -> None:
    """Dense offsets from 0, every value one we sent, none twice."""
    assert [o for o, _ in reads] == list(range(len(reads))), "offsets are not dense from 0"
    values = [v for _, v in reads]
    assert len(values) == len(set(values)), "a value appears twice"
    assert all(0 <= v < sent for v in values), "a value we never sent was served"


def scenario(
    broker_factory: StartBroker, settings: dict[str, object]
) -> tuple[set[int], int, list[tuple[int, int]]]:
    """Run produce → SIGKILL → restart → read; return what the checks need."""
    settings = {"num.partitions": 1, **settings}
    broker = broker_factory(settings=settings)
    create_topic(broker.bootstrap, TOPIC, partitions=1)
    acked, sent = produce_until_killed(broker, kill_after_acks=3000)
    revived = restart(broker_factory, broker, settings)
    return acked, sent, read_all(revived.bootstrap)


def test_fsync_every_batch_loses_no_acknowledged_message_on_sigkill(
    broker_factory: StartBroker,
) -> None:
    """flush.messages=1: everything acknowledged before the kill is read after the restart."""
    acked, sent, reads = scenario(broker_factory, {"log.flush.interval.messages": 1})
    check_valid_log(reads, sent)
    lost = acked - {v for _, v in reads}
    assert not lost, f"{len(lost)} acknowledged messages lost, e.g. {sorted(lost)[:5]}"


def test_power_cut_without_fsync_keeps_the_synced_prefix_and_accepts_appends(
    broker_factory: StartBroker,
) -> None:
    """Writes held in memory until fsync, fsync never forced: a clean restart syncs the first
    1,000 messages; after a SIGKILL the log is exactly those (everything acknowledged since was
    never synced and is gone), valid, and a new append lands at its end."""
    settings = {"num.partitions": 1, "faultline.storage.volatile.until.fsync": True}
    broker = broker_factory(settings=settings)
    create_topic(broker.bootstrap, TOPIC, partitions=1)
    producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all"})
    for value in range(1000):
        producer.produce(TOPIC, value=str(value).encode())
    assert producer.flush(30) == 0
    assert broker.terminate() == 0, "clean shutdown failed"

    second = restart(broker_factory, broker, settings)
    acked, sent = produce_until_killed(second, kill_after_acks=2000, first_value=1000)
    assert len(acked) >= 2000

    third = restart(broker_factory, second, settings)
    reads = read_all(third.bootstrap)
    check_valid_log(reads, sent)
    assert reads == [(i, i) for i in range(1000)], (
        f"expected exactly the 1,000 synced messages, read {len(reads)}"
    )

    producer = Producer({"bootstrap.servers": third.bootstrap, "acks": "all"})
    producer.produce(TOPIC, value=str(sent).encode())
    assert producer.flush(30) == 0
    assert read_all(third.bootstrap) == [*reads, (1000, sent)], "the append did not land at the end"


def test_committed_offsets_survive_a_power_cut_when_every_message_is_fsynced(
    broker_factory: StartBroker,
) -> None:
    """flush.messages=1 applies to __consumer_offsets too: a commit acknowledged before a
    SIGKILL of a broker whose unsynced writes vanish is still there after the restart."""
    settings = {
        "num.partitions": 1,
        "faultline.storage.volatile.until.fsync": True,
        "log.flush.interval.messages": 1,
    }
    broker = broker_factory(settings=settings)
    create_topic(broker.bootstrap, TOPIC, partitions=1)
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "durable-commits"})
    consumer.commit(offsets=[TopicPartition(TOPIC, 0, 42)], asynchronous=False)
    consumer.close()
    broker.kill()

    revived = restart(broker_factory, broker, settings)
    consumer = Consumer({"bootstrap.servers": revived.bootstrap, "group.id": "durable-commits"})
    [committed] = consumer.committed([TopicPartition(TOPIC, 0)], timeout=30)
    consumer.close()
    assert committed.offset == 42
