"""The transaction coordinator's rules for one transactional id, as a plain state machine.

Each client request (and the expiry timer, and the end of marker writes) is a pure
function from the id's current `TxnMetadata` to a `Transition`: the error to answer and
the metadata to store in `__transaction_state`. The coordinator's async edge stores the
new metadata first and changes its memory only once the write completed (so a failover
never loses a state a client was told about), then sends markers when the transition
asks for them. The rules are Kafka's TransactionCoordinator:

- InitProducerId: a new id gets a fresh producer id at epoch 0; a known one has its
  epoch bumped, which fences the previous producer instance (its requests now carry an
  older epoch: PRODUCER_FENCED). A transaction still Ongoing is aborted first with a
  bumped epoch (PrepareAbort, markers) and the caller told CONCURRENT_TRANSACTIONS,
  to retry once the abort completed; while markers are in flight (PrepareCommit /
  PrepareAbort) every request gets CONCURRENT_TRANSACTIONS.
- AddPartitionsToTxn (and AddOffsetsToTxn, for the group's `__consumer_offsets`
  partition): Ongoing, with the union of the partitions; start time set on the first.
- EndTxn: Ongoing -> PrepareCommit/PrepareAbort (answered once stored), then markers,
  then CompleteCommit/CompleteAbort. A retried EndTxn of a decided transaction is
  answered as it was; one asking the other outcome is INVALID_TXN_STATE.
- Expiry: an Ongoing transaction older than its timeout is aborted with a bumped epoch,
  so the (possibly paused, zombie) producer that owned it is fenced.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from reference_broker.errors import ErrorCode
from reference_broker.txn.records import TopicPartition, TxnMetadata, TxnState

# Kafka bumps to a new producer id when the epoch would reach Short.MAX_VALUE.
MAX_EPOCH = 32767
NO_PRODUCER_ID = -1


@dataclass(frozen=True, slots=True)
class Transition:
    """What a request does: the error to answer and the metadata to store first (if any).

    `send_markers`: once `write` is stored, write the markers of its (prepared) outcome
    to every partition of the transaction and then store the completed state.
    """

    error: ErrorCode
    write: TxnMetadata | None = None
    send_markers: bool = False

    @classmethod
    def fail(cls, error: ErrorCode) -> Transition:
        return cls(error)


def needs_new_producer_id(current: TxnMetadata | None) -> bool:
    """Whether InitProducerId must allocate a producer id (new id, or epoch exhausted)."""
    return current is None or current.producer_epoch >= MAX_EPOCH - 1


def init_producer_id(
    current: TxnMetadata | None,
    transactional_id: str,
    timeout_ms: int,
    now_ms: int,
    new_producer_id: int | None,
    expected: tuple[int, int] | None = None,
) -> Transition:
    """InitProducerId for a transactional id; `expected` is the caller's (pid, epoch) (v3+)."""
    if current is None:
        assert new_producer_id is not None
        return Transition(
            ErrorCode.NONE,
            TxnMetadata(
                transactional_id,
                new_producer_id,
                0,
                timeout_ms,
                TxnState.EMPTY,
                frozenset(),
                now_ms,
            ),
        )
    if current.state.preparing or current.state is TxnState.PREPARE_EPOCH_FENCE:
        return Transition.fail(ErrorCode.CONCURRENT_TRANSACTIONS)
    if expected is not None and expected[0] != NO_PRODUCER_ID:
        pid, epoch = expected
        # KIP-360: a producer recovering its own id; anyone older is fenced.
        if pid != current.producer_id or epoch != current.producer_epoch:
            return Transition.fail(ErrorCode.PRODUCER_FENCED)
    if current.state is TxnState.ONGOING:
        # Fence the owner and abort its transaction; the caller retries afterwards.
        return Transition(
            ErrorCode.CONCURRENT_TRANSACTIONS,
            _prepare(current, commit=False, now_ms=now_ms, bump=True),
            send_markers=True,
        )
    if new_producer_id is not None:
        pid, epoch = new_producer_id, 0
    else:
        pid, epoch = current.producer_id, current.producer_epoch + 1
    return Transition(
        ErrorCode.NONE,
        replace(
            current,
            producer_id=pid,
            producer_epoch=epoch,
            timeout_ms=timeout_ms,
            state=TxnState.EMPTY,
            partitions=frozenset(),
            update_ms=now_ms,
            start_ms=-1,
        ),
    )


