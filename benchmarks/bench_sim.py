"""Simulated seconds per wall second: 3 brokers, 6 trio clients, 500 ops/s, mixed faults.

Runs `harness.runtime.sim.scenario.faults_scenario` (one producer and one consumer
per broker, the nemesis rotating through partition, kill, pause, power loss, clock
skew, link faults and connection resets) and prints how fast simulated time went.
Target: at least 20x real time.

    python benchmarks/bench_sim.py [--duration 60] [--seed 1] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time

from harness.runtime.sim.scenario import ScenarioOptions, run_faults_scenario


def main() -> None:
    """Run the scenario once (optionally under cProfile) and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=60.0, help="simulated seconds")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--ops", type=float, default=500.0, help="target ops/s, all clients")
    parser.add_argument("--profile", action="store_true", help="print the top cProfile entries")
    args = parser.parse_args()
    options = ScenarioOptions(
        duration_s=args.duration,
        recovery_s=3.0,
        producers_per_node=1,
        consumers_per_node=1,
        ops_per_second=args.ops,
        fault_interval_s=2.0,
    )
    profiler = cProfile.Profile() if args.profile else None
    start, cpu_start = time.perf_counter(), time.process_time()
    if profiler is not None:
        profiler.enable()
    history, result = run_faults_scenario(args.seed, options)
    if profiler is not None:
        profiler.disable()
    wall = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    events = len(history.splitlines())
    print("sim: 3 brokers, 6 trio clients, mixed fault rotation every 2 s")
    print(f"simulated time      {result.virtual_seconds:10.1f} s")
    print(f"wall time           {wall:10.2f} s (CPU {cpu:.2f} s: on a busy machine, compare this)")
    print(f"speed               {result.virtual_seconds / wall:10.1f} x real time")
    rate = result.value / result.virtual_seconds
    print(f"completed ops       {result.value:10d} ({rate:.0f}/s simulated)")
    print(f"wall per op         {wall / result.value * 1e6:10.0f} us")
    print(f"history events      {events:10d} ({events / wall:.0f}/s wall)")
    if profiler is not None:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
