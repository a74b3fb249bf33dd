"""The replicated metadata log: entries stamped with the epoch of the leader that wrote them.

`RaftLog` is the interface the Raft core needs. `InMemoryRaftLog` implements it with a
list and is what the simulation uses; its contents survive a simulated crash because
the simulation keeps the object, which models a log whose every append is fsynced.

A durable implementation over `reference_broker.log` (one partition, `__cluster_metadata-0`
as Kafka names it) must keep these promises:

- `append_as_leader` / `append_as_follower` are visible to `read` at once, and durable
  once `flush` returns; the node calls `flush` before it acknowledges an offset (a
  follower's next fetch offset, the leader's own end offset in the high watermark), so
  an acknowledged entry survives a power loss.
- epochs never decrease along the log, and `end_offset_for_epoch` answers from a leader
  epoch cache (`reference_broker.log.epoch_cache.LeaderEpochCache` has these semantics);
- `truncate_to` removes a suffix, durably, before anything is appended after it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True, order=True)
class OffsetAndEpoch:
    """An end offset and the epoch of the entries just below it (Kafka's OffsetAndEpoch).

    Ordered by epoch first, then offset: the order Raft's up-to-date rule uses.
    """

    epoch: int
    offset: int


@dataclass(frozen=True, slots=True)
class Entry:
    """One record of the metadata log."""

    offset: int
    epoch: int
    payload: object


@dataclass(frozen=True, slots=True)
class _EpochStart:
    epoch: int
    start_offset: int


class RaftLog(Protocol):
    """What the Raft core needs of its log. See the module docstring for durability."""

    @property
    def end_offset(self) -> int:
        """The offset the next entry will take (the log end offset)."""
        ...

    @property
    def last_epoch(self) -> int:
        """The epoch of the last entry, 0 for an empty log."""
        ...

    def append_as_leader(self, payloads: Sequence[object], epoch: int) -> list[Entry]:
        """Append payloads at the end under `epoch`; returns the new entries."""
        ...

    def append_as_follower(self, entries: Sequence[Entry]) -> None:
        """Append entries copied from the leader; the first must sit at `end_offset`."""
        ...

    def read(self, start_offset: int, max_entries: int) -> list[Entry]:
        """Up to `max_entries` entries from `start_offset` on."""
        ...

    def end_offset_for_epoch(self, epoch: int) -> OffsetAndEpoch:
        """The largest epoch <= `epoch` in the log and where it ends.

        It ends where the next larger epoch starts, or at the log end. An epoch older
        than every entry answers (epoch 0, offset 0): nothing of it is shared.
        """
        ...

    def truncate_to(self, offset: int) -> None:
        """Remove every entry at or after `offset`."""
        ...

    def flush(self) -> None:
        """Make every appended entry durable."""
        ...


class InMemoryRaftLog:
    """`RaftLog` over a Python list, with an epoch-start cache as Kafka keeps one."""

    def __init__(self) -> None:
        self._entries: list[Entry] = []
        self._epochs: list[_EpochStart] = []

    @property
    def end_offset(self) -> int:
        """The offset the next entry will take."""
        return len(self._entries)

    @property
    def last_epoch(self) -> int:
        """The epoch of the last entry, 0 for an empty log."""
        return self._epochs[-1].epoch if self._epochs else 0

    def entries(self) -> list[Entry]:
        """Every entry, oldest first (for tests and invariant checks)."""
        return list(self._entries)

    def append_as_leader(self, payloads: Sequence[object], epoch: int) -> list[Entry]:
        """Append payloads under `epoch`; `epoch` may not be older than the last entry's."""
        start = self.end_offset
        new = [Entry(start + i, epoch, p) for i, p in enumerate(payloads)]
        self._append(new)
        return new

    def append_as_follower(self, entries: Sequence[Entry]) -> None:
        """Append the leader's entries; they must continue this log exactly."""
        if entries and entries[0].offset != self.end_offset:
            raise ValueError(
                f"follower append at offset {entries[0].offset} but the log ends at "
                f"{self.end_offset}; the caller must truncate or re-fetch first"
            )
        self._append(list(entries))

    def _append(self, entries: list[Entry]) -> None:
        for entry in entries:
            if entry.epoch < self.last_epoch:
                raise ValueError(
                    f"entry at offset {entry.offset} has epoch {entry.epoch}, older than the "
                    f"log's last epoch {self.last_epoch}"
                )
            if entry.offset != self.end_offset:
                raise ValueError(f"entry offset {entry.offset} is not the end {self.end_offset}")
            if entry.epoch > self.last_epoch or not self._epochs:
                self._epochs.append(_EpochStart(entry.epoch, entry.offset))
            self._entries.append(entry)

    def read(self, start_offset: int, max_entries: int) -> list[Entry]:
        """Up to `max_entries` entries from `start_offset` on."""
        if start_offset < 0:
            raise ValueError(f"read from negative offset {start_offset}")
        return self._entries[start_offset : start_offset + max_entries]

    def end_offset_for_epoch(self, epoch: int) -> OffsetAndEpoch:
        """The largest epoch <= `epoch` and where it ends (see `RaftLog`)."""
        found: _EpochStart | None = None
        end = self.end_offset
        for i, start in enumerate(self._epochs):
            if start.epoch > epoch:
                end = start.start_offset
                break
            found = self._epochs[i]
        if found is None:
            return OffsetAndEpoch(0, 0)
        return OffsetAndEpoch(found.epoch, end)

    def truncate_to(self, offset: int) -> None:
        """Remove every entry at or after `offset`."""
        if offset < 0:
            raise ValueError(f"truncate to negative offset {offset}")
        del self._entries[offset:]
        while self._epochs and self._epochs[-1].start_offset >= offset:
            self._epochs.pop()

    def flush(self) -> None:
        """Every append is already durable in the simulation's model."""


def validate_fetch(
    log: RaftLog, fetch_offset: int, last_fetched_epoch: int
) -> OffsetAndEpoch | None:
    """The leader's check of a follower's position: None if it continues this log.

    Otherwise the diverging epoch and end offset the follower must truncate by
    (KIP-595's DivergingEpoch): the follower's last entry has epoch `last_fetched_epoch`
    at `fetch_offset - 1`; that is consistent only if this log has the same epoch
    running to at least `fetch_offset`.
    """
    if fetch_offset == 0 and last_fetched_epoch == 0:
        return None
    end = log.end_offset_for_epoch(last_fetched_epoch)
    if end.epoch != last_fetched_epoch or end.offset < fetch_offset:
        return end
    return None


def truncation_offset(log: RaftLog, diverging: OffsetAndEpoch) -> int:
    """Where a follower cuts its log given the leader's diverging epoch (Kafka's
    `ReplicatedLog.truncateToEndOffset`): at the leader's end of that epoch, or at the
    end of this log's own largest epoch below it when this log never saw that epoch."""
    if diverging.epoch == 0:
        return min(diverging.offset, log.end_offset)
    local = log.end_offset_for_epoch(diverging.epoch)
    if local.epoch == diverging.epoch:
        return min(local.offset, diverging.offset)
    return local.offset
