"""Each way of getting the client wrong ends in an exception that says what to do.

Unreachable bootstrap, unknown topic and oversized records use the reference broker (or
a closed port); the authorization and version errors use a scripted broker: a real TCP
server in this test that answers with kafka-python's response classes, because the
reference broker has no ACLs and serves every version this client needs.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest
import trio
from kafka.protocol.api_key import ApiKey
from kafka.protocol.metadata import ApiVersionsResponse, MetadataRequest, MetadataResponse
from kafka.protocol.producer import ProduceRequest, ProduceResponse

from harness.broker_process import BrokerProcess
from harness.tansu import free_loopback_port
from workloads.client import (
    AuthorizationError,
    BootstrapUnreachableError,
    ConsumerConfig,
    DefiniteFailure,
    KafkaClientError,
    MessageTooLargeError,
    Producer,
    ProducerConfig,
    UnknownOutcome,
    UnknownTopicError,
    UnsupportedVersionError,
)
from workloads.client.config import ConfigError
from workloads.client.consumer import Consumer
from workloads.client.errors import NOT_APPENDED


async def test_unreachable_bootstrap_names_the_servers_and_what_to_check() -> None:
    port = free_loopback_port()
    config = ProducerConfig.from_kafka(
        {"bootstrap.servers": f"127.0.0.1:{port}", "max.block.ms": 500}
    )
    with pytest.raises(BootstrapUnreachableError) as info:
        async with Producer(config):
            pass
    message = str(info.value)
    assert f"127.0.0.1:{port}" in message
    assert "broker is running" in message


async def test_unknown_topic_without_auto_create_says_create_it(
    broker_factory: Callable[..., BrokerProcess],
) -> None:
    broker = broker_factory(settings={"auto.create.topics.enable": False})
    config = ProducerConfig.from_kafka(
        {"bootstrap.servers": broker.bootstrap, "max.block.ms": 1500}
    )
    async with Producer(config) as producer:
        with pytest.raises(UnknownTopicError, match=r"does not exist.*create it"):
            await producer.send("no-such-topic", b"v")


async def test_record_over_max_request_size_is_a_definite_failure(broker: BrokerProcess) -> None:
    config = ProducerConfig.from_kafka(
        {"bootstrap.servers": broker.bootstrap, "max.request.size": 10_000}
    )
    async with Producer(config) as producer:
        with pytest.raises(MessageTooLargeError, match=r"max\.request\.size") as info:
            await producer.send("big", b"x" * 20_000)
    assert isinstance(info.value, DefiniteFailure)


async def test_batch_over_broker_limit_is_a_definite_failure_naming_the_setting(
    broker_factory: Callable[..., BrokerProcess],
) -> None:
    broker = broker_factory(settings={"message.max.bytes": 5_000, "num.partitions": 1})
    config = ProducerConfig.from_kafka(
        {"bootstrap.servers": broker.bootstrap, "max.request.size": 100_000}
    )
    async with Producer(config) as producer:
        with pytest.raises(MessageTooLargeError, match=r"message\.max\.bytes") as info:
            await producer.send_and_wait("big", b"x" * 20_000)
        # The producer stays usable after a rejected batch.
        meta = await producer.send_and_wait("big", b"small")
    assert isinstance(info.value, DefiniteFailure)
    assert meta.offset == 0


def test_conflicting_idempotence_settings_say_which_to_change() -> None:
    with pytest.raises(ConfigError, match="requires acks=all"):
        ProducerConfig(acks=1, enable_idempotence=True)
    # Not asked for explicitly: idempotence quietly steps aside, as in the Java client.
    assert ProducerConfig.from_kafka({"acks": "1"}).enable_idempotence is False
    with pytest.raises(ConfigError, match=r"unknown ProducerConfig setting 'lingr\.ms'"):
        ProducerConfig.from_kafka({"lingr.ms": 5})


# -- a scripted broker ------------------------------------------------------------------------

Answer = Callable[[int, int, bytes], bytes | None]


async def scripted_broker(nursery: trio.Nursery, answer: Answer) -> int:
    """A TCP server that decodes request headers and replies with `answer(api, version, frame)`."""

    async def handle(stream: trio.SocketStream) -> None:
        buffer = bytearray()
        while True:
            data = await stream.receive_some(65536)
            if not data:
                return
            buffer += data
            while len(buffer) >= 4:
                size = struct.unpack_from(">i", buffer)[0]
                if len(buffer) < 4 + size:
                    break
                frame = bytes(buffer[4 : 4 + size])
                del buffer[: 4 + size]
                api_key, version = struct.unpack_from(">hh", frame)
                reply = answer(api_key, version, frame)
                if reply is not None:
                    await stream.send_all(reply)

    listeners = await nursery.start(trio.serve_tcp, handle, 0)
    return listeners[0].socket.getsockname()[1]


def _correlation(frame: bytes) -> int:
    return struct.unpack_from(">i", frame, 4)[0]


def api_versions(frame: bytes, version: int, ranges: dict[int, tuple[int, int]]) -> bytes:
    entry = ApiVersionsResponse.ApiVersion
    response = ApiVersionsResponse(
        version=version,
        error_code=0,
        api_keys=[
            entry(api_key=k, min_version=lo, max_version=hi) for k, (lo, hi) in ranges.items()
        ],
        throttle_time_ms=0,
    )
    response.with_header(correlation_id=_correlation(frame))
    return bytes(response.encode(header=True, framed=True))


def metadata(frame: bytes, version: int, port: int, topic_error: int | None) -> bytes:
    request = MetadataRequest.decode(frame, version=version, header=True)
    topics = []
    for t in request.topics or []:
        topics.append(
            MetadataResponse.MetadataResponseTopic(
                error_code=topic_error or 0, name=t.name, is_internal=False, partitions=[]
            )
        )
    response = MetadataResponse(
        version=version,
        throttle_time_ms=0,
        brokers=[MetadataResponse.MetadataResponseBroker(node_id=0, host="127.0.0.1", port=port)],
        cluster_id="scripted",
        controller_id=0,
        topics=topics,
    )
    response.with_header(correlation_id=_correlation(frame))
    return bytes(response.encode(header=True, framed=True))


async def test_topic_authorization_failure_says_which_acl_to_grant() -> None:
    async with trio.open_nursery() as nursery:
        port = 0

        def answer(api_key: int, version: int, frame: bytes) -> bytes | None:
            if api_key == ApiKey.ApiVersions:
                return api_versions(frame, version, {18: (0, 3), 3: (0, 12), 0: (3, 9)})
            if api_key == ApiKey.Metadata:
                return metadata(frame, version, port, topic_error=29)
            return None

        port = await scripted_broker(nursery, answer)
        config = ProducerConfig.from_kafka(
            {
                "bootstrap.servers": f"127.0.0.1:{port}",
                "enable.idempotence": False,
                "acks": 1,
                "max.block.ms": 2000,
            }
        )
        async with Producer(config) as producer:
            with pytest.raises(AuthorizationError, match=r"TOPIC_AUTHORIZATION_FAILED.*grant"):
                await producer.send("secret", b"v")
        nursery.cancel_scope.cancel()


async def test_broker_without_a_shared_fetch_version_says_upgrade() -> None:
    async with trio.open_nursery() as nursery:
        port = 0

        def answer(api_key: int, version: int, frame: bytes) -> bytes | None:
            if api_key == ApiKey.ApiVersions:
                # An ancient broker: Metadata only up to v5 is fine, but Fetch stops at v2
                # (before record batch v2), and ListOffsets at v0.
                return api_versions(frame, version, {18: (0, 3), 3: (0, 5), 1: (0, 2), 2: (0, 0)})
            if api_key == ApiKey.Metadata:
                return metadata(frame, version, port, topic_error=None)
            return None

        port = await scripted_broker(nursery, answer)
        config = ConsumerConfig.from_kafka(
            {"bootstrap.servers": f"127.0.0.1:{port}", "max.block.ms": 2000}
        )
        async with Consumer(config) as consumer:
            conn = await consumer.cluster.connection(0)
            with pytest.raises(UnsupportedVersionError, match=r"FetchRequest v0\.\.v2.*upgrade"):
                conn.version_for(ApiKey.Fetch, 4, 12, "FetchRequest")
        nursery.cancel_scope.cancel()


async def test_idempotence_on_a_broker_without_init_producer_id_says_turn_it_off() -> None:
    async with trio.open_nursery() as nursery:
        port = 0

        def answer(api_key: int, version: int, frame: bytes) -> bytes | None:
            if api_key == ApiKey.ApiVersions:
                return api_versions(frame, version, {18: (0, 3), 3: (0, 12), 0: (3, 9)})
            if api_key == ApiKey.Metadata:
                return metadata(frame, version, port, topic_error=None)
            return None

        port = await scripted_broker(nursery, answer)
        config = ProducerConfig.from_kafka(
            {"bootstrap.servers": f"127.0.0.1:{port}", "max.block.ms": 2000}
        )
        with pytest.raises(UnsupportedVersionError, match=r"enable\.idempotence=false"):
            async with Producer(config):
                pass
        nursery.cancel_scope.cancel()


# -- which Produce answers may be recorded `fail` ---------------------------------------------


def metadata_with_partition(frame: bytes, version: int, port: int) -> bytes:
    """Metadata naming this scripted broker (node 0) the leader of partition 0 of each topic."""
    request = MetadataRequest.decode(frame, version=version, header=True)
    topic = MetadataResponse.MetadataResponseTopic
    partition = topic.MetadataResponsePartition(
        error_code=0, partition_index=0, leader_id=0, leader_epoch=0, replica_nodes=[0],
        isr_nodes=[0], offline_replicas=[],
    )
    response = MetadataResponse(
        version=version,
        throttle_time_ms=0,
        brokers=[MetadataResponse.MetadataResponseBroker(node_id=0, host="127.0.0.1", port=port)],
        cluster_id="scripted",
        controller_id=0,
        topics=[topic(error_code=0, name=t.name, is_internal=False, partitions=[partition])
                for t in request.topics or []],
    )
    response.with_header(correlation_id=_correlation(frame))
    return bytes(response.encode(header=True, framed=True))


def produce_error(frame: bytes, version: int, code: int) -> bytes:
    """A Produce response answering every partition of the request with `code`."""
    request = ProduceRequest.decode(frame, version=version, header=True)
    entry = ProduceResponse.TopicProduceResponse
    response = ProduceResponse(
        version=version,
        throttle_time_ms=0,
        responses=[
            entry(name=t.name, partition_responses=[
                entry.PartitionProduceResponse(
                    index=p.index, error_code=code, base_offset=-1, log_append_time_ms=-1,
                    log_start_offset=-1, record_errors=[], error_message=None,
                )
                for p in t.partition_data
            ])
            for t in request.topic_data
        ],
    )
    response.with_header(correlation_id=_correlation(frame))
    return bytes(response.encode(header=True, framed=True))


async def outcome_of_produce_answered(code: int, acks: int) -> type[Exception]:
    """Send one record to a broker that answers every Produce with `code` (no retries);
    the exception class its delivery ends in."""
    async with trio.open_nursery() as nursery:
        port = 0

        def answer(api_key: int, version: int, frame: bytes) -> bytes | None:
            if api_key == ApiKey.ApiVersions:
                return api_versions(frame, version, {18: (0, 3), 3: (0, 12), 0: (3, 9)})
            if api_key == ApiKey.Metadata:
                return metadata_with_partition(frame, version, port)
            if api_key == ApiKey.Produce:
                return produce_error(frame, version, code)
            return None

        port = await scripted_broker(nursery, answer)
        config = ProducerConfig.from_kafka({
            "bootstrap.servers": f"127.0.0.1:{port}", "enable.idempotence": False,
            "acks": acks, "retries": 0, "max.block.ms": 2000, "request.timeout.ms": 2000,
        })
        async with Producer(config) as producer:
            delivery = await producer.send("t", b"1", partition=0)
            with pytest.raises(KafkaClientError) as info:
                await delivery.wait()
        nursery.cancel_scope.cancel()
    return type(info.value)


@pytest.mark.parametrize(
    ("code", "acks"),
    [
        (-1, 1),  # UNKNOWN_SERVER_ERROR: anything may have happened
        (6, 1),  # NOT_LEADER_OR_FOLLOWER: never trusted as a refusal, whatever acks
        (6, -1),
        (7, -1),  # REQUEST_TIMED_OUT
        (20, -1),  # NOT_ENOUGH_REPLICAS_AFTER_APPEND: the leader did append
        (56, 1),  # KAFKA_STORAGE_ERROR: the disk failed somewhere in the write
        (999, 1),  # a code this client does not know
    ],
)
async def test_produce_answers_that_do_not_prove_a_refusal_are_unknown(
    code: int, acks: int
) -> None:
    assert issubclass(await outcome_of_produce_answered(code, acks), UnknownOutcome)


@pytest.mark.parametrize(
    "code",
    [2, 10, 19, 29, 87],  # CORRUPT_MESSAGE, MESSAGE_TOO_LARGE, NOT_ENOUGH_REPLICAS,
    # TOPIC_AUTHORIZATION_FAILED, INVALID_RECORD: each checked before the append
)
async def test_produce_answers_kafka_gives_only_before_appending_are_definite(code: int) -> None:
    assert code in NOT_APPENDED
    assert issubclass(await outcome_of_produce_answered(code, -1), DefiniteFailure)


def test_the_codes_said_to_prove_not_appended_exclude_every_maybe_appended_one() -> None:
    # REQUEST_TIMED_OUT, NOT_LEADER_OR_FOLLOWER, NOT_ENOUGH_REPLICAS_AFTER_APPEND,
    # KAFKA_STORAGE_ERROR, UNKNOWN_SERVER_ERROR, NETWORK_EXCEPTION
    assert not {7, 6, 20, 56, -1, 13} & set(NOT_APPENDED)
    # Each says why (its Kafka name, then the check that refuses before the append).
    assert all(": " in reason for reason in NOT_APPENDED.values())