def _check_producer(current: TxnMetadata | None, pid: int, epoch: int) -> ErrorCode:
    if current is None or current.producer_id != pid:
        return ErrorCode.INVALID_PRODUCER_ID_MAPPING
    if epoch != current.producer_epoch:
        return ErrorCode.PRODUCER_FENCED
    return ErrorCode.NONE


def add_partitions(
    current: TxnMetadata | None,
    pid: int,
    epoch: int,
    partitions: Iterable[TopicPartition],
    now_ms: int,
) -> Transition:
    """AddPartitionsToTxn / AddOffsetsToTxn: the partitions join the ongoing transaction."""
    error = _check_producer(current, pid, epoch)
    if error is not ErrorCode.NONE:
        return Transition.fail(error)
    assert current is not None
    if current.state.preparing or current.state is TxnState.PREPARE_EPOCH_FENCE:
        return Transition.fail(ErrorCode.CONCURRENT_TRANSACTIONS)
    if current.state is TxnState.DEAD:
        return Transition.fail(ErrorCode.INVALID_TXN_STATE)
    wanted = frozenset(partitions)
    if current.state is TxnState.ONGOING and wanted <= current.partitions:
        return Transition(ErrorCode.NONE)
    start = current.start_ms if current.state is TxnState.ONGOING else now_ms
    return Transition(
        ErrorCode.NONE,
        replace(
            current,
            state=TxnState.ONGOING,
            partitions=current.partitions | wanted,
            update_ms=now_ms,
            start_ms=start,
        ),
    )


def end_txn(
    current: TxnMetadata | None, pid: int, epoch: int, commit: bool, now_ms: int
) -> Transition:
    """EndTxn: decide the ongoing transaction (stored, then markers)."""
    error = _check_producer(current, pid, epoch)
    if error is not ErrorCode.NONE:
        return Transition.fail(error)
    assert current is not None
    state = current.state
    if state is TxnState.ONGOING:
        return Transition(
            ErrorCode.NONE, _prepare(current, commit=commit, now_ms=now_ms), send_markers=True
        )
    wanted_prepare = TxnState.PREPARE_COMMIT if commit else TxnState.PREPARE_ABORT
    wanted_complete = TxnState.COMPLETE_COMMIT if commit else TxnState.COMPLETE_ABORT
    if state is wanted_complete:
        return Transition(ErrorCode.NONE)  # a retry of an EndTxn that completed
    if state is wanted_prepare:
        return Transition.fail(ErrorCode.CONCURRENT_TRANSACTIONS)
    return Transition.fail(ErrorCode.INVALID_TXN_STATE)


def expire(current: TxnMetadata, now_ms: int) -> Transition | None:
    """The timer: abort an Ongoing transaction past its timeout, fencing its producer."""
    if current.state is not TxnState.ONGOING or current.start_ms < 0:
        return None
    if now_ms - current.start_ms <= current.timeout_ms:
        return None
    return Transition(
        ErrorCode.NONE, _prepare(current, commit=False, now_ms=now_ms, bump=True), send_markers=True
    )


def complete(current: TxnMetadata, now_ms: int) -> TxnMetadata:
    """The state once every marker of a prepared transaction is written."""
    done = (
        TxnState.COMPLETE_COMMIT
        if current.state is TxnState.PREPARE_COMMIT
        else TxnState.COMPLETE_ABORT
    )
    return replace(current, state=done, partitions=frozenset(), update_ms=now_ms)


def _prepare(current: TxnMetadata, *, commit: bool, now_ms: int, bump: bool = False) -> TxnMetadata:
    epoch = current.producer_epoch + 1 if bump else current.producer_epoch
    return replace(
        current,
        producer_epoch=min(epoch, MAX_EPOCH),
        state=TxnState.PREPARE_COMMIT if commit else TxnState.PREPARE_ABORT,
        update_ms=now_ms,
    )
