"""Benchmark the transactional checks on a 100,000-transaction history.

Generates a history of `txn` operations from the correct transactional model
(`history.synthetic_txn`: 16 logs, 20 concurrent processes, polls and sends in most
transactions, aborts and indeterminate outcomes) with read-skew cycles planted now and
then, then times `checkers.check_file` on it in this process (parsing, queue and group
checks, the dependency graph, its cycles and their explanations) and once more with
process and realtime order. Prints the figures; asserts nothing about speed. Target on
this 2-core machine: < 30 s.

    python3 benchmarks/bench_txn_check.py [--txns N] [--seed S] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import tempfile
import time

from checkers import check_file
from history.synthetic_txn import TxnLogModel, TxnModelConfig
from history.writer import HistoryWriter

CONFIG = TxnModelConfig(logs=16, slots=20, read_logs=3, keys=64, max_sends=4, p_poll=0.8,
                        p_fail=0.03, p_info=0.005, p_skew=0.002)


def generate(path: str, txns: int, seed: int) -> tuple[int, int]:
    """Write the history to `path`; return (events, planted cycles)."""
    model = TxnLogModel(random.Random(seed), CONFIG)
    with open(path, "wb") as stream:
        writer = HistoryWriter(stream)
        for event in model.events(txns):
            writer.write_event(event)
        return writer.next_index, model.planted


def main() -> None:
    """Generate, check, print figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--txns", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", help="directory to keep the history in")
    args = parser.parse_args()
    directory = args.keep or tempfile.mkdtemp(prefix="faultline-bench-txn-")
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "history.jsonl")

    started = time.perf_counter()
    events, planted = generate(path, args.txns, args.seed)
    size = os.path.getsize(path)
    print(f"generated {args.txns:,} transactions, {events:,} events ({size / 1e6:.1f} MB), "
          f"{planted} read-skew cycles planted, in {time.perf_counter() - started:.1f} s")

    for orders in ((), ("process", "realtime")):
        started = time.perf_counter()
        cpu_started = time.process_time()
        verdict = check_file(path, mode="strict", txn_orders=orders)
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu_started
        graph = verdict["stats"].get("txn_graph", {})
        label = "+".join(orders) or "ww/wr/rw only"
        print(f"check ({label}): {elapsed:.2f} s wall, {cpu:.2f} s cpu (target < 30 s); "
              f"graph {graph.get('nodes', 0):,} nodes, {graph.get('edges', 0):,} edges; "
              f"found {verdict['counts']}")
        cycles = [item for kind in ("G0", "G1c", "G-single", "G2-item")
                  for item in verdict["anomalies"].get(kind, [])]
        if cycles:
            print("  first cycle:")
            for line in cycles[0]["explanation"]:
                print(f"    {line}")
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"peak memory: {peak_kb / 1024:.0f} MB")
    if not args.keep:
        os.remove(path)
        os.rmdir(directory)


if __name__ == "__main__":
    main()
