"""The campaign loop: plan the runs, hand them to an engine, collect, judge, stop.

Runs are planned seed-major (every configuration's first seed, then every second
seed, ...), so a campaign stopped early by its time budget still covers every
configuration. At most `engine.slots + 1` runs are handed out at a time, so stop rules
act promptly and a worker never waits on the campaign. As runs finish `campaign.json`
is rewritten (at most every `SAVE_EVERY_S`, and at the end), so whatever ends the
campaign (a stop rule, Ctrl-C, a crash) leaves the runs finished so far and a matrix of
them.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from harness.campaign.engines import Engine
from harness.campaign.matrix import Matrix
from harness.campaign.results import (
    ERROR,
    HARNESS_ERROR,
    VIOLATED,
    CampaignResults,
    Judgement,
)
from harness.campaign.task import RunRecord, RunRequest, unpack
from harness.run_config import RunConfig
from harness.runner import reproduce_command


@dataclass(frozen=True)
class StopRules:
    """When a campaign stops before it has run everything."""

    time_budget_s: float | None = None  # no new run starts after this; running ones finish
    until_first_failure: bool = False  # stop everything at the first failing run
    fail_fast: bool = False  # skip a configuration's remaining seeds once one run failed


FAILED = (VIOLATED, ERROR, HARNESS_ERROR)
# campaign.json is rewritten at most this often while runs finish (and always at the end).
SAVE_EVERY_S = 1.0


def plan(matrix: Matrix) -> list[RunRequest]:
    """Every run of the matrix, seed-major; each named `<cell>-<run tag>`."""
    requests = []
    for seed in matrix.seeds:
        for cell in matrix.runnable:
            config = cell.config(seed)
            requests.append(RunRequest(cell=cell.index, seed=seed, config=config.to_json(),
                                       run_name=f"{cell.index:02d}-{config.tag()}"))
    return requests


Listener = Callable[[CampaignResults, RunRecord | None, Judgement | None], None]


class Plan(Protocol):
    """The runs still to hand out: all at once (`StaticPlan`) or as earlier runs allow
    (`harness.campaign.guided.GuidedPlan`)."""

    def __len__(self) -> int: ...

    def take(self) -> RunRequest | None:
        """The next run to start, None when none may start now."""

    def settle(self, request: RunRequest, record: RunRecord | None) -> None:
        """A run `take` gave finished (`record`) or was skipped (None)."""

    def clear(self) -> None:
        """Hand out nothing more."""


class StaticPlan:
    """Every run planned up front, handed out in order."""

    def __init__(self, requests: list[RunRequest]) -> None:
        self._pending = deque(requests)

    def __len__(self) -> int:
        return len(self._pending)

    def take(self) -> RunRequest | None:
        return self._pending.popleft() if self._pending else None

    def settle(self, request: RunRequest, record: RunRecord | None) -> None:
        pass

    def clear(self) -> None:
        self._pending.clear()


def run_campaign(
    matrix: Matrix,
    folder: Path,
    engine: Engine,
    rules: StopRules,
    *,
    on_change: Listener,
    save: Callable[[CampaignResults], None],
    planner: Plan | None = None,
) -> CampaignResults:
    """Run `matrix` on `engine` into `folder/runs/`; `on_change` sees every finished run
    (and, with None, every idle tick), `save` writes the matrix so far. `planner` hands
    out the runs (default: every run of `plan(matrix)` at once).

    Ctrl-C abandons the runs in flight, marks the results interrupted and returns them.
    """
    results = CampaignResults(matrix)
    pending = planner if planner is not None else StaticPlan(plan(matrix))
    in_flight: dict[str, RunRequest] = {}
    started = time.monotonic()
    stopping = False
    save(results)
    saved = started
    try:
        while pending or in_flight:
            while not stopping and pending and len(in_flight) < engine.slots + 1:
                request = pending.take()
                if request is None:
                    break
                cell = results.cells[request.cell]
                if rules.fail_fast and set(cell.outcomes()) & set(FAILED):
                    cell.skipped_seeds.append(request.seed)
                    pending.settle(request, None)
                    continue
                engine.submit(request)
                in_flight[request.run_name] = request
            record = engine.next_done(timeout=0.25)
            judgement = None
            if record is not None:
                done = in_flight.pop(record.run_name, None)
                if done is not None:
                    pending.settle(done, record)
                run_dir = folder / "runs" / record.run_name
                if record.archive:
                    unpack(record.archive, run_dir)
                judgement = results.add(record, reproduce_command(
                    RunConfig.from_json(record.config), run_dir))
                if time.monotonic() - saved >= SAVE_EVERY_S:
                    save(results)
                    saved = time.monotonic()
            on_change(results, record, judgement)
            reason = _stop_reason(results, rules, judgement, time.monotonic() - started)
            if reason and not stopping:
                stopping = True
                results.stopped = reason
            if stopping and pending:
                results.not_started += len(pending)
                pending.clear()
    except KeyboardInterrupt:
        results.interrupted = True
        results.not_started += len(pending) + len(in_flight)
        engine.close(abandon=True)
    else:
        engine.close(abandon=False)
    save(results)
    return results


def _stop_reason(results: CampaignResults, rules: StopRules, judgement: Judgement | None,
                 elapsed: float) -> str | None:
    if rules.until_first_failure and judgement is not None and judgement.outcome in FAILED:
        return "stopped at the first failing run (--until-first-failure)"
    if rules.time_budget_s is not None and elapsed >= rules.time_budget_s:
        return (f"time budget of {rules.time_budget_s:g} s spent (--time-budget); runs "
                "already started were finished")
    return None
