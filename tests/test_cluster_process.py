"""Real Kafka clients on a 3-broker KRaft cluster of `faultline broker` processes.

Every node is a broker and a controller voter; clients and brokers talk through the
process runtime's fault proxies. kafka-python and confluent-kafka keep producing at
acks=all (replication factor 3, min.insync.replicas 2) while the leader of the
partition is SIGKILLed and restarted, then the active controller; a consumer group
then reads the topic back: every acknowledged message is there, exactly once.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import trio

from harness.runtime.process import ProcessCluster

SETTINGS = {
    "default.replication.factor": 3,
    "min.insync.replicas": 2,
    "num.partitions": 1,
    "offsets.topic.num.partitions": 5,
    "log.flush.interval.messages": 1,
    "broker.session.timeout.ms": 4000,
    "broker.heartbeat.interval.ms": 500,
    "replica.lag.time.max.ms": 5000,
    "group.initial.rebalance.delay.ms": 0,
}


class _Load:
    """A producer thread sending v0, v1, ... and remembering what was acknowledged."""

    def __init__(self, client: str, bootstrap: str) -> None:
        self.client = client
        self.bootstrap = bootstrap
        self.acked: set[bytes] = set()
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            if self.client == "kafka-python":
                self._kafka_python()
            else:
                self._confluent()
        except BaseException as exc:  # reported by the test thread
            self.error = exc

    def _kafka_python(self) -> None:
        from kafka import KafkaProducer
        from kafka.errors import KafkaError

        producer = KafkaProducer(
            bootstrap_servers=self.bootstrap, acks="all", retries=100,
            request_timeout_ms=5000, reconnect_backoff_max_ms=500,
        )
        i = 0
        while not self.stop.is_set():
            value = b"v%d" % i
            i += 1
            try:
                producer.send("t", value).get(timeout=30)
                self.acked.add(value)
            except KafkaError:
                pass  # failed or unknown: not acknowledged, so not checked
        producer.close(timeout=5)

    def _confluent(self) -> None:
        from confluent_kafka import Producer

        producer = Producer({
            "bootstrap.servers": self.bootstrap, "acks": "all",
            "enable.idempotence": True, "message.timeout.ms": 30000,
        })
        acked = self.acked

        def delivered(err: object, msg: object) -> None:
            if err is None:
                acked.add(msg.value())  # type: ignore[attr-defined]

        i = 0
        while not self.stop.is_set():
            producer.produce("t", b"v%d" % i, on_delivery=delivered)
            i += 1
            producer.poll(0.01)
        producer.flush(30)


def _read_all(bootstrap: str) -> list[bytes]:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        "t", bootstrap_servers=bootstrap, group_id="readers", auto_offset_reset="earliest",
        consumer_timeout_ms=15000,
    )
    values = [m.value for m in consumer]
    consumer.close()
    return values


def _metadata(bootstrap: str) -> tuple[int, int]:
    """(leader of t-0, active controller) as the cluster reports them, once it has both."""
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        deadline = time.monotonic() + 60
        while True:
            (topic,) = admin.describe_topics(["t"])
            partitions = topic["partitions"]
            leader = partitions[0]["leader_id"] if partitions else -1
            controller = admin.describe_cluster()["controller_id"]
            if leader >= 0 and controller >= 0:
                return leader, controller
            if time.monotonic() > deadline:
                raise AssertionError(f"no leader of t-0 or no controller after 60 s: {topic}")
            time.sleep(0.5)
    finally:
        admin.close()


@pytest.mark.parametrize("client", ["kafka-python", "confluent-kafka"])
async def test_acks_all_survives_a_leader_kill_and_a_controller_kill(
    tmp_path: Path, client: str
) -> None:
    async with ProcessCluster(tmp_path, size=3, quorum=True, settings=SETTINGS) as cluster:
        load = _Load(client, cluster.bootstrap)
        load.thread.start()
        await trio.sleep(3)
        leader, _ = await trio.to_thread.run_sync(_metadata, cluster.bootstrap)
        await cluster.kill(f"n{leader}")
        await trio.sleep(6)
        await cluster.restart(f"n{leader}")
        await trio.sleep(3)
        _, controller = await trio.to_thread.run_sync(_metadata, cluster.bootstrap)
        await cluster.kill(f"n{controller}")
        await trio.sleep(6)
        await cluster.restart(f"n{controller}")
        await trio.sleep(3)
        load.stop.set()
        await trio.to_thread.run_sync(load.thread.join, 60)
        assert load.error is None, load.error
        values = await trio.to_thread.run_sync(_read_all, cluster.bootstrap)
    assert load.acked, "nothing was acknowledged"
    missing = load.acked - set(values)
    assert not missing, f"{len(missing)} acknowledged messages lost: {sorted(missing)[:10]}"
    assert len(values) == len(set(values)), "a message was read twice"
