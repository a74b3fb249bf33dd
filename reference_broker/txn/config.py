"""Broker settings of the transaction coordinator, named after Kafka's broker configs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

TXN_STATE_TOPIC = "__transaction_state"


@dataclass(frozen=True)
class TxnConfig:
    """Transaction coordinator settings; each field is the Kafka broker config beside it."""

    num_partitions: int = 50  # transaction.state.log.num.partitions
    replication_factor: int = 3  # transaction.state.log.replication.factor
    min_isr: int = 2  # transaction.state.log.min.isr
    max_timeout_ms: int = 900_000  # transaction.max.timeout.ms
    abort_check_interval_ms: int = 10_000  # ...abort.timed.out.transaction.cleanup.interval.ms

    def __post_init__(self) -> None:
        if self.num_partitions < 1:
            raise ValueError(
                f"transaction.state.log.num.partitions must be >= 1, got {self.num_partitions}"
            )
        if self.replication_factor < 1:
            raise ValueError(
                "transaction.state.log.replication.factor must be >= 1, "
                f"got {self.replication_factor}"
            )
        if self.abort_check_interval_ms < 1:
            raise ValueError(
                "transaction.abort.timed.out.transaction.cleanup.interval.ms must be >= 1, "
                f"got {self.abort_check_interval_ms}"
            )

    @classmethod
    def from_properties(cls, props: Mapping[str, object]) -> TxnConfig:
        """Read the transaction.* names from a broker's properties (defaults as Kafka's)."""

        def get(name: str, default: int) -> int:
            value = props.get(name)
            return default if value is None else int(str(value))

        return cls(
            num_partitions=get("transaction.state.log.num.partitions", 50),
            replication_factor=get("transaction.state.log.replication.factor", 3),
            min_isr=get("transaction.state.log.min.isr", 2),
            max_timeout_ms=get("transaction.max.timeout.ms", 900_000),
            abort_check_interval_ms=get(
                "transaction.abort.timed.out.transaction.cleanup.interval.ms", 10_000
            ),
        )
