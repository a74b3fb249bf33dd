"""Requests corrupted field by field, for every API and version the broker decodes, never
reach a handler and never write anything.

The requests come from the message schemas (`tests/request_strategies.py`): a valid value
tree per (API, version), then one defect: a null where the field is not nullable, a
negative or oversized length, a string that is not UTF-8, a field of the wrong type, a cut
body or a version out of range (-1 among them). One broker process takes every example
over TCP. For each: an error response (UNSUPPORTED_VERSION or INVALID_REQUEST, or the
empty response of an API without a top-level error code) or a closed connection; a fresh
connection still gets ApiVersions; no topic appeared or vanished and no log end offset
moved; the broker's log holds no traceback.

A wrong-type field shifts the rest of the body, which may by chance read as another
well-formed request; for those only the last two properties are asserted.
"""

from __future__ import annotations

import struct
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kafka.protocol.api_key import ApiKey
from kafka.protocol.consumer import ListOffsetsRequest
from kafka.protocol.metadata import ApiVersionsRequest, MetadataRequest

from harness.broker_process import BrokerProcess, start_broker
from reference_broker.protocol import ApiSpec, decode_request
from tests.request_strategies import (
    SUPPORTED,
    TOPIC,
    CorruptedRequest,
    corrupted_requests,
    encode_body,
    message_schema,
    request_header,
    request_values,
)
from tests.test_real_clients import create_topic
from tests.wire import ConnectionClosedError, WireClient

INVALID_REQUEST = 42
UNSUPPORTED_VERSION = 35
LOG_ALARMS = ("Traceback", "unexpected error")


@dataclass
class FuzzBroker:
    """The broker process and how far its log has been checked."""

    process: BrokerProcess
    log_checked: int = 0

    def new_log_alarms(self) -> list[str]:
        """Lines written to the broker's log since the last call that report a crash."""
        data = self.process.log_path.read_bytes()
        fresh = data[self.log_checked :].decode(errors="replace")
        self.log_checked = len(data)
        return [line for line in fresh.splitlines() if any(a in line for a in LOG_ALARMS)]


def start_fuzz_broker(root: Path) -> FuzzBroker:
    """A broker with one single-partition topic that the generated requests name."""
    process = start_broker(
        root / "data",
        settings={"num.partitions": 1, "auto.create.topics.enable": True},
        log_path=root / "broker.log",
    )
    create_topic(process.bootstrap, TOPIC, partitions=1)
    return FuzzBroker(process)


@pytest.fixture(scope="module")
def fuzz_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzBroker]:
    """One broker for every example of this module."""
    broker = start_fuzz_broker(tmp_path_factory.mktemp("request-fuzz"))
    yield broker
    broker.process.terminate()


# -- observing the broker -----------------------------------------------------------------


def log_end_offsets(broker: BrokerProcess) -> dict[tuple[str, int], int]:
    """Every partition the broker knows, with its log end offset."""
    with WireClient(broker.host, broker.port, timeout_s=10) as client:
        metadata = client.request(
            MetadataRequest(topics=None, allow_auto_topic_creation=False), version=1
        )
        partitions = [(t.name, p.partition_index) for t in metadata.topics for p in t.partitions]
        if not partitions:
            return {}
        topics: dict[str, list[int]] = {}
        for name, index in partitions:
            topics.setdefault(name, []).append(index)
        request = ListOffsetsRequest(
            replica_id=-1,
            topics=[
                ListOffsetsRequest.ListOffsetsTopic(
                    name=name,
                    partitions=[
                        ListOffsetsRequest.ListOffsetsTopic.ListOffsetsPartition(
                            partition_index=i, timestamp=-1
                        )
                        for i in indexes
                    ],
                )
                for name, indexes in topics.items()
            ],
        )
        answer = client.request(request, version=1)
    return {(t.name, p.partition_index): p.offset for t in answer.topics for p in t.partitions}


def still_serving(broker: BrokerProcess) -> None:
    """A fresh connection gets a well-formed ApiVersions answer."""
    assert broker.process.poll() is None, "the broker process died"
    with WireClient(broker.host, broker.port, timeout_s=10) as client:
        assert client.request(ApiVersionsRequest(), version=0).error_code == 0


# How long a shifted (wrong-type) body that reads as a valid request may go unanswered: it
# may be a Fetch long-polling for up to its max_wait_ms, or an acks=0 Produce that gets
# no answer at all, both as Kafka serves them.
STILL_SERVING_S = 1.0


def exchange(broker: BrokerProcess, frame: bytes, *, strict: bool = True) -> bytes | None:
    """Send one frame on a fresh connection; its answer, or None if the broker closed it
    (or, for a non-`strict` request, is still serving it after STILL_SERVING_S)."""
    with WireClient(broker.host, broker.port, timeout_s=10 if strict else STILL_SERVING_S) \
            as client:
        client.send_raw(frame)
        try:
            return client.read_frame()
        except (ConnectionClosedError, ConnectionResetError):
            return None
        except TimeoutError:
            if strict:
                raise
            return None


