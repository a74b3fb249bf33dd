"""A 3-node KRaft cluster of reference brokers in the simulation, with trio clients.

Every node is a broker and a controller voter (`controller.quorum.voters`); topics are
replicated. These tests prove the assembled cluster end to end: a controller is
elected and brokers register, topics created on any node are replicated to every
replica, acks=all survives the loss of the leader and of the controller, and the
replication invariants (`harness.runtime.sim.invariants`) hold throughout.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest
import trio

from harness.runtime.sim.cluster import SimCluster
from harness.runtime.sim.invariants import InvariantMonitor
from harness.runtime.sim.run import SimSettings, run_sim
from harness.runtime.sim.scheduler import derive_rng
from history.writer import HistoryWriter
from nemesis.target import LinkFault
from reference_broker.broker import Broker
from reference_broker.controller.service import ControllerService
from reference_broker.group.offsets_store import partition_for
from reference_broker.replication.partition import Partition
from workloads.base import RngSource, WorkloadEnv, WorkloadOptions, read_everything
from workloads.client import (
    ConsumerConfig,
    DefiniteFailure,
    MessageTooLargeError,
    Producer,
    ProducerConfig,
    TopicPartition,
    UnknownOutcome,
)
from workloads.client.consumer import Consumer, ConsumerRecord
from workloads.recorder import HistoryRecorder

T = TypeVar("T")


def running_broker(cluster: SimCluster, node: str) -> Broker:
    """The broker `node` runs now (it must be up)."""
    running = cluster.node(node).running
    assert running is not None, f"{node} is down"
    return running.broker

FAST = {
    "num.partitions": 1,
    "default.replication.factor": 3,
    "min.insync.replicas": 2,
    "offsets.topic.num.partitions": 3,
    "replica.lag.time.max.ms": 3000,
    "broker.session.timeout.ms": 3000,
    "broker.heartbeat.interval.ms": 500,
    "log.flush.interval.messages": 1,
    "group.initial.rebalance.delay.ms": 0,
}


def simulate(
    scenario: Callable[[SimCluster], Awaitable[T]], seed: int = 11, **settings: object
) -> T:
    broker_settings = {**FAST, **settings}
    sim = SimSettings(nodes=3, broker_settings=broker_settings, quorum=True)
    return run_sim(scenario, seed=seed, settings=sim).value


def producer(cluster: SimCluster, client: str, **overrides: object) -> Producer:
    settings: dict[str, object] = {
        "request_timeout_ms": 3_000,
        "delivery_timeout_ms": 60_000,
        "socket_connection_setup_timeout_ms": 1_000,
        "linger_ms": 0,
        "acks": -1,
        **overrides,
    }
    config = ProducerConfig(
        bootstrap_servers=cluster.bootstrap.split(","),
        client_id=client,
        **settings,  # type: ignore[arg-type]
    )
    return Producer(
        config,
        network=cluster.client_network(client),
        rng=cluster.client_rng(client),
        clock_ms=cluster.client_clock(client).now_ms,
    )


async def read_all(
    cluster: SimCluster, client: str, topic: str, partition: int = 0
) -> list[bytes]:
    config = ConsumerConfig(
        bootstrap_servers=cluster.bootstrap.split(","),
        client_id=client,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=50,
    )
    async with Consumer(
        config, network=cluster.client_network(client), rng=cluster.client_rng(client)
    ) as consumer:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        consumer.seek_to_beginning([tp])
        values: list[bytes] = []
        for _ in range(10):
            values += [r.value or b"" for r in await consumer.poll(0.3)]
        return values


def broker_of(cluster: SimCluster, name: str) -> Broker:
    """The broker of node `name`'s running incarnation."""
    running = cluster.node(name).running
    assert running is not None, f"{name} is down"
    return running.broker


def controller_of(cluster: SimCluster, name: str) -> ControllerService:
    """The controller service of node `name`'s running incarnation."""
    service = broker_of(cluster, name).controller_service
    assert service is not None, f"{name} has no controller service"
    return service


async def wait_for(predicate: Callable[[], bool], timeout_s: float = 30.0) -> None:
    with trio.fail_after(timeout_s):
        while not predicate():
            await trio.sleep(0.1)


