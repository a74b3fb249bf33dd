"""Simulated seconds per wall second: 3 brokers, 6 trio clients, 500 ops/s, mixed faults.

Runs one sim run exactly as `faultline run` does (`harness.runner.execute`: the queue
workload, the default mixed nemesis with a fault every 2 s on average, then heal,
recovery and final reads) and prints how fast simulated time went. Target: at least 20x
real time.

    python benchmarks/bench_sim.py [--duration 60] [--seed 1] [--ops 500] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import tempfile
import time
from pathlib import Path

from harness.run_config import RunConfig
from harness.runner import execute


def main() -> None:
    """Run once (optionally under cProfile) and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=60.0, help="simulated seconds")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--ops", type=float, default=500.0, help="target ops/s, all clients")
    parser.add_argument("--profile", action="store_true", help="print the top cProfile entries")
    args = parser.parse_args()
    config = RunConfig.build({"seed": args.seed, "time-limit": args.duration, "rate": args.ops,
                              "nemesis-interval": 2.0, "recovery": 3.0, "final-read": 10.0})
    profiler = cProfile.Profile() if args.profile else None
    with tempfile.TemporaryDirectory(prefix="bench-sim-") as scratch:
        start, cpu_start = time.perf_counter(), time.process_time()
        if profiler is not None:
            profiler.enable()
        executed = execute(config, Path(scratch))
        if profiler is not None:
            profiler.disable()
        wall = time.perf_counter() - start
        cpu = time.process_time() - cpu_start
        history = Path(scratch, "history.jsonl").read_text()
        events = [json.loads(line) for line in history.splitlines()]
    done = sum(1 for e in events if e["type"] == "ok" and e["process"] != "nemesis")
    simulated = executed.seconds
    print(f"sim: 3 brokers, {config.concurrency} trio clients, {config.nemesis} faults every "
          f"~{config.nemesis_interval_s:g} s, {config.rate:g} ops/s asked")
    print(f"simulated time      {simulated:10.1f} s")
    print(f"wall time           {wall:10.2f} s (CPU {cpu:.2f} s: on a busy machine, compare this)")
    print(f"speed               {simulated / wall:10.1f} x real time")
    print(f"completed ops       {done:10d} ({done / simulated:.0f}/s simulated)")
    print(f"wall per op         {wall / max(done, 1) * 1e6:10.0f} us")
    print(f"history events      {len(events):10d} ({len(events) / wall:.0f}/s wall)")
    if profiler is not None:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
