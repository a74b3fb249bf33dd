"""Broker configuration under Kafka's names: parsing, precedence, validation, TOML files."""

from __future__ import annotations

from pathlib import Path

import pytest

from reference_broker.config import BrokerConfig, ConfigError, Listener


def test_defaults_bind_loopback_and_match_kafka() -> None:
    config = BrokerConfig.from_properties({})
    assert config.listeners == (Listener("127.0.0.1", 9092),)
    assert config.socket_request_max_bytes == 104857600
    assert config.message_max_bytes == 1048588
    assert config.log.flush_messages is None and config.log.flush_ms is None
    assert config.auto_create_topics_enable and config.num_partitions == 1


def test_retention_ms_wins_over_minutes_and_hours() -> None:
    config = BrokerConfig.from_properties(
        {"log.retention.hours": 1, "log.retention.minutes": 2, "log.retention.ms": 3}
    )
    assert config.log.retention_ms == 3
    assert BrokerConfig.from_properties({"log.retention.minutes": 2}).log.retention_ms == 120_000
    assert BrokerConfig.from_properties({"log.retention.hours": 1}).log.retention_ms == 3_600_000


def test_broker_log_settings_become_topic_defaults() -> None:
    config = BrokerConfig.from_properties(
        {
            "log.segment.bytes": "1048576",
            "log.flush.interval.messages": "1",
            "log.flush.interval.ms": "250",
            "message.max.bytes": "5000",
            "min.insync.replicas": "1",
            "log.retention.bytes": "100000",
        }
    )
    log = config.log
    assert (log.segment_bytes, log.flush_messages, log.flush_ms) == (1048576, 1, 250)
    assert (log.max_message_bytes, log.retention_bytes) == (5000, 100000)


def test_flush_interval_defaults_to_the_scheduler_interval_as_in_kafka() -> None:
    config = BrokerConfig.from_properties({"log.flush.scheduler.interval.ms": "500"})
    assert config.log.flush_ms == 500 and config.log_flush_scheduler_interval_ms == 500


def test_unknown_key_is_rejected_by_name() -> None:
    with pytest.raises(ConfigError, match=r"'log\.retention\.msec'"):
        BrokerConfig.from_properties({"log.retention.msec": 1})


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("num.partitions", "0"),
        ("num.partitions", "x"),
        ("auto.create.topics.enable", "maybe"),
        ("socket.request.max.bytes", "0"),
        ("listeners", "SSL://127.0.0.1:9093"),
        ("listeners", "127.0.0.1"),
        ("advertised.listeners", "127.0.0.1:0"),
        ("log.segment.bytes", "1"),
    ],
)
def test_bad_values_are_rejected_naming_the_key(key: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        BrokerConfig.from_properties({key: value})
    assert key.removeprefix("log.") in str(info.value)


def test_node_id_and_broker_id_are_synonyms_that_must_agree() -> None:
    assert BrokerConfig.from_properties({"broker.id": 3}).node_id == 3
    assert BrokerConfig.from_properties({"node.id": 3, "broker.id": 3}).node_id == 3
    with pytest.raises(ConfigError, match="disagree"):
        BrokerConfig.from_properties({"node.id": 3, "broker.id": 4})


def test_listeners_accept_plaintext_urls_and_ipv6() -> None:
    config = BrokerConfig.from_properties(
        {"listeners": "PLAINTEXT://[::1]:0", "advertised.listeners": "proxy.local:19092"}
    )
    assert config.listeners == (Listener("::1", 0),)
    assert config.advertised_listeners == (Listener("proxy.local", 19092),)


def test_toml_file_with_dotted_and_quoted_keys_then_overrides(tmp_path: Path) -> None:
    path = tmp_path / "b.toml"
    path.write_text(
        'num.partitions = 4\n"log.retention.ms" = 1000\n[log.flush.interval]\nmessages = 7\n'
    )
    config = BrokerConfig.load(path, ["num.partitions=6"])
    assert config.num_partitions == 6
    assert config.log.retention_ms == 1000 and config.log.flush_messages == 7


def test_malformed_toml_and_missing_equals_are_config_errors(tmp_path: Path) -> None:
    path = tmp_path / "b.toml"
    path.write_text("num.partitions = = 4\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        BrokerConfig.load(path)
    with pytest.raises(ConfigError, match="name=value"):
        BrokerConfig.load(None, ["num.partitions"])


def test_wildcard_listener_needs_an_advertised_listener() -> None:
    with pytest.raises(ConfigError, match="advertised"):
        BrokerConfig.from_properties({"listeners": "PLAINTEXT://0.0.0.0:9092"})
    config = BrokerConfig.from_properties(
        {"listeners": "PLAINTEXT://0.0.0.0:9092", "advertised.listeners": "10.0.0.5:9092"}
    )
    assert config.advertised_listeners == (Listener("10.0.0.5", 9092),)
