"""The inter-broker wire: controller API schemas, the outgoing codec, Raft over Kafka messages.

Schemas are checked byte for byte against encodings written out by hand from Kafka's
message definitions, so a field out of order or of the wrong type cannot pass just
because kafka-python decodes what it encoded.
"""

from __future__ import annotations

import contextlib
import struct
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka.protocol.api_key import ApiKey
from kafka.protocol.metadata import ApiVersionsRequest, ApiVersionsResponse, MetadataRequest

from reference_broker.errors import ErrorCode
from reference_broker.protocol import (
    ALL_APIS,
    CONTROLLER_APIS,
    SUPPORTED_APIS,
    MalformedResponseError,
    ProtocolError,
    api_versions_response,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
    error_response,
)
from reference_broker.protocol.controller_apis import (
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
    assert {int(k) for k in CONTROLLER_APIS} == {52, 53, 54, 56, 62, 63}
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
    assert body.error_code == ErrorCode.NOT_CONTROLLER


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
