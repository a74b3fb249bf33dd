"""The recovery scan of one segment file: which batches are intact, which bytes are damaged.

Recovery trusts nothing but what it verifies. Every batch must have v2 framing (magic
2, a length that fits the file), a CRC-32C that matches, a non-negative
lastOffsetDelta, offsets above the previous batch's (a gap is allowed: compaction and
repairs leave them) and below the next segment's base offset, and a leader epoch no
older than the previous batch's.

At a batch that fails, the scan does not give up on the rest of the file: it
resynchronises, looking forward byte by byte (at each magic byte 2) for the next
position where a batch with a plausible header (offsets less than 2**24 above the
last intact one) and a valid CRC starts, and records the bytes in between as one
`DamagedRange`. Damage that runs to the end of the file
(nothing valid follows) is a *tail*; the caller decides whether that is a torn write
or damage.

baseOffset and partitionLeaderEpoch lie outside the CRC, so a flipped bit there
passes the CRC check. A baseOffset flipped upwards shows up when its successor seems
to go backwards: if the batch before that jumped over a gap and the successor fits
right after the batch before the jump, the jumping batch is the damaged one and goes
(one step of backtracking is enough for a single bad header). An epoch going
backwards is blamed on the later batch (a newer epoch is routine, an older one never).

The scan only reads; `LogSegment` applies the result (rewrites, truncates, keeps
bytes aside).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

from reference_broker.log.record_batch import (
    CURRENT_MAGIC,
    HEADER_SIZE,
    INT32_MAX,
    LOG_OVERHEAD,
    MAGIC_OFFSET,
    BatchHeader,
    compute_crc,
    parse_header,
)

# Bytes read at a time while scanning and resynchronising.
SCAN_CHUNK = 1 << 20
# A damaged header's offsets count as evidence of offsets handed out only when they
# lie this close above the last intact offset (a flipped high bit must not make the
# log jump to offset 2**56).
PLAUSIBLE_OFFSET_SPAN = 1 << 24

Reader = Callable[[int, int], bytes]
_HEADER = struct.Struct(">qiibIhiqqqhii")
_PREFIX = struct.Struct(">qi")
_CRC_FIELD = 17


@dataclass(frozen=True, slots=True)
class DamagedRange:
    """Bytes [start, end) of a segment file that hold no verifiable batch.

    `first_offset` is the first offset the damage may have held (one past the last
    intact batch before it); `claimed_next_offset` is one past the last offset a
    readable header inside it names, when that header is plausible (evidence of
    offsets handed out), else None. `at_tail`: nothing valid follows in this file.
    `incomplete`: at the tail, and too short to be the whole batch its header
    describes (the shape of a write cut by a crash). `next_intact_offset`: the base
    offset of the intact batch that follows, None at the tail.
    """

    start: int
    end: int
    reason: str
    first_offset: int
    claimed_next_offset: int | None
    at_tail: bool
    incomplete: bool
    next_intact_offset: int | None = None

    @property
    def size(self) -> int:
        """Bytes in the range."""
        return self.end - self.start


@dataclass(frozen=True, slots=True)
class ScannedBatch:
    """An intact batch and its byte position in the scanned file."""

    position: int
    header: BatchHeader


@dataclass(frozen=True, slots=True)
class SegmentScan:
    """The verdict on a whole segment file."""

    file_size: int
    batches: list[ScannedBatch]
    damaged: list[DamagedRange]

    @property
    def next_offset(self) -> int | None:
        """One past the last intact batch, or None when there is none."""
        return self.batches[-1].header.next_offset if self.batches else None


@dataclass(frozen=True, slots=True)
class _Bounds:
    """What a batch at some position must satisfy to follow what was accepted so far."""

    expected: int  # lowest acceptable base offset
    epoch: int  # lowest acceptable leader epoch
    limit: int | None  # offsets must stay below this (the next segment's base)


class _Reader:
    """Reads a file through a large buffer so that many small batches cost few reads."""

    def __init__(self, read: Reader, size: int) -> None:
        self._read = read
        self.size = size
        self._buf = b""
        self._start = 0

    def get(self, position: int, length: int) -> memoryview:
        """`length` bytes at `position` (fewer at the end of the file)."""
        end = min(position + length, self.size)
        if position < self._start or end > self._start + len(self._buf):
            self._buf = self._read(
                position, max(end - position, min(SCAN_CHUNK, self.size - position))
            )
            self._start = position
        rel = position - self._start
        return memoryview(self._buf)[rel : rel + (end - position)]


def _header_problem(header: BatchHeader, position: int, size: int, bounds: _Bounds) -> str | None:
    """Why the header at `position` cannot start an intact batch here, or None."""
    if header.magic != CURRENT_MAGIC:
        return f"magic {header.magic} where a v2 batch (magic 2) must start"
    length = header.size_in_bytes
    if length < HEADER_SIZE:
        return f"batch length {header.batch_length} is shorter than a v2 header"
    if position + length > size:
        return f"torn batch: header claims {length} bytes, only {size - position} remain"
    if header.last_offset_delta < 0:
        return f"negative lastOffsetDelta {header.last_offset_delta}"
    if header.base_offset < bounds.expected:
        return (
            f"batch base offset {header.base_offset} does not follow the previous batch "
            f"(expected at least {bounds.expected})"
        )
    if bounds.limit is not None and header.last_offset >= bounds.limit:
        return (
            f"batch offsets {header.base_offset}..{header.last_offset} reach the next "
            f"segment's base offset {bounds.limit}"
        )
    if header.partition_leader_epoch < bounds.epoch:
        return (
            f"leader epoch {header.partition_leader_epoch} is older than the previous "
            f"batch's {bounds.epoch}"
        )
    return None


def _verify(
    reader: _Reader, position: int, bounds: _Bounds
) -> tuple[BatchHeader | None, str | None]:
    """(header, None) when an intact batch starts at `position`, else (header or None, why)."""
    remaining = reader.size - position
    if remaining < HEADER_SIZE:
        return None, f"torn batch header: only {remaining} bytes at the end"
    header = parse_header(reader.get(position, HEADER_SIZE))
    problem = _header_problem(header, position, reader.size, bounds)
    if problem is not None:
        return header, problem
    actual = compute_crc(reader.get(position, header.size_in_bytes))
    if actual != header.crc:
        return header, f"CRC-32C mismatch (stored {header.crc:#010x}, computed {actual:#010x})"
    return header, None


def _resync(reader: _Reader, start: int, bounds: _Bounds) -> int | None:
    """The first position >= `start` where an intact batch that fits `bounds` starts."""
    pos = start
    magic = bytes([CURRENT_MAGIC])
    while pos + HEADER_SIZE <= reader.size:
        window = bytes(reader.get(pos + MAGIC_OFFSET, SCAN_CHUNK))
        at = window.find(magic)
        while at >= 0:
            candidate = pos + at
            if candidate + HEADER_SIZE > reader.size:
                return None
            base_offset, length = _PREFIX.unpack(reader.get(candidate, _PREFIX.size))
            # Offsets and length must be plausible before a CRC is worth computing (over
            # random bytes a claimed length can be anything up to the file's end).
            if (
                bounds.expected <= base_offset < bounds.expected + PLAUSIBLE_OFFSET_SPAN
                and length >= HEADER_SIZE - LOG_OVERHEAD
            ):
                header, problem = _verify(reader, candidate, bounds)
                if problem is None and header is not None:
                    return candidate
            at = window.find(magic, at + 1)
        pos += len(window)
    return None


def _claimed_next(header: BatchHeader | None, bounds: _Bounds, end: int | None) -> int | None:
    """One past the damaged header's last offset, if those offsets are believable."""
    if header is None or header.magic != CURRENT_MAGIC or header.last_offset_delta < 0:
        return None
    if not bounds.expected <= header.base_offset < bounds.expected + PLAUSIBLE_OFFSET_SPAN:
        return None
    if header.last_offset_delta >= PLAUSIBLE_OFFSET_SPAN:
        return None
    if bounds.limit is not None and header.last_offset >= bounds.limit:
        return None
    if end is not None and header.next_offset > end:
        return None
    return header.next_offset


