"""Idempotent producer state of one partition, after Kafka's ProducerStateManager.

For each producer id the partition remembers the producer epoch and the last five
batches it appended (first and last sequence, first and last offset). That is enough
to answer a retried batch with its original offsets instead of appending it twice,
and to refuse a batch that skips sequence numbers or comes from a fenced epoch.

Rules on a leader append (Kafka's ProducerAppendInfo):

- epoch below the known one: InvalidProducerEpochError (the producer was fenced);
- epoch above the known one: the batch must start at sequence 0, and the producer's
  cached batches are forgotten;
- same epoch: a batch whose (first, last) sequence matches a cached batch is a
  duplicate and is answered with that batch's offsets; otherwise its first sequence
  must follow the last one (wrapping from int32 max to 0).
- unknown producer id: the batch must start at sequence 0. Kafka answers some of
  these cases with UNKNOWN_PRODUCER_ID (a producer whose state expired from a
  log that was truncated by retention); this broker always answers
  OutOfOrderSequenceError, which clients also treat as fatal for the batch.

Transactions (Kafka's currentTxnFirstOffset): a producer's first transactional batch
opens its ongoing transaction at that batch's offset; the transaction marker (a control
batch, COMMIT or ABORT) closes it and yields a `CompletedTxn`. The earliest open
transaction bounds the last stable offset. A non-transactional batch from a producer
with an open transaction is refused (INVALID_TXN_STATE), and a marker from a
coordinator epoch older than the last one seen for the producer is fenced
(TRANSACTION_COORDINATOR_FENCED), as Kafka's ProducerAppendInfo.

The state is rebuilt from the log at open, starting from the newest valid snapshot
file (`<offset>.snapshot`, the state just before `offset`) when there is one; snapshots
keep the open transactions, so a restart does not forget data still undecided.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType

import crc32c

from reference_broker import bugs, events
from reference_broker.errors import (
    InvalidProducerEpochError,
    InvalidTxnStateError,
    OutOfOrderSequenceError,
    TransactionCoordinatorFencedError,
)
from reference_broker.log.control_batch import TxnMarker
from reference_broker.log.record_batch import INT32_MAX, NO_SEQUENCE, BatchHeader

# Kafka keeps metadata of the last 5 batches per producer: the most a producer may
# have in flight (max.in.flight.requests.per.connection <= 5 with idempotence).
BATCHES_TO_RETAIN = 5

SNAPSHOT_SUFFIX = ".snapshot"
_SNAPSHOT_MAGIC = b"FLPS"
_SNAPSHOT_VERSION = 2
_SNAPSHOT_HEAD = struct.Struct(">4shIi")  # magic, version, crc, entry count
_ENTRY_V1 = struct.Struct(">qhqb")  # producer id, epoch, last timestamp, batch count
# Version 2 adds the open transaction's first offset (-1: none) and the coordinator epoch.
_ENTRY = struct.Struct(">qhqbqi")
NO_TXN = -1
_BATCH = struct.Struct(">iiqqq")  # first seq, last seq, base offset, last offset, timestamp


@dataclass(frozen=True, slots=True)
class BatchMetadata:
    """One appended batch of a producer, as remembered for deduplication."""

    first_seq: int
    last_seq: int
    base_offset: int
    last_offset: int
    timestamp: int


@dataclass(frozen=True, slots=True)
class ProducerStateEntry:
    """What a partition knows of one producer id."""

    producer_id: int
    producer_epoch: int
    batches: tuple[BatchMetadata, ...] = ()
    last_timestamp: int = -1
    # First offset of the producer's open transaction in this partition, NO_TXN if none.
    current_txn_first_offset: int = NO_TXN
    coordinator_epoch: int = -1

    @property
    def last_seq(self) -> int | None:
        """Last sequence number appended under the current epoch, if any."""
        return self.batches[-1].last_seq if self.batches else None

    @property
    def last_offset(self) -> int | None:
        """Offset of the last record appended under the current epoch, if any."""
        return self.batches[-1].last_offset if self.batches else None

    def find_duplicate(self, first_seq: int, last_seq: int) -> BatchMetadata | None:
        """The cached batch with exactly this sequence range, if any."""
        for batch in self.batches:
            if batch.first_seq == first_seq and batch.last_seq == last_seq:
                return batch
        return None

    def with_batch(self, batch: BatchMetadata) -> ProducerStateEntry:
        """This entry with `batch` added, keeping the newest BATCHES_TO_RETAIN."""
        # PLANTED BUG dedup-window-1: only the newest batch is remembered.
        retain = 1 if bugs.enabled("dedup-window-1") else BATCHES_TO_RETAIN
        batches = (*self.batches, batch)[-retain:]
        return replace(self, batches=batches, last_timestamp=batch.timestamp)


def in_sequence(last_seq: int, next_seq: int) -> bool:
    """Whether `next_seq` directly follows `last_seq`, with Kafka's int32 wrap."""
    return next_seq == last_seq + 1 or (next_seq == 0 and last_seq == INT32_MAX)


