"""The inter-broker wire: controller API schemas, the outgoing codec, Raft over Kafka messages.

Schemas are checked byte for byte against encodings written out by hand from Kafka's
message definitions, so a field out of order or of the wrong type cannot pass just
because kafka-python decodes what it encoded.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import random
import struct
import uuid
from types import SimpleNamespace
from typing import cast

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka.protocol.api_key import ApiKey
from kafka.protocol.api_message import ApiMessage
from kafka.protocol.metadata import ApiVersionsRequest, ApiVersionsResponse, MetadataRequest

from harness.runtime.sim.network import HostNetwork, SimNetwork
from reference_broker.broker import Broker
from reference_broker.config import Listener
from reference_broker.controller.raft import (
    Entry,
    InMemoryRaftLog,
    LeaderChange,
    OffsetAndEpoch,
    QuorumStateStore,
    RaftConfig,
    RaftNode,
)
from reference_broker.controller.raft import messages as raft
from reference_broker.controller.records import TopicRecord
from reference_broker.controller.transport import (
    FETCH_ERRORS,
    INCONSISTENT_CLUSTER_ID,
    QUORUM_APIS,
    QuorumEndpoint,
    QuorumWireError,
    RaftTransport,
    from_kafka_request,
    from_kafka_response,
    quorum_error_response,
    to_kafka_request,
    to_kafka_response,
)
from reference_broker.errors import ErrorCode
from reference_broker.handlers.context import RequestContext
from reference_broker.handlers.quorum import (
    handle_begin_quorum_epoch,
    handle_end_quorum_epoch,
    handle_raft_fetch,
    handle_vote,
)
from reference_broker.protocol import (
    ALL_APIS,
    CONTROLLER_APIS,
    SUPPORTED_APIS,
    FrameDecoder,
    MalformedResponseError,
    ProtocolError,
    RequestHeader,
    api_versions_response,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
    error_response,
    receive_frame,
)
from reference_broker.protocol.controller_apis import (
    RAFT_FETCH_VERSION,
    BrokerHeartbeatRequest,
    BrokerRegistrationRequest,
    EndQuorumEpochRequest,
    VoteRequest,
    VoteResponse,
)

CONTROLLER_SERVED = [(spec, spec.max_version) for spec in CONTROLLER_APIS.values()]


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _compact_string(s: str) -> bytes:
    raw = s.encode()
    return _varint(len(raw) + 1) + raw


NO_TAGS = b"\x00"


# -- schemas ---------------------------------------------------------------------------


def test_controller_apis_are_served_at_one_version_each_and_not_advertised() -> None:
    # The quorum and broker-to-controller APIs, and WriteTxnMarkers (27), which the
    # transaction coordinators send to partition leaders on the inter-broker listener.
    assert {int(k) for k in CONTROLLER_APIS} == {27, 52, 53, 54, 56, 62, 63}
    assert all(spec.min_version == spec.max_version for spec in CONTROLLER_APIS.values())
    assert not set(CONTROLLER_APIS) & set(SUPPORTED_APIS)
    advertised = {entry.api_key for entry in api_versions_response(3).api_keys}
    assert advertised == {int(k) for k in SUPPORTED_APIS}


@pytest.mark.parametrize(("spec", "version"), CONTROLLER_SERVED, ids=lambda x: getattr(x, "key", x))
def test_every_controller_api_request_decodes_on_the_server_side(spec, version: int) -> None:
    request = spec.request(version=version)
    framed = encode_request(request, version, correlation_id=77, client_id="peer-2")
    assert struct.unpack(">i", framed[:4])[0] == len(framed) - 4
    decoded = decode_request(framed[4:])
    assert decoded.spec is spec
    assert decoded.header.api_version == version
    assert (decoded.header.correlation_id, decoded.header.client_id) == (77, "peer-2")
    assert decoded.body.to_dict() == request.to_dict()


@pytest.mark.parametrize(("spec", "version"), CONTROLLER_SERVED, ids=lambda x: getattr(x, "key", x))
def test_every_controller_api_error_response_reaches_the_sender(spec, version: int) -> None:
    request = spec.request(version=version)
    framed = encode_request(request, version, correlation_id=5, client_id="c")
    header = decode_request(framed[4:]).header
    answer = encode_response(header, error_response(spec, version, ErrorCode.NOT_CONTROLLER))
    body = decode_response(answer[4:], spec.request, version, expected_correlation_id=5)
    assert isinstance(body, spec.response)
    if spec.response.fields.get("error_code") is not None:
        assert body.error_code == ErrorCode.NOT_CONTROLLER
    else:
        # WriteTxnMarkers' errors live per marker: an empty answer, which the sender
        # reads as "no marker written" and retries.
        assert spec.key == 27 and body.markers == []


def test_vote_request_v1_bytes_follow_kafkas_field_order() -> None:
    candidate_dir = uuid.UUID(int=0x0102030405060708090A0B0C0D0E0F10)
    request = VoteRequest(
        version=1,
        cluster_id="abc",
        voter_id=3,
        topics=[
            VoteRequest.TopicData(
                topic_name="__cluster_metadata",
                partitions=[
                    VoteRequest.TopicData.PartitionData(
                        partition_index=0,
                        candidate_epoch=7,
                        candidate_id=2,
                        candidate_directory_id=candidate_dir,
                        voter_directory_id=None,
                        last_offset_epoch=6,
                        last_offset=41,
                    )
                ],
            )
        ],
    )
    expected = (
        _compact_string("abc")
        + struct.pack(">i", 3)  # VoterId (v1+)
        + _varint(2)  # one topic
        + _compact_string("__cluster_metadata")
        + _varint(2)  # one partition
        + struct.pack(">iii", 0, 7, 2)  # PartitionIndex, CandidateEpoch, CandidateId
        + candidate_dir.bytes
        + bytes(16)  # VoterDirectoryId: the zero uuid
        + struct.pack(">iq", 6, 41)  # LastOffsetEpoch, LastOffset
        + NO_TAGS  # partition
        + NO_TAGS  # topic
        + NO_TAGS  # message
    )
    assert bytes(request.encode(version=1)) == expected


def test_end_quorum_epoch_v1_bytes_carry_preferred_candidates_not_successors() -> None:
    partition = EndQuorumEpochRequest.TopicData.PartitionData
    request = EndQuorumEpochRequest(
        version=1,
        cluster_id=None,
        topics=[
            EndQuorumEpochRequest.TopicData(
                topic_name="m",
                partitions=[
                    partition(
                        partition_index=0,
                        leader_id=1,
                        leader_epoch=4,
                        preferred_candidates=[
                            partition.ReplicaInfo(candidate_id=3, candidate_directory_id=None)
                        ],
                    )
                ],
            )
        ],
        leader_endpoints=[],
    )
    expected = (
        b"\x00"  # null compact string
        + _varint(2)
        + _compact_string("m")
        + _varint(2)
        + struct.pack(">iii", 0, 1, 4)
        + _varint(2)  # one candidate
        + struct.pack(">i", 3)
        + bytes(16)
        + NO_TAGS  # candidate
        + NO_TAGS  # partition
        + NO_TAGS  # topic
        + _varint(1)  # LeaderEndpoints: empty
        + NO_TAGS
    )
    assert bytes(request.encode(version=1)) == expected


def test_broker_heartbeat_v1_puts_offline_log_dirs_in_a_tagged_field() -> None:
    bare = BrokerHeartbeatRequest(
        version=1,
        broker_id=2,
        broker_epoch=10,
        current_metadata_offset=99,
        want_fence=False,
        want_shut_down=True,
    )
    fixed = struct.pack(">iqq??", 2, 10, 99, False, True)
    assert bytes(bare.encode(version=1)) == fixed + NO_TAGS
    offline = uuid.UUID(int=5)
    tagged = BrokerHeartbeatRequest(
        version=1,
        broker_id=2,
        broker_epoch=10,
        current_metadata_offset=99,
        want_fence=False,
        want_shut_down=True,
        offline_log_dirs=[offline],
    )
    field = _varint(2) + offline.bytes  # compact array of one uuid
    expected = fixed + _varint(1) + _varint(0) + _varint(len(field)) + field
    assert bytes(tagged.encode(version=1)) == expected
    assert BrokerHeartbeatRequest.decode(expected, version=1).offline_log_dirs == [offline]


def test_broker_registration_v4_round_trips_listeners_and_features() -> None:
    request = BrokerRegistrationRequest(
        version=4,
        broker_id=1,
        cluster_id="cid",
        incarnation_id=uuid.UUID(int=42),
        listeners=[
            BrokerRegistrationRequest.Listener(
                name="PLAINTEXT", host="node-1", port=9092, security_protocol=0
            )
        ],
        features=[
            BrokerRegistrationRequest.Feature(
                name="metadata.version", min_supported_version=1, max_supported_version=1
            )
        ],
        rack=None,
        log_dirs=[uuid.UUID(int=7)],
        previous_broker_epoch=12,
    )
    framed = encode_request(request, 4, correlation_id=1, client_id="b1")
    decoded = decode_request(framed[4:]).body
    assert decoded.to_dict() == request.to_dict()
    assert decoded.listeners[0].port == 9092
    assert decoded.incarnation_id == uuid.UUID(int=42)


def test_vote_response_tagged_endpoints_survive_the_round_trip() -> None:
    response = VoteResponse(
        version=1,
        error_code=0,
        topics=[],
        node_endpoints=[VoteResponse.NodeEndpoint(node_id=2, host="node-2", port=19092)],
    )
    framed = encode_request(VoteRequest(version=1), 1, correlation_id=9, client_id="x")
    header = decode_request(framed[4:]).header
    answer = encode_response(header, response)
    decoded = decode_response(answer[4:], VoteRequest, 1, expected_correlation_id=9)
    assert decoded.node_endpoints[0].host == "node-2"
    assert decoded.node_endpoints[0].port == 19092


# -- the outgoing codec ----------------------------------------------------------------


def _answer(request, version: int, response, correlation_id: int) -> bytes:
    framed = encode_request(request, version, correlation_id=correlation_id, client_id="t")
    return encode_response(decode_request(framed[4:]).header, response)[4:]


def test_api_versions_response_decodes_with_its_header_v0_at_a_flexible_version() -> None:
    frame = _answer(ApiVersionsRequest(version=3), 3, api_versions_response(3), 11)
    decoded = decode_response(frame, ApiVersionsRequest, 3, expected_correlation_id=11)
    assert isinstance(decoded, ApiVersionsResponse)
    assert {e.api_key for e in decoded.api_keys} == {int(k) for k in SUPPORTED_APIS}


def test_a_response_to_another_request_is_rejected() -> None:
    spec = SUPPORTED_APIS[ApiKey.Metadata]
    frame = _answer(MetadataRequest(version=12), 12, error_response(spec, 12, ErrorCode.NONE), 3)
    with pytest.raises(MalformedResponseError, match="correlation id 3, expected 4"):
        decode_response(frame, MetadataRequest, 12, expected_correlation_id=4)


def test_truncated_or_padded_responses_are_malformed() -> None:
    spec = SUPPORTED_APIS[ApiKey.Metadata]
    frame = _answer(MetadataRequest(version=12), 12, error_response(spec, 12, ErrorCode.NONE), 1)
    decode_response(frame, MetadataRequest, 12, expected_correlation_id=1)
    with pytest.raises(MalformedResponseError):
        decode_response(frame[:-3], MetadataRequest, 12, expected_correlation_id=1)
    with pytest.raises(MalformedResponseError, match="fields take"):
        decode_response(frame + b"\x00", MetadataRequest, 12, expected_correlation_id=1)


@settings(max_examples=300, deadline=None)
@given(
    key=st.sampled_from(sorted(ALL_APIS)),
    data=st.binary(max_size=120),
)
def test_arbitrary_response_bytes_decode_or_raise_a_protocol_error(key: int, data: bytes) -> None:
    spec = ALL_APIS[key]
    with contextlib.suppress(ProtocolError):
        decode_response(data, spec.request, spec.max_version, expected_correlation_id=0)


# -- Raft messages on the wire ---------------------------------------------------------

ids = st.integers(min_value=0, max_value=2**31 - 1)
epochs = st.integers(min_value=0, max_value=2**31 - 1)
offsets = st.integers(min_value=0, max_value=2**62)

raft_requests = st.one_of(
    st.builds(
        raft.VoteRequest, src=ids, dst=ids, epoch=epochs, last_epoch=epochs, last_offset=offsets
    ),
    st.builds(raft.BeginQuorumEpoch, src=ids, dst=ids, epoch=epochs),
    st.builds(
        raft.EndQuorumEpoch,
        src=ids,
        dst=ids,
        epoch=epochs,
        preferred_successors=st.lists(ids, max_size=4).map(tuple),
    ),
    st.builds(
        raft.FetchRequest,
        src=ids,
        dst=ids,
        correlation_id=ids,
        epoch=epochs,
        fetch_offset=offsets,
        last_fetched_epoch=epochs,
    ).filter(lambda m: m.last_fetched_epoch <= m.epoch),
)


def _over_the_wire(message, cluster_id: str = "cluster-a", correlation_id: int = 31):
    """What the receiving node decodes from `message` sent by a RaftTransport."""
    body, version = to_kafka_request(message, "cluster-a")
    request = decode_request(encode_request(body, version, correlation_id, "raft-x")[4:])
    received = from_kafka_request(
        request.header.api_key,
        request.body,
        node_id=message.dst,
        cluster_id=cluster_id,
        correlation_id=request.header.correlation_id,
    )
    return request, received


def _answer_back(request, sent, reply):
    """The reply as the sender's transport decodes it from the receiver's answer."""
    response = to_kafka_response(request.header.api_key, reply, request.version)
    frame = encode_response(request.header, response)
    body = decode_response(
        frame[4:], request.spec.request, request.version, request.header.correlation_id
    )
    return from_kafka_response(sent, body)


@settings(max_examples=200, deadline=None)
@given(message=raft_requests)
def test_every_raft_request_arrives_as_sent(message) -> None:
    _, received = _over_the_wire(message)
    if isinstance(message, raft.FetchRequest):
        # The receiver knows the Kafka correlation id, not the sender's Raft one; the
        # sender's transport restores its own on the answer (below).
        assert received == dataclasses.replace(message, correlation_id=31)
    else:
        assert received == message


payloads = st.one_of(
    st.builds(LeaderChange, leader_id=ids, voters=st.lists(ids, max_size=3).map(tuple)),
    st.builds(TopicRecord, name=st.text(min_size=1, max_size=8), topic_id=st.text(max_size=8)),
)


@st.composite
def replies_to(draw, request):
    src, dst = request.dst, request.src
    leader = draw(st.none() | ids)
    epoch = draw(epochs)
    match request:
        case raft.VoteRequest():
            return raft.VoteResponse(
                src=src, dst=dst, epoch=epoch, granted=draw(st.booleans()), leader_id=leader
            )
        case raft.BeginQuorumEpoch():
            return raft.BeginQuorumEpochResponse(src=src, dst=dst, epoch=epoch, leader_id=leader)
        case raft.EndQuorumEpoch():
            return raft.EndQuorumEpochResponse(src=src, dst=dst, epoch=epoch, leader_id=leader)
    start = draw(st.integers(0, 1000))
    entries = tuple(
        Entry(start + i, draw(st.integers(0, 50)), draw(payloads))
        for i in range(draw(st.integers(0, 3)))
    )
    return raft.FetchResponse(
        src=src,
        dst=dst,
        correlation_id=31,  # the receiver's id; the sender must see its own
        epoch=epoch,
        leader_id=leader,
        error=draw(st.sampled_from(sorted(FETCH_ERRORS))),
        entries=entries,
        high_watermark=draw(offsets),
        diverging=draw(st.none() | st.builds(OffsetAndEpoch, epoch=epochs, offset=offsets)),
    )


@settings(max_examples=200, deadline=None)
@given(data=st.data(), message=raft_requests)
def test_every_raft_reply_reaches_the_sender_as_the_core_wrote_it(data, message) -> None:
    request, received = _over_the_wire(message)
    reply = data.draw(replies_to(received))
    back = _answer_back(request, message, reply)
    if isinstance(message, raft.FetchRequest):
        assert back == dataclasses.replace(reply, correlation_id=message.correlation_id)
    else:
        assert back == reply


def test_fetch_errors_travel_as_kafkas_codes() -> None:
    assert FETCH_ERRORS == {
        raft.FETCH_OK: 0,
        raft.FENCED_LEADER_EPOCH: 74,
        raft.UNKNOWN_LEADER_EPOCH: 75,
        raft.NOT_LEADER: 6,
    }
    fetch = raft.FetchRequest(
        src=1, dst=2, correlation_id=4, epoch=3, fetch_offset=0, last_fetched_epoch=0
    )
    request, _ = _over_the_wire(fetch)
    reply = raft.FetchResponse(
        src=2, dst=1, correlation_id=4, epoch=5, leader_id=3, error=raft.FENCED_LEADER_EPOCH
    )
    answer = to_kafka_response(ApiKey.Fetch, reply, request.version)
    partition = answer.responses[0].partitions[0]
    assert partition.error_code == ErrorCode.FENCED_LEADER_EPOCH
    assert (partition.current_leader.leader_id, partition.current_leader.leader_epoch) == (3, 5)


def _vote(**overrides):
    fields = dict(src=1, dst=2, epoch=3, last_epoch=2, last_offset=5) | overrides
    return raft.VoteRequest(**fields)


def test_requests_for_another_cluster_are_refused_with_inconsistent_cluster_id() -> None:
    with pytest.raises(QuorumWireError) as info:
        _over_the_wire(_vote(), cluster_id="cluster-b")
    assert info.value.code == INCONSISTENT_CLUSTER_ID == 104


@pytest.mark.parametrize(
    "message",
    [
        raft.VoteRequest(src=1, dst=2, epoch=1001, last_epoch=0, last_offset=0),
        raft.BeginQuorumEpoch(src=1, dst=2, epoch=1001),
        raft.EndQuorumEpoch(src=1, dst=2, epoch=1001, preferred_successors=(2,)),
        raft.FetchRequest(
            src=1, dst=2, correlation_id=1, epoch=1, fetch_offset=0, last_fetched_epoch=0
        ),
    ],
    ids=lambda m: type(m).__name__,
)
def test_a_null_cluster_id_is_refused_like_a_wrong_one(message: raft.Message) -> None:
    # Kafka's KafkaRaftClient lets a null through for older senders; every sender here
    # names its cluster, and a null was how a stranger's Vote got granted.
    body, version = to_kafka_request(message, "cluster-b")  # type: ignore[arg-type]
    body.cluster_id = None
    request = decode_request(encode_request(body, version, 1, "stranger")[4:])
    assert request.body.cluster_id is None
    with pytest.raises(QuorumWireError) as info:
        from_kafka_request(request.header.api_key, request.body, node_id=2, cluster_id="cluster-b")
    assert info.value.code == INCONSISTENT_CLUSTER_ID


def test_requests_about_another_partition_or_voter_are_invalid() -> None:
    body, _ = to_kafka_request(_vote(), "c")
    body.topics[0].topic_name = "other"
    with pytest.raises(QuorumWireError) as info:
        from_kafka_request(ApiKey.Vote, body, node_id=2, cluster_id="c")
    assert info.value.code == ErrorCode.INVALID_REQUEST
    body, _ = to_kafka_request(_vote(), "c")
    with pytest.raises(QuorumWireError, match="addressed to voter 2, this is node 3"):
        from_kafka_request(ApiKey.Vote, body, node_id=3, cluster_id="c")


@pytest.mark.parametrize(
    ("fetch_offset", "last_fetched_epoch", "epoch", "max_wait_ms"),
    [(-1, 0, 1, 0), (0, -1, 1, 0), (4, 3, 2, 0), (0, 0, 1, -1)],
)
def test_impossible_fetches_are_invalid(
    fetch_offset: int, last_fetched_epoch: int, epoch: int, max_wait_ms: int
) -> None:
    message = raft.FetchRequest(
        src=1, dst=2, correlation_id=1, epoch=epoch, fetch_offset=0, last_fetched_epoch=0
    )
    body, _ = to_kafka_request(message, "c", fetch_max_wait_ms=max_wait_ms)
    partition = body.topics[0].partitions[0]
    partition.fetch_offset, partition.last_fetched_epoch = fetch_offset, last_fetched_epoch
    with pytest.raises(QuorumWireError) as info:
        from_kafka_request(ApiKey.Fetch, body, node_id=2, cluster_id="c")
    assert info.value.code == ErrorCode.INVALID_REQUEST


@pytest.mark.parametrize("api_key", sorted(QUORUM_APIS))
def test_error_answers_are_no_reply_to_the_core(api_key: int) -> None:
    sent = {
        ApiKey.Vote: _vote(),
        ApiKey.BeginQuorumEpoch: raft.BeginQuorumEpoch(src=1, dst=2, epoch=3),
        ApiKey.EndQuorumEpoch: raft.EndQuorumEpoch(src=1, dst=2, epoch=3, preferred_successors=()),
        ApiKey.Fetch: raft.FetchRequest(
            src=1, dst=2, correlation_id=1, epoch=3, fetch_offset=0, last_fetched_epoch=0
        ),
    }[api_key]
    for code in (INCONSISTENT_CLUSTER_ID, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION):
        answer = quorum_error_response(api_key, QUORUM_APIS[api_key], code)
        assert from_kafka_response(sent, answer) is None


def test_a_fetch_answer_with_corrupt_records_is_no_reply() -> None:
    fetch = raft.FetchRequest(
        src=1, dst=2, correlation_id=1, epoch=3, fetch_offset=0, last_fetched_epoch=0
    )
    reply = raft.FetchResponse(
        src=2,
        dst=1,
        correlation_id=1,
        epoch=3,
        leader_id=2,
        entries=(Entry(0, 3, LeaderChange(2, (1, 2))),),
    )
    answer = to_kafka_response(ApiKey.Fetch, reply, RAFT_FETCH_VERSION)
    assert from_kafka_response(fetch, answer) == reply
    records = bytearray(answer.responses[0].partitions[0].records)
    records[-1] ^= 0xFF  # the CRC no longer matches
    answer.responses[0].partitions[0].records = bytes(records)
    assert from_kafka_response(fetch, answer) is None


# -- inbound handlers ------------------------------------------------------------------


@dataclasses.dataclass
class RecordingEndpoint:
    """A QuorumEndpoint over a real RaftNode that records the order of calls."""

    node: RaftNode
    cluster_id: str = "c"
    calls: list[str] = dataclasses.field(default_factory=list)
    durable: trio.Event = dataclasses.field(default_factory=trio.Event)

    @property
    def node_id(self) -> int:
        return self.node.node_id

    def handle_request(self, message: raft.Message) -> raft.Message:
        self.calls.append(type(message).__name__)
        out = self.node.receive(message, 0)
        return next(m for m in out if m.dst == message.src)

    async def handle_fetch(self, message: raft.FetchRequest, max_wait_ms: int) -> raft.Message:
        self.calls.append(f"fetch waiting up to {max_wait_ms} ms")
        return self.handle_request(message)

    async def sync(self) -> None:
        self.calls.append("sync")
        await self.durable.wait()


def _broker_with(endpoint: QuorumEndpoint | None) -> Broker:
    """A stand-in Broker for the quorum handlers, which read only its `quorum_endpoint`."""
    return cast(Broker, SimpleNamespace(quorum_endpoint=endpoint))


def _context(request, api_key: int) -> RequestContext:
    header = RequestHeader(api_key, QUORUM_APIS[api_key], 8, "raft-1")
    return RequestContext(header, "")


def _voter(node_id: int = 2) -> RaftNode:
    return RaftNode(node_id, {1, 2, 3}, InMemoryRaftLog(), QuorumStateStore(), random.Random(0), 0)


async def test_a_vote_is_answered_only_after_it_is_durable() -> None:
    endpoint = RecordingEndpoint(_voter())
    broker = _broker_with(endpoint)
    body, _ = to_kafka_request(_vote(), "c")
    answer: list[ApiMessage] = []

    async def vote() -> None:
        answer.append(await handle_vote(broker, _context(body, ApiKey.Vote), body))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(vote)
        await trio.testing.wait_all_tasks_blocked()
        assert endpoint.calls == ["VoteRequest", "sync"]
        assert answer == []  # still waiting for the fsync
        endpoint.durable.set()
    [response] = answer
    partition = response.topics[0].partitions[0]
    assert partition.vote_granted and partition.leader_epoch == 3
    assert endpoint.node.quorum.store.read().voted_id == 1


async def test_a_standalone_broker_refuses_quorum_requests() -> None:
    broker = _broker_with(None)
    body, _ = to_kafka_request(_vote(), "c")
    response = await handle_vote(broker, _context(body, ApiKey.Vote), body)
    assert response.error_code == ErrorCode.NOT_CONTROLLER
    begin, _ = to_kafka_request(raft.BeginQuorumEpoch(src=1, dst=2, epoch=1), "c")
    response = await handle_begin_quorum_epoch(
        broker, _context(begin, ApiKey.BeginQuorumEpoch), begin
    )
    assert response.error_code == ErrorCode.NOT_CONTROLLER
    end, _ = to_kafka_request(
        raft.EndQuorumEpoch(src=1, dst=2, epoch=1, preferred_successors=()), "c"
    )
    response = await handle_end_quorum_epoch(broker, _context(end, ApiKey.EndQuorumEpoch), end)
    assert response.error_code == ErrorCode.NOT_CONTROLLER
    fetch, _ = to_kafka_request(
        raft.FetchRequest(
            src=1, dst=2, correlation_id=1, epoch=1, fetch_offset=0, last_fetched_epoch=0
        ),
        "c",
    )
    response = await handle_raft_fetch(None, _context(fetch, ApiKey.Fetch), fetch)
    partition = response.responses[0].partitions[0]
    assert partition.error_code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION


async def test_a_request_from_another_cluster_never_reaches_the_core() -> None:
    endpoint = RecordingEndpoint(_voter(), cluster_id="ours")
    broker = _broker_with(endpoint)
    body, _ = to_kafka_request(_vote(), "theirs")
    response = await handle_vote(broker, _context(body, ApiKey.Vote), body)
    assert response.error_code == INCONSISTENT_CLUSTER_ID
    assert endpoint.calls == []
    assert endpoint.node.quorum.store.read().voted_id is None


# -- three quorum members over the simulated network -----------------------------------

LOOP_CONFIG = RaftConfig(
    election_timeout_ms=300,
    fetch_timeout_ms=600,
    election_backoff_max_ms=300,
    request_timeout_ms=400,
    fetch_interval_ms=30,
)
QUORUM_PORT = 9093
_REPLY_TO = {
    raft.VoteRequest: raft.VoteResponse,
    raft.BeginQuorumEpoch: raft.BeginQuorumEpochResponse,
    raft.EndQuorumEpoch: raft.EndQuorumEpochResponse,
    raft.FetchRequest: raft.FetchResponse,
}


def _now_ms() -> int:
    # round, not int: waking at deadline_ms / 1000 can read as deadline_ms - 0.0000001,
    # and a tick one millisecond early does nothing, so the loop would spin.
    return round(trio.current_time() * 1000)


class Member:
    """A real RaftNode wired to the network only through RaftTransport and the handlers.

    It plays the QuorumDriver's part, no more: timers from `next_deadline_ms`, one sender
    task per peer, replies fed back into the core, inbound requests via `handle_request`.
    """

    def __init__(self, node_id: int, voters: set[int], network: HostNetwork, seed: int) -> None:
        self.node_id = node_id
        self.cluster_id = "quorum-test"
        self.node = RaftNode(
            node_id,
            voters,
            InMemoryRaftLog(),
            QuorumStateStore(),
            random.Random(seed),
            _now_ms(),
            LOOP_CONFIG,
        )
        self.network = network
        self.transport = RaftTransport(
            network,
            node_id,
            self.cluster_id,
            lambda peer: Listener(f"q{peer}", QUORUM_PORT) if peer in voters else None,
            request_timeout_s=LOOP_CONFIG.request_timeout_ms / 1000,
        )
        self.peers = sorted(voters - {node_id})
        self.outboxes: dict[int, trio.MemorySendChannel[raft.Message]] = {}
        self.received: collections.Counter[str] = collections.Counter()
        self.syncs = 0
        self.fetch_waits: set[int] = set()
        self._changed = trio.Event()

    # QuorumEndpoint
    def handle_request(self, message: raft.Message) -> raft.Message:
        self.received[type(message).__name__] += 1
        out = self.node.receive(message, _now_ms())
        reply_type = _REPLY_TO[type(message)]
        reply = next(m for m in out if m.dst == message.src and isinstance(m, reply_type))
        self._dispatch([m for m in out if m is not reply])
        return reply

    async def handle_fetch(self, message: raft.FetchRequest, max_wait_ms: int) -> raft.Message:
        # Answers at once; long-polling is the QuorumDriver's business, not the wire's.
        self.fetch_waits.add(max_wait_ms)
        return self.handle_request(message)

    async def sync(self) -> None:
        self.syncs += 1  # the in-memory log and store are durable as written
        await trio.lowlevel.checkpoint()

    def _dispatch(self, messages: list[raft.Message]) -> None:
        """Send what the core produced outside the timer loop, and wake the loop: the
        core's deadlines may have moved."""
        self._send(messages)
        self._changed.set()

    def _send(self, messages: list[raft.Message]) -> None:
        for message in messages:
            # A full queue drops the message: the core resends on its timers.
            with contextlib.suppress(trio.WouldBlock):
                self.outboxes[message.dst].send_nowait(message)

    def resign(self) -> None:
        self._dispatch(self.node.resign(_now_ms()))

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._serve)
            for peer in self.peers:
                send, receive = trio.open_memory_channel[raft.Message](16)
                self.outboxes[peer] = send
                nursery.start_soon(self._sender, receive)
            while True:
                with trio.move_on_at(self.node.next_deadline_ms() / 1000):
                    await self._changed.wait()
                self._changed = trio.Event()
                self._send(self.node.tick(_now_ms()))

    async def _sender(self, outbox) -> None:
        async for message in outbox:
            reply = await self.transport.send(message)
            if reply is not None:
                self._dispatch(self.node.receive(reply, _now_ms()))

    async def _serve(self) -> None:
        [listener] = await self.network.listen(f"q{self.node_id}", QUORUM_PORT)
        broker = _broker_with(self)
        handlers = {
            ApiKey.Vote: handle_vote,
            ApiKey.BeginQuorumEpoch: handle_begin_quorum_epoch,
            ApiKey.EndQuorumEpoch: handle_end_quorum_epoch,
        }

        async def connection(stream: trio.abc.Stream) -> None:
            decoder = FrameDecoder(1 << 20)
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                async with stream:
                    while (frame := await receive_frame(stream, decoder)) is not None:
                        request = decode_request(frame)
                        ctx = RequestContext(request.header, "")
                        if request.header.api_key == ApiKey.Fetch:
                            answer = await handle_raft_fetch(self, ctx, request.body)
                        else:
                            handler = handlers[request.header.api_key]
                            answer = await handler(broker, ctx, request.body)
                        await stream.send_all(encode_response(request.header, answer))

        await trio.serve_listeners(connection, [listener])


