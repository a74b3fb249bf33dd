"""The broker on a real loopback port, driven byte by byte with kafka-python's protocol classes.

Each test starts `serve_broker` in-process (real TCP, real files under tmp_path) and speaks
Kafka's wire protocol to it directly, so every error path can be reached on purpose.
"""

from __future__ import annotations

import struct
from pathlib import Path

import trio
from kafka.protocol.admin import (
    CreateTopicsRequest,
    CreateTopicsResponse,
    DeleteTopicsRequest,
    DeleteTopicsResponse,
)
from kafka.protocol.consumer import (
    FetchRequest,
    FetchResponse,
    ListOffsetsRequest,
    ListOffsetsResponse,
    OffsetForLeaderEpochRequest,
    OffsetForLeaderEpochResponse,
)
from kafka.protocol.metadata import (
    ApiVersionsRequest,
    ApiVersionsResponse,
    MetadataRequest,
    MetadataResponse,
)
from kafka.protocol.producer import (
    InitProducerIdRequest,
    InitProducerIdResponse,
    ProduceRequest,
    ProduceResponse,
)

from reference_broker.config import BrokerConfig
from reference_broker.errors import ErrorCode
from reference_broker.log import LogConfig, LogManager
from reference_broker.metadata import MetadataStore, TopicRegistry
from reference_broker.os_env import os_node_env
from tests.broker_process import RawConnection, RunningBroker, in_process_broker
from tests.wire import record_batch


def produce_request(
    topic: str, partition: int, records: bytes, *, acks: int = -1, version: int = 9
) -> ProduceRequest:
    data = ProduceRequest.TopicProduceData
    return ProduceRequest(
        version=version,
        transactional_id=None,
        acks=acks,
        timeout_ms=5000,
        topic_data=[
            data(
                name=topic,
                partition_data=[data.PartitionProduceData(index=partition, records=records)],
            )
        ],
    )


async def produce(
    conn: RawConnection, topic: str, partition: int, records: bytes, *, acks: int = -1
) -> ProduceResponse.TopicProduceResponse.PartitionProduceResponse:
    response = await conn.request(
        produce_request(topic, partition, records, acks=acks), 9, ProduceResponse
    )
    return response.responses[0].partition_responses[0]


def fetch_request(
    topic: str, partition: int, offset: int, *, max_wait_ms: int = 0, min_bytes: int = 1
) -> FetchRequest:
    t = FetchRequest.FetchTopic
    return FetchRequest(
        version=12,
        replica_id=-1,
        max_wait_ms=max_wait_ms,
        min_bytes=min_bytes,
        max_bytes=1 << 20,
        isolation_level=0,
        session_id=0,
        session_epoch=-1,
        topics=[
            t(
                topic=topic,
                partitions=[
                    t.FetchPartition(
                        partition=partition,
                        current_leader_epoch=-1,
                        fetch_offset=offset,
                        last_fetched_epoch=-1,
                        log_start_offset=-1,
                        partition_max_bytes=1 << 20,
                    )
                ],
            )
        ],
        forgotten_topics_data=[],
        rack_id="",
    )


async def list_offset(
    conn: RawConnection, topic: str, partition: int, timestamp: int
) -> tuple[int, int, int]:
    t = ListOffsetsRequest.ListOffsetsTopic
    request = ListOffsetsRequest(
        version=6,
        replica_id=-1,
        isolation_level=0,
        topics=[
            t(
                name=topic,
                partitions=[
                    t.ListOffsetsPartition(
                        partition_index=partition, current_leader_epoch=-1, timestamp=timestamp
                    )
                ],
            )
        ],
    )
    response = await conn.request(request, 6, ListOffsetsResponse)
    p = response.topics[0].partitions[0]
    return p.error_code, p.offset, p.timestamp


