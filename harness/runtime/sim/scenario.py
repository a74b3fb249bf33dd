"""A reusable sim scenario: producers and pollers on 3 brokers under a fault rotation.

`faults_scenario` is what `faultline sim`, the determinism tests and the benchmark
run: for every broker node a topic that lives on it (`t1` on n1, ...), producer
clients sending unique integer values and consumer clients that assign that topic's
partitions from the beginning and poll, all recording DESIGN.md §4 events through a
`HistoryWriter`, while a nemesis task breaks the cluster through its FaultTarget
primitives on a fixed rotation (partition, kill, pause, power loss, clock skew, link
faults, connection resets), then heals everything for a quiet recovery period.

Only simulated time and seeded randomness reach the history, so equal seeds write
equal bytes.
"""

from __future__ import annotations

import io
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from history.writer import HistoryWriter
from nemesis.target import LinkFault
from workloads.client import (
    ConsumerConfig,
    DefiniteFailure,
    KafkaClientError,
    Producer,
    ProducerConfig,
    TopicPartition,
)
from workloads.client.consumer import Consumer

from .cluster import SimCluster
from .run import SimResult, SimSettings, run_sim
from .scheduler import derive_rng

# The brokers flush every 500 ms of data, so a power loss costs the last moments'
# acknowledged writes — the kind of loss the checkers exist to find.
SCENARIO_BROKER_SETTINGS: dict[str, object] = {
    "num.partitions": 2,
    "log.flush.interval.ms": 500,
    "log.flush.scheduler.interval.ms": 100,
}


@dataclass
class ScenarioOptions:
    """Knobs of `faults_scenario`; durations are simulated seconds."""

    duration_s: float = 20.0
    recovery_s: float = 3.0
    producers_per_node: int = 1
    consumers_per_node: int = 1
    ops_per_second: float = 60.0  # across all clients
    fault_interval_s: float = 2.0
    faults: bool = True
    request_timeout_ms: int = 1_000
    delivery_timeout_ms: int = 3_000


@dataclass
class _Recorder:
    """Shared state of the workload: the history, value and process counters."""

    writer: HistoryWriter
    next_value: int = 0
    next_process: int = 0
    stopping: bool = False
    ops: int = 0
    pending: dict[str, int] = field(default_factory=dict)

    def value(self) -> int:
        self.next_value += 1
        return self.next_value

    def process(self) -> int:
        self.next_process += 1
        return self.next_process - 1

    def record(self, process: int | str, type: str, f: str, value: Any, **extra: Any) -> None:
        if type != "invoke" and process != "nemesis":
            self.ops += 1
        self.writer.append(process, type, f, value, time=_now_ns(), **extra)


def _now_ns() -> int:
    return round(trio.current_time() * 1_000_000_000)


async def _pause(cluster: SimCluster, interval_s: float) -> None:
    """Wait `interval_s` before the next operation without a cancel scope of its own.

    At hundreds of operations per simulated second a trio sleep per operation (a
    cancel scope whose expiry throws Cancelled) is a measurable share of the run: the
    network's agenda sleeps for free.
    """
    agenda = cluster.network.agenda
    if agenda is not None:
        await agenda.sleep_until(trio.current_time() + interval_s)
    else:
        await trio.sleep(interval_s)


class _OpTimeout:
    """Cancels a client's session scope when its operation under way is past its deadline.

    Each client runs its operations inside one cancel scope, and this times the one
    under way. A cancel scope per operation (created, entered with a deadline, left)
    or even a timer per operation is a measurable share of the run at hundreds of
    operations per second, and operations end long before their deadlines: so
    `start` only notes the deadline, and one agenda timer per client, re-armed when
    it fires, checks the operation under way then. Without an agenda, the scope's
    own deadline is moved instead.
    """

    def __init__(self, cluster: SimCluster, scope: trio.CancelScope) -> None:
        self._agenda = cluster.network.agenda
        self._scope = scope
        self._deadline = math.inf  # of the operation under way
        self._timer_at = math.inf  # when the armed timer fires (inf: none armed)

    def start(self, deadline: float) -> None:
        """An operation starts: cancel the scope at `deadline` unless `stop` comes first."""
        self._deadline = deadline
        if self._agenda is None:
            self._scope.deadline = deadline
        elif deadline < self._timer_at:
            self._arm(deadline)

    def stop(self) -> None:
        """The operation ended in time."""
        self._deadline = math.inf
        if self._agenda is None:
            self._scope.deadline = math.inf

    def _arm(self, at: float) -> None:
        assert self._agenda is not None
        self._timer_at = at
        self._agenda.call_at(at, self._fire)

    def _fire(self) -> None:
        self._timer_at = math.inf
        if self._deadline <= trio.current_time():
            self._scope.cancel()
        elif self._deadline < math.inf:
            self._arm(self._deadline)  # a later operation is under way: time that one