def scan_segment(read: Reader, size: int, first_offset: int, limit: int | None) -> SegmentScan:
    """Verify every batch of a segment file of `size` bytes read through `read`.

    `first_offset` is the lowest offset the file may hold (its base offset, or where
    the previous segment ended if that is higher); `limit` the next segment's base
    offset (None for the last segment).
    """
    reader = _Reader(read, size)
    batches: list[ScannedBatch] = []
    damaged: list[DamagedRange] = []
    # Bounds before each accepted batch, for the one step of backtracking.
    before: list[_Bounds] = []
    bounds = _Bounds(first_offset, -1, limit)
    pos = 0
    while pos < size:
        header, problem = _verify(reader, pos, bounds)
        if problem is None and header is not None:
            before.append(bounds)
            batches.append(ScannedBatch(pos, header))
            bounds = _Bounds(header.next_offset, header.partition_leader_epoch, limit)
            pos += header.size_in_bytes
            continue
        if (
            header is not None
            and batches
            and _suspect_predecessor(reader, pos, batches[-1], before[-1])
        ):
            # The batch before this one claimed offsets or an epoch its successor
            # contradicts while this batch fits right after the one before it: the
            # predecessor's header (outside the CRC) is the damaged part.
            suspect = batches.pop()
            bounds = before.pop()
            damaged.append(
                DamagedRange(
                    suspect.position,
                    pos,
                    f"batch header claims offsets {suspect.header.base_offset}.."
                    f"{suspect.header.last_offset} in epoch "
                    f"{suspect.header.partition_leader_epoch}, which the next batch contradicts",
                    bounds.expected,
                    None,
                    at_tail=False,
                    incomplete=False,
                    next_intact_offset=header.base_offset,
                )
            )
            continue
        following = _resync(reader, pos + 1, bounds)
        end = size if following is None else following
        next_base = None
        if following is not None:
            next_base = parse_header(reader.get(following, HEADER_SIZE)).base_offset
        incomplete = following is None and (
            header is None or (header.magic == CURRENT_MAGIC and pos + header.size_in_bytes > size)
        )
        damaged.append(
            DamagedRange(
                pos,
                end,
                problem or "unreadable batch",
                bounds.expected,
                _claimed_next(header, bounds, next_base),
                at_tail=following is None,
                incomplete=incomplete,
                next_intact_offset=next_base,
            )
        )
        pos = end
    return SegmentScan(size, batches, damaged)


