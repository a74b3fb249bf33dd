"""The transaction coordinator over a real `__transaction_state` log: failover mid-transaction.

Two coordinator instances share one log, as two successive leaders of the partition
would (the second replays what the first stored). Markers go to a recording sender
that can be held, standing in for the partition leaders: a coordinator that stored
PrepareCommit and died before its markers went out is succeeded by one that writes the
COMMIT markers with its own epoch and stores CompleteCommit; an Ongoing transaction
inherited by a new coordinator is aborted at its timeout, fencing its producer.
"""

from __future__ import annotations

from pathlib import Path

import trio
import trio.testing

from reference_broker.errors import ErrorCode
from reference_broker.log import LogConfig, PartitionLog
from reference_broker.log.log_manager import LogManager
from reference_broker.os_env import OsStorage
from reference_broker.txn.config import TXN_STATE_TOPIC, TxnConfig
from reference_broker.txn.coordinator import MarkerRequest, TransactionCoordinator
from reference_broker.txn.log_writer import LocalTxnLogWriter
from reference_broker.txn.records import TopicPartition, TxnState


class TrioClock:
    """Wall clock of the node = trio's (mock) clock, in ms."""

    def now_ms(self) -> int:
        return int(trio.current_time() * 1000) + 1_700_000_000_000


class RecordingMarkers:
    """Answers every marker as written, unless held; remembers what it was asked."""

    def __init__(self) -> None:
        self.sent: list[MarkerRequest] = []
        self.held = False

    async def send(self, request: MarkerRequest) -> dict[TopicPartition, ErrorCode]:
        if self.held:
            return dict.fromkeys(request.partitions, ErrorCode.NOT_LEADER_OR_FOLLOWER)
        self.sent.append(request)
        return dict.fromkeys(request.partitions, ErrorCode.NONE)


def coordinator(logs: LogManager, markers: RecordingMarkers) -> TransactionCoordinator:
    ids = iter(range(100, 200))

    async def allocate() -> int:
        return next(ids)

    config = TxnConfig(num_partitions=1, abort_check_interval_ms=100)
    return TransactionCoordinator(
        config, TrioClock(), LocalTxnLogWriter(logs, TrioClock()), markers, allocate
    )


def txn_log(tmp_path: Path) -> tuple[LogManager, PartitionLog]:
    logs = LogManager.open(OsStorage(tmp_path), TrioClock(), LogConfig())
    return logs, logs.create(TXN_STATE_TOPIC, 0, LogConfig())


def test_prepared_commit_is_completed_by_the_next_coordinator(tmp_path: Path) -> None:
    async def scenario() -> None:
        logs, log = txn_log(tmp_path)
        first_markers, second_markers = RecordingMarkers(), RecordingMarkers()
        first = coordinator(logs, first_markers)
        second = coordinator(logs, second_markers)
        first_markers.held = True  # the first coordinator's markers never get through
        async with trio.open_nursery() as nursery:
            await nursery.start(first.run)
            await nursery.start(second.run)
            await first.become_coordinator(0, log, coordinator_epoch=1)
            error, pid, epoch = await first.init_producer_id("tx", 60_000)
            assert error is ErrorCode.NONE
            parts = [("t", 0), ("t", 1)]
            assert await first.add_partitions("tx", pid, epoch, parts) is ErrorCode.NONE
            assert await first.end_txn("tx", pid, epoch, True) is ErrorCode.NONE
            await trio.sleep(1)
            assert first_markers.sent == []
            # Failover: the first resigns, the second replays the partition.
            first.resign_coordinator(0)
            await second.become_coordinator(0, log, coordinator_epoch=2)
            await trio.sleep(1)
            assert second_markers.sent == [MarkerRequest(pid, epoch, True, 2, frozenset(parts))]
            meta = second.describe("tx")
            assert meta is not None and meta.state is TxnState.COMPLETE_COMMIT
            # The same client retrying its EndTxn at the new coordinator is told it committed.
            assert await second.end_txn("tx", pid, epoch, True) is ErrorCode.NONE
            assert await second.end_txn("tx", pid, epoch, False) is ErrorCode.INVALID_TXN_STATE
            nursery.cancel_scope.cancel()

    trio.run(scenario, clock=trio.testing.MockClock(autojump_threshold=0))


def test_ongoing_transaction_inherited_by_a_new_coordinator_times_out(tmp_path: Path) -> None:
    async def scenario() -> None:
        logs, log = txn_log(tmp_path)
        markers = RecordingMarkers()
        first = coordinator(logs, RecordingMarkers())
        second = coordinator(logs, markers)
        async with trio.open_nursery() as nursery:
            await nursery.start(second.run)
            await first.become_coordinator(0, log, coordinator_epoch=1)
            error, pid, epoch = await first.init_producer_id("tx", 5_000)
            assert error is ErrorCode.NONE
            assert await first.add_partitions("tx", pid, epoch, [("t", 0)]) is ErrorCode.NONE
            first.resign_coordinator(0)
            await second.become_coordinator(0, log, coordinator_epoch=2)
            await trio.sleep(4)
            assert markers.sent == []  # not yet timed out: nothing is decided
            await trio.sleep(2)
            assert markers.sent == [MarkerRequest(pid, epoch + 1, False, 2, frozenset({("t", 0)}))]
            # The producer that owned it is fenced; a new instance gets a newer epoch.
            assert await second.end_txn("tx", pid, epoch, True) is ErrorCode.PRODUCER_FENCED
            error, same_pid, new_epoch = await second.init_producer_id("tx", 5_000)
            assert (error, same_pid, new_epoch) == (ErrorCode.NONE, pid, epoch + 2)
            nursery.cancel_scope.cancel()

    trio.run(scenario, clock=trio.testing.MockClock(autojump_threshold=0))
