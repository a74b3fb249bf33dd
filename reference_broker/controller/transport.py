"""Raft messages on Kafka's wire: the mapping both ways, and `RaftTransport`, the sending side.

The Raft core (`controller.raft`) speaks dataclasses addressed by node id. Between
nodes they travel as Kafka's KRaft APIs, as a Kafka controller sends them, for the
single partition `__cluster_metadata-0`:

    VoteRequest/VoteResponse            <->  Vote (52) v1
    BeginQuorumEpoch(+Response)         <->  BeginQuorumEpoch (53) v1
    EndQuorumEpoch(+Response)           <->  EndQuorumEpoch (54) v1
    FetchRequest/FetchResponse          <->  Fetch (1) v12: replica id, current leader
                                             epoch, last fetched epoch; the answer's
                                             records, high watermark, DivergingEpoch
                                             and CurrentLeader

Entries travel in the Fetch records as v2 record batches (`controller.payloads`). The
core's fetch error strings become Kafka error codes (`FETCH_ERRORS`).

The sending side (`to_kafka_request`, `from_kafka_response`) lives in `RaftTransport`;
the receiving side (`from_kafka_request`, `to_kafka_response`, `quorum_error_response`)
is what `handlers/quorum.py` uses. A request that cannot be a Raft message raises
`QuorumWireError` carrying the Kafka error code to answer with; an answer that cannot be
a Raft reply (an error code, another partition, corrupt records) maps to None, which
the core treats like a lost message and retries on its timers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from kafka.protocol.api_key import ApiKey
from kafka.protocol.api_message import ApiMessage
from kafka.protocol.consumer import FetchRequest as KafkaFetchRequest
from kafka.protocol.consumer import FetchResponse as KafkaFetchResponse
from kafka.protocol.data_container import DataContainer

from ..config import Listener
from ..env import Network
from ..errors import CorruptRecordError, ErrorCode
from ..peer import PeerChannel, PeerUnavailableError
from ..protocol.controller_apis import (
    BEGIN_QUORUM_EPOCH_VERSION,
    END_QUORUM_EPOCH_VERSION,
    RAFT_FETCH_VERSION,
    VOTE_VERSION,
)
from ..protocol.controller_apis import (
    BeginQuorumEpochRequest as KafkaBeginQuorumEpochRequest,
)
from ..protocol.controller_apis import (
    BeginQuorumEpochResponse as KafkaBeginQuorumEpochResponse,
)
from ..protocol.controller_apis import (
    EndQuorumEpochRequest as KafkaEndQuorumEpochRequest,
)
from ..protocol.controller_apis import (
    EndQuorumEpochResponse as KafkaEndQuorumEpochResponse,
)
from ..protocol.controller_apis import VoteRequest as KafkaVoteRequest
from ..protocol.controller_apis import VoteResponse as KafkaVoteResponse
from .payloads import PayloadError, batches_to_entries, entries_to_batches
from .raft.log import OffsetAndEpoch
from .raft.messages import (
    FENCED_LEADER_EPOCH,
    FETCH_OK,
    NOT_LEADER,
    UNKNOWN_LEADER_EPOCH,
    BeginQuorumEpoch,
    BeginQuorumEpochResponse,
    EndQuorumEpoch,
    EndQuorumEpochResponse,
    FetchRequest,
    FetchResponse,
    Message,
    VoteRequest,
    VoteResponse,
)

logger = logging.getLogger("faultline.broker.raft_transport")

METADATA_TOPIC = "__cluster_metadata"
METADATA_PARTITION = 0
NO_LEADER = -1
# Kafka's RaftClient fetches up to one maximal batch (KafkaRaftClient.MAX_FETCH_SIZE_BYTES)
# and lets the leader hold an empty fetch up to KafkaRaftClient.MAX_FETCH_WAIT_MS.
MAX_FETCH_BYTES = 8 * 1024 * 1024
MAX_FETCH_WAIT_MS = 500
# Errors.INCONSISTENT_CLUSTER_ID; ErrorCode does not list it yet.
INCONSISTENT_CLUSTER_ID = 104

FETCH_ERRORS: dict[str, ErrorCode] = {
    FETCH_OK: ErrorCode.NONE,
    FENCED_LEADER_EPOCH: ErrorCode.FENCED_LEADER_EPOCH,
    UNKNOWN_LEADER_EPOCH: ErrorCode.UNKNOWN_LEADER_EPOCH,
    NOT_LEADER: ErrorCode.NOT_LEADER_OR_FOLLOWER,
}
"""The Raft core's fetch errors and the Kafka codes they travel as."""
_FETCH_ERRORS_BY_CODE = {int(code): error for error, code in FETCH_ERRORS.items()}

