"""The two reported ways to crash a connection handler, and the schema checks that stop them.

- A request at version -1 (of any API) made the broker raise while building an
  UNSUPPORTED_VERSION answer it has no schema for; now the connection closes quietly, as
  Kafka's does, and ApiVersions -1 gets Kafka's v0 fallback.
- A null array or string where the schema does not allow one reached thirteen handlers and
  ended in TypeError/AttributeError; now every such field, at every version those APIs
  serve, is answered INVALID_REQUEST before any handler runs, and nothing is written.

Both run against a real broker process over TCP, whose log must stay free of tracebacks.
"""

from __future__ import annotations

import struct

import pytest
from kafka.protocol.api_key import ApiKey

from reference_broker.protocol import SUPPORTED_APIS
from tests.request_strategies import (
    TOPIC,
    Corruption,
    CorruptionKind,
    default_values,
    encode_body,
    framed,
    message_schema,
    request_header,
)
from tests.test_request_fuzz import (
    FuzzBroker,
    error_of,
    exchange,
    fuzz_broker,
    log_end_offsets,
    still_serving,
)

__all__ = ["fuzz_broker"]  # the module-scoped broker fixture, shared with the fuzz module

NULL_CRASHED = [
    ApiKey.Produce,
    ApiKey.Fetch,
    ApiKey.ListOffsets,
    ApiKey.OffsetCommit,
    ApiKey.OffsetFetch,
    ApiKey.JoinGroup,
    ApiKey.SyncGroup,
    ApiKey.DescribeGroups,
    ApiKey.CreateTopics,
    ApiKey.DeleteTopics,
    ApiKey.OffsetForLeaderEpoch,
    ApiKey.DescribeConfigs,
    ApiKey.DeleteGroups,
]
"""The APIs whose handlers the reported null fields crashed."""


@pytest.mark.parametrize(
    "key",
    [ApiKey.Produce, ApiKey.Fetch, ApiKey.Metadata, ApiKey.ListOffsets, ApiKey.JoinGroup,
     ApiKey.CreateTopics, ApiKey.DeleteGroups],
    ids=lambda key: key.name,
)  # fmt: skip
def test_version_minus_one_closes_the_connection_quietly(
    fuzz_broker: FuzzBroker, key: ApiKey
) -> None:
    """No response schema exists at v-1: the broker closes, logs no traceback, serves on."""
    spec = SUPPORTED_APIS[key]
    schema = message_schema(spec.request, spec.max_version)
    body, _ = encode_body(schema, default_values(schema.fields))
    fuzz_broker.new_log_alarms()
    answer = exchange(fuzz_broker.process, framed(request_header(key, -1, 5, False) + body))
    assert answer is None, f"{key.name} v-1 was answered: {answer!r}"
    still_serving(fuzz_broker.process)
    assert fuzz_broker.new_log_alarms() == []


def test_api_versions_minus_one_gets_the_v0_fallback(fuzz_broker: FuzzBroker) -> None:
    """Kafka answers an ApiVersions version it does not serve with v0 and UNSUPPORTED_VERSION."""
    fuzz_broker.new_log_alarms()
    answer = exchange(fuzz_broker.process, framed(request_header(ApiKey.ApiVersions, -1, 9, False)))
    assert answer is not None
    correlation_id, error_code = struct.unpack_from(">ih", answer)
    assert (correlation_id, error_code) == (9, 35)
    assert fuzz_broker.new_log_alarms() == []


def null_cases(key: ApiKey) -> list[tuple[int, str, bytes, int]]:
    """(version, field path, frame, correlation id) for every non-nullable array or string
    of `key`'s requests, nested ones included, at every version the broker serves."""
    spec = SUPPORTED_APIS[key]
    cases = []
    correlation_id = 100
    for version in range(spec.min_version, spec.max_version + 1):
        schema = message_schema(spec.request, version)
        values = default_values(schema.fields)
        _, sites = encode_body(schema, values)
        for site in sites:
            if CorruptionKind.NULL not in site.kinds:
                continue
            body, _ = encode_body(schema, values, Corruption(site.index, CorruptionKind.NULL))
            correlation_id += 1
            head = request_header(key, version, correlation_id, spec.flexible(version))
            cases.append((version, site.path, framed(head + body), correlation_id))
    return cases


@pytest.mark.parametrize("key", NULL_CRASHED, ids=lambda key: key.name)
def test_null_in_a_non_nullable_field_is_an_invalid_request(
    fuzz_broker: FuzzBroker, key: ApiKey
) -> None:
    """Every null where the schema forbids one gets INVALID_REQUEST (or, for an API without a
    top-level error code, an empty answer); nothing is written and nothing is logged."""
    spec = SUPPORTED_APIS[key]
    cases = null_cases(key)
    assert len(cases) >= spec.max_version - spec.min_version + 1
    before = log_end_offsets(fuzz_broker.process)
    fuzz_broker.new_log_alarms()
    wrong = []
    for version, path, frame, correlation_id in cases:
        answer = exchange(fuzz_broker.process, frame)
        if answer is None:
            wrong.append(f"v{version} null {path}: connection closed")
            continue
        problem = error_of(spec, version, correlation_id, answer)
        if problem is not None:
            wrong.append(f"v{version} null {path}: {problem}")
    alarms = fuzz_broker.new_log_alarms()
    assert not wrong and not alarms, (
        f"{len(wrong)} of {len(cases)} cases wrong: {wrong[:8]}; broker log: {alarms[:2]}"
    )
    assert log_end_offsets(fuzz_broker.process) == before


def test_the_same_produce_without_the_null_writes(fuzz_broker: FuzzBroker) -> None:
    """The control for 'nothing is written': the generated Produce, intact, appends."""
    spec = SUPPORTED_APIS[ApiKey.Produce]
    schema = message_schema(spec.request, 9)
    values = default_values(schema.fields) | {"Acks": -1, "TimeoutMs": 10_000}
    body, _ = encode_body(schema, values)
    before = log_end_offsets(fuzz_broker.process)[(TOPIC, 0)]
    answer = exchange(fuzz_broker.process, framed(request_header(0, 9, 3, True) + body))
    assert answer is not None
    assert log_end_offsets(fuzz_broker.process)[(TOPIC, 0)] == before + 1
