"""A generated mixed schedule runs against a real `SimCluster` and leaves it healthy.

Reference brokers serve on the simulated network while a trio producer writes to them;
the executor breaks the cluster through `SimCluster`'s FaultTarget primitives, all in
virtual time. Afterwards the history holds the workload's and the nemesis's events,
and every node is up, running, in step and accepting writes.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import trio

from harness.runtime.sim.cluster import SimCluster
from harness.runtime.sim.run import SimSettings, run_sim
from history.model import NemesisEvent
from history.reader import read_history
from history.writer import HistoryWriter
from nemesis.executor import execute
from nemesis.generate import generate
from nemesis.ops import Schedule
from workloads.client import KafkaClientError, Producer, ProducerConfig


def producer(cluster: SimCluster, client: str, node: str) -> Producer:
    config = ProducerConfig(
        bootstrap_servers=[cluster.node(node).address],
        client_id=client,
        request_timeout_ms=1_000,
        delivery_timeout_ms=3_000,
        max_block_ms=3_000,
        socket_connection_setup_timeout_ms=1_000,
        linger_ms=0,
    )
    return Producer(
        config,
        network=cluster.client_network(client),
        rng=cluster.client_rng(client),
        clock_ms=cluster.client_clock(client).now_ms,
    )


async def write_steadily(
    cluster: SimCluster, writer: HistoryWriter, client: str, node: str, topic: str
) -> None:
    """Send unique values to `topic` on `node`, recording each send; runs until cancelled."""
    process = int(client.removeprefix("w")) * 1000
    value = process
    while True:
        try:
            async with producer(cluster, client, node) as p:
                while True:
                    value += 1
                    message = {"topic": topic, "key": None, "value": value}
                    now = round(trio.current_time() * 1e9)
                    writer.append(process, "invoke", "send", [message], time=now)
                    sent = None
                    with trio.move_on_after(5), contextlib.suppress(KafkaClientError):
                        sent = await p.send_and_wait(topic, str(value).encode())
                    now = round(trio.current_time() * 1e9)
                    if sent is None:
                        writer.append(process, "info", "send", [message], time=now, error="lost")
                        process += 1
                        break
                    done = {**message, "partition": sent.partition, "offset": sent.offset}
                    writer.append(process, "ok", "send", [done], time=now)
                    await trio.sleep(0.1)
        except KafkaClientError:
            pass  # could not bootstrap: nothing was under way
        await trio.sleep(0.5)


def run_mixed(path: Path, seed: int) -> Schedule:
    """Run a generated mixed schedule beside two writers; check health; return the schedule."""

    async def scenario(cluster: SimCluster) -> Schedule:
        for node in cluster.nodes:
            cluster.topic_homes[f"t{node[1:]}"] = node
        writers = {"w1": "n1", "w2": "n2"}
        for client in writers:
            cluster.client_network(client)
        schedule = generate(
            "mixed",
            nodes=cluster.nodes,
            clients=cluster.clients,
            duration_ms=30_000,
            interval_ms=1_500,
            recovery_ms=3_000,
            seed=seed,
            logs=["t1/0", "t2/0"],
        )
        with path.open("wb") as stream:
            history = HistoryWriter(stream)
            async with trio.open_nursery() as nursery:
                for client, node in writers.items():
                    nursery.start_soon(
                        write_steadily, cluster, history, client, node, f"t{node[1:]}"
                    )
                ledger = await execute(schedule, cluster, history, origin=0.0)
                nursery.cancel_scope.cancel()
        assert ledger.healthy()
        for name in cluster.nodes:
            sim_node = cluster.node(name)
            assert sim_node.up, f"{name} is down after the final heal"
            assert not cluster.network.hosts[name].paused, f"{name} is still paused"
            assert sim_node.clock.skew_ms == 0, f"{name}'s clock is still skewed"
            # Serving again: a fresh client's write is acknowledged.
            with trio.fail_after(10):
                async with producer(cluster, f"check-{name}", name) as p:
                    sent = await p.send_and_wait(f"after-{name}", b"ok")
            assert sent.offset == 0
        return schedule

    settings = SimSettings(nodes=3, broker_settings={"num.partitions": 1})
    return run_sim(scenario, seed=seed, settings=settings).value


def test_a_mixed_schedule_breaks_a_sim_cluster_records_it_and_leaves_it_healthy(
    tmp_path: Path,
) -> None:
    path = tmp_path / "history.jsonl"
    schedule = run_mixed(path, seed=5)

    events = [event for event, _ in read_history(str(path))]
    nemesis = [e for e in events if isinstance(e, NemesisEvent)]
    assert len(schedule.ops) >= 10
    # One event per scheduled op, in order, and none of them skipped.
    scheduled = [op.__struct_config__.tag for op in schedule.ops]
    assert [e.f for e in nemesis[: len(scheduled)]] == scheduled
    assert all(e.error is None for e in nemesis)
    # Then only final-heal events.
    assert all(e.value.get("final") for e in nemesis[len(scheduled) :])
    # This seed's schedule breaks the cluster in every way but a bare clock bump.
    kinds = {e.f for e in nemesis}
    assert {
        "start-partition", "kill", "power-loss", "pause", "start-link-fault", "clock-strobe"
    } <= kinds
    # The workload ran alongside: acknowledged sends are interleaved with the faults.
    sends = [e for e in events if not isinstance(e, NemesisEvent) and e.type == "ok"]
    assert sends and sends[0].time < nemesis[-1].time


def test_the_same_seed_replays_the_same_faults_and_history_byte_for_byte(
    tmp_path: Path,
) -> None:
    first, again, other = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "c.jsonl"
    run_mixed(first, seed=9)
    run_mixed(again, seed=9)
    run_mixed(other, seed=10)
    assert first.read_bytes() == again.read_bytes()
    assert first.read_bytes() != other.read_bytes()
