"""Client settings under Kafka's names (`linger.ms` -> `linger_ms`), with Kafka's defaults.

`ProducerConfig.from_kafka({"acks": "all", "linger.ms": 5})` accepts the dotted names
and string values a Java properties file would hold; constructing the dataclasses
directly takes Python values. Both validate, and a bad value raises `ConfigError`
naming the setting and what it accepts.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Self

from .errors import ConfigError

_ACKS = {"all": -1, "-1": -1, "0": 0, "1": 1}


def _coerce(name: str, kind: Any, value: object) -> object:
    """Turn a properties-style value into the field's Python type."""
    origin = typing.get_origin(kind)
    args = typing.get_args(kind)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None:
            return None
        kind = next(a for a in args if a is not type(None))
        origin = typing.get_origin(kind)
    if name == "acks":
        if isinstance(value, int) and value in (-1, 0, 1):
            return value
        if str(value).lower() in _ACKS:
            return _ACKS[str(value).lower()]
        raise ConfigError(f"acks={value!r}: use 0, 1 or all")
    if origin is list:
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return list(value)  # type: ignore[call-overload]
    if kind is bool:
        if isinstance(value, bool):
            return value
        text = str(value).lower()
        if text in ("true", "1", "yes"):
            return True
        if text in ("false", "0", "no"):
            return False
        raise ConfigError(f"{name.replace('_', '.')}={value!r}: use true or false")
    if kind is int:
        try:
            return int(value)  # type: ignore[call-overload]
        except (TypeError, ValueError):
            raise ConfigError(f"{name.replace('_', '.')}={value!r}: expected an integer") from None
    if kind is str:
        return str(value)
    return value


@dataclass
class CommonConfig:
    """Settings every client (producer, consumer) shares."""

    bootstrap_servers: list[str] = field(default_factory=lambda: ["127.0.0.1:9092"])
    client_id: str = "faultline"
    request_timeout_ms: int = 30_000
    retry_backoff_ms: int = 100
    reconnect_backoff_ms: int = 50
    socket_connection_setup_timeout_ms: int = 10_000
    metadata_max_age_ms: int = 300_000
    receive_message_max_bytes: int = 100 * 1024 * 1024
    allow_auto_create_topics: bool = True
    # How long bootstrap and metadata waits may block before giving up (Java max.block.ms).
    max_block_ms: int = 60_000

    @classmethod
    def from_kafka(cls, settings: Mapping[str, object]) -> Self:
        """Build from Kafka-named settings (`{"bootstrap.servers": "h:9092", ...}`)."""
        hints = typing.get_type_hints(cls)
        names = {f.name for f in dataclasses.fields(cls)}
        # Each value is coerced to its field's type by name, a pairing mypy cannot
        # follow into the constructor call.
        kwargs: dict[str, Any] = {}
        for key, value in settings.items():
            name = key.replace(".", "_")
            if name not in names:
                raise ConfigError(
                    f"unknown {cls.__name__} setting {key!r}; known: "
                    + ", ".join(sorted(n.replace("_", ".") for n in names))
                )
            kwargs[name] = _coerce(name, hints[name], value)
        cls._adjust_implicit(kwargs)
        return cls(**kwargs)

    @classmethod
    def _adjust_implicit(cls, kwargs: dict[str, Any]) -> None:
        """Hook: derive defaults that depend on which settings were given explicitly."""

    def __post_init__(self) -> None:
        if isinstance(self.bootstrap_servers, str):
            self.bootstrap_servers = [
                s.strip() for s in self.bootstrap_servers.split(",") if s.strip()
            ]
        if not self.bootstrap_servers:
            raise ConfigError("bootstrap.servers is empty: give at least one host:port")
        for name in ("request_timeout_ms", "max_block_ms"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name.replace('_', '.')} must be positive")


