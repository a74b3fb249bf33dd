"""The log of one partition: segments of verbatim v2 batches, offsets, durability.

A `PartitionLog` owns the directory `<topic>-<partition>/` in a node's storage.
Appends are synchronous and touch only batch headers; `flush` (fsync) and `close`
are the async edges.

Opening a log recovers it, after a clean shutdown or not (a reference broker's data
is evidence, so this is stricter than Kafka, which trusts a cleanly closed log):
every batch of every segment is verified (`recovery_scan`: framing, magic, CRC-32C,
offsets above the previous batch's and below the next segment's base, epochs that
never go back). Nothing intact is discarded for damage elsewhere:

- damaged bytes are cut out of their segment and kept aside in
  `<base>.<start>-<end>.corrupt` (with a `.reason` note); the intact batches before
  and after stay and are served, leaving an offset gap as compaction would;
- a torn tail (an incomplete last batch of the last segment after an unclean
  shutdown, the normal power-loss case) is truncated as Kafka does; a last batch
  failing its CRC after an unclean shutdown is truncated too but kept aside;
- later segments are never deleted; a missing or emptied segment leaves a gap;
- the log end offset is at least one past the highest offset any surviving evidence
  shows handed out (segment file names, the high-watermark checkpoint, producer
  snapshot names, the `.index` files, readable headers of damaged batches), so no
  offset is ever handed out twice; an empty segment at that offset records it.

Every repair is logged at WARNING; the `RecoveryReport` is logged at WARNING when
anything was repaired, INFO otherwise. Rewriting a segment renames a new file over
the old one without an fsync (the Storage API fsyncs only asynchronously); the
broker flushes repaired logs before serving, and until then a power cut can lose
the rewritten file's bytes. A replica that lost data this way refetches it from its
leader (see `replication.manager`).

Offsets: `log_start_offset` (first offset kept by retention), `log_end_offset`
(LEO, the next offset to assign) and `high_watermark` (set by the broker: the
offset below which data is replicated enough to be read by consumers).

Transactions: the log tracks each producer's open transaction (`producer_state`), so
its `last_stable_offset` is the high watermark capped at the first offset of the
earliest open transaction; `append_marker_as_leader` writes a coordinator's COMMIT or
ABORT control batch, and every ABORT enters the aborted-transactions index
(`txn_index`) that read_committed fetches consult.

Durability follows Kafka's flush.messages / flush.ms: the log counts unflushed
records and tells the broker when a flush is due (`flush_due`); the broker awaits
`flush()` (on the produce path for flush.messages, from a timer for flush.ms).
"""

from __future__ import annotations

import errno
import logging
import struct
from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass

import trio

from reference_broker import bugs
from reference_broker.env import Clock, Storage, StorageFile
from reference_broker.errors import (
    BrokerError,
    InvalidRecordError,
    KafkaStorageError,
    MessageTooLargeError,
    OffsetOutOfRangeError,
    RecordListTooLargeError,
)
from reference_broker.log.config import LogConfig
from reference_broker.log.control_batch import TxnMarker, build_marker, parse_marker
from reference_broker.log.epoch_cache import LeaderEpochCache
from reference_broker.log.producer_state import (
    SNAPSHOT_SUFFIX,
    CompletedTxn,
    PlannedBatch,
    ProducerStateEntry,
    ProducerStateManager,
)
from reference_broker.log.record_batch import (
    BatchHeader,
    RecordMagicError,
    assign_offset_and_epoch,
    iter_batches,
    parse_header,
    record_timestamps,
    set_log_append_time,
    set_max_timestamp,
    validate_batch,
    validate_client_batch,
)
from reference_broker.log.record_validator import decompression_limit, validate_records
from reference_broker.log.recovery_report import RecoveryNotes, RecoveryReport
from reference_broker.log.recovery_scan import DamagedRange, retired_offsets_batches
from reference_broker.log.segment import (
    INDEX_SUFFIX,
    LOG_SUFFIX,
    REASON_SUFFIX,
    TIME_INDEX_SUFFIX,
    BatchInfo,
    LogSegment,
    file_name,
    parse_file_name,
)
from reference_broker.log.txn_index import AbortedTxn, TxnIndex

logger = logging.getLogger("faultline.broker.log")


class CorruptCheckpointError(OSError):
    """A checkpoint file failed its check: the broker refuses to start on it."""


HIGH_WATERMARK_FILE = "high-watermark.checkpoint"
# Written last by `close`, removed by `open`: the log was shut down cleanly.
CLEAN_SHUTDOWN_FILE = "clean-shutdown"
_HW_RECORD = struct.Struct(">qI")


@dataclass(frozen=True)
class AppendResult:
    """Where an append landed (or, for a duplicate, where the original landed)."""

    base_offset: int
    last_offset: int
    log_append_time: int  # -1 for CreateTime
    log_start_offset: int
    duplicate: bool
    record_count: int


@dataclass(frozen=True)
class ReadResult:
    """Whole batches for a fetch, with the partition's offsets at read time."""

    records: bytes
    high_watermark: int
    log_start_offset: int
    log_end_offset: int


def parse_partition_dir(directory: str) -> tuple[str, int]:
    """(topic, partition) from a directory named `<topic>-<partition>`."""
    name = directory.rstrip("/").rsplit("/", 1)[-1]
    topic, sep, number = name.rpartition("-")
    if not sep or not topic or not number.isdigit():
        raise ValueError(f"partition directory {directory!r} is not named <topic>-<partition>")
    return topic, int(number)


