"""A livelock in the simulation (tasks waking each other forever at one simulated
instant) stops the run with `SimStalled` instead of spinning for ever."""

from __future__ import annotations

import pytest
import trio

from harness.runtime.sim import scheduler
from harness.runtime.sim.cluster import SimCluster
from harness.runtime.sim.errors import SimStalled
from harness.runtime.sim.run import SimSettings, run_sim


def test_tasks_that_never_let_time_pass_stop_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scheduler, "STALLED_BATCHES", 5_000)

    async def scenario(cluster: SimCluster) -> None:
        await trio.sleep(1.5)
        # A retry loop without a backoff: always runnable, so the clock never moves.
        while True:
            await trio.lowlevel.checkpoint()

    with pytest.raises(SimStalled, match=r"stood still at 1\.5\d* s for 5000 batches"):
        run_sim(scenario, 1, SimSettings(nodes=1))


def test_a_busy_but_healthy_run_is_not_a_stall(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scheduler, "STALLED_BATCHES", 5_000)

    async def scenario(cluster: SimCluster) -> int:
        spins = 0
        for _ in range(4_000):  # a long burst at one instant, then time moves on
            await trio.lowlevel.checkpoint()
            spins += 1
        await trio.sleep(0.001)
        for _ in range(4_000):
            await trio.lowlevel.checkpoint()
            spins += 1
        return spins

    assert run_sim(scenario, 1, SimSettings(nodes=1)).value == 8_000
