"""Faults aimed at transactions on real broker processes (`ProcessCluster`), with
confluent-kafka's transactional producer (librdkafka) as the client.

- The txn-coordinator role hits the node the brokers name in FindCoordinator (key type 1,
  asked over the wire through the client proxies) once librdkafka's init_transactions
  has made the coordinator exist.
- pause-client freezes the client endpoint, with the producer's commit in flight, past
  its transaction.timeout.ms: the coordinator aborts the open transaction meanwhile, so
  the producer wakes up a zombie whose commit is fenced, a new instance with its
  transactional.id takes over, and a read_committed consumer sees the new instance's
  record, never the zombie's.
"""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import msgspec
import trio
from kafka.protocol.metadata import FindCoordinatorRequest

from harness.fault_timers import timers_from_settings
from harness.runtime.process import ProcessCluster
from history.writer import HistoryWriter
from nemesis.executor import Executor
from nemesis.ops import Kill, PauseClient, ResumeClient
from nemesis.roles import Role
from workloads.client import KafkaClientError, Producer, ProducerConfig

TXN_ID = "tx-process"
TXN_TIMEOUT_MS = 3_000
SETTINGS = {"default.replication.factor": 3, "min.insync.replicas": 2, "num.partitions": 1,
            "broker.session.timeout.ms": 3_000, "broker.heartbeat.interval.ms": 500,
            "offsets.topic.num.partitions": 3, "transaction.state.log.num.partitions": 3,
            "group.initial.rebalance.delay.ms": 0,
            "transaction.abort.timed.out.transaction.cleanup.interval.ms": 500}


def txn_producer(bootstrap: str) -> Any:
    """A confluent-kafka transactional producer with TXN_ID, initialised."""
    from confluent_kafka import Producer as ConfluentProducer

    producer = ConfluentProducer({"bootstrap.servers": bootstrap, "transactional.id": TXN_ID,
                                  "transaction.timeout.ms": TXN_TIMEOUT_MS})
    producer.init_transactions(60)
    return producer


async def ask_txn_coordinator(cluster: ProcessCluster) -> int:
    """FindCoordinator (key type 1) for TXN_ID from any broker that answers."""
    config = ProducerConfig.from_kafka({"bootstrap.servers": cluster.bootstrap,
                                        "request.timeout.ms": 1_000})
    async with Producer(config) as p:
        await p.cluster.refresh_metadata()
        for node_id in sorted(p.cluster.brokers):
            try:
                response = await p.cluster.send(
                    node_id, FindCoordinatorRequest(key=TXN_ID, key_type=1))
            except KafkaClientError:
                continue
            if response.error_code == 0:
                return int(response.node_id)
    raise KafkaClientError("no broker named the transaction coordinator")


async def txn_coordinator(cluster: ProcessCluster) -> str:
    """The brokers' answer once it has held for a second and the harness's view (asked
    every quarter second) agrees."""
    with trio.fail_after(60):
        while True:
            try:
                answer = await ask_txn_coordinator(cluster)
                await trio.sleep(1.0)
                if (answer == await ask_txn_coordinator(cluster)
                        and cluster.txn_coordinator_of(TXN_ID) == f"n{answer}"):
                    return f"n{answer}"
            except KafkaClientError:
                await trio.sleep(0.3)


async def write_settled(cluster: ProcessCluster) -> None:
    """Write to t/0 (acks=all) until a write is acknowledged within two seconds."""
    config = ProducerConfig.from_kafka({"bootstrap.servers": cluster.bootstrap,
                                        "delivery.timeout.ms": 2_000,
                                        "request.timeout.ms": 1_000})
    with trio.fail_after(60):
        while True:
            try:
                async with Producer(config) as p:
                    await p.send_and_wait("t", b"settled", partition=0)
                    return
            except KafkaClientError:
                await trio.sleep(0.3)


def events_of(stream: io.BytesIO) -> list[dict[str, Any]]:
    return [msgspec.json.decode(line) for line in stream.getvalue().splitlines()]


