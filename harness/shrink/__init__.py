"""Shrinking a failing sim run to a minimal reproducer (`faultline shrink RUN_DIR`).

- `harness.shrink.search`: the search itself, plain functions over candidates with a
  probe callback (ddmin over fault units, then fewer clients, lower rate, earlier and
  shorter faults, shorter time limit and recovery);
- `harness.shrink.trial`: running one candidate as an ordinary sim run, and the
  parallel probe;
- this module: `shrink_run`, from a run folder to `RUN_DIR/shrunk/`.

The property kept is "shows anomaly type T" for every T in a target set (Jepsen's and
QuickCheck's notion): by default the single most serious type the original run
showed (`headline_type`), or the types the user names. A candidate run with a harness
error, or one that could not finish, never counts as showing anything.
"""

from __future__ import annotations

import json
import resource
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from checkers.anomalies import ANOMALIES, FAMILIES, UNCERTAIN
from harness.run_config import ConfigError, RunConfig
from harness.shrink.search import Candidate, Fault, initial_candidate, shrink
from harness.shrink.trial import Prober, Trial, candidate_config, operations
from nemesis import Schedule, ScheduleError

# Which anomaly a shrink keeps by default: the first family with one, in this order
# (lost data first, then reads of data never written, ...), then the type's order in
# its family (lost-write before unseen before inconsistent-offsets).
FAMILY_ORDER = ("loss", "phantom", "duplication", "group", "ordering")
DEFAULT_BUDGET_S = 100.0


class ShrinkError(Exception):
    """The run cannot be shrunk (not a sim run, no anomaly, unreadable); says why."""


class NothingToShrink(ShrinkError):
    """The run showed no anomaly outside its allowed set."""


def headline_type(bad: Sequence[str]) -> str:
    """The most serious of a run's anomaly types (see FAMILY_ORDER); an uncertain one
    (`unseen`: acknowledged but never read, which a shorter run shows by chance) only
    when the run shows nothing else."""
    for certain in (True, False):
        for family in FAMILY_ORDER:
            for kind in FAMILIES[family]:
                if kind in bad and (kind not in UNCERTAIN or not certain):
                    return kind
    return bad[0]


@dataclass(frozen=True)
class Original:
    """A finished run as a shrink reads it from its folder."""

    run_dir: Path
    config: RunConfig
    schedule: Schedule
    bad: tuple[str, ...]
    operations: int


def read_original(run_dir: Path) -> Original:
    """The run in `run_dir`; ShrinkError unless it is a finished sim run with anomalies."""
    try:
        results = json.loads((run_dir / "results.json").read_text())
        settings = dict(results["config"])
        if settings.get("target") != "sim":
            raise ShrinkError(f"{run_dir} ran on --target {settings.get('target')}; only sim "
                              "runs can be shrunk (each candidate must replay exactly)")
        schedule_path = run_dir / "nemesis.json"
        schedule = Schedule.read(schedule_path)
        # Re-run under the schedule as it ran, wherever the folder has moved.
        settings["schedule"] = str(schedule_path.resolve())
        config = RunConfig.from_json(settings)
        verdict = results["verdict"]
    except (OSError, KeyError, TypeError, json.JSONDecodeError, ConfigError,
            ScheduleError) as exc:
        raise ShrinkError(f"cannot shrink {run_dir}: {exc}") from None
    if results.get("harness_errors"):
        raise ShrinkError(f"{run_dir} has harness errors (a faultline bug): its history "
                          "cannot be trusted, so there is nothing to shrink")
    bad = tuple(verdict.get("bad_anomaly_types", ()))
    if not bad:
        raise NothingToShrink(f"{run_dir} shows no anomaly (verdict {verdict.get('valid')}): "
                              "nothing to shrink")
    return Original(run_dir, config, schedule, bad, operations(verdict.get("stats", {})))


