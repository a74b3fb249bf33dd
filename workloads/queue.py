"""The `queue` workload: Jepsen's Kafka queue test.

`opts.concurrency` client processes each loop over randomly chosen operations:
send one or two unique values to random keys, poll, or change what they consume —
`assign` a random subset of logs (seeking to the beginning or to the group's committed
offsets) or `subscribe` to the topics as a member of a consumer group. Subscribed
processes commit what each poll returned once it is recorded (after processing), so a
member that takes over a log resumes where the group left it. With probability
`opts.crash_probability` per operation a process crashes: its clients are dropped
without LeaveGroup or flush, a `crash` op completes `info`, and a new process number
takes over the slot. Any `info` completion retires the process the same way.

Some sends are pipelined (faultline's own client only): the process sends a burst to one
key, hence one partition, from several logical processes ("lanes") that share its
producer, each lane starting a moment after the last so each send is its own batch. The
producer keeps up to max.in.flight.requests.per.connection batches of that partition in
flight at once, so an idempotent producer's sequence window is exercised under faults.
Each lane is a history process of its own (one operation at a time); a lane whose send
completes `info` retires alone and a new process number takes its place.

`final_reads` hands over to fresh processes that assign every log from the beginning
and poll until they reach the end offsets seen when the phase began.

checker_mode: "subscribe" once any process has invoked a subscribe (a rebalance may
move a log between a process's polls, so Jepsen allows poll-skip and nonmonotonic-poll
there), otherwise "assign". The runner reads it after `run`.

A process works on the topics that share its bootstrap (see `base.topic_groups`); slot
k uses topic group k mod the number of groups (one group on a replicated cluster, one
per broker when each topic lives alone on its own broker).

With `opts.transactional` each send is a transaction of its own (a `txn` operation of
its sends, see `base.send_transactionally`).
"""

from __future__ import annotations

import random
from typing import Any

import trio

from workloads.adapters import ClientSession, SessionSpec
from workloads.base import (
    RngSource,
    TopicGroup,
    WorkloadEnv,
    WorkloadOptions,
    create_topics,
    pace,
    read_everything,
    run_slot,
    send_transactionally,
    session_spec,
    topic_groups,
)
from workloads.recorder import HistoryRecorder, Retired

# How an operation is chosen after the crash draw: cumulative probabilities.
SEND_P = 0.5
POLL_P = 0.92  # poll in (SEND_P, POLL_P], change of assignment above
# A change of assignment subscribes with this probability, else assigns.
SUBSCRIBE_P = 0.4
POLL_WAIT_S = 0.2
# Share of sends that go out as a pipelined burst (see the module docstring), and the
# pause between two lanes' sends of a burst: long enough for the producer's sender to
# drain the previous lane's batch, so the next send opens a batch of its own.
PIPELINE_P = 0.3
LANE_STAGGER_S = 0.002


def group_id(group: TopicGroup) -> str:
    """The consumer group of a topic group's subscribers."""
    return f"queue-{group.index}"


class QueueWorkload:
    """Jepsen's Kafka queue workload (see the module docstring)."""

    name = "queue"

    def __init__(self) -> None:
        self.subscribed = False

    @property
    def checker_mode(self) -> str:
        """"subscribe" once any process subscribed, else "assign"."""
        return "subscribe" if self.subscribed else "assign"

    async def setup(self, env: WorkloadEnv, opts: WorkloadOptions) -> None:
        """Create the topics."""
        await create_topics(env, opts)

    async def run(
        self, env: WorkloadEnv, opts: WorkloadOptions, recorder: HistoryRecorder, until: float
    ) -> None:
        """Run `opts.concurrency` process slots until trio time `until`."""
        rngs = RngSource(env.rng, self.name)
        groups = topic_groups(env, opts)
        async with trio.open_nursery() as nursery:
            # At least one process per topic group, so every topic is written and read.
            for slot in range(max(opts.concurrency, len(groups))):
                group = groups[slot % len(groups)]
                nursery.start_soon(self._slot, env, opts, recorder, until, rngs, slot, group)

    async def final_reads(
        self, env: WorkloadEnv, opts: WorkloadOptions, recorder: HistoryRecorder, deadline: float
    ) -> None:
        """Fresh processes read every log from the beginning until caught up or `deadline`."""
        await read_everything(env, opts, recorder, deadline, RngSource(env.rng, "final"))

    async def _slot(
        self,
        env: WorkloadEnv,
        opts: WorkloadOptions,
        recorder: HistoryRecorder,
        until: float,
        rngs: RngSource,
        slot: int,
        group: TopicGroup,
    ) -> None:
        """One slot: a process at a time; each retired process is replaced by a new one."""

        def spec_for(process: int) -> SessionSpec:
            return session_spec(opts, group.bootstrap, f"queue-{process}", group=group_id(group))

        # Third-party sessions are not known to take concurrent sends, and a transaction's
        # sends go one at a time inside it.
        pipelined = env.client_library == "faultline" and not opts.transactional

        async def body(session: ClientSession, process: int, rng: random.Random) -> bool:
            client = _QueueProcess(
                self, session, opts, recorder, process, rng, group, spec_for(process)
            )
            client.pipelined = pipelined
            return await client.run(until)

        await run_slot(env, recorder, until, rngs, slot, spec_for, body)


