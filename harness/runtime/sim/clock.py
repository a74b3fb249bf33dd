"""Time in the simulation: per-node wall clocks, and an agenda of timed wake-ups.

A node's `now_ms` (`SimClock`) only feeds values stored in data (record timestamps);
timeouts use trio's clock, which a skew does not touch — exactly as bumping a host's
wall clock leaves its monotonic clock alone. `Agenda` gives the simulation's own
machinery (network deliveries, paced workloads) timers cheaper than trio's.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any

import trio
import trio.testing
from trio._core import _run as trio_run_module

from .scheduler import hook_before_io_poll

# 2024-01-01T00:00:00Z: a fixed, plausible wall-clock start so timestamps look real
# yet never depend on when the simulation ran.
DEFAULT_EPOCH_MS = 1_704_067_200_000


class SimClock:
    """A node's wall clock: `epoch_ms` + virtual milliseconds elapsed + `skew_ms`."""

    def __init__(self, epoch_ms: int = DEFAULT_EPOCH_MS) -> None:
        self.epoch_ms = epoch_ms
        self.skew_ms = 0

    def now_ms(self) -> int:
        """Milliseconds since the Unix epoch, as this node believes."""
        return self.epoch_ms + int(trio.current_time() * 1000) + self.skew_ms

    def bump(self, delta_ms: int) -> None:
        """Shift this clock by `delta_ms` from now on (cumulative)."""
        self.skew_ms += delta_ms

    def reset(self) -> None:
        """Put this clock back in step with the simulation's time."""
        self.skew_ms = 0


class Agenda(trio.abc.Instrument):
    """Timed wake-ups on the simulation's MockClock that cost no cancel scope.

    trio's only timer is a cancel scope's deadline, and one that expires throws
    `Cancelled` through the waiting task: in the simulation, where every network hop
    and every paced operation is a timer, that is the largest single cost of the run
    loop. An agenda keeps timed callbacks in a heap instead and runs them from a trio
    instrument: just before trio waits for I/O with no task runnable — the moment
    MockClock's autojump would move time — if the agenda's next event is no later
    than trio's next deadline, it jumps the clock to that event and runs every
    callback due. The tasks they wake run in the same scheduling pass, so an agenda
    event costs no extra task step either.

    This is autojump with a second source of deadlines, so it exists only on a
    `MockClock(autojump_threshold=0)` (see `for_this_run`). Callbacks run inside trio's run
    loop, not in a task: they may only wake tasks (set events, reschedule), and must
    not raise (trio would drop the instrument, and time would stop for the agenda).
    """

    def __init__(self, clock: trio.testing.MockClock) -> None:
        self._clock = clock
        self._idle_wait = _idle_probe(clock)
        # [at, seq, callback]: seq breaks ties in scheduling order; callback None = cancelled.
        self._heap: list[list[Any]] = []
        self._seq = 0

    @classmethod
    def for_this_run(cls) -> Agenda | None:
        """The current trio run's agenda, or None if its clock does not jump by itself.

        One per run: two would each move time to their own next event, past the other's.
        """
        try:
            return _AGENDA.get()
        except LookupError:
            pass
        clock = trio.lowlevel.current_clock()
        agenda = None
        if isinstance(clock, trio.testing.MockClock) and clock.autojump_threshold == 0:
            agenda = cls(clock)
            # Called straight from the run's I/O poll where `run_sim` set that up: an
            # instrument costs a dispatch through trio's Instruments on every batch.
            if not hook_before_io_poll(agenda.before_io_wait):
                trio.lowlevel.add_instrument(agenda)
        _AGENDA.set(agenda)
        return agenda

    def call_at(self, at: float, callback: Callable[[], None]) -> list[Any]:
        """Run `callback` once virtual time reaches `at`; returns a handle for `cancel`."""
        entry = [at, self._seq, callback]
        self._seq += 1
        heapq.heappush(self._heap, entry)
        return entry

    @staticmethod
    def cancel(entry: list[Any]) -> None:
        """Forget a callback that has not run yet."""
        entry[2] = None

    async def sleep_until(self, at: float) -> None:
        """trio.sleep_until without a cancel scope (still a checkpoint, still cancellable)."""
        if at <= trio.current_time():
            await trio.lowlevel.checkpoint()
            return
        task = trio.lowlevel.current_task()
        entry = self.call_at(at, lambda: trio.lowlevel.reschedule(task))

        def abort(_: object) -> trio.lowlevel.Abort:
            self.cancel(entry)
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    def before_io_wait(self, timeout: float) -> None:
        """At idle, move time to the next event if it comes before trio's next deadline.

        Repeats while the callbacks run wake no task (a timer that finds nothing to
        do): trio would otherwise autojump to its own next deadline, past the
        agenda's later events.
        """
        heap = self._heap
        while True:
            while heap and heap[0][2] is None:
                heapq.heappop(heap)
            if not heap:
                return
            to_deadline = self._idle_wait()
            if to_deadline is None:
                return  # time stands still while anything can run
            now = self._clock.current_time()
            at = heap[0][0]
            if at > now + to_deadline:
                return  # a cancel scope's deadline comes first: autojump takes it
            if at > now:
                self._clock.jump(at - now)
            while heap and heap[0][0] <= at:
                callback = heapq.heappop(heap)[2]
                if callback is not None:
                    callback()


_AGENDA: trio.lowlevel.RunVar[Agenda | None] = trio.lowlevel.RunVar("faultline_sim_agenda")


def _idle_probe(clock: trio.testing.MockClock) -> Callable[[], float | None]:
    """A function giving the seconds to trio's next deadline, or None if a task can run.

    `trio.lowlevel.current_statistics()` answers that but builds two objects per call,
    and the agenda asks at every scheduling pass; so the runner's run queue and
    deadline heap are read directly (trio internals, as `scheduler` also relies on),
    with the public call as the fallback should they move.
    """
    runner = getattr(trio_run_module.GLOBAL_RUN_CONTEXT, "runner", None)
    deadlines = getattr(runner, "deadlines", None)
    if (
        runner is not None
        and hasattr(runner, "runq")
        and callable(getattr(deadlines, "next_deadline", None))
    ):

        def from_runner() -> float | None:
            if runner.runq:
                return None
            return runner.deadlines.next_deadline() - clock.current_time()

        return from_runner

    def from_statistics() -> float | None:
        stats = trio.lowlevel.current_statistics()
        return None if stats.tasks_runnable else stats.seconds_to_next_deadline

    return from_statistics
