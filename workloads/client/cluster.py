"""The client's view of the cluster: bootstrap, broker connections, the metadata cache.

`Cluster` is owned by a producer or consumer and lives in its nursery (the nursery
runs each connection's reader). It dials brokers through the injected `Network`,
negotiates API versions per connection (ApiVersions), and keeps the topic and
partition leadership that Metadata responses report. Nothing here reads a clock
but trio's, and randomness (which broker to ask) comes from the injected rng.

Connections are keyed by (node, channel): the group coordinator gets its own
channel so heartbeats are not queued behind a fetch long-poll, as in the Java client.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterable
from dataclasses import dataclass, field

import trio
from kafka.protocol.admin import CreateTopicsRequest
from kafka.protocol.api_key import ApiKey
from kafka.protocol.api_message import ApiMessage
from kafka.protocol.metadata import (
    ApiVersionsRequest,
    FindCoordinatorRequest,
    MetadataRequest,
)

from .config import CommonConfig
from .connection import ApiVersionRange, Connection, OnDone
from .errors import (
    AuthorizationError,
    BootstrapUnreachableError,
    BrokerError,
    ConnectionLostError,
    KafkaClientError,
    RequestTimedOutError,
    UnknownTopicError,
    error_name,
    is_authorization,
    raise_for_code,
)
from .transport import Network, parse_address

# The versions this client speaks: no topic-id-only versions, record batch v2 only.
CLIENT_VERSIONS: dict[int, tuple[int, int]] = {
    ApiKey.Produce: (3, 9),
    ApiKey.Fetch: (4, 12),
    ApiKey.ListOffsets: (1, 6),
    ApiKey.Metadata: (1, 12),
    ApiKey.OffsetCommit: (2, 8),
    ApiKey.OffsetFetch: (1, 7),
    ApiKey.FindCoordinator: (0, 3),
    ApiKey.JoinGroup: (0, 9),
    ApiKey.Heartbeat: (0, 4),
    ApiKey.LeaveGroup: (0, 5),
    ApiKey.SyncGroup: (0, 5),
    ApiKey.InitProducerId: (0, 4),
    ApiKey.AddPartitionsToTxn: (0, 3),
    ApiKey.AddOffsetsToTxn: (0, 3),
    ApiKey.EndTxn: (0, 3),
    ApiKey.TxnOffsetCommit: (0, 3),
    ApiKey.CreateTopics: (2, 7),
    ApiKey.ApiVersions: (0, 3),
}

DATA = "data"
GROUP = "group"


@dataclass(frozen=True, slots=True, order=True)
class TopicPartition:
    """A partition of a topic."""

    topic: str
    partition: int

    def __str__(self) -> str:
        return f"{self.topic}/{self.partition}"


@dataclass
class PartitionInfo:
    """What the last Metadata response said about one partition."""

    partition: int
    leader: int
    leader_epoch: int
    replicas: list[int]
    isr: list[int]
    error_code: int


@dataclass
class TopicInfo:
    """What the last Metadata response said about one topic."""

    name: str
    error_code: int
    partitions: dict[int, PartitionInfo] = field(default_factory=dict)


@dataclass(frozen=True)
class BrokerAddress:
    """A broker's id and listener address."""

    node_id: int
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port} (node {self.node_id})"


