"""A campaign's results: each run judged against its configuration's expectation, each
configuration summed up as the guarantee table reads it, and the campaign's exit code.

Judging a run (`judge`): the anomaly types outside the run's allowed set (its workload
mode's defaults and `--allow`) that the expectation does not tolerate are violations;
if the only ones are uncertain (`unseen`: acknowledged, never read), the run is
unknown. A weak configuration's run that shows an anomaly its expectation
`demonstrates` has demonstrated the weakness.

A run whose ground-truth oracle found harness errors (`harness.oracle`: a send recorded
`fail` that a broker appended) is a `harness-error`, whatever its anomalies: its history
is wrong, so it says nothing about the configuration, and it is a failure of faultline.
It outranks every other outcome in a configuration's status and the exit code (4).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from checkers.anomalies import FAMILIES, FAMILY_OF, UNCERTAIN
from harness import exit_codes
from harness.campaign.matrix import Cell, Matrix
from harness.campaign.task import RunRecord
from harness.coverage import Coverage

# Run outcomes.
PASS = "pass"
DEMONSTRATED = "demonstrated"
VIOLATED = "violated"
UNKNOWN = "unknown"
ERROR = "error"
HARNESS_ERROR = "harness-error"

# Configuration (cell) statuses, beyond the run outcomes above.
HELD = "held"
NOT_DEMONSTRATED = "not demonstrated"
SKIPPED = "skipped"
NOT_RUN = "not run"


@dataclass(frozen=True)
class Judgement:
    """One run against its configuration's expectation."""

    outcome: str  # PASS, DEMONSTRATED, VIOLATED, UNKNOWN, ERROR or HARNESS_ERROR
    violations: tuple[str, ...]  # anomaly types outside what was allowed and tolerated


def judge(record: RunRecord, cell: Cell) -> Judgement:
    """The outcome of `record` under `cell`'s expectation."""
    if record.error is not None:
        return Judgement(ERROR, ())
    if record.harness_errors:
        return Judgement(HARNESS_ERROR, ())
    expectation = cell.expectation
    violations = tuple(kind for kind in record.bad if kind not in expectation.tolerated)
    if violations and not set(violations) <= UNCERTAIN:
        return Judgement(VIOLATED, violations)
    if violations:
        return Judgement(UNKNOWN, violations)
    if expectation.weak and set(record.bad) & expectation.demonstrates:
        return Judgement(DEMONSTRATED, ())
    return Judgement(PASS, ())


