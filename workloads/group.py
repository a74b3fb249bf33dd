"""The `group` workload: consumer-group members join, leave and crash under a commit strategy.

Producer slots (a third of `opts.concurrency`, at least one per topic group) feed the topics with
unique values. Member slots each run one member at a time of their topic group's
consumer group `group-N`: it subscribes, then polls and commits as `opts.commit` says:

- `before` (at-most-once): poll, commit the batch's next offsets, then "process" the
  batch, which here means recording the poll. The poll's invoke is therefore written
  after the client fetched — the history shows the poll as the application saw it.
  If the commit's outcome is unknown the member retires before processing: those
  records were committed past and never processed, which the checker reports as
  `lost-by-commit`. A commit that definitely failed leaves nothing committed; the
  batch is processed anyway.
- `after` (at-least-once): record the poll, then commit its next offsets. A crash in
  between makes the next owner read the batch again; nothing is lost.
- `auto`: Java's auto-commit, done by the workload so that commits are recorded: at
  the start of a poll, once `AUTO_COMMIT_INTERVAL_S` passed since the last commit,
  commit the positions everything polled before has reached (on logs still owned).

Zombie members (faultline's own client): after a poll that returned records, a member
may stall (`ZOMBIE_P`) with its heartbeats stopped, for 0.9 to 1.6 times its session
timeout, as a process in a long GC pause or a stuck processing step does; then, before it
hears anything from the coordinator, it commits the batch with the generation and member
id it still holds. By then the coordinator has usually expelled it and rebalanced:
Kafka refuses such a commit with UNKNOWN_MEMBER_ID, ILLEGAL_GENERATION or
REBALANCE_IN_PROGRESS, and the history records it as a failed commit. A coordinator that
stored it would move the group's offset back under the member that took the log over,
which the group checker reports (commit-regression, lost-by-commit).

Per operation a member crashes with `opts.crash_probability` — also between a poll
and its commit, the window each strategy's guarantee is about — (its client is dropped
without LeaveGroup: the group notices only when its session times out), or leaves
politely with `LEAVE_P` (LeaveGroup, then a new process joins). Either way a new
process number joins the same group. Completions carry `assignment` and `generation`
after each rebalance. checker_mode is "subscribe".
"""

from __future__ import annotations

import random
from functools import partial
from typing import Any, Protocol, runtime_checkable

import trio

from workloads.adapters import ClientSession, OpFailed, OpUnknown, PollRecords, SessionSpec
from workloads.adapters.session import Rebalance
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
from workloads.recorder import HistoryRecorder, Retired, describe

POLL_WAIT_S = 0.2
LEAVE_P = 0.01
AUTO_COMMIT_INTERVAL_S = 1.0
# Chance per poll with records that a member turns zombie (module docstring), and the
# range of its stall as multiples of its session timeout.
ZOMBIE_P = 0.02
ZOMBIE_STALL = (0.9, 1.6)


@runtime_checkable
class StallableSession(Protocol):
    """A session whose group heartbeats can be stopped and restarted (a stalled member)."""

    def pause_membership(self, paused: bool) -> None:
        """Stop (True) or restart (False) the subscribed consumer's heartbeats."""
        ...


def group_id(group: TopicGroup) -> str:
    """The consumer group of a topic group's members."""
    return f"group-{group.index}"


class GroupWorkload:
    """Consumer-group members under a commit strategy, fed by producers (module docstring)."""

    name = "group"
    checker_mode = "subscribe"

    async def setup(self, env: WorkloadEnv, opts: WorkloadOptions) -> None:
        """Create the topics."""
        await create_topics(env, opts)

    async def run(
        self, env: WorkloadEnv, opts: WorkloadOptions, recorder: HistoryRecorder, until: float
    ) -> None:
        """Run producer and member slots until trio time `until`."""
        rngs = RngSource(env.rng, self.name)
        groups = topic_groups(env, opts)
        # Every topic group needs a producer and a member, even if that exceeds
        # opts.concurrency (independent brokers: one topic group per broker).
        producers = max(len(groups), opts.concurrency // 3)
        members = max(len(groups), opts.concurrency - producers)
        async with trio.open_nursery() as nursery:
            for slot in range(producers):
                group = groups[slot % len(groups)]
                nursery.start_soon(self._producer, env, opts, recorder, until, rngs, slot, group)
            for m in range(members):
                group = groups[m % len(groups)]
                nursery.start_soon(
                    self._member, env, opts, recorder, until, rngs, producers + m, group
                )

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
    ) -> None:
        def spec_for(process: int) -> SessionSpec:
            return session_spec(opts, group.bootstrap, f"group-producer-{process}")

        async def body(session: ClientSession, process: int, rng: random.Random) -> bool:
            spec = spec_for(process)
            while True:
                await pace(rng, opts)
                if trio.current_time() >= until:
                    return False
                if rng.random() < opts.crash_probability:
                    return True
                messages = [
                    {
                        "topic": rng.choice(group.topics),
                        "key": f"k{rng.randrange(opts.keys)}",
                        "value": recorder.next_value(),
                    }
                ]
                await recorder.perform(
                    process,
                    "send",
                    messages,
                    partial(session.send, messages),
                    timeout_s=spec.send_timeout_s,
                )

        await run_slot(env, recorder, until, rngs, slot, spec_for, body)

    async def _member(
        self,
        env: WorkloadEnv,
        opts: WorkloadOptions,
        recorder: HistoryRecorder,
        until: float,
        rngs: RngSource,
        slot: int,
        group: TopicGroup,
    ) -> None:
        def spec_for(process: int) -> SessionSpec:
            return session_spec(opts, group.bootstrap, f"member-{process}", group=group_id(group))

        async def body(session: ClientSession, process: int, rng: random.Random) -> bool:
            member = _Member(session, opts, recorder, process, rng, group, spec_for(process))
            return await member.run(until)

        await run_slot(env, recorder, until, rngs, slot, spec_for, body)


