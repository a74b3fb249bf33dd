"""The transaction coordinator's rules (`txn.state`) and its `__transaction_state` records."""

from __future__ import annotations

import pytest

from reference_broker.errors import ErrorCode
from reference_broker.txn import state
from reference_broker.txn.records import (
    TxnMetadata,
    TxnRecordError,
    TxnState,
    decode_key,
    decode_value,
    encode_key,
    encode_value,
)

T = 1_000_000


def ongoing(epoch: int = 3, start: int = T) -> TxnMetadata:
    return TxnMetadata("tx", 7, epoch, 60_000, TxnState.ONGOING, frozenset({("t", 0)}), T, start)


def test_records_round_trip() -> None:
    meta = TxnMetadata(
        "tx-é",
        9,
        4,
        5000,
        TxnState.PREPARE_COMMIT,
        frozenset({("a", 1), ("a", 0), ("b", 2)}),
        T,
        T - 5,
    )
    assert decode_key(encode_key("tx-é")) == "tx-é"
    assert decode_value("tx-é", encode_value(meta)) == meta
    with pytest.raises(TxnRecordError):
        decode_value("tx", encode_value(meta)[:-3])


def test_first_init_allocates_and_later_inits_bump_the_epoch() -> None:
    first = state.init_producer_id(None, "tx", 60_000, T, new_producer_id=42)
    assert first.error is ErrorCode.NONE and first.write is not None
    assert (first.write.producer_id, first.write.producer_epoch) == (42, 0)
    again = state.init_producer_id(first.write, "tx", 60_000, T, new_producer_id=None)
    assert again.write is not None and again.write.producer_epoch == 1


def test_init_during_an_ongoing_transaction_fences_and_aborts_it() -> None:
    transition = state.init_producer_id(ongoing(), "tx", 60_000, T, None)
    assert transition.error is ErrorCode.CONCURRENT_TRANSACTIONS
    assert transition.send_markers
    assert transition.write is not None
    assert transition.write.state is TxnState.PREPARE_ABORT
    assert transition.write.producer_epoch == 4  # the old instance's epoch 3 is fenced


def test_requests_wait_while_markers_are_written() -> None:
    prepared = state.end_txn(ongoing(), 7, 3, True, T).write
    assert prepared is not None and prepared.state is TxnState.PREPARE_COMMIT
    assert state.add_partitions(prepared, 7, 3, [("t", 1)], T).error is (
        ErrorCode.CONCURRENT_TRANSACTIONS
    )
    assert state.init_producer_id(prepared, "tx", 60_000, T, None).error is (
        ErrorCode.CONCURRENT_TRANSACTIONS
    )
    done = state.complete(prepared, T)
    assert done.state is TxnState.COMPLETE_COMMIT and not done.partitions
    # A retried EndTxn of the committed transaction is answered as it was.
    assert state.end_txn(done, 7, 3, True, T) == state.Transition(ErrorCode.NONE)
    assert state.end_txn(done, 7, 3, False, T).error is ErrorCode.INVALID_TXN_STATE


def test_stale_producers_are_fenced() -> None:
    current = ongoing(epoch=5)
    assert state.add_partitions(current, 7, 4, [("t", 1)], T).error is ErrorCode.PRODUCER_FENCED
    assert state.end_txn(current, 7, 4, True, T).error is ErrorCode.PRODUCER_FENCED
    assert state.end_txn(current, 8, 5, True, T).error is ErrorCode.INVALID_PRODUCER_ID_MAPPING
    assert state.init_producer_id(current, "tx", 1000, T, None, expected=(7, 4)).error is (
        ErrorCode.PRODUCER_FENCED
    )


def test_add_partitions_opens_a_transaction_and_keeps_its_start() -> None:
    empty = TxnMetadata("tx", 7, 0, 60_000, TxnState.EMPTY)
    first = state.add_partitions(empty, 7, 0, [("t", 0)], T).write
    assert first is not None and first.state is TxnState.ONGOING and first.start_ms == T
    second = state.add_partitions(first, 7, 0, [("t", 1)], T + 50).write
    assert second is not None and second.start_ms == T
    assert second.partitions == {("t", 0), ("t", 1)}
    # Nothing new: nothing to store.
    assert state.add_partitions(second, 7, 0, [("t", 1)], T + 60).write is None


def test_expiry_aborts_only_after_the_timeout_and_fences_the_producer() -> None:
    current = ongoing(epoch=2)
    assert state.expire(current, T + 60_000) is None
    transition = state.expire(current, T + 60_001)
    assert transition is not None and transition.write is not None and transition.send_markers
    assert transition.write.state is TxnState.PREPARE_ABORT
    assert transition.write.producer_epoch == 3