class _Retire(Exception):
    """The process got an `info` completion: it leaves, a new process number replaces it."""


async def _producer(
    cluster: SimCluster,
    rec: _Recorder,
    client: str,
    node: str,
    topic: str,
    opts: ScenarioOptions,
    interval_s: float,
) -> None:
    network = cluster.client_network(client)
    clock = cluster.client_clock(client)
    process = rec.process()
    config = ProducerConfig(
        bootstrap_servers=[cluster.node(node).address],
        client_id=client,
        request_timeout_ms=opts.request_timeout_ms,
        delivery_timeout_ms=opts.delivery_timeout_ms,
        max_block_ms=opts.delivery_timeout_ms,
        socket_connection_setup_timeout_ms=opts.request_timeout_ms,
        linger_ms=0,
    )
    while not rec.stopping:
        try:
            async with Producer(
                config,
                network=network,
                rng=cluster.client_rng(client, str(process)),
                clock_ms=clock.now_ms,
            ) as producer:
                # Cancelled (by `_OpTimeout`) only when an operation timed out.
                with trio.CancelScope() as timeouts:
                    op_timeout = _OpTimeout(cluster, timeouts)
                    while not rec.stopping:
                        value = rec.value()
                        key = f"k{value % 5}"
                        message = {"topic": topic, "key": key, "value": value}
                        rec.record(process, "invoke", "send", [message])
                        try:
                            delivery = await producer.send(topic, str(value).encode(), key.encode())
                        except KafkaClientError as exc:
                            # Never queued, so never sent.
                            error = type(exc).__name__
                            rec.record(process, "fail", "send", [message], error=error)
                            await trio.sleep(interval_s)
                            continue
                        deadline = trio.current_time() + opts.delivery_timeout_ms / 1000 + 1
                        op_timeout.start(deadline)
                        try:
                            outcome: Any = await delivery.wait()
                        except DefiniteFailure as exc:
                            outcome = exc
                        except KafkaClientError as exc:
                            rec.record(process, "info", "send", [message], error=type(exc).__name__)
                            raise _Retire from exc
                        finally:
                            op_timeout.stop()
                        if isinstance(outcome, DefiniteFailure):
                            error = type(outcome).__name__
                            rec.record(process, "fail", "send", [message], error=error)
                        else:
                            offset = outcome.offset
                            sent = {**message, "partition": outcome.partition, "offset": offset}
                            rec.record(process, "ok", "send", [sent])
                        await _pause(cluster, interval_s)
                if timeouts.cancelled_caught:
                    rec.record(process, "info", "send", [message], error="timeout")
                    raise _Retire
        except _Retire:
            process = rec.process()
        except KafkaClientError:
            pass  # bootstrap failed: no operation was under way, try again
        await trio.sleep(0.5)


