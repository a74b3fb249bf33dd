"""Benchmark `faultline check` end to end on a large synthetic history.

Generates a valid history from the correct-log model (default 1,000,000 events plus
the final reads, 10 logs, 50 concurrent client slots, a mix of sends, polls, assigns, a
consumer group with rebalances and commits, failures and crashes), then runs
`faultline check` on it as a subprocess, timing the whole command (start-up, parsing,
checking, writing results) and reading the child's peak resident memory. Prints the
figures; asserts nothing about speed. Target on a 2-core machine: >= 100,000 events/s
and peak memory < 2 GB.

    python3 benchmarks/bench_check.py [--events N] [--seed S] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time

from history.synthetic import CorrectLogModel, ModelConfig
from history.writer import HistoryWriter

CONFIG = ModelConfig(topics=2, partitions=5, slots=50, members=40, keys=40, max_batch=4,
                     max_poll=20, assign_logs=2, p_fail=0.02, p_info=0.002, p_crash_op=0.001,
                     p_nemesis=0.001)



def generate(path: str, events: int, seed: int) -> int:
    """Write a synthetic history of about `events` events to `path`; return the count."""
    model = CorrectLogModel(random.Random(seed), CONFIG)
    with open(path, "wb") as stream:
        writer = HistoryWriter(stream)
        for event in model.events(steps=events * 2, max_events=events):
            writer.write_event(event)
        return writer.next_index


def main() -> None:
    """Generate, check, print figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", help="directory to keep the history and results in")
    args = parser.parse_args()
    directory = args.keep or tempfile.mkdtemp(prefix="faultline-bench-")
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "history.jsonl")

    started = time.perf_counter()
    count = generate(path, args.events, args.seed)
    generated = time.perf_counter() - started
    size = os.path.getsize(path)
    print(f"generated {count:,} events ({size / 1e6:.1f} MB) in {generated:.1f} s")

    started = time.perf_counter()
    # The installed console script when there is one: exactly what a user runs.
    command = [shutil.which("faultline")] if shutil.which("faultline") else [
        sys.executable, "-m", "harness.cli"]
    run = subprocess.run(
        [*command, "check", path, "--mode", "subscribe"],
        capture_output=True, text=True, check=False,
    )
    elapsed = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    peak_kb = usage.ru_maxrss
    cpu = usage.ru_utime + usage.ru_stime
    print(run.stdout.strip().splitlines()[-2] if run.stdout.strip() else run.stderr)
    print(f"faultline check exit code: {run.returncode}")
    print(f"check time: {elapsed:.2f} s end to end")
    print(f"throughput: {count / elapsed:,.0f} events/s (target >= 100,000)")
    # CPU time is what the machine's other load cannot inflate.
    print(f"cpu time: {cpu:.2f} s, {count / cpu:,.0f} events per cpu-second")
    print(f"peak memory: {peak_kb / 1024:.0f} MB (target < 2048 MB)")
    if not args.keep:
        for name in ("history.jsonl", "results.json"):
            if os.path.exists(os.path.join(directory, name)):
                os.remove(os.path.join(directory, name))
        os.rmdir(directory)


if __name__ == "__main__":
    main()
