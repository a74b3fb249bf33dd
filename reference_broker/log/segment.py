"""One segment of a partition log: a `.log` file of batches and its sparse indexes.

Kafka's layout: `<20-digit base offset>.log` holds whole v2 batches back to back;
`.index` holds 8-byte entries (int32 offset relative to the base, int32 byte
position), one every index.interval.bytes, each naming the last offset of the batch
that starts at that position; `.timeindex` holds 12-byte entries (int64 max
timestamp so far, int32 relative offset) written at the same moments.

The indexes live in memory as sorted lists and are appended to their files as they
grow. Recovery rebuilds them from the `.log`, the only file whose bytes are trusted.
"""

from __future__ import annotations

import logging
import struct
from bisect import bisect_left, bisect_right
from collections.abc import Collection, Iterator
from dataclasses import dataclass

from reference_broker import bugs
from reference_broker.env import Storage, StorageFile
from reference_broker.errors import CorruptRecordError
from reference_broker.log.record_batch import (
    CURRENT_MAGIC,
    HEADER_SIZE,
    LOG_OVERHEAD,
    BatchHeader,
    parse_header,
)
from reference_broker.log.recovery_scan import (
    PLAUSIBLE_OFFSET_SPAN,
    DamagedRange,
    SegmentScan,
    scan_segment,
)

logger = logging.getLogger("faultline.broker.log")

LOG_SUFFIX = ".log"
INDEX_SUFFIX = ".index"
TIME_INDEX_SUFFIX = ".timeindex"
# Damaged bytes cut out of a segment by recovery, and the note saying why.
CORRUPT_SUFFIX = ".corrupt"
REASON_SUFFIX = ".reason"

_INDEX_ENTRY = struct.Struct(">ii")
# baseOffset, batchLength and lastOffsetDelta: all a reader needs to step over a batch.
_LOCATE = struct.Struct(">qi11xi")
# Read positions remembered per segment for consumers and followers reading on.
_READ_ENDS_KEPT = 16
_TIME_ENTRY = struct.Struct(">qi")
_SCAN_CHUNK = 1 << 20


def file_name(base_offset: int, suffix: str) -> str:
    """Kafka's file name for a segment file: the base offset in 20 digits."""
    return f"{base_offset:020d}{suffix}"


def parse_file_name(name: str, suffix: str) -> int | None:
    """The base offset in a segment file name, or None when the name is not one."""
    if not name.endswith(suffix):
        return None
    stem = name[: -len(suffix)]
    if len(stem) != 20 or not stem.isdigit():
        return None
    return int(stem)


@dataclass(frozen=True, slots=True)
class BatchInfo:
    """What the log remembers of a batch: where it is and which offsets it holds."""

    position: int
    size: int
    base_offset: int
    last_offset: int
    max_timestamp: int