@dataclass
class ProducerConfig(CommonConfig):
    """Producer settings with the Java client's (4.x) defaults."""

    acks: int = -1
    enable_idempotence: bool = True
    linger_ms: int = 5
    batch_size: int = 16_384
    retries: int = 2_147_483_647
    delivery_timeout_ms: int = 120_000
    max_in_flight_requests_per_connection: int = 5
    max_request_size: int = 1_048_576
    buffer_memory: int = 33_554_432
    compression_type: str = "none"
    # Set, the producer is transactional (init_transactions, begin/commit/abort).
    transactional_id: str | None = None
    transaction_timeout_ms: int = 60_000

    @classmethod
    def _adjust_implicit(cls, kwargs: dict[str, Any]) -> None:
        # As the Java client: idempotence is on by default, but settings that
        # contradict it, when it was not asked for explicitly, turn it off quietly
        # (unless the producer is transactional, which needs it).
        if "enable_idempotence" in kwargs or kwargs.get("transactional_id"):
            return
        if (
            kwargs.get("acks", -1) != -1
            or kwargs.get("retries", 1) == 0
            or int(kwargs.get("max_in_flight_requests_per_connection", 5)) > 5
        ):
            kwargs["enable_idempotence"] = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.acks not in (-1, 0, 1):
            raise ConfigError(f"acks={self.acks!r}: use 0, 1 or all (-1)")
        if self.compression_type != "none":
            raise ConfigError(
                f"compression.type={self.compression_type!r} is not supported; use none"
            )
        if self.max_in_flight_requests_per_connection < 1:
            raise ConfigError("max.in.flight.requests.per.connection must be at least 1")
        if self.batch_size < 0 or self.linger_ms < 0 or self.retries < 0:
            raise ConfigError("batch.size, linger.ms and retries must not be negative")
        if self.enable_idempotence:
            if self.acks != -1:
                raise ConfigError(
                    "enable.idempotence=true requires acks=all; set acks=all or "
                    "enable.idempotence=false"
                )
            if self.max_in_flight_requests_per_connection > 5:
                raise ConfigError(
                    "enable.idempotence=true requires max.in.flight.requests.per.connection "
                    "<= 5; lower it or set enable.idempotence=false"
                )
            if self.retries == 0:
                raise ConfigError(
                    "enable.idempotence=true requires retries > 0; raise retries or set "
                    "enable.idempotence=false"
                )
        if self.transactional_id is not None and not self.enable_idempotence:
            raise ConfigError(
                "transactional.id requires enable.idempotence=true; remove "
                "enable.idempotence=false or the transactional.id"
            )
        if self.transaction_timeout_ms <= 0:
            raise ConfigError("transaction.timeout.ms must be positive")
        if self.delivery_timeout_ms < self.linger_ms + self.request_timeout_ms:
            raise ConfigError(
                f"delivery.timeout.ms={self.delivery_timeout_ms} must be at least linger.ms + "
                f"request.timeout.ms = {self.linger_ms + self.request_timeout_ms}"
            )


ASSIGNORS = ("range", "roundrobin", "cooperative-sticky")


@dataclass
class ConsumerConfig(CommonConfig):
    """Consumer settings with the Java client's defaults."""

    group_id: str | None = None
    group_instance_id: str | None = None
    auto_offset_reset: str = "latest"
    enable_auto_commit: bool = True
    auto_commit_interval_ms: int = 5_000
    fetch_min_bytes: int = 1
    fetch_max_wait_ms: int = 500
    fetch_max_bytes: int = 52_428_800
    max_partition_fetch_bytes: int = 1_048_576
    max_poll_records: int = 500
    max_poll_interval_ms: int = 300_000
    session_timeout_ms: int = 45_000
    heartbeat_interval_ms: int = 3_000
    partition_assignment_strategy: list[str] = field(
        default_factory=lambda: ["range", "cooperative-sticky"]
    )
    isolation_level: str = "read_uncommitted"
    check_crcs: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.auto_offset_reset not in ("earliest", "latest", "none"):
            raise ConfigError(
                f"auto.offset.reset={self.auto_offset_reset!r}: use earliest, latest or none"
            )
        if self.isolation_level not in ("read_uncommitted", "read_committed"):
            raise ConfigError(
                f"isolation.level={self.isolation_level!r}: use read_uncommitted or read_committed"
            )
        if isinstance(self.partition_assignment_strategy, str):
            self.partition_assignment_strategy = [
                s.strip() for s in self.partition_assignment_strategy.split(",")
            ]
        for name in self.partition_assignment_strategy:
            if name not in ASSIGNORS:
                raise ConfigError(
                    f"partition.assignment.strategy {name!r} is unknown; use any of "
                    + ", ".join(ASSIGNORS)
                )
        if not self.partition_assignment_strategy:
            raise ConfigError("partition.assignment.strategy is empty")
        if self.heartbeat_interval_ms >= self.session_timeout_ms:
            raise ConfigError(
                "heartbeat.interval.ms must be lower than session.timeout.ms "
                "(Kafka recommends a third of it)"
            )
        if self.max_poll_records < 1:
            raise ConfigError("max.poll.records must be at least 1")
