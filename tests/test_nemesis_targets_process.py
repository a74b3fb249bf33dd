"""Role targets and composite packages on real broker processes (`ProcessCluster`).

Each fault names a role; it must hit the node the brokers themselves name for that role
at that moment, asked over the wire through the client proxies (a Metadata request for
leader, ISR and controller, FindCoordinator for the coordinator), after the leadership
was moved by an earlier kill.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio

from harness.runtime.process import ProcessCluster
from harness.runtime.process.observer import ask
from history.writer import HistoryWriter
from nemesis.executor import Executor
from nemesis.generate import generate
from nemesis.ops import ClockSkew, Kill, Pause, Restart
from nemesis.roles import Role
from nemesis.timing import FaultTimers
from workloads.client import KafkaClientError, Producer, ProducerConfig

SESSION_MS = 3000
SETTINGS = {"default.replication.factor": 3, "min.insync.replicas": 2, "num.partitions": 1,
            "broker.session.timeout.ms": SESSION_MS, "broker.heartbeat.interval.ms": 500,
            "offsets.topic.num.partitions": 3, "group.initial.rebalance.delay.ms": 0}


class Seen(msgspec.Struct):
    """What the brokers answer about partition t/0 and the controller."""

    leader: str
    isr: list[str]
    controller: str


async def seen(cluster: ProcessCluster, via: str | None = None) -> Seen | None:
    """Partition t/0 and the controller as one broker answers over its client proxy."""
    for node in [via] if via else list(cluster.nodes):
        host, port = cluster.client_address(node).rsplit(":", 1)
        try:
            with trio.fail_after(2):
                response = await ask(host, int(port), int(node[1:]))
        except (OSError, trio.TooSlowError, trio.BrokenResourceError, KafkaClientError):
            continue
        for topic in response.topics:
            for p in topic.partitions:
                if topic.name == "t" and p.partition_index == 0 and p.leader_id > 0:
                    return Seen(f"n{p.leader_id}", sorted(f"n{i}" for i in p.isr_nodes),
                                f"n{response.controller_id}")
    return None


async def settled(cluster: ProcessCluster, ok: Callable[[Seen], bool]) -> Seen:
    """The brokers' answer once it satisfies `ok` and has held for a second (the harness's
    own view is refreshed every quarter second)."""
    with trio.fail_after(60):
        while True:
            first = await seen(cluster)
            if first is not None and ok(first):
                await trio.sleep(1.0)
                if await seen(cluster) == first:
                    return first
            await trio.sleep(0.2)


async def coordinator(cluster: ProcessCluster, group: str) -> str:
    """FindCoordinator's answer, once it has held for a second."""
    config = ProducerConfig.from_kafka({"bootstrap.servers": cluster.bootstrap})
    with trio.fail_after(60):
        while True:
            try:
                async with Producer(config) as p:
                    answer = await p.cluster.find_coordinator(group)
                    await trio.sleep(1.0)
                    if answer == await p.cluster.find_coordinator(group):
                        return f"n{answer}"
            except KafkaClientError:
                await trio.sleep(0.3)


async def start_cluster_with_topic(cluster: ProcessCluster) -> None:
    config = ProducerConfig.from_kafka({"bootstrap.servers": cluster.bootstrap})
    with trio.fail_after(60):
        async with Producer(config) as producer:
            await producer.send_and_wait("t", b"x", partition=0)


def events_of(stream: io.BytesIO) -> list[dict[str, Any]]:
    return [msgspec.json.decode(line) for line in stream.getvalue().splitlines()]