async def _consumer(
    cluster: SimCluster,
    rec: _Recorder,
    client: str,
    node: str,
    topic: str,
    opts: ScenarioOptions,
    interval_s: float,
) -> None:
    network = cluster.client_network(client)
    partitions = int(SCENARIO_BROKER_SETTINGS["num.partitions"])  # type: ignore[call-overload]
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    logs = [str(tp) for tp in tps]
    config = ConsumerConfig(
        bootstrap_servers=[cluster.node(node).address],
        client_id=client,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        request_timeout_ms=opts.request_timeout_ms,
        max_block_ms=opts.delivery_timeout_ms,
        socket_connection_setup_timeout_ms=opts.request_timeout_ms,
        fetch_max_wait_ms=100,
    )
    poll_timeout_s = 0.2
    while not rec.stopping:
        process = rec.process()
        try:
            async with Consumer(
                config, network=network, rng=cluster.client_rng(client, str(process))
            ) as consumer:
                assign = {"logs": logs, "seek": "beginning"}
                rec.record(process, "invoke", "assign", assign)
                consumer.assign(tps)
                consumer.seek_to_beginning(tps)
                rec.record(process, "ok", "assign", assign)
                # Cancelled (by `_OpTimeout`) only when a poll timed out.
                with trio.CancelScope() as timeouts:
                    op_timeout = _OpTimeout(cluster, timeouts)
                    while not rec.stopping:
                        rec.record(process, "invoke", "poll", None)
                        timeout_s = opts.request_timeout_ms / 1000 + poll_timeout_s + 1
                        op_timeout.start(trio.current_time() + timeout_s)
                        try:
                            records = await consumer.poll(poll_timeout_s)
                        except KafkaClientError as exc:
                            rec.record(process, "info", "poll", None, error=type(exc).__name__)
                            raise _Retire from exc
                        finally:
                            op_timeout.stop()
                        polled: dict[str, list[list[Any]]] = {}
                        for r in records:
                            entry = [
                                r.offset,
                                None if r.key is None else r.key.decode(),
                                int(r.value or b"0"),
                            ]
                            polled.setdefault(f"{r.topic}/{r.partition}", []).append(entry)
                        rec.record(process, "ok", "poll", polled)
                        await _pause(cluster, interval_s)
                if timeouts.cancelled_caught:
                    rec.record(process, "info", "poll", None, error="timeout")
                    raise _Retire
        except _Retire:
            pass
        except KafkaClientError:
            pass  # bootstrap failed before any operation; the process number is unused
        await trio.sleep(0.5)


def _client_of(cluster: SimCluster, node: str) -> list[str]:
    return [c for c in cluster.clients if c.endswith(f"@{node}")]


async def _nemesis(cluster: SimCluster, rec: _Recorder, seed: int, opts: ScenarioOptions) -> None:
    """Break the cluster on a fixed rotation of faults; targets drawn from the seed."""
    rng = derive_rng(seed, "nemesis")
    nodes = list(cluster.nodes)

    def log(f: str, value: Any) -> None:
        rec.record("nemesis", "info", f, value)

    async def partition(node: str) -> Callable[[], Awaitable[None]]:
        others = [n for n in (*nodes, *cluster.clients) if n != node]
        for other in others:
            await cluster.block(node, other)
            await cluster.block(other, node)
        log("start-partition", {"isolated": [node], "from": others})

        async def heal() -> None:
            await cluster.heal_network()
            log("stop-partition", None)

        return heal

    async def kill(node: str) -> Callable[[], Awaitable[None]]:
        await cluster.kill(node)
        log("kill", [node])

        async def restart() -> None:
            await cluster.restart(node)
            log("restart", [node])

        return restart

    async def power_loss(node: str) -> Callable[[], Awaitable[None]]:
        await cluster.power_loss(node)
        log("power-loss", [node])

        async def restart() -> None:
            await cluster.restart(node)
            log("restart", [node])

        return restart

    async def pause(node: str) -> Callable[[], Awaitable[None]]:
        await cluster.pause(node)
        log("pause", [node])

        async def resume() -> None:
            await cluster.resume(node)
            log("resume", [node])

        return resume

    async def clock(node: str) -> Callable[[], Awaitable[None]]:
        delta = rng.choice([-1, 1]) * rng.randrange(1_000, 120_000)
        await cluster.bump_clock(node, delta)
        log("clock-skew", {"node": node, "delta_ms": delta})

        async def reset() -> None:
            await cluster.reset_clock(node)
            log("clock-skew", {"node": node, "delta_ms": 0})

        return reset

    async def slow(node: str) -> Callable[[], Awaitable[None]]:
        fault = LinkFault(latency_ms=50, jitter_ms=20, bandwidth_bytes_per_s=200_000)
        for client in _client_of(cluster, node):
            await cluster.set_link_fault(node, client, fault)
            await cluster.set_link_fault(client, node, fault)
        log(
            "start-link-fault",
            {"node": node, "latency_ms": 50, "jitter_ms": 20, "bandwidth_bytes_per_s": 200_000},
        )

        async def restore() -> None:
            await cluster.heal_network()
            log("stop-link-fault", {"node": node})

        return restore

    async def reset(node: str) -> Callable[[], Awaitable[None]]:
        await cluster.reset_connections(node)
        log("reset-connections", [node])

        async def nothing() -> None:
            pass

        return nothing

    rotation = [partition, kill, pause, power_loss, clock, slow, reset]
    step = 0
    while not rec.stopping:
        await trio.sleep(opts.fault_interval_s)
        if rec.stopping:
            break
        fault = rotation[step % len(rotation)]
        step += 1
        # Only the waits are cancellable: a fault or an undo cut short (a restart
        # half done) would leave the cluster in a state the final heal cannot see.
        with trio.CancelScope(shield=True):
            undo = await fault(rng.choice(nodes))
        await trio.sleep(opts.fault_interval_s)
        with trio.CancelScope(shield=True):
            await undo()


