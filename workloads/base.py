"""The contract between workloads and the runner: options, environment, the Workload protocol.

A workload drives client processes against a cluster and records every operation as a
DESIGN.md §4 history through a `HistoryRecorder`. The runner builds a `WorkloadEnv`
from its runtime (sim or process), calls `setup`, then `run` until a trio time, heals
the cluster, then `final_reads` until a deadline, and checks the history with the
workload's `checker_mode`.

Below the contract are the small helpers every workload shares: deriving per-process
rngs from `env.rng`, grouping topics by the bootstrap servers that reach them, and
pacing operations to `opts.rate`.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import trio

from workloads.adapters import (
    ClientSession,
    OpFailed,
    OpUnknown,
    ProducerSettings,
    SessionSpec,
    open_session,
)
from workloads.client import ConsumerConfig, KafkaClientError
from workloads.client.consumer import Consumer
from workloads.client.transport import Network
from workloads.recorder import HistoryRecorder, Retired
from workloads.txn_ops import MicroOps, perform_txn

CommitStrategy = Literal["before", "after", "auto"]
IsolationLevel = Literal["read_committed", "read_uncommitted"]


@dataclass(frozen=True)
class WorkloadOptions:
    """Knobs a run passes to a workload (Kafka names where Kafka has one).

    The run's settings validated every value (`harness.run_config`); this only carries
    them. The producer's knobs travel as one `ProducerSettings`, unchanged from here to
    whichever client library runs.
    """

    # The topics the runner created the cluster for.
    topics: tuple[str, ...] = ("t1", "t2", "t3")
    partitions: int = 2
    replication_factor: int = 1
    min_insync_replicas: int = 1
    producer: ProducerSettings = field(default_factory=ProducerSettings)
    request_timeout_ms: int = 2_000
    commit: CommitStrategy = "after"  # group workload
    rate: float = 50.0  # target client ops/s across all processes
    concurrency: int = 6  # client processes alive at once
    keys: int = 20  # distinct message keys
    crash_probability: float = 0.01  # per op, a client "crashes" (info, retired, replaced)
    # What consumers read: read_committed skips aborted and still-open transactions.
    isolation_level: IsolationLevel = "read_uncommitted"
    # Producers use transactions (txn and exactly-once always do; the queue workload
    # then makes each send its own transaction).
    transactional: bool = False
    # Planted weakness (exactly-once): commit input offsets with a plain consumer commit
    # after the transaction instead of inside it, so a crash between the two reprocesses.
    eos_offsets_outside_txn: bool = False
    # transaction.timeout.ms of transactional producers.
    transaction_timeout_ms: int = 10_000

    def __post_init__(self) -> None:
        if not self.topics:
            raise ValueError("a workload needs at least one topic")


@dataclass
class WorkloadEnv:
    """How a workload reaches the cluster; the runner builds it from the runtime."""

    # topic -> "host:port,..." bootstrap servers for that topic
    bootstrap_for: Callable[[str], str]
    # client endpoint name -> Network (sim: per client; process: TCP)
    network_for: Callable[[str], Network]
    clock_ms_for: Callable[[str], Callable[[], int]]  # client endpoint -> record-timestamp clock
    client_endpoints: Sequence[str]  # endpoint names clients may use (round-robin over them)
    rng: random.Random  # seeded; derive per-process rngs from it deterministically
    # "faultline" | "kafka-python" | "confluent-kafka" (the last two: process runtime only)
    client_library: str = "faultline"


class Workload(Protocol):
    """A workload: creates its topics, drives client processes, reads everything back."""

    name: str  # "queue" | "keyed-order" | "group"

    @property
    def checker_mode(self) -> str:
        """The checkers.anomalies mode its history is checked in: "assign", "subscribe"..."""
        ...

    async def setup(self, env: WorkloadEnv, opts: WorkloadOptions) -> None:
        """Create the workload's topics."""
        ...

    async def run(
        self, env: WorkloadEnv, opts: WorkloadOptions, recorder: HistoryRecorder, until: float
    ) -> None:
        """Main phase: run client processes until trio time `until`, every op recorded."""
        ...

    async def final_reads(
        self, env: WorkloadEnv, opts: WorkloadOptions, recorder: HistoryRecorder, deadline: float
    ) -> None:
        """After the runner healed all faults and waited for recovery: fresh consumers assign
        every log from the beginning and poll until caught up (to the end offsets seen at
        the start of this phase) or `deadline`."""
        ...


# -- helpers shared by the workloads ------------------------------------------------------


class RngSource:
    """Independent rngs per label, all determined by one draw from `env.rng`.

    Each process gets its own stream, so the randomness one process consumes does not
    shift another's choices when the schedule of operations changes.
    """

    def __init__(self, rng: random.Random, name: str) -> None:
        self._root = f"{rng.getrandbits(64)}/{name}"

    def rng(self, *labels: object) -> random.Random:
        """The rng for `labels` (string seeds hash with SHA-512: no PYTHONHASHSEED)."""
        return random.Random("/".join([self._root, *map(str, labels)]))