class _Member:
    """One group member's life: subscribe, then poll and commit by the strategy."""

    def __init__(
        self,
        session: ClientSession,
        opts: WorkloadOptions,
        recorder: HistoryRecorder,
        process: int,
        rng: random.Random,
        group: TopicGroup,
        spec: SessionSpec,
    ) -> None:
        self.session = session
        self.opts = opts
        self.recorder = recorder
        self.process = process
        self.rng = rng
        self.group = group
        self.spec = spec
        # Next offset per owned log after everything polled (the auto-commit positions).
        self.positions: dict[str, int] = {}
        self.last_commit = trio.current_time()

    async def run(self, until: float) -> bool:
        """Subscribe, then operate until `until`; True when the member decided to crash."""
        topics = list(self.group.topics)
        group = group_id(self.group)
        value: dict[str, Any] = {"topics": topics, "group": group}

        async def subscribe() -> dict[str, Any]:
            await self.session.subscribe(topics, group)
            return value

        subscribed = False
        while True:
            if not subscribed:
                subscribed, _ = await self.recorder.perform(
                    self.process, "subscribe", value, subscribe, timeout_s=self.spec.admin_timeout_s
                )
            elif await self.poll_and_commit():
                return True
            await pace(self.rng, self.opts)
            if trio.current_time() >= until:
                return False
            r = self.rng.random()
            if r < self.opts.crash_probability:
                return True
            if r < self.opts.crash_probability + LEAVE_P:
                return False  # leave politely: the session's close sends LeaveGroup

    def _rebalance(self) -> Rebalance | None:
        change = self.session.take_rebalance()
        if change is not None:
            owned = set(change.assignment)
            self.positions = {log: o for log, o in self.positions.items() if log in owned}
        return change

    def _processed(self, polled: PollRecords) -> dict[str, int]:
        """The batch's next offsets per log (what committing this batch stores)."""
        offsets = {log: records[-1][0] + 1 for log, records in sorted(polled.items())}
        self.positions.update(offsets)
        return offsets

    async def _commit(self, offsets: dict[str, int]) -> None:
        async def commit() -> dict[str, int]:
            await self.session.commit(offsets)
            return offsets

        await self.recorder.perform(
            self.process,
            "commit",
            offsets,
            commit,
            timeout_s=self.spec.admin_timeout_s,
            rebalance=self._rebalance,
        )
        self.last_commit = trio.current_time()

    def _crash_now(self) -> bool:
        return self.rng.random() < self.opts.crash_probability

    async def poll_and_commit(self) -> bool:
        """One poll with its commit; True when the member crashed between the two."""
        strategy = self.opts.commit
        if strategy == "before":
            return await self._poll_commit_process()
        due = trio.current_time() - self.last_commit >= AUTO_COMMIT_INTERVAL_S
        if strategy == "auto" and self.positions and due:
            await self._commit(dict(sorted(self.positions.items())))
        ok, polled = await self.recorder.perform(
            self.process,
            "poll",
            None,
            partial(self.session.poll, POLL_WAIT_S),
            timeout_s=self.spec.poll_timeout_s(POLL_WAIT_S),
            rebalance=self._rebalance,
        )
        if not ok or not polled:
            return False
        offsets = self._processed(polled)
        if strategy == "after":
            # A crash after processing, before committing: the batch will be read again.
            if self._crash_now():
                return True
            if isinstance(self.session, StallableSession) and self.rng.random() < ZOMBIE_P:
                await self._zombie_commit(self.session, offsets)
            else:
                await self._commit(offsets)
        return False

    async def _zombie_commit(self, session: StallableSession, offsets: dict[str, int]) -> None:
        """Stall with heartbeats stopped past (or near) the session timeout, then commit
        `offsets` with the generation still held; heartbeats restart after the commit."""
        low, high = ZOMBIE_STALL
        stall_s = self.rng.uniform(low, high) * self.spec.session_timeout_ms / 1000
        session.pause_membership(True)
        try:
            await trio.sleep(stall_s)
            await self._commit(offsets)
        finally:
            session.pause_membership(False)

    async def _poll_commit_process(self) -> bool:
        """At-most-once: fetch, commit, and only then record (process) the batch.

        True when the member crashed after committing, before processing: that batch is
        lost to the group.
        """
        polled: PollRecords | None = None
        error: str | None = None
        with trio.move_on_after(self.spec.poll_timeout_s(POLL_WAIT_S)):
            try:
                polled = await self.session.poll(POLL_WAIT_S)
            except (OpFailed, OpUnknown) as exc:
                error = describe(exc)
        if polled is None:
            # The fetch itself failed: record it as the poll it was, and retire.
            self.recorder.invoke(self.process, "poll", None)
            error = error or "timeout: no outcome from poll"
            self.recorder.complete(self.process, "info", "poll", None, error=error)
            raise Retired(error)
        change = self._rebalance()
        if polled:
            offsets = {log: records[-1][0] + 1 for log, records in sorted(polled.items())}
            # Retired here (unknown commit) means the batch is never processed.
            await self._commit(offsets)
            if self._crash_now():
                return True
        self.recorder.invoke(self.process, "poll", None)
        extra: dict[str, Any] = {}
        if change is not None:
            extra = {"assignment": change.assignment}
            if change.generation is not None:
                extra["generation"] = change.generation
        self.recorder.complete(self.process, "ok", "poll", polled, **extra)
        self._processed(polled)
        return False
