"""One broker connection: framing, in-order matching, timeouts owned by the reader.

The broker here is scripted over the simulated network (virtual time, no sockets): it
reads request frames and answers with kafka-python's response classes, or not at all.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable

import pytest
import trio
import trio.testing
from kafka.protocol.api_message import ApiMessage
from kafka.protocol.consumer import FetchRequest
from kafka.protocol.metadata import (
    ApiVersionsRequest,
    ApiVersionsResponse,
    MetadataRequest,
    MetadataResponse,
)
from kafka.protocol.producer import ProduceRequest

from harness.runtime.sim.network import SimNetwork
from workloads.client.connection import Connection, client_id_field, encode_request
from workloads.client.errors import ConnectionLostError, KafkaClientError, RequestTimedOutError

# (api key, version, correlation id, frame) -> framed response bytes, or None for silence.
Script = Callable[[int, int, int, bytes], bytes | None]


def _metadata_request() -> MetadataRequest:
    return MetadataRequest(
        topics=None,
        allow_auto_topic_creation=False,
        include_cluster_authorized_operations=False,
        include_topic_authorized_operations=False,
    )


def _metadata_response(correlation_id: int, version: int, cluster_id: str) -> bytes:
    response = MetadataResponse(
        throttle_time_ms=0,
        brokers=[],
        cluster_id=cluster_id,
        controller_id=1,
        topics=[],
    )
    response.API_VERSION = version
    response.with_header(correlation_id=correlation_id)
    return bytes(response.encode(header=True, framed=True))


async def _scripted(
    nursery: trio.Nursery, script: Script, fabric: SimNetwork | None = None
) -> Connection:
    fabric = fabric or SimNetwork(random.Random(0))
    server = fabric.incarnate("broker")
    [listener] = await server.listen("broker", 9092)

    async def serve() -> None:
        stream = await listener.accept()
        buffer = bytearray()
        while data := await stream.receive_some():
            buffer += data
            while len(buffer) >= 4 and len(buffer) >= 4 + struct.unpack_from(">i", buffer)[0]:
                size = struct.unpack_from(">i", buffer)[0]
                frame = bytes(buffer[4 : 4 + size])
                del buffer[: 4 + size]
                api_key, version, correlation_id = struct.unpack_from(">hhi", frame)
                answer = script(api_key, version, correlation_id, frame)
                if answer is not None:
                    await stream.send_all(answer)

    nursery.start_soon(serve)
    stream = await fabric.incarnate("client").connect("broker", 9092)
    conn = Connection(stream, node_id=1, address="broker:9092", client_id="test-client")
    nursery.start_soon(conn.run)
    return conn


@pytest.mark.parametrize(
    ("message", "version"),
    [
        (_metadata_request(), 1),  # header v1
        (_metadata_request(), 12),  # flexible: header v2
        (ApiVersionsRequest(client_software_name="x", client_software_version="1"), 3),
        (
            ProduceRequest(transactional_id=None, acks=1, timeout_ms=1000, topic_data=[]),
            9,
        ),
    ],
)
def test_hand_packed_request_frames_equal_kafka_pythons(message: ApiMessage, version: int) -> None:
    ours = encode_request(message, version, 7, client_id_field("test-client"))
    message.API_VERSION = version
    message.with_header(correlation_id=7, client_id="test-client")
    theirs = message.encode(header=True, framed=True)
    assert ours == bytes(theirs)


async def test_pipelined_requests_get_their_own_answers_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    def script(api: int, version: int, cid: int, frame: bytes) -> bytes:
        return _metadata_response(cid, version, f"answer-{cid}")

    results: dict[int, str] = {}
    async with trio.open_nursery() as nursery:
        conn = await _scripted(nursery, script)

        async def ask(i: int) -> None:
            response = await conn.request(_metadata_request(), 12, 5.0)
            results[i] = response.cluster_id

        async with trio.open_nursery() as askers:
            for i in range(5):
                askers.start_soon(ask, i)
        conn.close()
    # Correlation ids are handed out in write order, each answer names its request's id.
    assert sorted(results.values()) == [f"answer-{cid}" for cid in range(1, 6)]
    assert conn.in_flight == 0


async def test_an_unanswered_request_times_out_and_fails_the_rest_as_maybe_delivered(
    autojump_clock: trio.testing.MockClock,
) -> None:
    def silent(api: int, version: int, cid: int, frame: bytes) -> None:
        return None

    outcomes: list[tuple[ApiMessage | None, KafkaClientError | None]] = []
    async with trio.open_nursery() as nursery:
        conn = await _scripted(nursery, silent)
        await conn.submit(_metadata_request(), 12, 10.0, lambda r, e: outcomes.append((r, e)))
        start = trio.current_time()
        with pytest.raises(RequestTimedOutError, match=r"within 2000 ms"):
            await conn.request(_metadata_request(), 12, 2.0)
        assert trio.current_time() - start == pytest.approx(2.0)
        assert conn.closed
    [(response, error)] = outcomes  # the callback ran exactly once
    assert response is None
    assert isinstance(error, ConnectionLostError) and error.maybe_delivered
    assert "timed out" in str(error)


async def test_a_request_on_a_closed_connection_certainly_was_not_sent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    def script(api: int, version: int, cid: int, frame: bytes) -> bytes:
        return _metadata_response(cid, version, "c")

    outcomes: list[KafkaClientError | None] = []
    async with trio.open_nursery() as nursery:
        conn = await _scripted(nursery, script)
        conn.close("test closed it")
        with pytest.raises(ConnectionLostError, match="test closed it") as info:
            await conn.request(_metadata_request(), 12, 1.0)
        assert not info.value.maybe_delivered
        await conn.submit(_metadata_request(), 12, 1.0, lambda r, e: outcomes.append(e))
    [error] = outcomes
    assert isinstance(error, ConnectionLostError) and not error.maybe_delivered


async def test_tagged_fields_in_a_flexible_response_header_are_skipped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    def script(api: int, version: int, cid: int, frame: bytes) -> bytes:
        plain = _metadata_response(cid, version, "tagged")
        # Header v1 = correlation id + tagged fields; replace the empty set (0x00) with
        # one field: tag 5, 3 bytes.
        body = plain[4 + 4 + 1 :]
        header = struct.pack(">i", cid) + bytes([1, 5, 3]) + b"xyz"
        return struct.pack(">i", len(header) + len(body)) + header + body

    async with trio.open_nursery() as nursery:
        conn = await _scripted(nursery, script)
        response = await conn.request(_metadata_request(), 12, 1.0)
        conn.close()
    assert response.cluster_id == "tagged"


async def test_an_answer_with_the_wrong_correlation_id_closes_the_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    def script(api: int, version: int, cid: int, frame: bytes) -> bytes:
        return _metadata_response(cid + 1, version, "c")

    async with trio.open_nursery() as nursery:
        conn = await _scripted(nursery, script)
        with pytest.raises(ConnectionLostError, match="correlation id") as info:
            await conn.request(_metadata_request(), 12, 1.0)
        assert info.value.maybe_delivered
    assert conn.closed


async def test_api_versions_answers_use_header_v0_at_every_version(
    autojump_clock: trio.testing.MockClock,
) -> None:
    def script(api: int, version: int, cid: int, frame: bytes) -> bytes:
        response = ApiVersionsResponse(
            error_code=0,
            api_keys=[ApiVersionsResponse.ApiVersion(api_key=1, min_version=4, max_version=12)],
            throttle_time_ms=0,
        )
        response.API_VERSION = version
        response.with_header(correlation_id=cid)
        return bytes(response.encode(header=True, framed=True))

    async with trio.open_nursery() as nursery:
        conn = await _scripted(nursery, script)
        request = ApiVersionsRequest(client_software_name="x", client_software_version="1")
        response = await conn.request(request, 3, 1.0)
        conn.close()
    [key] = response.api_keys
    assert (key.api_key, key.min_version, key.max_version) == (FetchRequest.API_KEY, 4, 12)


async def test_a_deadline_left_by_an_answered_request_does_not_close_the_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    def script(api: int, version: int, cid: int, frame: bytes) -> bytes:
        return _metadata_response(cid, version, f"answer-{cid}")

    async with trio.open_nursery() as nursery:
        conn = await _scripted(nursery, script)
        first = await conn.request(_metadata_request(), 12, 1.0)
        await trio.sleep(5)  # the first request's deadline passes with nothing in flight
        assert not conn.closed
        second = await conn.request(_metadata_request(), 12, 1.0)
        conn.close()
    assert (first.cluster_id, second.cluster_id) == ("answer-1", "answer-2")


async def test_a_request_stuck_behind_a_full_socket_buffer_times_out(
    autojump_clock: trio.testing.MockClock,
) -> None:
    def silent(api: int, version: int, cid: int, frame: bytes) -> None:
        return None

    fabric = SimNetwork(random.Random(0), pipe_capacity=64)
    errors: list[KafkaClientError | None] = []
    async with trio.open_nursery() as nursery:
        conn = await _scripted(nursery, silent, fabric)
        fabric.block("client", "broker")  # bytes wait in the buffer, which fills
        start = trio.current_time()
        await conn.submit(_metadata_request(), 12, 1.0, lambda r, e: errors.append(e))
        with pytest.raises(RequestTimedOutError):
            await conn.request(_metadata_request(), 12, 1.0)  # its write never completes
        assert trio.current_time() - start == pytest.approx(1.0)
        assert conn.closed
        fabric.heal()  # let the scripted broker see the close
    [first] = errors
    assert isinstance(first, RequestTimedOutError)
