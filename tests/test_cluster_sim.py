"""A 3-node KRaft cluster of reference brokers in the simulation, with trio clients.

Every node is a broker and a controller voter (`controller.quorum.voters`); topics are
replicated. These tests prove the assembled cluster end to end: a controller is
elected and brokers register, topics created on any node are replicated to every
replica, acks=all survives the loss of the leader and of the controller, and the
replication invariants (`harness.runtime.sim.invariants`) hold throughout.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest
import trio

from harness.runtime.sim.cluster import SimCluster
from harness.runtime.sim.invariants import InvariantMonitor
from harness.runtime.sim.run import SimSettings, run_sim
from reference_broker.broker import Broker
from reference_broker.controller.service import ControllerService
from workloads.client import ConsumerConfig, Producer, ProducerConfig, TopicPartition
from workloads.client.consumer import Consumer

T = TypeVar("T")

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


async def read_all(cluster: SimCluster, client: str, topic: str) -> list[bytes]:
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
        tp = TopicPartition(topic, 0)
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
    async def scenario(cluster: SimCluster) -> tuple[int, int]:
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
        rejected = sum("failed with error 107" in r.getMessage() for r in caplog.records)
        return rejected, len(partition.isr)

    with caplog.at_level(logging.INFO, logger="faultline.broker.replication"):
        rejected, isr = simulate(scenario)
    assert isr == 3  # it rejoined once unfenced
    assert rejected == 0  # INELIGIBLE_REPLICA: proposed while fenced


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