async def create_topic(conn: RawConnection, name: str, partitions: int = 1, **configs: str) -> int:
    t = CreateTopicsRequest.CreatableTopic
    request = CreateTopicsRequest(
        version=7,
        topics=[
            t(
                name=name,
                num_partitions=partitions,
                replication_factor=1,
                assignments=[],
                configs=[
                    t.CreatableTopicConfig(name=k.replace("_", "."), value=v)
                    for k, v in configs.items()
                ],
            )
        ],
        timeout_ms=5000,
        validate_only=False,
    )
    response = await conn.request(request, 7, CreateTopicsResponse)
    return response.topics[0].error_code


async def api_versions_ok(running: RunningBroker) -> bool:
    """Whether a fresh connection still gets ApiVersions answered (the broker is serving)."""
    conn = await RawConnection.open(running)
    try:
        response = await conn.request(ApiVersionsRequest(version=3), 3, ApiVersionsResponse)
        return response.error_code == 0 and len(response.api_keys) > 10
    finally:
        await conn.aclose()


async def test_api_versions_v3_is_answered_with_flexible_body(tmp_path: Path) -> None:
    async with in_process_broker(tmp_path) as running:
        assert await api_versions_ok(running)


async def test_too_new_api_versions_gets_the_v0_fallback(tmp_path: Path) -> None:
    async with in_process_broker(tmp_path) as running:
        conn = await RawConnection.open(running)
        await conn.send_raw(conn.encode(ApiVersionsRequest(version=4), 4))
        frame = await conn.read_frame()
        assert frame is not None
        response = ApiVersionsResponse.decode(frame, version=0, header=True)
        assert response.error_code == ErrorCode.UNSUPPORTED_VERSION
        assert any(k.api_key == 0 for k in response.api_keys)
        await conn.aclose()


async def test_acks_zero_produce_gets_no_response_but_is_appended(tmp_path: Path) -> None:
    async with in_process_broker(tmp_path) as running:
        conn = await RawConnection.open(running)
        assert await create_topic(conn, "t") == 0
        await conn.send_raw(
            conn.encode(produce_request("t", 0, record_batch([b"a", b"b"]), acks=0), 9)
        )
        # The next frame on this connection must answer the Metadata request, not the produce.
        metadata = await conn.request(MetadataRequest(version=9, topics=None), 9, MetadataResponse)
        assert metadata.header.correlation_id == conn.correlation_id
        assert await list_offset(conn, "t", 0, -1) == (0, 2, -1)
        await conn.aclose()


async def test_acks_zero_failure_closes_the_connection(tmp_path: Path) -> None:
    async with in_process_broker(tmp_path, {"auto.create.topics.enable": "false"}) as running:
        conn = await RawConnection.open(running)
        await conn.send_raw(
            conn.encode(produce_request("missing", 0, record_batch([b"x"]), acks=0), 9)
        )
        assert await conn.read_frame() is None
        assert await api_versions_ok(running)


async def test_malformed_frames_close_only_their_own_connection(tmp_path: Path) -> None:
    async with in_process_broker(tmp_path, {"socket.request.max.bytes": "1000"}) as running:
        bystander = await RawConnection.open(running)
        bad_inputs = [
            struct.pack(">i", -1),  # negative length
            struct.pack(">i", 2_000_000_000),  # far above socket.request.max.bytes
            struct.pack(">i", 1001) + b"\x00" * 8,  # just above it
            struct.pack(">i", 10)
            + struct.pack(">hhi", 9999, 0, 1)
            + b"\xff\xff",  # unknown api key
            struct.pack(">i", 3) + b"\x00\x03\x00",  # header cut short
        ]
        for data in bad_inputs:
            conn = await RawConnection.open(running)
            await conn.send_raw(data)
            with trio.fail_after(5):
                assert await conn.read_frame() is None, data
            await conn.aclose()
        # A connection that hangs up in the middle of a frame.
        conn = await RawConnection.open(running)
        await conn.send_raw(struct.pack(">i", 100) + b"\x00\x03")
        await conn.aclose()
        response = await bystander.request(ApiVersionsRequest(version=3), 3, ApiVersionsResponse)
        assert response.error_code == 0
        assert await api_versions_ok(running)
        await bystander.aclose()


