"""Dropping the records of aborted transactions from a read_committed fetch.

A read_committed Fetch returns data below the last stable offset together with the
aborted transactions that overlap it: (producer id, first offset) pairs. As the Java
Fetcher does, batches are walked in offset order; an aborted transaction becomes
active for its producer once a batch reaches its first offset, every transactional
batch of that producer is dropped while it is active, and the producer's ABORT
marker (a control batch) ends it. Control batches themselves are never records.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from typing import Any, NamedTuple, Protocol

# A control record's key: version (int16) then type (int16): 0 ABORT, 1 COMMIT.
_ABORT = 0


class AbortedTxn(NamedTuple):
    """One entry of a Fetch response's aborted_transactions list."""

    producer_id: int
    first_offset: int


class _Batch(Protocol):
    @property
    def is_control_batch(self) -> bool: ...
    @property
    def is_transactional(self) -> bool: ...
    @property
    def producer_id(self) -> int: ...
    @property
    def last_offset(self) -> int: ...
    def __iter__(self) -> Iterator[Any]: ...


class AbortedSkipper:
    """Decides, batch by batch in offset order, which batches a read_committed
    consumer must not hand out."""

    def __init__(self, aborted: list[AbortedTxn]) -> None:
        # Ordered by first offset (an AbortedTxn tuple would order by producer id).
        self._pending = [(a.first_offset, a.producer_id) for a in aborted]
        heapq.heapify(self._pending)
        self._active: set[int] = set()

    def skip(self, batch: _Batch) -> bool:
        """Whether `batch` is dropped (a control batch, or data of an aborted transaction)."""
        if batch.is_transactional:
            # Aborted transactions that began at or before this batch are now open.
            while self._pending and self._pending[0][0] <= batch.last_offset:
                self._active.add(heapq.heappop(self._pending)[1])
        if batch.is_control_batch:
            if batch.is_transactional and _is_abort_marker(batch):
                self._active.discard(batch.producer_id)
            return True
        return batch.is_transactional and batch.producer_id in self._active


def _is_abort_marker(batch: _Batch) -> bool:
    for record in batch:
        key = record.key
        if key is None or len(key) < 4:
            return False
        return int.from_bytes(key[2:4], "big", signed=True) == _ABORT
    return False