def test_a_controller_is_elected_and_every_broker_registers_unfenced() -> None:
    async def scenario(cluster: SimCluster) -> tuple[str | None, list[list[int]], set[str]]:
        await wait_for(lambda: cluster.controller() is not None)
        services = [controller_of(cluster, n) for n in cluster.nodes]
        await wait_for(
            lambda: all(
                sorted(b for b in s.image.brokers if s.image.is_live(b)) == [1, 2, 3]
                for s in services
            )
        )
        cluster_ids = {broker_of(cluster, n).cluster_id for n in cluster.nodes}
        return cluster.controller(), [
            sorted(b for b in s.image.brokers if s.image.is_live(b)) for s in services
        ], cluster_ids

    controller, live, cluster_ids = simulate(scenario)
    assert controller in ("n1", "n2", "n3")
    assert live == [[1, 2, 3]] * 3
    # What Metadata reports: one cluster, whichever broker a client asks.
    assert len(cluster_ids) == 1


def test_acknowledged_writes_reach_every_replica_and_survive_a_leader_kill() -> None:
    async def scenario(cluster: SimCluster) -> tuple[list[bytes], list[str]]:
        monitor = InvariantMonitor()
        async with trio.open_nursery() as watch:
            watch.start_soon(monitor.run, cluster)
            await wait_for(lambda: cluster.controller() is not None)
            acked: list[bytes] = []
            async with producer(cluster, "c1") as p:
                for i in range(20):
                    await p.send_and_wait("t", b"a%d" % i)
                    acked.append(b"a%d" % i)
                leader = cluster.leader_of("t", 0)
                assert leader is not None
                await cluster.kill(leader)
                for i in range(20):
                    await p.send_and_wait("t", b"b%d" % i)
                    acked.append(b"b%d" % i)
                await cluster.restart(leader)
                await wait_for(
                    lambda: all(
                        len(broker_of(cluster, n).partitions[("t", 0)].isr) == 3
                        for n in cluster.nodes
                        if cluster.leader_of("t", 0) == n
                    )
                )
            values = await read_all(cluster, "c2", "t")
            await trio.sleep(2)
            monitor.final_check(cluster)
            watch.cancel_scope.cancel()
        assert set(acked) <= set(values), sorted(set(acked) - set(values))
        return values, [str(v) for v in monitor.violations]

    values, violations = simulate(scenario)
    assert len(values) == len(set(values)) == 40
    assert violations == []


