"""The broker runs on whatever network its NodeEnv gives it, and times out on trio's clock.

This is the seam the simulation (DESIGN.md §2) relies on: `serve_broker` on an in-memory
network of trio memory streams, under an autojumping MockClock. A minute-long Fetch long
poll then completes in virtual time, which is only possible if every wait in the broker
goes through trio's clock rather than the wall clock or real sockets.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import trio
import trio.testing
from kafka.protocol.consumer import FetchResponse
from kafka.protocol.metadata import MetadataRequest, MetadataResponse

from reference_broker.config import BrokerConfig
from reference_broker.env import NodeEnv
from reference_broker.os_env import os_node_env
from reference_broker.server import serve_broker
from tests.broker_process import RawConnection
from tests.test_broker_wire import create_topic, fetch_request, produce
from tests.wire import record_batch


class MemoryListener(trio.abc.Listener[trio.abc.Stream]):
    """Accepts the server ends of streams that `MemoryNetwork.connect` creates."""

    def __init__(self) -> None:
        self._send, self._receive = trio.open_memory_channel[trio.abc.Stream](16)

    async def accept(self) -> trio.abc.Stream:
        return await self._receive.receive()

    async def aclose(self) -> None:
        await self._receive.aclose()


class MemoryNetwork:
    """A network of in-process memory streams: one listener per (host, port)."""

    def __init__(self) -> None:
        self.listeners: dict[tuple[str, int], MemoryListener] = {}

    async def listen(self, host: str, port: int) -> list[trio.abc.Listener[trio.abc.Stream]]:
        listener = MemoryListener()
        self.listeners[(host, port)] = listener
        return [listener]

    async def connect(self, host: str, port: int) -> trio.abc.Stream:
        client, server = trio.testing.memory_stream_pair()
        await self.listeners[(host, port)]._send.send(server)
        return client


async def test_long_poll_and_metadata_over_a_memory_network_in_virtual_time(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    disk = os_node_env(tmp_path, seed=1)
    network = MemoryNetwork()
    env = NodeEnv(network=network, storage=disk.storage, clock=disk.clock, rng=random.Random(1))
    config = BrokerConfig.from_properties({"listeners": "PLAINTEXT://node-0:9092"})
    async with trio.open_nursery() as nursery:
        running = await nursery.start(serve_broker, env, config)
        # No socket, so the broker advertises the configured address.
        assert (running.address.host, running.address.port) == ("node-0", 9092)
        conn = RawConnection(await network.connect("node-0", 9092))  # type: ignore[arg-type]
        metadata = await conn.request(
            MetadataRequest(version=12, topics=None), 12, MetadataResponse
        )
        assert (metadata.brokers[0].host, metadata.brokers[0].port) == ("node-0", 9092)
        assert await create_topic(conn, "t") == 0

        wall_start, virtual_start = time.monotonic(), trio.current_time()
        idle = await conn.request(fetch_request("t", 0, 0, max_wait_ms=60_000), 12, FetchResponse)
        assert idle.responses[0].partitions[0].records == b""
        assert trio.current_time() - virtual_start >= 60
        assert time.monotonic() - wall_start < 30  # a minute passed on trio's clock only

        assert (await produce(conn, "t", 0, record_batch([b"v"]))).error_code == 0
        woken = await conn.request(fetch_request("t", 0, 0, max_wait_ms=60_000), 12, FetchResponse)
        assert woken.responses[0].partitions[0].high_watermark == 1
        await conn.aclose()
        nursery.cancel_scope.cancel()