def error_of(spec: ApiSpec, version: int, correlation_id: int, answer: bytes) -> str | None:
    """Why `answer` is not an error response to the request, or None if it is one.

    An error response carries UNSUPPORTED_VERSION or INVALID_REQUEST in its top-level error
    code; an API without one (Produce, Fetch before v7) answers with no partitions at all.
    ApiVersions answers an unsupported version with its v0 fallback.
    """
    (got_correlation,) = struct.unpack_from(">i", answer)
    if got_correlation != correlation_id:
        return f"correlation id {got_correlation}, sent {correlation_id}"
    if spec.key == ApiKey.ApiVersions:
        # Its error code leads the body at every version (and kafka-python reads every
        # ApiVersions error response as v0, where Kafka's clients try the version first).
        (code,) = struct.unpack_from(">h", answer, 4)
        return None if code in (INVALID_REQUEST, UNSUPPORTED_VERSION) else f"error code {code}"
    response_class = spec.response
    tagged_header = response_class.flexible_version_q(version) and spec.key != ApiKey.ApiVersions
    body = response_class.decode(answer[4 + tagged_header :], version=version)
    error_field = response_class.fields.get("error_code")
    if error_field is not None and error_field.for_version_q(version):
        if body.error_code in (INVALID_REQUEST, UNSUPPORTED_VERSION):
            return None
        return f"error code {body.error_code}"
    filled = [
        f.name
        for f in response_class.fields.values()
        if f.for_version_q(version) and f.is_array() and getattr(body, f.name)
    ]
    return f"a response with content in {filled}" if filled else None


# -- the property -------------------------------------------------------------------------


def check_corrupted(broker: FuzzBroker, request: CorruptedRequest, tally: Counter[str]) -> None:
    """Send one corrupted request and assert everything the module docstring promises."""
    process = broker.process
    before = log_end_offsets(process) if request.strict else {}
    answer = exchange(process, request.frame, strict=request.strict)
    tally["answered" if answer is not None else "closed"] += 1
    tally["strict" if request.strict else "wrong-type"] += 1
    what = f"{request.spec.key.name} v{request.version}, {request.description}"
    still_serving(process)
    alarms = broker.new_log_alarms()
    assert not alarms, f"{what}: the broker logged {alarms[:3]}"
    if not request.strict:
        return
    if answer is not None:
        problem = error_of(request.spec, request.version, request.correlation_id, answer)
        assert problem is None, f"{what}: answered with {problem}, not an error"
    after = log_end_offsets(process)
    assert after == before, f"{what}: topics or log end offsets changed: {before} -> {after}"


def run_fuzz(broker: FuzzBroker, examples: int) -> Counter[str]:
    """`examples` corrupted requests through `check_corrupted`; returns what happened."""
    tally: Counter[str] = Counter()

    @settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(request=corrupted_requests())
    def fuzz(request: CorruptedRequest) -> None:
        tally["cases"] += 1
        tally[f"api:{request.spec.key.name}"] += 1
        check_corrupted(broker, request, tally)

    fuzz()
    alarms = broker.new_log_alarms()
    assert not alarms, f"the broker logged {alarms[:3]}"
    return tally


def report(name: str, tally: Counter[str]) -> None:
    """Print how many cases ran (pytest -s shows it) for the record."""
    apis = sum(1 for key in tally if key.startswith("api:"))
    print(
        f"\n{name}: {tally['cases']} fuzz cases over {apis} APIs "
        f"({tally['strict']} strict, {tally['wrong-type']} wrong-type; "
        f"{tally['answered']} answered, {tally['closed']} closed)"
    )


def test_corrupted_requests_get_an_error_and_change_nothing(fuzz_broker: FuzzBroker) -> None:
    """The default-suite run: a moderate number of corrupted requests."""
    tally = run_fuzz(fuzz_broker, examples=400)
    report("request fuzz (default)", tally)
    assert tally["cases"] >= 300


@pytest.mark.slow
def test_many_corrupted_requests_get_an_error_and_change_nothing(fuzz_broker: FuzzBroker) -> None:
    """The soak: many more examples against the same broker."""
    tally = run_fuzz(fuzz_broker, examples=5000)
    report("request fuzz (slow)", tally)
    assert tally["cases"] >= 4000


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_generated_requests_are_well_formed_before_corruption(data: st.DataObject) -> None:
    """Without a defect, every generated request decodes whole, through the broker's checks
    and kafka-python's decoder: the defect is what the broker refuses, not the generator."""
    spec, version = data.draw(st.sampled_from(SUPPORTED), label="api, version")
    schema = message_schema(spec.request, version)
    values = data.draw(request_values(schema), label="values")
    body, _ = encode_body(schema, values)
    head = request_header(spec.key, version, 7, spec.flexible(version))
    request = decode_request(head + body)
    assert request.spec is spec and request.version == version
    flexible = spec.flexible(version)
    decoder = spec.request._struct.compiled_decode_from(
        version, compact=flexible, tagged=flexible, data_class=spec.request[None]
    )
    assert decoder(memoryview(body), 0)[1] == len(body)