def test_a_restarted_follower_is_proposed_for_the_isr_only_once_unfenced(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario(cluster: SimCluster) -> int:
        await wait_for(lambda: cluster.controller() is not None)
        async with producer(cluster, "c1") as p:
            await p.send_and_wait("t", b"first")
            leader = cluster.leader_of("t", 0)
            assert leader is not None
            running = cluster.node(leader).running
            assert running is not None
            partition = running.broker.partitions[("t", 0)]
            follower = next(n for n in cluster.nodes if n not in (leader, cluster.controller()))
            await cluster.kill(follower)
            sent = 0
            while len(partition.isr) == 3:  # until it is fenced (its session expired)
                await p.send_and_wait("t", b"v%d" % sent)
                sent += 1
                await trio.sleep(0.05)
            # The new incarnation fetches and catches up while the controller still has
            # it fenced (until its first heartbeat): the leader must not propose it then.
            await cluster.restart(follower)
            for i in range(sent, sent + 60):
                await p.send_and_wait("t", b"v%d" % i)
                await trio.sleep(0.05)
        await wait_for(lambda: len(partition.isr) == 3)
        return len(partition.isr)

    with caplog.at_level(logging.INFO, logger="faultline.broker.replication"):
        isr = simulate(scenario)
    messages = [r.getMessage() for r in caplog.records]
    ineligible = [m for m in messages if "failed with error 107" in m]
    proposals = [m for m in messages if "t-0: proposing to" in m]
    assert isr == 3  # it rejoined once unfenced
    assert ineligible == []  # INELIGIBLE_REPLICA: proposed while fenced
    # One shrink when the follower died (perhaps once more if metadata raced it), one
    # expansion once it was eligible: no retry storm after the restart.
    assert sum("expand" in m for m in proposals) == 1, proposals
    assert len(proposals) <= 3, proposals


def test_a_fenced_broker_restarted_after_a_controller_failover_registers_at_once() -> None:
    async def scenario(cluster: SimCluster) -> float:
        await wait_for(lambda: cluster.controller() is not None)
        first = cluster.controller()
        assert first is not None
        image = controller_of(cluster, first).image
        await wait_for(lambda: all(image.is_live(b) for b in (1, 2, 3)))
        victim = next(n for n in cluster.nodes if n != first)
        victim_id = broker_of(cluster, victim).node_id
        old_epoch = image.brokers[victim_id].broker_epoch
        await cluster.kill(victim)
        await wait_for(lambda: image.brokers[victim_id].fenced)
        # The controller fails over while the victim is down and fenced; the victim's
        # return restores the quorum that elects the next controller.
        await cluster.kill(first)
        await cluster.restart(victim)
        await wait_for(lambda: cluster.controller() is not None)
        failover = trio.current_time()
        second = cluster.controller()
        assert second is not None
        second_image = controller_of(cluster, second).image
        await wait_for(lambda: second_image.brokers[victim_id].broker_epoch > old_epoch)
        registered_after = trio.current_time() - failover
        await wait_for(lambda: second_image.is_live(victim_id))
        return registered_after

    registered_after = simulate(scenario)
    session_timeout_s = FAST["broker.session.timeout.ms"] / 1000
    # Not locked out (DUPLICATE_BROKER_REGISTRATION) for a session timeout by a
    # session the new controller gave its fenced registration.
    assert registered_after < session_timeout_s / 2, registered_after

def test_acks_all_not_leader_after_the_append_is_an_unknown_outcome() -> None:
    """The leader appends, a follower fetches the batch, and leadership moves to that
    follower before the leader hears of its fetch: the old leader answers
    NOT_LEADER_OR_FOLLOWER, yet the batch is committed by the new leader. The client
    must not call that a definite failure."""

    async def scenario(cluster: SimCluster) -> tuple[Exception | None, list[bytes]]:
        await wait_for(lambda: cluster.controller() is not None)
        async with producer(cluster, "c0") as p0:
            await p0.send_and_wait("t", b"first")

        def partition(node: str) -> Partition:
            return running_broker(cluster, node).partitions[("t", 0)]

        leader = cluster.leader_of("t", 0)
        assert leader is not None
        replicas = [f"n{r}" for r in partition(leader).replicas]
        # The controller elects the first in-sync replica in replica order: f1.
        f1, f2 = [n for n in replicas if n != leader]
        await wait_for(lambda: all(partition(n).log_end_offset == 1 for n in replicas))
        net = cluster.network
        # f1's next fetch, which would tell the leader it holds the batch, is held;
        # the fetch f1 has parked at the leader still gets the batch.
        net.block(f1, leader)
        net.block(f2, leader)
        net.block(leader, f2)
        outcome: list[Exception | None] = []
        # No retry: the first answer decides (a retry would find the batch at f1).
        async with producer(
            cluster, "c1", retries=0, enable_idempotence=False, request_timeout_ms=30_000
        ) as p:

            async def send() -> None:
                try:
                    await p.send_and_wait("t", b"second")
                    outcome.append(None)
                except (DefiniteFailure, UnknownOutcome) as exc:
                    outcome.append(exc)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(send)
                await wait_for(lambda: partition(f1).log_end_offset == 2)
                net.block(leader, f1)  # isolated: fenced, and f1 is elected
                await wait_for(lambda: cluster.leader_of("t", 0) == f1)
                # The old leader learns it was replaced before f1's held fetch arrives.
                net.unblock(leader, f1)
                net.unblock(leader, f2)
                net.unblock(f2, leader)
                await wait_for(lambda: partition(leader).is_follower)
                net.heal()
        return outcome[0], await read_all(cluster, "c2", "t")

    outcome, values = simulate(scenario)
    assert values == [b"first", b"second"]
    assert isinstance(outcome, UnknownOutcome), outcome
    assert "NOT_LEADER_OR_FOLLOWER" in str(outcome)


def test_an_epoch_bump_leaves_another_partitions_unanswered_batch_as_it_was_sent() -> None:
    """A batch to partition 0 is appended but its answer is lost, so it waits for a
    retry; meanwhile a batch to partition 1 is rejected, which bumps the producer
    epoch. The retry must keep the epoch and sequence it was first sent with, so that
    the leader recognises it as a duplicate instead of appending it again."""

    async def scenario(cluster: SimCluster) -> tuple[int, list[bytes]]:
        await wait_for(lambda: cluster.controller() is not None)
        # A long backoff keeps the batch waiting (not in flight) when the epoch moves.
        async with producer(cluster, "c1", request_timeout_ms=1_000, retry_backoff_ms=5_000) as p:
            await p.send_and_wait("t", b"a0", partition=0)
            await p.send_and_wait("t", b"b0", partition=1)
            leader = cluster.leader_of("t", 0)
            assert leader is not None and leader != cluster.leader_of("t", 1)
            log = running_broker(cluster, leader).partitions[("t", 0)].log
            cluster.network.block(leader, "c1")  # answers from partition 0's leader are held
            delivery = await p.send("t", b"a1", partition=0)
            await wait_for(lambda: log.log_end_offset == 2)
            await trio.sleep(1.5)  # its first attempt timed out: appended, unanswered
            with pytest.raises(MessageTooLargeError):
                await p.send_and_wait("t", b"x" * 20_000, partition=1)
            cluster.network.unblock(leader, "c1")
            offset = (await delivery.wait()).offset
            bumps = p.epoch_bumps
        assert bumps == 1
        assert offset is not None
        return offset, await read_all(cluster, "c2", "t", partition=0)

    offset, values = simulate(scenario, **{"num.partitions": 2, "message.max.bytes": 5_000})
    assert values == [b"a0", b"a1"]
    assert offset == 1


def test_a_batch_behind_an_unanswered_one_that_expired_is_retried_as_it_was_sent() -> None:
    """Two batches to one partition are appended and their answers lost; the first
    expires (its outcome unknown). Its sequence may be taken, so the second must be
    retried under its own epoch and sequence, not stamped again after an epoch bump,
    or the leader appends it a second time."""

    async def scenario(cluster: SimCluster) -> tuple[str, int | None, int, list[bytes]]:
        await wait_for(lambda: cluster.controller() is not None)
        async with producer(
            cluster, "c1", request_timeout_ms=1_000, delivery_timeout_ms=3_000
        ) as p:
            await p.send_and_wait("t", b"a0")
            leader = cluster.leader_of("t", 0)
            assert leader is not None
            log = running_broker(cluster, leader).partitions[("t", 0)].log
            cluster.network.block(leader, "c1")
            first = await p.send("t", b"a1")
            await trio.sleep(0.6)
            second = await p.send("t", b"a2")
            await wait_for(lambda: log.log_end_offset == 3)
            with pytest.raises(UnknownOutcome) as unknown:
                await first.wait()
            cluster.network.unblock(leader, "c1")
            offset = (await second.wait()).offset
            await p.send_and_wait("t", b"a3")
            bumps = p.epoch_bumps
        return str(unknown.value), offset, bumps, await read_all(cluster, "c2", "t")

    error, offset, bumps, values = simulate(scenario)
    assert "delivery.timeout.ms" in error
    assert values == [b"a0", b"a1", b"a2", b"a3"]
    assert offset == 2
    # The acknowledgement of a2 proved a1's sequence taken: no gap, no new epoch.
    assert bumps == 0


def test_the_final_read_reaches_acknowledged_offsets_above_a_new_leaders_high_watermark() -> None:
    """An acks=all write is committed, but the follower elected next never heard the
    high watermark move past it, and leads alone (its ISR under min.insync.replicas,
    so its high watermark waits for the ISR to grow back). The end offsets the final
    read first sees are below the acknowledged offset; it must keep reading until it
    gets there, or the write looks unseen."""
    stream = io.BytesIO()

    async def scenario(cluster: SimCluster) -> int:
        await wait_for(lambda: cluster.controller() is not None)

        def partition(node: str) -> Partition:
            return running_broker(cluster, node).partitions[("t", 0)]

        async with producer(cluster, "c0") as p:
            for i in range(3):
                await p.send_and_wait("t", b"%d" % i)
            leader = cluster.leader_of("t", 0)
            assert leader is not None
            replicas = [f"n{r}" for r in partition(leader).replicas]
            f1, f2 = [n for n in replicas if n != leader]
            await wait_for(lambda: all(partition(n).log_end_offset == 3 for n in replicas))
            # The followers get the next write at once, the news that it committed late.
            for follower in (f1, f2):
                cluster.network.set_fault(leader, follower, LinkFault(latency_ms=2_000))
            acked = await p.send_and_wait("t", b"3")
        assert acked.offset == 3
        # The majority side {f1 and the two other voters} fences the leader and f2.
        for a in (leader, f2):
            for b in cluster.nodes:
                if b not in (leader, f2):
                    cluster.network.block(a, b)
                    cluster.network.block(b, a)
        f1_id = partition(f1).local_id
        await wait_for(
            lambda: cluster.leader_of("t", 0) == f1 and partition(f1).isr == {f1_id}
        )
        assert partition(f1).high_watermark == 3
        start = trio.current_time()
        recorder = HistoryRecorder(
            HistoryWriter(stream), lambda: round((trio.current_time() - start) * 1e9)
        )
        sent = {"topic": "t", "key": None, "value": 3}
        recorder.invoke(0, "send", [sent])
        recorder.complete(0, "ok", "send", [{**sent, "partition": 0, "offset": acked.offset}])
        env = WorkloadEnv(
            bootstrap_for=lambda _topic: cluster.bootstrap,
            network_for=cluster.client_network,
            clock_ms_for=lambda name: cluster.client_clock(name).now_ms,
            client_endpoints=["c1"],
            rng=derive_rng(11, "workload"),
        )
        opts = WorkloadOptions(topics=("t",), partitions=1, replication_factor=3,
                               min_insync_replicas=2)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                read_everything, env, opts, recorder, start + 20, RngSource(env.rng, "final")
            )
            await trio.sleep(2)
            cluster.network.heal()  # f2 rejoins the ISR: the high watermark moves on
        return partition(f1).high_watermark

    high_watermark = run_sim(
        scenario, seed=11, settings=SimSettings(nodes=5, broker_settings=FAST, quorum=True)
    ).value
    assert high_watermark == 4
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    read = [
        record[2]
        for e in events
        if (e["f"], e["type"]) == ("poll", "ok")
        for record in e["value"].get("t/0", [])
    ]
    assert read == [0, 1, 2, 3]