@dataclass
class ShrinkReport:
    """What a shrink did, for the console, campaign.json and tests."""

    original: Original
    types: tuple[str, ...]
    before: Candidate
    after: Candidate
    operations_before: int
    operations_after: int
    shrunk_dir: Path
    command: str
    tried: int
    complete: bool
    wall_seconds: float
    cpu_seconds: float
    bad_after: tuple[str, ...]

    def lines(self) -> list[str]:
        """What it removed, before -> after, one line each."""
        b, a = self.before, self.after
        kept = {f.number for f in a.faults}
        removed = [f for f in b.faults if f.number not in kept]
        out = [f"anomaly kept: {', '.join(self.types)} (the shrunk run shows "
               f"{', '.join(self.bad_after)})",
               f"faults: {len(b.faults)} -> {len(a.faults)}"]
        out += [f"  removed #{f.number}: {f.describe()}" for f in removed]
        before_by_number = {f.number: f for f in b.faults}
        for f in a.faults:
            old = before_by_number[f.number]
            out.append(f"  kept #{f.number}: {old.describe()} -> {f.describe()}")
        out += [
            f"concurrency: {b.concurrency} -> {a.concurrency}",
            f"rate: {b.rate:g} -> {a.rate:g}",
            f"time limit: {b.duration_ms / 1000:g} s -> {a.duration_ms / 1000:g} s",
            f"recovery: {b.recovery_ms / 1000:g} s -> {a.recovery_ms / 1000:g} s",
            f"operations: {self.operations_before} -> {self.operations_after}",
            f"candidates run: {self.tried}"
            + ("" if self.complete else " (time budget spent; the search stopped early)"),
            f"wall time: {self.wall_seconds:.1f} s; CPU time {self.cpu_seconds:.1f} s",
            f"shrunk run: {self.shrunk_dir}",
            f"reproduce: {self.command}",
        ]
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "types": list(self.types),
            "faults": [len(self.before.faults), len(self.after.faults)],
            "concurrency": [self.before.concurrency, self.after.concurrency],
            "rate": [self.before.rate, self.after.rate],
            "time_limit_s": [self.before.duration_ms / 1000, self.after.duration_ms / 1000],
            "recovery_s": [self.before.recovery_ms / 1000, self.after.recovery_ms / 1000],
            "operations": [self.operations_before, self.operations_after],
            "run": str(self.shrunk_dir),
            "command": self.command,
            "candidates": self.tried,
            "complete": self.complete,
            "wall_seconds": round(self.wall_seconds, 1),
            "cpu_seconds": round(self.cpu_seconds, 1),
        }


def shrink_run(run_dir: Path, *, types: Sequence[str] = (), workers: int = 2,
               budget_s: float = DEFAULT_BUDGET_S,
               on_trial: Callable[[Candidate, Trial, bool], None] | None = None,
               ) -> ShrinkReport:
    """Shrink the sim run in `run_dir` into `run_dir/shrunk/` and say what was removed.

    `types`: the anomaly types the shrunk run must still show (default: the original's
    headline type). No new candidate starts after `budget_s` seconds; the smallest found
    by then is re-run as the shrunk run and re-checked, and if that re-run does not show
    the types, the previous smaller candidates (and finally the original) are tried.
    """
    started = time.monotonic()
    cpu_started = _cpu_seconds()
    original = read_original(run_dir)
    for kind in types:
        if kind not in ANOMALIES:
            raise ShrinkError(f"--anomaly: unknown anomaly type {kind!r}; expected one of "
                              f"{', '.join(ANOMALIES)}")
        if kind not in original.bad:
            raise ShrinkError(f"--anomaly {kind}: {run_dir} does not show it (it shows "
                              f"{', '.join(original.bad)})")
    targets = tuple(types) or (headline_type(original.bad),)
    first = initial_candidate(original.schedule, concurrency=original.config.concurrency,
                              rate=original.config.rate)
    with tempfile.TemporaryDirectory(prefix="faultline-shrink-") as scratch:
        prober = Prober(original.config, targets, Path(scratch), workers=workers,
                        budget_s=budget_s, on_trial=on_trial)
        try:
            result = shrink(first, prober)
        finally:
            prober.close()
    shrunk_dir = run_dir / "shrunk"
    # Re-run and re-check the smallest candidate as the shrunk run; a candidate that
    # does not show the anomaly again is never returned.
    for candidate in reversed(result.kept):
        outcome = _write_shrunk(original.config, candidate, shrunk_dir)
        bad = tuple(outcome.verdict["bad_anomaly_types"])
        if not outcome.harness_errors and all(t in bad for t in targets):
            break
    else:
        shutil.rmtree(shrunk_dir, ignore_errors=True)
        raise ShrinkError(f"{run_dir} no longer shows {', '.join(targets)} when run again "
                          "(did faultline or the broker change since?)")
    command = (shrunk_dir / "command.txt").read_text().strip()
    return ShrinkReport(
        original=original, types=targets, before=first, after=candidate,
        operations_before=original.operations,
        operations_after=operations(outcome.verdict["stats"]), shrunk_dir=shrunk_dir,
        command=command, tried=result.tried, complete=result.complete,
        wall_seconds=time.monotonic() - started,
        cpu_seconds=_cpu_seconds() - cpu_started, bad_after=bad)


def _write_shrunk(base: RunConfig, candidate: Candidate, shrunk_dir: Path) -> Any:
    """Run `candidate` as an ordinary run into `shrunk_dir` (history, results, report,
    nodes/, nemesis.json) plus `schedule.json` and `command.txt`; its RunOutcome."""
    from harness.runner import run

    if shrunk_dir.exists():
        shutil.rmtree(shrunk_dir)
    shrunk_dir.mkdir(parents=True)
    config = candidate_config(base, candidate, shrunk_dir / "schedule.json")
    (shrunk_dir / "command.txt").write_text(config.command() + "\n")
    return run(config, shrunk_dir.parent, run_dir=shrunk_dir, index=False)


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (the candidate workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


__all__ = ["Fault", "NothingToShrink", "ShrinkError", "ShrinkReport", "headline_type",
           "read_original", "shrink_run"]