@dataclass
class CellResults:
    """Every run of one configuration so far, and what they add up to."""

    cell: Cell
    runs: list[tuple[RunRecord, Judgement]] = field(default_factory=list)
    skipped_seeds: list[int] = field(default_factory=list)  # not run: --fail-fast

    def add(self, record: RunRecord) -> Judgement:
        """Judge and keep one run; returns its judgement."""
        judgement = judge(record, self.cell)
        self.runs.append((record, judgement))
        self.runs.sort(key=lambda pair: pair[0].seed)
        return judgement

    def outcomes(self) -> list[str]:
        """The run outcomes, in seed order."""
        return [judgement.outcome for _, judgement in self.runs]

    @property
    def status(self) -> str:
        """What the configuration's runs add up to (see the module docstring)."""
        if self.cell.error is not None:
            return SKIPPED
        outcomes = set(self.outcomes())
        for status in (HARNESS_ERROR, VIOLATED, ERROR, UNKNOWN):
            if status in outcomes:
                return status
        if not self.runs:
            return NOT_RUN
        if self.cell.expectation.weak:
            return DEMONSTRATED if DEMONSTRATED in outcomes else NOT_DEMONSTRATED
        return HELD

    def families(self) -> dict[str, dict[str, int]]:
        """Per anomaly family: runs that showed one outside the allowed set, and runs in
        which one of those violated the expectation."""
        table = {family: {"runs": 0, "violations": 0} for family in FAMILIES}
        for record, judgement in self.runs:
            shown = {FAMILY_OF[kind] for kind in record.bad}
            violated = {FAMILY_OF[kind] for kind in judgement.violations}
            for family in shown:
                table[family]["runs"] += 1
            for family in violated:
                table[family]["violations"] += 1
        return table

    def first(self, outcomes: Iterable[str]) -> RunRecord | None:
        """The lowest-seed run with one of `outcomes`."""
        wanted = set(outcomes)
        return next((record for record, judgement in self.runs
                     if judgement.outcome in wanted), None)

    def first_failure(self) -> RunRecord | None:
        """The run a person should look at first: a violation, else an error or unknown,
        else the first demonstration of the weakness, else the first run with anomalies."""
        return (self.first([HARNESS_ERROR]) or self.first([VIOLATED])
                or self.first([ERROR, UNKNOWN])
                or self.first([DEMONSTRATED])
                or next((r for r, _ in self.runs if r.bad), None))

    def availability(self) -> float | None:
        """Mean over runs of the share of time under faults in which sends were
        acknowledged and polls returned records (`harness.availability`)."""
        shares = [r.availability.get("share") for r, _ in self.runs]
        values = [s for s in shares if s is not None]
        return statistics.fmean(values) if values else None

    def recovery(self) -> dict[str, Any]:
        """Time to recover after the final heal: median and max over the runs that
        recovered, and how many did not."""
        times = [r.availability.get("recovery_s") for r, _ in self.runs
                 if r.error is None and r.availability.get("final_heal_s") is not None]
        done = [t for t in times if t is not None]
        return {
            "median_s": round(statistics.median(done), 3) if done else None,
            "max_s": round(max(done), 3) if done else None,
            "not_recovered": len(times) - len(done),
        }

    def coverage(self) -> Coverage:
        """Every state the configuration's runs reached (`harness.coverage`)."""
        total = Coverage()
        for record, _ in self.runs:
            total = total.merge(Coverage.from_json(record.coverage))
        return total

    def to_json(self, replay: dict[str, str],
                shrinks: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
        """As written into campaign.json; `replay` maps run names to their commands,
        `shrinks` run names to what `faultline campaign --shrink` made of them."""
        first = self.first_failure()
        counts = {outcome: self.outcomes().count(outcome)
                  for outcome in (PASS, DEMONSTRATED, VIOLATED, UNKNOWN, ERROR,
                                  HARNESS_ERROR)}
        anomaly_runs: dict[str, int] = {}
        for record, _ in self.runs:
            for kind in record.bad:
                anomaly_runs[kind] = anomaly_runs.get(kind, 0) + 1
        return {
            **self.cell.to_json(),
            "status": self.status,
            "seeds_run": [record.seed for record, _ in self.runs],
            "seeds_skipped": sorted(self.skipped_seeds),
            "outcomes": counts,
            "runs_with_anomaly": dict(sorted(anomaly_runs.items())),
            "families": self.families(),
            "availability": _round(self.availability()),
            "recovery": self.recovery(),
            "coverage": _coverage_summary(self.coverage()),
            "first_failing_run": first.run_name if first else None,
            "replay": replay.get(first.run_name) if first else None,
            "shrunk": (shrinks or {}).get(first.run_name) if first else None,
        }


def _coverage_summary(coverage: Coverage) -> dict[str, Any]:
    """campaign.json's per-configuration coverage: distinct states, runs per kind."""
    return {"distinct_states": len(coverage.states),
            "kinds": {k: n for k, n in coverage.kind_counts().items() if n},
            "kinds_missing": coverage.kinds_missing(),
            "states": sorted(coverage.states)}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


@dataclass
class CampaignResults:
    """Everything the campaign has learned so far."""

    matrix: Matrix
    cells: list[CellResults] = field(default_factory=list)
    not_started: int = 0
    stopped: str | None = None  # why the campaign stopped early, if it did
    interrupted: bool = False
    replays: dict[str, str] = field(default_factory=dict)  # run name -> reproduce command
    # run name -> its shrink (`ShrinkReport.to_json`, or {"error": ...}): --shrink
    shrinks: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.cells:
            self.cells = [CellResults(cell) for cell in self.matrix.cells]

    def to_shrink(self) -> list[tuple[RunRecord, tuple[str, ...]]]:
        """The first violating run of each violated configuration, with the anomaly
        types that violated its expectation (what a shrink must keep)."""
        found = []
        for cell in self.cells:
            for record, judgement in cell.runs:
                if judgement.outcome == VIOLATED:
                    found.append((record, judgement.violations))
                    break
        return found

    def add(self, record: RunRecord, replay: str = "") -> Judgement:
        """Judge and keep a finished run, with the command that reproduces it."""
        self.replays[record.run_name] = replay
        return self.cells[record.cell].add(record)

    @property
    def runs(self) -> int:
        """Runs finished so far."""
        return sum(len(c.runs) for c in self.cells)

    @property
    def partial(self) -> bool:
        """Whether some planned runs did not run (stopped, interrupted or skipped)."""
        return self.interrupted or self.stopped is not None or self.not_started > 0

    def claims(self) -> list[dict[str, Any]]:
        """Each claim (configurations sharing a `claim`): reproduced when every weak
        configuration demonstrated its weakness and every safe one held."""
        by_claim: dict[str, list[CellResults]] = {}
        for cell in self.cells:
            if cell.cell.claim:
                by_claim.setdefault(cell.cell.claim, []).append(cell)
        claims = []
        for claim, cells in by_claim.items():
            statuses = [c.status for c in cells]
            if HARNESS_ERROR in statuses:
                verdict = "harness error"
            elif VIOLATED in statuses:
                verdict = "violated"
            elif ERROR in statuses or UNKNOWN in statuses:
                verdict = "unknown"
            elif NOT_RUN in statuses or SKIPPED in statuses:
                verdict = "not run"
            elif NOT_DEMONSTRATED in statuses:
                verdict = "not demonstrated"
            else:
                verdict = "reproduced"
            claims.append({"claim": claim, "verdict": verdict,
                           "configurations": [c.cell.index for c in cells]})
        return claims

    def exit_code(self) -> int:
        """4 if a run had a harness error, else 1 if an expectation was violated, else 2
        if a run could not run, else 3 if a run's outcome is unknown, else 0 (weak
        configurations not demonstrated included)."""
        statuses = {c.status for c in self.cells}
        if HARNESS_ERROR in statuses:
            return exit_codes.HARNESS_ERROR
        if VIOLATED in statuses:
            return exit_codes.ANOMALIES
        if ERROR in statuses or not any(c.runs for c in self.cells):
            return exit_codes.BAD_INPUT
        if UNKNOWN in statuses:
            return exit_codes.UNKNOWN
        return exit_codes.VALID
