"""Faults aimed at transactions on the simulated cluster.

Each coordinator fault must hit the node the brokers themselves name as the coordinator
when it starts: their FindCoordinator answer (key type 1 for a transactional id, 0 for
a group), asked over the sim network with the faultline client's raw requests, after
the role was moved by an earlier kill. A paused client endpoint must reach no broker
until it is resumed.
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass, field
from typing import Any

import msgspec
import trio
from kafka.protocol.metadata import FindCoordinatorRequest

from harness.fault_timers import timers_from_settings
from harness.runtime.sim.cluster import SimCluster
from harness.runtime.sim.run import SimSettings, run_sim
from history.writer import HistoryWriter
from nemesis.coordinator_faults import SCENARIOS
from nemesis.executor import Executor
from nemesis.ops import Kill, PauseClient, Restart, ResumeClient, Schedule
from nemesis.roles import Role
from workloads.client import KafkaClientError, Producer, ProducerConfig

NODES = ["n1", "n2", "n3"]
SESSION_MS = 3_000
SETTINGS = {"default.replication.factor": 3, "min.insync.replicas": 2,
            "offsets.topic.num.partitions": 5, "transaction.state.log.num.partitions": 5,
            "group.initial.rebalance.delay.ms": 0, "broker.session.timeout.ms": SESSION_MS,
            "broker.heartbeat.interval.ms": 500}
TXN_ID, GROUP = "tx-1", "g-1"
TXN, GROUP_KEY = 1, 0  # FindCoordinator key types


def producer_config(client: str, servers: tuple[str, ...] = ("n1", "n2", "n3"),
                    **more: Any) -> ProducerConfig:
    return ProducerConfig(bootstrap_servers=[f"{s}:9092" for s in servers],
                          client_id=client, request_timeout_ms=1_000, max_block_ms=3_000,
                          **more)


async def ask_coordinator(cluster: SimCluster, key: str, key_type: int) -> int:
    """One FindCoordinator answer from any broker that gives one (node id)."""
    config = producer_config("c1")
    async with Producer(config, network=cluster.client_network("c1"),
                        rng=cluster.client_rng("c1", "find")) as p:
        await p.cluster.refresh_metadata()
        for node_id in sorted(p.cluster.brokers):
            try:
                response = await p.cluster.send(
                    node_id, FindCoordinatorRequest(key=key, key_type=key_type))
            except KafkaClientError:
                continue
            if response.error_code == 0:
                return int(response.node_id)
    raise KafkaClientError(f"no broker named the coordinator of {key!r}")


async def find_coordinator(cluster: SimCluster, key: str, key_type: int) -> str:
    """The node the brokers name as coordinator, once the answer has held for a second
    (it names the new leader a moment before it has taken the partition over)."""
    with trio.fail_after(60):
        while True:
            try:
                answer = await ask_coordinator(cluster, key, key_type)
                await trio.sleep(1)
                if answer == await ask_coordinator(cluster, key, key_type):
                    return f"n{answer}"
            except KafkaClientError:  # not created yet, or moving
                await trio.sleep(0.5)


def events_of(stream: io.BytesIO) -> list[dict[str, Any]]:
    return [msgspec.json.decode(line) for line in stream.getvalue().splitlines()]


def test_txn_coordinator_role_hits_the_node_findcoordinator_names() -> None:
    """Twice, with the coordinator moved in between by killing it."""

    async def scenario(cluster: SimCluster) -> list[tuple[str, list[str], str]]:
        cluster.client_network("c1")
        stream = io.BytesIO()
        executor = Executor(cluster, HistoryWriter(stream), origin=trio.current_time())
        hits: list[tuple[str, list[str], str]] = []
        async with trio.open_nursery() as nursery:
            for _ in range(2):
                answer = await find_coordinator(cluster, TXN_ID, TXN)
                role = Role(kind="txn-coordinator", transactional_id=TXN_ID)
                await executor.apply(Kill(at_ms=0, role=role), nursery)
                kill = events_of(stream)[-1]["value"]
                hits.append((answer, sorted(executor.ledger.down), kill["resolved_by"]))
                await trio.sleep(4 * SESSION_MS / 1000)  # fenced; another leader takes over
                await executor.apply(Restart(at_ms=0, nodes=NODES), nursery)
                await trio.sleep(3)
        return hits

    settings = SimSettings(nodes=3, quorum=True, broker_settings=SETTINGS)
    (first, killed_first, how), (second, killed_second, _) = run_sim(
        scenario, seed=5, settings=settings).value
    assert how == "txn_coordinator_of"
    assert killed_first == [first] and killed_second == [second]
    assert first != second


@dataclass
class World:
    nodes: list[str] = field(default_factory=lambda: list(NODES))
    clients: list[str] = field(default_factory=lambda: ["c1"])
    logs: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=lambda: [GROUP])
    transactional_ids: list[str] = field(default_factory=lambda: [TXN_ID])


@dataclass
class Played:
    name: str
    holder: str  # what FindCoordinator named just before the fault
    first: dict[str, Any]  # the fault's nemesis event
    during: str | None  # what FindCoordinator named just before the fault's repair


def test_coordinator_packages_hit_the_coordinator_of_the_moment() -> None:
    """Each of the six coordinator scenarios, one after the other on one cluster, each
    drawn as the generator draws it: its fault lands on the node FindCoordinator names,
    and a kill or pause lasts long enough for the role to move."""
    timers = timers_from_settings(SETTINGS)
    names = [n for n in SCENARIOS if n != "zombie-producer"]

    async def scenario(cluster: SimCluster) -> list[Played]:
        cluster.client_network("c1")
        played: list[Played] = []
        rng = random.Random(11)
        for name in names:
            key, key_type = (TXN_ID, TXN) if "-txn-" in name else (GROUP, GROUP_KEY)
            holder = await find_coordinator(cluster, key, key_type)
            ops = SCENARIOS[name](0, World(), rng, timers)
            schedule = Schedule(nodes=NODES, clients=["c1"], duration_ms=ops[-1].at_ms + 1,
                                ops=ops)
            stream = io.BytesIO()
            during: list[str | None] = [None]

            end_s = ops[-1].at_ms / 1000

            async def ask_during(key: str = key, key_type: int = key_type,
                                 during: list[str | None] = during,
                                 end_s: float = end_s) -> None:
                await trio.sleep(end_s - 1.5)
                with trio.move_on_after(1.4):
                    while True:
                        try:
                            during[0] = f"n{await ask_coordinator(cluster, key, key_type)}"
                            return
                        except KafkaClientError:
                            await trio.sleep(0.2)

            executor = Executor(cluster, HistoryWriter(stream), origin=trio.current_time())
            async with trio.open_nursery() as nursery:
                nursery.start_soon(ask_during)
                await executor.run(schedule)
            assert executor.ledger.healthy(), name
            played.append(Played(name, holder, events_of(stream)[0], during[0]))
            await trio.sleep(3)  # the restarted or resumed node catches up
        return played

    settings = SimSettings(nodes=3, quorum=True, broker_settings=SETTINGS)
    played = run_sim(scenario, seed=6, settings=settings).value
    assert [p.name for p in played] == names
    for p in played:
        value = p.first["value"]
        assert value["resolved"] == [p.holder], p
        if p.name.startswith("isolate"):
            # Cut off from the other brokers, and from the clients the op lists.
            others = sorted({*NODES, *value.get("clients", [])} - {p.holder})
            assert value["grudge"][p.holder] == others, p
        else:
            assert value["nodes"] == [p.holder], p
            # Fenced after the session timeout: the others named a new coordinator.
            assert p.during is not None and p.during != p.holder, p


def test_a_paused_client_reaches_no_broker_until_resumed() -> None:
    """c1's send waits out the pause; c2, not paused, produces meanwhile."""

    async def scenario(cluster: SimCluster) -> tuple[int, int, int, float]:
        for name in ("c1", "c2"):
            cluster.client_network(name)
        stream = io.BytesIO()
        executor = Executor(cluster, HistoryWriter(stream), origin=trio.current_time())
        broker = cluster.node("n1").running
        assert broker is not None

        def log_end() -> int:
            log = broker.broker.logs.get("t", 0)
            return -1 if log is None else log.log_end_offset

        c1 = Producer(producer_config("c1", ("n1",), delivery_timeout_ms=60_000),
                      network=cluster.client_network("c1"), rng=cluster.client_rng("c1"))
        c2 = Producer(producer_config("c2", ("n1",)), network=cluster.client_network("c2"),
                      rng=cluster.client_rng("c2"))
        async with c1, c2, trio.open_nursery() as nursery:
            await (await c1.send("t", b"before", partition=0)).wait()
            await executor.apply(PauseClient(at_ms=0, clients=["c1"]), nursery)
            paused_at = trio.current_time()
            delivery = await c1.send("t", b"during", partition=0)
            await (await c2.send("t", b"other", partition=0)).wait()
            await trio.sleep(5)
            while_paused = log_end()
            await executor.apply(ResumeClient(at_ms=0, clients=["c1"]), nursery)
            meta = await delivery.wait()
            assert meta.offset is not None
            return while_paused, meta.offset, log_end(), trio.current_time() - paused_at

    settings = SimSettings(nodes=1, broker_settings={"num.partitions": 1})
    while_paused, offset, end, waited = run_sim(scenario, seed=7, settings=settings).value
    assert while_paused == 2  # "before" and c2's record: nothing of c1's paused send
    assert offset == 2 and end == 3  # delivered once resumed
    assert waited >= 5