class Cluster:
    """Connections to brokers and the cached cluster metadata; owned by one client."""

    def __init__(
        self,
        config: CommonConfig,
        *,
        network: Network,
        rng: random.Random,
        nursery: trio.Nursery,
    ) -> None:
        self.config = config
        self.network = network
        self.rng = rng
        self._nursery = nursery
        self.bootstrap = [
            BrokerAddress(-1 - i, *parse_address(s)) for i, s in enumerate(config.bootstrap_servers)
        ]
        self.brokers: dict[int, BrokerAddress] = {}
        self.topics: dict[str, TopicInfo] = {}
        # The newest leader epoch seen per partition (metadata, fetched batches, committed
        # offsets): metadata naming an older one comes from a broker that has not heard
        # of the newer leader, and is not used (Java's Metadata, KIP-320).
        self._seen_epochs: dict[TopicPartition, int] = {}
        self._connections: dict[tuple[int, str], Connection] = {}
        self._dial_locks: dict[tuple[int, str], trio.Lock] = {}
        self._metadata_lock = trio.Lock()
        self.metadata_refreshed_at: float | None = None

    @property
    def request_timeout_s(self) -> float:
        """request.timeout.ms in seconds."""
        return self.config.request_timeout_ms / 1000

    # -- connections ---------------------------------------------------------------------

    def _address(self, node_id: int) -> BrokerAddress:
        if node_id in self.brokers:
            return self.brokers[node_id]
        for b in self.bootstrap:
            if b.node_id == node_id:
                return b
        raise ConnectionLostError(
            f"no address known for broker {node_id}; metadata may be stale",
            maybe_delivered=False,
        )

    async def connection(self, node_id: int, channel: str = DATA) -> Connection:
        """An open, version-negotiated connection to a broker (dialed if needed)."""
        key = (node_id, channel)
        conn = self._connections.get(key)
        if conn is not None and not conn.closed:
            return conn
        lock = self._dial_locks.setdefault(key, trio.Lock())
        async with lock:
            conn = self._connections.get(key)
            if conn is not None and not conn.closed:
                return conn
            conn = await self._dial(self._address(node_id))
            self._connections[key] = conn
            return conn

    def open_connection(self, node_id: int, channel: str = DATA) -> Connection | None:
        """The broker's connection if one is open and negotiated (never dials)."""
        conn = self._connections.get((node_id, channel))
        return None if conn is None or conn.closed else conn

    async def _dial(self, address: BrokerAddress) -> Connection:
        timeout_s = self.config.socket_connection_setup_timeout_ms / 1000
        try:
            with trio.fail_after(timeout_s):
                stream = await self.network.connect(address.host, address.port)
        except (OSError, trio.TooSlowError) as exc:
            raise ConnectionLostError(
                f"cannot connect to broker {address}: {exc!r}", maybe_delivered=False
            ) from exc
        conn = Connection(
            stream,
            node_id=address.node_id,
            address=f"{address.host}:{address.port}",
            client_id=self.config.client_id,
            max_frame_bytes=self.config.receive_message_max_bytes,
        )
        self._nursery.start_soon(conn.run)
        try:
            await self._negotiate(conn)
        except BaseException:
            conn.close("version negotiation failed")
            raise
        return conn

    async def _negotiate(self, conn: Connection) -> None:
        request = ApiVersionsRequest(
            client_software_name="faultline", client_software_version="0.1.0"
        )
        response = await conn.request(request, 3, self.request_timeout_s)
        if response.error_code == 35:
            # KIP-511: the broker answered v0 with its ranges; ask again at v0.
            response = await conn.request(ApiVersionsRequest(), 0, self.request_timeout_s)
        raise_for_code(response.error_code, f"ApiVersions to {conn.address}")
        conn.api_versions = {
            k.api_key: ApiVersionRange(k.min_version, k.max_version) for k in response.api_keys
        }

    async def send(
        self,
        node_id: int,
        message: ApiMessage,
        *,
        channel: str = DATA,
        timeout_s: float | None = None,
    ) -> ApiMessage:
        """Send a request to a broker at the best shared version and return the response."""
        conn = await self.connection(node_id, channel)
        return await self.send_on(conn, message, timeout_s=timeout_s)

    async def send_on(
        self, conn: Connection, message: ApiMessage, *, timeout_s: float | None = None
    ) -> ApiMessage:
        """Send on a given connection at the best shared version (request.timeout.ms default)."""
        lo, hi = CLIENT_VERSIONS[message.API_KEY]
        version = conn.version_for(message.API_KEY, lo, hi, type(message).__name__)
        timeout = self.request_timeout_s if timeout_s is None else timeout_s
        return await conn.request(message, version, timeout)

    async def submit_on(
        self,
        conn: Connection,
        message: ApiMessage,
        on_done: OnDone,
        *,
        timeout_s: float | None = None,
    ) -> None:
        """Write a request at the best shared version; `on_done` gets its outcome (see
        `Connection.submit`). Raises UnsupportedVersionError before writing anything."""
        lo, hi = CLIENT_VERSIONS[message.API_KEY]
        version = conn.version_for(message.API_KEY, lo, hi, type(message).__name__)
        timeout = self.request_timeout_s if timeout_s is None else timeout_s
        await conn.submit(message, version, timeout, on_done)

    def close(self) -> None:
        """Close every connection (their readers then exit)."""
        for conn in self._connections.values():
            conn.close("client closed")

    # -- metadata ------------------------------------------------------------------------

    def _candidates(self) -> list[int]:
        """Nodes to ask for metadata: connected ones first, then known, then bootstrap."""
        connected = [k[0] for k, c in self._connections.items() if not c.closed and k[1] == DATA]
        known = sorted(self.brokers)
        self.rng.shuffle(known)
        boot = [b.node_id for b in self.bootstrap]
        self.rng.shuffle(boot)
        seen: list[int] = []
        for n in [*connected, *known, *boot]:
            if n not in seen:
                seen.append(n)
        return seen

    async def refresh_metadata(self, topics: Iterable[str] | None = ()) -> None:
        """Ask one broker for metadata of `topics` (None = all) and update the cache.

        Tries every known broker once; raises ConnectionLostError if none answered.
        """
        wanted = None if topics is None else sorted(set(topics))
        async with self._metadata_lock:
            last: Exception | None = None
            for node_id in self._candidates():
                try:
                    conn = await self.connection(node_id)
                    response = await self.send_on(conn, self._metadata_request(wanted))
                except (ConnectionLostError, RequestTimedOutError) as exc:
                    last = exc
                    continue
                self._apply_metadata(response)
                return
            raise ConnectionLostError(
                f"no broker answered a Metadata request (last error: {last})",
                maybe_delivered=False,
            )

    def _metadata_request(self, topics: list[str] | None) -> MetadataRequest:
        topic_entries = (
            None
            if topics is None
            else [MetadataRequest.MetadataRequestTopic(name=t) for t in topics]
        )
        return MetadataRequest(
            topics=topic_entries,
            allow_auto_topic_creation=self.config.allow_auto_create_topics,
            include_cluster_authorized_operations=False,
            include_topic_authorized_operations=False,
        )

    def _apply_metadata(self, response: ApiMessage) -> None:
        self.brokers = {
            b.node_id: BrokerAddress(b.node_id, b.host, b.port) for b in response.brokers
        }
        seen_epochs = self._seen_epochs
        for t in response.topics:
            info = TopicInfo(t.name, t.error_code)
            previous = self.topics.get(t.name)
            for p in t.partitions:
                tp = TopicPartition(t.name, p.partition_index)
                seen = seen_epochs.get(tp, -1)
                epoch = p.leader_epoch
                if 0 <= epoch < seen:
                    # Stale: keep what we knew if it is as new, else no leader for now.
                    old = previous.partitions.get(p.partition_index) if previous else None
                    if old is not None and old.leader_epoch >= seen:
                        info.partitions[p.partition_index] = old
                        continue
                    leader = -1
                else:
                    leader = p.leader_id
                    if epoch > seen:
                        seen_epochs[tp] = epoch
                info.partitions[p.partition_index] = PartitionInfo(
                    p.partition_index,
                    leader,
                    epoch,
                    list(p.replica_nodes),
                    list(p.isr_nodes),
                    p.error_code,
                )
            self.topics[t.name] = info
        self.metadata_refreshed_at = trio.current_time()

    async def bootstrap_cluster(self) -> None:
        """Reach some bootstrap server within max.block.ms, or raise BootstrapUnreachableError."""
        deadline = trio.current_time() + self.config.max_block_ms / 1000
        backoff = self.config.retry_backoff_ms / 1000
        while True:
            try:
                await self.refresh_metadata(())
                return
            except ConnectionLostError as exc:
                if trio.current_time() + backoff >= deadline:
                    raise BootstrapUnreachableError(
                        "could not reach any of bootstrap.servers="
                        f"{','.join(self.config.bootstrap_servers)} within max.block.ms="
                        f"{self.config.max_block_ms}: {exc}. Check the addresses, that the "
                        "broker is running and listening there, and that nothing blocks the port"
                    ) from exc
                await trio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)

    def leader_for(self, tp: TopicPartition) -> int | None:
        """The partition's leader as last reported, or None if unknown or leaderless."""
        topic = self.topics.get(tp.topic)
        if topic is None:
            return None
        info = topic.partitions.get(tp.partition)
        if info is None or info.leader < 0:
            return None
        return info.leader

    def leader_epoch_for(self, tp: TopicPartition) -> int:
        """The leader epoch of the partition's leader as last reported (-1 if unknown)."""
        topic = self.topics.get(tp.topic)
        info = topic.partitions.get(tp.partition) if topic is not None else None
        return -1 if info is None or info.leader < 0 else info.leader_epoch

    def observe_leader_epoch(self, tp: TopicPartition, epoch: int) -> None:
        """A leader epoch seen in data (a fetched batch, a committed offset).

        Cached metadata of an older epoch loses its leader: it may be a broker that
        has not heard of the newer one, so the next use refreshes the metadata.
        """
        if epoch <= self._seen_epochs.get(tp, -1):
            return
        self._seen_epochs[tp] = epoch
        topic = self.topics.get(tp.topic)
        info = topic.partitions.get(tp.partition) if topic is not None else None
        if info is not None and info.leader_epoch < epoch:
            info.leader = -1

    def partitions_for(self, topic: str) -> list[int]:
        """Known partition ids of a topic, sorted (empty if unknown)."""
        info = self.topics.get(topic)
        return sorted(info.partitions) if info else []

    def available_partitions_for(self, topic: str) -> list[int]:
        """Partitions of a topic that currently have a leader."""
        info = self.topics.get(topic)
        if info is None:
            return []
        return sorted(p for p, i in info.partitions.items() if i.leader >= 0)

    async def wait_for_topic(self, topic: str, *, timeout_s: float | None = None) -> TopicInfo:
        """Metadata for `topic` with every partition led, refreshing until max.block.ms.

        Raises UnknownTopicError or AuthorizationError with what to do.
        """
        timeout_s = self.config.max_block_ms / 1000 if timeout_s is None else timeout_s
        deadline = trio.current_time() + timeout_s
        last_code = 0
        while True:
            info = self.topics.get(topic)
            if self._ready(topic):
                assert info is not None
                return info
            if info is not None:
                last_code = info.error_code
                if is_authorization(last_code):
                    raise AuthorizationError(
                        f"not authorized to access topic {topic!r} ({error_name(last_code)}); "
                        "grant this client's principal Describe/Write/Read on it"
                    )
                if last_code == 17:
                    raise UnknownTopicError(
                        f"topic name {topic!r} is invalid (INVALID_TOPIC_EXCEPTION); use "
                        "letters, digits, '.', '_' and '-', at most 249 characters"
                    )
            if trio.current_time() >= deadline:
                if last_code in (0, 3) and (info is None or not info.partitions):
                    hint = (
                        "create it first (CreateTopics, kafka-topics.sh --create)"
                        if not self.config.allow_auto_create_topics
                        else "create it first, or enable auto.create.topics.enable on the broker"
                    )
                    raise UnknownTopicError(
                        f"topic {topic!r} does not exist (UNKNOWN_TOPIC_OR_PARTITION after "
                        f"{timeout_s:.1f}s); {hint}"
                    )
                raise UnknownTopicError(
                    f"topic {topic!r} has no leader for every partition after {timeout_s:.1f}s "
                    f"(last error {error_name(last_code)}); check the brokers are up"
                )
            with contextlib.suppress(ConnectionLostError):
                await self.refresh_metadata([topic])
            if self._ready(topic):
                continue
            await trio.sleep(self.config.retry_backoff_ms / 1000)

    def _ready(self, topic: str) -> bool:
        info = self.topics.get(topic)
        return bool(
            info is not None
            and info.error_code == 0
            and info.partitions
            and all(p.leader >= 0 for p in info.partitions.values())
        )

    # -- coordinators and admin ----------------------------------------------------------

    async def find_coordinator(self, group_id: str, key_type: int = 0) -> int:
        """The node id of the group's coordinator (its address is added to the cache);
        with key_type=1, of the transactional id's transaction coordinator."""
        last: Exception | None = None
        what = "transactional id" if key_type == 1 else "group"
        for node_id in self._candidates():
            try:
                response = await self.send(
                    node_id, FindCoordinatorRequest(key=group_id, key_type=key_type)
                )
            except (ConnectionLostError, RequestTimedOutError) as exc:
                last = exc
                continue
            if response.error_code != 0:
                raise BrokerError(
                    response.error_code,
                    f"FindCoordinator for {what} {group_id!r}",
                    "the coordinator is moving or loading; retry after retry.backoff.ms",
                )
            self.brokers.setdefault(
                response.node_id,
                BrokerAddress(response.node_id, response.host, response.port),
            )
            return response.node_id
        raise ConnectionLostError(
            f"no broker answered FindCoordinator for {what} {group_id!r}: {last}",
            maybe_delivered=False,
        )

    async def create_topic(
        self,
        name: str,
        partitions: int,
        replication_factor: int = 1,
        configs: dict[str, str] | None = None,
        *,
        exist_ok: bool = True,
    ) -> None:
        """Create a topic through CreateTopics on some broker and wait for its metadata."""
        topic_cls = CreateTopicsRequest.CreatableTopic
        config_cls = topic_cls.CreatableTopicConfig
        request = CreateTopicsRequest(
            topics=[
                topic_cls(
                    name=name,
                    num_partitions=partitions,
                    replication_factor=replication_factor,
                    assignments=[],
                    configs=[config_cls(name=k, value=v) for k, v in (configs or {}).items()],
                )
            ],
            timeout_ms=self.config.request_timeout_ms,
            validate_only=False,
        )
        node_id = self._candidates()[0]
        response = await self.send(node_id, request)
        for result in response.topics:
            if result.error_code == 36 and exist_ok:
                continue
            if result.error_code != 0:
                message = getattr(result, "error_message", None) or ""
                raise KafkaClientError(
                    f"CreateTopics {name!r} failed: {error_name(result.error_code)} {message}"
                )
        await self.wait_for_topic(name)