async def test_truncated_body_is_answered_and_the_connection_keeps_working(tmp_path: Path) -> None:
    async with in_process_broker(tmp_path) as running:
        conn = await RawConnection.open(running)
        whole = conn.encode(MetadataRequest(version=12, topics=None), 12)
        # Cut the body short but keep the framing consistent.
        cut = whole[4:-1]
        await conn.send_raw(struct.pack(">i", len(cut)) + cut)
        frame = await conn.read_frame()
        assert frame is not None
        response = MetadataResponse.decode(frame, version=12, header=True)
        assert response.header.correlation_id == conn.correlation_id
        assert response.topics == []
        again = await conn.request(ApiVersionsRequest(version=3), 3, ApiVersionsResponse)
        assert again.error_code == 0
        await conn.aclose()


async def test_unsupported_version_gets_unsupported_version_error(tmp_path: Path) -> None:
    async with in_process_broker(tmp_path) as running:
        conn = await RawConnection.open(running)
        response = await conn.request(
            MetadataRequest(version=13, topics=None), 13, MetadataResponse
        )
        assert response.error_code == ErrorCode.UNSUPPORTED_VERSION
        assert await api_versions_ok(running)
        await conn.aclose()


async def test_produce_errors_map_to_kafka_codes(tmp_path: Path) -> None:
    settings = {"auto.create.topics.enable": "false", "message.max.bytes": "2000"}
    async with in_process_broker(tmp_path, settings) as running:
        conn = await RawConnection.open(running)
        assert await create_topic(conn, "t") == 0
        assert (await produce(conn, "t", 0, record_batch([b"v"]), acks=2)).error_code == (
            ErrorCode.INVALID_REQUIRED_ACKS
        )
        corrupt = bytearray(record_batch([b"value"]))
        corrupt[-1] ^= 0xFF  # the CRC no longer matches
        assert (await produce(conn, "t", 0, bytes(corrupt))).error_code == ErrorCode.CORRUPT_MESSAGE
        assert (await produce(conn, "t", 0, record_batch([b"x" * 3000]))).error_code == (
            ErrorCode.MESSAGE_TOO_LARGE
        )
        assert (await produce(conn, "nope", 0, record_batch([b"v"]))).error_code == (
            ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
        )
        assert (await produce(conn, "t", 7, record_batch([b"v"]))).error_code == (
            ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
        )
        ok = await produce(conn, "t", 0, record_batch([b"a", b"b", b"c"]))
        assert (ok.error_code, ok.base_offset) == (0, 0)
        assert (await produce(conn, "t", 0, record_batch([b"d"]))).base_offset == 3
        await conn.aclose()


async def test_idempotent_retry_returns_the_original_offset_and_gaps_are_rejected(
    tmp_path: Path,
) -> None:
    async with in_process_broker(tmp_path) as running:
        conn = await RawConnection.open(running)
        assert await create_topic(conn, "t") == 0
        init = await conn.request(
            InitProducerIdRequest(version=4, transactional_id=None, transaction_timeout_ms=60000),
            4,
            InitProducerIdResponse,
        )
        assert init.error_code == 0 and init.producer_id >= 0 and init.producer_epoch == 0
        pid = init.producer_id
        first = record_batch([b"a", b"b"], producer_id=pid, producer_epoch=0, base_sequence=0)
        assert (await produce(conn, "t", 0, first)).base_offset == 0
        other = record_batch([b"c"], producer_id=pid, producer_epoch=0, base_sequence=2)
        assert (await produce(conn, "t", 0, other)).base_offset == 2
        retried = await produce(conn, "t", 0, first)
        assert (retried.error_code, retried.base_offset) == (0, 0)
        assert await list_offset(conn, "t", 0, -1) == (0, 3, -1)
        gap = record_batch([b"d"], producer_id=pid, producer_epoch=0, base_sequence=9)
        assert (
            await produce(conn, "t", 0, gap)
        ).error_code == ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER
        await conn.aclose()