RequestMessage = VoteRequest | BeginQuorumEpoch | EndQuorumEpoch | FetchRequest
"""The Raft messages that are requests; each one's reply comes back on the same exchange."""

QUORUM_APIS: dict[int, int] = {
    ApiKey.Vote: VOTE_VERSION,
    ApiKey.BeginQuorumEpoch: BEGIN_QUORUM_EPOCH_VERSION,
    ApiKey.EndQuorumEpoch: END_QUORUM_EPOCH_VERSION,
    ApiKey.Fetch: RAFT_FETCH_VERSION,
}
"""The Kafka APIs Raft messages travel as, with the version sent."""


class QuorumEndpoint(Protocol):
    """The local quorum member inbound quorum requests are handed to (the QuorumDriver).

    `node_id` is the Raft id of this node, `cluster_id` the id its voters share; requests
    naming another cluster are refused before they reach the core.
    """

    @property
    def node_id(self) -> int:
        """This node's id in the quorum."""
        ...

    @property
    def cluster_id(self) -> str:
        """The cluster id the quorum's members share."""
        ...

    def handle_request(self, message: Message) -> Message:
        """Run the core on one inbound request and return its reply to the sender."""
        ...

    async def handle_fetch(self, message: FetchRequest, max_wait_ms: int) -> Message:
        """`handle_request` for a Fetch, which may wait up to `max_wait_ms` for news
        (an append, a high watermark move, a new leader) before answering empty."""
        ...

    async def sync(self) -> None:
        """Make the log and the election state durable before the reply leaves."""
        ...


