"""The `exactly-once` workload: consume-transform-produce in Kafka transactions.

Per topic group (see `base.topic_groups`): the first topic is the input, the second the
output (a group of one topic gets an output topic `<input>-out` of its own).

- A feeder process sends unique values to random keys of the input topic (plain,
  idempotent `send` operations).
- `opts.concurrency - 1` member slots (at least two) run consumer-group members of group
  `eos-<n>` subscribed to the input, each with a transactional producer whose
  transactional.id belongs to its slot (`eos-<n>-<slot>`). Each transaction polls the
  input, sends one output record per input record (same key, a new unique value,
  `"input": <input value>`) and commits the input offsets inside the transaction with
  send_offsets_to_transaction — all recorded as one `txn` operation
  (`checkers/exactly_once.py` documents the shape).
- Members crash (`opts.crash_probability` per transaction: no goodbye, replaced) and
  turn zombie (`ZOMBIE_P`): the slot starts the member's replacement, which fences the
  old instance by initialising the same transactional.id, while the old one goes on
  until the broker refuses it (`TxnFatal`: `info`). Every join and leave rebalances the
  group. After an aborted transaction a member ends its session (its consumer's
  position is past what it polled) and a new process resumes from the group's
  committed offsets.
- `opts.eos_offsets_outside_txn` plants a weakness: the offsets are committed with a
  plain consumer commit after the transaction commits, and a member may crash in
  between (`WEAK_CRASH_P`), so the next owner of the input transforms those records
  again: the checker must report eos-duplicate.

`final_reads` reads the input and output logs from the beginning with read_committed.
"""

from __future__ import annotations

import random
from dataclasses import replace

import trio

from workloads.adapters import ClientSession, SessionSpec, open_session
from workloads.base import (
    RngSource,
    TopicGroup,
    WorkloadEnv,
    WorkloadOptions,
    WorkloadSetupError,
    create_topics,
    endpoint_for,
    pace,
    read_everything,
    session_spec,
    topic_groups,
)
from workloads.recorder import HistoryRecorder, Retired
from workloads.txn_ops import MicroOps, perform_txn

POLL_WAIT_S = 0.2
# Chance per transaction that a member hands over to a replacement and goes on as a zombie.
ZOMBIE_P = 0.02
# How long a zombie goes on at most if the broker never fences it.
ZOMBIE_LIFETIME_S = 5.0
# Planted weakness: chance of crashing between the transaction and the offset commit.
WEAK_CRASH_P = 0.2
MIN_MEMBERS = 2


class ExactlyOnceWorkload:
    """Consume-transform-produce with transactions (see the module docstring)."""

    name = "exactly-once"

    @property
    def checker_mode(self) -> str:
        """Members subscribe: "subscribe"."""
        return "subscribe"

    async def setup(self, env: WorkloadEnv, opts: WorkloadOptions) -> None:
        """Create the input and output topics."""
        for group in topic_groups(env, opts):
            source, sink = _pipeline(group)
            await create_topics(_env_for(env, group, sink), replace(opts, topics=(source, sink)))

    async def run(
        self, env: WorkloadEnv, opts: WorkloadOptions, recorder: HistoryRecorder, until: float
    ) -> None:
        """Run a feeder and the member slots of every topic group until `until`."""
        rngs = RngSource(env.rng, self.name)
        groups = topic_groups(env, opts)
        members = max(MIN_MEMBERS, opts.concurrency - 1)
        async with trio.open_nursery() as nursery:
            for group in groups:
                pipe = _Pipeline(env, opts, recorder, rngs, group, until)
                nursery.start_soon(pipe.feeder)
                for slot in range(members):
                    nursery.start_soon(pipe.member_slot, slot)

    async def final_reads(
        self, env: WorkloadEnv, opts: WorkloadOptions, recorder: HistoryRecorder, deadline: float
    ) -> None:
        """Read input and output from the beginning with read_committed."""
        async with trio.open_nursery() as nursery:
            for group in topic_groups(env, opts):
                source, sink = _pipeline(group)
                nursery.start_soon(
                    read_everything, _env_for(env, group, sink),
                    replace(opts, topics=(source, sink)), recorder, deadline,
                    RngSource(env.rng, f"final-{group.index}"), "read_committed",
                )


def _pipeline(group: TopicGroup) -> tuple[str, str]:
    """(input topic, output topic) of a topic group."""
    if len(group.topics) >= 2:
        return group.topics[0], group.topics[1]
    return group.topics[0], f"{group.topics[0]}-out"


def _env_for(env: WorkloadEnv, group: TopicGroup, sink: str) -> WorkloadEnv:
    """`env` that also knows where an output topic of our own lives."""
    if sink in group.topics:
        return env
    outer = env.bootstrap_for
    return replace(env, bootstrap_for=lambda t: group.bootstrap if t == sink else outer(t))