def test_a_consumer_ignores_metadata_older_than_the_epoch_of_its_committed_offset() -> None:
    """The old leader, cut off from the other brokers, still leads epoch 0 with three
    records while the new leader's log has six, committed up to 6 in epoch 1. A
    consumer whose metadata came from the old leader fetches the committed offset
    with its epoch: it must not fetch from the old leader (which would answer
    OFFSET_OUT_OF_RANGE for 6 and send the consumer back to the beginning)."""
    tp = TopicPartition("t", 0)
    Outcome = tuple[list[bytes | None], int, list[tuple[int, bytes | None]]]

    async def scenario(cluster: SimCluster) -> Outcome:
        def consumer(client: str, group: str) -> Consumer:
            config = ConsumerConfig(
                bootstrap_servers=cluster.bootstrap.split(","),
                client_id=client,
                group_id=group,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                fetch_max_wait_ms=50,
            )
            network, rng = cluster.client_network(client), cluster.client_rng(client)
            return Consumer(config, network=network, rng=rng)

        def log_end(node: str) -> int:
            return running_broker(cluster, node).partitions[("t", 0)].log_end_offset

        await wait_for(lambda: cluster.controller() is not None)
        async with producer(cluster, "c0") as p:
            for i in range(3):
                await p.send_and_wait("t", b"a%d" % i)
        old = cluster.leader_of("t", 0)
        assert old is not None
        others = [n for n in cluster.nodes if n != old]
        await wait_for(lambda: all(log_end(n) == 3 for n in cluster.nodes))
        async with consumer("c3", "setup") as c:  # creates __consumer_offsets
            c.assign([tp])
            await c.commit({tp: 0})
        offsets_partitions = 3
        assert FAST["offsets.topic.num.partitions"] == offsets_partitions
        led = cluster.leader_of
        await wait_for(lambda: all(led("__consumer_offsets", i) for i in range(offsets_partitions)))
        # A group whose coordinator stays reachable and current: not on the old leader.
        group = next(
            g
            for g in (f"g{i}" for i in range(50))
            if cluster.leader_of("__consumer_offsets", partition_for(g, offsets_partitions))
            in others
        )
        net = cluster.network
        for n in others:
            net.block(old, n)
            net.block(n, old)
        await wait_for(lambda: cluster.leader_of("t", 0) in others)
        net.block("c1", old)
        net.block(old, "c1")
        async with producer(cluster, "c1") as p:
            for i in range(3, 6):
                await p.send_and_wait("t", b"a%d" % i)
        async with consumer("c1", group) as a:
            a.assign([tp])
            a.seek_to_beginning([tp])
            got: list[ConsumerRecord] = []
            while len(got) < 6:
                got += await a.poll(0.3)
            await a.commit()
        for n in others:
            net.block("c2", n)
            net.block(n, "c2")
        async with consumer("c2", group) as b:
            await b.cluster.refresh_metadata(["t"])
            assert b.cluster.leader_for(tp) == int(old[1:])  # what the old leader says
            for n in others:
                net.unblock("c2", n)
                net.unblock(n, "c2")
            b.assign([tp])
            values: list[ConsumerRecord] = []
            for _ in range(5):
                values += await b.poll(0.3)
            position = await b.position(tp)
            net.heal()
            async with producer(cluster, "c1") as p:
                await p.send_and_wait("t", b"a6")
            later: list[ConsumerRecord] = []
            with trio.fail_after(20):
                while not later:
                    later = await b.poll(0.3)
        return [r.value for r in values], position, [(r.offset, r.value) for r in later]

    values, position, later = simulate(scenario)
    assert values == []
    assert position == 6
    assert later == [(6, b"a6")]