class QuorumWireError(ValueError):
    """An inbound quorum request that cannot become a Raft message; answer with `code`."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


# -- the sending side --------------------------------------------------------------------


def _leader_id(value: int | None) -> int:
    return NO_LEADER if value is None else value


def _or_none(leader_id: int) -> int | None:
    return None if leader_id < 0 else leader_id


def to_kafka_request(
    message: RequestMessage, cluster_id: str, *, fetch_max_wait_ms: int = 0
) -> tuple[ApiMessage, int]:
    """The Kafka request (and its version) that carries a Raft request to `message.dst`.

    A Fetch asks the leader to hold it up to `fetch_max_wait_ms` while there is nothing new.
    """
    match message:
        case VoteRequest():
            data = KafkaVoteRequest.TopicData
            return (
                KafkaVoteRequest(
                    version=VOTE_VERSION,
                    cluster_id=cluster_id,
                    voter_id=message.dst,
                    topics=[
                        data(
                            topic_name=METADATA_TOPIC,
                            partitions=[
                                data.PartitionData(
                                    partition_index=METADATA_PARTITION,
                                    candidate_epoch=message.epoch,
                                    candidate_id=message.src,
                                    candidate_directory_id=None,
                                    voter_directory_id=None,
                                    last_offset_epoch=message.last_epoch,
                                    last_offset=message.last_offset,
                                )
                            ],
                        )
                    ],
                ),
                VOTE_VERSION,
            )
        case BeginQuorumEpoch():
            data = KafkaBeginQuorumEpochRequest.TopicData
            return (
                KafkaBeginQuorumEpochRequest(
                    version=BEGIN_QUORUM_EPOCH_VERSION,
                    cluster_id=cluster_id,
                    voter_id=message.dst,
                    topics=[
                        data(
                            topic_name=METADATA_TOPIC,
                            partitions=[
                                data.PartitionData(
                                    partition_index=METADATA_PARTITION,
                                    voter_directory_id=None,
                                    leader_id=message.src,
                                    leader_epoch=message.epoch,
                                )
                            ],
                        )
                    ],
                    leader_endpoints=[],
                ),
                BEGIN_QUORUM_EPOCH_VERSION,
            )
        case EndQuorumEpoch():
            data = KafkaEndQuorumEpochRequest.TopicData
            candidate = data.PartitionData.ReplicaInfo
            return (
                KafkaEndQuorumEpochRequest(
                    version=END_QUORUM_EPOCH_VERSION,
                    cluster_id=cluster_id,
                    topics=[
                        data(
                            topic_name=METADATA_TOPIC,
                            partitions=[
                                data.PartitionData(
                                    partition_index=METADATA_PARTITION,
                                    leader_id=message.src,
                                    leader_epoch=message.epoch,
                                    preferred_candidates=[
                                        candidate(candidate_id=c, candidate_directory_id=None)
                                        for c in message.preferred_successors
                                    ],
                                )
                            ],
                        )
                    ],
                    leader_endpoints=[],
                ),
                END_QUORUM_EPOCH_VERSION,
            )
        case FetchRequest():
            topic = KafkaFetchRequest.FetchTopic
            return (
                KafkaFetchRequest(
                    version=RAFT_FETCH_VERSION,
                    cluster_id=cluster_id,
                    replica_id=message.src,
                    max_wait_ms=fetch_max_wait_ms,
                    min_bytes=0,
                    max_bytes=MAX_FETCH_BYTES,
                    isolation_level=0,
                    session_id=0,
                    session_epoch=-1,
                    topics=[
                        topic(
                            topic=METADATA_TOPIC,
                            partitions=[
                                topic.FetchPartition(
                                    partition=METADATA_PARTITION,
                                    current_leader_epoch=message.epoch,
                                    fetch_offset=message.fetch_offset,
                                    last_fetched_epoch=message.last_fetched_epoch,
                                    log_start_offset=0,
                                    partition_max_bytes=MAX_FETCH_BYTES,
                                )
                            ],
                        )
                    ],
                    forgotten_topics_data=[],
                    rack_id="",
                ),
                RAFT_FETCH_VERSION,
            )
    raise TypeError(f"not a Raft request: {message!r}")


def _single_partition(
    response: ApiMessage, topics_field: str = "topics"
) -> DataContainer | None:
    """The one `__cluster_metadata-0` entry of an answer, None if the answer is not that."""
    topics = getattr(response, topics_field) or []
    if len(topics) != 1:
        return None
    topic = topics[0]
    name = getattr(topic, "topic_name", None) or getattr(topic, "topic", None)
    if name != METADATA_TOPIC or len(topic.partitions or []) != 1:
        return None
    partition = topic.partitions[0]
    # Fetch requests call the index `partition`, every other message `partition_index`.
    index = getattr(partition, "partition_index", None)
    if index is None:
        index = getattr(partition, "partition", None)
    if index != METADATA_PARTITION:
        return None
    return partition


def from_kafka_response(request: RequestMessage, response: ApiMessage) -> Message | None:
    """The Raft reply carried by `response` to `request`, or None if it carries none.

    None covers error codes (another cluster, a standalone node, a malformed request),
    answers about another partition and corrupt records: to the core these are all the
    same as an answer that never arrived.
    """
    if response.error_code != ErrorCode.NONE:
        return None
    if isinstance(request, FetchRequest):
        return _fetch_reply(request, response)
    partition = _single_partition(response)
    if partition is None or partition.error_code != ErrorCode.NONE:
        return None
    src, dst = request.dst, request.src
    epoch, leader_id = partition.leader_epoch, _or_none(partition.leader_id)
    match request:
        case VoteRequest():
            return VoteResponse(
                src=src,
                dst=dst,
                epoch=epoch,
                granted=bool(partition.vote_granted),
                leader_id=leader_id,
            )
        case BeginQuorumEpoch():
            return BeginQuorumEpochResponse(src=src, dst=dst, epoch=epoch, leader_id=leader_id)
        case EndQuorumEpoch():
            return EndQuorumEpochResponse(src=src, dst=dst, epoch=epoch, leader_id=leader_id)
    raise TypeError(f"not a Raft request: {request!r}")


def _fetch_reply(request: FetchRequest, response: ApiMessage) -> FetchResponse | None:
    partition = _single_partition(response, "responses")
    if partition is None:
        return None
    error = _FETCH_ERRORS_BY_CODE.get(partition.error_code)
    leader = partition.current_leader
    if error is None or leader is None or leader.leader_epoch < 0:
        return None
    diverging = partition.diverging_epoch
    try:
        entries = tuple(batches_to_entries(partition.records or b""))
    except (CorruptRecordError, PayloadError) as exc:
        logger.warning("node %d sent unreadable metadata records: %s", request.dst, exc)
        return None
    return FetchResponse(
        src=request.dst,
        dst=request.src,
        # The core pairs the answer with its fetch in flight by this id.
        correlation_id=request.correlation_id,
        epoch=leader.leader_epoch,
        leader_id=_or_none(leader.leader_id),
        error=error,
        entries=entries,
        high_watermark=max(partition.high_watermark, 0),
        diverging=(
            OffsetAndEpoch(diverging.epoch, diverging.end_offset)
            if diverging is not None and (diverging.epoch >= 0 or diverging.end_offset >= 0)
            else None
        ),
    )


# -- the receiving side ------------------------------------------------------------------


def _check_cluster(request: ApiMessage, cluster_id: str) -> None:
    # Kafka's KafkaRaftClient lets a null cluster id through for older senders; every
    # sender here names its cluster, so a null one is refused like a wrong one.
    if request.cluster_id != cluster_id:
        raise QuorumWireError(
            INCONSISTENT_CLUSTER_ID,
            f"request for cluster {request.cluster_id!r}, this quorum is {cluster_id!r}",
        )


def _request_partition(request: ApiMessage, topics_field: str = "topics") -> DataContainer:
    # Kafka answers INVALID_REQUEST for any partition but the metadata log's.
    partition = _single_partition(request, topics_field)
    if partition is None:
        raise QuorumWireError(
            ErrorCode.INVALID_REQUEST, f"a quorum request must name only {METADATA_TOPIC}-0"
        )
    return partition


def from_kafka_request(
    api_key: int, request: ApiMessage, *, node_id: int, cluster_id: str, correlation_id: int = 0
) -> RequestMessage:
    """The Raft request carried by an inbound Kafka request to node `node_id`.

    Raises QuorumWireError (with the Kafka code to answer) for another cluster, another
    partition, a request meant for another voter or impossible offsets and epochs.
    """
    _check_cluster(request, cluster_id)
    if api_key == ApiKey.Fetch:
        return _fetch_request(request, node_id, correlation_id)
    if getattr(request, "voter_id", NO_LEADER) not in (NO_LEADER, node_id):
        raise QuorumWireError(
            ErrorCode.INVALID_REQUEST,
            f"request addressed to voter {request.voter_id}, this is node {node_id}",
        )
    if api_key == ApiKey.Vote:
        p = _request_partition(request)
        if p.last_offset < 0 or p.last_offset_epoch < 0 or p.candidate_epoch < 0:
            raise QuorumWireError(ErrorCode.INVALID_REQUEST, "negative epoch or offset in Vote")
        return VoteRequest(
            src=p.candidate_id,
            dst=node_id,
            epoch=p.candidate_epoch,
            last_epoch=p.last_offset_epoch,
            last_offset=p.last_offset,
        )
    if api_key == ApiKey.BeginQuorumEpoch:
        p = _request_partition(request)
        return BeginQuorumEpoch(src=p.leader_id, dst=node_id, epoch=p.leader_epoch)
    if api_key == ApiKey.EndQuorumEpoch:
        p = _request_partition(request)
        return EndQuorumEpoch(
            src=p.leader_id,
            dst=node_id,
            epoch=p.leader_epoch,
            preferred_successors=tuple(c.candidate_id for c in p.preferred_candidates or ()),
        )
    raise ValueError(f"API key {api_key} carries no Raft request")


def _fetch_request(request: ApiMessage, node_id: int, correlation_id: int) -> FetchRequest:
    p = _request_partition(request)
    if request.replica_id < 0:
        raise QuorumWireError(
            ErrorCode.INVALID_REQUEST, "a metadata log fetch must name its replica id"
        )
    if (
        request.max_wait_ms < 0
        or p.fetch_offset < 0
        or p.last_fetched_epoch < 0
        or p.last_fetched_epoch > p.current_leader_epoch
    ):
        # Kafka's own checks (KafkaRaftClient.handleFetchRequest).
        raise QuorumWireError(
            ErrorCode.INVALID_REQUEST,
            f"impossible fetch: offset {p.fetch_offset}, last fetched epoch "
            f"{p.last_fetched_epoch}, leader epoch {p.current_leader_epoch}, "
            f"max wait {request.max_wait_ms} ms",
        )
    return FetchRequest(
        src=request.replica_id,
        dst=node_id,
        correlation_id=correlation_id,
        epoch=p.current_leader_epoch,
        fetch_offset=p.fetch_offset,
        last_fetched_epoch=p.last_fetched_epoch,
    )


_REPLY_TYPES: dict[int, type] = {
    ApiKey.Vote: VoteResponse,
    ApiKey.BeginQuorumEpoch: BeginQuorumEpochResponse,
    ApiKey.EndQuorumEpoch: EndQuorumEpochResponse,
    ApiKey.Fetch: FetchResponse,
}


def to_kafka_response(api_key: int, reply: Message, version: int) -> ApiMessage:
    """The Kafka response of `version` carrying the core's `reply` to an `api_key` request."""
    expected = _REPLY_TYPES.get(api_key)
    if expected is None or not isinstance(reply, expected):
        raise TypeError(f"{reply!r} is not the reply to a {ApiKey(api_key).name} request")
    leader_id = _leader_id(getattr(reply, "leader_id", None))
    match reply:
        case VoteResponse():
            data = KafkaVoteResponse.TopicData
            partition = data.PartitionData(
                partition_index=METADATA_PARTITION,
                error_code=0,
                leader_id=leader_id,
                leader_epoch=reply.epoch,
                vote_granted=reply.granted,
            )
            return KafkaVoteResponse(
                version=version,
                error_code=0,
                topics=[data(topic_name=METADATA_TOPIC, partitions=[partition])],
                node_endpoints=[],
            )
        case BeginQuorumEpochResponse() | EndQuorumEpochResponse():
            cls = (
                KafkaBeginQuorumEpochResponse
                if isinstance(reply, BeginQuorumEpochResponse)
                else KafkaEndQuorumEpochResponse
            )
            data = cls.TopicData
            partition = data.PartitionData(
                partition_index=METADATA_PARTITION,
                error_code=0,
                leader_id=leader_id,
                leader_epoch=reply.epoch,
            )
            return cls(
                version=version,
                error_code=0,
                topics=[data(topic_name=METADATA_TOPIC, partitions=[partition])],
                node_endpoints=[],
            )
        case FetchResponse():
            return _fetch_answer(reply, version)
    raise TypeError(f"not a Raft reply: {reply!r}")