def _suspect_predecessor(
    reader: _Reader, position: int, predecessor: ScannedBatch, bounds_before: _Bounds
) -> bool:
    """Whether the predecessor jumped (an offset gap) and the batch at `position` is
    intact and fits where the predecessor started instead."""
    # Only an offset gap is suspicious: a newer epoch is what every new leader writes.
    if predecessor.header.base_offset <= bounds_before.expected:
        return False
    header, problem = _verify(reader, position, bounds_before)
    return problem is None and header is not None


def retired_offsets_batches(start: int, end: int, epoch: int, timestamp_ms: int) -> list[bytes]:
    """Record batches with no records covering offsets [start, end), as compaction leaves.

    Recovery writes them where offsets were handed out but their batches are gone at the
    log's end: a consumer or follower positioned there reads them and moves on to `end`
    (Kafka clients skip empty batches by their lastOffsetDelta), where an offset gap at
    the end would leave it waiting for the next write.
    """
    out: list[bytes] = []
    while start < end:
        count = min(end - start, INT32_MAX)
        header = bytearray(
            _HEADER.pack(
                start,
                HEADER_SIZE - LOG_OVERHEAD,
                epoch,
                CURRENT_MAGIC,
                0,
                0,  # attributes: no compression, CreateTime, not transactional
                count - 1,
                timestamp_ms,
                timestamp_ms,
                -1,  # producerId
                -1,  # producerEpoch
                -1,  # baseSequence
                0,  # recordCount
            )
        )
        struct.pack_into(">I", header, _CRC_FIELD, compute_crc(header))
        out.append(bytes(header))
        start += count
    return out
