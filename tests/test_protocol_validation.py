"""`reference_broker.protocol.validation` on bytes: the schema rules Kafka's generated readers
enforce and kafka-python's decoders do not."""

from __future__ import annotations

import struct

import pytest
from kafka.protocol.api_key import ApiKey
from kafka.protocol.metadata import MetadataRequest

from reference_broker.protocol import SUPPORTED_APIS
from reference_broker.protocol.validation import InvalidBodyError, check_body
from tests.request_strategies import default_values, encode_body, message_schema


def test_null_where_nullable_passes_and_names_the_field_where_not() -> None:
    """Metadata v1 topics may be null (all topics); Metadata v0 topics may not."""
    null = struct.pack(">i", -1)
    assert check_body(MetadataRequest, 1, null) == 4
    with pytest.raises(InvalidBodyError, match=r"^topics: non-nullable field was serialized"):
        check_body(MetadataRequest, 0, null)


def test_the_error_names_the_nested_field() -> None:
    """A null partition list in the first topic of a Produce v3 names topic_data[0]."""
    spec = SUPPORTED_APIS[ApiKey.Produce]
    schema = message_schema(spec.request, 3)
    values = default_values(schema.fields)
    values["TopicData"][0]["PartitionData"] = None
    body, _ = encode_body(schema, values)
    with pytest.raises(InvalidBodyError, match=r"^topic_data\[0\]\.partition_data: non-nullable"):
        check_body(spec.request, 3, body)


def test_negative_counts_below_minus_one_are_refused_even_where_null_is_allowed() -> None:
    """kafka-python would read a count of -2 as an empty list, which Kafka reads as null."""
    with pytest.raises(InvalidBodyError, match="negative count -2"):
        check_body(MetadataRequest, 1, struct.pack(">i", -2))


def test_counts_beyond_the_frame_are_refused_before_any_element_is_read() -> None:
    """A count of 2^31-1 with three bytes left would have the decoder loop that long."""
    with pytest.raises(InvalidBodyError, match="2147483647 elements"):
        check_body(MetadataRequest, 1, struct.pack(">i", 2**31 - 1) + b"abc")


def test_flexible_varints_longer_than_five_bytes_are_refused() -> None:
    """Kafka's readUnsignedVarint gives up after five bytes."""
    with pytest.raises(InvalidBodyError, match="longer than 5 bytes"):
        check_body(MetadataRequest, 12, b"\xff" * 6)


def test_tagged_fields_out_of_order_are_refused() -> None:
    """Fetch v12's tagged section with tag 3 before tag 1."""
    spec = SUPPORTED_APIS[ApiKey.Fetch]
    schema = message_schema(spec.request, 12)
    values = default_values(schema.fields)
    del values["ClusterId"]  # the one tagged field: leave the tagged section empty
    body, _ = encode_body(schema, values)
    assert body[-1] == 0  # an empty tagged section closes the body
    bad = body[:-1] + bytes([2, 3, 0, 1, 0])
    with pytest.raises(InvalidBodyError, match="out of order"):
        check_body(spec.request, 12, bad)
