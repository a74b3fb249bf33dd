"""The simulated network's links: hold, latency, jitter, bandwidth, reset, crash, pause."""

from __future__ import annotations

import random

import pytest
import trio
import trio.testing

from harness.runtime.sim.errors import NodeCrashedError
from harness.runtime.sim.network import HostNetwork, SimNetwork
from nemesis.target import LinkFault


async def pair(
    fabric: SimNetwork, nursery: trio.Nursery
) -> tuple[HostNetwork, HostNetwork, trio.abc.Stream, trio.abc.Stream]:
    server, client = fabric.incarnate("s"), fabric.incarnate("c")
    [listener] = await server.listen("s", 1)
    client_end = await client.connect("s", 1)
    server_end = await listener.accept()
    return server, client, client_end, server_end


async def test_held_bytes_wait_and_flow_after_unblock(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fabric = SimNetwork(random.Random(0), base_latency_ms=1)
    async with trio.open_nursery() as nursery:
        _, _, c, s = await pair(fabric, nursery)
        fabric.block("c", "s")
        await c.send_all(b"held")
        with trio.move_on_after(60) as waited:
            await s.receive_some()
        assert waited.cancelled_caught
        await s.send_all(b"other way")  # one-way: s -> c still flows
        assert await c.receive_some() == b"other way"
        fabric.unblock("c", "s")
        assert await s.receive_some() == b"held"


async def test_a_writer_stalls_once_the_pipe_buffer_is_full(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fabric = SimNetwork(random.Random(0), pipe_capacity=10)
    async with trio.open_nursery() as nursery:
        _, _, c, s = await pair(fabric, nursery)
        fabric.block("c", "s")
        await c.send_all(b"0123456789")
        with trio.move_on_after(10) as stalled:
            await c.send_all(b"x")
        assert stalled.cancelled_caught
        fabric.heal()
        assert await s.receive_some() == b"0123456789"
        await c.send_all(b"y")
        assert await s.receive_some() == b"y"


async def test_connect_across_a_held_link_completes_only_after_the_heal(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fabric = SimNetwork(random.Random(0))
    server, client = fabric.incarnate("s"), fabric.incarnate("c")
    await server.listen("s", 1)
    fabric.block("s", "c")  # the SYN-ACK would be dropped
    with trio.move_on_after(30) as waited:
        await client.connect("s", 1)
    assert waited.cancelled_caught
    fabric.heal()
    with trio.fail_after(1):
        await client.connect("s", 1)


async def test_connect_to_nothing_is_refused_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fabric = SimNetwork(random.Random(0))
    client = fabric.incarnate("c")
    fabric.add_host("s")
    start = trio.current_time()
    with pytest.raises(ConnectionRefusedError):
        await client.connect("s", 1)
    assert trio.current_time() - start < 0.01
    with pytest.raises(OSError, match="unknown host"):
        await client.connect("nowhere", 1)


async def test_latency_jitter_keeps_order_and_bandwidth_serializes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fabric = SimNetwork(random.Random(0), base_latency_ms=0)
    async with trio.open_nursery() as nursery:
        _, _, c, s = await pair(fabric, nursery)
        fabric.set_fault("c", "s", LinkFault(latency_ms=50, jitter_ms=40))
        start = trio.current_time()
        for i in range(20):
            await c.send_all(bytes([i]))
        received = b""
        while len(received) < 20:
            received += await s.receive_some()
        assert received == bytes(range(20)), "jitter reordered a stream"
        assert 0.01 <= trio.current_time() - start <= 0.09
        fabric.set_fault("c", "s", LinkFault(bandwidth_bytes_per_s=1000))
        start = trio.current_time()
        await c.send_all(b"x" * 2000)
        got = 0
        while got < 2000:
            got += len(await s.receive_some())
        assert trio.current_time() - start == pytest.approx(2.0, abs=0.01)


async def test_reset_breaks_both_ends_and_drops_bytes_in_flight(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fabric = SimNetwork(random.Random(0))
    async with trio.open_nursery() as nursery:
        _, _, c, s = await pair(fabric, nursery)
        fabric.block("c", "s")
        await c.send_all(b"lost")
        fabric.reset("s")
        with pytest.raises(trio.BrokenResourceError):
            await s.receive_some()
        with pytest.raises(trio.BrokenResourceError):
            await c.send_all(b"more")


async def test_a_crashed_host_resets_its_peers_after_what_it_already_sent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fabric = SimNetwork(random.Random(0))
    async with trio.open_nursery() as nursery:
        server, _, c, s = await pair(fabric, nursery)
        await s.send_all(b"last words")
        fabric.crash("s")
        assert await c.receive_some() == b"last words"
        with pytest.raises(trio.BrokenResourceError):
            await c.receive_some()
        with pytest.raises(NodeCrashedError):
            await s.send_all(b"from beyond")
        with pytest.raises(ConnectionRefusedError):
            await fabric.incarnate("c2").connect("s", 1)
        reborn = fabric.incarnate("s")
        await reborn.listen("s", 1)
        await fabric.incarnate("c3").connect("s", 1)
        assert not server.alive


async def test_a_paused_host_neither_sends_nor_receives_until_resumed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fabric = SimNetwork(random.Random(0))
    async with trio.open_nursery() as nursery:
        _, _, c, s = await pair(fabric, nursery)
        fabric.hosts["s"].pause()
        received: list[bytes] = []

        async def serve() -> None:
            data = await s.receive_some()
            received.append(data)
            await s.send_all(data.upper())

        nursery.start_soon(serve)
        await c.send_all(b"ping")  # the kernel still takes the bytes
        with trio.move_on_after(30) as waited:
            await c.receive_some()
        assert waited.cancelled_caught and received == []
        fabric.hosts["s"].resume()
        assert await c.receive_some() == b"PING"


async def test_the_peer_reads_end_of_stream_after_a_close(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fabric = SimNetwork(random.Random(0))
    async with trio.open_nursery() as nursery:
        _, _, c, s = await pair(fabric, nursery)
        await c.send_all(b"bye")
        await c.aclose()
        assert await s.receive_some() == b"bye"
        assert await s.receive_some() == b""
        assert await s.receive_some() == b""
        with pytest.raises(trio.ClosedResourceError):
            await c.send_all(b"x")
