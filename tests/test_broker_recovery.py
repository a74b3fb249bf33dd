"""A real `faultline broker` restarted on damaged data directories, read by real clients.

The user's report: one flipped byte in the first of 5 segments, after a clean shutdown,
made the restart discard 880 of 1,000 messages, delete the 4 later segments and reuse
offset 120; a deleted `__cluster_metadata.json` made the broker delete every log as
"unknown topic". Here the restarted broker must serve every intact message, keep the
damaged bytes aside, say so at WARNING, hand out no offset twice, and refuse to start
without its metadata rather than delete anything.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import trio
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from harness.broker_process import BrokerStartError
from reference_broker.broker import Broker
from reference_broker.config import BrokerConfig
from reference_broker.log.record_batch import parse_header
from reference_broker.metadata import MetadataMissingError
from reference_broker.metadata.store import METADATA_PATH
from reference_broker.os_env import os_node_env
from tests.conftest import StartBroker
from tests.test_real_clients import create_topic

TOPIC = "damaged"
MESSAGES = 1000
SETTINGS: dict[str, object] = {"num.partitions": 1, "log.segment.bytes": 3300}


def produce_in_batches(bootstrap: str) -> None:
    """1,000 values, flushed 10 at a time so that each batch holds 10 records."""
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 50})
    for start in range(0, MESSAGES, 10):
        for value in range(start, start + 10):
            producer.produce(TOPIC, value=str(value).encode())
        assert producer.flush(30) == 0


def consume_all(bootstrap: str) -> list[tuple[int, int]]:
    """Every (offset, value) kafka-python reads from partition 0, gaps and all."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    tp = TopicPartition(TOPIC, 0)
    consumer.assign([tp])
    consumer.seek_to_beginning(tp)
    out: list[tuple[int, int]] = []
    end = consumer.end_offsets([tp])[tp]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not out or out[-1][0] + 1 < end):
        for records in consumer.poll(timeout_ms=1000).values():
            out.extend((r.offset, int(r.value)) for r in records)
    consumer.close()
    return out


def segments(data_dir: Path) -> list[Path]:
    return sorted((data_dir / f"{TOPIC}-0").glob("*.log"))


def batch_starts(data: bytes) -> list[int]:
    positions, pos = [], 0
    while pos < len(data):
        positions.append(pos)
        pos += parse_header(data, pos).size_in_bytes
    return positions


def test_flipped_byte_in_first_segment_after_clean_shutdown_loses_one_batch(
    broker_factory: StartBroker,
) -> None:
    broker = broker_factory(settings=SETTINGS)
    create_topic(broker.bootstrap, TOPIC, partitions=1)
    produce_in_batches(broker.bootstrap)
    assert broker.terminate() == 0, "clean shutdown failed"
    files = segments(broker.data_dir)
    assert len(files) >= 5, files
    first = files[0]
    data = bytearray(first.read_bytes())
    starts = batch_starts(bytes(data))
    victim = parse_header(data, starts[5])
    data[starts[5] + 70] ^= 0x01  # a byte of the 6th batch's records
    first.write_bytes(bytes(data))

    revived = broker_factory(settings=SETTINGS, data_dir=broker.data_dir)
    reads = consume_all(revived.bootstrap)
    lost = set(range(victim.base_offset, victim.next_offset))
    print(
        f"\nbroker process, flipped byte in first of {len(files)} segments: "
        f"{len(reads)} of {MESSAGES} messages served"
    )
    assert len(reads) == MESSAGES - victim.record_count
    assert [o for o, _ in reads] == [o for o in range(MESSAGES) if o not in lost]
    assert all(offset == value for offset, value in reads)
    assert segments(broker.data_dir) == files, "a later segment was deleted"
    [aside] = sorted((broker.data_dir / f"{TOPIC}-0").glob("*.corrupt"))
    assert aside.read_bytes() == bytes(data[starts[5] : starts[6]])

    producer = Producer({"bootstrap.servers": revived.bootstrap, "acks": "all"})
    offsets: list[int | None] = []
    producer.produce(
        TOPIC, value=b"after", on_delivery=lambda err, msg: offsets.append(msg.offset())
    )
    assert producer.flush(30) == 0
    assert offsets and offsets[0] is not None and offsets[0] >= MESSAGES
    revived.terminate()
    log = revived.log_path.read_text()
    assert any("WARNING" in line and first.name in line for line in log.splitlines()), log


def test_missing_metadata_file_stops_the_broker_and_keeps_the_logs(
    broker_factory: StartBroker,
) -> None:
    broker = broker_factory(settings=SETTINGS)
    create_topic(broker.bootstrap, TOPIC, partitions=1)
    produce_in_batches(broker.bootstrap)
    assert broker.terminate() == 0
    before = {p: p.stat().st_size for p in segments(broker.data_dir)}
    saved = (broker.data_dir / METADATA_PATH).read_bytes()
    (broker.data_dir / METADATA_PATH).unlink()
    with pytest.raises(BrokerStartError):
        broker_factory(settings=SETTINGS, data_dir=broker.data_dir)
    log = (broker.data_dir.parent / "broker-1.log").read_text()
    assert f"{METADATA_PATH} is missing" in log and f"{TOPIC}-0" in log, log
    assert {p: p.stat().st_size for p in segments(broker.data_dir)} == before
    # As the message says: with the file restored, every message is served again.
    (broker.data_dir / METADATA_PATH).write_bytes(saved)
    revived = broker_factory(settings=SETTINGS, data_dir=broker.data_dir)
    reads = consume_all(revived.bootstrap)
    print(f"\nbroker process, metadata file deleted then restored: {len(reads)} of {MESSAGES}")
    assert [v for _, v in reads] == list(range(MESSAGES))


