"""The least wall time one simulated client operation can cost, before any broker or client logic.

`bench_sim.py` asks for 20x real time at 500 ops/s, a budget of 100 µs of wall time per
operation for everything: client, network, broker, history. This script measures two
parts every operation pays whatever the code around them does, so that the sim's
figure can be read against a floor:

- the codec: kafka-python's `kafka.protocol` building, encoding and decoding one
  request and its response at the versions the simulation's clients use (Produce v9
  with one 80-byte batch; Fetch v12 of two partitions, answered with one batch each);
- the scheduler: one request/response exchange between a client task and a server
  task in trio under the simulation's MockClock, with the trio-level plumbing the
  simulation needs at minimum (a memory channel each way, no bytes, no codec).

    python benchmarks/bench_op_floor.py [--rounds 20000]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import trio
import trio.testing
from kafka.protocol.consumer import FetchRequest, FetchResponse
from kafka.protocol.producer import ProduceRequest, ProduceResponse

from reference_broker.protocol import decode_request, encode_response
from reference_broker.protocol.codec import decode_response
from workloads.client.connection import client_id_field, encode_request

PRODUCE_VERSION = 9
FETCH_VERSION = 12
BATCH = b"\x00" * 80
CLIENT_ID = client_id_field("p0@n1")

_Produce = ProduceRequest.TopicProduceData
_Produced = ProduceResponse.TopicProduceResponse
_Fetch = FetchRequest.FetchTopic
_Fetched = FetchResponse.FetchableTopicResponse


def produce_round_trip(correlation_id: int) -> None:
    """Build, encode and decode one Produce request and its response."""
    request = ProduceRequest(
        transactional_id=None,
        acks=-1,
        timeout_ms=1000,
        topic_data=[_Produce(name="t1", partition_data=[_Produce.PartitionProduceData(0, BATCH)])],
    )
    frame = encode_request(request, PRODUCE_VERSION, correlation_id, CLIENT_ID)
    decoded = decode_request(frame[4:])
    entry = _Produced.PartitionProduceResponse(
        index=0,
        error_code=0,
        base_offset=17,
        log_append_time_ms=-1,
        log_start_offset=0,
        record_errors=[],
        error_message=None,
    )
    response = ProduceResponse(
        responses=[_Produced(name="t1", partition_responses=[entry])], throttle_time_ms=0
    )
    answer = encode_response(decoded.header, response)
    decode_response(answer[4:], ProduceRequest, PRODUCE_VERSION, correlation_id)


def fetch_round_trip(correlation_id: int) -> None:
    """Build, encode and decode one Fetch request of two partitions and its response."""
    request = FetchRequest(
        replica_id=-1,
        max_wait_ms=100,
        min_bytes=1,
        max_bytes=52428800,
        isolation_level=0,
        session_id=0,
        session_epoch=-1,
        topics=[
            _Fetch(
                topic="t1",
                partitions=[
                    _Fetch.FetchPartition(
                        partition=p,
                        current_leader_epoch=-1,
                        fetch_offset=100,
                        last_fetched_epoch=-1,
                        log_start_offset=-1,
                        partition_max_bytes=1048576,
                    )
                    for p in range(2)
                ],
            )
        ],
        forgotten_topics_data=[],
        rack_id="",
    )
    frame = encode_request(request, FETCH_VERSION, correlation_id, CLIENT_ID)
    decoded = decode_request(frame[4:])
    partitions = [
        _Fetched.PartitionData(
            partition_index=p.partition,
            error_code=0,
            high_watermark=101,
            last_stable_offset=101,
            log_start_offset=0,
            aborted_transactions=None,
            preferred_read_replica=-1,
            records=BATCH,
        )
        for p in decoded.body.topics[0].partitions
    ]
    response = FetchResponse(
        throttle_time_ms=0,
        error_code=0,
        session_id=0,
        responses=[_Fetched(topic="t1", partitions=partitions)],
    )
    answer = encode_response(decoded.header, response)
    decode_response(answer[4:], FetchRequest, FETCH_VERSION, correlation_id)


def per_call_us(work: Callable[[int], None], rounds: int) -> float:
    """Mean wall µs of `work(i)` over `rounds` calls."""
    started = time.perf_counter()
    for i in range(rounds):
        work(i)
    return (time.perf_counter() - started) / rounds * 1e6


def scheduler_round_trip_us(rounds: int) -> float:
    """Mean wall µs of one request/response between two trio tasks under MockClock."""
    result: list[float] = []

    async def main() -> None:
        to_server, server_inbox = trio.open_memory_channel[int](1)
        to_client, client_inbox = trio.open_memory_channel[int](1)

        async def server() -> None:
            async for request in server_inbox:
                await to_client.send(request)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(server)
            started = time.perf_counter()
            for i in range(rounds):
                await to_server.send(i)
                await client_inbox.receive()
            result.append((time.perf_counter() - started) / rounds * 1e6)
            await to_server.aclose()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    return result[0]


def main() -> None:
    """Print the floor figures next to the 20x budget."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20_000)
    args = parser.parse_args()
    produce = per_call_us(produce_round_trip, args.rounds)
    fetch = per_call_us(fetch_round_trip, args.rounds)
    switch = scheduler_round_trip_us(args.rounds)
    budget = 1e6 / 500 / 20
    rows = [
        ("budget per op for 20x at 500 ops/s", budget),
        (f"codec, produce round trip (v{PRODUCE_VERSION})", produce),
        (f"codec, fetch round trip (v{FETCH_VERSION})", fetch),
        ("trio, task-to-task round trip", switch),
        ("floor per op (mean of the two + trio)", (produce + fetch) / 2 + switch),
    ]
    for label, value in rows:
        print(f"{label:40} {value:6.1f} µs")


if __name__ == "__main__":
    main()