async def test_producer_ids_never_repeat_across_restarts(tmp_path: Path) -> None:
    request = InitProducerIdRequest(version=4, transactional_id=None, transaction_timeout_ms=1)
    seen: list[int] = []
    for _ in range(3):
        async with in_process_broker(tmp_path) as running:
            conn = await RawConnection.open(running)
            for _ in range(3):
                response = await conn.request(request, 4, InitProducerIdResponse)
                seen.append(response.producer_id)
            await conn.aclose()
    assert len(set(seen)) == len(seen) == 9
    assert seen == sorted(seen)


async def test_fetch_long_poll_is_woken_by_an_append(tmp_path: Path) -> None:
    async with in_process_broker(tmp_path) as running:
        setup = await RawConnection.open(running)
        assert await create_topic(setup, "t") == 0
        fetcher = await RawConnection.open(running)
        result: list[FetchResponse] = []

        async def long_poll() -> None:
            result.append(
                await fetcher.request(
                    fetch_request("t", 0, 0, max_wait_ms=60_000), 12, FetchResponse
                )
            )

        with trio.fail_after(20):  # far below max_wait_ms: only an append can end the wait
            async with trio.open_nursery() as nursery:
                nursery.start_soon(long_poll)
                await trio.sleep(0.2)
                assert not result
                assert (await produce(setup, "t", 0, record_batch([b"hello"]))).error_code == 0
        p = result[0].responses[0].partitions[0]
        assert p.error_code == 0 and p.high_watermark == 1 and len(p.records) > 0
        await setup.aclose()
        await fetcher.aclose()


async def test_fetch_without_data_waits_then_returns_empty(tmp_path: Path) -> None:
    async with in_process_broker(tmp_path) as running:
        conn = await RawConnection.open(running)
        assert await create_topic(conn, "t") == 0
        started = trio.current_time()
        response = await conn.request(fetch_request("t", 0, 0, max_wait_ms=300), 12, FetchResponse)
        assert trio.current_time() - started >= 0.29
        p = response.responses[0].partitions[0]
        assert (p.error_code, p.high_watermark, p.records) == (0, 0, b"")
        await conn.aclose()


async def test_fetch_reads_what_was_produced_and_out_of_range_is_reported(tmp_path: Path) -> None:
    async with in_process_broker(tmp_path) as running:
        conn = await RawConnection.open(running)
        assert await create_topic(conn, "t") == 0
        records = record_batch([b"a", b"b", b"c"])
        await produce(conn, "t", 0, records)
        response = await conn.request(fetch_request("t", 0, 0), 12, FetchResponse)
        p = response.responses[0].partitions[0]
        assert p.error_code == 0 and p.high_watermark == 3 and p.log_start_offset == 0
        # Same batch, except the base offset and leader epoch the broker assigned (both 0 here).
        assert p.records == records
        beyond = await conn.request(fetch_request("t", 0, 4), 12, FetchResponse)
        assert beyond.responses[0].partitions[0].error_code == ErrorCode.OFFSET_OUT_OF_RANGE
        at_end = await conn.request(fetch_request("t", 0, 3), 12, FetchResponse)
        assert at_end.responses[0].partitions[0].error_code == 0
        await conn.aclose()


async def test_list_offsets_earliest_latest_and_by_timestamp(tmp_path: Path) -> None:
    async with in_process_broker(tmp_path) as running:
        conn = await RawConnection.open(running)
        assert await create_topic(conn, "t") == 0
        await produce(conn, "t", 0, record_batch([b"a", b"b"], first_timestamp=1000))
        await produce(conn, "t", 0, record_batch([b"c", b"d"], first_timestamp=2000))
        assert await list_offset(conn, "t", 0, -2) == (0, 0, -1)
        assert await list_offset(conn, "t", 0, -1) == (0, 4, -1)
        assert await list_offset(conn, "t", 0, 1001) == (0, 1, 1001)
        assert await list_offset(conn, "t", 0, 1500) == (0, 2, 2000)
        assert await list_offset(conn, "t", 0, 5000) == (0, -1, -1)
        assert (await list_offset(conn, "nope", 0, -1))[0] == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
        await conn.aclose()