def test_missing_metadata_file_exits_non_zero(tmp_path: Path) -> None:
    data_dir = tmp_path / "node"
    (data_dir / "orders-0").mkdir(parents=True)
    (data_dir / "orders-0" / f"{0:020d}.log").write_bytes(b"")
    result = subprocess.run(
        [sys.executable, "-m", "harness.cli", "broker", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert f"{METADATA_PATH} is missing" in result.stderr
    assert (data_dir / "orders-0" / f"{0:020d}.log").exists()


@pytest.mark.parametrize(
    "props",
    [
        {},
        {"listeners": "PLAINTEXT://127.0.0.1:0,CONTROLLER://127.0.0.1:1",
         "controller.listener.names": "CONTROLLER",
         "controller.quorum.voters": "1@127.0.0.1:1", "node.id": 1},
    ],
    ids=["single-node", "kraft"],
)
def test_broker_open_refuses_logs_without_metadata(
    tmp_path: Path, props: dict[str, object]
) -> None:
    (tmp_path / "orders-0").mkdir()
    config = BrokerConfig.from_properties({"listeners": "PLAINTEXT://127.0.0.1:0", **props})

    async def main() -> None:
        with pytest.raises(MetadataMissingError, match="orders-0"):
            await Broker.open(os_node_env(tmp_path), config)

    trio.run(main)
    assert (tmp_path / "orders-0").is_dir()
    assert not (tmp_path / METADATA_PATH).exists()


def test_logs_of_topics_unknown_to_the_metadata_are_kept(tmp_path: Path) -> None:
    """Only a recorded deletion removes a log; a log the metadata never heard of stays."""
    config = BrokerConfig.from_properties({"listeners": "PLAINTEXT://127.0.0.1:0"})

    async def main() -> None:
        broker = await Broker.open(os_node_env(tmp_path), config)
        await broker.create_topic("kept", 1, 1)
        await broker.create_topic("gone", 1, 1)
        await broker.close()
        # A deletion cut short after the metadata was saved: the log is still there.
        broker = await Broker.open(os_node_env(tmp_path), config)
        await broker.topics.delete("gone")
        broker.store.state.topics.pop("kept")  # the metadata forgot "kept" without a record
        await broker.store.save()
        await broker.close()
        reopened = await Broker.open(os_node_env(tmp_path), config)
        await reopened.close()

    trio.run(main)
    assert (tmp_path / "kept-0").is_dir()
    assert not (tmp_path / "gone-0").exists()


def consume_until_eof(bootstrap: str) -> list[tuple[int, int]]:
    """Every (offset, value) confluent-kafka reads from offset 0 until partition EOF."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "recovery-reader",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    consumer.assign([TopicPartition(TOPIC, 0, 0)])
    out: list[tuple[int, int]] = []
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            message = consumer.poll(1.0)
            if message is None:
                continue
            error = message.error()
            if error is not None:
                assert error.code() == KafkaError._PARTITION_EOF, error
                return out
            offset, value = message.offset(), message.value()
            assert offset is not None and value is not None
            out.append((offset, int(value)))
        raise AssertionError(f"no partition EOF within 30 s after {len(out)} records")
    finally:
        consumer.close()


def test_torn_tail_after_a_crash_is_cut_and_readers_pass_the_retired_offsets(
    broker_factory: StartBroker,
) -> None:
    """A batch half-written when the process died: the tail is truncated as Kafka does, its
    offsets stay retired (an empty batch holds them) and both clients read past them."""
    broker = broker_factory(settings=SETTINGS)
    create_topic(broker.bootstrap, TOPIC, partitions=1)
    produce_in_batches(broker.bootstrap)
    broker.kill()
    last = segments(broker.data_dir)[-1]
    data = last.read_bytes()
    torn = batch_starts(data)[-1]
    victim = parse_header(data, torn)
    last.write_bytes(data[: torn + victim.size_in_bytes // 2])

    revived = broker_factory(settings=SETTINGS, data_dir=broker.data_dir)
    reads = consume_until_eof(revived.bootstrap)
    print(f"\nbroker process, torn tail after SIGKILL: {len(reads)} of {MESSAGES} messages served")
    assert [o for o, _ in reads] == list(range(victim.base_offset))
    producer = Producer({"bootstrap.servers": revived.bootstrap, "acks": "all"})
    producer.produce(TOPIC, value=b"1000")
    assert producer.flush(30) == 0
    assert consume_until_eof(revived.bootstrap)[-1] == (MESSAGES, MESSAGES)
    assert consume_all(revived.bootstrap)[-1] == (MESSAGES, MESSAGES)
    revived.terminate()
    log = revived.log_path.read_text()
    assert any(
        "WARNING" in line and "torn tail" in line and last.name in line for line in log.splitlines()
    )
