"""Running shrink candidates: each an ordinary deterministic sim run in a scratch folder.

`evaluate` runs one candidate (`harness.runner.execute` under the candidate's schedule,
then the checker and the ground-truth oracle) and says which anomaly types it showed;
it is a plain module-level function so worker processes can run it. `Prober` is the
search's `Probe`: it hands candidates to a pool of local worker processes, `workers`
at a time in the search's order, and answers the first that shows the anomaly, so
parallel runs change only how long a shrink takes, never where it ends.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.run_config import RunConfig
from harness.shrink.search import Candidate, SearchStopped


@dataclass(frozen=True)
class Trial:
    """What one candidate run showed: the anomaly types outside its allowed set, its
    history events, or why it could not count (a run that stalled, a harness error)."""

    bad: tuple[str, ...]
    operations: int  # client operations invoked (history `invoke` events)
    wall_seconds: float
    error: str | None = None


def candidate_config(base: RunConfig, candidate: Candidate, schedule_path: Path) -> RunConfig:
    """`base` with the candidate's clients and rate, following the schedule (written at
    `schedule_path`), which sets the time limit and recovery."""
    schedule_path.write_bytes(candidate.schedule().to_json() + b"\n")
    changed = dataclasses.replace(base, concurrency=candidate.concurrency, rate=candidate.rate)
    return changed.with_schedule(str(schedule_path.resolve()))


def evaluate(config_json: dict[str, object], run_dir: str) -> Trial:
    """Run the configuration in `run_dir` (sim), check it, and say what it showed."""
    from checkers.verdict import check_file
    from harness.oracle import check_failed_sends
    from harness.runner import RunSetupError, RunStalled, execute, load_workload

    started = time.monotonic()
    folder = Path(run_dir)
    try:
        config = RunConfig.from_json(dict(config_json))
        workload = load_workload(config.workload)
        executed = execute(config, folder, workload=workload)
        history = str(folder / "history.jsonl")
        verdict = check_file(history, mode=workload.checker_mode, allow=config.allow)
        errors = ([] if executed.ground_truth is None
                  else check_failed_sends(history, executed.ground_truth))
    except (RunSetupError, RunStalled) as exc:
        return Trial((), 0, time.monotonic() - started, error=str(exc))
    wall = time.monotonic() - started
    ops = operations(verdict["stats"])
    if errors:
        return Trial((), ops, wall, error=f"{len(errors)} harness error(s)")
    return Trial(tuple(verdict["bad_anomaly_types"]), ops, wall)


def operations(stats: Mapping[str, Any]) -> int:
    """Client operations a history records: its `invoke` events, of every kind."""
    return sum(int(kind.get("invoke", 0)) for kind in stats.get("ops", {}).values())


def shows(trial: Trial, types: Sequence[str]) -> bool:
    """Whether a trial shows every one of the target anomaly types (and is trustworthy)."""
    return trial.error is None and all(t in trial.bad for t in types)


class Prober:
    """The search's probe: runs candidates under `scratch/NNNN/`, `workers` at a time,
    and answers the first (in the search's order) that shows every target type.
    Raises SearchStopped once `budget_s` of wall time has gone by."""

    def __init__(self, base: RunConfig, types: Sequence[str], scratch: Path, *,
                 workers: int, budget_s: float,
                 on_trial: Callable[[Candidate, Trial, bool], None] | None = None) -> None:
        self.base = base
        self.types = tuple(types)
        self.scratch = scratch
        self.workers = max(1, workers)
        self.deadline = time.monotonic() + budget_s
        self.trials: list[tuple[Candidate, Trial]] = []
        # A candidate the search reaches twice (a later pass re-trying a move) is not
        # run twice: runs are deterministic, so its first answer stands.
        self._seen: dict[tuple[bytes, int, float], Trial] = {}
        self._on_trial = on_trial
        self._pool: Executor | None = None
        if self.workers > 1:
            self._pool = ProcessPoolExecutor(max_workers=self.workers,
                                             mp_context=multiprocessing.get_context("spawn"))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __call__(self, candidates: Sequence[Candidate]) -> int | None:
        for start in range(0, len(candidates), self.workers):
            if time.monotonic() >= self.deadline:
                raise SearchStopped
            batch = candidates[start:start + self.workers]
            fresh = [c for c in batch if _key(c) not in self._seen]
            for candidate, trial in zip(fresh, self._run(fresh), strict=True):
                self._seen[_key(candidate)] = trial
                self.trials.append((candidate, trial))
                if self._on_trial is not None:
                    self._on_trial(candidate, trial, shows(trial, self.types))
            trials = [self._seen[_key(c)] for c in batch]
            for offset, trial in enumerate(trials):
                if shows(trial, self.types):
                    return start + offset
        return None

    def _run(self, batch: Sequence[Candidate]) -> list[Trial]:
        jobs: list[tuple[dict[str, Any], str]] = []
        for candidate in batch:
            folder = self.scratch / f"{len(self.trials) + len(jobs) + 1:04d}"
            folder.mkdir(parents=True, exist_ok=True)
            config = candidate_config(self.base, candidate, folder / "schedule.json")
            jobs.append((config.to_json(), str(folder)))
        if self._pool is None or len(jobs) <= 1:
            return [evaluate(*job) for job in jobs]
        futures = [self._pool.submit(evaluate, *job) for job in jobs]
        return [f.result() for f in futures]


def _key(candidate: Candidate) -> tuple[bytes, int, float]:
    return candidate.schedule().to_json(), candidate.concurrency, candidate.rate
