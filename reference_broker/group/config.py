"""Broker settings of the group coordinator, named after Kafka's broker configs."""

from __future__ import annotations

from dataclasses import dataclass

# Kafka's GroupCoordinator.NewMemberJoinTimeoutMs: a member that joined but never completed a
# rebalance cannot heartbeat, so its JoinGroup is bounded by this instead of the session timeout.
NEW_MEMBER_JOIN_TIMEOUT_MS = 300_000


@dataclass(frozen=True)
class GroupConfig:
    """Group coordinator settings; each field is the Kafka broker config named beside it."""

    min_session_timeout_ms: int = 6000  # group.min.session.timeout.ms
    max_session_timeout_ms: int = 1_800_000  # group.max.session.timeout.ms
    initial_rebalance_delay_ms: int = 3000  # group.initial.rebalance.delay.ms
    max_size: int = 2**31 - 1  # group.max.size
    offsets_topic_num_partitions: int = 50  # offsets.topic.num.partitions
    offset_metadata_max_bytes: int = 4096  # offset.metadata.max.bytes

    def __post_init__(self) -> None:
        if not 0 <= self.min_session_timeout_ms <= self.max_session_timeout_ms:
            raise ValueError(
                "group.min.session.timeout.ms must be >= 0 and <= group.max.session.timeout.ms, "
                f"got {self.min_session_timeout_ms} and {self.max_session_timeout_ms}"
            )
        if self.initial_rebalance_delay_ms < 0:
            raise ValueError(
                "group.initial.rebalance.delay.ms must be >= 0, "
                f"got {self.initial_rebalance_delay_ms}"
            )
        if self.max_size < 1:
            raise ValueError(f"group.max.size must be >= 1, got {self.max_size}")
        if self.offsets_topic_num_partitions < 1:
            raise ValueError(
                "offsets.topic.num.partitions must be >= 1, "
                f"got {self.offsets_topic_num_partitions}"
            )
        if self.offset_metadata_max_bytes < 0:
            raise ValueError(
                f"offset.metadata.max.bytes must be >= 0, got {self.offset_metadata_max_bytes}"
            )
