"""Malformed Kafka frames never crash the broker, never make it allocate what the attacker
asks for, and never corrupt its log.

One broker process (socket.request.max.bytes = 1 MiB) takes every hypothesis example: random
bytes, bad length prefixes, unknown API keys and versions, truncated bodies, byte-flipped
requests and garbage record batches. After each, a fresh connection must still get an
ApiVersions answer; at the end the broker's peak RSS must be far below the sizes the frames
claimed and a real consumer must read the fuzzed topic back with valid CRCs.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kafka.protocol.metadata import ApiVersionsRequest, MetadataRequest

from harness.broker_process import BrokerProcess, start_broker
from tests.test_real_clients import create_topic
from tests.test_wire_replay import produce_request
from tests.wire import ConnectionClosedError, WireClient, encode_request, idempotent_batch

MAX_REQUEST = 1 << 20
TOPIC = "replay"  # produce_request() targets this topic


@pytest.fixture(scope="module")
def fuzz_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    """One broker for all examples, with a small request bound."""
    root: Path = tmp_path_factory.mktemp("fuzz")
    broker = start_broker(
        root / "data",
        settings={"socket.request.max.bytes": MAX_REQUEST, "num.partitions": 1},
        log_path=root / "broker.log",
    )
    create_topic(broker.bootstrap, TOPIC, partitions=1)
    yield broker
    broker.terminate()


def valid_frames() -> list[bytes]:
    """Well-formed request frames to mutate."""
    batch = idempotent_batch(-1, -1, -1, [b"fuzz-value"])
    return [
        encode_request(ApiVersionsRequest(), 0),
        encode_request(
            ApiVersionsRequest(client_software_name="f", client_software_version="1"), 3
        ),
        encode_request(MetadataRequest(topics=None, allow_auto_topic_creation=False), 1),
        encode_request(produce_request(batch), 7),
        encode_request(produce_request(batch), 9),
    ]


FRAMES = valid_frames()


def framed(body: bytes) -> bytes:
    """Prefix a body with its true length."""
    return struct.pack(">i", len(body)) + body


random_body = st.binary(min_size=0, max_size=512).map(framed)
bad_length = st.builds(
    lambda size, tail: struct.pack(">i", size) + tail,
    st.sampled_from([-1, -(2**31), 0, 1, 3, MAX_REQUEST + 1, 2**31 - 1, 1 << 28]),
    st.binary(max_size=64),
)
unknown_api = st.builds(
    lambda key, version, rest: framed(struct.pack(">hhi", key, version, 1) + rest),
    st.one_of(st.integers(-32768, -1), st.integers(100, 32767)),
    st.integers(-32768, 32767),
    st.binary(max_size=64),
)
unknown_version = st.builds(
    lambda key, version: framed(struct.pack(">hhih", key, version, 1, -1)),
    st.sampled_from([0, 1, 3, 18, 11, 12, 14]),
    st.integers(100, 32767),
)
truncated = st.builds(
    lambda frame, cut: framed(frame[4 : max(5, int(len(frame) * cut))]),
    st.sampled_from(FRAMES),
    st.floats(0.0, 0.99),
)
flipped = st.builds(
    lambda frame, flips: framed(
        bytes(b ^ flips.get(i, 0) if i < len(frame) - 4 else b for i, b in enumerate(frame[4:]))
    ),
    st.sampled_from(FRAMES),
    st.dictionaries(st.integers(0, 300), st.integers(1, 255), min_size=1, max_size=6),
)
garbage_batch = st.builds(
    lambda junk, version: encode_request(produce_request(junk), version),
    st.one_of(
        st.binary(min_size=0, max_size=300),
        st.builds(
            lambda flips: bytes(
                b ^ flips.get(i, 0) for i, b in enumerate(idempotent_batch(-1, -1, -1, [b"v" * 20]))
            ),
            st.dictionaries(st.integers(0, 80), st.integers(1, 255), min_size=1, max_size=3),
        ),
    ),
    st.sampled_from([3, 7, 9]),
)


hostile_frames = st.one_of(
    random_body, bad_length, unknown_api, unknown_version, truncated, flipped, garbage_batch
)


def still_serving(broker: BrokerProcess) -> None:
    """A fresh connection gets a well-formed ApiVersions answer."""
    assert broker.process.poll() is None, "the broker process died"
    with WireClient(broker.host, broker.port, timeout_s=10) as client:
        response = client.request(ApiVersionsRequest(), version=0)
        assert response.error_code == 0


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(frames=st.lists(hostile_frames, min_size=1, max_size=3))
def test_hostile_frames_get_an_error_or_a_close_and_the_broker_keeps_serving(
    fuzz_broker: BrokerProcess, frames: list[bytes]
) -> None:
    """Each hostile frame: an answer, a closed connection or silence (it waits for the rest of
    a frame it was promised) — and other clients are served throughout."""
    with WireClient(fuzz_broker.host, fuzz_broker.port, timeout_s=0.3) as client:
        try:
            for frame in frames:
                client.send_raw(frame)
            client.read_frame()
        except (TimeoutError, ConnectionClosedError, ConnectionResetError, BrokenPipeError):
            pass
    still_serving(fuzz_broker)


def peak_rss_bytes(pid: int) -> int:
    """VmHWM of a process: the most resident memory it ever had."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc status")


def test_claimed_frame_sizes_are_never_allocated(fuzz_broker: BrokerProcess) -> None:
    """Frames that claim 256 MiB and 2 GiB are refused before allocation: peak RSS stays small."""
    for claimed in (1 << 28, 2**31 - 1, MAX_REQUEST + 1):
        with WireClient(fuzz_broker.host, fuzz_broker.port, timeout_s=2) as client:
            client.send_raw(struct.pack(">i", claimed) + b"\x00\x12\x00\x00")
            with pytest.raises((ConnectionClosedError, ConnectionResetError)):
                client.read_frame()
    still_serving(fuzz_broker)
    assert peak_rss_bytes(fuzz_broker.process.pid) < 200 * (1 << 20)


def test_log_stays_readable_after_fuzzing(fuzz_broker: BrokerProcess) -> None:
    """After all the garbage, a real producer appends and a real consumer (CRC checks on)
    reads the topic from offset 0 with dense offsets and no error."""
    producer = Producer({"bootstrap.servers": fuzz_broker.bootstrap, "acks": "all"})
    producer.produce(TOPIC, value=b"after-fuzz")
    assert producer.flush(30) == 0

    consumer = Consumer(
        {
            "bootstrap.servers": fuzz_broker.bootstrap,
            "group.id": "fuzz-check",
            "check.crcs": True,
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(TOPIC, 0, 0)])
    offsets: list[int] = []
    values: list[bytes] = []
    while not values or values[-1] != b"after-fuzz":
        batch = consumer.consume(1000, 5.0)
        assert batch, "consumer stalled before reaching the last message"
        for message in batch:
            assert message.error() is None, message.error()
            offset, value = message.offset(), message.value()
            assert offset is not None and value is not None
            offsets.append(offset)
            values.append(value)
    consumer.close()
    assert offsets == list(range(len(offsets)))