@dataclass(frozen=True, slots=True)
class CompletedTxn:
    """A transaction a marker closed in this partition: its offsets and outcome."""

    producer_id: int
    first_offset: int
    last_offset: int  # the marker's offset
    aborted: bool


@dataclass(frozen=True, slots=True)
class PlannedBatch:
    """A batch about to be appended, with the offsets it will get."""

    header: BatchHeader
    base_offset: int
    last_offset: int


class ProducerStateManager:
    """Producer id -> ProducerStateEntry for one partition."""

    def __init__(self) -> None:
        self._entries: dict[int, ProducerStateEntry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def view(self) -> Mapping[int, ProducerStateEntry]:
        """A read-only view of the current entries."""
        return MappingProxyType(self._entries)

    def get(self, producer_id: int) -> ProducerStateEntry | None:
        """The entry of `producer_id`, if the partition knows it."""
        return self._entries.get(producer_id)

    def validate(
        self, batches: Iterable[PlannedBatch]
    ) -> tuple[dict[int, ProducerStateEntry], BatchMetadata | None]:
        """Check a leader append against the state, without changing it.

        Returns the entries to install if the append goes ahead, or the metadata of
        a duplicate batch, in which case nothing must be appended (as Kafka does,
        the first duplicate found answers for the whole request). Raises
        InvalidProducerEpochError or OutOfOrderSequenceError.
        """
        pending: dict[int, ProducerStateEntry] = {}
        for planned in batches:
            header = planned.header
            pid = header.producer_id
            if pid < 0:
                continue
            entry = pending.get(pid) or self._entries.get(pid)
            epoch = header.producer_epoch
            first_seq = header.base_sequence
            last_seq = header.last_sequence
            if first_seq == NO_SEQUENCE and (entry is None or epoch >= entry.producer_epoch):
                # Written by a coordinator (transactional offset commits): no sequence.
                entry = entry or ProducerStateEntry(pid, epoch)
                entry = replace(entry, producer_epoch=epoch)
            elif entry is None:
                # PLANTED BUG producer-state-not-recovered: an unknown producer is taken
                # as new at whatever sequence it sends.
                if first_seq != 0 and not bugs.enabled("producer-state-not-recovered"):
                    raise OutOfOrderSequenceError(
                        f"producer {pid} is unknown to this partition and its first batch "
                        f"starts at sequence {first_seq}, not 0"
                    )
                entry = ProducerStateEntry(pid, epoch)
            elif epoch < entry.producer_epoch:
                events.emit("producer-fenced", producer=pid, epoch=epoch,
                            current=entry.producer_epoch)
                raise InvalidProducerEpochError(
                    f"producer {pid} epoch {epoch} is older than the current epoch "
                    f"{entry.producer_epoch}: this producer was fenced"
                )
            elif epoch > entry.producer_epoch:
                if first_seq != 0:
                    raise OutOfOrderSequenceError(
                        f"producer {pid} bumped its epoch to {epoch} but its batch starts "
                        f"at sequence {first_seq}, not 0"
                    )
                entry = replace(entry, producer_epoch=epoch, batches=())
            else:
                duplicate = entry.find_duplicate(first_seq, last_seq)
                if duplicate is not None:
                    return {}, duplicate
                last = entry.last_seq
                if (last is None and first_seq != 0) or (
                    last is not None and not in_sequence(last, first_seq)
                ):
                    raise OutOfOrderSequenceError(
                        f"producer {pid} epoch {epoch}: batch starts at sequence {first_seq} "
                        f"but the last appended sequence is {last}; a batch is missing"
                    )
            entry = _with_txn(entry, header, planned.base_offset)
            if first_seq == NO_SEQUENCE:
                pending[pid] = replace(entry, last_timestamp=header.max_timestamp)
                continue
            pending[pid] = entry.with_batch(
                BatchMetadata(
                    first_seq,
                    last_seq,
                    planned.base_offset,
                    planned.last_offset,
                    header.max_timestamp,
                )
            )
        return pending, None

    def install(self, pending: Mapping[int, ProducerStateEntry]) -> None:
        """Install the entries returned by `validate` once the batches are appended."""
        self._entries.update(pending)

    def replay(self, header: BatchHeader) -> None:
        """Update the state from a batch already in the log, without validation.

        Used by recovery and follower appends: the log is the truth.
        """
        pid = header.producer_id
        if pid < 0:
            return
        entry = self._entries.get(pid)
        epoch = header.producer_epoch
        if entry is None:
            entry = ProducerStateEntry(pid, epoch)
        elif epoch > entry.producer_epoch:
            entry = replace(entry, producer_epoch=epoch, batches=())
        elif epoch < entry.producer_epoch:
            # A batch from a fenced epoch can sit in a log (written before the
            # fence reached this replica); it does not move the state back.
            return
        if header.is_control:
            # Markers are replayed through `complete_txn`, which knows their type.
            self._entries[pid] = replace(entry, last_timestamp=header.max_timestamp)
            return
        entry = _with_txn(entry, header, header.base_offset, strict=False)
        if header.base_sequence == NO_SEQUENCE:
            self._entries[pid] = replace(entry, last_timestamp=header.max_timestamp)
            return
        self._entries[pid] = entry.with_batch(
            BatchMetadata(
                header.base_sequence,
                header.last_sequence,
                header.base_offset,
                header.last_offset,
                header.max_timestamp,
            )
        )

    def plan_marker(
        self, header: BatchHeader, marker: TxnMarker, offset: int, *, check: bool
    ) -> tuple[ProducerStateEntry, CompletedTxn | None]:
        """The entry after a marker at `offset`, and the transaction it closes (if open).

        With `check` (a leader writing a coordinator's marker), a marker from an older
        producer epoch raises InvalidProducerEpochError and one from an older
        coordinator epoch TransactionCoordinatorFencedError, as Kafka's
        appendEndTxnMarker; replicas and recovery replay without checks.
        """
        pid = header.producer_id
        epoch = header.producer_epoch
        entry = self._entries.get(pid) or ProducerStateEntry(pid, epoch)
        if check and epoch < entry.producer_epoch:
            raise InvalidProducerEpochError(
                f"transaction marker for producer {pid} epoch {epoch} is older than the "
                f"partition's epoch {entry.producer_epoch}"
            )
        if check and marker.coordinator_epoch < entry.coordinator_epoch:
            raise TransactionCoordinatorFencedError(
                f"transaction marker for producer {pid} from coordinator epoch "
                f"{marker.coordinator_epoch}, older than {entry.coordinator_epoch}"
            )
        completed = None
        if entry.current_txn_first_offset != NO_TXN:
            completed = CompletedTxn(
                pid, entry.current_txn_first_offset, offset, aborted=not marker.commit
            )
        batches = entry.batches if epoch == entry.producer_epoch else ()
        updated = replace(
            entry,
            producer_epoch=max(epoch, entry.producer_epoch),
            batches=batches,
            last_timestamp=header.max_timestamp,
            current_txn_first_offset=NO_TXN,
            coordinator_epoch=max(marker.coordinator_epoch, entry.coordinator_epoch),
        )
        return updated, completed

    def install_entry(self, entry: ProducerStateEntry) -> None:
        """Install one entry (from `plan_marker`)."""
        self._entries[entry.producer_id] = entry

    def first_unstable_offset(self) -> int | None:
        """The first offset of the earliest open transaction, None when none is open."""
        offsets = [
            e.current_txn_first_offset
            for e in self._entries.values()
            if e.current_txn_first_offset != NO_TXN
        ]
        return min(offsets) if offsets else None

    def clear(self) -> None:
        """Forget every producer."""
        self._entries.clear()

    # --- snapshots -----------------------------------------------------------------

    def snapshot_bytes(self) -> bytes:
        """Serialize the state (with a CRC-32C so that a torn file is detected)."""
        parts: list[bytes] = []
        for entry in self._entries.values():
            parts.append(
                _ENTRY.pack(
                    entry.producer_id,
                    entry.producer_epoch,
                    entry.last_timestamp,
                    len(entry.batches),
                    entry.current_txn_first_offset,
                    entry.coordinator_epoch,
                )
            )
            parts.extend(
                _BATCH.pack(b.first_seq, b.last_seq, b.base_offset, b.last_offset, b.timestamp)
                for b in entry.batches
            )
        body = b"".join(parts)
        head = _SNAPSHOT_HEAD.pack(
            _SNAPSHOT_MAGIC, _SNAPSHOT_VERSION, crc32c.crc32c(body), len(self._entries)
        )
        return head + body

    @classmethod
    def from_snapshot(cls, data: bytes) -> ProducerStateManager:
        """Load a snapshot; raises ValueError when it is torn, corrupt or unknown."""
        if len(data) < _SNAPSHOT_HEAD.size:
            raise ValueError(f"producer snapshot of {len(data)} bytes is too short")
        magic, version, crc, count = _SNAPSHOT_HEAD.unpack_from(data, 0)
        if magic != _SNAPSHOT_MAGIC or version not in (1, _SNAPSHOT_VERSION):
            raise ValueError(f"not a version 1 or {_SNAPSHOT_VERSION} producer snapshot")
        body = memoryview(data)[_SNAPSHOT_HEAD.size :]
        if crc32c.crc32c(body) != crc:
            raise ValueError("producer snapshot fails its CRC-32C check")
        manager = cls()
        pos = 0
        try:
            for _ in range(count):
                txn_first, coordinator_epoch = NO_TXN, -1
                if version == 1:
                    pid, epoch, last_ts, n = _ENTRY_V1.unpack_from(body, pos)
                    pos += _ENTRY_V1.size
                else:
                    pid, epoch, last_ts, n, txn_first, coordinator_epoch = _ENTRY.unpack_from(
                        body, pos
                    )
                    pos += _ENTRY.size
                batches = []
                for _ in range(n):
                    batches.append(BatchMetadata(*_BATCH.unpack_from(body, pos)))
                    pos += _BATCH.size
                manager._entries[pid] = ProducerStateEntry(
                    pid, epoch, tuple(batches), last_ts, txn_first, coordinator_epoch
                )
        except struct.error as exc:
            raise ValueError(f"producer snapshot is truncated: {exc}") from None
        if pos != len(body):
            raise ValueError("producer snapshot has trailing bytes")
        return manager


def _with_txn(
    entry: ProducerStateEntry, header: BatchHeader, offset: int, *, strict: bool = True
) -> ProducerStateEntry:
    """The entry after a data batch at `offset`: a transactional batch opens a transaction.

    A non-transactional batch while a transaction is open is refused when `strict` (a
    leader append, as Kafka's InvalidTxnStateException); replay takes the log as it is.
    """
    if header.is_transactional:
        if entry.current_txn_first_offset == NO_TXN:
            return replace(entry, current_txn_first_offset=offset)
        return entry
    if entry.current_txn_first_offset != NO_TXN and strict:
        raise InvalidTxnStateError(
            f"producer {entry.producer_id} sent a non-transactional batch while its "
            f"transaction opened at offset {entry.current_txn_first_offset} is ongoing"
        )
    return entry
