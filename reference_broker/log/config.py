"""Topic-level log configuration, named and defaulted as Kafka's topic configs.

`LogConfig` holds the settings the log layer acts on (segments, retention, flush
policy, batch size limits) plus the few topic configs the broker reads from the same
place in Kafka (min.insync.replicas, unclean.leader.election.enable), so that one
object describes a topic and one file persists it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_INT64_MAX = (1 << 63) - 1
_WEEK_MS = 7 * 24 * 3600 * 1000


@dataclass(frozen=True)
class LogConfig:
    """Settings of one partition log; every field is a Kafka topic config."""

    segment_bytes: int = 1 << 30  # segment.bytes
    segment_ms: int = _WEEK_MS  # segment.ms
    retention_ms: int = _WEEK_MS  # retention.ms (-1 = forever)
    retention_bytes: int = -1  # retention.bytes (-1 = unlimited)
    flush_messages: int | None = None  # flush.messages (None = never force; Kafka: Long.MAX)
    flush_ms: int | None = None  # flush.ms (None = never force; Kafka: Long.MAX)
    max_message_bytes: int = 1048588  # max.message.bytes (per batch)
    index_interval_bytes: int = 4096  # index.interval.bytes
    message_timestamp_type: str = "CreateTime"  # message.timestamp.type
    min_insync_replicas: int = 1  # min.insync.replicas (read by the broker, not the log)
    unclean_leader_election_enable: bool = False  # unclean.leader.election.enable (broker)
    cleanup_policy: str = "delete"  # cleanup.policy (only "delete" is implemented)

    def __post_init__(self) -> None:
        _at_least("segment.bytes", self.segment_bytes, 14)
        _at_least("segment.ms", self.segment_ms, 1)
        _at_least("retention.ms", self.retention_ms, -1)
        _at_least("retention.bytes", self.retention_bytes, -1)
        if self.flush_messages is not None:
            _at_least("flush.messages", self.flush_messages, 1)
        if self.flush_ms is not None:
            _at_least("flush.ms", self.flush_ms, 0)
        _at_least("max.message.bytes", self.max_message_bytes, 0)
        _at_least("index.interval.bytes", self.index_interval_bytes, 0)
        _at_least("min.insync.replicas", self.min_insync_replicas, 1)
        if self.message_timestamp_type not in ("CreateTime", "LogAppendTime"):
            raise ValueError(
                "message.timestamp.type must be CreateTime or LogAppendTime, "
                f"not {self.message_timestamp_type!r}"
            )
        if self.cleanup_policy != "delete":
            raise ValueError(
                f"cleanup.policy={self.cleanup_policy!r} is not supported by the reference "
                "broker; only 'delete' is implemented"
            )

    @classmethod
    def from_kafka(cls, props: Mapping[str, str | int], base: LogConfig | None = None) -> LogConfig:
        """Build a config from Kafka topic-config names, on top of `base` (or the defaults).

        Values may be ints or their decimal strings, as they arrive in CreateTopics
        and AlterConfigs. Raises ValueError naming the offending key or value.
        """
        # Each value has its field's type: the parser comes from the same table row as
        # the field name, a pairing mypy cannot follow into `replace`.
        changes: dict[str, Any] = {}
        for key, raw in props.items():
            try:
                field, parse = _KAFKA_KEYS[key]
            except KeyError:
                known = ", ".join(sorted(_KAFKA_KEYS))
                raise ValueError(
                    f"unknown or unsupported topic config {key!r}; known: {known}"
                ) from None
            try:
                changes[field] = parse(raw)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"invalid value {raw!r} for topic config {key!r}: {exc}") from None
        return dataclasses.replace(base or cls(), **changes)

    def to_kafka(self) -> dict[str, str]:
        """All settings under their Kafka names as strings (persistence, DescribeConfigs)."""
        out: dict[str, str] = {}
        for key, (field, _) in _KAFKA_KEYS.items():
            value = getattr(self, field)
            if value is None:
                value = _INT64_MAX
            if isinstance(value, bool):
                value = "true" if value else "false"
            out[key] = str(value)
        return out


def _at_least(name: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, not {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, not {value}")


def _parse_int(raw: str | int) -> int:
    if isinstance(raw, bool):
        raise ValueError("expected an integer")
    if isinstance(raw, int):
        return raw
    return int(raw.strip(), 10)


def _parse_optional_long(raw: str | int) -> int | None:
    # Kafka spells "never" as Long.MAX_VALUE; so do its clients when echoing defaults.
    value = _parse_int(raw)
    return None if value >= _INT64_MAX else value


def _parse_bool(raw: str | int) -> bool:
    text = str(raw).strip().lower()
    if text in ("true", "1"):
        return True
    if text in ("false", "0"):
        return False
    raise ValueError("expected true or false")


def _parse_str(raw: str | int) -> str:
    return str(raw).strip()


_KAFKA_KEYS = {
    "segment.bytes": ("segment_bytes", _parse_int),
    "segment.ms": ("segment_ms", _parse_int),
    "retention.ms": ("retention_ms", _parse_int),
    "retention.bytes": ("retention_bytes", _parse_int),
    "flush.messages": ("flush_messages", _parse_optional_long),
    "flush.ms": ("flush_ms", _parse_optional_long),
    "max.message.bytes": ("max_message_bytes", _parse_int),
    "index.interval.bytes": ("index_interval_bytes", _parse_int),
    "message.timestamp.type": ("message_timestamp_type", _parse_str),
    "min.insync.replicas": ("min_insync_replicas", _parse_int),
    "unclean.leader.election.enable": ("unclean_leader_election_enable", _parse_bool),
    "cleanup.policy": ("cleanup_policy", _parse_str),
}
