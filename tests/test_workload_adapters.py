"""Each client library's outcomes land on ok / fail / info honestly, against a real broker process.

- a record the broker rejects as too large was certainly not appended: `fail`;
- a send to a broker that stopped answering (SIGSTOP) after the request went out may
  have been appended: `info`, never `fail`;
- an ordinary send is `ok` with its partition and offset, and a poll reads it back.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import trio

from harness.runtime.process import ProcessCluster
from workloads.adapters import OpFailed, OpUnknown, ProducerSettings, SessionSpec, open_session
from workloads.base import WorkloadEnv
from workloads.client import TcpNetwork
from workloads.client.transport import wall_clock_ms

LIBRARIES = ["faultline", "kafka-python", "confluent-kafka"]
SETTINGS: dict[str, object] = {
    "message.max.bytes": 2_000,
    "num.partitions": 1,
    "group.initial.rebalance.delay.ms": 0,
}


def env_for(cluster: ProcessCluster, library: str) -> WorkloadEnv:
    network = TcpNetwork()
    return WorkloadEnv(
        bootstrap_for=lambda topic: cluster.bootstrap,
        network_for=lambda endpoint: network,
        clock_ms_for=lambda endpoint: wall_clock_ms,
        client_endpoints=cluster.clients,
        rng=random.Random(0),
        client_library=library,
    )


def spec(cluster: ProcessCluster, library: str) -> SessionSpec:
    return SessionSpec(
        cluster.bootstrap,
        f"adapter-test-{library}",
        group="adapter-test",
        producer=ProducerSettings(delivery_timeout_ms=2_500),
        request_timeout_ms=1_000,
    )


@pytest.mark.parametrize("library", LIBRARIES)
async def test_sends_are_ok_then_read_back_and_an_oversized_record_is_a_definite_failure(
    tmp_path: Path, library: str
) -> None:
    async with ProcessCluster(tmp_path, 1, settings=SETTINGS) as cluster:
        env = env_for(cluster, library)
        async with open_session(
            env, "clients", spec(cluster, library), random.Random(1)
        ) as session:
            sent = await session.send([{"topic": "a", "key": "k1", "value": 41}])
            assert sent == [{"topic": "a", "key": "k1", "value": 41, "partition": 0, "offset": 0}]
            with pytest.raises(OpFailed):
                # ~3 kB of digits: over the broker's message.max.bytes of 2000.
                await session.send([{"topic": "a", "key": "k1", "value": 10**3000}])
            await session.assign(["a/0"], "beginning")
            read: list[list[object]] = []
            with trio.fail_after(10):
                while not read:
                    read = (await session.poll(0.5)).get("a/0", [])
            assert read == [[0, "k1", 41]]
            await session.commit({"a/0": 1})


@pytest.mark.parametrize("library", LIBRARIES)
async def test_a_send_to_a_broker_that_stopped_answering_is_unknown_not_failed(
    tmp_path: Path, library: str
) -> None:
    async with ProcessCluster(tmp_path, 1, settings=SETTINGS) as cluster:
        env = env_for(cluster, library)
        async with open_session(
            env, "clients", spec(cluster, library), random.Random(1)
        ) as session:
            await session.send([{"topic": "b", "key": "k", "value": 1}])
            await cluster.pause("n1")
            try:
                with pytest.raises(OpUnknown), trio.fail_after(15):
                    await session.send([{"topic": "b", "key": "k", "value": 2}])
            finally:
                await cluster.resume("n1")


async def test_a_client_that_cannot_reach_any_broker_fails_the_operation_cleanly() -> None:
    # Port 1 on loopback: nothing listens, every dial is refused at once.
    env = WorkloadEnv(
        bootstrap_for=lambda topic: "127.0.0.1:1",
        network_for=lambda endpoint: TcpNetwork(),
        clock_ms_for=lambda endpoint: wall_clock_ms,
        client_endpoints=["clients"],
        rng=random.Random(0),
    )
    unreachable = SessionSpec(
        "127.0.0.1:1", "nobody-home", group="g", request_timeout_ms=300,
        producer=ProducerSettings(delivery_timeout_ms=600),
    )
    async with open_session(env, "clients", unreachable, random.Random(0)) as session:
        with pytest.raises(OpFailed, match="could not start a client"):
            await session.subscribe(["t1"], "g")
        with pytest.raises(OpFailed, match="could not start a client"):
            await session.send([{"topic": "t1", "key": None, "value": 1}])


# -- each third-party adapter's classification of delivery errors -------------------------------


def test_confluent_delivery_errors_are_fail_only_when_the_broker_refuses_every_time() -> None:
    from confluent_kafka import KafkaError

    from workloads.adapters.confluent import delivery_failed_for_certain

    certain = [KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE,
               KafkaError.TOPIC_EXCEPTION, KafkaError.TOPIC_AUTHORIZATION_FAILED]
    maybe = [
        KafkaError._MSG_TIMED_OUT,  # message.timeout.ms passed, perhaps after it was sent
        # librdkafka fails messages queued for a retry with these when metadata loses the
        # topic or partition: an earlier attempt may have been appended.
        KafkaError._UNKNOWN_TOPIC,
        KafkaError._UNKNOWN_PARTITION,
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
        KafkaError.NOT_ENOUGH_REPLICAS,  # only the last attempt's answer
        KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER,
        KafkaError.KAFKA_STORAGE_ERROR,
        KafkaError.UNKNOWN,
        KafkaError._TRANSPORT,
    ]
    assert all(delivery_failed_for_certain(KafkaError(code)) for code in certain)
    assert not any(delivery_failed_for_certain(KafkaError(code)) for code in maybe)


def test_kafka_python_delivery_errors_are_fail_only_when_the_broker_refuses_every_time() -> None:
    import kafka.errors as kerr

    from workloads.adapters.kafka_python import delivery_failed_for_certain

    certain = [kerr.MessageSizeTooLargeError(), kerr.RecordListTooLargeError(),
               kerr.InvalidTopicError(), kerr.TopicAuthorizationFailedError()]
    maybe = [
        kerr.KafkaTimeoutError(),  # the batch expired, perhaps after it was sent
        kerr.NotLeaderForPartitionError(),
        kerr.RequestTimedOutError(),
        kerr.NotEnoughReplicasAfterAppendError(),
        kerr.NotEnoughReplicasError(),  # only the last attempt's answer
        kerr.OutOfOrderSequenceNumberError(),
        kerr.CorruptRecordError(),
        kerr.KafkaConnectionError(),
        kerr.UnknownError(),
        kerr.KafkaStorageError(),
    ]
    assert all(delivery_failed_for_certain(e) for e in certain)
    assert not any(delivery_failed_for_certain(e) for e in maybe)
