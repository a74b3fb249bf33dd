"""An idempotent produce request replayed byte-for-byte is appended once (Kafka's dedup window)."""

from __future__ import annotations

from kafka.protocol.consumer import ListOffsetsRequest
from kafka.protocol.producer import InitProducerIdRequest, ProduceRequest

from harness.broker_process import BrokerProcess
from tests.test_real_clients import create_topic
from tests.wire import WireClient, decode_response, idempotent_batch

PRODUCE_VERSION = 7
TOPIC = "replay"


def produce_request(records: bytes) -> ProduceRequest:
    """acks=all produce of one batch to partition 0 of TOPIC."""
    return ProduceRequest(
        transactional_id=None,
        acks=-1,
        timeout_ms=10_000,
        topic_data=[
            ProduceRequest.TopicProduceData(
                name=TOPIC,
                partition_data=[
                    ProduceRequest.TopicProduceData.PartitionProduceData(index=0, records=records)
                ],
            )
        ],
    )


def latest_offset(client: WireClient) -> int:
    """ListOffsets(latest) of TOPIC partition 0: the log end offset."""
    request = ListOffsetsRequest(
        replica_id=-1,
        isolation_level=0,
        topics=[
            ListOffsetsRequest.ListOffsetsTopic(
                name=TOPIC,
                partitions=[
                    ListOffsetsRequest.ListOffsetsTopic.ListOffsetsPartition(
                        partition_index=0, current_leader_epoch=-1, timestamp=-1
                    )
                ],
            )
        ],
    )
    response = client.request(request, version=4)
    partition = response.topics[0].partitions[0]
    assert partition.error_code == 0
    return partition.offset


def base_offset_of(response: object) -> tuple[int, int]:
    """(error code, base offset) of the single partition in a produce response."""
    partition = response.responses[0].partition_responses[0]  # type: ignore[attr-defined]
    return partition.error_code, partition.base_offset


def test_replayed_idempotent_produce_frame_is_appended_once(broker: BrokerProcess) -> None:
    """The same frame sent three times (twice on one connection, once on another) yields one
    append and the same base offset in every response."""
    create_topic(broker.bootstrap, TOPIC, partitions=1)
    with WireClient(broker.host, broker.port) as client:
        init = client.request(
            InitProducerIdRequest(transactional_id=None, transaction_timeout_ms=60_000), version=1
        )
        assert init.error_code == 0
        before = latest_offset(client)

        records = idempotent_batch(init.producer_id, init.producer_epoch, 0, [b"a", b"b", b"c"])
        request = produce_request(records)
        frame = client.encode(request, PRODUCE_VERSION)
        client.send_raw(frame)
        first = base_offset_of(decode_response(request, PRODUCE_VERSION, client.read_frame()))
        client.send_raw(frame)
        second = base_offset_of(decode_response(request, PRODUCE_VERSION, client.read_frame()))

    with WireClient(broker.host, broker.port) as other:
        other.send_raw(frame)
        third = base_offset_of(decode_response(request, PRODUCE_VERSION, other.read_frame()))
        after = latest_offset(other)

    assert first == (0, before)
    assert second == first
    assert third == first
    assert after == before + 3, "the replayed batch was appended more than once"


def test_sequence_gap_is_rejected_and_not_appended(broker: BrokerProcess) -> None:
    """A batch whose sequence skips ahead gets OUT_OF_ORDER_SEQUENCE_NUMBER and no offsets."""
    create_topic(broker.bootstrap, TOPIC, partitions=1)
    with WireClient(broker.host, broker.port) as client:
        init = client.request(
            InitProducerIdRequest(transactional_id=None, transaction_timeout_ms=60_000), version=1
        )
        first = produce_request(idempotent_batch(init.producer_id, init.producer_epoch, 0, [b"x"]))
        assert base_offset_of(client.request(first, PRODUCE_VERSION))[0] == 0
        before = latest_offset(client)
        gap = produce_request(idempotent_batch(init.producer_id, init.producer_epoch, 5, [b"y"]))
        error, _ = base_offset_of(client.request(gap, PRODUCE_VERSION))
        assert error == 45  # OUT_OF_ORDER_SEQUENCE_NUMBER
        assert latest_offset(client) == before
