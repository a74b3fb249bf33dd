"""Leader epoch -> start offset of a partition, after Kafka's LeaderEpochFileCache.

Each leader stamps its epoch into the batches it appends; the first offset written
under an epoch starts that epoch. Followers use it (OffsetForLeaderEpoch) to find
where their log diverged from the new leader's. The cache is rebuilt from the
batches' partitionLeaderEpoch fields when a log is opened.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

logger = logging.getLogger("faultline.broker.log")

UNDEFINED_EPOCH = -1
UNDEFINED_EPOCH_OFFSET = -1


@dataclass(frozen=True, slots=True)
class EpochEntry:
    """An epoch and the first offset written under it."""

    epoch: int
    start_offset: int


class LeaderEpochCache:
    """Epoch entries in increasing epoch and start offset."""

    def __init__(self) -> None:
        self._entries: list[EpochEntry] = []

    @property
    def entries(self) -> tuple[EpochEntry, ...]:
        """All entries, oldest first."""
        return tuple(self._entries)

    @property
    def latest_epoch(self) -> int:
        """The newest epoch, or UNDEFINED_EPOCH when none is known."""
        return self._entries[-1].epoch if self._entries else UNDEFINED_EPOCH

    def assign(self, epoch: int, start_offset: int) -> None:
        """Record that `epoch` starts at `start_offset`, as Kafka's LeaderEpochFileCache.

        Nothing changes when the latest epoch simply goes on. Otherwise the entries the
        new one would leave out of order go first (maybeTruncateNonMonotonicEntries):
        from the newest back, every one whose epoch is not older or whose start offset
        is not lower. The cache keeps one entry per start offset, epochs and start
        offsets both increasing, and the latest entry always says what the log's newest
        batches are.
        """
        if epoch < 0 or start_offset < 0:
            return
        if self._entries:
            latest = self._entries[-1]
            if epoch == latest.epoch and start_offset >= latest.start_offset:
                return
        removed: list[EpochEntry] = []
        while self._entries and (
            self._entries[-1].epoch >= epoch or self._entries[-1].start_offset >= start_offset
        ):
            removed.append(self._entries.pop())
        self._entries.append(EpochEntry(epoch, start_offset))
        if len(removed) > 1 or (removed and removed[0].start_offset != start_offset):
            # An entry at the same start offset is an epoch that wrote nothing: replacing
            # it is routine. Anything else means data of those epochs was described
            # wrongly, which Kafka also warns about.
            logger.warning(
                "leader epoch %d at offset %d replaced conflicting entries %s",
                epoch,
                start_offset,
                [(e.epoch, e.start_offset) for e in reversed(removed)],
            )

    def truncate_from_end(self, end_offset: int) -> None:
        """Forget epochs that started at or after `end_offset` (the log was cut there)."""
        while self._entries and self._entries[-1].start_offset >= end_offset:
            self._entries.pop()

    def truncate_from_start(self, start_offset: int) -> None:
        """Forget what lies before `start_offset`; the epoch covering it starts there."""
        keep = [e for e in self._entries if e.start_offset >= start_offset]
        earlier = [e for e in self._entries if e.start_offset < start_offset]
        if earlier and (not keep or keep[0].start_offset > start_offset):
            keep.insert(0, EpochEntry(earlier[-1].epoch, start_offset))
        self._entries = keep

    def clear(self) -> None:
        """Forget every epoch."""
        self._entries.clear()

    def end_offset_for(self, requested_epoch: int, log_end_offset: int) -> tuple[int, int]:
        """(epoch, end offset) for OffsetForLeaderEpoch, with Kafka's semantics.

        The answer is the largest known epoch <= `requested_epoch` and the start
        offset of the first epoch after it (the log end offset when `requested_epoch`
        is the latest). Unknown or too-new epochs answer (-1, -1); an epoch older
        than every known one answers (requested_epoch, start of the oldest).
        """
        if requested_epoch == UNDEFINED_EPOCH or not self._entries:
            return UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET
        if self._entries[-1].epoch == requested_epoch:
            return requested_epoch, log_end_offset
        higher = next((e for e in self._entries if e.epoch > requested_epoch), None)
        if higher is None:
            return UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET
        floor = None
        for entry in self._entries:
            if entry.epoch <= requested_epoch:
                floor = entry
        if floor is None:
            return requested_epoch, higher.start_offset
        return floor.epoch, higher.start_offset
