"""`DurableRaftLog`: the Raft core's log on disk, as KRaft's `__cluster_metadata-0` partition.

Entries are stored one per Kafka v2 record batch (see `payloads`) in an ordinary
`PartitionLog`, so the log layer's recovery applies: a torn or corrupt tail is cut
when the log is opened. Epochs come from the log's leader-epoch cache, which the
log rebuilds from the batches' partition leader epochs.

Durability is deferred, not weakened. The Raft core calls `flush()` synchronously
at the points where an entry must be durable before anyone hears of it; here that
only records that an fsync is owed. The driver awaits `sync()` before any message
produced by that step leaves the node, which is the same guarantee: nothing is
acknowledged to a peer (or to a client) that a power cut could take back.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import trio

from reference_broker.errors import CorruptRecordError
from reference_broker.log.config import LogConfig
from reference_broker.log.log_manager import LogManager
from reference_broker.log.partition_log import PartitionLog
from reference_broker.log.record_batch import iter_batches

from .payloads import batches_to_entries, entries_to_batches
from .raft.log import Entry, OffsetAndEpoch

METADATA_TOPIC = "__cluster_metadata"
METADATA_PARTITION = 0
# The metadata log is never trimmed (there are no snapshots to replace what retention
# would delete), and it syncs when the quorum says so, not on the broker's flush policy.
METADATA_LOG_CONFIG = LogConfig(retention_ms=-1, retention_bytes=-1)
_READ_BYTES = 1 << 20
_TYPICAL_ENTRY_BYTES = 512


class DeferredSync:
    """Counts writes that owe an fsync and pays them all with one `sync()`.

    `sync()` returns once every write owed *before it was called* is durable; a
    caller that arrives while another caller's fsync runs waits for it, then syncs
    again only if that one started before its own writes.
    """

    def __init__(self, do_sync: Callable[[], Awaitable[None]]) -> None:
        self._do_sync = do_sync
        self._written = 0
        self._synced = 0
        self._lock = trio.Lock()

    @property
    def owed(self) -> bool:
        """Whether some write is not known durable yet."""
        return self._synced < self._written

    def owe(self) -> None:
        """Note a write that the next `sync()` must make durable."""
        self._written += 1

    async def sync(self) -> None:
        """Make every write owed so far durable."""
        target = self._written
        if self._synced >= target:
            return
        async with self._lock:
            if self._synced >= target:
                return
            reached = self._written
            await self._do_sync()
            self._synced = max(self._synced, reached)


class MetadataLogCorruptError(Exception):
    """The metadata log holds something no crash could have left there; it needs a person."""


class DurableRaftLog:
    """A `RaftLog` over the `PartitionLog` of `__cluster_metadata-0`. Create with `open`."""

    def __init__(self, log: PartitionLog) -> None:
        self._log = log
        self._debt = DeferredSync(self._flush)
        self._truncations = 0
        self._durable_end = 0
        self.recovered_truncation: str | None = None

    @classmethod
    def open(cls, logs: LogManager) -> DurableRaftLog:
        """Open (creating if needed) the metadata log among a node's partition logs.

        The log manager has already recovered the partition (torn tails cut); this
        also cuts anything after the first entry that breaks the Raft log's shape
        (an offset gap, an epoch going backwards, a batch not holding one entry), which
        a torn write can leave behind when old bytes happen to line up after new ones.
        """
        log = logs.get(METADATA_TOPIC, METADATA_PARTITION)
        if log is None:
            log = logs.create(METADATA_TOPIC, METADATA_PARTITION, METADATA_LOG_CONFIG)
        durable = cls(log)
        durable._check_shape()
        return durable

    def _check_shape(self) -> None:
        expected = self._log.log_start_offset
        if expected != 0:
            raise MetadataLogCorruptError(
                f"{self._log.directory} starts at offset {expected}, not 0; the metadata log "
                "is never trimmed, so files are missing"
            )
        last_epoch = 0
        while expected < self._log.log_end_offset:
            data = self._log.read(expected, _READ_BYTES).records
            retired = _first_empty_batch(data)
            if retired == 0:
                # Offsets recovery retired after damage at the end (an empty batch holds
                # them): a Raft log has no gaps, so it ends where its entries do.
                self.recovered_truncation = (
                    f"no entries from offset {expected} to the log end "
                    f"{self._log.log_end_offset}; cut there"
                )
                self._log.truncate_to(expected)
                self._debt.owe()
                break
            if retired is not None:
                data = data[:retired]
            try:
                entries = batches_to_entries(data)
            except (ValueError, CorruptRecordError) as exc:
                # CRC-valid bytes that do not decode were written by a different program.
                raise MetadataLogCorruptError(f"{self._log.directory}: {exc}") from exc
            for entry in entries:
                if entry.offset != expected or entry.epoch < last_epoch:
                    self.recovered_truncation = (
                        f"entry at offset {entry.offset} (epoch {entry.epoch}) does not follow "
                        f"offset {expected - 1} (epoch {last_epoch}); cut there"
                    )
                    self._log.truncate_to(expected)
                    self._debt.owe()
                    self._durable_end = expected
                    return
                last_epoch = entry.epoch
                expected += 1
            if not entries:
                break
        self._durable_end = self._log.log_end_offset

    # -- RaftLog ------------------------------------------------------------------------

    @property
    def end_offset(self) -> int:
        """The offset the next entry will take."""
        return self._log.log_end_offset

    @property
    def last_epoch(self) -> int:
        """The epoch of the last entry, 0 for an empty log."""
        return max(self._log.latest_epoch, 0)

    def append_as_leader(self, payloads: Sequence[object], epoch: int) -> list[Entry]:
        """Append payloads at the end under `epoch`; returns the new entries."""
        start = self.end_offset
        entries = [Entry(start + i, epoch, p) for i, p in enumerate(payloads)]
        self._append(entries)
        return entries

    def append_as_follower(self, entries: Sequence[Entry]) -> None:
        """Append the leader's entries; they must continue this log exactly."""
        if entries and entries[0].offset != self.end_offset:
            raise ValueError(
                f"follower append at offset {entries[0].offset} but the log ends at "
                f"{self.end_offset}; the caller must truncate or re-fetch first"
            )
        self._append(list(entries))

    def _append(self, entries: list[Entry]) -> None:
        last = self.last_epoch
        for i, entry in enumerate(entries):
            if entry.epoch < last:
                raise ValueError(
                    f"entry at offset {entry.offset} has epoch {entry.epoch}, older than the "
                    f"log's last epoch {last}"
                )
            if entry.offset != self.end_offset + i:
                raise ValueError(f"entry offset {entry.offset} is not {self.end_offset + i}")
            last = entry.epoch
        if entries:
            self._log.append_as_follower(entries_to_batches(entries))

    def read(self, start_offset: int, max_entries: int) -> list[Entry]:
        """Up to `max_entries` entries from `start_offset` on."""
        if start_offset < 0:
            raise ValueError(f"read from negative offset {start_offset}")
        out: list[Entry] = []
        offset = start_offset
        while len(out) < max_entries and offset < self.end_offset:
            wanted = max_entries - len(out)
            # Whole batches come back; a guess at their size keeps a short read short.
            size = min(_READ_BYTES, wanted * _TYPICAL_ENTRY_BYTES)
            entries = batches_to_entries(self._log.read(offset, size).records, wanted)
            if not entries:
                break
            out += entries
            offset = out[-1].offset + 1
        return out

    def end_offset_for_epoch(self, epoch: int) -> OffsetAndEpoch:
        """The largest epoch <= `epoch` in the log and where it ends (see `RaftLog`)."""
        latest = self._log.latest_epoch
        if latest < 0:
            return OffsetAndEpoch(0, 0)
        if epoch >= latest:
            return OffsetAndEpoch(latest, self.end_offset)
        found, end = self._log.end_offset_for_epoch(epoch)
        # The cache answers an epoch older than all it knows with the start of the oldest
        # one, which is offset 0 in a log that is never trimmed; Raft wants (0, 0) then.
        if found < 0 or end <= self._log.log_start_offset:
            return OffsetAndEpoch(0, 0)
        return OffsetAndEpoch(found, end)

    def truncate_to(self, offset: int) -> None:
        """Remove every entry at or after `offset` (durable with the next `sync`)."""
        if offset < 0:
            raise ValueError(f"truncate to negative offset {offset}")
        if offset >= self.end_offset:
            return
        self._log.truncate_to(offset)
        self._truncations += 1
        self._durable_end = min(self._durable_end, self.end_offset)
        self._debt.owe()

    def flush(self) -> None:
        """Record that an fsync is owed; `sync()` pays it before anyone is told."""
        self._debt.owe()

    # -- durability ------------------------------------------------------------------------

    @property
    def sync_owed(self) -> bool:
        """Whether appended or truncated entries are not known durable yet."""
        return self._debt.owed

    @property
    def durable_end_offset(self) -> int:
        """Entries below this offset are fsynced (as this log is now)."""
        return self._durable_end

    async def sync(self) -> None:
        """fsync every change owed so far."""
        await self._debt.sync()

    async def _flush(self) -> None:
        end, truncations = self.end_offset, self._truncations
        await self._log.flush()
        if truncations == self._truncations:
            self._durable_end = max(self._durable_end, end)

    def entries(self) -> list[Entry]:
        """Every entry, oldest first (tests and invariant checks)."""
        return self.read(0, self.end_offset)


def _first_empty_batch(data: bytes) -> int | None:
    """Byte position of the first batch holding no records (retired offsets), if any."""
    position = 0
    for header, raw in iter_batches(data):
        if header.record_count == 0:
            return position
        position += len(raw)
    return None
