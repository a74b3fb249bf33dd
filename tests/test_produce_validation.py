"""A broker process refuses every batch whose records do not parse, per partition with
Kafka's error code, stores nothing of it, and real consumers then read the topic cleanly.

Raw produce requests over TCP carry each poison kind under a valid CRC (the catalogue in
test_log_record_validator); good batches go in between. Afterwards confluent-kafka and
kafka-python consumers must read exactly the good messages with no error. Real producers
(confluent-kafka with every codec, kafka-python with gzip) must still be accepted.
"""

from __future__ import annotations

import time

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from kafka import KafkaConsumer
from kafka import TopicPartition as KafkaTopicPartition
from kafka.protocol.consumer import ListOffsetsRequest
from kafka.protocol.producer import ProduceRequest

from harness.broker_process import BrokerProcess
from tests.poison_batches import POISON, records
from tests.test_log_record_batch import build_batch
from tests.test_real_clients import create_topic
from tests.wire import TIMESTAMP_MS, WireClient, encode_record, raw_batch

PRODUCE_VERSION = 7
TOPIC = "poison"
GZIP = 1


def produce(client: WireClient, topic: str, data: bytes) -> tuple[int, int]:
    """acks=all produce of `data` to partition 0: (error code, base offset)."""
    request = ProduceRequest(
        transactional_id=None,
        acks=-1,
        timeout_ms=10_000,
        topic_data=[
            ProduceRequest.TopicProduceData(
                name=topic,
                partition_data=[
                    ProduceRequest.TopicProduceData.PartitionProduceData(index=0, records=data)
                ],
            )
        ],
    )
    partition = client.request(request, PRODUCE_VERSION).responses[0].partition_responses[0]
    return partition.error_code, partition.base_offset


def list_offset(client: WireClient, timestamp: int) -> tuple[int, int]:
    """ListOffsets of TOPIC partition 0 for `timestamp` (-1 latest): (error code, offset)."""
    request = ListOffsetsRequest(
        replica_id=-1,
        isolation_level=0,
        topics=[
            ListOffsetsRequest.ListOffsetsTopic(
                name=TOPIC,
                partitions=[
                    ListOffsetsRequest.ListOffsetsTopic.ListOffsetsPartition(
                        partition_index=0, current_leader_epoch=-1, timestamp=timestamp
                    )
                ],
            )
        ],
    )
    partition = client.request(request, version=4).topics[0].partitions[0]
    return partition.error_code, partition.offset


def good_values(first: int, n: int) -> list[bytes]:
    return [b"good-%d" % i for i in range(first, first + n)]


def consume_confluent(bootstrap: str, topic: str, expect: int) -> list[tuple[int, bytes]]:
    """(offset, value) of everything in partition 0 up to its end; fails on any error."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "validation-check",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    consumer.assign([TopicPartition(topic, 0, 0)])
    out: list[tuple[int, bytes]] = []
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            error = message.error()
            if error is not None:
                assert error.code() == KafkaError._PARTITION_EOF, error
                if len(out) >= expect:
                    break
                continue
            offset, value = message.offset(), message.value()
            assert offset is not None and value is not None
            out.append((offset, value))
    finally:
        consumer.close()
    return out


def consume_kafka_python(bootstrap: str, topic: str, expect: int) -> list[tuple[int, bytes]]:
    """(offset, value) read from partition 0 by kafka-python: `expect` records, then a
    further second of polls to see that nothing else (and no CorruptRecordError) comes."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    tp = KafkaTopicPartition(topic, 0)
    consumer.assign([tp])
    consumer.seek_to_beginning(tp)
    out: list[tuple[int, bytes]] = []
    deadline = time.monotonic() + 30
    settle: float | None = None
    try:
        while time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=200).values():
                out += [(r.offset, r.value) for r in batch]
            if len(out) >= expect:
                settle = settle or time.monotonic() + 1.0
                if time.monotonic() > settle:
                    break
    finally:
        consumer.close()
    return out


