"""The transactional producer's state machine (`workloads.client.transactions`) alone."""

from __future__ import annotations

import pytest

from workloads.client import TopicPartition
from workloads.client.errors import (
    KafkaClientError,
    TransactionAbortableError,
    TransactionFatalError,
)
from workloads.client.transactions import TransactionManager, TxnState

TP = TopicPartition("t", 0)


def ready() -> TransactionManager:
    txn = TransactionManager("tx", 10_000)
    txn.start_init()
    txn.initialized()
    return txn


def test_begin_needs_init_and_sends_need_a_transaction() -> None:
    txn = TransactionManager("tx", 10_000)
    with pytest.raises(TransactionAbortableError, match="init_transactions first"):
        txn.begin()
    txn.start_init()
    txn.initialized()
    with pytest.raises(TransactionAbortableError, match="begin_transaction"):
        txn.check_can_send()
    txn.begin()
    txn.check_can_send()
    assert txn.needs_adding(TP)
    txn.added({TP})
    assert not txn.needs_adding(TP)
    txn.begin_commit()
    txn.completed()
    assert txn.state is TxnState.READY and txn.needs_adding(TP)


def test_an_abortable_error_refuses_commit_until_aborted() -> None:
    txn = ready()
    txn.begin()
    txn.abortable(KafkaClientError("send failed"))
    assert txn.state is TxnState.ABORTABLE_ERROR and txn.needs_epoch_bump
    with pytest.raises(TransactionAbortableError, match="must be aborted"):
        txn.begin_commit()
    with pytest.raises(TransactionAbortableError, match="must be aborted"):
        txn.check_can_send()
    assert txn.begin_abort()
    # After the abort the epoch is bumped (a new init), and the producer goes on.
    txn.start_init()
    txn.initialized()
    assert txn.state is TxnState.READY and not txn.needs_epoch_bump
    txn.begin()


def test_a_fatal_error_is_final() -> None:
    txn = ready()
    txn.begin()
    error = txn.coordinator_error(90, "EndTxn(commit)")
    assert isinstance(error, TransactionFatalError) and "PRODUCER_FENCED" in str(error)
    assert txn.state is TxnState.FATAL_ERROR
    for step in (txn.begin, txn.begin_commit, txn.begin_abort, txn.check_can_send):
        with pytest.raises(TransactionFatalError):
            step()


def test_coordinator_refusals_sort_into_abortable_and_fatal() -> None:
    for code in (48, 120):  # INVALID_TXN_STATE, TRANSACTION_ABORTABLE
        txn = ready()
        txn.begin()
        assert isinstance(txn.coordinator_error(code, "x"), TransactionAbortableError)
        assert txn.state is TxnState.ABORTABLE_ERROR
    for code in (47, 53, 90):  # INVALID_PRODUCER_EPOCH, TXN_ID_AUTHORIZATION, PRODUCER_FENCED
        txn = ready()
        txn.begin()
        assert isinstance(txn.coordinator_error(code, "x"), TransactionFatalError)


def test_abort_without_a_transaction_is_a_no_op_and_a_commit_may_be_retried() -> None:
    txn = ready()
    assert not txn.begin_abort()
    txn.begin()
    txn.begin_commit()
    txn.begin_commit()  # the retry of a commit whose outcome was unknown
    txn.completed()
    assert txn.state is TxnState.READY
