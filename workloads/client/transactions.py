"""The transactional producer's state machine, after the Java client's TransactionManager.

A plain state machine: it holds where the transaction is, which partitions the
coordinator has been told about, and the error that stopped it; the producer does
the I/O (FindCoordinator, InitProducerId, AddPartitionsToTxn, EndTxn, ...) and
reports outcomes here. The states and their moves are Java's:

    UNINITIALIZED -> INITIALIZING -> READY -> IN_TRANSACTION -> COMMITTING -> READY
                                              IN_TRANSACTION -> ABORTING -> READY
    any of IN_TRANSACTION, COMMITTING       -> ABORTABLE_ERROR -> ABORTING -> READY
    anything                                -> FATAL_ERROR (final)

An abortable error (a send of the transaction failed, the coordinator refused a
step) leaves the transaction unable to commit: only `abort` leads on. A fatal one
(fenced by a newer instance of the transactional.id, refused the id) ends the
producer. Error codes are sorted into the two the way Java's handlers sort them.
"""

from __future__ import annotations

import enum

from .cluster import TopicPartition
from .errors import (
    KafkaClientError,
    TransactionAbortableError,
    TransactionFatalError,
    error_name,
)


class TxnState(enum.Enum):
    """Where the transactional producer is (Java's TransactionManager.State)."""

    UNINITIALIZED = "uninitialized"
    INITIALIZING = "initializing"
    READY = "ready"
    IN_TRANSACTION = "in_transaction"
    COMMITTING = "committing"
    ABORTING = "aborting"
    ABORTABLE_ERROR = "abortable_error"
    FATAL_ERROR = "fatal_error"


_MOVES: dict[TxnState, frozenset[TxnState]] = {
    TxnState.UNINITIALIZED: frozenset({TxnState.INITIALIZING}),
    TxnState.INITIALIZING: frozenset({TxnState.READY, TxnState.UNINITIALIZED}),
    TxnState.READY: frozenset({TxnState.IN_TRANSACTION, TxnState.INITIALIZING}),
    TxnState.IN_TRANSACTION: frozenset(
        {TxnState.COMMITTING, TxnState.ABORTING, TxnState.ABORTABLE_ERROR}
    ),
    TxnState.COMMITTING: frozenset({TxnState.READY, TxnState.ABORTABLE_ERROR}),
    TxnState.ABORTING: frozenset({TxnState.READY, TxnState.INITIALIZING}),
    TxnState.ABORTABLE_ERROR: frozenset({TxnState.ABORTING}),
    TxnState.FATAL_ERROR: frozenset(),
}

# Coordinator answers worth a retry after backoff: the coordinator is moving or
# loading (find it again), or an earlier EndTxn / fencing is still writing markers.
COORDINATOR_MOVED = frozenset({15, 16})  # COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR
RETRY_TXN = frozenset({14, 15, 16, 51})  # + COORDINATOR_LOAD_IN_PROGRESS, CONCURRENT_TRANSACTIONS
# Answers that end the producer: a newer instance has the id, or the principal may not use it.
FATAL_TXN = frozenset({47, 49, 53, 90})  # INVALID_PRODUCER_EPOCH, INVALID_PRODUCER_ID_MAPPING,
#                                          TRANSACTIONAL_ID_AUTHORIZATION_FAILED, PRODUCER_FENCED


