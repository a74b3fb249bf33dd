"""The trio fault proxy on real loopback TCP: relay, hold (DROP), one-way, reset, latency,
bandwidth, and a dead upstream. The far end is a small echo server that counts connections."""

from __future__ import annotations

import functools
import random
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest
import trio

from harness.runtime.process.proxy import FaultProxy, Link, Upstream
from nemesis.target import LinkFault


@dataclass
class EchoServer:
    """Echoes every byte back; remembers what it received and how many connections it saw."""

    port: int = 0
    accepted: int = 0
    received: bytearray = field(default_factory=bytearray)
    streams: list[trio.SocketStream] = field(default_factory=list)
    echo: bool = True

    async def handle(self, stream: trio.SocketStream) -> None:
        self.accepted += 1
        self.streams.append(stream)
        try:
            while data := await stream.receive_some(65536):
                self.received += data
                if self.echo:
                    await stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # reset by the proxy, or closed by the test


@dataclass
class Rig:
    server: EchoServer
    proxy: FaultProxy
    forward: Link
    backward: Link

    async def connect(self) -> trio.SocketStream:
        host, port = self.proxy.address.rsplit(":", 1)
        return await trio.open_tcp_stream(host, int(port))


@asynccontextmanager
async def rig(*, echo: bool = True) -> AsyncIterator[Rig]:
    """An echo server behind a proxy, links 'c'->'s' (forward) and 's'->'c' (backward)."""
    server = EchoServer(echo=echo)
    forward = Link("c", "s", random.Random(1))
    backward = Link("s", "c", random.Random(2))
    async with trio.open_nursery() as nursery:
        serve = functools.partial(trio.serve_tcp, server.handle, 0, host="127.0.0.1")
        [listener] = await nursery.start(serve)
        server.port = listener.socket.getsockname()[1]
        proxy = FaultProxy(forward, backward, Upstream("127.0.0.1", server.port))
        await nursery.start(proxy.serve)
        yield Rig(server, proxy, forward, backward)
        nursery.cancel_scope.cancel()


async def receive_exactly(stream: trio.SocketStream, size: int) -> bytes:
    """Read until `size` bytes arrived; fails on EOF."""
    data = bytearray()
    while len(data) < size:
        chunk = await stream.receive_some(size - len(data))
        assert chunk, f"EOF after {len(data)} of {size} bytes"
        data += chunk
    return bytes(data)


async def test_bytes_are_relayed_both_ways() -> None:
    async with rig() as r:
        stream = await r.connect()
        payload = bytes(range(256)) * 1000
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stream.send_all, payload)
            assert await receive_exactly(stream, len(payload)) == payload
        assert r.server.accepted == 1
        assert r.proxy.connection_count == 1


async def test_a_blocked_link_holds_bytes_and_delivers_them_all_when_unblocked() -> None:
    async with rig() as r:
        stream = await r.connect()
        await stream.send_all(b"before")
        assert await receive_exactly(stream, 6) == b"before"
        r.forward.block()
        await stream.send_all(b"held-1")
        await stream.send_all(b"held-2")
        with trio.move_on_after(0.3) as waited:
            await stream.receive_some(100)
        assert waited.cancelled_caught, "a byte crossed a blocked link"
        assert bytes(r.server.received) == b"before"
        r.forward.unblock()
        assert await receive_exactly(stream, 12) == b"held-1held-2"


async def test_directions_are_independent_one_way_partition() -> None:
    async with rig() as r:
        stream = await r.connect()
        await stream.send_all(b"x")
        await receive_exactly(stream, 1)
        r.backward.block()  # the server hears us, we do not hear it
        await stream.send_all(b"ping")
        with trio.fail_after(2):
            while bytes(r.server.received) != b"xping":
                await trio.sleep(0.01)
        with trio.move_on_after(0.3) as waited:
            await stream.receive_some(100)
        assert waited.cancelled_caught
        r.backward.unblock()
        assert await receive_exactly(stream, 4) == b"ping"


async def test_a_new_connection_is_accepted_but_not_connected_upstream_while_blocked() -> None:
    async with rig() as r:
        r.backward.block()  # either direction blocked stops the handshake, as a DROP
        stream = await r.connect()
        await stream.send_all(b"hello")
        await trio.sleep(0.3)
        assert r.server.accepted == 0
        r.backward.unblock()
        assert await receive_exactly(stream, 5) == b"hello"
        assert r.server.accepted == 1


async def test_a_dead_upstream_resets_the_connection_at_once() -> None:
    async with rig() as r:
        r.proxy.upstream = Upstream("127.0.0.1", closed_port())  # refused
        stream = await r.connect()
        with trio.fail_after(1), pytest.raises(trio.BrokenResourceError) as refused:
            await stream.receive_some(10)
        assert isinstance(refused.value.__cause__, ConnectionResetError)
        r.proxy.upstream = None  # a node known to be down: no dial at all
        stream = await r.connect()
        with trio.fail_after(1), pytest.raises(trio.BrokenResourceError):
            await stream.receive_some(10)
        assert r.server.accepted == 0


async def test_upstream_closing_closes_the_client_after_delivering_what_it_sent() -> None:
    async with rig() as r:
        stream = await r.connect()
        await stream.send_all(b"bye")
        await receive_exactly(stream, 3)
        await r.server.streams[0].send_all(b"last words")
        await r.server.streams[0].aclose()
        with trio.fail_after(1):
            assert await receive_exactly(stream, 10) == b"last words"
            assert await stream.receive_some(10) == b""


async def test_reset_sends_rst_to_both_sides() -> None:
    async with rig() as r:
        stream = await r.connect()
        await stream.send_all(b"x")
        await receive_exactly(stream, 1)
        assert r.proxy.reset_connections() == 1
        with trio.fail_after(1), pytest.raises(trio.BrokenResourceError) as client_error:
            await stream.receive_some(10)
        assert isinstance(client_error.value.__cause__, ConnectionResetError)
        with trio.fail_after(1):
            while r.proxy.connection_count:
                await trio.sleep(0.01)


async def test_latency_delays_each_direction() -> None:
    async with rig() as r:
        stream = await r.connect()
        await stream.send_all(b"warm")
        await receive_exactly(stream, 4)
        r.forward.set_fault(LinkFault(latency_ms=60))
        r.backward.set_fault(LinkFault(latency_ms=60))
        start = trio.current_time()
        await stream.send_all(b"ping")
        await receive_exactly(stream, 4)
        assert trio.current_time() - start >= 0.12
        r.forward.set_fault(None)
        r.backward.set_fault(None)
        assert r.forward.fault is None


async def test_jitter_never_reorders_bytes() -> None:
    async with rig() as r:
        stream = await r.connect()
        r.forward.set_fault(LinkFault(latency_ms=5, jitter_ms=5))
        r.backward.set_fault(LinkFault(latency_ms=5, jitter_ms=5))
        sent = b"".join(i.to_bytes(4, "big") for i in range(300))
        for i in range(0, len(sent), 4):
            await stream.send_all(sent[i : i + 4])
        assert await receive_exactly(stream, len(sent)) == sent


async def test_bandwidth_limit_paces_a_transfer() -> None:
    async with rig() as r:
        stream = await r.connect()
        await stream.send_all(b"w")
        await receive_exactly(stream, 1)
        r.backward.set_fault(LinkFault(bandwidth_bytes_per_s=200_000))
        payload = b"b" * 100_000
        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stream.send_all, payload)
            await receive_exactly(stream, len(payload))
        # 100 kB at 200 kB/s: half a second at the very least.
        assert trio.current_time() - start >= 0.45


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
