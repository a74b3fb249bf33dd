"""Unclean-shutdown protection (KIP-966) in a simulated 5-node KRaft cluster.

Replication factor 3, acks=all, min.insync.replicas 2, no fsync (Kafka's default):
acknowledged records live only in page caches. The partition's replicas are three
nodes other than the active controller, so the quorum (5 voters) survives two of
them failing:

1. 20 records are acknowledged by all three replicas; the leader is killed;
2. 20 more are acknowledged by the remaining two;
3. one of those two is cut off from everyone: the ISR is down to the new leader
   (with the feature on, the cut-off replica stays eligible: it holds every
   acknowledged record);
4. the leader loses power, losing every record, and restarts.

Without `eligible.leader.replicas.version` the controller kept that leader as the
last ISR member, so it is elected again with an empty log, and the cut-off replica,
healed, truncates to it: the acknowledged records are gone. With the feature on, the
restart without a clean shutdown takes it out of the ISR and ELR: nobody is elected
until the cut-off replica returns, which is elected from the ELR and keeps them all.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import pytest
import trio

from harness.runtime.sim.cluster import SimCluster
from harness.runtime.sim.run import SimSettings, run_sim
from reference_broker.broker import Broker
from reference_broker.controller.service import ControllerService
from reference_broker.log.record_batch import iter_batches
from tests.test_cluster_sim import producer, read_all

SETTINGS = {
    "num.partitions": 1,
    "default.replication.factor": 3,
    "min.insync.replicas": 2,
    "offsets.topic.num.partitions": 1,
    "replica.lag.time.max.ms": 10_000,
    "broker.session.timeout.ms": 3000,
    "broker.heartbeat.interval.ms": 500,
    "group.initial.rebalance.delay.ms": 0,
    # Keep leadership where the failures put it.
    "auto.leader.rebalance.enable": False,
}


def broker_of(cluster: SimCluster, name: str) -> Broker:
    running = cluster.node(name).running
    assert running is not None, f"{name} is down"
    return running.broker


def controller_of(cluster: SimCluster, name: str) -> ControllerService:
    service = broker_of(cluster, name).controller_service
    assert service is not None
    return service


async def wait_for(predicate: Callable[[], bool], timeout_s: float = 60.0) -> None:
    with trio.fail_after(timeout_s):
        while not predicate():
            await trio.sleep(0.1)


async def isolate(cluster: SimCluster, node: str) -> None:
    for other in [*cluster.nodes, *cluster.clients]:
        if other != node:
            await cluster.block(node, other)
            await cluster.block(other, node)


def log_end(cluster: SimCluster, node: str) -> int:
    log = broker_of(cluster, node).logs.get("t", 0)
    return -1 if log is None else log.log_end_offset


def records_held(cluster: SimCluster, node: str) -> int:
    """Records (not offsets: a power cut may leave retired ones) in the node's log."""
    log = broker_of(cluster, node).logs.get("t", 0)
    if log is None or log.log_end_offset <= log.log_start_offset:
        return 0
    read = log.read(log.log_start_offset, 1 << 30)
    return sum(header.record_count for header, _ in iter_batches(read.records))


Outcome = tuple[list[bytes], str | None, list[bytes]]


def scenario() -> Callable[[SimCluster], Awaitable[Outcome]]:
    async def run(cluster: SimCluster) -> Outcome:
        await wait_for(lambda: cluster.controller() is not None)
        active = cluster.controller()
        assert active is not None
        service = controller_of(cluster, active)
        await wait_for(lambda: all(service.image.is_live(b) for b in range(1, 6)))
        first, second, third = [n for n in cluster.nodes if n != active][:3]
        ids = tuple(broker_of(cluster, n).node_id for n in (first, second, third))
        created = await service.create_topic("t", 1, 3, {}, assignments=[ids])
        assert created.error_code == 0, created
        await wait_for(lambda: cluster.leader_of("t", 0) == first)
        acked: list[bytes] = []
        async with producer(cluster, "c1") as p:
            for i in range(20):
                await p.send_and_wait("t", b"a%d" % i)
                acked.append(b"a%d" % i)
            await wait_for(lambda: all(log_end(cluster, n) == 20 for n in (first, second, third)))
            await cluster.kill(first)
            await wait_for(lambda: cluster.leader_of("t", 0) == second)
            for i in range(20):
                await p.send_and_wait("t", b"b%d" % i)
                acked.append(b"b%d" % i)
            await wait_for(lambda: log_end(cluster, third) == 40)
        await isolate(cluster, third)
        await wait_for(lambda: len(broker_of(cluster, second).partitions[("t", 0)].isr) == 1)
        await cluster.power_loss(second)
        await cluster.restart(second)
        assert records_held(cluster, second) == 0, "the power loss kept unflushed records"
        # Long enough for the old incarnation's session to expire, the new one to
        # register and be unfenced, and the controller to elect whom it will.
        await trio.sleep(10)
        leader_before_heal = cluster.leader_of("t", 0)
        await cluster.heal_network()
        await wait_for(lambda: cluster.leader_of("t", 0) is not None)
        leader = cluster.leader_of("t", 0)
        assert leader is not None
        # Whoever leads, wait for the ISR to reach min.insync.replicas again, so that the
        # high watermark covers whatever the leader holds.
        await wait_for(lambda: len(broker_of(cluster, leader).partitions[("t", 0)].isr) >= 2)
        return acked, leader_before_heal, await read_all(cluster, "c2", "t")

    return run