async def _heal_everything(cluster: SimCluster, rec: _Recorder) -> None:
    await cluster.heal_network()
    for node in cluster.nodes:
        await cluster.resume(node)
        await cluster.reset_clock(node)
        await cluster.restart(node)
    rec.record("nemesis", "info", "heal", {"nodes": list(cluster.nodes)})


async def faults_scenario(
    cluster: SimCluster, writer: HistoryWriter, seed: int, opts: ScenarioOptions | None = None
) -> int:
    """Run the workload under the fault rotation; returns the number of completed ops."""
    opts = opts or ScenarioOptions()
    rec = _Recorder(writer)
    clients_total = len(cluster.nodes) * (opts.producers_per_node + opts.consumers_per_node)
    interval_s = clients_total / opts.ops_per_second
    for node in cluster.nodes:
        topic = f"t{node.removeprefix('n')}"
        cluster.topic_homes[topic] = node
    async with trio.open_nursery() as nursery:
        for node in cluster.nodes:
            topic = f"t{node.removeprefix('n')}"
            for i in range(opts.producers_per_node):
                name = f"p{i}@{node}"
                cluster.client_network(name)
                nursery.start_soon(_producer, cluster, rec, name, node, topic, opts, interval_s)
            for i in range(opts.consumers_per_node):
                name = f"c{i}@{node}"
                cluster.client_network(name)
                nursery.start_soon(_consumer, cluster, rec, name, node, topic, opts, interval_s)
        nemesis_scope = trio.CancelScope()
        nemesis_stopped = trio.Event()

        async def nemesis() -> None:
            try:
                with nemesis_scope:
                    await _nemesis(cluster, rec, seed, opts)
            finally:
                nemesis_stopped.set()

        if opts.faults:
            nursery.start_soon(nemesis)
        else:
            nemesis_stopped.set()
        await trio.sleep(opts.duration_s)
        # Stop breaking things (a fault or undo under way finishes first), then heal.
        nemesis_scope.cancel()
        await nemesis_stopped.wait()
        await _heal_everything(cluster, rec)
        await trio.sleep(opts.recovery_s)
        rec.stopping = True
    return rec.ops


def run_faults_scenario(
    seed: int,
    opts: ScenarioOptions | None = None,
    settings: SimSettings | None = None,
) -> tuple[bytes, SimResult[int]]:
    """Run `faults_scenario` in a fresh simulation; returns the history bytes and the result."""
    stream = io.BytesIO()
    writer = HistoryWriter(stream)
    settings = settings or SimSettings(broker_settings=SCENARIO_BROKER_SETTINGS)

    async def scenario(cluster: SimCluster) -> int:
        return await faults_scenario(cluster, writer, seed, opts)

    result = run_sim(scenario, seed, settings)
    return stream.getvalue(), result