async def test_offset_for_leader_epoch_returns_the_log_end_for_the_current_epoch(
    tmp_path: Path,
) -> None:
    async with in_process_broker(tmp_path) as running:
        conn = await RawConnection.open(running)
        assert await create_topic(conn, "t") == 0
        await produce(conn, "t", 0, record_batch([b"a", b"b"]))
        t = OffsetForLeaderEpochRequest.OffsetForLeaderTopic
        request = OffsetForLeaderEpochRequest(
            version=4,
            replica_id=-1,
            topics=[
                t(
                    topic="t",
                    partitions=[
                        t.OffsetForLeaderPartition(
                            partition=0, current_leader_epoch=0, leader_epoch=0
                        )
                    ],
                )
            ],
        )
        response = await conn.request(request, 4, OffsetForLeaderEpochResponse)
        p = response.topics[0].partitions[0]
        assert (p.error_code, p.leader_epoch, p.end_offset) == (0, 0, 2)
        await conn.aclose()


async def test_topics_and_data_survive_a_clean_restart(tmp_path: Path) -> None:
    async with in_process_broker(tmp_path) as running:
        conn = await RawConnection.open(running)
        assert await create_topic(conn, "kept", partitions=2, retention_ms="3600000") == 0
        assert await create_topic(conn, "kept") == ErrorCode.TOPIC_ALREADY_EXISTS
        assert await create_topic(conn, "bad/name") == ErrorCode.INVALID_TOPIC_EXCEPTION
        assert await create_topic(conn, "gone") == 0
        await produce(conn, "kept", 1, record_batch([b"a", b"b"]))
        deleted = await conn.request(
            DeleteTopicsRequest(version=5, topic_names=["gone", "never"], timeout_ms=1000),
            5,
            DeleteTopicsResponse,
        )
        assert [r.error_code for r in deleted.responses] == [
            0,
            ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
        ]
        await conn.aclose()
    async with in_process_broker(tmp_path) as running:
        conn = await RawConnection.open(running)
        metadata = await conn.request(
            MetadataRequest(version=12, topics=None), 12, MetadataResponse
        )
        assert {t.name: len(t.partitions) for t in metadata.topics} == {"kept": 2}
        assert await list_offset(conn, "kept", 1, -1) == (0, 2, -1)
        await conn.aclose()


async def test_metadata_auto_creates_topics_only_when_enabled(tmp_path: Path) -> None:
    async with in_process_broker(tmp_path, {"num.partitions": "3"}) as running:
        conn = await RawConnection.open(running)
        t = MetadataRequest.MetadataRequestTopic
        created = await conn.request(
            MetadataRequest(version=12, topics=[t(name="auto")], allow_auto_topic_creation=True),
            12,
            MetadataResponse,
        )
        topic = created.topics[0]
        assert topic.error_code == 0 and len(topic.partitions) == 3
        assert created.brokers[0].port == running.address.port
        not_created = await conn.request(
            MetadataRequest(version=12, topics=[t(name="manual")], allow_auto_topic_creation=False),
            12,
            MetadataResponse,
        )
        assert not_created.topics[0].error_code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
        await conn.aclose()


async def test_acks_all_needs_min_insync_replicas_but_acks_one_does_not(tmp_path: Path) -> None:
    async with in_process_broker(tmp_path) as running:
        conn = await RawConnection.open(running)
        assert await create_topic(conn, "strict", min_insync_replicas="2") == 0
        refused = await produce(conn, "strict", 0, record_batch([b"a"]), acks=-1)
        assert refused.error_code == ErrorCode.NOT_ENOUGH_REPLICAS
        accepted = await produce(conn, "strict", 0, record_batch([b"a"]), acks=1)
        assert (accepted.error_code, accepted.base_offset) == (0, 0)
        await conn.aclose()


