"""faultline's own client in transactions, over TCP against a reference broker.

The native session's transactional producer commits and aborts; read_committed
consumers (ours and confluent-kafka's) see committed data only, read_uncommitted ones
the aborted data too; offsets sent with send_offsets_to_transaction become the group's
only with the commit; a second instance of a transactional id fences the first
(`TxnFatal`); a failed send makes the transaction abortable (`TxnAbortable`), and after
the abort the same producer commits the next one.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.broker_process import BrokerProcess, bootstrap_of, in_process_broker
from workloads.adapters.native import NativeSession
from workloads.adapters.session import (
    OpFailed,
    SessionSpec,
    TxnAbortable,
    TxnFatal,
)
from workloads.client import ConsumerConfig, TopicPartition
from workloads.client.consumer import Consumer
from workloads.client.transport import TcpNetwork, wall_clock_ms

SETTINGS = {
    "offsets.topic.num.partitions": 3,
    "transaction.state.log.num.partitions": 3,
    # One node: the internal topics cannot have three replicas.
    "transaction.state.log.replication.factor": 1,
    "transaction.state.log.min.isr": 1,
    "transaction.abort.timed.out.transaction.cleanup.interval.ms": 200,
    "group.initial.rebalance.delay.ms": 0,
}


@asynccontextmanager
async def broker(tmp_path: Path) -> AsyncIterator[str]:
    async with in_process_broker(tmp_path, SETTINGS) as running:
        yield bootstrap_of(running)


def session(bootstrap: str, name: str, **extra: Any) -> NativeSession:
    spec = SessionSpec(bootstrap=bootstrap, client_id=name, **extra)
    return NativeSession(
        spec, network=TcpNetwork(), clock_ms=wall_clock_ms, rng=random.Random(name)
    )


def msg(topic: str, value: int) -> dict[str, Any]:
    return {"topic": topic, "key": None, "value": value}


async def read_values(
    bootstrap: str, log: str, isolation: str, *, expect: int, wait_s: float = 3.0
) -> list[int]:
    """Values a fresh session with `isolation` reads from `log` from the beginning."""
    values: list[int] = []
    async with session(bootstrap, f"reader-{isolation}", isolation_level=isolation) as s:
        await s.assign([log], "beginning")
        with trio.move_on_after(wait_s):
            while True:
                polled = await s.poll(0.2)
                values += [v for _, _, v in polled.get(log, [])]
                if len(values) >= expect and not polled:
                    break
    return values


async def test_commit_is_visible_to_read_committed_and_abort_only_to_read_uncommitted(
    tmp_path: Path,
) -> None:
    async with broker(tmp_path) as bootstrap:
        async with session(bootstrap, "p1", transactional_id="tx-a") as p:
            await p.begin_transaction()
            sent = await p.send([msg("t", 1), msg("t", 2)])
            assert [m["offset"] for m in sent] == [0, 1]
            await p.commit_transaction()
            await p.begin_transaction()
            await p.send([msg("t", 3)])
            # An open transaction holds the LSO back: read_committed ends at it.
            async with session(bootstrap, "probe", isolation_level="read_committed") as probe:
                await probe.assign(["t/0"], "beginning")
                assert await probe.end_offsets(["t/0"]) == {"t/0": 3}
            await p.abort_transaction()
            await p.begin_transaction()
            await p.send([msg("t", 4)])
            await p.commit_transaction()
        committed = await read_values(bootstrap, "t/0", "read_committed", expect=3)
        uncommitted = await read_values(bootstrap, "t/0", "read_uncommitted", expect=4)
    assert committed == [1, 2, 4]
    assert uncommitted == [1, 2, 3, 4]


async def test_send_offsets_to_transaction_commits_offsets_only_with_the_transaction(
    tmp_path: Path,
) -> None:
    tp = TopicPartition("in", 0)
    async with broker(tmp_path) as bootstrap:
        async with session(bootstrap, "p1", transactional_id="tx-o") as p:
            producer = await p._transactional_producer()
            await producer.cluster.create_topic("in", 1)  # offsets of a topic that exists
            await p.begin_transaction()
            await p.send([msg("out", 1)])
            await p.send_offsets_to_transaction({"in/0": 5}, "eos")
            await p.abort_transaction()
            after_abort = await committed_offset(bootstrap, "eos", tp)
            await p.begin_transaction()
            await p.send([msg("out", 2)])
            await p.send_offsets_to_transaction({"in/0": 7}, "eos")
            await p.commit_transaction()
        after_commit = await committed_offset(bootstrap, "eos", tp)
    assert after_abort is None
    assert after_commit == 7


async def committed_offset(bootstrap: str, group: str, tp: TopicPartition) -> int | None:
    config = ConsumerConfig(bootstrap_servers=[bootstrap], group_id=group, max_block_ms=10_000)
    async with Consumer(config) as consumer:
        # The commit's markers are written after EndTxn answers: give them a moment.
        with trio.move_on_after(3):
            while (await consumer.committed([tp]))[tp] is None:
                await trio.sleep(0.1)
        return (await consumer.committed([tp]))[tp]


async def test_a_second_instance_fences_the_zombie(tmp_path: Path) -> None:
    async with broker(tmp_path) as bootstrap:
        async with session(bootstrap, "old", transactional_id="tx-z") as old:
            await old.begin_transaction()
            await old.send([msg("z", 1)])
            async with session(bootstrap, "new", transactional_id="tx-z") as new:
                # The new instance's init aborts the zombie's open transaction.
                await new.begin_transaction()
                await new.send([msg("z", 2)])
                await new.commit_transaction()
                with pytest.raises(TxnFatal, match=r"PRODUCER_FENCED|INVALID_PRODUCER_EPOCH"):
                    await old.send([msg("z", 3)])
                    await old.commit_transaction()
                # The zombie stays fenced: it never starts an instance that would fence `new`.
                with pytest.raises(TxnFatal, match="fenced"):
                    await old.begin_transaction()
                await new.begin_transaction()
                await new.send([msg("z", 4)])
                await new.commit_transaction()
        assert await read_values(bootstrap, "z/0", "read_committed", expect=2) == [2, 4]


async def test_a_failed_send_makes_the_transaction_abortable_and_abort_recovers(
    tmp_path: Path,
) -> None:
    async with broker(tmp_path) as bootstrap:
        async with session(bootstrap, "p1", transactional_id="tx-b") as p:
            producer = await p._transactional_producer()
            await producer.cluster.create_topic("small", 1, configs={"max.message.bytes": "200"})
            await p.begin_transaction()
            await p.send([msg("ok", 1)])
            with pytest.raises(TxnAbortable, match="MESSAGE_TOO_LARGE"):
                await p.send([msg("small", 10**400)])
            # The transaction cannot commit any more: commit is refused, abort recovers.
            with pytest.raises(TxnAbortable):
                await p.commit_transaction()
            await p.abort_transaction()
            await p.begin_transaction()
            await p.send([msg("ok", 2)])
            await p.commit_transaction()
        assert await read_values(bootstrap, "ok/0", "read_committed", expect=1) == [2]
        assert await read_values(bootstrap, "ok/0", "read_uncommitted", expect=2) == [1, 2]


async def test_transactions_need_a_transactional_id(tmp_path: Path) -> None:
    async with broker(tmp_path) as bootstrap, session(bootstrap, "plain") as p:
        with pytest.raises(OpFailed, match="transactional_id"):
            await p.begin_transaction()


async def test_confluent_read_committed_consumer_sees_only_our_commits(tmp_path: Path) -> None:
    async with broker(tmp_path) as bootstrap:
        async with session(bootstrap, "p1", transactional_id="tx-c") as p:
            for value, commit in ((1, True), (2, False), (3, True)):
                await p.begin_transaction()
                await p.send([msg("cf", value)])
                if commit:
                    await p.commit_transaction()
                else:
                    await p.abort_transaction()
        committed = await trio.to_thread.run_sync(confluent_read, bootstrap, "read_committed", 2)
        uncommitted = await trio.to_thread.run_sync(
            confluent_read, bootstrap, "read_uncommitted", 3
        )
    assert committed == [1, 3]
    assert uncommitted == [1, 2, 3]


def confluent_read(bootstrap: str, isolation: str, expect: int) -> list[int]:
    import time

    from confluent_kafka import Consumer as CfConsumer
    from confluent_kafka import TopicPartition as CfTopicPartition

    consumer = CfConsumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"cf-{isolation}",
            "isolation.level": isolation,
            "enable.auto.commit": False,
        }
    )
    consumer.assign([CfTopicPartition("cf", 0, 0)])
    values: list[int] = []
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline:
        message = consumer.poll(0.2)
        if message is None:
            if len(values) >= expect:
                break
            continue
        value = message.value()
        if message.error() is None and value is not None:
            values.append(int(value))
    consumer.close()
    return values


async def test_a_transaction_past_its_timeout_is_aborted_and_its_producer_fenced(
    tmp_path: Path,
) -> None:
    async with broker(tmp_path) as bootstrap:
        async with session(
            bootstrap, "slow", transactional_id="tx-t", transaction_timeout_ms=1_000
        ) as slow:
            await slow.begin_transaction()
            await slow.send([msg("to", 1)])
            await trio.sleep(2.5)  # the coordinator aborts it and bumps the epoch
            with pytest.raises(TxnFatal):
                await slow.commit_transaction()
        async with session(bootstrap, "next", transactional_id="tx-t") as after:
            await after.begin_transaction()
            await after.send([msg("to", 2)])
            await after.commit_transaction()
        assert await read_values(bootstrap, "to/0", "read_committed", expect=1) == [2]
        assert await read_values(bootstrap, "to/0", "read_uncommitted", expect=2) == [1, 2]


async def test_a_broker_process_survives_a_kill_between_transactions(
    broker_factory: Callable[..., BrokerProcess], tmp_path: Path
) -> None:
    """Against a `faultline broker` process: a committed transaction is still visible to
    read_committed after a SIGKILL and restart, an aborted one is still invisible."""
    data_dir = tmp_path / "node"
    first = broker_factory(settings=SETTINGS, data_dir=data_dir)
    async with session(first.bootstrap, "p1", transactional_id="tx-p") as p:
        await p.begin_transaction()
        await p.send([msg("pk", 1)])
        await p.commit_transaction()
        await p.begin_transaction()
        await p.send([msg("pk", 2)])
        await p.abort_transaction()
    first.kill()
    second = broker_factory(settings=SETTINGS, data_dir=data_dir)
    async with session(second.bootstrap, "p2", transactional_id="tx-p") as p:
        await p.begin_transaction()
        await p.send([msg("pk", 3)])
        await p.commit_transaction()
    committed = await read_values(second.bootstrap, "pk/0", "read_committed", expect=2)
    assert committed == [1, 3]


async def test_our_read_committed_consumer_drops_confluents_aborted_transactions(
    tmp_path: Path,
) -> None:
    def produce(bootstrap: str) -> None:
        from confluent_kafka import Producer as CfProducer

        producer = CfProducer({"bootstrap.servers": bootstrap, "transactional.id": "cf-tx"})
        producer.init_transactions(10)
        for values, commit in (([1, 2], True), ([3, 4, 5], False), ([6], True)):
            producer.begin_transaction()
            for v in values:
                producer.produce("cfin", str(v).encode(), partition=0)
            producer.flush(10)  # abort purges what is not sent yet: write it first
            if commit:
                producer.commit_transaction(10)
            else:
                producer.abort_transaction(10)

    async with broker(tmp_path) as bootstrap:
        await trio.to_thread.run_sync(produce, bootstrap)
        committed = await read_values(bootstrap, "cfin/0", "read_committed", expect=3)
        uncommitted = await read_values(bootstrap, "cfin/0", "read_uncommitted", expect=6)
    assert committed == [1, 2, 6]
    assert uncommitted == [1, 2, 3, 4, 5, 6]


async def test_read_committed_waits_for_offsets_an_open_transaction_commits(
    tmp_path: Path,
) -> None:
    tp = TopicPartition("src", 0)
    seen: dict[str, int | None] = {}

    async def committed_as(bootstrap: str, isolation: str) -> None:
        config = ConsumerConfig(
            bootstrap_servers=[bootstrap],
            group_id="g",
            isolation_level=isolation,
            max_block_ms=10_000,
        )
        async with Consumer(config) as consumer:
            seen[isolation] = (await consumer.committed([tp]))[tp]

    async with broker(tmp_path) as bootstrap, session(bootstrap, "p", transactional_id="s") as p:
        producer = await p._transactional_producer()
        await producer.cluster.create_topic("src", 1)
        await p.begin_transaction()
        await p.send_offsets_to_transaction({"src/0": 7}, "g")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(committed_as, bootstrap, "read_committed")
            await committed_as(bootstrap, "read_uncommitted")
            await trio.sleep(1)
            assert "read_committed" not in seen  # still waiting for the decision
            await p.commit_transaction()
    assert seen == {"read_uncommitted": None, "read_committed": 7}
