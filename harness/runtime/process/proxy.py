"""The trio fault proxy: a TCP relay the harness owns, breaking links without root.

Every client->broker and broker->broker connection of the process runtime passes
through a `FaultProxy`: it accepts on its own loopback port, dials the real broker
and relays bytes both ways. Each direction of the relay belongs to a `Link` (the
directed link src -> dst), shared by every connection that carries bytes that way,
so one call degrades them all:

- blocked: bytes are held, as by a firewall DROP. Nothing is forwarded and nothing is
  lost; the relay stops reading once its small buffer is full, so the sender's socket
  buffer fills and it stalls. New connections are accepted (the kernel completes the
  handshake with the proxy) but not connected upstream until both directions are
  open again, so the client's first request times out just as behind a DROP.
- latency and jitter: each chunk is delivered `latency +- jitter` (uniform, from the
  link's seeded rng) after it was read, never before the chunk ahead of it (TCP does
  not reorder), so pipelined requests stay pipelined.
- bandwidth: a link sends at most `bandwidth_bytes_per_s`, shared by its connections.
- reset: `reset_connections` closes both sockets of every connection with SO_LINGER 0,
  so both peers get a real RST.

When the upstream broker is down (`upstream` is None, or the dial is refused) an
accepted connection is reset at once, so a killed node looks like one that refuses
connections. When the broker closes its side, the client's side is closed after the
bytes ahead of the close are delivered.
"""

from __future__ import annotations

import contextlib
import random
import socket
import struct
from dataclasses import dataclass

import trio

from nemesis.target import LinkFault

# Bytes read per receive, and chunks buffered per direction: with both, at most
# 1 MiB is held per direction of a connection before the proxy stops reading.
CHUNK_BYTES = 64 * 1024
BUFFERED_CHUNKS = 16
# A throttled link sends in slices of at most this many seconds' worth of bytes,
# so a large chunk does not arrive as one late burst.
BANDWIDTH_SLICE_S = 0.01


class Link:
    """The state of the directed link src -> dst; every proxy carrying bytes that way shares it."""

    def __init__(self, src: str, dst: str, rng: random.Random) -> None:
        self.src = src
        self.dst = dst
        self._cut = False
        # Held because the client endpoint at one end is paused: apart from `_cut`, so
        # healing a partition does not wake a paused client, nor resuming it heal a cut.
        self.frozen = False
        self.fault: LinkFault | None = None
        self._rng = rng
        self._changed = trio.Event()
        # Bandwidth model: the link is a pipe that is busy sending until this time.
        self._busy_until = 0.0

    def __repr__(self) -> str:
        return f"Link({self.src}->{self.dst}, blocked={self.blocked}, fault={self.fault})"

    @property
    def blocked(self) -> bool:
        """Whether bytes on this link are held (cut by a partition, or frozen)."""
        return self._cut or self.frozen

    def block(self) -> None:
        """Hold every byte on this link from now on."""
        self._cut = True
        self._notify()

    def unblock(self) -> None:
        """Let held bytes and new ones flow (unless the link is also frozen)."""
        self._cut = False
        self._notify()

    def freeze(self, frozen: bool) -> None:
        """Hold (True) or release (False) the link for a paused client endpoint."""
        self.frozen = frozen
        self._notify()

    def set_fault(self, fault: LinkFault | None) -> None:
        """Degrade the link (latency, jitter, bandwidth) or, with None, restore it."""
        if fault is not None and fault == LinkFault():
            fault = None
        self.fault = fault
        self._busy_until = 0.0
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_open(self) -> None:
        """Return once the link is not blocked (at once, without a checkpoint, if it isn't)."""
        while self.blocked:
            await self._changed.wait()

    def delay_s(self) -> float:
        """Latency for the next chunk: latency +- jitter, never negative."""
        fault = self.fault
        if fault is None:
            return 0.0
        jitter = self._rng.uniform(-fault.jitter_ms, fault.jitter_ms) if fault.jitter_ms else 0.0
        return max(0.0, fault.latency_ms + jitter) / 1000.0

    def slice_bytes(self) -> int:
        """The largest piece to send at once on this link."""
        bandwidth = self.fault.bandwidth_bytes_per_s if self.fault else None
        if not bandwidth:
            return CHUNK_BYTES
        return max(1, min(CHUNK_BYTES, int(bandwidth * BANDWIDTH_SLICE_S)))

    def reserve(self, nbytes: int) -> float:
        """Book `nbytes` of the link's bandwidth; returns when they have been sent."""
        bandwidth = self.fault.bandwidth_bytes_per_s if self.fault else None
        now = trio.current_time()
        if not bandwidth:
            return now
        start = max(now, self._busy_until)
        self._busy_until = start + nbytes / bandwidth
        return self._busy_until


@dataclass(frozen=True)
class Upstream:
    """Where a proxy relays to: the real broker's address."""

    host: str
    port: int


