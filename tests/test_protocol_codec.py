"""Requests encoded by kafka-python decode at every served version; responses round-trip."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka.protocol.api_key import ApiKey
from kafka.protocol.metadata import ApiVersionsRequest, ApiVersionsResponse, MetadataRequest
from kafka.protocol.producer import ProduceRequest, ProduceResponse

from reference_broker.errors import ErrorCode
from reference_broker.protocol import (
    SUPPORTED_APIS,
    MalformedRequestError,
    ProtocolError,
    UnknownApiError,
    UnsupportedVersionError,
    api_versions_response,
    decode_request,
    encode_response,
    error_response,
    unsupported_api_versions_frame,
)

SERVED = [
    (spec, v)
    for spec in SUPPORTED_APIS.values()
    for v in range(spec.min_version, spec.max_version + 1)
]


def _request_bytes(request, version: int, correlation_id: int = 42) -> bytes:
    request.with_header(correlation_id=correlation_id, client_id="codec-test")
    return bytes(request.encode(version=version, header=True))


@pytest.mark.parametrize(("spec", "version"), SERVED, ids=lambda x: getattr(x, "key", x))
def test_every_served_version_decodes_a_default_request(spec, version: int) -> None:
    request = spec.request(version=version)
    decoded = decode_request(_request_bytes(request, version, correlation_id=version + 7))
    assert decoded.spec is spec
    assert decoded.header.api_version == version
    assert decoded.header.correlation_id == version + 7
    assert decoded.header.client_id == "codec-test"
    assert decoded.body.to_dict() == request.to_dict()


@pytest.mark.parametrize("version", [3, 8, 9])
def test_produce_records_reach_the_handler_as_the_clients_bytes(version: int) -> None:
    topic = ProduceRequest.TopicProduceData
    request = ProduceRequest(
        version=version,
        transactional_id=None,
        acks=-1,
        timeout_ms=1500,
        topic_data=[
            topic(
                name="t", partition_data=[topic.PartitionProduceData(index=2, records=b"\x00raw")]
            )
        ],
    )
    decoded = decode_request(_request_bytes(request, version))
    assert decoded.body.acks == -1
    assert decoded.body.topic_data[0].partition_data[0].records == b"\x00raw"


@pytest.mark.parametrize("version", [0, 8, 9, 12])
def test_responses_decode_with_kafka_pythons_client_side_parser(version: int) -> None:
    decoded = decode_request(_request_bytes(MetadataRequest(version=version, topics=[]), version))
    response = error_response(decoded.spec, version, ErrorCode.NONE)
    frame = encode_response(decoded.header, response)
    assert int.from_bytes(frame[:4], "big") == len(frame) - 4
    parsed = decoded.spec.response.decode(frame[4:], version=version, header=True)
    assert parsed.header.correlation_id == 42


@pytest.mark.parametrize(("spec", "version"), SERVED, ids=lambda x: getattr(x, "key", x))
def test_response_frames_are_byte_identical_to_kafka_pythons_own_encoding(
    spec, version: int
) -> None:
    decoded = decode_request(_request_bytes(spec.request(version=version), version, 1234567))
    response = error_response(spec, version, ErrorCode.NOT_CONTROLLER)
    frame = encode_response(decoded.header, response)
    response.with_header(correlation_id=1234567)
    assert frame == bytes(response.encode(header=True, framed=True))


def test_api_versions_lists_every_served_api() -> None:
    response = api_versions_response(3)
    frame = encode_response(
        decode_request(_request_bytes(ApiVersionsRequest(version=3), 3)).header, response
    )
    parsed = ApiVersionsResponse.decode(frame[4:], version=3, header=True)
    served = {k.api_key: (k.min_version, k.max_version) for k in parsed.api_keys}
    assert served == {int(s.key): (s.min_version, s.max_version) for s in SUPPORTED_APIS.values()}
    # What the three clients need for idempotent produce and headers.
    assert served[ApiKey.Produce][1] >= 3 and served[ApiKey.Fetch][1] >= 4
    assert ApiKey.InitProducerId in served


def test_too_new_api_versions_gets_a_v0_error_with_the_ranges() -> None:
    header_only = _request_bytes(ApiVersionsRequest(version=4), 4)
    with pytest.raises(UnsupportedVersionError) as info:
        decode_request(header_only)
    frame = unsupported_api_versions_frame(info.value.header)
    parsed = ApiVersionsResponse.decode(frame[4:], version=0, header=True)
    assert parsed.error_code == ErrorCode.UNSUPPORTED_VERSION
    assert len(parsed.api_keys) == len(SUPPORTED_APIS)


def test_unknown_api_key_is_reported_with_its_header() -> None:
    frame = (
        (9999).to_bytes(2, "big") + (0).to_bytes(2, "big") + (5).to_bytes(4, "big") + b"\xff\xff"
    )
    with pytest.raises(UnknownApiError) as info:
        decode_request(frame)
    assert info.value.header.correlation_id == 5


def test_truncated_body_is_malformed_but_keeps_the_header() -> None:
    request = MetadataRequest(version=1, topics=["abc"])
    data = _request_bytes(request, 1)
    with pytest.raises(MalformedRequestError) as info:
        decode_request(data[:-2])
    assert info.value.header.correlation_id == 42
    assert info.value.spec.key == ApiKey.Metadata


def test_unreadable_header_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        decode_request(b"\x00\x03")


def test_error_response_sets_the_top_level_error_where_the_schema_has_one() -> None:
    response = error_response(SUPPORTED_APIS[ApiKey.JoinGroup], 5, ErrorCode.INVALID_REQUEST)
    assert response.error_code == ErrorCode.INVALID_REQUEST
    produce = error_response(SUPPORTED_APIS[ApiKey.Produce], 9, ErrorCode.INVALID_REQUEST)
    assert isinstance(produce, ProduceResponse) and produce.responses == []


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=200))
def test_arbitrary_bytes_decode_or_raise_a_protocol_error(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        decode_request(data)


@settings(max_examples=300, deadline=None)
@given(
    spec_version=st.sampled_from(SERVED),
    cut=st.integers(min_value=0, max_value=64),
    flips=st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), max_size=4),
)
def test_mutated_valid_requests_decode_or_raise_a_protocol_error(
    spec_version, cut: int, flips: list[tuple[int, int]]
) -> None:
    spec, version = spec_version
    data = bytearray(_request_bytes(spec.request(version=version), version))
    for position, value in flips:
        data[position % len(data)] = value
    data = data[: max(len(data) - cut, 0)]
    try:
        decoded = decode_request(bytes(data))
    except ProtocolError:
        return
    # Whatever decodes is dispatchable: a served API at a served version.
    assert decoded.spec.key == decoded.header.api_key
    assert decoded.spec.supports(decoded.header.api_version)