def commit(producer: Any) -> str | None:
    """Commit; the error librdkafka raises instead, if any."""
    from confluent_kafka import KafkaException

    try:
        producer.commit_transaction(30)
    except KafkaException as exc:
        return str(exc.args[0])
    return None


def read_committed(bootstrap: str) -> list[bytes]:
    """Every value of t/0 a read_committed consumer sees."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "check",
                         "isolation.level": "read_committed"})
    consumer.assign([TopicPartition("t", 0, 0)])
    values: list[bytes] = []
    # Until something was read (or 30 s), then until 3 quiet seconds: a zombie's record
    # would come before the successor's.
    deadline = time.monotonic() + 30
    quiet_since = time.monotonic()
    while time.monotonic() < deadline and (not values or time.monotonic() - quiet_since < 3):
        message = consumer.poll(0.3)
        if message is not None and message.error() is None:
            values.append(message.value() or b"")
            quiet_since = time.monotonic()
    consumer.close()
    return values


async def test_txn_coordinator_role_and_a_zombie_producer_on_processes(tmp_path: Path) -> None:
    async with ProcessCluster(tmp_path, 3, quorum=True, settings=SETTINGS) as cluster:
        zombie = await trio.to_thread.run_sync(txn_producer, cluster.bootstrap)
        holder = await txn_coordinator(cluster)
        stream = io.BytesIO()
        executor = Executor(cluster, HistoryWriter(stream), origin=trio.current_time())
        async with trio.open_nursery() as nursery:
            role = Role(kind="txn-coordinator", transactional_id=TXN_ID)
            await executor.apply(Kill(at_ms=0, role=role), nursery)
            await executor.heal_everything()
            await txn_coordinator(cluster)  # served again before the zombie's turn

            # t/0 takes writes again (its leader may have been the node killed): with a
            # 3 s transaction timeout, and so a 3 s message timeout, the zombie's write
            # must not wait out a leader election.
            await write_settled(cluster)

            def begin_and_write() -> None:
                zombie.begin_transaction()
                zombie.produce("t", b"zombie", partition=0)
                assert zombie.flush(30) == 0

            await trio.to_thread.run_sync(begin_and_write)
            # Past the transaction timeout and the coordinator's next abort check.
            timers = timers_from_settings(SETTINGS, transaction_timeout_ms=TXN_TIMEOUT_MS)
            await executor.apply(PauseClient(at_ms=0, clients=["clients"]), nursery)
            outcome: list[str | None] = []
            paused_at = trio.current_time()

            async def commit_zombie() -> None:
                # Its EndTxn is held by the pause; without the pause it would commit.
                outcome.append(await trio.to_thread.run_sync(commit, zombie))

            async with trio.open_nursery() as committing:
                committing.start_soon(commit_zombie)
                await trio.sleep((timers.txn_abort_ms + 2_000) / 1000)
                assert not outcome, "the commit finished while its client was paused"
                await executor.apply(ResumeClient(at_ms=0, clients=["clients"]), nursery)
            (refused,) = outcome
            assert trio.current_time() - paused_at > timers.txn_abort_ms / 1000

            def take_over() -> str | None:
                successor = txn_producer(cluster.bootstrap)
                successor.begin_transaction()
                successor.produce("t", b"successor", partition=0)
                return commit(successor)

            successor_error = await trio.to_thread.run_sync(take_over)
        seen = await trio.to_thread.run_sync(read_committed, cluster.bootstrap)
    kill, _restart, pause, resume = events_of(stream)
    assert (kill["value"]["nodes"], kill["value"]["resolved_by"]) == (
        [holder], "txn_coordinator_of")
    assert kill["value"]["role"] == {"kind": "txn-coordinator", "transactional_id": TXN_ID}
    assert (pause["f"], pause["value"]["clients"]) == ("pause-client", ["clients"])
    assert (resume["f"], resume["value"]["clients"]) == ("resume-client", ["clients"])
    # librdkafka: "Failed to end transaction: Local: This instance has been fenced by a
    # newer instance" (the coordinator bumped the epoch when it aborted on timeout).
    assert refused is not None and "fenced" in refused, refused
    assert successor_error is None
    assert [v for v in seen if v != b"settled"] == [b"successor"]
