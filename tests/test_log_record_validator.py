"""The leader's record walk (record_validator, compression) on bytes: every poison kind a
producer can send under a valid CRC, each codec, decompression bombs, and the log-level
all-or-nothing append."""

from __future__ import annotations

import contextlib
import random
from pathlib import Path

import pytest

from reference_broker.errors import (
    BrokerError,
    CorruptRecordError,
    ErrorCode,
    InvalidRecordError,
    InvalidTimestampError,
    MessageTooLargeError,
)
from reference_broker.log import LogConfig, PartitionLog
from reference_broker.log.record_batch import (
    parse_header,
    record_timestamps,
    validate_batch,
    validate_client_batch,
)
from reference_broker.log.record_validator import decompression_limit, validate_records
from reference_broker.os_env import OsStorage
from tests.poison_batches import COMPRESS, GZIP, LZ4, POISON, SNAPPY, ZSTD, records, xerial
from tests.test_log_record_batch import build_batch, decode
from tests.wire import TIMESTAMP_MS, encode_record, raw_batch

LIMIT = 1 << 20


def check(raw: bytes, *, create_time: bool = True, limit: int = LIMIT) -> int:
    """What the leader does to one batch: framing/CRC, header checks, the record walk."""
    header = parse_header(raw)
    validate_batch(header, raw)
    validate_client_batch(header)
    return validate_records(header, raw, 0, create_time=create_time, max_decompressed=limit)


# --- batches real clients write pass, and give their true max timestamp -----------------


@pytest.mark.parametrize("compression", [0, GZIP])
def test_kafka_python_batches_pass(compression: int) -> None:
    raw = build_batch([b"v" * 50] * 30, timestamp=5000, compression=compression, keys=None)
    assert check(raw) == 5029


@pytest.mark.parametrize("codec", [GZIP, SNAPPY, LZ4, ZSTD])
def test_every_codec_decodes_and_walks(codec: int) -> None:
    section = records(40, value=b"x" * 30)
    raw = raw_batch(COMPRESS[codec](section), record_count=40, attributes=codec)
    assert check(raw) == TIMESTAMP_MS + 39


def test_xerial_framed_snappy_as_the_java_client_writes_it() -> None:
    raw = raw_batch(xerial(records(20)), record_count=20, attributes=SNAPPY)
    assert check(raw) == TIMESTAMP_MS + 19


def test_headers_null_keys_and_values_pass() -> None:
    section = encode_record(0, None, headers=[(b"h", b"1"), (b"", None)]) + encode_record(
        1, b"", key=b""
    )
    assert check(raw_batch(section, record_count=2)) == TIMESTAMP_MS


def test_header_max_timestamp_is_recomputed_not_trusted() -> None:
    raw = raw_batch(records(3, ts_step=10), record_count=3, max_timestamp=-5)
    assert check(raw) == TIMESTAMP_MS + 20


def test_no_timestamps_at_all_give_minus_one() -> None:
    raw = raw_batch(records(2, ts_step=0), record_count=2, base_timestamp=-1, max_timestamp=-1)
    assert check(raw) == -1


# --- the poison kinds (catalogue in tests/poison_batches.py) ---------------------------


@pytest.mark.parametrize("name", sorted(POISON))
def test_poison_is_refused_with_kafkas_code(name: str) -> None:
    raw, code = POISON[name]
    with pytest.raises(BrokerError) as info:
        check(raw)
    assert info.value.code == ErrorCode(code), str(info.value)


def test_negative_timestamps_are_not_checked_for_log_append_time_topics() -> None:
    # As Kafka: the broker overwrites the time of such a topic, so the producer's is moot.
    raw = raw_batch(records(2), record_count=2, base_timestamp=-5, max_timestamp=-4)
    check(raw, create_time=False)
    with pytest.raises(InvalidTimestampError):
        check(raw)


@pytest.mark.parametrize("codec", [GZIP, SNAPPY, LZ4, ZSTD])
def test_decompression_bombs_stop_at_the_limit(codec: int) -> None:
    # 2 MiB of zeros after one record: a few KiB compressed, refused without ever
    # holding more than the limit (here 64 KiB).
    section = records(1) + bytes(2 << 20)
    raw = raw_batch(COMPRESS[codec](section), record_count=1, attributes=codec)
    assert len(raw) < 200_000
    with pytest.raises(MessageTooLargeError, match="decompresses to more than 65536"):
        check(raw, limit=1 << 16)


def test_a_batch_decompressing_to_exactly_the_limit_passes() -> None:
    section = records(5)
    raw = raw_batch(COMPRESS[ZSTD](section), record_count=5, attributes=ZSTD)
    assert check(raw, limit=len(section)) == TIMESTAMP_MS + 4
    with pytest.raises(MessageTooLargeError):
        check(raw, limit=len(section) - 1)