class LogSegment:
    """A segment's files and in-memory indexes; sizes and positions are in bytes."""

    def __init__(
        self,
        storage: Storage,
        directory: str,
        base_offset: int,
        *,
        index_interval_bytes: int,
        created_ms: int,
    ) -> None:
        self.storage = storage
        self.directory = directory
        self.base_offset = base_offset
        self.index_interval_bytes = index_interval_bytes
        self.created_ms = created_ms
        opened: list[StorageFile] = []
        try:
            for suffix in (LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX):
                opened.append(storage.open(self._path(suffix)))
        except BaseException:
            # Out of file descriptors (EMFILE) part-way: give back the ones already taken,
            # or they leak with no segment left to close them.
            for f in opened:
                f.close()
            raise
        self.log, self.index, self.time_index = opened
        self.size = self.log.size()
        self.closed = False
        self._reset_memory()

    def _reset_memory(self) -> None:
        self.next_offset = self.base_offset
        self.max_timestamp = -1
        self.offset_of_max_timestamp = -1
        # segment.ms counts from the first batch's max timestamp, as in Kafka.
        self.rolling_timestamp: int | None = None
        self._index_offsets: list[int] = []
        self._index_positions: list[int] = []
        self._time_stamps: list[int] = []
        self._time_offsets: list[int] = []
        self._bytes_since_index = 0
        # next offset -> byte position where an earlier read stopped: a reader that goes
        # on from there (every consumer and follower) needs no index lookup and scan.
        self._read_ends: dict[int, int] = {}

    def _path(self, suffix: str) -> str:
        return f"{self.directory}/{file_name(self.base_offset, suffix)}"

    @property
    def is_empty(self) -> bool:
        """Whether the segment holds no batch."""
        return self.size == 0

    @property
    def largest_timestamp(self) -> int:
        """The newest record timestamp in the segment, or its creation time when empty."""
        return self.max_timestamp if self.max_timestamp >= 0 else self.created_ms

    def index_entry_count(self) -> int:
        """How many offset-index entries the segment has (for tests and tools)."""
        return len(self._index_offsets)

    # --- writing ---------------------------------------------------------------------

    def append(self, data: bytes | bytearray, batches: list[BatchInfo]) -> None:
        """Append whole batches; each BatchInfo position is relative to `data`'s start."""
        start = self.size
        self.log.append(bytes(data))
        self.size += len(data)
        for batch in batches:
            self._track(start + batch.position, batch, write_index=True)

    def _track(self, position: int, batch: BatchInfo, *, write_index: bool) -> None:
        if self.rolling_timestamp is None:
            self.rolling_timestamp = batch.max_timestamp
        if batch.max_timestamp > self.max_timestamp:
            self.max_timestamp = batch.max_timestamp
            self.offset_of_max_timestamp = batch.last_offset
        if self._bytes_since_index > self.index_interval_bytes:
            self._add_index_entry(batch.last_offset, position, write_index)
            self._bytes_since_index = 0
        self._bytes_since_index += batch.size
        self.next_offset = batch.last_offset + 1

    def _add_index_entry(self, last_offset: int, position: int, write: bool) -> None:
        self._index_offsets.append(last_offset)
        self._index_positions.append(position)
        if write:
            self.index.append(_INDEX_ENTRY.pack(last_offset - self.base_offset, position))
        if not self._time_stamps or self.max_timestamp > self._time_stamps[-1]:
            self._time_stamps.append(self.max_timestamp)
            self._time_offsets.append(self.offset_of_max_timestamp)
            if write:
                self.time_index.append(
                    _TIME_ENTRY.pack(
                        self.max_timestamp, self.offset_of_max_timestamp - self.base_offset
                    )
                )

    def _rewrite_index_files(self) -> None:
        index = b"".join(
            _INDEX_ENTRY.pack(off - self.base_offset, pos)
            for off, pos in zip(self._index_offsets, self._index_positions, strict=True)
        )
        times = b"".join(
            _TIME_ENTRY.pack(ts, off - self.base_offset)
            for ts, off in zip(self._time_stamps, self._time_offsets, strict=True)
        )
        for f, content, entry in (
            (self.index, index, _INDEX_ENTRY.size),
            (self.time_index, times, _TIME_ENTRY.size),
        ):
            # An index that already matches the `.log` is left alone (the common case
            # after a clean shutdown): rewriting costs a truncate and a write per file.
            size = f.size()
            if size == len(content) and f.read(0, len(content)) == content:
                continue
            # One merely behind (entries not yet written at a crash) is normal; one that
            # disagrees with the log or is cut mid-entry was damaged: Kafka's sanity check
            # finds it corrupt and rebuilds it, saying so.
            common = min(size, len(content))
            if size % entry or f.read(0, common) != content[:common]:
                logger.warning("%s is corrupt (%d bytes, disagrees with its .log); rebuilt "
                               "from the log (%d bytes)", f.path, size, len(content))
            f.truncate(0)
            f.append(content)

    # --- recovery and truncation -------------------------------------------------------

    def scan(self, first_offset: int, limit: int | None) -> SegmentScan:
        """Verify every batch of the `.log` (framing, CRC-32C, offsets, epochs); reads only.

        `first_offset`: the lowest offset the segment may hold; `limit`: the next
        segment's base offset (None for the last segment).
        """
        return scan_segment(
            self.log.read, self.log.size(), max(first_offset, self.base_offset), limit
        )

    def repair(self, scan: SegmentScan, aside: Collection[DamagedRange]) -> list[str]:
        """Apply `scan`: copy the `aside` ranges to `.corrupt` files, remove every damaged
        range from the `.log`, and rebuild the in-memory state and index files.

        Only a damaged tail is a plain truncation; damage with intact batches after it
        is cut out by writing the intact batches to a temporary file renamed over the
        `.log` (a crash before that rename leaves the original file, which the next
        recovery repairs again). Returns the paths of the files written aside.
        """
        written = [self._keep_aside(r) for r in aside]
        damaged = scan.damaged
        if damaged and all(r.at_tail for r in damaged):
            # PLANTED BUG torn-tail-kept: the torn bytes stay in the file.
            if not bugs.enabled("torn-tail-kept"):
                self.log.truncate(damaged[0].start)
        elif damaged:
            self._rewrite_without(damaged)
        # Positions move down by the damaged bytes before them.
        batches: list[BatchInfo] = []
        removed = 0
        ranges = iter(damaged)
        pending = next(ranges, None)
        for scanned in scan.batches:
            while pending is not None and pending.end <= scanned.position:
                removed += pending.size
                pending = next(ranges, None)
            header = scanned.header
            batches.append(
                BatchInfo(
                    scanned.position - removed,
                    header.size_in_bytes,
                    header.base_offset,
                    header.last_offset,
                    header.max_timestamp,
                )
            )
        self._reset_memory()
        self.size = self.log.size()
        for info in batches:
            self._track(info.position, info, write_index=False)
        self._rewrite_index_files()
        return written

    def corrupt_file_name(self, damaged: DamagedRange) -> str:
        """Where the bytes of `damaged` are kept: `<base>.<start>-<end>.corrupt`."""
        name = f"{self.base_offset:020d}.{damaged.start}-{damaged.end}{CORRUPT_SUFFIX}"
        return f"{self.directory}/{name}"

    def _keep_aside(self, damaged: DamagedRange) -> str:
        path = self.corrupt_file_name(damaged)
        f = self.storage.open(path)
        try:
            f.truncate(0)
            for pos in range(damaged.start, damaged.end, _SCAN_CHUNK):
                f.append(self.log.read(pos, min(_SCAN_CHUNK, damaged.end - pos)))
        finally:
            f.close()
        note = self.storage.open(path + REASON_SUFFIX)
        try:
            note.truncate(0)
            note.append(
                (
                    f"file={self._path(LOG_SUFFIX)}\n"
                    f"bytes={damaged.start}-{damaged.end}\n"
                    f"first_offset={damaged.first_offset}\n"
                    f"claimed_next_offset={damaged.claimed_next_offset}\n"
                    f"reason={damaged.reason}\n"
                ).encode()
            )
        finally:
            note.close()
        return path

    def _rewrite_without(self, damaged: list[DamagedRange]) -> None:
        tmp_path = self._path(LOG_SUFFIX) + ".repair.tmp"
        tmp = self.storage.open(tmp_path)
        try:
            tmp.truncate(0)
            pos = 0
            size = self.log.size()
            for cut in [*damaged, None]:
                stop = size if cut is None else cut.start
                while pos < stop:
                    n = min(_SCAN_CHUNK, stop - pos)
                    tmp.append(self.log.read(pos, n))
                    pos += n
                if cut is not None:
                    pos = cut.end
        finally:
            tmp.close()
        self.log.close()
        self.storage.rename(tmp_path, self._path(LOG_SUFFIX))
        self.log = self.storage.open(self._path(LOG_SUFFIX))

    def _rebuild(self) -> None:
        """Rebuild the in-memory state from the `.log` as it is (no CRC check)."""
        self._reset_memory()
        self.size = self.log.size()
        for position, header, item in self._scan(0, self.size, want_raw=False):
            if isinstance(item, str) or header is None:
                break
            info = BatchInfo(
                position,
                header.size_in_bytes,
                header.base_offset,
                header.last_offset,
                header.max_timestamp,
            )
            self._track(position, info, write_index=False)
        self._rewrite_index_files()

    def index_evidence(self) -> int | None:
        """One past the highest offset the `.index` file names, if its entries are sane.

        The index is written as batches are appended; after the `.log` lost data it may
        still show which offsets had been handed out.
        """
        data = self.index.read(0, self.index.size())
        best: int | None = None
        last_rel = -1
        last_pos = -1
        for i in range(len(data) // _INDEX_ENTRY.size):
            rel, pos = _INDEX_ENTRY.unpack_from(data, i * _INDEX_ENTRY.size)
            if rel <= last_rel or pos <= last_pos or rel < 0 or rel >= PLAUSIBLE_OFFSET_SPAN:
                break
            last_rel, last_pos = rel, pos
            best = self.base_offset + rel + 1
        return best

    def _scan(
        self, start: int, end: int, *, want_raw: bool
    ) -> Iterator[tuple[int, BatchHeader | None, memoryview | str | None]]:
        """Yield (position, header, raw bytes or None) per batch; a reason string at junk.

        Reads the file in large chunks so that scanning many small batches costs few
        reads; a batch larger than a chunk is read whole when its bytes are wanted.
        """
        pos = start
        chunk = b""
        chunk_start = start
        while pos < end:
            remaining = end - pos
            if remaining < HEADER_SIZE:
                yield pos, None, f"torn batch header: only {remaining} bytes at the end"
                return
            rel = pos - chunk_start
            if rel + HEADER_SIZE > len(chunk):
                chunk = self.log.read(pos, min(_SCAN_CHUNK, remaining))
                chunk_start, rel = pos, 0
            header = parse_header(chunk, rel)
            problem = _framing_problem(header, remaining)
            if problem is not None:
                yield pos, header, problem
                return
            size = header.size_in_bytes
            raw: memoryview | None = None
            if want_raw:
                if rel + size > len(chunk):
                    chunk = self.log.read(pos, max(size, min(_SCAN_CHUNK, remaining)))
                    chunk_start, rel = pos, 0
                raw = memoryview(chunk)[rel : rel + size]
            yield pos, header, raw
            pos += size

    def truncate_to_position(self, position: int) -> None:
        """Cut the segment at a batch boundary and rebuild its in-memory state."""
        self.log.truncate(position)
        self._rebuild()

    # --- reading ----------------------------------------------------------------------

    def _index_lookup(self, offset: int) -> int:
        """Byte position to start scanning from for `offset` (Kafka's OffsetIndex.lookup)."""
        i = bisect_right(self._index_offsets, offset)
        return self._index_positions[i - 1] if i else 0

    def header_at(self, position: int) -> BatchHeader:
        """The header of the batch at `position` (which must be a batch boundary)."""
        return parse_header(self.log.read(position, HEADER_SIZE))

    def find(self, offset: int) -> int | None:
        """Position of the first batch whose last offset is >= `offset`, None if none is."""
        pos = self._read_ends.get(offset)
        if pos is not None:
            return pos if pos < self.size else None
        pos = self._index_lookup(offset)
        # Kafka's index is sparse: step over the batches between the entry and `offset`
        # reading only their lengths and last offsets.
        window = max(2 * self.index_interval_bytes, 8192)
        while pos < self.size:
            chunk = self.log.read(pos, min(window, self.size - pos))
            rel = 0
            while rel + _LOCATE.size <= len(chunk):
                base_offset, length, last_delta = _LOCATE.unpack_from(chunk, rel)
                if base_offset + last_delta >= offset:
                    return pos + rel
                rel += length + LOG_OVERHEAD
            if rel == 0:
                # Fewer bytes than a header left: a tail only recovery may see.
                return None
            pos += rel
        return None

    def read(self, position: int, max_bytes: int, max_offset: int, min_one: bool) -> bytes:
        """Whole batches from `position`: as many as fit in `max_bytes`, the first
        always when `min_one`, stopping before any batch reaching `max_offset`."""
        want = min(max(max_bytes, HEADER_SIZE), self.size - position)
        chunk = self.log.read(position, want)
        end = 0
        next_offset = -1
        while end + _LOCATE.size <= len(chunk):
            base_offset, length, last_delta = _LOCATE.unpack_from(chunk, end)
            last_offset = base_offset + last_delta
            if last_offset >= max_offset:
                break
            size = length + LOG_OVERHEAD
            if end + size > len(chunk):
                if end == 0 and min_one:
                    self._remember_read_end(last_offset + 1, position + size)
                    return self.log.read(position, size)
                break
            if end + size > max_bytes and not (end == 0 and min_one):
                break
            end += size
            next_offset = last_offset + 1
        if end:
            self._remember_read_end(next_offset, position + end)
        return bytes(chunk[:end])

    def _remember_read_end(self, next_offset: int, position: int) -> None:
        ends = self._read_ends
        if len(ends) >= _READ_ENDS_KEPT and next_offset not in ends:
            del ends[next(iter(ends))]
        ends[next_offset] = position

    def iter_batches_from(self, position: int) -> Iterator[tuple[int, BatchHeader]]:
        """(position, header) of each batch from `position` to the end (no CRC check)."""
        for pos, header, item in self._scan(position, self.size, want_raw=False):
            if isinstance(item, str) or header is None:
                raise CorruptRecordError(f"segment {self._path(LOG_SUFFIX)} at byte {pos}: {item}")
            yield pos, header

    def time_lookup_position(self, timestamp_ms: int) -> int:
        """A position before every batch whose max timestamp is >= `timestamp_ms`."""
        i = bisect_left(self._time_stamps, timestamp_ms)
        if i == 0:
            return 0
        # Every batch up to that offset has max timestamp < timestamp_ms.
        found = self.find(self._time_offsets[i - 1])
        return 0 if found is None else found

    # --- durability and lifetime -----------------------------------------------------

    async def flush(self) -> None:
        """fsync the log and both index files."""
        for f in (self.log, self.index, self.time_index):
            if self.closed:
                return
            await f.fsync()

    def close(self) -> None:
        """Release the file handles."""
        if not self.closed:
            self.closed = True
            for f in (self.log, self.index, self.time_index):
                f.close()

    def delete(self) -> None:
        """Close and remove the segment's files."""
        self.close()
        for suffix in (LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX):
            path = self._path(suffix)
            if self.storage.exists(path):
                self.storage.remove(path)


def _framing_problem(header: BatchHeader, remaining: int) -> str | None:
    if header.magic != CURRENT_MAGIC:
        return f"magic {header.magic} where a v2 batch (magic 2) must start"
    size = header.size_in_bytes
    if size < HEADER_SIZE:
        return f"batch length {header.batch_length} is shorter than a v2 header"
    if size > remaining:
        return f"torn batch: header claims {size} bytes, only {remaining} remain"
    return None
