"""Broker configuration under Apache Kafka's names (server.properties), plus one of our own.

A `BrokerConfig` is built from a flat mapping of Kafka names to values, as found in
a TOML file (dotted keys or quoted keys, both flatten to `log.retention.ms`) and in
`--set name=value` overrides. Unknown names are an error, never ignored: a typo in
a durability knob must not silently run the default.

Broker-wide `log.*` settings are the defaults of every topic's `LogConfig` and are
translated to the topic-level names (`log.retention.ms` -> `retention.ms`), exactly
as Kafka derives a topic's config from the broker's.

Listeners are named, as in Kafka: `listeners=PLAINTEXT://127.0.0.1:9092,CONTROLLER://
127.0.0.1:9093`, each name mapped to a security protocol by
`listener.security.protocol.map` (only PLAINTEXT exists here; unset, controller names
map to PLAINTEXT). The listeners of `controller.listener.names` serve only the
controller quorum and broker-to-controller APIs, and `controller.quorum.voters` names
them; every other listener serves clients, and `inter.broker.listener.name` (PLAINTEXT)
is the one this node registers and replicates through. A node without
`controller.quorum.voters` is standalone: no quorum, no controller listener. Unless
told otherwise every listener binds loopback.

faultline-only settings live under `faultline.`:

- `faultline.storage.volatile.until.fsync` (bool, default false): file writes stay
  in the broker's process memory until fsync, so SIGKILL behaves as a power cut
  and loses exactly the un-fsynced suffix of every file.
- `faultline.bugs` (comma-separated names, default none): plant these bugs of the
  catalogue in `bugs.py` (a harness measures itself by finding them).

Limits Kafka lacks or leaves unbounded by default, because a single user request must not
exhaust the broker: `create.topics.max.partitions.per.request` (Kafka's KRaft controller
hard-codes 10,000 partitions per request), `max.broker.partitions` (named as in KIP-578)
and `queued.max.request.bytes` (Kafka's name; Kafka defaults it to unbounded, here it
defaults to twice socket.request.max.bytes).

One deliberate difference from Kafka: `log.flush.scheduler.interval.ms` defaults to
Kafka's Long.MAX ("never"), but then the flusher checks every log's `flush.ms`
on its own schedule, so that setting `log.flush.interval.ms` alone takes effect.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from . import bugs as _bugs
from .bugs import CONFIG_KEY as BUGS_CONFIG_KEY
from .log.config import LogConfig

INT64_MAX = (1 << 63) - 1
INT32_MAX = (1 << 31) - 1


class ConfigError(ValueError):
    """A configuration name or value the broker cannot accept; the message says which."""


@dataclass(frozen=True)
class Listener:
    """One endpoint: where to bind (a named listener), what to tell clients, or whom to dial.

    `name` is the listener name (`PLAINTEXT`, `CONTROLLER`, ...); plain addresses such
    as a voter's or a peer's keep the default, which nothing reads.
    """

    host: str
    port: int
    name: str = "PLAINTEXT"

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"

    @classmethod
    def parse(cls, text: str, *, setting: str) -> Listener:
        """Parse `NAME://host:port` or `host:port` (named PLAINTEXT; `[::1]:port` for IPv6).

        Whether NAME may be used (its security protocol) is checked by BrokerConfig
        against listener.security.protocol.map.
        """
        spec = text.strip()
        name = "PLAINTEXT"
        if "://" in spec:
            name, spec = spec.split("://", 1)
            name = name.strip().upper()  # Kafka's ListenerName.normalised
            if not name or not all(c.isalnum() or c in "_-" for c in name):
                raise ConfigError(f"{setting}: {text!r} does not start with a listener name")
        host, sep, port_text = spec.rpartition(":")
        if not sep:
            raise ConfigError(f"{setting}: expected host:port, got {text!r}")
        host = host.strip("[]") or "127.0.0.1"
        try:
            port = int(port_text)
        except ValueError:
            raise ConfigError(f"{setting}: port {port_text!r} is not a number") from None
        if not 0 <= port <= 65535:
            raise ConfigError(f"{setting}: port {port} is outside 0..65535")
        return cls(host, port, name)


def _parse_int(value: object) -> int:
    if isinstance(value, bool):
        raise ValueError("expected an integer, not a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        return int(value.strip(), 10)
    raise ValueError(f"expected an integer, not {type(value).__name__}")


def _parse_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise ValueError("expected true or false")


def _parse_str(value: object) -> str:
    if not isinstance(value, str | int):
        raise ValueError(f"expected a string, not {type(value).__name__}")
    return str(value).strip()


def _parse_bugs(value: object) -> frozenset[str]:
    if isinstance(value, list | tuple | set | frozenset):
        return _bugs.parse(str(v) for v in value)
    return _bugs.parse(_parse_str(value))


@dataclass(frozen=True)
class Setting:
    """One known configuration name: how to parse it and what it does."""

    name: str
    parse: Callable[[object], object]
    doc: str


def _settings(*rows: tuple[str, Callable[[object], object], str]) -> dict[str, Setting]:
    return {name: Setting(name, parse, doc) for name, parse, doc in rows}


SETTINGS: dict[str, Setting] = _settings(
    ("node.id", _parse_int, "this broker's id (default 0)"),
    ("broker.id", _parse_int, "synonym of node.id"),
    (
        "listeners",
        _parse_str,
        "NAME://host:port,... to bind, e.g. PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093 "
        "(default PLAINTEXT://127.0.0.1:9092)",
    ),
    (
        "advertised.listeners",
        _parse_str,
        "NAME://host:port,... told to clients and peers, client/inter-broker listeners only "
        "(default: the bound addresses)",
    ),
    (
        "listener.security.protocol.map",
        _parse_str,
        "NAME:PROTOCOL,... of every listener name; only PLAINTEXT is supported "
        "(default PLAINTEXT:PLAINTEXT, controller listener names map to PLAINTEXT)",
    ),
    (
        "controller.listener.names",
        _parse_str,
        "listeners that serve only the controller quorum and broker-to-controller APIs; "
        "required with controller.quorum.voters (e.g. CONTROLLER)",
    ),
    (
        "inter.broker.listener.name",
        _parse_str,
        "the listener brokers replicate through and register with (PLAINTEXT)",
    ),
    ("num.partitions", _parse_int, "partitions of auto-created topics (1)"),
    ("default.replication.factor", _parse_int, "replication factor of auto-created topics (1)"),
    ("min.insync.replicas", _parse_int, "default min.insync.replicas of topics (1)"),
    ("unclean.leader.election.enable", _parse_bool, "default of the topic config (false)"),
    (
        "eligible.leader.replicas.version",
        _parse_int,
        "KIP-966 feature level: 1 keeps uncleanly shut down replicas out of ISR/ELR (0)",
    ),
    ("auto.create.topics.enable", _parse_bool, "create unknown topics on metadata/produce (true)"),
    ("message.max.bytes", _parse_int, "largest record batch accepted (1048588)"),
    ("log.segment.bytes", _parse_int, "segment size (1 GiB)"),
    ("log.roll.ms", _parse_int, "segment age before rolling"),
    ("log.roll.hours", _parse_int, "segment age before rolling (168)"),
    ("log.retention.ms", _parse_int, "retention by time; -1 keeps forever"),
    ("log.retention.minutes", _parse_int, "retention by time"),
    ("log.retention.hours", _parse_int, "retention by time (168)"),
    ("log.retention.bytes", _parse_int, "retention by size per partition; -1 unlimited"),
    ("log.retention.check.interval.ms", _parse_int, "how often retention runs (300000)"),
    ("log.flush.interval.messages", _parse_int, "fsync after this many messages (never)"),
    ("log.flush.interval.ms", _parse_int, "fsync data older than this (never)"),
    ("log.flush.scheduler.interval.ms", _parse_int, "how often the flusher checks logs"),
    ("log.index.interval.bytes", _parse_int, "bytes between offset index entries (4096)"),
    ("log.message.timestamp.type", _parse_str, "CreateTime or LogAppendTime"),
    ("log.cleanup.policy", _parse_str, "only 'delete' is implemented"),
    ("socket.request.max.bytes", _parse_int, "largest request frame accepted (104857600)"),
    (
        "queued.max.request.bytes",
        _parse_int,
        "bytes of partial and queued requests held across all connections before the broker "
        "stops reading sockets; -1 = unbounded (twice socket.request.max.bytes)",
    ),
    (
        "create.topics.max.partitions.per.request",
        _parse_int,
        "partitions one CreateTopics may create, all topics together; above it every topic "
        "fails with POLICY_VIOLATION (10000, Kafka's controller batch limit)",
    ),
    (
        "max.broker.partitions",
        _parse_int,
        "topic partitions this broker may host; a topic that would exceed it fails with "
        "POLICY_VIOLATION (10000)",
    ),
    ("group.min.session.timeout.ms", _parse_int, "smallest session.timeout.ms (6000)"),
    ("group.max.session.timeout.ms", _parse_int, "largest session.timeout.ms (1800000)"),
    ("group.initial.rebalance.delay.ms", _parse_int, "wait for more members of a new group"),
    ("group.max.size", _parse_int, "members per group"),
    ("offsets.topic.num.partitions", _parse_int, "partitions of __consumer_offsets (50)"),
    ("offset.metadata.max.bytes", _parse_int, "largest commit metadata string (4096)"),
    ("process.roles", _parse_str, "broker,controller (combined mode, the only one supported)"),
    (
        "controller.quorum.voters",
        _parse_str,
        "id@host:port,... of the controller quorum, each a controller listener; "
        "unset = a standalone single node without a quorum",
    ),
    ("controller.quorum.election.timeout.ms", _parse_int, "base election timeout (1000)"),
    ("controller.quorum.fetch.timeout.ms", _parse_int, "follower fetch timeout (2000)"),
    ("controller.quorum.election.backoff.max.ms", _parse_int, "election backoff (1000)"),
    ("controller.quorum.request.timeout.ms", _parse_int, "quorum request timeout (2000)"),
    ("broker.heartbeat.interval.ms", _parse_int, "broker heartbeat interval (2000)"),
    ("broker.session.timeout.ms", _parse_int, "fence a broker silent this long (9000)"),
    ("replica.lag.time.max.ms", _parse_int, "drop a follower from the ISR after this (30000)"),
    ("replica.fetch.wait.max.ms", _parse_int, "follower fetch long-poll (500)"),
    ("replica.fetch.min.bytes", _parse_int, "follower fetch min bytes (1)"),
    ("replica.fetch.max.bytes", _parse_int, "follower fetch max bytes per partition (1048576)"),
    ("replica.fetch.backoff.ms", _parse_int, "follower retry backoff (1000)"),
    ("replica.socket.timeout.ms", _parse_int, "follower fetch request timeout (30000)"),
    ("offsets.topic.replication.factor", _parse_int, "RF of __consumer_offsets (3)"),
    ("auto.leader.rebalance.enable", _parse_bool, "move leaders back to preferred replicas (true)"),
    (
        "leader.imbalance.check.interval.seconds",
        _parse_int,
        "how often preferred leaders are elected (300)",
    ),
    (
        "transaction.state.log.num.partitions",
        _parse_int,
        "partitions of __transaction_state (50)",
    ),
    (
        "transaction.state.log.replication.factor",
        _parse_int,
        "RF of __transaction_state (3)",
    ),
    (
        "transaction.state.log.min.isr",
        _parse_int,
        "min.insync.replicas of __transaction_state (2)",
    ),
    ("transaction.max.timeout.ms", _parse_int, "largest transaction.timeout.ms (900000)"),
    (
        "transaction.abort.timed.out.transaction.cleanup.interval.ms",
        _parse_int,
        "how often the coordinator aborts timed-out transactions (10000)",
    ),
    (
        "faultline.storage.volatile.until.fsync",
        _parse_bool,
        "keep writes in process memory until fsync, so SIGKILL = power cut (false)",
    ),
    (
        BUGS_CONFIG_KEY,
        _parse_bugs,
        "comma-separated names of planted bugs from the catalogue (none); see bugs.py",
    ),
)

# Broker-wide log settings and the topic config each one defaults.
_TOPIC_DEFAULTS = {
    "log.segment.bytes": "segment.bytes",
    "log.retention.bytes": "retention.bytes",
    "log.flush.interval.messages": "flush.messages",
    "log.index.interval.bytes": "index.interval.bytes",
    "message.max.bytes": "max.message.bytes",
    "min.insync.replicas": "min.insync.replicas",
    "unclean.leader.election.enable": "unclean.leader.election.enable",
    "log.message.timestamp.type": "message.timestamp.type",
    "log.cleanup.policy": "cleanup.policy",
}


def _ms_with_units(values: Mapping[str, object], base: str) -> int | None:
    # Kafka's precedence: X.ms over X.minutes over X.hours.
    if f"{base}.ms" in values:
        return int(values[f"{base}.ms"])  # type: ignore[call-overload]
    if f"{base}.minutes" in values:
        return int(values[f"{base}.minutes"]) * 60_000  # type: ignore[call-overload]
    if f"{base}.hours" in values:
        return int(values[f"{base}.hours"]) * 3_600_000  # type: ignore[call-overload]
    return None


def _int(values: Mapping[str, object], name: str, default: int) -> int:
    return int(values.get(name, default))  # type: ignore[call-overload]


def _optional_long(value: object | None) -> int | None:
    if value is None:
        return None
    number = int(value)  # type: ignore[call-overload]
    return None if number >= INT64_MAX else number


# `faultline.peer.<id>=host:port`: how this node dials broker <id>'s inter-broker listener;
# `faultline.voter.<id>=host:port`: how it dials voter <id>'s controller listener (instead of
# its controller.quorum.voters address). The harness points both at fault proxies. Patterns,
# so they are checked apart from SETTINGS.
PEER_PREFIX = "faultline.peer."
VOTER_PREFIX = "faultline.voter."

# Kafka's security protocols; only PLAINTEXT is implemented.
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
# Kafka's default listener.security.protocol.map: each protocol's name maps to itself.
DEFAULT_PROTOCOL_MAP: Mapping[str, str] = {p: p for p in SECURITY_PROTOCOLS}


def parse_protocol_map(text: str) -> dict[str, str]:
    """Parse `NAME:PROTOCOL,...` (listener.security.protocol.map); raises ConfigError."""
    setting = "listener.security.protocol.map"
    found: dict[str, str] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, sep, protocol = part.partition(":")
        name, protocol = name.strip().upper(), protocol.strip().upper()
        if not sep or not name or not protocol:
            raise ConfigError(f"{setting}: {part!r} is not NAME:PROTOCOL")
        if protocol not in SECURITY_PROTOCOLS:
            raise ConfigError(
                f"{setting}: {protocol!r} is not a security protocol "
                f"(one of {', '.join(SECURITY_PROTOCOLS)})"
            )
        if name in found:
            raise ConfigError(f"{setting}: listener {name} is mapped twice")
        found[name] = protocol
    return found


def _names(text: str) -> tuple[str, ...]:
    return tuple(n.strip().upper() for n in text.split(",") if n.strip())


def parse_voters(text: str, *, setting: str = "controller.quorum.voters") -> dict[int, Listener]:
    """Parse Kafka's `id@host:port,...`; raises ConfigError naming the bad entry."""
    voters: dict[int, Listener] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        ident, sep, address = part.partition("@")
        if not sep:
            raise ConfigError(f"{setting}: {part!r} is not id@host:port")
        try:
            node = int(ident)
        except ValueError:
            raise ConfigError(f"{setting}: {ident!r} in {part!r} is not a node id") from None
        if node in voters:
            raise ConfigError(f"{setting}: node {node} is listed twice")
        voters[node] = Listener.parse(address, setting=setting)
    return voters


