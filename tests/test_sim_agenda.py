"""The agenda's timers when a callback wakes no task, and when it runs from run_sim's
I/O poll instead of as a trio instrument."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from harness.runtime.sim.clock import Agenda
from harness.runtime.sim.scheduler import skip_busy_io_polls


async def _quiet_timer_then_a_later_one() -> list[tuple[str, float]]:
    agenda = Agenda.for_this_run()
    assert agenda is not None
    start = trio.current_time()
    seen: list[tuple[str, float]] = []
    agenda.call_at(start + 1, lambda: seen.append(("quiet", trio.current_time() - start)))
    agenda.call_at(start + 2, lambda: seen.append(("later", trio.current_time() - start)))
    # A trio deadline after both: autojump must not take it before the later timer.
    with trio.move_on_after(5):
        await trio.sleep_forever()
    seen.append(("trio deadline", trio.current_time() - start))
    return seen


async def test_a_timer_that_wakes_nothing_does_not_let_time_skip_later_timers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    assert await _quiet_timer_then_a_later_one() == [
        ("quiet", 1),
        ("later", 2),
        ("trio deadline", 5),
    ]


def test_the_agenda_keeps_its_order_when_run_from_the_io_poll() -> None:
    async def main() -> list[tuple[str, float]]:
        skip_busy_io_polls()
        return await _quiet_timer_then_a_later_one()

    seen = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert seen == [("quiet", 1), ("later", 2), ("trio deadline", pytest.approx(5))]
