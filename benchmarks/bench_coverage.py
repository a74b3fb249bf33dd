"""Fault-space coverage: distinct states reached per 100 runs, guided vs plain random.

Runs the same campaign twice through the real campaign loop and local workers: one
sim configuration (default queue workload, mixed faults, short runs), seeds 1..N,
first with the plain generator's schedules, then `--guided` (generations of `--batch`
seeds, each steered by what the earlier ones reached). Prints, for each, the distinct
states (`harness.coverage`: event kind @ faults in force) reached by the first 25, 50,
... runs in seed order, the event kinds reached and those never reached.

    python benchmarks/bench_coverage.py [--runs 100] [--time-limit 15] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from harness.campaign.driver import StopRules, plan, run_campaign
from harness.campaign.engines import LocalEngine
from harness.campaign.guided import GuidedPlan
from harness.campaign.matrix import build_matrix, parse_seeds
from harness.campaign.results import CampaignResults
from harness.coverage import KINDS, Coverage


def campaign(runs: int, fixed: dict[str, object], workers: int, *, guided: bool,
             batch: int) -> tuple[float, CampaignResults]:
    """(wall seconds, results) of seeds 1..runs of `fixed`, guided or not."""
    matrix = build_matrix(None, fixed=fixed, axes=[], seeds=parse_seeds(runs, None))
    planner = GuidedPlan(matrix, plan(matrix), batch=batch) if guided else None
    with tempfile.TemporaryDirectory(prefix="bench-coverage-") as scratch:
        folder = Path(scratch)
        (folder / "runs").mkdir()
        started = time.perf_counter()
        results = run_campaign(matrix, folder, LocalEngine(workers), StopRules(),
                               on_change=lambda *_: None, save=lambda _: None,
                               planner=planner)
        wall = time.perf_counter() - started
    return wall, results


def curve(results: CampaignResults, step: int) -> tuple[list[tuple[int, int]], Coverage]:
    """Distinct states after every `step` runs (seed order), and the total coverage."""
    records = sorted((record for cell in results.cells for record, _ in cell.runs),
                     key=lambda r: r.seed)
    total = Coverage()
    points = []
    for n, record in enumerate(records, start=1):
        total = total.merge(Coverage.from_json(record.coverage))
        if n % step == 0 or n == len(records):
            points.append((n, len(total.states)))
    return points, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--time-limit", type=float, default=15.0)
    parser.add_argument("--nemesis-interval", type=float, default=5.0)
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--batch", type=int, default=4)
    args = parser.parse_args()
    fixed: dict[str, object] = {"time-limit": args.time_limit, "recovery": 5.0,
                                "final-read": 10.0, "nemesis-interval": args.nemesis_interval}
    step = max(1, args.runs // 4)
    print(f"{args.runs} sim runs of {args.time_limit:g} simulated s (mixed faults, interval "
          f"{args.nemesis_interval:g} s), seeds 1..{args.runs}, {args.workers} workers")
    for guided in (False, True):
        wall, results = campaign(args.runs, fixed, args.workers, guided=guided,
                                 batch=args.batch)
        points, total = curve(results, step)
        errors = sum(1 for c in results.cells for r, _ in c.runs if r.error)
        name = f"guided (batch {args.batch})" if guided else "plain random"
        per_100 = round(len(total.states) * 100 / max(1, results.runs))
        print(f"\n{name}: {len(total.states)} distinct states in {results.runs} runs "
              f"(~{per_100} per 100 runs), {wall:.0f} s wall, {errors} run errors")
        print("  after runs: " + ", ".join(f"{n}: {s}" for n, s in points))
        kinds = total.kind_counts()
        print(f"  kinds reached {len(total.kinds_reached())}/{len(KINDS)}: "
              + ", ".join(f"{k} {kinds[k]}" for k in total.kinds_reached()))
        print(f"  never reached: {', '.join(total.kinds_missing()) or '-'}")


if __name__ == "__main__":
    main()