def test_poison_batches_are_refused_and_consumers_read_cleanly(broker: BrokerProcess) -> None:
    create_topic(broker.bootstrap, TOPIC, partitions=1)
    refused: dict[str, int] = {}
    with WireClient(broker.host, broker.port) as client:
        assert produce(client, TOPIC, build_batch(good_values(0, 3))) == (0, 0)
        for name, (raw, _) in sorted(POISON.items()):
            before = list_offset(client, -1)
            refused[name], _ = produce(client, TOPIC, raw)
            assert list_offset(client, -1) == before, f"{name}: the log end offset moved"
        # A good batch followed by a bad one in the same partition's records: both refused.
        mixed = build_batch(good_values(100, 2)) + raw_batch(records(3), record_count=1000)
        refused["good then bad in one produce"], _ = produce(client, TOPIC, mixed)
        # Produce v3+ carries v2 batches only, and at least one (Kafka: INVALID_RECORD).
        magic1 = raw_batch(records(1), record_count=1, magic=1)
        refused["magic 1"], _ = produce(client, TOPIC, magic1)
        refused["no batch"], _ = produce(client, TOPIC, b"")
        assert list_offset(client, -1) == (0, 3)

        assert produce(client, TOPIC, build_batch(good_values(3, 3), compression=GZIP)) == (0, 3)
        # Valid records under a header maxTimestamp of -5: stored, with the true maximum.
        lying = b"".join(
            encode_record(i, value, timestamp_delta=1000 + i)
            for i, value in enumerate(good_values(6, 3))
        )
        assert produce(client, TOPIC, raw_batch(lying, record_count=3, max_timestamp=-5)) == (0, 6)
        assert list_offset(client, TIMESTAMP_MS + 1001) == (0, 7)
        # ListOffsets by timestamp walks records of every batch here without failing.
        assert list_offset(client, TIMESTAMP_MS) == (0, 0)
        assert list_offset(client, -1) == (0, 9)

    expected_codes = {name: code for name, (_, code) in POISON.items()}
    expected_codes["good then bad in one produce"] = 87
    expected_codes["magic 1"] = 87
    expected_codes["no batch"] = 87
    assert refused == expected_codes
    print(f"{len(refused)} poison produces refused, error codes: {sorted(set(refused.values()))}")

    good = list(enumerate(good_values(0, 9)))
    assert consume_confluent(broker.bootstrap, TOPIC, 9) == good
    assert consume_kafka_python(broker.bootstrap, TOPIC, 9) == good


def test_real_producers_with_every_codec_are_accepted(broker: BrokerProcess) -> None:
    """What librdkafka writes for gzip, snappy, lz4 and zstd (and kafka-python for gzip)
    passes the leader's record walk and reads back whole."""
    topic = "codecs"
    create_topic(broker.bootstrap, topic, partitions=1)
    sent: list[bytes] = []
    errors: list[str] = []
    for codec in ("gzip", "snappy", "lz4", "zstd"):
        producer = Producer(
            {"bootstrap.servers": broker.bootstrap, "compression.type": codec, "linger.ms": 20}
        )
        for i in range(50):
            value = f"{codec}-{i}-".encode() * 8
            sent.append(value)
            producer.produce(
                topic, value=value, on_delivery=lambda e, _m: errors.append(str(e)) if e else None
            )
        assert producer.flush(30) == 0
        assert errors == [], f"{codec}: {errors[:3]}"
    from kafka import KafkaProducer

    kp = KafkaProducer(bootstrap_servers=broker.bootstrap, compression_type="gzip", linger_ms=20)
    for i in range(50):
        sent.append(b"kafka-python-%d" % i)
        kp.send(topic, value=sent[-1], partition=0)
    kp.flush(30)
    kp.close()

    got = consume_confluent(broker.bootstrap, topic, len(sent))
    assert [value for _, value in got] == sent
    assert [offset for offset, _ in got] == list(range(len(sent)))