class _Pipeline:
    """The processes of one topic group's pipeline."""

    def __init__(self, env: WorkloadEnv, opts: WorkloadOptions, recorder: HistoryRecorder,
                 rngs: RngSource, group: TopicGroup, until: float) -> None:
        self.env = env
        self.opts = opts
        self.recorder = recorder
        self.rngs = rngs
        self.group = group
        self.until = until
        self.source, self.sink = _pipeline(group)
        self.group_id = f"eos-{group.index}"
        if opts.partitions < 1:
            raise WorkloadSetupError("exactly-once needs at least one partition")

    # -- the feeder ------------------------------------------------------------------------

    async def feeder(self) -> None:
        """Send unique values to the input until `until` (replaced when it retires)."""
        endpoint = endpoint_for(self.env, self.group.index)
        while trio.current_time() < self.until:
            process = self.recorder.new_process()
            rng = self.rngs.rng("feeder", process)
            spec = session_spec(self.opts, self.group.bootstrap, f"eos-feeder-{process}",
                                transactional_id=None)
            try:
                async with open_session(self.env, endpoint, spec, rng) as session:
                    while True:
                        await pace(rng, self.opts, workers=max(1, self.opts.concurrency // 2))
                        if trio.current_time() >= self.until:
                            return
                        await self._feed(session, process, rng, spec)
            except Retired:
                await trio.sleep(rng.uniform(0.1, 0.5))

    async def _feed(self, session: ClientSession, process: int, rng: random.Random,
                    spec: SessionSpec) -> None:
        messages = [
            {"topic": self.source, "key": f"k{rng.randrange(self.opts.keys)}",
             "value": self.recorder.next_value()}
            for _ in range(rng.randint(1, 3))
        ]
        await self.recorder.perform(process, "send", messages, lambda: session.send(messages),
                                    timeout_s=spec.send_timeout_s)

    # -- members ---------------------------------------------------------------------------

    async def member_slot(self, slot: int) -> None:
        """Keep a member alive in `slot`; a zombie's replacement starts while it goes on."""
        async with trio.open_nursery() as nursery:
            while trio.current_time() < self.until:
                handoff = trio.Event()
                nursery.start_soon(self._member, slot, handoff)
                await handoff.wait()

    def _spec(self, slot: int, process: int) -> SessionSpec:
        return session_spec(
            self.opts, self.group.bootstrap, f"eos-{process}", group=self.group_id,
            transactional_id=f"{self.group_id}-{slot}",
        )

    async def _member(self, slot: int, handoff: trio.Event) -> None:
        process = self.recorder.new_process()
        rng = self.rngs.rng("member", process)
        spec = self._spec(slot, process)
        endpoint = endpoint_for(self.env, slot)
        crashed = False
        try:
            async with open_session(self.env, endpoint, spec,
                                    self.rngs.rng("client", process)) as session:
                member = _Member(self, session, process, rng, spec, handoff)
                crashed = await member.run()
                if crashed:
                    self.recorder.invoke(process, "crash", None)
                    session.crash()
        except Retired:
            await trio.sleep(rng.uniform(0.1, 0.5))
        finally:
            handoff.set()
        if crashed:
            self.recorder.complete(process, "info", "crash", None, error="client crashed")


class _Member:
    """One member process: subscribe, then transform in transactions."""

    def __init__(self, pipe: _Pipeline, session: ClientSession, process: int,
                 rng: random.Random, spec: SessionSpec, handoff: trio.Event) -> None:
        self.pipe = pipe
        self.session = session
        self.process = process
        self.rng = rng
        self.spec = spec
        self.handoff = handoff
        self.zombie_until: float | None = None

    async def run(self) -> bool:
        """Transform until the run ends; True when the member decided to crash."""
        pipe, recorder = self.pipe, self.pipe.recorder
        value: dict[str, object] = {"topics": [pipe.source], "group": pipe.group_id}

        async def subscribe() -> dict[str, object]:
            await self.session.subscribe([pipe.source], pipe.group_id)
            return value

        ok, _ = await recorder.perform(self.process, "subscribe", value, subscribe,
                                       timeout_s=self.spec.admin_timeout_s)
        if not ok:
            return False
        while True:
            await pace(self.rng, pipe.opts)
            now = trio.current_time()
            if now >= pipe.until or (self.zombie_until is not None and now >= self.zombie_until):
                return False
            if self.rng.random() < pipe.opts.crash_probability:
                return True
            if self.zombie_until is None and self.rng.random() < ZOMBIE_P:
                # Hand over: the replacement fences this instance when it initialises.
                self.zombie_until = now + ZOMBIE_LIFETIME_S
                self.handoff.set()
            step = await self.transaction()
            if step != "go on":
                return step == "crash"

    async def transaction(self) -> str:
        """One consume-transform-produce transaction: "go on", "end" or "crash"."""
        pipe, recorder = self.pipe, self.pipe.recorder
        weak = pipe.opts.eos_offsets_outside_txn
        committed: dict[str, int] = {}

        async def body(ops: MicroOps) -> bool:
            polled = await self.session.poll(POLL_WAIT_S)
            ops[0] = ["poll", polled]
            outputs = [
                {"topic": pipe.sink, "key": key, "value": recorder.next_value(), "input": v}
                for log in sorted(polled) for _o, key, v in polled[log]
            ]
            if outputs:
                for sent in await self.session.send(outputs):
                    ops.append(["send", sent])
            offsets = {log: records[-1][0] + 1 for log, records in sorted(polled.items())
                       if records}
            if offsets:
                committed.update(offsets)
                if not weak:
                    await self.session.send_offsets_to_transaction(offsets, pipe.group_id)
                    ops.append(["commit", offsets])
            return True

        timeout = (self.spec.poll_timeout_s(POLL_WAIT_S) + self.spec.send_timeout_s
                   + 3 * self.spec.admin_timeout_s)
        outcome = await perform_txn(recorder, self.session, self.process, [["poll", None]],
                                    body, timeout_s=timeout,
                                    rebalance=self.session.take_rebalance)
        if not outcome.ok:
            # Its consumer is past what the aborted transaction polled: a new process
            # resumes from the group's committed offsets.
            return "end"
        if weak and committed:
            if self.rng.random() < WEAK_CRASH_P:
                return "crash"
            offsets = dict(committed)

            async def commit() -> dict[str, int]:
                await self.session.commit(offsets)
                return offsets

            await recorder.perform(self.process, "commit", offsets, commit,
                                   timeout_s=self.spec.admin_timeout_s,
                                   rebalance=self.session.take_rebalance)
        return "go on"