def test_a_follower_repaired_after_damage_refetches_what_it_lost_from_the_leader() -> None:
    """A byte flipped in a follower's first segment while it is down: recovery cuts the
    damaged batch out, and on restart the follower truncates to the damage and refetches,
    ending with every acknowledged message (a kept gap would never be filled)."""
    from tests.test_log_record_batch import decode

    def log_values(cluster: SimCluster, node: str) -> list[tuple[int, bytes]]:
        log = broker_of(cluster, node).logs.get("t", 0)
        out: list[tuple[int, bytes]] = []
        if log is None:
            return out
        offset = log.log_start_offset
        while offset < log.log_end_offset:
            chunk = decode(log.read(offset, 1 << 20).records)
            if not chunk:
                break
            out.extend(chunk)
            offset = chunk[-1][0] + 1
        return out

    async def scenario(cluster: SimCluster) -> tuple[list[bytes], list[bytes], int]:
        await wait_for(lambda: cluster.controller() is not None)
        acked: list[bytes] = []
        async with producer(cluster, "c1") as p:
            for i in range(40):
                await p.send_and_wait("t", b"a%d" % i)
                acked.append(b"a%d" % i)
            leader = cluster.leader_of("t", 0)
            follower = next(n for n in cluster.nodes if n != leader)
            await wait_for(lambda: len(log_values(cluster, follower)) == 40)
            await cluster.kill(follower)
            inode = cluster.node(follower).disk.files[f"t-0/{0:020d}.log"]
            assert len(inode.content) > 200
            for data in (inode.content, inode.durable):
                data[150] ^= 0x01  # inside the second or third batch
            for i in range(10):
                await p.send_and_wait("t", b"b%d" % i)
                acked.append(b"b%d" % i)
            await cluster.restart(follower)
            repaired = broker_of(cluster, follower).logs.get("t", 0)
            assert repaired is not None and repaired.recovery is not None
            gaps = len(repaired.recovery.gaps)
            await wait_for(lambda: len(log_values(cluster, follower)) == len(acked))
        return acked, [v for _, v in log_values(cluster, follower)], gaps

    acked, held, gaps = simulate(scenario)
    assert gaps == 1
    assert held == acked


def test_a_quick_restart_waits_out_its_previous_session_without_blaming_a_second_broker(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario(cluster: SimCluster) -> None:
        await wait_for(lambda: cluster.controller() is not None)
        victim = next(n for n in cluster.nodes if n != cluster.controller())
        await wait_for(lambda: cluster.node(victim).running is not None)
        await trio.sleep(2)  # registered and heartbeating
        await cluster.kill(victim)
        await cluster.restart(victim)  # before the controller's session for it expires
        await trio.sleep(15)

    with caplog.at_level(logging.INFO, logger="faultline.broker.lifecycle"):
        simulate(scenario)
    messages = [r.getMessage() for r in caplog.records]
    assert not [m for m in messages if "second broker" in m]
    # Said once for the restarted incarnation, not once per retry.
    assert sum("registration of a previous incarnation" in m for m in messages) == 1
    # ...and then registered, after the three first registrations.
    assert sum("registered with epoch" in m for m in messages) == 4