async def test_stale_producer_epoch_is_rejected(tmp_path: Path) -> None:
    async with in_process_broker(tmp_path) as running:
        conn = await RawConnection.open(running)
        assert await create_topic(conn, "t") == 0
        init = await conn.request(
            InitProducerIdRequest(version=4, transactional_id=None, transaction_timeout_ms=1),
            4,
            InitProducerIdResponse,
        )
        pid = init.producer_id
        bumped = record_batch([b"a"], producer_id=pid, producer_epoch=1, base_sequence=0)
        assert (await produce(conn, "t", 0, bumped)).error_code == 0
        stale = record_batch([b"b"], producer_id=pid, producer_epoch=0, base_sequence=1)
        assert (await produce(conn, "t", 0, stale)).error_code == ErrorCode.INVALID_PRODUCER_EPOCH
        await conn.aclose()


async def test_fetch_honours_response_max_bytes_but_always_returns_a_first_batch(
    tmp_path: Path,
) -> None:
    async with in_process_broker(tmp_path) as running:
        conn = await RawConnection.open(running)
        assert await create_topic(conn, "t", partitions=2) == 0
        big = record_batch([b"x" * 400])
        for partition in (0, 1):
            await produce(conn, "t", partition, big)
            await produce(conn, "t", partition, big)
        request = fetch_request("t", 0, 0)
        first = request.topics[0].partitions[0]
        second = FetchRequest.FetchTopic.FetchPartition(
            partition=1,
            current_leader_epoch=-1,
            fetch_offset=0,
            last_fetched_epoch=-1,
            log_start_offset=-1,
            partition_max_bytes=1 << 20,
        )
        request.topics[0].partitions.append(second)
        request.max_bytes = 100  # smaller than one batch
        response = await conn.request(request, 12, FetchResponse)
        p0, p1 = response.responses[0].partitions
        # The first partition gets exactly one batch despite the limit; the second nothing.
        assert p0.records == big and p0.high_watermark == 2
        assert p1.error_code == 0 and p1.records == b"" and p1.high_watermark == 2
        first.partition_max_bytes = 100
        request.max_bytes = 1 << 20
        response = await conn.request(request, 12, FetchResponse)
        p0, p1 = response.responses[0].partitions
        assert p0.records == big  # over its partition_max_bytes: still one batch, no more
        assert len(p1.records) == 2 * len(big)
        await conn.aclose()


async def test_fetch_from_a_future_leader_epoch_is_refused(tmp_path: Path) -> None:
    async with in_process_broker(tmp_path) as running:
        conn = await RawConnection.open(running)
        assert await create_topic(conn, "t") == 0
        request = fetch_request("t", 0, 0)
        request.topics[0].partitions[0].current_leader_epoch = 5
        response = await conn.request(request, 12, FetchResponse)
        assert response.responses[0].partitions[0].error_code == ErrorCode.UNKNOWN_LEADER_EPOCH
        request.topics[0].partitions[0].current_leader_epoch = 0
        response = await conn.request(request, 12, FetchResponse)
        assert response.responses[0].partitions[0].error_code == 0
        await conn.aclose()


async def test_startup_removes_logs_of_topics_recorded_as_deleted_but_keeps_internal_ones(
    tmp_path: Path,
) -> None:
    # A crash between "forget the topic" and "delete its logs" leaves such directories;
    # the metadata's deletion record is what allows removing them.
    async with in_process_broker(tmp_path) as running:
        conn = await RawConnection.open(running)
        assert await create_topic(conn, "orphan") == 0
        await conn.aclose()
    env = os_node_env(tmp_path, seed=0)
    logs = LogManager.open(env.storage, env.clock, LogConfig())
    orphan = logs.get("orphan", 0)
    assert orphan is not None
    orphan.append_as_leader(record_batch([b"stale"]), 0)
    logs.create("__cluster_metadata", 0)
    await logs.close()
    store = await MetadataStore.open(env.storage, env.rng, BrokerConfig().node_id)
    await TopicRegistry(store, env.rng).delete("orphan")
    async with in_process_broker(tmp_path) as running:
        conn = await RawConnection.open(running)
        assert await create_topic(conn, "orphan") == 0  # a fresh topic, not the old log
        assert await list_offset(conn, "orphan", 0, -1) == (0, 0, -1)
        await conn.aclose()
    assert (tmp_path / "__cluster_metadata-0").is_dir()