@dataclass(frozen=True)
class BrokerConfig:
    """Everything a broker node is configured with. Build it with `from_properties`."""

    node_id: int = 0
    listeners: tuple[Listener, ...] = (Listener("127.0.0.1", 9092),)
    advertised_listeners: tuple[Listener, ...] | None = None
    num_partitions: int = 1
    default_replication_factor: int = 1
    auto_create_topics_enable: bool = True
    socket_request_max_bytes: int = 104857600
    # None: unbounded (-1). The default (unset) is twice socket.request.max.bytes.
    queued_max_request_bytes: int | None = 2 * 104857600
    create_topics_max_partitions_per_request: int = 10000
    max_broker_partitions: int = 10000
    log_retention_check_interval_ms: int = 300000
    log_flush_scheduler_interval_ms: int | None = None
    log: LogConfig = field(default_factory=LogConfig)
    group_min_session_timeout_ms: int = 6000
    group_max_session_timeout_ms: int = 1800000
    group_initial_rebalance_delay_ms: int = 3000
    group_max_size: int = INT32_MAX
    offsets_topic_num_partitions: int = 50
    offset_metadata_max_bytes: int = 4096
    volatile_until_fsync: bool = False
    controller_quorum_voters: Mapping[int, Listener] = field(default_factory=dict)
    controller_quorum_election_timeout_ms: int = 1000
    controller_quorum_fetch_timeout_ms: int = 2000
    controller_quorum_election_backoff_max_ms: int = 1000
    controller_quorum_request_timeout_ms: int = 2000
    broker_heartbeat_interval_ms: int = 2000
    broker_session_timeout_ms: int = 9000
    replica_lag_time_max_ms: int = 30000
    replica_fetch_wait_max_ms: int = 500
    replica_fetch_min_bytes: int = 1
    replica_fetch_max_bytes: int = 1048576
    replica_fetch_backoff_ms: int = 1000
    replica_socket_timeout_ms: int = 30000
    unclean_leader_election_enable: bool = False
    # Kafka's `eligible.leader.replicas.version` feature (KIP-966): 1 = the controller
    # tracks eligible leader replicas and fences replicas that shut down uncleanly.
    eligible_leader_replicas_version: int = 0
    offsets_topic_replication_factor: int = 3
    auto_leader_rebalance_enable: bool = True
    leader_imbalance_check_interval_seconds: int = 300
    peer_addresses: Mapping[int, Listener] = field(default_factory=dict)
    voter_addresses: Mapping[int, Listener] = field(default_factory=dict)
    listener_security_protocol_map: Mapping[str, str] | None = None
    controller_listener_names: tuple[str, ...] = ()
    inter_broker_listener_name: str = "PLAINTEXT"
    properties: Mapping[str, object] = field(default_factory=dict)
    # Planted bugs (faultline.bugs): empty for a correct broker.
    bugs: frozenset[str] = frozenset()

    @property
    def cluster_mode(self) -> bool:
        """Whether this node is part of a controller quorum (else a standalone single node)."""
        return bool(self.controller_quorum_voters)

    @property
    def is_voter(self) -> bool:
        """Whether this node is one of the controller quorum's voters."""
        return self.node_id in self.controller_quorum_voters

    @property
    def eligible_leader_replicas_enable(self) -> bool:
        """Whether the KIP-966 feature (eligible.leader.replicas.version=1) is on."""
        return self.eligible_leader_replicas_version >= 1

    def peer_address(self, broker_id: int, registered: Listener | None = None) -> Listener | None:
        """How to dial `broker_id`'s inter-broker listener: faultline.peer.<id>, else the
        endpoint it registered with."""
        if broker_id in self.peer_addresses:
            return self.peer_addresses[broker_id]
        return registered

    def controller_address(self, voter_id: int) -> Listener | None:
        """How to dial voter `voter_id`'s controller listener: faultline.voter.<id>, else its
        controller.quorum.voters entry; None for a node that is not a voter."""
        if voter_id in self.voter_addresses:
            return self.voter_addresses[voter_id]
        return self.controller_quorum_voters.get(voter_id)

    @property
    def security_protocol_map(self) -> Mapping[str, str]:
        """listener.security.protocol.map as Kafka reads it: when it is not set, Kafka's
        default, plus every controller listener name mapped to PLAINTEXT."""
        if self.listener_security_protocol_map is not None:
            return self.listener_security_protocol_map
        return {
            **{name: "PLAINTEXT" for name in self.controller_listener_names},
            **DEFAULT_PROTOCOL_MAP,
        }

    def is_controller_listener(self, listener: Listener) -> bool:
        """Whether `listener` serves the controller APIs (controller.listener.names)."""
        return listener.name in self.controller_listener_names

    @property
    def client_listeners(self) -> tuple[Listener, ...]:
        """The listeners that serve clients and brokers (not in controller.listener.names)."""
        return tuple(x for x in self.listeners if not self.is_controller_listener(x))

    @property
    def controller_listeners(self) -> tuple[Listener, ...]:
        """The listeners that serve the controller quorum and broker-to-controller APIs."""
        return tuple(x for x in self.listeners if self.is_controller_listener(x))

    def advertised_for(self, name: str, bound: Listener) -> Listener:
        """What to tell clients and peers of listener `name`, bound at `bound`:
        its advertised.listeners entry, else the bound address."""
        for listener in self.advertised_listeners or ():
            if listener.name == name:
                return listener
        return bound

    @property
    def message_max_bytes(self) -> int:
        """The broker-wide default of max.message.bytes (Kafka's message.max.bytes)."""
        return self.log.max_message_bytes

    @classmethod
    def from_properties(cls, props: Mapping[str, object]) -> BrokerConfig:
        """Build a config from Kafka names; raises ConfigError naming any bad key or value."""
        values: dict[str, object] = {}
        peers: dict[int, Listener] = {}
        voter_addresses: dict[int, Listener] = {}
        for name, raw in props.items():
            prefix = next((p for p in (PEER_PREFIX, VOTER_PREFIX) if name.startswith(p)), None)
            if prefix is not None:
                ident = name[len(prefix) :]
                if not ident.isdigit():
                    raise ConfigError(f"{name}: {prefix}<id> needs a numeric node id")
                found = peers if prefix == PEER_PREFIX else voter_addresses
                found[int(ident)] = Listener.parse(str(raw), setting=name)
                continue
            setting = SETTINGS.get(name)
            if setting is None:
                raise ConfigError(
                    f"unknown broker config {name!r}; "
                    "run `faultline broker --help-config` for the supported names"
                )
            try:
                values[name] = setting.parse(raw)
            except ValueError as exc:
                raise ConfigError(f"invalid value {raw!r} for {name}: {exc}") from None

        node_id = values.get("node.id", values.get("broker.id", 0))
        if (
            "node.id" in values
            and "broker.id" in values
            and values["node.id"] != values["broker.id"]
        ):
            raise ConfigError(
                f"node.id={values['node.id']} and broker.id={values['broker.id']} disagree"
            )

        def listeners(name: str) -> tuple[Listener, ...] | None:
            if name not in values:
                return None
            parts = [p for p in str(values[name]).split(",") if p.strip()]
            if not parts:
                raise ConfigError(f"{name} is empty")
            return tuple(Listener.parse(p, setting=name) for p in parts)

        topic_props: dict[str, str | int] = {
            topic_name: values[name]  # type: ignore[misc]
            for name, topic_name in _TOPIC_DEFAULTS.items()
            if name in values
        }
        segment_ms = _ms_with_units(values, "log.roll")
        if segment_ms is not None:
            topic_props["segment.ms"] = segment_ms
        retention_ms = _ms_with_units(values, "log.retention")
        if retention_ms is not None:
            topic_props["retention.ms"] = retention_ms
        scheduler_ms = _optional_long(values.get("log.flush.scheduler.interval.ms"))
        # Kafka: log.flush.interval.ms unset means "use log.flush.scheduler.interval.ms".
        flush_ms = _optional_long(values.get("log.flush.interval.ms", scheduler_ms))
        if flush_ms is not None:
            topic_props["flush.ms"] = flush_ms
        try:
            log = LogConfig.from_kafka(topic_props)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None

        socket_request_max_bytes = _int(values, "socket.request.max.bytes", 104857600)
        queued_max_request_bytes = _int(
            values, "queued.max.request.bytes", 2 * socket_request_max_bytes
        )
        config = cls(
            node_id=int(node_id),  # type: ignore[call-overload]
            listeners=listeners("listeners") or cls.listeners,
            advertised_listeners=listeners("advertised.listeners"),
            num_partitions=int(values.get("num.partitions", 1)),  # type: ignore[call-overload]
            default_replication_factor=int(values.get("default.replication.factor", 1)),  # type: ignore[call-overload]
            auto_create_topics_enable=bool(values.get("auto.create.topics.enable", True)),
            socket_request_max_bytes=socket_request_max_bytes,
            queued_max_request_bytes=(
                None if queued_max_request_bytes == -1 else queued_max_request_bytes
            ),
            create_topics_max_partitions_per_request=_int(
                values, "create.topics.max.partitions.per.request", 10000
            ),
            max_broker_partitions=_int(values, "max.broker.partitions", 10000),
            log_retention_check_interval_ms=int(
                values.get("log.retention.check.interval.ms", 300000)  # type: ignore[call-overload]
            ),
            log_flush_scheduler_interval_ms=scheduler_ms,
            log=log,
            group_min_session_timeout_ms=int(values.get("group.min.session.timeout.ms", 6000)),  # type: ignore[call-overload]
            group_max_session_timeout_ms=int(
                values.get("group.max.session.timeout.ms", 1800000)  # type: ignore[call-overload]
            ),
            group_initial_rebalance_delay_ms=int(
                values.get("group.initial.rebalance.delay.ms", 3000)  # type: ignore[call-overload]
            ),
            group_max_size=int(values.get("group.max.size", INT32_MAX)),  # type: ignore[call-overload]
            offsets_topic_num_partitions=int(values.get("offsets.topic.num.partitions", 50)),  # type: ignore[call-overload]
            offset_metadata_max_bytes=int(values.get("offset.metadata.max.bytes", 4096)),  # type: ignore[call-overload]
            volatile_until_fsync=bool(values.get("faultline.storage.volatile.until.fsync", False)),
            bugs=frozenset(values.get(BUGS_CONFIG_KEY, frozenset())),  # type: ignore[call-overload]
            controller_quorum_voters=parse_voters(str(values.get("controller.quorum.voters", ""))),
            controller_quorum_election_timeout_ms=_int(
                values, "controller.quorum.election.timeout.ms", 1000
            ),
            controller_quorum_fetch_timeout_ms=_int(
                values, "controller.quorum.fetch.timeout.ms", 2000
            ),
            controller_quorum_election_backoff_max_ms=_int(
                values, "controller.quorum.election.backoff.max.ms", 1000
            ),
            controller_quorum_request_timeout_ms=_int(
                values, "controller.quorum.request.timeout.ms", 2000
            ),
            broker_heartbeat_interval_ms=_int(values, "broker.heartbeat.interval.ms", 2000),
            broker_session_timeout_ms=_int(values, "broker.session.timeout.ms", 9000),
            replica_lag_time_max_ms=_int(values, "replica.lag.time.max.ms", 30000),
            replica_fetch_wait_max_ms=_int(values, "replica.fetch.wait.max.ms", 500),
            replica_fetch_min_bytes=_int(values, "replica.fetch.min.bytes", 1),
            replica_fetch_max_bytes=_int(values, "replica.fetch.max.bytes", 1048576),
            replica_fetch_backoff_ms=_int(values, "replica.fetch.backoff.ms", 1000),
            replica_socket_timeout_ms=_int(values, "replica.socket.timeout.ms", 30000),
            unclean_leader_election_enable=bool(
                values.get("unclean.leader.election.enable", False)
            ),
            eligible_leader_replicas_version=_int(values, "eligible.leader.replicas.version", 0),
            offsets_topic_replication_factor=_int(values, "offsets.topic.replication.factor", 3),
            auto_leader_rebalance_enable=bool(values.get("auto.leader.rebalance.enable", True)),
            leader_imbalance_check_interval_seconds=_int(
                values, "leader.imbalance.check.interval.seconds", 300
            ),
            peer_addresses=peers,
            voter_addresses=voter_addresses,
            listener_security_protocol_map=(
                parse_protocol_map(str(values["listener.security.protocol.map"]))
                if "listener.security.protocol.map" in values
                else None
            ),
            controller_listener_names=_names(str(values.get("controller.listener.names", ""))),
            inter_broker_listener_name=str(
                values.get("inter.broker.listener.name", "PLAINTEXT")
            ).upper(),
            properties=dict(props),
        )
        config.validate()
        return config

    def validate(self) -> None:
        """Check ranges and relations between settings; raises ConfigError."""
        positive = {
            "num.partitions": self.num_partitions,
            "default.replication.factor": self.default_replication_factor,
            "socket.request.max.bytes": self.socket_request_max_bytes,
            "create.topics.max.partitions.per.request": (
                self.create_topics_max_partitions_per_request
            ),
            "max.broker.partitions": self.max_broker_partitions,
            "log.retention.check.interval.ms": self.log_retention_check_interval_ms,
            "offsets.topic.num.partitions": self.offsets_topic_num_partitions,
            "group.max.size": self.group_max_size,
            "controller.quorum.election.timeout.ms": self.controller_quorum_election_timeout_ms,
            "controller.quorum.fetch.timeout.ms": self.controller_quorum_fetch_timeout_ms,
            "controller.quorum.election.backoff.max.ms": (
                self.controller_quorum_election_backoff_max_ms
            ),
            "controller.quorum.request.timeout.ms": self.controller_quorum_request_timeout_ms,
            "broker.heartbeat.interval.ms": self.broker_heartbeat_interval_ms,
            "broker.session.timeout.ms": self.broker_session_timeout_ms,
            "replica.lag.time.max.ms": self.replica_lag_time_max_ms,
            "replica.fetch.max.bytes": self.replica_fetch_max_bytes,
            "replica.socket.timeout.ms": self.replica_socket_timeout_ms,
            "offsets.topic.replication.factor": self.offsets_topic_replication_factor,
            "leader.imbalance.check.interval.seconds": (
                self.leader_imbalance_check_interval_seconds
            ),
        }
        for name, value in positive.items():
            if value < 1:
                raise ConfigError(f"{name} must be at least 1, not {value}")
        if self.node_id < 0:
            raise ConfigError(f"node.id must be non-negative, not {self.node_id}")
        if (
            self.queued_max_request_bytes is not None
            and self.queued_max_request_bytes < self.socket_request_max_bytes
        ):
            # A frame the budget can never hold would wait forever; Kafka's strict reading.
            raise ConfigError(
                f"queued.max.request.bytes ({self.queued_max_request_bytes}) must be -1 or at "
                f"least socket.request.max.bytes ({self.socket_request_max_bytes})"
            )
        if self.num_partitions > self.create_topics_max_partitions_per_request:
            raise ConfigError(
                f"num.partitions ({self.num_partitions}) is above "
                "create.topics.max.partitions.per.request "
                f"({self.create_topics_max_partitions_per_request}): auto-created topics "
                "would always be refused"
            )
        if self.group_min_session_timeout_ms > self.group_max_session_timeout_ms:
            raise ConfigError(
                "group.min.session.timeout.ms must not exceed group.max.session.timeout.ms"
            )
        if (
            self.log_flush_scheduler_interval_ms is not None
            and self.log_flush_scheduler_interval_ms < 1
        ):
            raise ConfigError("log.flush.scheduler.interval.ms must be at least 1")
        if self.eligible_leader_replicas_version not in (0, 1):
            raise ConfigError(
                "eligible.leader.replicas.version must be 0 (off) or 1 (on), not "
                f"{self.eligible_leader_replicas_version}"
            )
        roles = {r.strip() for r in str(self.properties.get("process.roles", "")).split(",")}
        if roles - {"", "broker", "controller"}:
            raise ConfigError(f"process.roles: unknown role in {sorted(roles - {''})}")
        if self.broker_heartbeat_interval_ms >= self.broker_session_timeout_ms:
            raise ConfigError(
                "broker.heartbeat.interval.ms must be smaller than broker.session.timeout.ms"
            )
        if self.advertised_listeners and any(a.port == 0 for a in self.advertised_listeners):
            raise ConfigError("advertised.listeners must name a real port, not 0")
        self._validate_listeners()
        inter_broker = self.inter_broker_listener
        advertised = self.advertised_for(inter_broker.name, inter_broker)
        if advertised.host in ("0.0.0.0", "::"):
            # As Kafka: clients cannot connect to the wildcard address they would be told.
            raise ConfigError(
                f"listeners binds the wildcard address {advertised.host}; set "
                "advertised.listeners to the host:port clients should connect to"
            )

    def _validate_listeners(self) -> None:
        # The relations Kafka's KafkaConfig checks between the listener settings.
        names = [x.name for x in self.listeners]
        listed = ", ".join(names)
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ConfigError(
                f"listeners: each listener must have a different name; {duplicates[0]} "
                f"is used twice in {listed}"
            )
        ports = [x.port for x in self.listeners if x.port != 0]
        if len(ports) != len(set(ports)):
            raise ConfigError(f"listeners: each listener must have a different port ({listed})")
        controllers = self.controller_listener_names
        missing = [n for n in controllers if n not in names]
        if missing:
            raise ConfigError(
                f"controller.listener.names: {', '.join(missing)} must appear in listeners "
                f"({listed}), as the controller listens there"
            )
        if self.cluster_mode and not controllers:
            raise ConfigError(
                "controller.listener.names must name a listener when controller.quorum.voters "
                "is set: the quorum and the broker-to-controller APIs are served only there "
                "(e.g. listeners=PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093 with "
                "controller.listener.names=CONTROLLER)"
            )
        if controllers and not self.cluster_mode:
            raise ConfigError(
                "controller.listener.names is set but controller.quorum.voters is not: a node "
                "without voters runs no controller quorum; set both or neither"
            )
        protocols = self.security_protocol_map
        for setting, group in (
            ("listeners", self.listeners),
            ("advertised.listeners", self.advertised_listeners or ()),
        ):
            for listener in group:
                protocol = protocols.get(listener.name)
                if protocol is None:
                    raise ConfigError(
                        f"{setting}: no security protocol is defined for listener "
                        f"{listener.name}; add {listener.name}:PLAINTEXT to "
                        "listener.security.protocol.map"
                    )
                if protocol != "PLAINTEXT":
                    raise ConfigError(
                        f"{setting}: listener {listener.name} uses security protocol "
                        f"{protocol}; only PLAINTEXT is supported"
                    )
        if not self.client_listeners:
            raise ConfigError(
                f"listeners ({listed}) are all in controller.listener.names; the broker role "
                "needs a listener for clients and brokers"
            )
        advertised = [x.name for x in self.advertised_listeners or ()]
        if any(n in controllers for n in advertised):
            raise ConfigError(
                "advertised.listeners must not contain the controller listeners of "
                "controller.listener.names: clients send requests to brokers, never to "
                "the controller listener"
            )
        unknown = [n for n in advertised if n not in names]
        if unknown or len(advertised) != len(set(advertised)):
            raise ConfigError(
                f"advertised.listeners ({', '.join(advertised)}) must name each listener of "
                f"listeners ({listed}) at most once"
            )
        inter = self.inter_broker_listener_name
        if inter in controllers:
            raise ConfigError(
                f"inter.broker.listener.name {inter} is a controller listener; it must be a "
                f"broker listener: one of {', '.join(x.name for x in self.client_listeners)}"
            )
        if inter not in names:
            raise ConfigError(
                f"inter.broker.listener.name must be a listener name defined in listeners; "
                f"{inter} is not. The valid options are "
                f"{', '.join(x.name for x in self.client_listeners)}"
            )

    @property
    def inter_broker_listener(self) -> Listener:
        """The listener of inter.broker.listener.name (validated to exist)."""
        for listener in self.listeners:
            if listener.name == self.inter_broker_listener_name:
                return listener
        return self.client_listeners[0] if self.client_listeners else self.listeners[0]

    @classmethod
    def load(cls, config_file: Path | None = None, overrides: Iterable[str] = ()) -> BrokerConfig:
        """Read a TOML file of Kafka names (optional), then apply `name=value` overrides."""
        props: dict[str, object] = {}
        if config_file is not None:
            try:
                with open(config_file, "rb") as handle:
                    document = tomllib.load(handle)
            except OSError as exc:
                raise ConfigError(f"cannot read config file {config_file}: {exc}") from None
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"config file {config_file} is not valid TOML: {exc}") from None
            props.update(flatten_toml(document))
        for item in overrides:
            name, sep, value = item.partition("=")
            if not sep or not name.strip():
                raise ConfigError(f"--set expects name=value, got {item!r}")
            props[name.strip()] = value.strip()
        return cls.from_properties(props)


def flatten_toml(document: Mapping[str, object], prefix: str = "") -> dict[str, object]:
    """Flatten TOML tables to dotted names: `[log.retention] ms = 1` -> `log.retention.ms`."""
    flat: dict[str, object] = {}
    for key, value in document.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_toml(value, f"{name}."))
        elif isinstance(value, list):
            flat[name] = ",".join(str(v) for v in value)
        else:
            flat[name] = value
    return flat


def describe_settings() -> str:
    """A table of every supported name for `--help-config`."""
    width = max(len(name) for name in SETTINGS)
    return "\n".join(f"{s.name:<{width}}  {s.doc}" for s in SETTINGS.values())