class TransactionManager:
    """The transaction's state, its partitions, and the error that stopped it."""

    def __init__(self, transactional_id: str, timeout_ms: int) -> None:
        self.transactional_id = transactional_id
        self.timeout_ms = timeout_ms
        self.state = TxnState.UNINITIALIZED
        # Partitions (and groups) the coordinator has accepted into the open transaction.
        self.partitions: set[TopicPartition] = set()
        self.groups: set[str] = set()
        self.error: KafkaClientError | None = None
        # The producer's sequences cannot go on under this epoch (a batch of the
        # transaction failed or was dropped): the next init bumps it (KIP-360).
        self.needs_epoch_bump = False

    def _move(self, target: TxnState) -> None:
        if target not in _MOVES[self.state]:
            raise self._refusal(f"cannot go from {self.state.value} to {target.value}")
        self.state = target

    def _refusal(self, what: str) -> KafkaClientError:
        if self.state is TxnState.FATAL_ERROR and self.error is not None:
            return self.error
        if self.state is TxnState.ABORTABLE_ERROR and self.error is not None:
            return TransactionAbortableError(
                f"transaction of {self.transactional_id!r} must be aborted first: {self.error}"
            )
        return TransactionAbortableError(f"transactional producer {self.transactional_id!r} {what}")

    # -- moves the application asks for ------------------------------------------------

    def start_init(self) -> None:
        """InitProducerId is about to be sent (first init, or an epoch bump after abort)."""
        self._move(TxnState.INITIALIZING)

    def initialized(self) -> None:
        """InitProducerId answered with a producer id and epoch."""
        self._move(TxnState.READY)
        self.partitions.clear()
        self.groups.clear()
        self.needs_epoch_bump = False
        self.error = None

    def init_failed(self) -> None:
        """InitProducerId gave up (retriable errors outlasted max.block.ms): init may be retried."""
        if self.state is TxnState.INITIALIZING:
            self.state = TxnState.UNINITIALIZED

    def begin(self) -> None:
        """begin_transaction()."""
        if self.state is not TxnState.READY:
            hint = " (init_transactions first)" if self.state is TxnState.UNINITIALIZED else ""
            raise self._refusal(f"cannot begin a transaction in state {self.state.value}{hint}")
        self._move(TxnState.IN_TRANSACTION)

    def check_can_send(self) -> None:
        """A send or send_offsets_to_transaction may go on only inside an open transaction."""
        if self.state is not TxnState.IN_TRANSACTION:
            raise self._refusal(
                f"cannot send in state {self.state.value}; begin_transaction() first"
            )

    def needs_adding(self, tp: TopicPartition) -> bool:
        """Whether `tp` must be added to the transaction (AddPartitionsToTxn) before a send."""
        return tp not in self.partitions

    def added(self, tps: set[TopicPartition]) -> None:
        """The coordinator accepted these partitions into the transaction."""
        self.partitions |= tps

    def begin_commit(self) -> None:
        """commit_transaction(): refused unless the transaction is open and healthy."""
        if self.state is TxnState.COMMITTING:
            return  # a retry of a commit whose outcome was unknown
        if self.state is not TxnState.IN_TRANSACTION:
            raise self._refusal(f"cannot commit in state {self.state.value}")
        self._move(TxnState.COMMITTING)

    def begin_abort(self) -> bool:
        """abort_transaction(); False when there is nothing to abort (no open transaction)."""
        if self.state is TxnState.READY:
            return False
        if self.state is TxnState.ABORTING:
            return True  # a retry of an abort that did not finish
        self._move(TxnState.ABORTING)
        return True

    def completed(self) -> None:
        """EndTxn succeeded: the transaction is over."""
        self._move(TxnState.READY)
        self.partitions.clear()
        self.groups.clear()
        self.error = None

    # -- errors ------------------------------------------------------------------------

    def abortable(self, error: KafkaClientError) -> TransactionAbortableError:
        """An error the transaction cannot commit after; returns the error to raise."""
        self.needs_epoch_bump = True
        wrapped = (
            error
            if isinstance(error, TransactionAbortableError)
            else TransactionAbortableError(
                f"transaction of {self.transactional_id!r} must be aborted: {error}"
            )
        )
        if self.state in (TxnState.IN_TRANSACTION, TxnState.COMMITTING):
            self.state = TxnState.ABORTABLE_ERROR
            self.error = wrapped
        return wrapped

    def fatal(self, error: KafkaClientError) -> TransactionFatalError:
        """An error the producer cannot go on after; returns the error to raise."""
        if self.state is TxnState.FATAL_ERROR and isinstance(self.error, TransactionFatalError):
            return self.error
        wrapped = (
            error
            if isinstance(error, TransactionFatalError)
            else TransactionFatalError(
                f"transactional producer {self.transactional_id!r} is fenced or refused: {error}. "
                "Close it; a new producer with the same transactional.id takes over"
            )
        )
        self.state = TxnState.FATAL_ERROR
        self.error = wrapped
        return wrapped

    def coordinator_error(self, code: int, context: str) -> KafkaClientError:
        """The error (abortable or fatal) that a coordinator's non-retriable answer means."""
        text = f"{context}: broker returned {error_name(code)} ({code})"
        if code in FATAL_TXN:
            return self.fatal(TransactionFatalError(text))
        return self.abortable(TransactionAbortableError(text))