@dataclass(frozen=True)
class TopicGroup:
    """Topics one client session can reach through one bootstrap.

    With independent single-node brokers each topic lives on its own broker, so one
    consumer cannot span them; on a replicated cluster every topic shares a bootstrap
    and there is one group of all topics.
    """

    index: int
    bootstrap: str
    topics: tuple[str, ...]

    def logs(self, partitions: int) -> list[str]:
        """Every log of the group's topics, in order."""
        return [f"{t}/{p}" for t in self.topics for p in range(partitions)]


def topic_groups(env: WorkloadEnv, opts: WorkloadOptions) -> list[TopicGroup]:
    """Group `opts.topics` by the bootstrap servers that reach them, in topic order."""
    by_bootstrap: dict[str, list[str]] = {}
    for topic in opts.topics:
        by_bootstrap.setdefault(env.bootstrap_for(topic), []).append(topic)
    return [
        TopicGroup(i, bootstrap, tuple(topics))
        for i, (bootstrap, topics) in enumerate(by_bootstrap.items())
    ]


def endpoint_for(env: WorkloadEnv, slot: int) -> str:
    """The client endpoint of worker `slot` (round-robin over `env.client_endpoints`)."""
    if not env.client_endpoints:
        raise ValueError("WorkloadEnv.client_endpoints is empty: give at least one endpoint name")
    return env.client_endpoints[slot % len(env.client_endpoints)]


async def pace(rng: random.Random, opts: WorkloadOptions, workers: int | None = None) -> None:
    """Sleep so that `workers` looping processes together make about `opts.rate` ops/s.

    The jitter (uniform 0.5x..1.5x) keeps processes from marching in lockstep; it comes
    from the process's seeded rng, so the sim replays it exactly.
    """
    n = opts.concurrency if workers is None else workers
    await trio.sleep(n / opts.rate * rng.uniform(0.5, 1.5))


def session_spec(
    opts: WorkloadOptions, bootstrap: str, client_id: str, group: str | None = None, **extra: Any
) -> SessionSpec:
    """The session settings for `opts` (producer and consumer knobs under Kafka's names)."""
    return SessionSpec(
        bootstrap=bootstrap,
        client_id=client_id,
        group=group,
        producer=opts.producer,
        request_timeout_ms=opts.request_timeout_ms,
        isolation_level=extra.pop("isolation_level", opts.isolation_level),
        # --transactional without an id of the workload's choosing: one per client.
        transactional_id=extra.pop(
            "transactional_id", client_id if opts.transactional else None
        ),
        transaction_timeout_ms=opts.transaction_timeout_ms,
        **extra,
    )


# How long setup keeps trying to create topics while brokers finish starting.
SETUP_TIMEOUT_S = 30.0


async def create_topics(env: WorkloadEnv, opts: WorkloadOptions) -> None:
    """Create every topic of `opts` on the brokers `env.bootstrap_for` names (idempotent).

    Raises WorkloadSetupError when a topic cannot be created within SETUP_TIMEOUT_S.
    """
    endpoint = endpoint_for(env, 0)
    configs = {"min.insync.replicas": str(opts.min_insync_replicas)}
    for group in topic_groups(env, opts):
        config = ConsumerConfig(
            bootstrap_servers=group.bootstrap.split(","),
            client_id="faultline-setup",
            group_id=None,
            request_timeout_ms=opts.request_timeout_ms,
            max_block_ms=opts.request_timeout_ms * 2,
            socket_connection_setup_timeout_ms=opts.request_timeout_ms,
        )
        deadline = trio.current_time() + SETUP_TIMEOUT_S
        for topic in group.topics:
            while True:
                try:
                    async with Consumer(
                        config, network=env.network_for(endpoint), rng=random.Random(topic)
                    ) as admin:
                        await admin.cluster.create_topic(
                            topic, opts.partitions, opts.replication_factor, configs
                        )
                    break
                except KafkaClientError as exc:
                    if trio.current_time() >= deadline:
                        raise WorkloadSetupError(
                            f"could not create topic {topic!r} ({opts.partitions} partitions, "
                            f"replication factor {opts.replication_factor}) through "
                            f"{group.bootstrap} within {SETUP_TIMEOUT_S:.0f} s: {exc}"
                        ) from exc
                    await trio.sleep(0.5)


class WorkloadSetupError(Exception):
    """A workload could not prepare the cluster (its message says what to fix)."""


# Final reads poll in large batches: they read every log from the beginning.
_FINAL_POLL_RECORDS = 1000
_FINAL_POLL_WAIT_S = 0.5


