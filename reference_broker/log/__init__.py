"""The log layer: segmented logs of Kafka v2 record batches, recovery, retention, fsync policy.

Public API: `LogConfig`, `PartitionLog` (with `AppendResult`, `ReadResult`) and
`LogManager`; `record_batch` parses batch headers.
"""

from reference_broker.log.config import LogConfig
from reference_broker.log.log_manager import LogManager
from reference_broker.log.partition_log import AppendResult, PartitionLog, ReadResult

__all__ = ["AppendResult", "LogConfig", "LogManager", "PartitionLog", "ReadResult"]
