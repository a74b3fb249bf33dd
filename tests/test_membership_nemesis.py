"""The `membership` nemesis package: seeded generation and execution against the sim.

Generation is plain data and deterministic per seed: spares are added before they are
used, only added brokers are decommissioned (the voters stay), reassignments keep the
replication factor and name members or added brokers. Executed against a simulated
cluster mid-workload, the ops become nemesis history events and change the cluster.
"""

from __future__ import annotations

import io
import json

import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.runtime.sim.cluster import SimCluster
from harness.runtime.sim.run import SimSettings, run_sim
from history.writer import HistoryWriter
from nemesis import packages
from nemesis.executor import Executor
from nemesis.generate import generate
from nemesis.membership import spare_names
from nemesis.ops import AddBroker, DecommissionBroker, Reassign, Schedule
from tests.test_cluster_sim import FAST, producer, wait_for

NODES = ["n1", "n2", "n3"]
LOGS = ["t1/0", "t2/0"]


def make(spec: str, seed: int) -> Schedule:
    return generate(spec, nodes=NODES, clients=["c1"], duration_ms=300_000,
                    interval_ms=5_000, seed=seed, logs=LOGS)


@settings(max_examples=50)
@given(st.integers(min_value=0, max_value=2**32))
def test_generated_membership_changes_are_coherent_and_seeded(seed: int) -> None:
    schedule = make("kill,partition,membership", seed)
    assert schedule.to_json() == make("kill,partition,membership", seed).to_json()
    assert Schedule.from_json(schedule.to_json()) == schedule
    spares = spare_names(NODES)
    added: list[str] = []
    for op in schedule.ops:
        if isinstance(op, AddBroker):
            assert op.node in spares and op.node not in added
            added.append(op.node)
        elif isinstance(op, DecommissionBroker):
            assert op.node in added, "only a broker the package added is retired"
            added.remove(op.node)
        elif isinstance(op, Reassign):
            assert op.log in LOGS
            assert len(op.replicas) == 3 and len(set(op.replicas)) == 3
            assert set(op.replicas) <= {*NODES, *added}
    kinds = {type(op) for op in schedule.ops}
    assert Reassign in kinds and AddBroker in kinds


def test_membership_is_opt_in_and_described() -> None:
    assert "membership" not in packages.parse("mixed")
    assert packages.parse("kill,membership") == ("kill", "membership")
    assert any(line.startswith("membership ") for line in packages.describe().splitlines())


def test_the_executor_adds_reassigns_and_decommissions_recording_each_change() -> None:
    schedule = Schedule(nodes=NODES, clients=[], duration_ms=40_000, ops=[
        AddBroker(at_ms=1_000, node="n4"),
        Reassign(at_ms=6_000, log="t/0", replicas=["n4", "n2", "n3"]),
        Reassign(at_ms=6_500, log="t/0", replicas=["n4", "n2", "n9"]),
        AddBroker(at_ms=7_000, node="n1"),
        DecommissionBroker(at_ms=15_000, node="n4"),
    ])

    async def scenario(cluster: SimCluster) -> tuple[list[dict[str, object]], list[str]]:
        await wait_for(lambda: cluster.controller() is not None)
        async with producer(cluster, "c") as p:
            await p.send_and_wait("t", b"x")
        out = io.BytesIO()
        history = HistoryWriter(out)
        executor = Executor(cluster, history, origin=trio.current_time())
        await executor.run(schedule)
        events = [json.loads(line) for line in out.getvalue().decode().splitlines()]
        return [e for e in events if e["process"] == "nemesis"], list(cluster.nodes)

    sim = SimSettings(nodes=3, broker_settings=FAST, quorum=True, spare_nodes=2)
    events, nodes = run_sim(scenario, seed=3, settings=sim).value
    by_f = [(e["f"], e.get("error")) for e in events]
    assert by_f[0] == ("add-broker", None)
    assert by_f[1] == ("reassign", None)
    # n9 is not a registered broker: INVALID_REPLICA_ASSIGNMENT (39), recorded, no crash.
    assert by_f[2][0] == "reassign" and "error 39" in str(by_f[2][1])
    assert by_f[3][0] == "add-broker" and "not a spare" in str(by_f[3][1])
    assert ("decommission-broker", None) in by_f
    assert nodes == NODES
