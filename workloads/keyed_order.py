"""The `keyed-order` workload: per-key ordering across many keys and several producers.

Kafka promises that one producer's records with one key land in one partition in the
order it sent them — with idempotence on, even across retries; without it, a retry
with more than one request in flight may reorder them. This workload puts that
promise under test:

- Producer slots (half of `opts.concurrency`, at least one per topic group) each own a range of the
  `opts.keys` keys (key i belongs to producer slot i mod producers) and send 1-4
  messages per operation, drawn from a few of their keys so that one send often
  carries several messages of one key. Values come from the run-wide counter, so per
  key they increase in send order. With `linger.ms=0` each message may leave in its
  own request while the previous ones are in flight: exactly where a retry reorders.
- Consumer slots assign every log of their topics from the beginning and poll,
  re-assigning from the beginning now and then.

The checker's `key-order` (one producer's later send of a key landed below its
earlier one) and `key-split` (a key in two partitions of a topic) are what matter
here; checker_mode is "assign". Crashes and `info` retire a process as in `queue`.
"""

from __future__ import annotations

import random
from functools import partial

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
    session_spec,
    topic_groups,
)
from workloads.recorder import HistoryRecorder

POLL_WAIT_S = 0.2
# A consumer re-assigns from the beginning with this probability per operation.
REASSIGN_P = 0.03
# How many of its keys a producer's send draws from.
HOT_KEYS = 3


class KeyedOrderWorkload:
    """Several producers owning key ranges; consumers reading everything (module docstring)."""

    name = "keyed-order"
    checker_mode = "assign"

    async def setup(self, env: WorkloadEnv, opts: WorkloadOptions) -> None:
        """Create the topics."""
        await create_topics(env, opts)

    async def run(
        self, env: WorkloadEnv, opts: WorkloadOptions, recorder: HistoryRecorder, until: float
    ) -> None:
        """Run producer and consumer slots until trio time `until`."""
        rngs = RngSource(env.rng, self.name)
        groups = topic_groups(env, opts)
        # Every topic group needs a producer and a consumer, even if that exceeds
        # opts.concurrency (independent brokers: one topic group per broker).
        producers = max(len(groups), opts.concurrency // 2)
        consumers = max(len(groups), opts.concurrency - producers)
        async with trio.open_nursery() as nursery:
            for slot in range(producers):
                keys = [f"k{i}" for i in range(opts.keys) if i % producers == slot]
                if not keys:
                    continue  # more producers than keys: this one would own nothing
                group = groups[slot % len(groups)]
                nursery.start_soon(
                    self._producer, env, opts, recorder, until, rngs, slot, group, keys
                )
            for c in range(consumers):
                slot = producers + c
                # Consumers cover every topic group, whatever the producers' split.
                group = groups[c % len(groups)]
                nursery.start_soon(self._consumer, env, opts, recorder, until, rngs, slot, group)

    async def final_reads(
        self, env: WorkloadEnv, opts: WorkloadOptions, recorder: HistoryRecorder, deadline: float
    ) -> None:
        """Fresh processes read every log from the beginning until caught up or `deadline`."""
        await read_everything(env, opts, recorder, deadline, RngSource(env.rng, "final"))

    async def _producer(
        self,
        env: WorkloadEnv,
        opts: WorkloadOptions,
        recorder: HistoryRecorder,
        until: float,
        rngs: RngSource,
        slot: int,
        group: TopicGroup,
        keys: list[str],
    ) -> None:
        def spec_for(process: int) -> SessionSpec:
            return session_spec(opts, group.bootstrap, f"keyed-producer-{process}")

        async def body(session: ClientSession, process: int, rng: random.Random) -> bool:
            spec = spec_for(process)
            while True:
                await pace(rng, opts)
                if trio.current_time() >= until:
                    return False
                if rng.random() < opts.crash_probability:
                    return True
                hot = rng.sample(keys, min(HOT_KEYS, len(keys)))
                topic = rng.choice(group.topics)
                messages = [
                    {"topic": topic, "key": rng.choice(hot), "value": recorder.next_value()}
                    for _ in range(rng.randint(1, 4))
                ]
                await recorder.perform(
                    process,
                    "send",
                    messages,
                    partial(session.send, messages),
                    timeout_s=spec.send_timeout_s,
                )

        await run_slot(env, recorder, until, rngs, slot, spec_for, body)

    async def _consumer(
        self,
        env: WorkloadEnv,
        opts: WorkloadOptions,
        recorder: HistoryRecorder,
        until: float,
        rngs: RngSource,
        slot: int,
        group: TopicGroup,
    ) -> None:
        logs = group.logs(opts.partitions)
        value: dict[str, object] = {"logs": logs, "seek": "beginning"}

        def spec_for(process: int) -> SessionSpec:
            return session_spec(opts, group.bootstrap, f"keyed-consumer-{process}")

        async def body(session: ClientSession, process: int, rng: random.Random) -> bool:
            spec = spec_for(process)

            async def assign() -> dict[str, object]:
                await session.assign(logs, "beginning")
                return value

            assigned = False
            while True:
                if not assigned or rng.random() < REASSIGN_P:
                    assigned, _ = await recorder.perform(
                        process, "assign", value, assign, timeout_s=spec.admin_timeout_s
                    )
                else:
                    await recorder.perform(
                        process,
                        "poll",
                        None,
                        lambda: session.poll(POLL_WAIT_S),
                        timeout_s=spec.poll_timeout_s(POLL_WAIT_S),
                    )
                await pace(rng, opts)
                if trio.current_time() >= until:
                    return False
                if rng.random() < opts.crash_probability:
                    return True

        await run_slot(env, recorder, until, rngs, slot, spec_for, body)