class _Connection:
    """One proxied connection: a client socket, maybe an upstream socket, two relays."""

    def __init__(self, client: trio.SocketStream) -> None:
        self.client = client
        self.upstream: trio.SocketStream | None = None
        self.cancel_scope = trio.CancelScope()
        self.abortive = False

    def reset(self) -> None:
        """Close both sides with an RST as soon as the relay tasks notice."""
        self.abortive = True
        self.cancel_scope.cancel()

    async def close(self) -> None:
        for stream in (self.client, self.upstream):
            if stream is None:
                continue
            if self.abortive:
                _linger_zero(stream)
            await stream.aclose()


def _linger_zero(stream: trio.SocketStream) -> None:
    # SO_LINGER on with a zero timeout: close() discards unsent data and sends RST.
    # A socket that is already dead just gets closed.
    with contextlib.suppress(OSError):
        stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


class FaultProxy:
    """A TCP relay from `listen_host:listen_port` to a broker, faulted through two `Link`s.

    `forward` carries bytes from the connecting side to the broker, `backward` the
    replies. Run it with `await nursery.start(proxy.serve)`; `address` is known after.
    """

    def __init__(
        self,
        forward: Link,
        backward: Link,
        upstream: Upstream | None,
        *,
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
    ) -> None:
        self.forward = forward
        self.backward = backward
        self.upstream = upstream
        self.listen_host = listen_host
        self.listen_port = listen_port
        self._connections: set[_Connection] = set()

    def __repr__(self) -> str:
        return f"FaultProxy({self.forward.src}->{self.forward.dst} on {self.address})"

    @property
    def address(self) -> str:
        """`host:port` where the proxy accepts (its real port once serving)."""
        return f"{self.listen_host}:{self.listen_port}"

    @property
    def connection_count(self) -> int:
        """Connections accepted and not yet closed."""
        return len(self._connections)

    async def serve(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        """Accept and relay until cancelled; reports the bound `host:port` when started."""
        listeners = await trio.open_tcp_listeners(self.listen_port, host=self.listen_host)
        self.listen_port = listeners[0].socket.getsockname()[1]
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(trio.serve_listeners, self._handle, listeners)
                task_status.started(self.address)
        finally:
            with trio.CancelScope(shield=True):
                for conn in list(self._connections):
                    conn.reset()

    def reset_connections(self) -> int:
        """RST both sides of every open connection; returns how many were reset."""
        connections = list(self._connections)
        for conn in connections:
            conn.reset()
        return len(connections)

    async def _handle(self, client: trio.SocketStream) -> None:
        conn = _Connection(client)
        self._connections.add(conn)
        try:
            with conn.cancel_scope:
                await self._relay(conn)
        finally:
            self._connections.discard(conn)
            with trio.CancelScope(shield=True):
                await conn.close()

    async def _relay(self, conn: _Connection) -> None:
        # As behind a DROP in either direction, the handshake with the broker cannot
        # complete while the link is blocked.
        while self.forward.blocked or self.backward.blocked:
            await self.forward.wait_open()
            await self.backward.wait_open()
        upstream = self.upstream
        if upstream is None:
            conn.abortive = True
            return
        try:
            conn.upstream = await trio.open_tcp_stream(upstream.host, upstream.port)
        except OSError:
            conn.abortive = True  # refused: the client sees its connection reset
            return
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_direction, conn.client, conn.upstream, self.forward, conn)
            nursery.start_soon(_direction, conn.upstream, conn.client, self.backward, conn)


async def _direction(
    source: trio.SocketStream, sink: trio.SocketStream, link: Link, conn: _Connection
) -> None:
    """Relay one direction; once its source closes and the queue drains, end the connection."""
    send, receive = trio.open_memory_channel[tuple[float, bytes]](BUFFERED_CHUNKS)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_read, source, send, link)
        nursery.start_soon(_write, receive, sink, link, conn)


async def _read(
    source: trio.SocketStream,
    send: trio.MemorySendChannel[tuple[float, bytes]],
    link: Link,
) -> None:
    deliver_at = 0.0
    async with send:
        while True:
            try:
                data = await source.receive_some(CHUNK_BYTES)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            if not data:
                return
            deliver_at = max(deliver_at, trio.current_time() + link.delay_s())
            await send.send((deliver_at, data))


async def _write(
    receive: trio.MemoryReceiveChannel[tuple[float, bytes]],
    sink: trio.SocketStream,
    link: Link,
    conn: _Connection,
) -> None:
    async with receive:
        async for deliver_at, data in receive:
            await trio.sleep_until(deliver_at)
            view = memoryview(data)
            while view:
                piece = view[: link.slice_bytes()]
                await trio.sleep_until(link.reserve(len(piece)))
                # No checkpoint between this check and the send: a block that starts
                # while we slept holds the piece.
                await link.wait_open()
                try:
                    await sink.send_all(piece)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    conn.cancel_scope.cancel()
                    return
                view = view[len(piece) :]
    # The source closed (or failed) and everything ahead of that was delivered: close
    # the whole connection, as Kafka peers do not half-close.
    conn.cancel_scope.cancel()
