"""Per-log version orders: which value sits at which offset, as every observation says.

Offsets come straight from Kafka; a *dense index* counts only occupied offsets, so the
gaps Kafka leaves (transaction markers, compaction, aborted batches) are not mistaken
for skipped messages. Two values at one offset are kept aside as a conflict; the order
keeps the first value it saw there.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right

from history.model import split_log


class LogOrder:
    """The version order of one log, built incrementally and queried after the pass.

    `values` maps offset -> first value observed there and `observers` offset -> the
    index of the event that observed it; the checkers fill both directly on the hot
    path. After `freeze()`, `between` answers which occupied offsets lie strictly
    between two offsets.
    """

    __slots__ = (
        "_sorted", "max_read", "max_read_index", "name", "observers", "partition", "topic",
        "values",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        self.topic, self.partition = split_log(name)
        self.values: dict[int, int] = {}
        # offset -> index of the first event that observed a value there.
        self.observers: dict[int, int] = {}
        # The highest offset any poll returned for this log, and the poll that did.
        self.max_read = -1
        self.max_read_index = -1
        self._sorted: list[int] | None = None

    def freeze(self) -> None:
        """Sort the occupied offsets; call once all observations are in."""
        self._sorted = sorted(self.values)

    @property
    def offsets(self) -> list[int]:
        """Occupied offsets in ascending order (after `freeze`)."""
        if self._sorted is None:
            self.freeze()
        assert self._sorted is not None
        return self._sorted

    def between(self, low: int, high: int) -> list[int]:
        """Occupied offsets strictly between `low` and `high`."""
        offsets = self.offsets
        return offsets[bisect_right(offsets, low) : bisect_left(offsets, high)]

    def below(self, high: int) -> list[int]:
        """Occupied offsets strictly below `high`."""
        offsets = self.offsets
        return offsets[: bisect_left(offsets, high)]

    def high_offset(self) -> int:
        """The highest occupied offset, or -1 for a log nothing was observed in."""
        offsets = self.offsets
        return offsets[-1] if offsets else -1