def _fetch_answer(reply: FetchResponse, version: int) -> ApiMessage:
    data = KafkaFetchResponse.FetchableTopicResponse.PartitionData
    partition = data(
        partition_index=METADATA_PARTITION,
        error_code=int(FETCH_ERRORS[reply.error]),
        high_watermark=reply.high_watermark,
        last_stable_offset=reply.high_watermark,
        log_start_offset=0,
        diverging_epoch=(
            None
            if reply.diverging is None
            else data.EpochEndOffset(epoch=reply.diverging.epoch, end_offset=reply.diverging.offset)
        ),
        current_leader=data.LeaderIdAndEpoch(
            leader_id=_leader_id(reply.leader_id), leader_epoch=reply.epoch
        ),
        snapshot_id=None,
        aborted_transactions=None,
        preferred_read_replica=-1,
        records=entries_to_batches(reply.entries),
    )
    return KafkaFetchResponse(
        version=version,
        throttle_time_ms=0,
        error_code=0,
        session_id=0,
        responses=[
            KafkaFetchResponse.FetchableTopicResponse(topic=METADATA_TOPIC, partitions=[partition])
        ],
    )


_ERROR_RESPONSES: dict[int, type[ApiMessage]] = {
    ApiKey.Vote: KafkaVoteResponse,
    ApiKey.BeginQuorumEpoch: KafkaBeginQuorumEpochResponse,
    ApiKey.EndQuorumEpoch: KafkaEndQuorumEpochResponse,
}