class _QueueProcess:
    """The operations of one process over its session."""

    def __init__(
        self,
        workload: QueueWorkload,
        session: ClientSession,
        opts: WorkloadOptions,
        recorder: HistoryRecorder,
        process: int,
        rng: random.Random,
        group: TopicGroup,
        spec: SessionSpec,
    ) -> None:
        self.workload = workload
        self.session = session
        self.opts = opts
        self.recorder = recorder
        self.process = process
        self.rng = rng
        self.group = group
        self.spec = spec
        self.mode: str | None = None  # "assign" | "subscribe" once one completed ok
        self.pipelined = False  # whether sends may go out as pipelined bursts
        # Process numbers of the extra lanes of a burst (lane 0 is `process` itself);
        # None where a lane retired and awaits a new number.
        self.lanes: list[int | None] = []

    async def run(self, until: float) -> bool:
        """Operate until `until`; True when the process decided to crash."""
        await self.change_assignment()
        while True:
            await pace(self.rng, self.opts)
            if trio.current_time() >= until:
                return False
            if self.rng.random() < self.opts.crash_probability:
                return True
            r = self.rng.random()
            if r < SEND_P:
                await self.send()
            elif r < POLL_P and self.mode is not None:
                await self.poll()
            else:
                await self.change_assignment()

    async def send(self) -> None:
        depth = self.spec.producer.max_in_flight
        if self.pipelined and depth > 1 and self.rng.random() < PIPELINE_P:
            await self.pipelined_send(self.rng.randint(2, depth))
            return
        count = self.rng.choice((1, 1, 2))
        messages = [
            {
                "topic": self.rng.choice(self.group.topics),
                "key": f"k{self.rng.randrange(self.opts.keys)}",
                "value": self.recorder.next_value(),
            }
            for _ in range(count)
        ]
        if self.opts.transactional:
            await send_transactionally(self.recorder, self.session, self.process, messages,
                                       self.spec)
            return
        await self.recorder.perform(
            self.process,
            "send",
            messages,
            lambda: self.session.send(messages),
            timeout_s=self.spec.send_timeout_s,
        )

    async def pipelined_send(self, depth: int) -> None:
        """`depth` lanes each send one message to one key, staggered so each is a batch.

        Raises Retired after the burst when lane 0 (this process) completed `info`.
        """
        topic = self.rng.choice(self.group.topics)
        key = f"k{self.rng.randrange(self.opts.keys)}"
        while len(self.lanes) < depth - 1:
            self.lanes.append(None)
        retired: list[Retired] = []

        async def lane(index: int, process: int) -> None:
            message = {"topic": topic, "key": key, "value": self.recorder.next_value()}
            try:
                await self.recorder.perform(
                    process,
                    "send",
                    [message],
                    lambda: self.session.send([message]),
                    timeout_s=self.spec.send_timeout_s,
                )
            except Retired as exc:
                if index == 0:
                    retired.append(exc)
                else:
                    self.lanes[index - 1] = None

        async with trio.open_nursery() as nursery:
            for index in range(depth):
                if index == 0:
                    process = self.process
                else:
                    assigned = self.lanes[index - 1]
                    if assigned is None:
                        assigned = self.lanes[index - 1] = self.recorder.new_process()
                    process = assigned
                    await trio.sleep(LANE_STAGGER_S)
                nursery.start_soon(lane, index, process)
        if retired:
            raise retired[0]

    async def poll(self) -> None:
        ok, polled = await self.recorder.perform(
            self.process,
            "poll",
            None,
            lambda: self.session.poll(POLL_WAIT_S),
            timeout_s=self.spec.poll_timeout_s(POLL_WAIT_S),
            rebalance=self.session.take_rebalance,
        )
        if ok and polled and self.mode == "subscribe":
            # Commit after processing: the poll is recorded, now the group moves on.
            offsets = {log: records[-1][0] + 1 for log, records in sorted(polled.items())}
            await self.recorder.perform(
                self.process,
                "commit",
                offsets,
                lambda: self._commit(offsets),
                timeout_s=self.spec.admin_timeout_s,
                rebalance=self.session.take_rebalance,
            )

    async def _commit(self, offsets: dict[str, int]) -> dict[str, int]:
        await self.session.commit(offsets)
        return offsets

    async def change_assignment(self) -> None:
        if self.rng.random() < SUBSCRIBE_P:
            topics = list(self.group.topics)
            value: dict[str, Any] = {"topics": topics, "group": group_id(self.group)}
            self.workload.subscribed = True

            async def subscribe() -> dict[str, Any]:
                await self.session.subscribe(value["topics"], value["group"])
                return value

            ok, _ = await self.recorder.perform(
                self.process, "subscribe", value, subscribe, timeout_s=self.spec.admin_timeout_s
            )
            # A failed change may have closed the old consumer: poll nothing until one works.
            self.mode = "subscribe" if ok else None
            return
        logs = self.group.logs(self.opts.partitions)
        chosen = sorted(self.rng.sample(logs, self.rng.randint(1, len(logs))))
        value = {"logs": chosen, "seek": self.rng.choice(("beginning", "committed"))}

        async def assign() -> dict[str, Any]:
            await self.session.assign(value["logs"], value["seek"])
            return value

        ok, _ = await self.recorder.perform(
            self.process, "assign", value, assign, timeout_s=self.spec.admin_timeout_s
        )
        self.mode = "assign" if ok else None
