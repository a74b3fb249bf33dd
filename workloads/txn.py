"""The `txn` workload: Jepsen's transactional Kafka queue test.

`opts.concurrency` client processes, each with a transactional producer of its own
(transactional.id `txn-<slot>`, so a process that replaces a retired one fences it) and
a consumer that assigns a random subset of its topic group's logs from the beginning,
loop over transactions: each a few micro-operations — send one unique value to a random
key of a random topic, or poll — run between begin_transaction and commit_transaction
and recorded as one `txn` operation with its micro-ops (DESIGN.md section 4, see
`workloads.txn_ops`). A share of the transactions (`ABORT_P`) is aborted on purpose
after its micro-ops ran, so the history holds aborted writes a read_committed consumer
must never return; a process whose aborted transaction polled assigns its logs again
(from the beginning), as an application rewinds after an abort. Consumers read at
`opts.isolation_level`: read_uncommitted ones may read the aborted writes, which the
checker reports as aborted-read / G1a.

`final_reads` reads every log from the beginning with read_committed: what committed.
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
    session_spec,
    topic_groups,
)
from workloads.recorder import HistoryRecorder
from workloads.txn_ops import MicroOps, perform_txn

# Micro-ops per transaction, and the chance each is a send (else a poll).
MIN_OPS, MAX_OPS = 1, 4
SEND_P = 0.5
# The share of transactions aborted on purpose.
ABORT_P = 0.15
POLL_WAIT_S = 0.1


class TxnWorkload:
    """Jepsen's transactional queue workload (see the module docstring)."""

    name = "txn"

    @property
    def checker_mode(self) -> str:
        """Consumers assign their logs: "assign"."""
        return "assign"

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
            for slot in range(max(opts.concurrency, len(groups))):
                group = groups[slot % len(groups)]
                nursery.start_soon(_slot, env, opts, recorder, until, rngs, slot, group)

    async def final_reads(
        self, env: WorkloadEnv, opts: WorkloadOptions, recorder: HistoryRecorder, deadline: float
    ) -> None:
        """Read every log from the beginning with read_committed."""
        await read_everything(
            env, opts, recorder, deadline, RngSource(env.rng, "final"), "read_committed"
        )


async def _slot(
    env: WorkloadEnv,
    opts: WorkloadOptions,
    recorder: HistoryRecorder,
    until: float,
    rngs: RngSource,
    slot: int,
    group: TopicGroup,
) -> None:
    def spec_for(process: int) -> SessionSpec:
        return session_spec(
            opts, group.bootstrap, f"txn-{process}", transactional_id=f"txn-{slot}"
        )

    async def body(session: ClientSession, process: int, rng: random.Random) -> bool:
        return await _TxnProcess(session, opts, recorder, process, rng, group,
                                 spec_for(process)).run(until)

    await run_slot(env, recorder, until, rngs, slot, spec_for, body)


class _TxnProcess:
    """The transactions of one process over its session."""

    def __init__(self, session: ClientSession, opts: WorkloadOptions,
                 recorder: HistoryRecorder, process: int, rng: random.Random,
                 group: TopicGroup, spec: SessionSpec) -> None:
        self.session = session
        self.opts = opts
        self.recorder = recorder
        self.process = process
        self.rng = rng
        self.group = group
        self.spec = spec
        self.assigned = False

    async def run(self, until: float) -> bool:
        """Transact until `until`; True when the process decided to crash."""
        while True:
            await pace(self.rng, self.opts)
            if trio.current_time() >= until:
                return False
            if self.rng.random() < self.opts.crash_probability:
                return True
            if not self.assigned:
                await self.assign()
                continue
            if not await self.transaction():
                # The producer could not abort: end this session, a new process goes on.
                return False

    async def assign(self) -> None:
        logs = self.group.logs(self.opts.partitions)
        chosen = sorted(self.rng.sample(logs, self.rng.randint(1, len(logs))))
        value = {"logs": chosen, "seek": "beginning"}

        async def assign() -> dict[str, Any]:
            await self.session.assign(chosen, "beginning")
            return value

        self.assigned, _ = await self.recorder.perform(
            self.process, "assign", value, assign, timeout_s=self.spec.admin_timeout_s
        )

    async def transaction(self) -> bool:
        """One transaction; False when the session cannot go on."""
        ops: MicroOps = []
        for _ in range(self.rng.randint(MIN_OPS, MAX_OPS)):
            if self.rng.random() < SEND_P:
                ops.append(["send", {
                    "topic": self.rng.choice(self.group.topics),
                    "key": f"k{self.rng.randrange(self.opts.keys)}",
                    "value": self.recorder.next_value(),
                }])
            else:
                ops.append(["poll", None])
        commit = self.rng.random() >= ABORT_P
        sends = sum(1 for f, _ in ops if f == "send")
        polls = len(ops) - sends
        timeout = (sends * self.spec.send_timeout_s + polls * self.spec.poll_timeout_s(POLL_WAIT_S)
                   + 2 * self.spec.admin_timeout_s)

        async def body(ops: MicroOps) -> bool:
            for i, (f, payload) in enumerate(ops):
                if f == "send":
                    [sent] = await self.session.send([payload])
                    ops[i] = ["send", sent]
                else:
                    ops[i] = ["poll", await self.session.poll(POLL_WAIT_S)]
            return commit

        outcome = await perform_txn(self.recorder, self.session, self.process, ops, body,
                                    timeout_s=timeout)
        if not outcome.ok and any(f == "poll" and p for f, p in outcome.ops):
            # An aborted transaction's reads did not happen: as a Kafka application
            # rewinds its consumer after an abort, this one assigns again before the
            # next transaction (the checker holds the process's polls contiguous).
            self.assigned = False
        return outcome.session_usable