def quorum_error_response(api_key: int, version: int, code: int) -> ApiMessage:
    """A Kafka response to an `api_key` quorum request that carries only error `code`.

    Vote, BeginQuorumEpoch and EndQuorumEpoch get it at the top level, as Kafka answers;
    a Fetch gets it at the top level too (where Kafka's KafkaRaftClient puts a request it
    refuses whole, such as INCONSISTENT_CLUSTER_ID) and on `__cluster_metadata-0`.
    """
    if api_key == ApiKey.Fetch:
        data = KafkaFetchResponse.FetchableTopicResponse.PartitionData
        partition = data(
            partition_index=METADATA_PARTITION,
            error_code=int(code),
            high_watermark=-1,
            records=b"",
        )
        return KafkaFetchResponse(
            version=version,
            error_code=int(code),
            responses=[
                KafkaFetchResponse.FetchableTopicResponse(
                    topic=METADATA_TOPIC, partitions=[partition]
                )
            ],
        )
    cls = _ERROR_RESPONSES.get(api_key)
    if cls is None:
        raise ValueError(f"API key {api_key} is not a quorum API")
    return cls(version=version, error_code=int(code), topics=[], node_endpoints=[])


# -- RaftTransport -----------------------------------------------------------------------


class RaftTransport:
    """Sends Raft requests to peers and returns their replies, one `PeerChannel` per peer.

    Requests to different peers never wait for each other; requests to one peer go one
    at a time over its channel. A channel is re-created when `address_of` starts naming
    another address for its peer (a re-registered broker).

    Fetches ask the leader to hold them up to `fetch_max_wait_ms` when there is nothing
    new (Kafka's 500 ms by default, at most a quarter of the request timeout, which
    must leave room for the wait).
    """

    def __init__(
        self,
        network: Network,
        node_id: int,
        cluster_id: str,
        address_of: Callable[[int], Listener | None],
        request_timeout_s: float,
        *,
        fetch_max_wait_ms: int | None = None,
    ) -> None:
        timeout_ms = int(request_timeout_s * 1000)
        if fetch_max_wait_ms is None:
            fetch_max_wait_ms = min(MAX_FETCH_WAIT_MS, timeout_ms // 4)
        if not 0 <= fetch_max_wait_ms < timeout_ms:
            raise ValueError(
                f"fetch_max_wait_ms {fetch_max_wait_ms} must be in 0..{timeout_ms - 1}: a fetch "
                f"held that long would outlast the {timeout_ms} ms request timeout"
            )
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.network = network
        self.node_id = node_id
        self.cluster_id = cluster_id
        self.address_of = address_of
        self.request_timeout_s = request_timeout_s
        self._channels: dict[int, tuple[Listener, PeerChannel]] = {}
        self._closed = False

    async def _channel(self, peer: int) -> PeerChannel | None:
        address = self.address_of(peer)
        if address is None:
            return None
        current = self._channels.get(peer)
        if current is not None:
            if current[0] == address:
                return current[1]
            await current[1].aclose()
        channel = PeerChannel(
            self.network,
            address.host,
            address.port,
            client_id=f"raft-{self.node_id}",
            request_timeout_s=self.request_timeout_s,
        )
        self._channels[peer] = (address, channel)
        return channel

    async def send(self, message: Message) -> Message | None:
        """Deliver a Raft request and return the reply (src/dst filled), None if none came.

        None means unreachable, timed out or answered with an error: the core retries
        on its own timers, as it does for a lost message.
        """
        if not isinstance(message, VoteRequest | BeginQuorumEpoch | EndQuorumEpoch | FetchRequest):
            raise TypeError(f"only Raft requests are sent; replies go back inline: {message!r}")
        if message.src != self.node_id:
            raise ValueError(f"node {self.node_id} cannot send a message from {message.src}")
        if self._closed:
            return None
        channel = await self._channel(message.dst)
        if channel is None:
            logger.debug("no address for node %d; dropping %s", message.dst, type(message).__name__)
            return None
        body, version = to_kafka_request(
            message, self.cluster_id, fetch_max_wait_ms=self.fetch_max_wait_ms
        )
        try:
            response = await channel.request(body, version)
        except PeerUnavailableError as exc:
            logger.debug(
                "%s to node %d not delivered: %s", type(message).__name__, message.dst, exc
            )
            return None
        reply = from_kafka_response(message, response)
        if reply is None:
            logger.info(
                "node %d answered %s with nothing the quorum can use: %r",
                message.dst,
                type(message).__name__,
                response,
            )
        return reply

    async def aclose(self) -> None:
        """Close every channel; later sends return None."""
        self._closed = True
        channels, self._channels = self._channels, {}
        for _, channel in channels.values():
            await channel.aclose()
