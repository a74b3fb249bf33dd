"""Start-up (recovery) time of a partition log on real files: every batch is verified.

Writes a log of `--mib` MiB (default 1 GiB) of 100-record batches, then times
`PartitionLog.open` after a clean shutdown, after an unclean one (no clean-shutdown
marker) and after a byte flipped in the middle of the first segment (the damaged batch
is cut out by rewriting that segment). The files are in the page cache, so the figures
are the verification cost (framing, offsets, CRC-32C through the `crc32c` package),
not disk reads.

Prints figures; asserts nothing. Run: python benchmarks/bench_recovery.py [--mib N]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import trio

from benchmarks.bench_log import make_batch
from reference_broker.log import LogConfig, PartitionLog
from reference_broker.os_env import OsStorage, WallClock

DIRECTORY = "bench-0"


def config(segment_mib: int) -> LogConfig:
    return LogConfig(segment_bytes=segment_mib << 20)


def write_log(root: Path, mib: int, segment_mib: int) -> tuple[int, int]:
    """Append batches until the log holds `mib` MiB; returns (batches, bytes)."""
    log = PartitionLog.open(OsStorage(root), DIRECTORY, config(segment_mib), WallClock())
    batch = make_batch(100, 100, -1, -1)
    batches = (mib << 20) // len(batch)
    for _ in range(batches):
        log.append_as_leader(batch, leader_epoch=1)
    trio.run(log.close)
    return batches, batches * len(batch)


def timed_open(root: Path, segment_mib: int) -> tuple[float, PartitionLog]:
    start = time.perf_counter()
    log = PartitionLog.open(OsStorage(root), DIRECTORY, config(segment_mib), WallClock())
    return time.perf_counter() - start, log


def report(label: str, seconds: float, size: int, log: PartitionLog) -> None:
    recovery = log.recovery
    assert recovery is not None
    print(
        f"{label:<34} {seconds:7.2f} s  {size / seconds / (1 << 20):8.0f} MiB/s  "
        f"{recovery.batches} batches verified, {len(recovery.repairs)} repairs"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=1024, help="log size in MiB (1024)")
    parser.add_argument("--segment-mib", type=int, default=128, help="segment.bytes in MiB")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-recovery-"))
    try:
        start = time.perf_counter()
        batches, size = write_log(root, args.mib, args.segment_mib)
        print(
            f"wrote {size / (1 << 20):.0f} MiB in {batches} batches of 100 records "
            f"({time.perf_counter() - start:.1f} s), segment.bytes={args.segment_mib} MiB"
        )
        seconds, log = timed_open(root, args.segment_mib)
        report("open after clean shutdown", seconds, size, log)
        log.close_now()  # no clean-shutdown marker: the next open is after a crash
        seconds, log = timed_open(root, args.segment_mib)
        report("open after unclean shutdown", seconds, size, log)
        log.close_now()
        first = sorted((root / DIRECTORY).glob("*.log"))[0]
        with first.open("r+b") as f:
            f.seek(first.stat().st_size // 2)
            byte = f.read(1)
            f.seek(-1, 1)
            f.write(bytes([byte[0] ^ 0x01]))
        seconds, log = timed_open(root, args.segment_mib)
        report("open after a flipped byte (repair)", seconds, size, log)
        log.close_now()
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
