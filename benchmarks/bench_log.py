"""Throughput of the log layer: appends and reads of 200-byte messages on real files.

Prints figures; asserts nothing. Run: python benchmarks/bench_log.py [--messages N]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import trio
from kafka.record.default_records import DefaultRecordBatchBuilder

from reference_broker.log import LogConfig, PartitionLog
from reference_broker.log.record_batch import iter_batches
from reference_broker.os_env import OsStorage, WallClock


def make_batch(records: int, size: int, producer_id: int, sequence: int) -> bytes:
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=0,
        is_transactional=False,
        producer_id=producer_id,
        producer_epoch=0 if producer_id >= 0 else -1,
        base_sequence=sequence,
        batch_size=1 << 24,
    )
    payload = b"x" * size
    for i in range(records):
        builder.append(i, timestamp=1_700_000_000_000 + i, key=None, value=payload, headers=[])
    return bytes(builder.build())


async def run(
    root: Path, messages: int, per_batch: int, volatile: bool, idempotent: bool, flush_every: int
) -> None:
    storage = OsStorage(root, volatile_until_fsync=volatile)
    config = LogConfig(segment_bytes=64 << 20)
    log = PartitionLog.open(storage, "bench-0", config, WallClock())
    batches = messages // per_batch
    pid = 1 if idempotent else -1
    prebuilt = [
        make_batch(per_batch, 200, pid, i * per_batch if idempotent else -1)
        for i in range(batches if idempotent else 1)
    ]
    start = time.perf_counter()
    for i in range(batches):
        log.append_as_leader(prebuilt[i if idempotent else 0], leader_epoch=1)
        if flush_every and (i + 1) % flush_every == 0:
            await log.flush()
    await log.flush()
    elapsed = time.perf_counter() - start
    label = (
        f"append {per_batch:>4} msg/batch {'volatile' if volatile else 'durable ':8} "
        f"{'idempotent' if idempotent else 'plain     '} fsync every "
        f"{flush_every or 'end':>4} batches"
    )
    rate = log.size_in_bytes / elapsed / 1e6
    report(label, f"{messages / elapsed:>10,.0f} msg/s  {rate:7.1f} MB/s")

    start = time.perf_counter()
    offset, read = 0, 0
    while offset < log.log_end_offset:
        records = log.read(offset, 1 << 20).records
        read += len(records)
        *_, (last, _) = iter_batches(records)
        offset = last.next_offset
    elapsed = time.perf_counter() - start
    report(
        "read 1 MiB fetches",
        f"{messages / elapsed:>10,.0f} msg/s  {read / elapsed / 1e6:7.1f} MB/s",
    )
    log.close_now()

    start = time.perf_counter()
    reopened = PartitionLog.open(
        OsStorage(root, volatile_until_fsync=volatile), "bench-0", config, WallClock()
    )
    elapsed = time.perf_counter() - start
    size_mb = reopened.size_in_bytes / 1e6
    report(f"open with full CRC scan of {size_mb:.0f} MB", f"{elapsed:.2f} s")
    reopened.close_now()


def report(label: str, figures: str) -> None:
    print(f"{label:>70}: {figures}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=400_000)
    args = parser.parse_args()
    for per_batch, volatile, idempotent, flush_every in [
        (100, False, False, 0),
        (100, True, False, 0),
        (100, False, True, 0),
        (10, False, False, 0),
        (100, False, False, 1),
        (1, False, False, 0),
    ]:
        root = Path(tempfile.mkdtemp(prefix="faultline-bench-"))
        try:
            trio.run(run, root, args.messages, per_batch, volatile, idempotent, flush_every)
        finally:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
