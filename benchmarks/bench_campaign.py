"""Campaign throughput: runs per minute and simulated seconds per wall second, by workers.

Runs the same campaign (one sim configuration, `--runs` seeds, the default queue
workload under partitions and kills) with 1, 2 and N local worker processes (N: the
number of cores, and twice that to show oversubscription), through the real campaign
loop and engine: process start-up, result archives and campaign.json included. Prints
the scaling ratio against one worker. Target: at least 1.8x from 1 to 2 workers on a
quiet 2-core machine.

    python benchmarks/bench_campaign.py [--runs 12] [--time-limit 10] [--workers 1,2,4]
    python benchmarks/bench_campaign.py --scheduler tcp://HOST:PORT   # a Dask cluster too
    python benchmarks/bench_campaign.py --spread 100    # wall time per run: median, p99, max

`--spread N` instead runs N default `faultline run` configurations (seeds 1..N, 60
simulated seconds, mixed faults) on all cores and prints the distribution of each run's
wall time, so a pathological seed stands out.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from harness.campaign.driver import StopRules, run_campaign
from harness.campaign.engines import DaskEngine, Engine, LocalEngine
from harness.campaign.matrix import build_matrix, parse_seeds
from harness.campaign.results import CampaignResults


def measure(engine: Engine, runs: int, time_limit: float) -> tuple[float, float, int]:
    """(wall seconds, simulated seconds, runs done) of one campaign on `engine`."""
    wall, results = campaign(engine, runs, {"time-limit": time_limit,
                                            "nemesis": "partition,kill", "recovery": 2.0,
                                            "final-read": 10.0})
    return wall, simulated(results), results.runs


def campaign(engine: Engine, runs: int, fixed: dict[str, object]
             ) -> tuple[float, CampaignResults]:
    """Run seeds 1..runs of the configuration `fixed` on `engine`; (wall s, results)."""
    matrix = build_matrix(None, fixed=fixed, axes=[], seeds=parse_seeds(runs, None))
    with tempfile.TemporaryDirectory(prefix="bench-campaign-") as scratch:
        folder = Path(scratch)
        (folder / "runs").mkdir()
        started = time.perf_counter()
        results = run_campaign(matrix, folder, engine, StopRules(),
                               on_change=lambda *_: None, save=lambda _: None)
        wall = time.perf_counter() - started
    return wall, results


def spread(runs: int, workers: int) -> None:
    """Print the distribution of wall time per default run over seeds 1..runs."""
    _, results = campaign(LocalEngine(workers), runs, {})
    walls = sorted(record.wall_seconds for cell in results.cells for record, _ in cell.runs)
    errors = [record for cell in results.cells for record, _ in cell.runs if record.error]
    slowest = max((record for cell in results.cells for record, _ in cell.runs),
                  key=lambda r: r.wall_seconds)
    print(f"{len(walls)} default runs (60 simulated s, mixed faults) on {workers} workers")
    print(f"wall s per run: median {statistics.median(walls):.1f}, "
          f"p90 {walls[int(0.9 * (len(walls) - 1))]:.1f}, "
          f"p99 {walls[int(0.99 * (len(walls) - 1))]:.1f}, max {walls[-1]:.1f} "
          f"(seed {slowest.seed}); runs that could not finish: {len(errors)}")


def simulated(results: CampaignResults) -> float:
    """Simulated seconds of every finished run."""
    return sum(record.run_seconds for cell in results.cells for record, _ in cell.runs)


def main() -> None:
    """Measure each worker count and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cores = os.cpu_count() or 1
    parser.add_argument("--runs", type=int, default=12, help="seeds (runs) per measurement")
    parser.add_argument("--time-limit", type=float, default=10.0, help="simulated s per run")
    parser.add_argument("--workers", default=f"1,2,{cores},{2 * cores}",
                        help="comma-separated worker counts")
    parser.add_argument("--scheduler", default=None, help="also measure this Dask cluster")
    parser.add_argument("--spread", type=int, default=None, metavar="N",
                        help="instead, the wall time distribution of N default runs")
    args = parser.parse_args()
    if args.spread:
        spread(args.spread, cores)
        return
    counts = sorted({int(n) for n in args.workers.split(",")})
    print(f"campaign: {args.runs} sim runs of {args.time_limit:g} simulated s (queue workload, "
          f"partition+kill), {cores} cores")
    print(f"{'engine':<28} {'wall s':>8} {'runs/min':>9} {'sim s/wall s':>13} {'vs 1':>6}")
    base: float | None = None
    for count in counts:
        wall, sim, done = measure(LocalEngine(count), args.runs, args.time_limit)
        per_minute = done / wall * 60
        base = base or per_minute
        print(f"{f'{count} local worker(s)':<28} {wall:8.1f} {per_minute:9.1f} "
              f"{sim / wall:13.1f} {per_minute / base:5.2f}x")
    if args.scheduler:
        engine = DaskEngine(args.scheduler)
        wall, sim, done = measure(engine, args.runs, args.time_limit)
        per_minute = done / wall * 60
        print(f"{engine.description[:28]:<28} {wall:8.1f} {per_minute:9.1f} "
              f"{sim / wall:13.1f} {per_minute / (base or per_minute):5.2f}x")


if __name__ == "__main__":
    main()
