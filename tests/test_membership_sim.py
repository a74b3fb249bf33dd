"""Membership changes in the simulated KRaft cluster: add a broker, reassign a partition
(AlterPartitionReassignments), decommission a broker, with acks=all writes throughout.

Each scenario keeps producing at acks=all while the change runs, then reads the
partition back: every acknowledged value must be there. The replication invariants
monitor (`harness.runtime.sim.invariants`) watches the whole run.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import trio

from harness.runtime.membership import MembershipError
from harness.runtime.sim.cluster import SimCluster
from harness.runtime.sim.invariants import InvariantMonitor
from harness.runtime.sim.run import SimSettings, run_sim
from tests.test_cluster_sim import FAST, broker_of, controller_of, producer, read_all, wait_for

T = TypeVar("T")


def simulate(scenario: Callable[[SimCluster], Awaitable[T]], seed: int = 5) -> T:
    sim = SimSettings(nodes=3, broker_settings=FAST, quorum=True, spare_nodes=2)
    return run_sim(scenario, seed=seed, settings=sim).value


def replicas(cluster: SimCluster, node: str, topic: str = "t") -> tuple[int, ...]:
    """The partition's replicas in `node`'s image (empty until it has replayed them)."""
    found = broker_of(cluster, node).cluster
    assert found is not None
    assignment = found.assignment(topic, 0)
    return () if assignment is None else assignment.replicas


class Load:
    """Sends v0, v1, ... at acks=all until stopped, remembering what was acknowledged."""

    def __init__(self) -> None:
        self.acked: list[bytes] = []
        self.stop = trio.Event()

    async def run(self, cluster: SimCluster) -> None:
        async with producer(cluster, "load") as p:
            i = 0
            while not self.stop.is_set():
                value = b"v%d" % i
                i += 1
                try:
                    await p.send_and_wait("t", value)
                except Exception:
                    await trio.sleep(0.05)  # failed or unknown: not acknowledged
                else:
                    self.acked.append(value)


async def _with_load(
    cluster: SimCluster, change: Callable[[], Awaitable[None]]
) -> tuple[list[bytes], list[bytes], list[str]]:
    """Run `change` under acks=all load; (acked, read back, invariant violations)."""
    monitor = InvariantMonitor()
    load = Load()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(monitor.run, cluster)
        await wait_for(lambda: cluster.controller() is not None)
        async with producer(cluster, "setup") as p:
            await p.send_and_wait("t", b"first")
        nursery.start_soon(load.run, cluster)
        await trio.sleep(1)
        await change()
        await trio.sleep(1)
        load.stop.set()
        await trio.sleep(1)
        values = await read_all(cluster, "reader", "t")
        monitor.final_check(cluster)
        nursery.cancel_scope.cancel()
    return load.acked, values, [str(v) for v in monitor.violations]


def test_a_reassignment_onto_an_added_broker_completes_without_losing_acked_writes() -> None:
    async def scenario(cluster: SimCluster) -> tuple[Any, ...]:
        seen: dict[str, Any] = {}

        async def change() -> None:
            await cluster.add_broker("n4")
            seen["nodes"] = list(cluster.nodes)
            before = replicas(cluster, "n1")
            # Replace the first replica (the preferred leader) with the new broker.
            target = ("n4", *[f"n{r}" for r in before[1:]])
            await cluster.reassign("t", 0, target)
            ongoing = await cluster.list_reassignments()
            seen["ongoing"] = [(o.topic, o.partition, o.adding_replicas) for o in ongoing]
            await wait_for(lambda: replicas(cluster, "n2") == (4, *before[1:]))
            seen["after"] = replicas(cluster, "n2")
            seen["left"] = await cluster.list_reassignments()
            view = broker_of(cluster, "n2").cluster
            assert view is not None
            state = view.assignment("t", 0)
            assert state is not None
            seen["isr"] = sorted(state.isr)

        acked, values, violations = await _with_load(cluster, change)
        return seen, acked, values, violations

    seen, acked, values, violations = simulate(scenario)
    assert seen["nodes"] == ["n1", "n2", "n3", "n4"]
    assert seen["ongoing"] == [("t", 0, (4,))]
    assert seen["after"][0] == 4 and len(seen["after"]) == 3
    assert seen["left"] == []
    assert 4 in seen["isr"]
    assert len(acked) > 10
    assert set(acked) <= set(values), sorted(set(acked) - set(values))[:5]
    assert violations == []


def test_a_reassignment_survives_a_controller_failover() -> None:
    async def scenario(cluster: SimCluster) -> tuple[Any, ...]:
        seen: dict[str, Any] = {}

        async def change() -> None:
            await cluster.add_broker("n4")
            before = replicas(cluster, "n1")
            # Leave the controller's node out of the target so the move can finish without it.
            active = cluster.controller()
            assert active is not None
            target = (4, *[r for r in before if r != int(active[1:])][:2])
            await cluster.reassign("t", 0, [f"n{r}" for r in target])
            await cluster.kill(active)
            seen["killed"] = active
            await wait_for(lambda: cluster.controller() not in (None, active))
            live = next(n for n in cluster.nodes if n != active)
            await wait_for(lambda: replicas(cluster, live) == target, timeout_s=60)
            seen["new_controller"] = cluster.controller()
            await cluster.restart(active)
            await wait_for(lambda: replicas(cluster, active) == target)
            seen["after"] = replicas(cluster, active)
            seen["target"] = target

        acked, values, violations = await _with_load(cluster, change)
        return seen, acked, values, violations

    seen, acked, values, violations = simulate(scenario, seed=9)
    assert seen["new_controller"] != seen["killed"]
    assert seen["after"] == seen["target"]
    assert set(acked) <= set(values), sorted(set(acked) - set(values))[:5]
    assert violations == []


def test_a_reassignment_completes_after_its_leader_is_killed_and_restarted() -> None:
    async def scenario(cluster: SimCluster) -> tuple[Any, ...]:
        seen: dict[str, Any] = {}

        async def change() -> None:
            await cluster.add_broker("n4")
            leader = cluster.leader_of("t", 0)
            assert leader is not None
            lid = int(leader[1:])
            others = [r for r in replicas(cluster, "n1") if r != lid]
            # The leader stays in the target; one follower makes room for n4.
            target = (lid, 4, others[0])
            await cluster.reassign("t", 0, [f"n{r}" for r in target])
            await cluster.kill(leader)
            seen["killed"] = leader
            await trio.sleep(5)
            await cluster.restart(leader)
            await wait_for(lambda: replicas(cluster, leader) == target, timeout_s=60)
            seen["after"] = replicas(cluster, leader)
            seen["target"] = target
            seen["left"] = await cluster.list_reassignments()

        acked, values, violations = await _with_load(cluster, change)
        return seen, acked, values, violations

    seen, acked, values, violations = simulate(scenario, seed=13)
    assert seen["after"] == seen["target"]
    assert seen["left"] == []
    assert set(acked) <= set(values), sorted(set(acked) - set(values))[:5]
    assert violations == []


def test_decommission_moves_every_replica_off_then_retires_and_unregisters_the_broker() -> None:
    async def scenario(cluster: SimCluster) -> tuple[Any, ...]:
        seen: dict[str, Any] = {}

        async def change() -> None:
            await cluster.add_broker("n4")
            await cluster.reassign("t", 0, ["n4", "n2", "n3"])
            await wait_for(lambda: replicas(cluster, "n1") == (4, 2, 3))
            try:
                await cluster.decommission("n1")
            except MembershipError as exc:
                seen["voter_refused"] = str(exc)
            await cluster.decommission("n4")
            seen["nodes"] = list(cluster.nodes)
            seen["retired"] = list(cluster.retired)
            seen["after"] = replicas(cluster, "n1")
            seen["n4_up"] = cluster.node("n4").up
            await wait_for(lambda: 4 not in controller_of(cluster, "n2").image.brokers)
            await cluster.restart("n4")  # a retired broker never comes back
            seen["n4_up_after_restart"] = cluster.node("n4").up

        acked, values, violations = await _with_load(cluster, change)
        return seen, acked, values, violations

    seen, acked, values, violations = simulate(scenario, seed=21)
    assert "voter" in str(seen["voter_refused"])
    assert seen["nodes"] == ["n1", "n2", "n3"]
    assert seen["retired"] == ["n4"]
    assert 4 not in seen["after"] and len(seen["after"]) == 3
    assert seen["n4_up"] is False and seen["n4_up_after_restart"] is False
    assert set(acked) <= set(values), sorted(set(acked) - set(values))[:5]
    assert violations == []
