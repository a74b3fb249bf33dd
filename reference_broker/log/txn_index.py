"""The aborted-transactions index of one partition log, after Kafka's TransactionIndex.

Every ABORT marker that closes a transaction adds an `AbortedTxn` (producer id, first
offset, the marker's offset, and the last stable offset when it was written) to the
index file of the segment the marker went to, `<segment base>.txnindex`. A
read_committed Fetch asks which aborted transactions overlap the range it returns
(`collect`) and hands the list to the consumer, which drops those producers' batches.

Entries live in memory too (sorted by marker offset). The files follow the segments:
deleted with them by retention, cut back with them on truncation, and loaded at open;
an entry whose marker is at or past the recovered log end is dropped (its marker was
lost in the crash). Entries are written without fsync on the append path and fsynced
by the log's next flush (one open file per segment with entries, kept until the log
closes); recovery replays the log after the newest producer snapshot, which re-adds
any abort the files lost.
"""

from __future__ import annotations

import struct
from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass

from reference_broker.env import Storage, StorageFile
from reference_broker.log.segment import file_name, parse_file_name

TXN_INDEX_SUFFIX = ".txnindex"
_ENTRY = struct.Struct(">hqqqq")  # version 0, producer id, first, last, last stable offset


@dataclass(frozen=True, slots=True)
class AbortedTxn:
    """One aborted transaction of a partition."""

    producer_id: int
    first_offset: int
    last_offset: int  # the ABORT marker's offset
    last_stable_offset: int


class TxnIndex:
    """The aborted transactions of one log, in memory and in per-segment files."""

    def __init__(self, storage: Storage, directory: str) -> None:
        self._storage = storage
        self._directory = directory
        self._entries: list[AbortedTxn] = []
        self._lasts: list[int] = []
        # Which segment file holds each entry (by marker offset).
        self._segment_of: dict[int, int] = {}
        # Open index files being appended to, and those with writes not yet fsynced.
        self._files: dict[int, StorageFile] = {}
        self._unsynced: set[int] = set()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def entries(self) -> tuple[AbortedTxn, ...]:
        """Every aborted transaction, oldest marker first."""
        return tuple(self._entries)

    def _path(self, base: int) -> str:
        return f"{self._directory}/{file_name(base, TXN_INDEX_SUFFIX)}"

    def load(self, bases: Iterable[int], log_end_offset: int) -> None:
        """Read the files of segments `bases`; drop files of gone segments and entries whose
        marker is at or past `log_end_offset`."""
        keep = set(bases)
        self._entries, self._lasts, self._segment_of = [], [], {}
        for name in self._storage.listdir(self._directory):
            base = parse_file_name(name, TXN_INDEX_SUFFIX)
            if base is None:
                continue
            if base not in keep:
                self._storage.remove(self._path(base))
                continue
            f = self._storage.open(self._path(base), create=False)
            try:
                data = f.read(0, f.size())
            finally:
                f.close()
            whole = len(data) - len(data) % _ENTRY.size
            loaded = [
                AbortedTxn(*_ENTRY.unpack_from(data, pos)[1:])
                for pos in range(0, whole, _ENTRY.size)
            ]
            valid = [e for e in loaded if e.last_offset < log_end_offset]
            if len(valid) != len(loaded) or whole != len(data):
                self._rewrite(base, valid)
            for entry in valid:
                self._insert(entry, base)

    def _insert(self, entry: AbortedTxn, base: int) -> bool:
        if entry.last_offset in self._segment_of:
            return False
        at = bisect_left(self._lasts, entry.last_offset)
        self._entries.insert(at, entry)
        self._lasts.insert(at, entry.last_offset)
        self._segment_of[entry.last_offset] = base
        return True

    def add(self, entry: AbortedTxn, segment_base: int) -> bool:
        """Record an abort whose marker went to segment `segment_base`, written but not
        fsynced (`flush`); False when the index already held it (a replay)."""
        if not self._insert(entry, segment_base):
            return False
        f = self._files.get(segment_base)
        if f is None:
            f = self._files[segment_base] = self._storage.open(self._path(segment_base))
        f.append(_pack(entry))
        self._unsynced.add(segment_base)
        return True

    async def flush(self) -> None:
        """fsync the index files written since the last flush."""
        for base in sorted(self._unsynced):
            f = self._files.get(base)
            if f is not None:
                await f.fsync()
            self._unsynced.discard(base)

    def close(self) -> None:
        """Close the open index files (unsynced writes stay as the storage keeps them)."""
        for f in self._files.values():
            f.close()
        self._files.clear()
        self._unsynced.clear()

    def _forget_file(self, base: int) -> None:
        f = self._files.pop(base, None)
        if f is not None:
            f.close()
        self._unsynced.discard(base)

    def collect(self, fetch_offset: int, upper_bound: int) -> list[AbortedTxn]:
        """Aborted transactions that overlap [fetch_offset, upper_bound), as Kafka's
        collectAbortedTxns: their marker is at or after the fetch offset and their first
        offset below the end of the returned data."""
        start = bisect_left(self._lasts, fetch_offset)
        return [e for e in self._entries[start:] if e.first_offset < upper_bound]

    def truncate_to(self, offset: int) -> None:
        """Forget aborts whose marker is at or past `offset` (the log was cut there)."""
        cut = bisect_left(self._lasts, offset)
        if cut == len(self._entries):
            return
        gone = self._entries[cut:]
        del self._entries[cut:]
        del self._lasts[cut:]
        touched = {self._segment_of.pop(e.last_offset) for e in gone}
        for base in touched:
            self._rewrite(
                base, [e for e in self._entries if self._segment_of[e.last_offset] == base]
            )

    def drop_segments(self, bases: Iterable[int]) -> None:
        """Forget the entries and files of deleted segments."""
        gone = set(bases)
        kept = [e for e in self._entries if self._segment_of[e.last_offset] not in gone]
        for entry in self._entries:
            if self._segment_of[entry.last_offset] in gone:
                del self._segment_of[entry.last_offset]
        self._entries = kept
        self._lasts = [e.last_offset for e in kept]
        for base in gone:
            self._forget_file(base)
            if self._storage.exists(self._path(base)):
                self._storage.remove(self._path(base))

    def _rewrite(self, base: int, entries: list[AbortedTxn]) -> None:
        self._forget_file(base)
        path = self._path(base)
        if not entries:
            if self._storage.exists(path):
                self._storage.remove(path)
            return
        f = self._storage.open(path)
        try:
            f.truncate(0)
            f.append(b"".join(_pack(e) for e in entries))
        finally:
            f.close()


def _pack(entry: AbortedTxn) -> bytes:
    return _ENTRY.pack(
        0, entry.producer_id, entry.first_offset, entry.last_offset, entry.last_stable_offset
    )
