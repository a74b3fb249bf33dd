"""CreateTopics is bounded: partitions per request and per broker, counts and replication
factors, auto-created topics; and creating many partitions does not stall other connections."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
import trio
import trio.testing
from kafka.protocol.admin import CreateTopicsRequest, CreateTopicsResponse
from kafka.protocol.metadata import (
    ApiVersionsRequest,
    ApiVersionsResponse,
    MetadataRequest,
    MetadataResponse,
)

from reference_broker.config import BrokerConfig, ConfigError
from reference_broker.errors import ErrorCode
from tests.broker_process import RawConnection, in_process_broker, running_broker
from tests.test_controller_service import all_unfenced, start_all, start_cluster
from tests.wire import WireClient

_Topic = CreateTopicsRequest.CreatableTopic


def _create_request(
    topics: list[tuple[str, int, int]], *, validate_only: bool = False
) -> CreateTopicsRequest:
    return CreateTopicsRequest(
        version=7,
        topics=[
            _Topic(
                name=name,
                num_partitions=partitions,
                replication_factor=factor,
                assignments=[],
                configs=[],
            )
            for name, partitions, factor in topics
        ],
        timeout_ms=60000,
        validate_only=validate_only,
    )


async def _create(
    conn: RawConnection, topics: list[tuple[str, int, int]], *, validate_only: bool = False
) -> dict[str, tuple[int, str | None]]:
    response = await conn.request(
        _create_request(topics, validate_only=validate_only), 7, CreateTopicsResponse
    )
    return {t.name: (t.error_code, t.error_message) for t in response.topics}


async def _metadata_codes(conn: RawConnection, names: list[str]) -> dict[str, int]:
    request = MetadataRequest(
        version=9,
        topics=[MetadataRequest.MetadataRequestTopic(name=n) for n in names],
        allow_auto_topic_creation=True,
        include_cluster_authorized_operations=False,
        include_topic_authorized_operations=False,
    )
    response = await conn.request(request, 9, MetadataResponse)
    return {t.name: t.error_code for t in response.topics}


def _partition_dirs(data_dir: Path, topic: str) -> list[str]:
    return sorted(p.name for p in data_dir.glob(f"{topic}-*"))


async def test_a_request_above_the_per_request_limit_creates_nothing(tmp_path: Path) -> None:
    settings = {"create.topics.max.partitions.per.request": 100}
    async with in_process_broker(tmp_path, settings) as running:
        conn = await RawConnection.open(running)
        # 60 + 60 is above 100 although each topic alone is not: the whole request fails.
        results = await _create(conn, [("a", 60, 1), ("b", 60, 1)])
        assert {n: code for n, (code, _) in results.items()} == {
            "a": ErrorCode.POLICY_VIOLATION,
            "b": ErrorCode.POLICY_VIOLATION,
        }
        message = results["a"][1]
        assert message is not None and "create.topics.max.partitions.per.request=100" in message
        assert "a" not in running.broker.topics and "b" not in running.broker.topics
        assert _partition_dirs(tmp_path, "a") == [] and _partition_dirs(tmp_path, "b") == []
        # One topic above the limit on its own, validate_only or not.
        for validate_only in (True, False):
            results = await _create(conn, [("c", 101, 1)], validate_only=validate_only)
            assert results["c"][0] == ErrorCode.POLICY_VIOLATION
        # At the limit is fine.
        assert (await _create(conn, [("a", 50, 1), ("b", 50, 1)]))["b"][0] == ErrorCode.NONE
        assert len(_partition_dirs(tmp_path, "a")) == 50
        await conn.aclose()


async def test_the_broker_partition_limit_refuses_topics_one_by_one(tmp_path: Path) -> None:
    async with in_process_broker(tmp_path, {"max.broker.partitions": 10}) as running:
        conn = await RawConnection.open(running)
        results = await _create(conn, [("a", 6, 1), ("b", 6, 1), ("c", 4, 1)])
        codes = {n: code for n, (code, _) in results.items()}
        assert codes == {"a": 0, "b": ErrorCode.POLICY_VIOLATION, "c": 0}
        message = results["b"][1]
        assert message is not None and "max.broker.partitions=10" in message
        assert _partition_dirs(tmp_path, "b") == []
        # Full: even a validate_only request says so.
        results = await _create(conn, [("d", 1, 1)], validate_only=True)
        assert results["d"][0] == ErrorCode.POLICY_VIOLATION
        await conn.aclose()


async def test_auto_created_topics_count_against_the_broker_limit(tmp_path: Path) -> None:
    settings = {"max.broker.partitions": 4, "num.partitions": 2}
    async with in_process_broker(tmp_path, settings) as running:
        conn = await RawConnection.open(running)
        codes = await _metadata_codes(conn, ["t1", "t2", "t3"])
        assert codes == {"t1": 0, "t2": 0, "t3": ErrorCode.POLICY_VIOLATION}
        assert "t3" not in running.broker.topics
        assert _partition_dirs(tmp_path, "t3") == []
        await conn.aclose()


async def test_bad_partition_counts_and_replication_factors_are_refused(tmp_path: Path) -> None:
    async with in_process_broker(tmp_path) as running:
        conn = await RawConnection.open(running)
        results = await _create(
            conn,
            [
                ("zero", 0, 1),
                ("negative", -2, 1),
                ("rf-zero", 1, 0),
                ("rf-negative", 1, -2),
                ("rf-two", 1, 2),
                ("rf-huge", 1, 32767),
            ],
        )
        assert {n: code for n, (code, _) in results.items()} == {
            "zero": ErrorCode.INVALID_PARTITIONS,
            "negative": ErrorCode.INVALID_PARTITIONS,
            "rf-zero": ErrorCode.INVALID_REPLICATION_FACTOR,
            "rf-negative": ErrorCode.INVALID_REPLICATION_FACTOR,
            "rf-two": ErrorCode.INVALID_REPLICATION_FACTOR,
            "rf-huge": ErrorCode.INVALID_REPLICATION_FACTOR,
        }
        assert not list(running.broker.topics)
        await conn.aclose()


def test_limits_are_validated_settings() -> None:
    config = BrokerConfig.from_properties({})
    assert config.create_topics_max_partitions_per_request == 10000
    assert config.max_broker_partitions == 10000
    assert config.queued_max_request_bytes == 2 * config.socket_request_max_bytes
    unbounded = BrokerConfig.from_properties({"queued.max.request.bytes": -1})
    assert unbounded.queued_max_request_bytes is None
    for bad in (
        {"create.topics.max.partitions.per.request": 0},
        {"max.broker.partitions": -1},
        {"queued.max.request.bytes": 1000},  # below socket.request.max.bytes
        {"num.partitions": 20, "create.topics.max.partitions.per.request": 10},
    ):
        with pytest.raises(ConfigError):
            BrokerConfig.from_properties(bad)


# Partitions created in one request while another connection asks ApiVersions. Before
# partition creation yielded to the event loop, 1,000 partitions kept every other
# connection waiting for seconds.
STALL_PARTITIONS = 1000
STALL_BOUND_S = 0.5


def test_creating_many_partitions_does_not_stall_other_connections(tmp_path: Path) -> None:
    # Default limits (10,000 per request): the same test runs against a broker without them.
    with running_broker(tmp_path / "data") as broker:
        latencies: list[float] = []
        creating = threading.Event()
        done = threading.Event()

        def probe() -> None:
            with WireClient(broker.host, broker.port, timeout_s=60) as client:
                creating.wait(10)
                while not done.is_set():
                    start = time.monotonic()
                    response = client.request(ApiVersionsRequest(version=3), 3)
                    assert isinstance(response, ApiVersionsResponse)
                    latencies.append(time.monotonic() - start)
                    time.sleep(0.005)

        prober = threading.Thread(target=probe, daemon=True)
        prober.start()
        with WireClient(broker.host, broker.port, timeout_s=120) as client:
            request = _create_request([("many", STALL_PARTITIONS, 1)])
            client.send_raw(client.encode(request, 7))
            started = time.monotonic()
            creating.set()
            frame = client.read_frame()
            took = time.monotonic() - started
        done.set()
        prober.join(timeout=60)
        response = CreateTopicsResponse.decode(frame, version=7, header=True)
        assert response.topics[0].error_code == 0
        worst = max(latencies)
        print(
            f"\nCreateTopics of {STALL_PARTITIONS} partitions took {took:.2f} s; "
            f"{len(latencies)} ApiVersions meanwhile, max latency {worst * 1000:.0f} ms"
        )
        assert len(latencies) >= 3
        assert worst < STALL_BOUND_S, f"ApiVersions waited {worst:.2f} s during CreateTopics"
        broker.kill()  # closing 1,000 logs cleanly is not what this test is about


async def test_the_controller_enforces_the_broker_partition_limit(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Three combined nodes in the simulation; every partition has a replica on each.
    async with trio.open_nursery() as nursery:
        cluster = start_cluster(nursery, seed=3)
        await start_all(cluster)
        await all_unfenced(cluster)
        active = await cluster.wait_active()
        assert active.service is not None
        active.service.config = replace(active.service.config, max_broker_partitions=5)
        assert (await active.service.create_topic("a", 3, 3)).error_code == ErrorCode.NONE
        refused = await active.service.create_topic("b", 3, 3)
        assert refused.error_code == ErrorCode.POLICY_VIOLATION
        assert refused.message is not None and "max.broker.partitions" in refused.message
        assert "b" not in active.service.image.topics
        assert (await active.service.create_topic("c", 2, 3)).error_code == ErrorCode.NONE
        nursery.cancel_scope.cancel()
