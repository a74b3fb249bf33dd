"""Recovery of damaged partition directories: what survives of 1,000 messages in 5 segments.

Each case damages a log on real files the way a user's disk did, reopens it and checks:
how many of the 1,000 messages are still served, that cut-out bytes are kept aside in a
`.corrupt` file, that a WARNING names the damaged file, and that the next append gets an
offset beyond every offset handed out before (1,000). The counts are collected in
`SURVIVORS` and printed at the end of the module (`pytest -s`).
"""

from __future__ import annotations

import logging
import random
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from reference_broker.log import LogConfig, PartitionLog
from reference_broker.log.record_batch import HEADER_SIZE, parse_header
from reference_broker.os_env import OsStorage
from tests.test_log_partition import ManualClock, values
from tests.test_log_record_batch import build_batch, decode

MESSAGES = 1000
PER_BATCH = 10
BATCHES_PER_SEGMENT = 20
SURVIVORS: dict[str, int] = {}


def batch_size() -> int:
    return len(build_batch(values(PER_BATCH)))


def config() -> LogConfig:
    return LogConfig(segment_bytes=BATCHES_PER_SEGMENT * batch_size())


def open_log(root: Path) -> PartitionLog:
    return PartitionLog.open(OsStorage(root), "events-0", config(), ManualClock())


