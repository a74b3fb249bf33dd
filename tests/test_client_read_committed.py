"""The read_committed skipper of faultline's client: which batches a fetch drops."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from workloads.client.read_committed import AbortedSkipper, AbortedTxn


@dataclass
class Record:
    key: bytes | None


@dataclass
class Batch:
    """A one-offset batch: data of `producer_id`, or its COMMIT/ABORT marker."""

    last_offset: int
    producer_id: int
    marker: str | None = None  # "commit" or "abort" for a control batch
    is_transactional: bool = True

    @property
    def is_control_batch(self) -> bool:
        return self.marker is not None

    def __iter__(self) -> Iterator[Any]:
        kind = 0 if self.marker == "abort" else 1
        return iter([Record(b"\x00\x00" + kind.to_bytes(2, "big"))])


def kept(batches: list[Batch], aborted: list[AbortedTxn]) -> list[int]:
    skipper = AbortedSkipper(aborted)
    return [b.last_offset for b in batches if not skipper.skip(b)]


def test_aborted_transactions_of_several_producers_are_all_dropped() -> None:
    # The producer with the higher id aborted first: ordering the pending aborts by
    # producer id would leave its transaction open-ended and hand out its data.
    batches = [
        Batch(0, producer_id=9), Batch(1, producer_id=9, marker="abort"),
        Batch(2, producer_id=5), Batch(3, producer_id=7), Batch(4, producer_id=5, marker="abort"),
        Batch(5, producer_id=7, marker="commit"), Batch(6, producer_id=9),
        Batch(7, producer_id=9, marker="commit"),
    ]
    aborted = [AbortedTxn(producer_id=5, first_offset=2), AbortedTxn(producer_id=9, first_offset=0)]
    assert kept(batches, aborted) == [3, 6]


def test_non_transactional_data_is_never_dropped() -> None:
    batches = [Batch(0, producer_id=4, is_transactional=False), Batch(1, producer_id=4)]
    assert kept(batches, [AbortedTxn(producer_id=4, first_offset=0)]) == [0]