class PartitionLog:
    """A partition's segmented log. Create with `PartitionLog.open`."""

    def __init__(self, storage: Storage, directory: str, config: LogConfig, clock: Clock) -> None:
        self.storage = storage
        self.directory = directory.rstrip("/")
        self.topic, self.partition = parse_partition_dir(self.directory)
        self.config = config
        self._clock = clock
        self._segments: list[LogSegment] = []
        self._bases: list[int] = []
        self._producers = ProducerStateManager()
        self._txn_index = TxnIndex(storage, self.directory)
        self._txn_dirty = False
        self._epochs = LeaderEpochCache()
        self._log_end_offset = 0
        self._high_watermark = 0
        self._recovery_point = 0
        self._unflushed_messages = 0
        self._rolled_unflushed = False
        self._last_flush_ms = clock.now_ms()
        self._dirty: set[LogSegment] = set()
        self._unsynced_files: list[StorageFile] = []
        self._dir_dirty = False
        # Segments recovery dropped whose files stay, as evidence of the offsets handed
        # out, until the repair that replaces them is durable (deleted by the next flush).
        self._superseded: list[LogSegment] = []
        self._flush_lock = trio.Lock()
        self._closed = False
        self._failure: str | None = None
        self._truncations = 0
        self.recovery: RecoveryReport | None = None
        # Where a replica that can refetch from a leader must restart after a repair.
        self._refill_from: int | None = None

    # --- opening and recovery -------------------------------------------------------

    @classmethod
    def open(
        cls, storage: Storage, directory: str, config: LogConfig, clock: Clock
    ) -> PartitionLog:
        """Open (creating if needed) and recover the log in `directory`."""
        log = cls(storage, directory, config, clock)
        storage.makedirs(log.directory)
        try:
            log._recover()
        except BaseException:
            log.close_now()  # release the segments opened so far (EMFILE part-way)
            raise
        return log

    def _recover(self) -> None:
        names = self.storage.listdir(self.directory)
        bases = sorted(b for b in (parse_file_name(n, LOG_SUFFIX) for n in names) if b is not None)
        # Index files without their log are leftovers of a deleted segment.
        for name in names:
            for suffix in (INDEX_SUFFIX, TIME_INDEX_SUFFIX):
                base = parse_file_name(name, suffix)
                if base is not None and base not in bases:
                    self.storage.remove(f"{self.directory}/{name}")
            if name.endswith(".tmp"):
                self.storage.remove(f"{self.directory}/{name}")
        clean = CLEAN_SHUTDOWN_FILE in names
        if clean:
            # From here on the log is open: a crash must not look like a clean stop.
            self.storage.remove(f"{self.directory}/{CLEAN_SHUTDOWN_FILE}")
            self._dir_dirty = True
        now = self._clock.now_ms()
        if not bases:
            bases = [0]
        recovery = RecoveryNotes(self.directory, clean)
        # Offsets handed out before, as far as surviving files show (a next offset each).
        recovery.evidence("segment file name", bases[-1])
        recovery.evidence(HIGH_WATERMARK_FILE, self._read_high_watermark())
        for offset in self._snapshot_offsets():
            recovery.evidence(file_name(offset, SNAPSHOT_SUFFIX), offset)
        next_offset = bases[0]
        for i, base in enumerate(bases):
            segment = self._new_segment(base, created_ms=now, track=False)
            path = f"{self.directory}/{file_name(base, LOG_SUFFIX)}"
            if i > 0 and base > next_offset:
                # Segments roll at the LEO, so each starts where the previous one ends: a
                # missing segment, or one that lost its end, leaves a hole. Later segments
                # stay; the hole reads like a compacted range.
                previous = f"{self.directory}/{file_name(bases[i - 1], LOG_SUFFIX)}"
                recovery.missing(
                    next_offset,
                    base,
                    f"{previous} ends at offset {next_offset}, {path} starts at offset {base}",
                )
            last = i + 1 == len(bases)
            index_end = segment.index_evidence()
            # A segment's offsets end below the next one's base; an index saying
            # otherwise is itself damaged.
            if index_end is not None and (last or index_end <= bases[i + 1]):
                recovery.evidence(file_name(base, INDEX_SUFFIX), index_end)
            scan = segment.scan(next_offset, None if last else bases[i + 1])
            aside: list[DamagedRange] = []
            for damaged in scan.damaged:
                torn = last and damaged.at_tail and damaged.incomplete and not clean
                recovery.damaged(path, damaged, torn=torn, last_segment=last)
                if not torn:
                    aside.append(damaged)
            if scan.damaged:
                for written in segment.repair(scan, aside):
                    recovery.aside(written)
                    self._unsynced_files.append(self.storage.open(written))
                    self._unsynced_files.append(self.storage.open(written + REASON_SUFFIX))
                self._dirty.add(segment)
                self._dir_dirty = True
            else:
                segment.repair(scan, ())
            recovery.batches += len(scan.batches)
            for scanned in scan.batches:
                self._epochs.assign(
                    scanned.header.partition_leader_epoch, scanned.header.base_offset
                )
            self._append_segment(segment)
            next_offset = max(segment.next_offset, base)
        while (
            len(self._segments) > 1
            and self._active.is_empty
            and self._segments[-2].next_offset < self._active.base_offset
        ):
            # An empty last segment above a gap (the one before it lost its end, say in a
            # power cut after the roll): readers between the two would find no batch and
            # wait. Its name stays evidence; the fillers below go where readers look.
            empty = self._segments.pop()
            self._bases.pop()
            self._dirty.discard(empty)
            self._superseded.append(empty)
            self._dir_dirty = True
        end = recovery.evidence_end()
        if end > self._active.next_offset:
            # Offsets up to `end` were handed out (a checkpoint, snapshot, index or damaged
            # header says so) but their batches are gone: never hand them out again.
            start = self._active.next_offset
            recovery.missing(start, end, "the log's end lost its batches")
            # Empty batches hold the retired offsets, so readers at them move on to the
            # new log end (and the offsets stay retired across the next restart).
            epoch = max(self._epochs.latest_epoch, 0)
            for filler in retired_offsets_batches(start, end, epoch, now):
                header = parse_header(filler)
                self._log_end_offset = header.base_offset
                info = BatchInfo(0, len(filler), header.base_offset, header.last_offset, now)
                self._write(filler, [info])
                self._epochs.assign(epoch, header.base_offset)
            self._unflushed_messages = 0
            self._dir_dirty = True
        self._log_end_offset = max(self._active.next_offset, self._active.base_offset)
        self._recovery_point = self._log_end_offset
        self._high_watermark = min(self._read_high_watermark(), self._log_end_offset)
        self._high_watermark = max(self._high_watermark, self.log_start_offset)
        self._txn_index.load(self._bases, self._log_end_offset)
        if bugs.enabled("producer-state-not-recovered"):
            # PLANTED BUG producer-state-not-recovered: no snapshot load, no log replay.
            self._producers = ProducerStateManager()
        else:
            self._rebuild_producer_state()
        self.recovery = recovery.report(len(self._segments), self._log_end_offset)
        self._refill_from = self.recovery.first_missing_offset
        recovery.log(self.recovery)

    def take_refill_offset(self) -> int | None:
        """The lowest offset recovery lost (once; None when nothing is missing).

        The replica manager asks when this log first becomes a follower or leader: a
        follower truncates to it and refetches from the leader, a leader keeps the gap.
        """
        offset, self._refill_from = self._refill_from, None
        return offset

    def _new_segment(self, base: int, *, created_ms: int, track: bool = True) -> LogSegment:
        for old in [s for s in self._superseded if s.base_offset == base]:
            # A new segment takes the old one's file names: the old files must go first.
            self._superseded.remove(old)
            old.delete()
        segment = LogSegment(
            self.storage,
            self.directory,
            base,
            index_interval_bytes=self.config.index_interval_bytes,
            created_ms=created_ms,
        )
        if track:
            self._append_segment(segment)
        return segment

    def _append_segment(self, segment: LogSegment) -> None:
        self._segments.append(segment)
        self._bases.append(segment.base_offset)

    @property
    def _active(self) -> LogSegment:
        return self._segments[-1]

    def _snapshot_offsets(self) -> list[int]:
        offsets = (
            parse_file_name(n, SNAPSHOT_SUFFIX) for n in self.storage.listdir(self.directory)
        )
        return sorted(o for o in offsets if o is not None)

    def _rebuild_producer_state(self) -> None:
        """Load the newest usable snapshot at or below the LEO and replay the log after it."""
        self._producers = ProducerStateManager()
        start = self.log_start_offset
        for offset in reversed(self._snapshot_offsets()):
            path = f"{self.directory}/{file_name(offset, SNAPSHOT_SUFFIX)}"
            if offset > self._log_end_offset:
                self.storage.remove(path)  # describes data the log no longer has
                continue
            f = self.storage.open(path, create=False)
            try:
                data = f.read(0, f.size())
            finally:
                f.close()
            try:
                self._producers = ProducerStateManager.from_snapshot(data)
            except ValueError as exc:
                # Kafka's CorruptSnapshotException: delete it, rebuild from an older one or
                # from the log (slower, nothing lost).
                logger.warning("%s: producer snapshot %s is corrupt (%s); deleted, producer "
                               "state rebuilt from the log instead", self.directory, path, exc)
                self.storage.remove(path)
                continue
            start = offset
            break
        for segment in self._segments[self._segment_index(start) :]:
            found = segment.find(start)
            if found is None:
                continue
            for position, header in segment.iter_batches_from(found):
                if header.base_offset < start:
                    continue
                if header.is_control and header.has_producer_id:
                    raw = segment.log.read(position, header.size_in_bytes)
                    self._replay_marker(header, raw, segment.base_offset)
                else:
                    self._producers.replay(header)

    def _replay_marker(self, header: BatchHeader, raw: bytes, segment_base: int) -> None:
        """A marker already in the log (recovery, replication): close the transaction."""
        try:
            marker = parse_marker(header, raw)
        except BrokerError as exc:
            logger.warning("%s: unreadable transaction marker: %s", self.directory, exc)
            self._producers.replay(header)
            return
        entry, completed = self._producers.plan_marker(
            header, marker, header.base_offset, check=False
        )
        self._producers.install_entry(entry)
        if completed is not None:
            self._index_completed(completed, segment_base)

    def _index_completed(self, completed: CompletedTxn, segment_base: int) -> None:
        if not completed.aborted:
            return
        unstable = self._producers.first_unstable_offset()
        lso = completed.last_offset + 1 if unstable is None else unstable
        entry = AbortedTxn(
            completed.producer_id, completed.first_offset, completed.last_offset, lso
        )
        if self._txn_index.add(entry, segment_base):
            self._txn_dirty = True
            self._dir_dirty = True

    def _read_high_watermark(self) -> int:
        path = f"{self.directory}/{HIGH_WATERMARK_FILE}"
        if not self.storage.exists(path):
            return 0
        f = self.storage.open(path, create=False)
        try:
            data = f.read(0, _HW_RECORD.size)
        finally:
            f.close()
        if len(data) == _HW_RECORD.size:
            hw, check = _HW_RECORD.unpack(data)
            if check == _hw_check(hw):
                return hw
        # The file is replaced whole (written aside, fsynced, renamed), so a bad one was
        # damaged on disk. Kafka's checkpoint reader then takes the log dir offline and
        # the broker halts; so does this one, saying what to do.
        raise CorruptCheckpointError(
            errno.EIO,
            f"{path} is corrupt ({len(data)} bytes, failing its check); the log directory "
            "cannot be trusted and the broker will not start. Delete that file to start "
            "anyway: the high watermark is then learned again from the partition leader",
        )

    # --- offsets ----------------------------------------------------------------------

    @property
    def log_start_offset(self) -> int:
        """The first offset still in the log."""
        return self._segments[0].base_offset

    @property
    def log_end_offset(self) -> int:
        """The offset the next appended record will get (LEO)."""
        return self._log_end_offset

    @property
    def high_watermark(self) -> int:
        """The offset below which records are committed (set by the broker)."""
        return self._high_watermark

    @property
    def recovery_point(self) -> int:
        """Offsets below this were fsynced by the last completed flush."""
        return self._recovery_point

    @property
    def latest_epoch(self) -> int:
        """The newest leader epoch written in this log (-1 when none)."""
        return self._epochs.latest_epoch

    @property
    def size_in_bytes(self) -> int:
        """Total bytes of all segments."""
        return sum(s.size for s in self._segments)

    @property
    def segment_count(self) -> int:
        """Number of segments (the active one included)."""
        return len(self._segments)

    @property
    def segment_base_offsets(self) -> list[int]:
        """Base offsets of the segments, oldest first."""
        return list(self._bases)

    @property
    def first_unstable_offset(self) -> int | None:
        """The first offset of the earliest open transaction (None when none is open)."""
        return self._producers.first_unstable_offset()

    @property
    def last_stable_offset(self) -> int:
        """The offset below which every transaction is decided and data is committed
        (LSO): the high watermark, capped by the earliest open transaction."""
        unstable = self._producers.first_unstable_offset()
        if unstable is None:
            return self._high_watermark
        return min(self._high_watermark, unstable)

    def aborted_transactions(self, fetch_offset: int, upper_bound: int) -> list[AbortedTxn]:
        """Aborted transactions overlapping [fetch_offset, upper_bound) (read_committed)."""
        return self._txn_index.collect(fetch_offset, upper_bound)

    def update_high_watermark(self, offset: int) -> None:
        """Advance the high watermark; never backwards, never past the LEO."""
        offset = min(offset, self._log_end_offset)
        if offset > self._high_watermark:
            self._high_watermark = offset

    # --- appends ----------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._failure is not None:
            raise KafkaStorageError(
                f"log {self.directory} is offline after an I/O error ({self._failure}); "
                "restart the broker to recover it"
            )
        if self._closed:
            raise KafkaStorageError(f"log {self.directory} is closed")

    def append_as_leader(
        self, records: bytes, leader_epoch: int, *, from_coordinator: bool = False
    ) -> AppendResult:
        """Append a produce request's batches for this partition, all or nothing.

        Assigns offsets from the LEO and stamps `leader_epoch`; checks size limits,
        framing, magic, CRC-32C, every record of every batch (as Kafka's LogValidator)
        and idempotent producer state. One bad batch fails the whole append, as in
        Kafka. A CreateTime batch is stored with maxTimestamp set to its largest record
        timestamp. A retried batch that this partition already holds is answered with
        its original offsets and nothing is appended (`duplicate=True`).

        `from_coordinator`: the group coordinator's own batches (transactional offset
        commits carry a producer id and epoch but no sequence), as Kafka's
        AppendOrigin.COORDINATOR skips the client checks.
        """
        self._check_open()
        headers = self._check_batches(records, leader=True, client=not from_coordinator)
        if not headers:
            return AppendResult(-1, -1, -1, self.log_start_offset, False, 0)
        max_timestamps = self._validate_records(records, headers)
        planned: list[PlannedBatch] = []
        offset = self._log_end_offset
        for header in headers:
            planned.append(PlannedBatch(header, offset, offset + header.last_offset_delta))
            offset += header.last_offset_delta + 1
        pending, duplicate = self._producers.validate(planned)
        if duplicate is not None:
            return AppendResult(
                duplicate.base_offset,
                duplicate.last_offset,
                -1,
                self.log_start_offset,
                True,
                duplicate.last_offset - duplicate.base_offset + 1,
            )
        buf = bytearray(records)
        append_time = -1
        if self.config.message_timestamp_type == "LogAppendTime":
            append_time = self._clock.now_ms()
        infos: list[BatchInfo] = []
        pos = 0
        for header, plan, max_timestamp in zip(headers, planned, max_timestamps, strict=True):
            size = header.size_in_bytes
            assign_offset_and_epoch(buf, pos, plan.base_offset, leader_epoch)
            if append_time >= 0:
                set_log_append_time(buf, pos, size, append_time)
                max_timestamp = append_time
            elif max_timestamp != header.max_timestamp:
                set_max_timestamp(buf, pos, size, max_timestamp)
            infos.append(BatchInfo(pos, size, plan.base_offset, plan.last_offset, max_timestamp))
            pos += size
        self._write(buf, infos)
        self._producers.install(pending)
        self._epochs.assign(leader_epoch, planned[0].base_offset)
        return AppendResult(
            planned[0].base_offset,
            planned[-1].last_offset,
            append_time,
            self.log_start_offset,
            False,
            sum(h.record_count for h in headers),
        )

    def append_as_follower(self, records: bytes) -> AppendResult:
        """Append batches replicated from a leader, keeping their offsets and epochs.

        The batches must start at or after the LEO and their offsets must increase;
        producer state is updated from them without validation (the leader did it).
        """
        self._check_open()
        headers = self._check_batches(records, leader=False)
        if not headers:
            return AppendResult(-1, -1, -1, self.log_start_offset, False, 0)
        expected = self._log_end_offset
        infos: list[BatchInfo] = []
        pos = 0
        for header in headers:
            if header.base_offset < expected:
                raise OffsetOutOfRangeError(
                    f"replicated batch at offset {header.base_offset} does not follow the "
                    f"log end offset {expected} of {self.directory}; truncate first"
                )
            infos.append(
                BatchInfo(
                    pos,
                    header.size_in_bytes,
                    header.base_offset,
                    header.last_offset,
                    header.max_timestamp,
                )
            )
            expected = header.last_offset + 1
            pos += header.size_in_bytes
        self._write(bytes(records), infos)
        segment_base = self._active.base_offset
        pos = 0
        for header in headers:
            if header.is_control and header.has_producer_id:
                raw = bytes(records[pos : pos + header.size_in_bytes])
                self._replay_marker(header, raw, segment_base)
            else:
                self._producers.replay(header)
            self._epochs.assign(header.partition_leader_epoch, header.base_offset)
            pos += header.size_in_bytes
        return AppendResult(
            headers[0].base_offset,
            headers[-1].last_offset,
            -1,
            self.log_start_offset,
            False,
            sum(h.record_count for h in headers),
        )

    def append_marker_as_leader(
        self, producer_id: int, producer_epoch: int, marker: TxnMarker, leader_epoch: int
    ) -> AppendResult:
        """Write a transaction coordinator's COMMIT or ABORT marker for a producer.

        Closes the producer's open transaction here (if any; a marker for a transaction
        that wrote nothing to this partition is still written, as Kafka does) and indexes
        an abort. Raises InvalidProducerEpochError for a marker older than the producer's
        epoch here, TransactionCoordinatorFencedError for one from an older coordinator.
        """
        self._check_open()
        now = self._clock.now_ms()
        buf = bytearray(build_marker(producer_id, producer_epoch, marker, now))
        header = parse_header(buf)
        offset = self._log_end_offset
        entry, completed = self._producers.plan_marker(header, marker, offset, check=True)
        assign_offset_and_epoch(buf, 0, offset, leader_epoch)
        self._write(buf, [BatchInfo(0, len(buf), offset, offset, now)])
        self._producers.install_entry(entry)
        self._epochs.assign(leader_epoch, offset)
        if completed is not None:
            self._index_completed(completed, self._active.base_offset)
        return AppendResult(offset, offset, -1, self.log_start_offset, False, 1)

    def _check_batches(
        self, records: bytes, *, leader: bool, client: bool = True
    ) -> list[BatchHeader]:
        headers: list[BatchHeader] = []
        total = len(records)
        if total > self.config.segment_bytes:
            raise RecordListTooLargeError(
                f"{total} bytes of batches exceed segment.bytes={self.config.segment_bytes} "
                f"of {self.directory}"
            )
        try:
            for header, raw in iter_batches(records):
                if leader and header.size_in_bytes > self.config.max_message_bytes:
                    raise MessageTooLargeError(
                        f"record batch of {header.size_in_bytes} bytes exceeds "
                        f"max.message.bytes={self.config.max_message_bytes} of {self.directory}"
                    )
                validate_batch(header, raw)
                if leader and client:
                    validate_client_batch(header)
                headers.append(header)
        except RecordMagicError as exc:
            if not leader:
                raise
            raise InvalidRecordError(str(exc)) from None
        return headers

    def _validate_records(self, records: bytes, headers: list[BatchHeader]) -> list[int]:
        """Walk the records of each batch; the largest record timestamp of each."""
        create_time = self.config.message_timestamp_type == "CreateTime"
        limit = decompression_limit(self.config.max_message_bytes)
        max_timestamps: list[int] = []
        pos = 0
        for header in headers:
            max_timestamps.append(
                validate_records(
                    header, records, pos, create_time=create_time, max_decompressed=limit
                )
            )
            pos += header.size_in_bytes
        return max_timestamps

    def _write(self, data: bytes | bytearray, infos: list[BatchInfo]) -> None:
        try:
            segment = self._maybe_roll(len(data), infos[0].max_timestamp)
            segment.append(data, infos)
        except OSError as exc:
            self._fail(f"write failed: {exc}")
            raise KafkaStorageError(f"{self.directory}: write failed: {exc}") from exc
        self._dirty.add(segment)
        self._log_end_offset = infos[-1].last_offset + 1
        self._unflushed_messages += sum(i.last_offset - i.base_offset + 1 for i in infos)

    def _maybe_roll(self, size: int, max_timestamp: int) -> LogSegment:
        """The segment to append `size` bytes to, rolling a new one as Kafka's maybeRoll."""
        active = self._active
        if active.is_empty:
            return active
        full = active.size > self.config.segment_bytes - size
        rolling_ts = active.rolling_timestamp
        # As Kafka's timeWaitedForRoll: record time since the segment's first batch,
        # or wall time since the segment was created when batches carry no timestamp.
        if rolling_ts is not None and rolling_ts >= 0:
            since = max_timestamp - rolling_ts
        else:
            since = self._clock.now_ms() - active.created_ms
        aged = since > self.config.segment_ms
        if not (full or aged):
            return active
        return self.roll()

    def roll(self) -> LogSegment:
        """Start a new active segment at the LEO (no-op when the active one is empty)."""
        self._check_open()
        if self._active.is_empty:
            return self._active
        base = self._log_end_offset
        self._write_snapshot(base)
        segment = self._new_segment(base, created_ms=self._clock.now_ms())
        self._dir_dirty = True
        # Kafka flushes a segment once it is rolled, whatever flush.messages/flush.ms say;
        # this makes the next flush_due() true so the appender syncs it.
        self._rolled_unflushed = True
        return segment

    def sync_with_next_flush(self, f: StorageFile) -> None:
        """Have the next `flush` fsync (then close) `f`, a file written beside the log."""
        self._unsynced_files.append(f)
        self._dir_dirty = True

    def _write_snapshot(self, offset: int) -> None:
        # Written without fsync on the append path; flush() fsyncs it, and a torn
        # snapshot fails its CRC at open and is ignored.
        path = f"{self.directory}/{file_name(offset, SNAPSHOT_SUFFIX)}"
        f = self.storage.open(path)
        f.truncate(0)
        f.append(self._producers.snapshot_bytes())
        self._unsynced_files.append(f)
        self._dir_dirty = True

    # --- reads ------------------------------------------------------------------------

    def _segment_index(self, offset: int) -> int:
        return max(bisect_right(self._bases, offset) - 1, 0)

    def read(
        self,
        offset: int,
        max_bytes: int,
        *,
        max_offset: int | None = None,
        min_one: bool = True,
    ) -> ReadResult:
        """Whole batches from the one containing `offset`, Kafka's fetch semantics.

        Returns batches while they fit in `max_bytes` (the first one always when
        `min_one`, even if larger), none reaching `max_offset` (e.g. the high
        watermark for consumers). Raises OffsetOutOfRangeError when `offset` is
        below the log start offset or beyond the LEO.
        """
        self._check_open()
        lso, leo = self.log_start_offset, self._log_end_offset
        if offset < lso or offset > leo:
            raise OffsetOutOfRangeError(
                f"offset {offset} is out of range for {self.directory}: "
                f"log start offset {lso}, log end offset {leo}"
            )
        limit = leo if max_offset is None else min(max_offset, leo)
        parts: list[bytes] = []
        remaining = max_bytes
        if offset < limit:
            for segment in self._segments[self._segment_index(offset) :]:
                if segment.base_offset >= limit:
                    break
                found = segment.find(offset)
                if found is None:
                    continue
                position = found
                chunk = segment.read(position, remaining, limit, min_one and not parts)
                if not chunk:
                    break
                parts.append(chunk)
                remaining -= len(chunk)
                if remaining <= 0 or segment.next_offset >= limit:
                    break
                # Continue only if this segment was read to its end.
                if position + len(chunk) < segment.size:
                    break
                offset = segment.next_offset
        return ReadResult(b"".join(parts), self._high_watermark, lso, leo)

    def offset_for_timestamp(self, timestamp_ms: int) -> tuple[int, int] | None:
        """(offset, timestamp) of the first record with timestamp >= `timestamp_ms`.

        As Kafka's ListOffsets: the first batch whose max timestamp reaches the target,
        then the first record in it that does (decompressing if need be; a batch whose
        records do not parse answers its base offset and max timestamp). None when no
        record does.
        """
        self._check_open()
        for segment in self._segments:
            if segment.max_timestamp < timestamp_ms:
                continue
            start = segment.time_lookup_position(timestamp_ms)
            for position, header in segment.iter_batches_from(start):
                if header.max_timestamp < timestamp_ms:
                    continue
                if header.is_log_append_time:
                    return header.base_offset, header.max_timestamp
                raw = segment.log.read(position, header.size_in_bytes)
                limit = decompression_limit(self.config.max_message_bytes)
                try:
                    for offset, ts in record_timestamps(header, raw, limit):
                        if ts >= timestamp_ms and offset >= self.log_start_offset:
                            return offset, ts
                except BrokerError as exc:
                    # Data stored before the leader walked records may not parse: answer
                    # from the batch header.
                    logger.warning(
                        "%s: ListOffsets read batch at offset %d from its header only: %s",
                        self.directory,
                        header.base_offset,
                        exc,
                    )
                return header.base_offset, header.max_timestamp
        return None

    def assign_epoch_start_offset(self, leader_epoch: int) -> None:
        """Start `leader_epoch` at the log end offset (a new leader, before its first append).

        As Kafka's maybeAssignEpochStartOffset: followers asking where an older epoch
        ends learn it ends here even before this leader has written anything. Only a
        newer epoch is recorded; it lives in memory and is rebuilt from the batches (or
        assigned again by the next leadership) after a restart.
        """
        self._epochs.assign(leader_epoch, self._log_end_offset)

    def end_offset_for_epoch(self, leader_epoch: int) -> tuple[int, int]:
        """(epoch, end offset) for OffsetForLeaderEpoch, Kafka's semantics."""
        return self._epochs.end_offset_for(leader_epoch, self._log_end_offset)

    def producer_state(self) -> Mapping[int, ProducerStateEntry]:
        """Read-only view: producer id -> epoch and last batches."""
        return self._producers.view()

    # --- truncation and retention -----------------------------------------------------

    def truncate_to(self, offset: int) -> None:
        """Cut the log so that the LEO is at most `offset` (follower truncation).

        As Kafka, a batch containing `offset` goes whole, so the LEO may end below
        `offset`. Below the log start offset the log is emptied and restarts there.
        At or past the LEO no record goes, but epochs starting at the LEO do.
        """
        self._check_open()
        if offset >= self._log_end_offset:
            # As Kafka's UnifiedLog.truncateTo: a former leader holds an entry for the
            # epoch it led at the LEO without writing in it. The new leader never had that
            # epoch, and a follower that kept it would name it in every fetch and be told
            # it diverged, forever.
            self._epochs.truncate_from_end(self._log_end_offset)
            return
        if offset < self.log_start_offset:
            self._truncate_fully_and_start_at(offset)
            return
        index = self._segment_index(offset)
        for segment in self._segments[index + 1 :]:
            self._dirty.discard(segment)
            segment.delete()
        del self._segments[index + 1 :]
        del self._bases[index + 1 :]
        segment = self._segments[index]
        found = segment.find(offset)
        if found is not None:
            segment.truncate_to_position(found)
        self._dirty.add(segment)
        self._dir_dirty = True
        self._after_truncation(segment.next_offset)

    def truncate_fully_and_start_at(self, offset: int) -> None:
        """Delete every batch and restart the log at `offset` (a follower behind the leader's
        log start offset, as Kafka's truncateFullyAndStartAt)."""
        self._check_open()
        self._truncate_fully_and_start_at(offset)

    def _truncate_fully_and_start_at(self, offset: int) -> None:
        self._txn_index.drop_segments(self._bases)
        for segment in self._segments:
            self._dirty.discard(segment)
            segment.delete()
        self._segments.clear()
        self._bases.clear()
        for snapshot in self._snapshot_offsets():
            self.storage.remove(f"{self.directory}/{file_name(snapshot, SNAPSHOT_SUFFIX)}")
        self._new_segment(offset, created_ms=self._clock.now_ms())
        self._dir_dirty = True
        self._epochs.clear()
        self._high_watermark = offset
        self._after_truncation(offset)

    def _after_truncation(self, leo: int) -> None:
        self._truncations += 1
        self._log_end_offset = leo
        self._high_watermark = min(self._high_watermark, leo)
        self._recovery_point = min(self._recovery_point, leo)
        self._epochs.truncate_from_end(leo)
        self._txn_index.truncate_to(leo)
        self._unflushed_messages = min(self._unflushed_messages, leo - self._recovery_point)
        self._unsynced_files = [f for f in self._unsynced_files if _still_valid(f, leo)]
        self._rebuild_producer_state()

    def enforce_retention(self, now_ms: int) -> int:
        """Delete old segments per retention.ms and retention.bytes; returns how many.

        Only whole segments below the high watermark go, never the active one; the
        log start offset moves to the first remaining segment.
        """
        self._check_open()
        deleted = 0
        if self.config.retention_ms >= 0:
            while self._deletable() and (
                now_ms - self._segments[0].largest_timestamp > self.config.retention_ms
            ):
                self._delete_oldest()
                deleted += 1
        if self.config.retention_bytes >= 0:
            excess = self.size_in_bytes - self.config.retention_bytes
            while self._deletable() and excess - self._segments[0].size >= 0:
                excess -= self._segments[0].size
                self._delete_oldest()
                deleted += 1
        if deleted:
            lso = self.log_start_offset
            self._epochs.truncate_from_start(lso)
            self._high_watermark = max(self._high_watermark, lso)
            self._recovery_point = max(self._recovery_point, lso)
            for snapshot in self._snapshot_offsets():
                if snapshot < lso:
                    self.storage.remove(f"{self.directory}/{file_name(snapshot, SNAPSHOT_SUFFIX)}")
        return deleted

    def _deletable(self) -> bool:
        # Never the active segment, and never data the high watermark has not passed.
        return len(self._segments) > 1 and self._bases[1] <= self._high_watermark

    def _delete_oldest(self) -> None:
        segment = self._segments.pop(0)
        self._bases.pop(0)
        self._dirty.discard(segment)
        self._txn_index.drop_segments([segment.base_offset])
        segment.delete()
        self._dir_dirty = True

    # --- durability -------------------------------------------------------------------

    @property
    def unflushed_messages(self) -> int:
        """Records appended since the last completed flush."""
        return self._unflushed_messages

    def flush_due(self, now_ms: int) -> bool:
        """Whether flush.messages or flush.ms asks for a flush now (`now_ms` from the Clock)."""
        if self._unflushed_messages <= 0:
            return False
        if self._rolled_unflushed:
            return True
        messages = self.config.flush_messages
        if bugs.enabled("ack-before-fsync"):
            # PLANTED BUG ack-before-fsync: flush.messages is never consulted.
            messages = None
        if messages is not None and self._unflushed_messages >= messages:
            return True
        interval = self.config.flush_ms
        return interval is not None and now_ms - self._last_flush_ms >= interval

    async def flush(self) -> None:
        """fsync every segment written since the last flush, its indexes and snapshots.

        Raises KafkaStorageError when the disk refuses; the log then refuses all
        further work, as Kafka takes a failed log directory offline.
        """
        async with self._flush_lock:
            if self._closed:
                return
            pending = self._unflushed_messages
            target = self._log_end_offset
            self._rolled_unflushed = False
            truncations = self._truncations
            dirty = sorted(self._dirty, key=lambda s: s.base_offset)
            self._dirty.clear()
            unsynced, self._unsynced_files = self._unsynced_files, []
            dir_dirty, self._dir_dirty = self._dir_dirty, False
            try:
                for segment in dirty:
                    await segment.flush()
                    if self._closed:
                        return
                while unsynced:
                    await unsynced[0].fsync()
                    unsynced.pop(0).close()
                    if self._closed:
                        return
                if self._txn_dirty:
                    self._txn_dirty = False
                    await self._txn_index.flush()
                    if self._closed:
                        return
                # The repairs are durable now, so the files they replace may go.
                superseded, self._superseded = self._superseded, []
                for segment in superseded:
                    segment.delete()
                if dir_dirty:
                    await self.storage.fsync_dir(self.directory)
            except OSError as exc:
                self._fail(f"fsync failed: {exc}")
                raise KafkaStorageError(f"{self.directory}: fsync failed: {exc}") from exc
            except BaseException:
                # Cancelled: nothing is known durable, a later flush tries again.
                self._rolled_unflushed = True
                self._txn_dirty = True
                self._dirty.update(s for s in dirty if not s.closed)
                self._unsynced_files[:0] = unsynced
                unsynced = []
                self._dir_dirty = self._dir_dirty or dir_dirty
                raise
            finally:
                for f in unsynced:
                    f.close()
            self._unflushed_messages = max(self._unflushed_messages - pending, 0)
            if truncations == self._truncations:
                # A truncation during the fsyncs may have put new, unsynced bytes below
                # `target`; then the recovery point stays where truncation left it.
                self._recovery_point = max(self._recovery_point, target)
            self._last_flush_ms = self._clock.now_ms()

    def _fail(self, reason: str) -> None:
        """Take the log offline after an I/O error: its state may no longer match the disk."""
        self._failure = reason
        self.close_now()

    async def checkpoint_high_watermark(self) -> None:
        """Persist the high watermark durably (Kafka's replication-offset-checkpoint)."""
        self._check_open()
        tmp = f"{self.directory}/{HIGH_WATERMARK_FILE}.tmp"
        f = self.storage.open(tmp)
        try:
            f.truncate(0)
            f.append(_HW_RECORD.pack(self._high_watermark, _hw_check(self._high_watermark)))
            await f.fsync()
        finally:
            f.close()
        if self._closed:
            return  # deleted or closed during the fsync: its directory may be gone
        self.storage.rename(tmp, f"{self.directory}/{HIGH_WATERMARK_FILE}")
        await self.storage.fsync_dir(self.directory)

    async def close(self) -> None:
        """Flush everything, snapshot producer state at the LEO, release the files."""
        if self._closed:
            return
        if not self._active.is_empty or self._producers.view():
            self._write_snapshot(self._log_end_offset)
        await self.flush()
        await self.checkpoint_high_watermark()
        await self._mark_clean_shutdown()
        self.close_now()

    async def _mark_clean_shutdown(self) -> None:
        if self._closed:
            return
        f = self.storage.open(f"{self.directory}/{CLEAN_SHUTDOWN_FILE}")
        try:
            await f.fsync()
        finally:
            f.close()
        if not self._closed:
            await self.storage.fsync_dir(self.directory)

    def close_now(self) -> None:
        """Release the files without flushing (unsynced data stays as the storage keeps it)."""
        self._closed = True
        self._txn_index.close()
        for segment in self._segments:
            segment.close()
        for f in self._unsynced_files:
            f.close()
        for segment in self._superseded:
            segment.close()
        self._unsynced_files = []

    def delete(self) -> None:
        """Close the log and remove its directory with everything in it."""
        self.close_now()
        if self.storage.exists(self.directory):
            self.storage.remove(self.directory)


def _hw_check(hw: int) -> int:
    return (hw * 2654435761 + 0x5BD1E995) & 0xFFFFFFFF


def _still_valid(f: StorageFile, leo: int) -> bool:
    name = f.path.rsplit("/", 1)[-1]
    offset = parse_file_name(name, SNAPSHOT_SUFFIX)
    if offset is not None and offset > leo:
        f.close()
        return False
    return True


__all__ = [
    "AppendResult",
    "PartitionLog",
    "ReadResult",
    "RecoveryReport",
    "parse_partition_dir",
]