async def _eventually(predicate, what: str, within_s: float = 30) -> None:
    with trio.move_on_after(within_s):
        while not predicate():
            await trio.sleep(0.01)
        return
    raise AssertionError(f"not within {within_s}s (virtual): {what}")


def _ready_leader(members: list[Member]) -> Member | None:
    ready = [m for m in members if m.node.is_ready_leader]
    return max(ready, key=lambda m: m.node.epoch) if ready else None


def _committed(member: Member) -> list[object]:
    return [
        e.payload for e in member.node.committed_entries() if isinstance(e.payload, TopicRecord)
    ]


@pytest.mark.parametrize("seed", [7, 8, 9])
async def test_three_members_elect_replicate_fail_over_and_converge_over_kafkas_wire(
    seed: int, autojump_clock: trio.testing.MockClock
) -> None:
    fabric = SimNetwork(random.Random(seed), base_latency_ms=1)
    voters = {1, 2, 3}
    members = [
        Member(i, voters, fabric.incarnate(f"q{i}"), seed=seed * 10 + i) for i in sorted(voters)
    ]
    async with trio.open_nursery() as nursery:
        for member in members:
            nursery.start_soon(member.run)

        # An election: one leader, which commits its LeaderChange with a majority.
        await _eventually(lambda: _ready_leader(members) is not None, "a leader is elected")
        first = _ready_leader(members)
        assert first is not None
        assert sum(m.node.is_leader for m in members) == 1

        # Replication: a proposal commits on every member through Fetch.
        created = TopicRecord("orders", "id-1")
        first.node.propose(created)
        await _eventually(
            lambda: all(_committed(m) == [created] for m in members),
            "the record commits everywhere",
        )

        # Fail-over: the leader is cut off; what it appends alone never commits, the other
        # two elect a leader of a newer epoch and commit without it.
        others = [m for m in members if m is not first]
        for other in others:
            fabric.block(f"q{first.node_id}", f"q{other.node_id}")
            fabric.block(f"q{other.node_id}", f"q{first.node_id}")
        stranded = TopicRecord("stranded", "id-x")
        first.node.propose(stranded)
        await _eventually(
            lambda: (
                (leader := _ready_leader(others)) is not None
                and leader.node.epoch > first.node.epoch
            ),
            "the majority side elects a new leader",
        )
        second = _ready_leader(others)
        assert second is not None
        later = TopicRecord("payments", "id-2")
        second.node.propose(later)
        await _eventually(
            lambda: all(_committed(m) == [created, later] for m in others),
            "the majority side commits",
        )

        assert stranded in [e.payload for e in first.node.log.read(0, 1000)]

        # Heal: the old leader truncates its stranded entry by the diverging epoch the
        # new leader sends, and converges to the committed log.
        fabric.heal()
        await _eventually(
            lambda: (
                [e for e in first.node.log.read(0, 1000)] == second.node.log.read(0, 1000)
                and _committed(first) == [created, later]
            ),
            "the old leader converges",
        )
        assert stranded not in [e.payload for e in first.node.log.read(0, 1000)]

        # Graceful hand-over: EndQuorumEpoch travels and another member takes over.
        epoch = second.node.epoch
        second.resign()
        await _eventually(
            lambda: (leader := _ready_leader(members)) is not None and leader.node.epoch > epoch,
            "a successor is elected after the resignation",
        )
        nursery.cancel_scope.cancel()

    for member in members:
        await member.transport.aclose()
        # Every inbound request was made durable before it was answered.
        assert member.syncs == sum(member.received.values())
    for kind in ("VoteRequest", "BeginQuorumEpoch", "FetchRequest", "EndQuorumEpoch"):
        assert sum(m.received[kind] for m in members) > 0, f"no {kind} was delivered"
    # Fetches ask to be held a quarter of the 400 ms request timeout (Kafka: 500 of 2000).
    assert set().union(*(m.fetch_waits for m in members)) == {100}
    logs = [m.node.committed_entries() for m in members]
    shortest = min(len(log) for log in logs)
    assert all(log[:shortest] == logs[0][:shortest] for log in logs)