async def read_everything(
    env: WorkloadEnv,
    opts: WorkloadOptions,
    recorder: HistoryRecorder,
    deadline: float,
    rngs: RngSource,
    isolation_level: IsolationLevel | None = None,
) -> None:
    """The final phase every workload shares: for each topic group a fresh process
    assigns every log from the beginning and polls until its position reaches the end
    offsets seen when it started and every offset a send was acknowledged at, or
    `deadline`. (A leader elected after faults may hold committed records above its
    high watermark until its ISR grows back.) A process retired by an `info` is
    replaced and the replacement starts over from the beginning. `isolation_level`
    overrides the run's (transactional workloads read back what committed)."""
    level = opts.isolation_level if isolation_level is None else isolation_level
    async with trio.open_nursery() as nursery:
        for group in topic_groups(env, opts):
            nursery.start_soon(_read_group, env, opts, recorder, deadline, rngs, group, level)


async def _read_group(
    env: WorkloadEnv,
    opts: WorkloadOptions,
    recorder: HistoryRecorder,
    deadline: float,
    rngs: RngSource,
    group: TopicGroup,
    isolation_level: IsolationLevel,
) -> None:
    logs = group.logs(opts.partitions)
    ends: dict[str, int] | None = None
    with trio.move_on_at(deadline):
        while True:
            process = recorder.new_process()
            spec = session_spec(
                opts, group.bootstrap, f"final-{process}", max_poll_records=_FINAL_POLL_RECORDS,
                isolation_level=isolation_level,
            )
            endpoint = endpoint_for(env, group.index)
            try:
                async with open_session(env, endpoint, spec, rngs.rng("final", process)) as s:
                    assign = {"logs": logs, "seek": "beginning"}
                    ok, _ = await recorder.perform(
                        process,
                        "assign",
                        assign,
                        lambda: _assign(s, logs),
                        timeout_s=spec.admin_timeout_s,
                    )
                    if not ok:
                        await trio.sleep(_FINAL_POLL_WAIT_S)
                        continue
                    if ends is None:
                        try:
                            ends = await s.end_offsets(logs)
                            acked = recorder.acknowledged_ends
                            ends = {log: max(end, acked.get(log, 0)) for log, end in ends.items()}
                        except (OpUnknown, OpFailed):
                            await trio.sleep(_FINAL_POLL_WAIT_S)
                            continue
                    while not await _caught_up(s, ends):
                        await recorder.perform(
                            process,
                            "poll",
                            None,
                            lambda: s.poll(_FINAL_POLL_WAIT_S),
                            timeout_s=spec.poll_timeout_s(_FINAL_POLL_WAIT_S),
                        )
                    return
            except Retired:
                await trio.sleep(_FINAL_POLL_WAIT_S)


async def _assign(session: ClientSession, logs: list[str]) -> dict[str, Any]:
    await session.assign(logs, "beginning")
    return {"logs": logs, "seek": "beginning"}


async def _caught_up(session: ClientSession, ends: dict[str, int]) -> bool:
    for log, end in ends.items():
        try:
            if await session.position(log) < end:
                return False
        except (OpUnknown, OpFailed):
            return False
    return True


# A body runs one process over its session until `until`; True means "crash now".
ProcessBody = Callable[[ClientSession, int, random.Random], Awaitable[bool]]


async def run_slot(
    env: WorkloadEnv,
    recorder: HistoryRecorder,
    until: float,
    rngs: RngSource,
    slot: int,
    spec_for: Callable[[int], SessionSpec],
    body: ProcessBody,
) -> None:
    """Keep one process alive in `slot` until `until`, replacing each one that retires.

    A process retires when an operation completes `info` (`Retired`) or when `body`
    returns True: then it crashes — the `crash` op is invoked, the session is dropped
    without any goodbye (no LeaveGroup, no flush) and the op completes `info`. A body
    that returns False at `until` closes its session politely.
    """
    endpoint = endpoint_for(env, slot)
    while trio.current_time() < until:
        process = recorder.new_process()
        rng = rngs.rng("process", process)
        crashed = False
        try:
            async with open_session(
                env, endpoint, spec_for(process), rngs.rng("client", process)
            ) as session:
                crashed = await body(session, process, rng)
                if crashed:
                    recorder.invoke(process, "crash", None)
                    session.crash()
        except Retired:
            # A retired client's replacement waits a moment, as a restarted one would.
            await trio.sleep(rng.uniform(0.1, 0.5))
        if crashed:
            recorder.complete(process, "info", "crash", None, error="client crashed")


async def send_transactionally(
    recorder: HistoryRecorder,
    session: ClientSession,
    process: int,
    messages: list[dict[str, Any]],
    spec: SessionSpec,
) -> None:
    """Send `messages` as one transaction of their own, recorded as a `txn` operation
    (the queue workload's sends under --transactional). Raises `Retired` after `info`."""
    ops: MicroOps = [["send", m] for m in messages]

    async def body(ops: MicroOps) -> bool:
        for i, sent in enumerate(await session.send(messages)):
            ops[i] = ["send", sent]
        return True

    await perform_txn(recorder, session, process, ops, body,
                      timeout_s=spec.send_timeout_s + 2 * spec.admin_timeout_s)
