"""How the transaction coordinator appends to `__transaction_state`: locally or replicated.

Kafka's TransactionStateManager appends with acks=-1 and answers the client only once
the record is committed (high watermark past it): a transaction state a client was
told about survives the loss of any minority, and a failover replays it. A single node
is its own ISR. Leadership moving away mid-write surfaces as NOT_LEADER_OR_FOLLOWER,
which the coordinator answers as NOT_COORDINATOR.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from ..env import Clock
from ..errors import BrokerError, ErrorCode, NotLeaderOrFollowerError
from ..log.log_manager import LogManager
from ..log.partition_log import AppendResult, PartitionLog
from .config import TXN_STATE_TOPIC

if TYPE_CHECKING:
    from ..broker import Broker

# Kafka's transaction.state.log request timeout (the producer's request.timeout.ms-ish).
TXN_LOG_WRITE_TIMEOUT_S = 5.0


class TxnLogWriter(Protocol):
    """Appends to the `__transaction_state` partitions this node leads."""

    def append(self, partition: int, records: bytes) -> AppendResult:
        """Append a batch as the partition's leader; raises BrokerError."""
        ...

    async def complete(self, partition: int, end_offset: int) -> None:
        """Return once everything below `end_offset` is committed; raises BrokerError."""
        ...


class LocalTxnLogWriter:
    """A single node: the log is the ISR; complete once the flush policy ran."""

    def __init__(self, logs: LogManager, clock: Clock) -> None:
        self._logs = logs
        self._clock = clock

    def _log(self, partition: int) -> PartitionLog:
        log = self._logs.get(TXN_STATE_TOPIC, partition)
        if log is None:
            raise NotLeaderOrFollowerError(f"{TXN_STATE_TOPIC}-{partition} has no log here")
        return log

    def append(self, partition: int, records: bytes) -> AppendResult:
        """Append at leader epoch 0; the high watermark follows the log end."""
        log = self._log(partition)
        appended = log.append_as_leader(records, leader_epoch=0)
        log.update_high_watermark(log.log_end_offset)
        return appended

    async def complete(self, partition: int, end_offset: int) -> None:
        """Apply the flush policy."""
        log = self._log(partition)
        if log.flush_due(self._clock.now_ms()):
            await log.flush()


class ReplicatedTxnLogWriter:
    """A cluster: append as the partition's leader, wait until the ISR holds it."""

    def __init__(self, broker: Broker, timeout_s: float = TXN_LOG_WRITE_TIMEOUT_S) -> None:
        self._broker = broker
        self._timeout_s = timeout_s

    def append(self, partition: int, records: bytes) -> AppendResult:
        """Append in the current leader epoch with acks=all checks; raises BrokerError."""
        replica = self._broker.partition(TXN_STATE_TOPIC, partition)
        replica.ensure_leader()
        replica.check_enough_replicas(-1)
        return replica.append_records_as_leader(records)

    async def complete(self, partition: int, end_offset: int) -> None:
        """Flush per policy, then wait for the high watermark to pass `end_offset`."""
        replica = self._broker.partition(TXN_STATE_TOPIC, partition)
        await self._broker.flush_if_due(replica)
        code = await replica.wait_for_high_watermark(end_offset, self._timeout_s)
        if code is not ErrorCode.NONE:
            raise BrokerError(
                f"{TXN_STATE_TOPIC}-{partition}: the write up to offset {end_offset} did not "
                f"complete: {code.name}",
                code,
            )