async def test_transport_answers_none_for_unreachable_peers_and_follows_address_changes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fabric = SimNetwork(random.Random(1), base_latency_ms=1)
    voters = {1, 2, 3}
    peer2 = Member(2, voters, fabric.incarnate("q2"), seed=2)
    peer3 = Member(3, voters, fabric.incarnate("q3"), seed=3)
    addresses = {2: Listener("q2", 9999), 3: Listener("q3", QUORUM_PORT)}
    transport = RaftTransport(
        fabric.incarnate("q1"), 1, "quorum-test", addresses.get, request_timeout_s=0.4
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(peer2._serve)
        nursery.start_soon(peer3._serve)
        await trio.testing.wait_all_tasks_blocked()

        assert await transport.send(_vote(src=1, dst=4, epoch=1)) is None  # no address
        assert await transport.send(_vote(src=1, dst=2, epoch=1)) is None  # refused
        addresses[2] = Listener("q2", QUORUM_PORT)  # the peer moved
        reply = await transport.send(_vote(src=1, dst=2, epoch=1))
        assert reply == raft.VoteResponse(src=2, dst=1, epoch=1, granted=True, leader_id=None)

        # A silent peer costs its own sender the request timeout and nobody else anything.
        fabric.block("q3", "q1")
        answered: dict[int, float] = {}

        async def ask(peer: int) -> None:
            started = trio.current_time()
            result = await transport.send(_vote(src=1, dst=peer, epoch=2))
            answered[peer] = trio.current_time() - started
            assert (result is None) == (peer == 3)

        async with trio.open_nursery() as senders:
            senders.start_soon(ask, 3)
            senders.start_soon(ask, 2)
        assert answered[2] < 0.05
        assert answered[3] == pytest.approx(0.4)

        await transport.aclose()
        assert await transport.send(_vote(src=1, dst=2, epoch=3)) is None
        nursery.cancel_scope.cancel()


async def test_a_raft_fetch_reaches_the_endpoint_with_the_senders_max_wait() -> None:
    leader = _voter(1)
    endpoint = RecordingEndpoint(leader)
    endpoint.durable.set()
    fetch = raft.FetchRequest(
        src=2, dst=1, correlation_id=1, epoch=0, fetch_offset=0, last_fetched_epoch=0
    )
    body, _ = to_kafka_request(fetch, "c", fetch_max_wait_ms=250)
    response = await handle_raft_fetch(endpoint, _context(body, ApiKey.Fetch), body)
    assert endpoint.calls == ["fetch waiting up to 250 ms", "FetchRequest", "sync"]
    # Not the leader of anything yet: the core's NOT_LEADER, as Kafka's code.
    assert response.responses[0].partitions[0].error_code == ErrorCode.NOT_LEADER_OR_FOLLOWER


def test_the_fetch_wait_leaves_room_in_the_request_timeout() -> None:
    def transport(timeout_s: float, **kw) -> RaftTransport:
        network = SimNetwork(random.Random(0)).incarnate("q1")
        return RaftTransport(network, 1, "c", lambda _: None, timeout_s, **kw)

    assert transport(2.0).fetch_max_wait_ms == 500  # Kafka's defaults
    assert transport(0.4).fetch_max_wait_ms == 100
    assert transport(2.0, fetch_max_wait_ms=0).fetch_max_wait_ms == 0
    with pytest.raises(ValueError, match="would outlast the 2000 ms request timeout"):
        transport(2.0, fetch_max_wait_ms=2000)