def simulate(**settings: object) -> Outcome:
    sim = SimSettings(nodes=5, broker_settings={**SETTINGS, **settings}, quorum=True)
    return run_sim(scenario(), seed=5, settings=sim).value


def test_with_eligible_leader_replicas_the_replica_that_lost_power_is_not_elected() -> None:
    acked, leader_before_heal, values = simulate(**{"eligible.leader.replicas.version": 1})
    assert leader_before_heal is None, f"{leader_before_heal} was elected with an empty log"
    assert set(acked) <= set(values), sorted(set(acked) - set(values))


def test_without_it_the_last_isr_member_is_elected_and_acknowledged_records_are_lost() -> None:
    acked, leader_before_heal, values = simulate()
    assert leader_before_heal is not None
    lost = set(acked) - set(values)
    assert lost, "expected the restarted leader's empty log to win"


async def stop_cleanly(cluster: SimCluster, name: str) -> None:
    """Stop a node as SIGTERM does (its logs flushed and closed), then leave it down."""
    node = cluster.node(name)
    assert node.scope is not None and node.stopped is not None and node.storage is not None
    node.scope.cancel()
    await node.stopped.wait()
    node.storage.crash()
    cluster.network.crash(name)
    node.running = None


def test_a_clean_stop_is_told_apart_from_a_kill_at_the_next_registration(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def run(cluster: SimCluster) -> tuple[int, list[int]]:
        await wait_for(lambda: cluster.controller() is not None)
        active = cluster.controller()
        assert active is not None
        victim = next(n for n in cluster.nodes if n != active)
        victim_id = broker_of(cluster, victim).node_id
        image = controller_of(cluster, active).image
        await wait_for(lambda: image.is_live(victim_id))
        epochs = [image.brokers[victim_id].broker_epoch]
        for stop in (stop_cleanly, SimCluster.kill):
            await stop(cluster, victim)
            await cluster.restart(victim)
            await wait_for(lambda: image.brokers[victim_id].broker_epoch > epochs[-1])
            await wait_for(lambda: image.is_live(victim_id))
            epochs.append(image.brokers[victim_id].broker_epoch)
        return victim_id, epochs

    sim = SimSettings(
        nodes=3,
        broker_settings={**SETTINGS, "eligible.leader.replicas.version": 1},
        quorum=True,
    )
    with caplog.at_level(logging.INFO, logger="faultline.broker"):
        victim_id, epochs = run_sim(run, seed=5, settings=sim).value
    messages = [r.getMessage() for r in caplog.records]
    registered = [m for m in messages if m.startswith(f"broker {victim_id} registered")]
    # The first start had no marker; the restart after the clean stop names the epoch it
    # stopped with; the restart after the kill has no marker again.
    assert registered[-2:] == [
        f"broker {victim_id} registered with epoch {epochs[1]} (previous epoch {epochs[0]})",
        f"broker {victim_id} registered with epoch {epochs[2]} (previous epoch -1)",
    ]
    unclean = [m for m in messages if m.startswith(f"broker {victim_id} shut down uncleanly")]
    assert len(unclean) == 1 and f"registered epoch {epochs[1]}" in unclean[0], unclean


def test_a_leader_restarted_after_a_power_cut_leads_nothing_before_it_registers() -> None:
    """The leader loses power and is back at once, while the controller still counts its
    previous incarnation as the partition's live leader. The new incarnation must not
    lead from that metadata with the log it has left (nothing): the followers would
    truncate to it. It waits to register, by when leadership has moved."""

    async def run(cluster: SimCluster) -> tuple[list[bytes], list[bytes]]:
        await wait_for(lambda: cluster.controller() is not None)
        active = cluster.controller()
        assert active is not None
        service = controller_of(cluster, active)
        await wait_for(lambda: all(service.image.is_live(b) for b in (1, 2, 3)))
        others = [n for n in cluster.nodes if n != active]
        ids = tuple(broker_of(cluster, n).node_id for n in [*others, active])
        created = await service.create_topic("t", 1, 3, {}, assignments=[ids])
        assert created.error_code == 0, created
        leader = others[0]
        await wait_for(lambda: cluster.leader_of("t", 0) == leader)
        acked: list[bytes] = []
        async with producer(cluster, "c1") as p:
            for i in range(20):
                await p.send_and_wait("t", b"a%d" % i)
                acked.append(b"a%d" % i)
        await wait_for(lambda: all(log_end(cluster, n) == 20 for n in cluster.nodes))
        await cluster.power_loss(leader)
        await cluster.restart(leader)
        await wait_for(lambda: cluster.leader_of("t", 0) not in (None, leader))
        new_leader = cluster.leader_of("t", 0)
        assert new_leader is not None
        await wait_for(lambda: len(broker_of(cluster, new_leader).partitions[("t", 0)].isr) == 3)
        return acked, await read_all(cluster, "c2", "t")

    sim = SimSettings(nodes=3, broker_settings=SETTINGS, quorum=True)
    acked, values = run_sim(run, seed=5, settings=sim).value
    assert set(acked) <= set(values), sorted(set(acked) - set(values))
