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


CLUSTER = {
    "node.id": 1,
    "listeners": "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093",
    "controller.listener.names": "CONTROLLER",
    "controller.quorum.voters": "1@127.0.0.1:9093,2@127.0.0.1:9193,3@127.0.0.1:9293",
}


def test_a_cluster_node_has_a_client_and_a_controller_listener() -> None:
    config = BrokerConfig.from_properties(CLUSTER)
    assert config.client_listeners == (Listener("127.0.0.1", 9092, "PLAINTEXT"),)
    assert config.controller_listeners == (Listener("127.0.0.1", 9093, "CONTROLLER"),)
    assert config.inter_broker_listener.port == 9092
    # Controller names map to PLAINTEXT when the map is not set, as Kafka does.
    assert config.security_protocol_map["CONTROLLER"] == "PLAINTEXT"
    # Voters are dialled at their controller listeners unless faultline.voter.<id> says how.
    assert config.controller_address(2) == Listener("127.0.0.1", 9193)
    proxied = BrokerConfig.from_properties({**CLUSTER, "faultline.voter.2": "127.0.0.1:7000"})
    assert proxied.controller_address(2) == Listener("127.0.0.1", 7000)
    # Replication dials the endpoint a broker registered, never a voter's controller port.
    assert config.peer_address(2) is None
    assert config.peer_address(2, Listener("h", 1)) == Listener("h", 1)


def test_named_listeners_with_an_explicit_protocol_map_and_inter_broker_name() -> None:
    config = BrokerConfig.from_properties({
        **CLUSTER,
        "listeners": "CLIENT://127.0.0.1:9092,INTERNAL://127.0.0.1:9094,CTL://127.0.0.1:9093",
        "listener.security.protocol.map": "CLIENT:PLAINTEXT,INTERNAL:PLAINTEXT,CTL:PLAINTEXT",
        "controller.listener.names": "CTL",
        "inter.broker.listener.name": "INTERNAL",
        "advertised.listeners": "CLIENT://c.example:9092,INTERNAL://i.example:9094",
    })
    assert config.inter_broker_listener == Listener("127.0.0.1", 9094, "INTERNAL")
    assert [x.name for x in config.client_listeners] == ["CLIENT", "INTERNAL"]
    assert config.advertised_for("INTERNAL", config.inter_broker_listener).host == "i.example"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"controller.listener.names": None}, "controller.listener.names must name a listener"),
        ({"controller.listener.names": "OTHER"}, "OTHER must appear in listeners"),
        ({"controller.quorum.voters": None}, "controller.quorum.voters is not"),
        ({"listeners": "CONTROLLER://127.0.0.1:9093"}, "needs a listener for clients"),
        (
            {"advertised.listeners": "PLAINTEXT://a:1,CONTROLLER://a:2"},
            "advertised.listeners must not contain the controller listeners",
        ),
        ({"advertised.listeners": "OTHER://a:1"}, "advertised.listeners"),
        ({"inter.broker.listener.name": "CONTROLLER"}, "is a controller listener"),
        ({"inter.broker.listener.name": "INTERNAL"}, "INTERNAL is not"),
        (
            {"listeners": "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9092"},
            "different port",
        ),
        (
            {"listeners": "PLAINTEXT://127.0.0.1:9092,PLAINTEXT://127.0.0.1:9093"},
            "different name",
        ),
        (
            {"listener.security.protocol.map": "PLAINTEXT:PLAINTEXT"},
            "no security protocol is defined for listener CONTROLLER",
        ),
        (
            {"listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:SSL"},
            "only PLAINTEXT is supported",
        ),
        ({"listener.security.protocol.map": "CONTROLLER:TLS"}, "not a security protocol"),
    ],
)
def test_inconsistent_listener_settings_are_refused(
    changes: dict[str, str | None], message: str
) -> None:
    props: dict[str, object] = {**CLUSTER}
    for name, value in changes.items():
        if value is None:
            props.pop(name)
        else:
            props[name] = value
    with pytest.raises(ConfigError, match=message):
        BrokerConfig.from_properties(props)