def test_the_decompression_limit_scales_with_max_message_bytes() -> None:
    assert decompression_limit(1048588) == 32 * 1048588
    assert decompression_limit(1000) == 32 << 20


def test_random_damage_raises_only_broker_errors() -> None:
    """Flipped, cut and inserted bytes under a valid CRC: a BrokerError or a pass, never
    IndexError, struct.error or anything else a client would see as a server crash."""
    rng = random.Random(7)
    base = [records(5, value=b"z" * 20)] + [COMPRESS[c](records(5)) for c in COMPRESS]
    for _ in range(600):
        codec = rng.randrange(5)
        section = bytearray(base[codec])
        for _ in range(rng.randint(1, 3)):
            if not section:
                break
            kind = rng.randrange(3)
            at = rng.randrange(len(section))
            if kind == 0:
                section[at] = rng.randrange(256)
            elif kind == 1:
                del section[at:]
            else:
                section[at:at] = bytes([rng.randrange(256)])
        raw = raw_batch(
            bytes(section), record_count=rng.choice([0, 1, 5, 6, 1 << 30]), attributes=codec
        )
        with contextlib.suppress(BrokerError):
            check(raw)


# --- ListOffsets over data stored before the leader walked records --------------------


def test_record_timestamps_over_broken_records_raises_corrupt_record() -> None:
    for section in (b"", b"\x7e\x00", records(3)[:-4], b"\x80" * 20):
        raw = raw_batch(section, record_count=3)
        with pytest.raises(CorruptRecordError):
            list(record_timestamps(parse_header(raw), raw))


# --- the log: all or nothing, and the stored max timestamp ----------------------------


class _Clock:
    def now_ms(self) -> int:
        return TIMESTAMP_MS


def _open(root: Path) -> PartitionLog:
    return PartitionLog.open(OsStorage(root), "events-0", LogConfig(), _Clock())


def test_one_bad_batch_fails_the_whole_append(tmp_path: Path) -> None:
    log = _open(tmp_path)
    good = build_batch([b"a", b"b"])
    bad = raw_batch(records(3), record_count=1000)
    with pytest.raises(InvalidRecordError):
        log.append_as_leader(good + bad, leader_epoch=0)
    assert log.log_end_offset == 0
    assert decode(log.read(0, 1 << 20).records) == []
    log.append_as_leader(good, leader_epoch=0)
    assert decode(log.read(0, 1 << 20).records) == [(0, b"a"), (1, b"b")]


def test_the_stored_max_timestamp_is_the_records_and_the_crc_holds(tmp_path: Path) -> None:
    log = _open(tmp_path)
    log.append_as_leader(raw_batch(records(3, ts_step=7), record_count=3, max_timestamp=-5), 0)
    stored = log.read(0, 1 << 20).records
    header = parse_header(stored)
    validate_batch(header, stored)
    assert header.max_timestamp == TIMESTAMP_MS + 14
    assert log.offset_for_timestamp(TIMESTAMP_MS + 10) == (2, TIMESTAMP_MS + 14)


def test_list_offsets_over_unparsable_old_data_answers_from_the_header(tmp_path: Path) -> None:
    # A follower stores what its leader sent without walking records (as Kafka): a batch
    # whose records do not parse can sit in a log; ListOffsets must answer, not crash.
    log = _open(tmp_path)
    log.append_as_follower(raw_batch(b"\x7e\x00", record_count=3, max_timestamp=TIMESTAMP_MS))
    assert log.offset_for_timestamp(TIMESTAMP_MS) == (0, TIMESTAMP_MS)


def test_a_zstd_frame_stating_more_than_the_limit_is_refused_before_decoding() -> None:
    section = records(5)
    raw = raw_batch(COMPRESS[ZSTD](section), record_count=5, attributes=ZSTD)
    with pytest.raises(MessageTooLargeError):
        check(raw, limit=len(section) - 1)
    # A frame that states less than it holds still stops at the limit, or fails its check.
    payload = bytearray(COMPRESS[ZSTD](section + bytes(1 << 20)))
    assert payload[4] >> 5 == 0b101  # single segment: a 4-byte content size comes next
    payload[5:9] = (100).to_bytes(4, "little")
    raw = raw_batch(bytes(payload), record_count=5, attributes=ZSTD)
    with pytest.raises((MessageTooLargeError, InvalidRecordError)):
        check(raw, limit=1 << 16)


def test_list_offsets_finds_the_record_inside_a_compressed_batch(tmp_path: Path) -> None:
    log = _open(tmp_path)
    log.append_as_leader(build_batch([b"v"] * 10, timestamp=TIMESTAMP_MS, compression=GZIP), 0)
    assert log.offset_for_timestamp(TIMESTAMP_MS + 4) == (4, TIMESTAMP_MS + 4)