async def test_leader_followers_controller_and_coordinator_roles_on_processes(
    tmp_path: Path,
) -> None:
    async with ProcessCluster(tmp_path, 3, quorum=True, settings=SETTINGS) as cluster:
        await start_cluster_with_topic(cluster)
        first = await settled(cluster, lambda s: len(s.isr) == 3)
        stream = io.BytesIO()
        executor = Executor(cluster, HistoryWriter(stream), origin=trio.current_time())
        leader = Role(kind="leader", log="t/0")
        async with trio.open_nursery() as nursery:
            # Move the leadership: the kill finds the first leader, the next one its successor.
            await executor.apply(Kill(at_ms=0, role=leader), nursery)
            await executor.apply(Restart(at_ms=0, nodes=list(cluster.nodes)), nursery)
            before_pause = await settled(
                cluster, lambda s: s.leader != first.leader and len(s.isr) == 3)
            await executor.apply(Pause(at_ms=0, role=Role(kind="followers", log="t/0")),
                                 nursery)
            await executor.heal_everything()
            before_kill = await settled(cluster, lambda s: len(s.isr) == 3)
            await executor.apply(Kill(at_ms=0, role=leader), nursery)
            await executor.heal_everything()
            before_skew = await settled(cluster, lambda s: len(s.isr) == 3)
            await executor.apply(
                ClockSkew(at_ms=0, node="n1", delta_ms=5_000, role=Role(kind="controller")),
                nursery)
            await executor.heal_everything()
            group_coordinator = await coordinator(cluster, "g")
            await executor.apply(Kill(at_ms=0, role=Role(kind="coordinator", group="g")),
                                 nursery)
            await executor.heal_everything()
        events = [e for e in events_of(stream) if not e["value"].get("final")]
    kill1, _, pause, kill2, skew, kill3 = events
    assert kill1["value"]["nodes"] == [first.leader]
    # Each fault hit what the brokers answered just before it.
    followers = sorted(set(before_pause.isr) - {before_pause.leader})
    assert (pause["value"]["nodes"], pause["value"]["resolved_by"]) == (followers, "isr_of")
    assert (kill2["value"]["nodes"], kill2["value"]["resolved_by"]) == (
        [before_kill.leader], "leader_of")
    assert before_kill.leader != first.leader  # the leadership had moved
    assert (skew["value"]["resolved"], skew["value"]["resolved_by"]) == (
        [before_skew.controller], "controller")
    assert (kill3["value"]["nodes"], kill3["value"]["resolved_by"]) == (
        [group_coordinator], "coordinator_of")


async def play(cluster: ProcessCluster, package: str, seed: int,
               duration_ms: int) -> tuple[list[Seen | None], list[dict[str, Any]]]:
    """Run the composite `package`'s generated schedule op by op, asking the brokers for
    leader, ISR and controller just before each op; those answers, and the events (one
    per op, then the final heal's)."""
    schedule = generate(package, nodes=cluster.nodes, clients=cluster.clients,
                        duration_ms=duration_ms, interval_ms=1_000, recovery_ms=0, seed=seed,
                        logs=["t/0"], timers=FaultTimers(broker_session_ms=SESSION_MS))
    stream = io.BytesIO()
    executor = Executor(cluster, HistoryWriter(stream), origin=trio.current_time())
    answers: list[Seen | None] = []
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        for op in schedule.ops:
            await trio.sleep_until(start + op.at_ms / 1000)
            answers.append(await seen(cluster))
            await executor.apply(op, nursery)
        await executor.heal_everything()
    return answers, events_of(stream)


async def watch_leaders(cluster: ProcessCluster, named: set[str]) -> None:
    while True:
        for node in cluster.nodes:
            answer = await seen(cluster, via=node)
            if answer is not None:
                named.add(answer.leader)
        await trio.sleep(0.2)


@pytest.mark.slow
async def test_isolate_leader_and_controller_only_composites_on_processes(
    tmp_path: Path,
) -> None:
    async with ProcessCluster(tmp_path, 3, quorum=True, settings=SETTINGS) as cluster:
        await start_cluster_with_topic(cluster)
        await settled(cluster, lambda s: len(s.isr) == 3)
        named: set[str] = set()  # every leader of t/0 any broker names meanwhile
        async with trio.open_nursery() as watching:
            watching.start_soon(watch_leaders, cluster, named)
            answers, events = await play(cluster, "isolate-leader", seed=1, duration_ms=9_000)
            # On a loaded machine the election the isolation caused may finish just after
            # the heal; without a fault no leader would change at all.
            with trio.move_on_after(10):
                while not named - {answers[0].leader if answers[0] else ""}:
                    await trio.sleep(0.2)
            watching.cancel_scope.cancel()
        (answer, start, stop) = (answers[0], events[0], events[1])
        assert answer is not None and start["f"] == "start-partition"
        # The leader, cut off from the brokers but not from the clients, past the session
        # timeout; by then the other two had elected another leader.
        assert start["value"]["resolved"] == [answer.leader]
        assert set(start["value"]["grudge"]) == set(cluster.nodes)
        assert (stop["time"] - start["time"]) / 1e9 > SESSION_MS / 1000
        assert named - {answer.leader}

        answers, events = await play(cluster, "controller-only", seed=2, duration_ms=7_000)
        answer, start = answers[0], events[0]
        assert answer is not None and start["f"] == "start-partition"
        (controller,) = start["value"]["resolved"]
        assert controller == answer.controller
        others = sorted(set(cluster.nodes) - {controller})
        expected = ({controller: others} if start["value"]["deaf"]
                    else {o: [controller] for o in others})
        assert start["value"]["grudge"] == expected
