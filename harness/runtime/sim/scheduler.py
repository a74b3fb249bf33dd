"""Seeding trio's scheduler, so the order tasks run in is a function of the seed.

trio shuffles each batch of runnable tasks with the module-level `random.Random`
`trio._core._run._r`. When `_ALLOW_DETERMINISTIC_SCHEDULING` is true (trio sets it
for Hypothesis) it first sorts the batch by each task's creation counter, so the
shuffle depends only on `_r`'s state and not on the order wakeups happened to be
queued in. Setting both, and seeding `_r`, makes one `trio.run` reproducible.
Both are process-global, so they are restored when the run ends.

`skip_busy_io_polls` trims the run loop itself: see there.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from trio._core import _run as trio_run_module

from .errors import SimStalled


def derive_rng(seed: int, *labels: str) -> random.Random:
    """An independent `random.Random` for `labels`, determined by `seed` alone.

    String seeds are hashed with SHA-512 by `random.Random`, so the result does not
    depend on PYTHONHASHSEED.
    """
    return random.Random("/".join([str(seed), *labels]))


@contextmanager
def seeded_scheduler(seed: int) -> Iterator[None]:
    """Within the block, trio schedules tasks in an order determined by `seed`."""
    saved_state = trio_run_module._r.getstate()
    saved_flag = trio_run_module._ALLOW_DETERMINISTIC_SCHEDULING
    trio_run_module._r.seed(derive_rng(seed, "trio-scheduler").getrandbits(64))
    trio_run_module._ALLOW_DETERMINISTIC_SCHEDULING = True  # type: ignore[misc]
    try:
        yield
    finally:
        trio_run_module._ALLOW_DETERMINISTIC_SCHEDULING = saved_flag  # type: ignore[misc]
        trio_run_module._r.setstate(saved_state)


# I/O checks a busy run loop may skip in a row: bounds how late real I/O (a signal, a
# thread's result) is noticed while tasks keep being runnable.
_MAX_SKIPPED_POLLS = 64

# Batches of runnable tasks in a row, all at one simulated instant, after which the run
# is a livelock (`SimStalled`). A healthy run's longest streak is under a thousand
# batches; this is seconds of CPU spent without simulated time moving.
STALLED_BATCHES = 200_000


class _LazyIOPoll:
    """The run's I/O manager, but `get_events` skips the syscall while tasks are runnable.

    trio asks the kernel for I/O events (epoll_wait with a zero timeout) before every
    batch of tasks; on a MockClock with autojump the timeout is always zero. A
    simulation has no I/O of its own (the network and disks are objects), so while
    tasks are runnable that poll can only find nothing, and it is a syscall per batch:
    about a tenth of the run's CPU. The poll is skipped only while the run queue is
    non-empty (those tasks run either way; any real I/O is seen one batch later), never
    when the loop is idle (so the clock never jumps past real I/O, nor waits forever
    for it), never while trio's entry queue holds work (`run_sync_soon`, signals),
    and not more than `_MAX_SKIPPED_POLLS` times in a row.

    `before_poll`, when set, runs first: the moment trio's `before_io_wait`
    instruments run, without the instrument machinery's cost per batch.
    """

    def __init__(self, runner: Any) -> None:
        self._io = runner.io_manager
        self._runner = runner
        self._entry = runner.entry_queue
        self._skipped = 0
        self._busy = 0  # batches in a row with tasks runnable: the clock cannot move
        self.process_events = self._io.process_events
        self.before_poll: Callable[[float], None] | None = None
        # Told once when the run stalls (see STALLED_BATCHES); it should cancel the run.
        self.on_stall: Callable[[SimStalled], None] | None = None

    def get_events(self, timeout: float) -> Any:
        """Poll the real I/O manager unless skipping is safe (see the class docstring)."""
        if self.before_poll is not None:
            self.before_poll(timeout)
        entry = self._entry
        if timeout == 0 and self._runner.runq:
            self._busy += 1
            if self._busy == STALLED_BATCHES:
                self._stalled()
            if (self._skipped < _MAX_SKIPPED_POLLS and not entry.queue
                    and not entry.idempotent_queue):
                self._skipped += 1
                return ()
        else:
            self._busy = 0
        self._skipped = 0
        return self._io.get_events(timeout)

    def _stalled(self) -> None:
        error = SimStalled(
            f"simulated time stood still at {self._runner.clock.current_time():.3f} s for "
            f"{self._busy} batches of runnable tasks: a livelock (tasks keep waking each "
            "other without ever waiting for time to pass)")
        if self.on_stall is None:
            raise error
        self.on_stall(error)

    def __getattr__(self, name: str) -> Any:
        # wait_readable, statistics, close, ...: the real manager's.
        return getattr(self._io, name)


def hook_before_io_poll(hook: Callable[[float], None]) -> bool:
    """Run `hook(timeout)` before each I/O poll of this run, as a `before_io_wait`
    instrument would be; False (nothing done) unless `skip_busy_io_polls` is in force
    and no hook is set yet."""
    runner = getattr(trio_run_module.GLOBAL_RUN_CONTEXT, "runner", None)
    io_manager = getattr(runner, "io_manager", None)
    if not isinstance(io_manager, _LazyIOPoll) or io_manager.before_poll is not None:
        return False
    io_manager.before_poll = hook
    return True


def on_stall(handler: Callable[[SimStalled], None]) -> bool:
    """Call `handler` (once) if this run stalls; False (nothing done) unless
    `skip_busy_io_polls` is in force. Without a handler a stall raises out of the
    run loop, abandoning the run's tasks where they stand."""
    runner = getattr(trio_run_module.GLOBAL_RUN_CONTEXT, "runner", None)
    io_manager = getattr(runner, "io_manager", None)
    if not isinstance(io_manager, _LazyIOPoll):
        return False
    io_manager.on_stall = handler
    return True


def skip_busy_io_polls() -> None:
    """Within the current trio run, skip I/O polls while tasks are runnable (see `_LazyIOPoll`).

    Relies on trio internals (the runner's io_manager and entry_queue, as `clock`
    relies on its run queue); when they are not where expected, nothing changes.
    """
    runner = getattr(trio_run_module.GLOBAL_RUN_CONTEXT, "runner", None)
    io_manager = getattr(runner, "io_manager", None)
    entry = getattr(runner, "entry_queue", None)
    if (
        runner is None
        or io_manager is None
        or isinstance(io_manager, _LazyIOPoll)
        or not callable(getattr(io_manager, "get_events", None))
        or not callable(getattr(io_manager, "process_events", None))
        or not hasattr(runner, "runq")
        or not hasattr(entry, "queue")
        or not hasattr(entry, "idempotent_queue")
    ):
        return
    runner.io_manager = _LazyIOPoll(runner)