def write_log(root: Path, *, clean: bool) -> list[int]:
    """1,000 messages in batches of 10, 5 segments; returns the segment base offsets."""
    log = open_log(root)
    for i in range(MESSAGES // PER_BATCH):
        log.append_as_leader(build_batch(values(PER_BATCH, PER_BATCH * i)), 0)
    bases = log.segment_base_offsets
    assert len(bases) == 5
    if clean:
        trio.run(log.close)
    else:
        log.close_now()
    return bases


def served(log: PartitionLog) -> list[tuple[int, bytes]]:
    """Every record a reader gets walking from the log start (gaps skipped as after compaction)."""
    out: list[tuple[int, bytes]] = []
    offset = log.log_start_offset
    while offset < log.log_end_offset:
        chunk = decode(log.read(offset, 1 << 20).records)
        if not chunk:
            break
        out.extend(chunk)
        offset = chunk[-1][0] + 1
    return out


def segment_path(root: Path, base: int) -> Path:
    return root / "events-0" / f"{base:020d}.log"


def check_survivors(
    case: str, root: Path, caplog: pytest.LogCaptureFixture, damaged_file: Path, expected: int
) -> PartitionLog:
    log = open_log(root)
    records = served(log)
    SURVIVORS[case] = len(records)
    assert len(records) == expected
    # Every record served is the one originally written at that offset.
    assert all(value == b"value-%06d" % offset for offset, value in records)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(damaged_file.name in w for w in warnings), warnings
    assert any(w.startswith("recovered events-0") for w in warnings), warnings
    assert log.append_as_leader(build_batch([b"next"]), 1).base_offset >= MESSAGES
    return log


def corrupt_files(root: Path) -> list[Path]:
    return sorted((root / "events-0").glob("*.corrupt"))


@pytest.fixture(autouse=True)
def _warnings(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.INFO, logger="faultline.broker.log")
    yield


def flip(path: Path, position: int) -> None:
    data = bytearray(path.read_bytes())
    data[position] ^= 0x40
    path.write_bytes(bytes(data))


def test_flipped_byte_in_first_segment_after_clean_shutdown(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bases = write_log(tmp_path, clean=True)
    first = segment_path(tmp_path, bases[0])
    original = first.read_bytes()
    flip(first, 5 * batch_size() + 100)  # inside the 6th batch: offsets 50..59
    log = check_survivors("flipped byte, first of 5 segments", tmp_path, caplog, first, 990)
    assert log.segment_base_offsets[:5] == bases
    assert [(g.start, g.end) for g in log.recovery.gaps] == [(50, 60)]  # type: ignore[union-attr]
    [aside] = corrupt_files(tmp_path)
    assert aside.name == f"{0:020d}.{5 * batch_size()}-{6 * batch_size()}.corrupt"
    assert aside.read_bytes() != original[5 * batch_size() : 6 * batch_size()]
    assert len(aside.read_bytes()) == batch_size()
    assert "CRC-32C mismatch" in Path(str(aside) + ".reason").read_text()
    # Repaired for good: the next open finds nothing to repair and serves the same.
    trio.run(log.close)
    caplog.clear()
    again = open_log(tmp_path)
    assert again.recovery is not None and not again.recovery.repaired
    assert len(served(again)) == 991


def test_flipped_byte_in_last_segment(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    bases = write_log(tmp_path, clean=True)
    last = segment_path(tmp_path, bases[-1])
    flip(last, 3 * batch_size() + 70)
    log = check_survivors("flipped byte, last segment", tmp_path, caplog, last, 990)
    assert log.log_end_offset == MESSAGES + 1
    assert len(corrupt_files(tmp_path)) == 1


def test_flipped_byte_in_base_offset_of_a_batch(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """baseOffset lies outside the CRC: the batch that contradicts its neighbours goes."""
    bases = write_log(tmp_path, clean=True)
    middle = segment_path(tmp_path, bases[2])
    flip(middle, 4 * batch_size() + 2)  # a high byte of the 5th batch's baseOffset
    log = check_survivors("flipped byte in a baseOffset", tmp_path, caplog, middle, 990)
    assert log.log_end_offset == MESSAGES + 1
    assert [(g.start, g.end) for g in log.recovery.gaps] == [(440, 450)]  # type: ignore[union-attr]


def test_middle_segment_truncated_to_zero_bytes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bases = write_log(tmp_path, clean=True)
    middle = segment_path(tmp_path, bases[2])
    middle.write_bytes(b"")
    log = check_survivors("middle segment truncated to 0 bytes", tmp_path, caplog, middle, 800)
    assert log.segment_base_offsets[:5] == bases
    assert [(g.start, g.end) for g in log.recovery.gaps] == [(400, 600)]  # type: ignore[union-attr]


def test_middle_segment_deleted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    bases = write_log(tmp_path, clean=True)
    middle = segment_path(tmp_path, bases[2])
    middle.unlink()
    # The warning names the segment after the hole, whose base offset shows it.
    after = segment_path(tmp_path, bases[3])
    log = check_survivors("middle segment deleted", tmp_path, caplog, after, 800)
    assert log.segment_base_offsets[:4] == [bases[0], bases[1], bases[3], bases[4]]


def test_garbage_in_the_middle_of_a_segment(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bases = write_log(tmp_path, clean=False)
    seg = segment_path(tmp_path, bases[1])
    data = bytearray(seg.read_bytes())
    start = 7 * batch_size() + 10
    data[start : start + 2 * batch_size()] = b"\xab" * (2 * batch_size())
    seg.write_bytes(bytes(data))
    # Batches 8, 9 and 10 of the segment are hit; 7 keeps its first 10 bytes only.
    log = check_survivors("garbage across 3 batches", tmp_path, caplog, seg, 970)
    [aside] = corrupt_files(tmp_path)
    assert aside.stat().st_size == 3 * batch_size()
    assert log.log_end_offset == MESSAGES + 1


def test_a_megabyte_of_random_bytes_between_batches_is_cut_out_quickly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bases = write_log(tmp_path, clean=True)
    seg = segment_path(tmp_path, bases[3])
    data = seg.read_bytes()
    junk = random.Random(7).randbytes(1 << 20)
    seg.write_bytes(data[: 10 * batch_size()] + junk + data[10 * batch_size() :])
    started = time.perf_counter()
    check_survivors("1 MiB of random bytes inserted", tmp_path, caplog, seg, 1000)
    assert time.perf_counter() - started < 10
    [aside] = corrupt_files(tmp_path)
    assert aside.read_bytes() == junk


def test_torn_tail_after_crash(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    bases = write_log(tmp_path, clean=False)
    last = segment_path(tmp_path, bases[-1])
    size = last.stat().st_size
    with last.open("r+b") as f:
        f.truncate(size - batch_size() // 2)
    log = check_survivors("torn tail after crash", tmp_path, caplog, last, 990)
    # Truncated as Kafka truncates it; a torn tail is not damage, nothing is kept aside.
    # An empty batch (a header alone) now holds the retired offsets 990..999.
    assert last.stat().st_size == size - batch_size() + HEADER_SIZE + len(build_batch([b"next"]))
    assert corrupt_files(tmp_path) == []
    assert "torn tail" in (log.recovery.reason or "")  # type: ignore[union-attr]


def test_crc_failure_on_last_batch_after_crash_is_a_torn_write_kept_aside(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bases = write_log(tmp_path, clean=False)
    last = segment_path(tmp_path, bases[-1])
    size = last.stat().st_size
    flip(last, size - 3)
    log = check_survivors("CRC failure on the last batch after crash", tmp_path, caplog, last, 990)
    assert last.stat().st_size == size - batch_size() + HEADER_SIZE + len(build_batch([b"next"]))
    assert len(corrupt_files(tmp_path)) == 1
    assert "torn write" in (log.recovery.reason or "")  # type: ignore[union-attr]


def test_evidence_from_checkpoints_keeps_offsets_retired(tmp_path: Path) -> None:
    """The last segment deleted whole: the producer snapshot and the high-watermark
    checkpoint written at shutdown still show offsets up to 1,000 were handed out."""
    bases = write_log(tmp_path, clean=True)
    segment_path(tmp_path, bases[-1]).unlink()
    log = open_log(tmp_path)
    assert len(served(log)) == 800
    assert log.log_end_offset == MESSAGES
    assert log.append_as_leader(build_batch([b"next"]), 1).base_offset == MESSAGES


def test_evidence_from_the_index_of_an_emptied_last_segment(tmp_path: Path) -> None:
    """A crash (no checkpoint at close), then the last segment's `.log` lost every byte:
    its `.index` still names offsets handed out, and they are never reused."""
    bases = write_log(tmp_path, clean=False)
    index = (tmp_path / "events-0" / f"{bases[-1]:020d}.index").read_bytes()
    relative, _ = struct.unpack_from(">ii", index, len(index) - 8)
    indexed_end = bases[-1] + relative + 1
    assert indexed_end > bases[-1]
    segment_path(tmp_path, bases[-1]).write_bytes(b"")
    log = open_log(tmp_path)
    assert len(served(log)) == 800
    assert log.log_end_offset == indexed_end
    assert log.append_as_leader(build_batch([b"next"]), 1).base_offset == indexed_end


def test_clean_log_is_verified_and_reported_at_info(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_log(tmp_path, clean=True)
    caplog.clear()
    log = open_log(tmp_path)
    assert log.recovery is not None and not log.recovery.repaired
    assert log.recovery.batches == MESSAGES // PER_BATCH and log.recovery.clean_shutdown
    infos = [r for r in caplog.records if r.getMessage().startswith("recovered events-0")]
    assert [r.levelno for r in infos] == [logging.INFO]
    first = parse_header(segment_path(tmp_path, 0).read_bytes())
    assert first.base_offset == 0


def test_reads_indexes_epochs_producer_state_and_retention_cope_with_a_cut_out_batch(
    tmp_path: Path,
) -> None:
    """Idempotent batches in epochs 0 and 1 with small index intervals; a batch in the
    middle of the first segment is damaged. Afterwards every offset is found through the
    rebuilt index, the epoch cache and producer sequences go on, and retention works."""
    size = len(build_batch(values(PER_BATCH), producer_id=7, producer_epoch=0, base_sequence=0))
    cfg = LogConfig(segment_bytes=20 * size, index_interval_bytes=2 * size, retention_ms=1)
    storage = OsStorage(tmp_path)
    log = PartitionLog.open(storage, "events-0", cfg, ManualClock())
    for i in range(60):
        batch = build_batch(
            values(PER_BATCH, PER_BATCH * i), producer_id=7, producer_epoch=0, base_sequence=10 * i
        )
        log.append_as_leader(batch, 0 if i < 30 else 1)
    trio.run(log.close)
    first = segment_path(tmp_path, 0)
    flip(first, 3 * size + 80)  # offsets 30..39
    for snapshot in (tmp_path / "events-0").glob("*.snapshot"):
        snapshot.unlink()  # producer state is rebuilt by replaying the repaired log
    log = PartitionLog.open(storage, "events-0", cfg, ManualClock())
    kept = [o for o in range(600) if not 30 <= o < 40]
    for offset in kept:
        got = decode(log.read(offset, 1).records)
        assert got[0][0] <= offset <= got[-1][0], (offset, got)
    assert decode(log.read(30, 1).records)[0][0] == 40  # a read in the gap gets what follows
    assert log.end_offset_for_epoch(0) == (0, 300)
    assert log.producer_state()[7].last_seq == 599
    appended = log.append_as_leader(
        build_batch([b"next"], producer_id=7, producer_epoch=0, base_sequence=600), 2
    )
    assert appended.base_offset == 600 and not appended.duplicate
    log.update_high_watermark(log.log_end_offset)
    assert log.enforce_retention(T0_FAR) == 3  # every segment but the active one
    assert decode(log.read(log.log_start_offset, 1).records)[0][0] == log.log_start_offset


T0_FAR = 1_700_000_000_000 + 10**12


def test_print_survivor_counts() -> None:
    """Runs last in this module: the figures for the report (visible with -s)."""
    for case, count in SURVIVORS.items():
        print(f"{case}: {count} of {MESSAGES} messages served")


def test_second_power_cut_before_the_repair_is_flushed_keeps_offsets_retired(
    tmp_path: Path,
) -> None:
    """A power cut after a roll leaves an empty segment above a gap; recovery fills the
    gap and drops that segment. Until the fillers are fsynced the segment's files stay
    as evidence, so a second cut in between still never hands those offsets out again."""
    small = LogConfig(segment_bytes=700, index_interval_bytes=150)
    storage = OsStorage(tmp_path, volatile_until_fsync=True)
    log = PartitionLog.open(storage, "m-0", small, ManualClock())
    count = 0
    for sizes in ([1, 1], [1, 1, 1], [1, 1, 1], [1, 1, 1]):
        data = b""
        for size in sizes:
            data += build_batch([b"v%d" % (count + i) for i in range(size)])
            count += size
        log.append_as_leader(data, leader_epoch=0)
    rolled = log.log_end_offset
    assert (tmp_path / "m-0" / f"{8:020d}.log").exists(), "the appends must roll at 8"
    ends = []
    for _ in range(2):  # two power cuts, nothing flushed in between
        storage = OsStorage(tmp_path, volatile_until_fsync=True)
        log = PartitionLog.open(storage, "m-0", small, ManualClock())
        ends.append(log.log_end_offset)
    assert rolled > 8 and ends == [8, 8]
    trio.run(log.flush)
    assert not (tmp_path / "m-0" / f"{8:020d}.log").exists()  # replaced once durable
    storage = OsStorage(tmp_path, volatile_until_fsync=True)
    assert PartitionLog.open(storage, "m-0", small, ManualClock()).log_end_offset == 8
