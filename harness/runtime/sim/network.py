"""The simulated network: trio streams between hosts over faultable directed links.

`SimNetwork` is the fabric. Every host (broker node or client) has a name; a
connection between two hosts is a pair of `_Pipe`s, one per direction, and each pipe
rides the directed `Link` from its sender to its receiver. A link can be

- held (`block`): bytes wait in the pipe, as behind a firewall DROP — nothing is
  lost, readers see nothing, writers stall once the pipe's buffer (a socket buffer)
  is full, and everything flows when the link is released;
- degraded (`LinkFault`): latency with jitter (never reordering, TCP is a stream)
  and a bandwidth limit that serializes bytes;
- reset: every connection of a host gets an RST, pending and later calls on both
  ends raise `trio.BrokenResourceError`.

A connect needs the SYN to reach the listener and the SYN-ACK to come back, so it
waits while either direction is held (a real DROP: it completes after the heal or
the caller's timeout fires first), and is refused at once when nothing listens —
unless the link is held, in which case the caller cannot tell and waits.

`HostNetwork` is one incarnation of a host's view (it implements the broker's
`Network` and the client's): when the incarnation crashes its listeners vanish,
its peers receive an RST after whatever it had already sent, and its own calls
raise `NodeCrashedError`. A paused host's calls wait at its gate (see `SimHost`).
"""

from __future__ import annotations

import math
import random
from collections import deque
from dataclasses import dataclass, field

import trio

from nemesis.target import LinkFault

from .clock import Agenda
from .errors import NodeCrashedError

# Bytes a pipe buffers before its writer stalls (a socket's send + receive buffers).
DEFAULT_PIPE_CAPACITY = 4 * 1024 * 1024

_FIN = b""  # a graceful close, queued behind the data as TCP's FIN is


class _ResetMarker:
    """An RST queued behind data (a crashed process's kernel resets its connections)."""


_RST = _ResetMarker()


class SimHost:
    """A named host; its gate is how a pause freezes everything the host does.

    Pause model (SIGSTOP): every network call and fsync of a paused host waits at
    the gate until resume. Tasks woken by timers during the pause may compute, but
    nothing they do can leave the host — their sends, accepts, connects and fsyncs
    wait — so from outside the host is frozen, and timers that expired during the
    pause act right after the resume, as after SIGCONT. Peers' bytes still reach
    the host's buffers and connects to it still complete (the kernel answers).
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.paused = False
        self._resumed = trio.Event()

    def pause(self) -> None:
        """Freeze the host's I/O."""
        if not self.paused:
            self.paused = True
            self._resumed = trio.Event()

    def resume(self) -> None:
        """Let the host's I/O proceed."""
        self.paused = False
        self._resumed.set()

    async def gate(self) -> None:
        """Wait while the host is paused (always a checkpoint)."""
        while self.paused:
            await self._resumed.wait()
        await trio.lowlevel.checkpoint()

    async def gate_if_paused(self) -> None:
        """Wait while the host is paused; not a checkpoint when it is not (callers are)."""
        while self.paused:
            await self._resumed.wait()


@dataclass
class Link:
    """The directed link src -> dst: held or not, degraded or not."""

    src: str
    dst: str
    held: bool = False
    fault: LinkFault | None = None
    pipes: dict[_Pipe, None] = field(default_factory=dict)

    def notify(self) -> None:
        """Wake every reader and writer on this link to re-check its state."""
        for pipe in self.pipes:
            pipe.notify()


class _Pipe:
    """One direction of a connection: chunks in flight with their delivery times.

    The reader wakes once per delivery, at the moment the head chunk arrives: on the
    simulation's clock an `Agenda` event reschedules it then; on other clocks it waits
    in a cancel scope whose deadline a sender moves when its chunk becomes the head.
    Either way a sender never wakes the reader early. The reader parks itself and is
    rescheduled directly (a `trio.Event` per wake-up would cost an Event, a parking
    lot and a lookup per delivered chunk). Writers stalled on a full buffer wait on
    their own event (`_room`).
    """

    __slots__ = (
        "_reader",
        "_room",
        "agenda",
        "arrival",
        "buffered",
        "chunks",
        "last_at",
        "link",
        "reader_gone",
        "reader_waiting",
        "reset",
        "sender_free_at",
        "wake_at",
        "writers_waiting",
    )

    def __init__(self, link: Link, agenda: Agenda | None) -> None:
        self.link = link
        self.agenda = agenda
        self.chunks: deque[tuple[float, bytes | _ResetMarker]] = deque()
        self.buffered = 0
        self.last_at = -math.inf
        self.sender_free_at = -math.inf
        self.reset = False
        self.reader_gone = False
        self._reader: trio.lowlevel.Task | None = None  # parked in wait_arrival
        self._room = trio.Event()
        self.reader_waiting = False
        self.arrival: trio.CancelScope | None = None  # without an agenda
        self.wake_at = math.inf  # the earliest agenda wake-up pending for the reader
        self.writers_waiting = 0
        link.pipes[self] = None

    def notify(self) -> None:
        """The pipe's state changed (held, reset, closed): every waiter re-checks."""
        self._wake_reader()
        self.room()

    def _wake_reader(self) -> None:
        task = self._reader
        if task is not None:
            self._reader = None
            trio.lowlevel.reschedule(task)

    async def _park_reader(self) -> None:
        self._reader = trio.lowlevel.current_task()
        await trio.lowlevel.wait_task_rescheduled(self._unpark_reader)

    def _unpark_reader(self, _: object) -> trio.lowlevel.Abort:
        self._reader = None  # cancelled: nothing may reschedule it now
        return trio.lowlevel.Abort.SUCCEEDED

    def room(self) -> None:
        """Bytes left the buffer: wake writers waiting for room (if any)."""
        if self.writers_waiting:
            self._room.set()
            self._room = trio.Event()

    def push(self, at: float, chunk: bytes | _ResetMarker) -> None:
        """Queue a chunk that arrives at `at`; the reader wakes then, not now."""
        first = not self.chunks
        self.chunks.append((at, chunk))
        if not first or not self.reader_waiting:
            return  # the reader waits for an earlier head, or will look when it reads
        if at <= trio.current_time():
            self._wake_reader()
        elif not self.link.held:
            self._arm(at)

    def _arm(self, at: float) -> None:
        if self.agenda is not None:
            if at < self.wake_at:
                self.wake_at = at
                self.agenda.call_at(at, self._arrived)
        elif self.arrival is not None and at < self.arrival.deadline:
            self.arrival.deadline = at

    def _arrived(self) -> None:
        self.wake_at = math.inf
        self._wake_reader()

    async def wait_arrival(self, deadline: float) -> None:
        """The reader's wait: until `deadline` (the head's arrival), a push or a change."""
        self.reader_waiting = True
        try:
            if self.agenda is not None:
                if deadline != math.inf:
                    self._arm(deadline)
                await self._park_reader()
                return
            with trio.CancelScope(deadline=deadline) as scope:
                self.arrival = scope
                try:
                    await self._park_reader()
                finally:
                    self.arrival = None
        finally:
            self.reader_waiting = False

    async def wait_room(self) -> None:
        """A writer's wait: until bytes leave the buffer or the pipe's state changes."""
        event = self._room
        self.writers_waiting += 1
        try:
            await event.wait()
        finally:
            self.writers_waiting -= 1

    def detach(self) -> None:
        self.link.pipes.pop(self, None)

    def abort(self) -> None:
        """RST now: drop everything in flight and fail both ends."""
        self.reset = True
        self.chunks.clear()
        self.buffered = 0
        self.detach()
        self.notify()


class SimStream(trio.abc.Stream):
    """One end of a simulated connection, owned by one host incarnation."""

    def __init__(self, owner: HostNetwork, outgoing: _Pipe, incoming: _Pipe, peer: str) -> None:
        self._owner = owner
        self._out = outgoing
        self._in = incoming
        self.peer = peer
        self._closed = False
        self._sending = False
        self._receiving = False

    def _check(self) -> None:
        self._owner.check_alive()
        if self._closed:
            raise trio.ClosedResourceError("stream was closed")

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Queue bytes on the link; stalls while the pipe's buffer is full.

        Not a schedule point unless it stalls (see `_send_all`)."""
        if self._sending:
            raise trio.BusyResourceError("another task is already sending on this stream")
        self._sending = True
        try:
            await self._send_all(data)
        finally:
            self._sending = False

    async def _send_all(self, data: bytes | bytearray | memoryview) -> None:
        # A cancel point always, a schedule point only when it must wait (full buffer,
        # paused host): queueing bytes that fit is instant, as for a socket with buffer
        # space, and a yield here would cost every request and response a task step.
        owner = self._owner
        if owner.host.paused:
            await owner.host.gate_if_paused()
        await trio.lowlevel.checkpoint_if_cancelled()
        if not owner.alive or self._closed:
            self._check()  # raises
        pipe = self._out
        size = len(data)
        fabric = self._owner.fabric
        while pipe.buffered > 0 and pipe.buffered + size > fabric.pipe_capacity:
            if pipe.reset:
                break
            await pipe.wait_room()
            self._check()
        if pipe.reset:
            raise trio.BrokenResourceError("connection reset by peer")
        if pipe.reader_gone or size == 0:
            return  # the peer closed: the kernel swallows what arrives
        pipe.buffered += size
        pipe.push(fabric.delivery_time(pipe, size), bytes(data))

    async def wait_send_all_might_not_block(self) -> None:
        """Wait until the pipe has room."""
        await self._owner.host.gate()
        self._check()
        while self._out.buffered >= self._owner.fabric.pipe_capacity and not self._out.reset:
            await self._out.wait_room()
            self._check()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """Bytes that have arrived (waiting for some); b"" once the peer closed."""
        if self._receiving:
            raise trio.BusyResourceError("another task is already receiving on this stream")
        self._receiving = True
        try:
            return await self._receive_some(max_bytes)
        finally:
            self._receiving = False

    async def _receive_some(self, max_bytes: int | None) -> bytes:
        pipe = self._in
        owner = self._owner
        waited = False
        while True:
            # Woken during a pause or not, a frozen host takes nothing until resumed.
            if owner.host.paused:
                await owner.host.gate_if_paused()
            if not owner.alive or self._closed:
                self._check()  # raises
            if pipe.reset:
                raise trio.BrokenResourceError("connection reset by peer")
            deadline = math.inf
            if pipe.chunks and not pipe.link.held:
                at, chunk = pipe.chunks[0]
                if at <= trio.current_time():
                    if not waited:
                        # Every receive is a checkpoint, even when bytes are ready.
                        await trio.lowlevel.checkpoint()
                        waited = True
                        continue
                    return self._take(pipe, chunk, max_bytes)
                deadline = at
            await pipe.wait_arrival(deadline)
            waited = True

    def _take(self, pipe: _Pipe, chunk: bytes | _ResetMarker, max_bytes: int | None) -> bytes:
        if isinstance(chunk, _ResetMarker):
            pipe.abort()
            raise trio.BrokenResourceError("connection reset by peer (its host crashed)")
        if chunk == _FIN:
            return b""  # stays queued: every later receive sees the end of stream too
        if max_bytes is not None and max_bytes < len(chunk):
            at = pipe.chunks[0][0]
            pipe.chunks[0] = (at, chunk[max_bytes:])
            chunk = chunk[:max_bytes]
        else:
            pipe.chunks.popleft()
        pipe.buffered -= len(chunk)
        pipe.room()
        return chunk

    async def send_eof(self) -> None:
        """Half-close: the peer reads b"" after the bytes already sent."""
        await self._owner.host.gate()
        self._check()
        self._queue_fin()

    def _queue_fin(self) -> None:
        pipe = self._out
        if not pipe.reset and not pipe.reader_gone:
            pipe.push(self._owner.fabric.delivery_time(pipe, 0), _FIN)

    async def aclose(self) -> None:
        """Close this end: FIN to the peer, later data from it is discarded."""
        if not self._closed:
            self._closed = True
            if self._owner.alive:
                self._queue_fin()
            self._in.reader_gone = True
            self._in.chunks.clear()
            self._in.buffered = 0
            self._in.detach()
            self._out.notify()
            self._in.notify()
            self._owner.streams.pop(self, None)
        await trio.lowlevel.checkpoint()

    def crash(self) -> None:
        """The owning incarnation died: RST queued behind its data, inbound discarded."""
        if self._closed:
            return
        self._closed = True
        pipe = self._out
        if not pipe.reset and not pipe.reader_gone:
            pipe.push(self._owner.fabric.delivery_time(pipe, 0), _RST)
        self._in.reader_gone = True
        self._in.chunks.clear()
        self._in.buffered = 0
        self._in.detach()
        self._in.notify()

    def reset(self) -> None:
        """RST both directions now (a nemesis connection reset)."""
        self._out.abort()
        self._in.abort()


class SimListener(trio.abc.Listener[trio.abc.Stream]):
    """Accepts streams that peers' connects hand over (the kernel's accept queue)."""

    def __init__(self, owner: HostNetwork, port: int) -> None:
        self._owner = owner
        self.port = port
        self._queue: deque[SimStream] = deque()
        self._changed = trio.Event()
        self.closed = False

    def enqueue(self, stream: SimStream) -> None:
        self._queue.append(stream)
        self._changed.set()
        self._changed = trio.Event()

    async def accept(self) -> trio.abc.Stream:
        """The next incoming connection (waits while the host is paused)."""
        while True:
            await self._owner.host.gate()
            self._owner.check_alive()
            if self.closed:
                raise trio.ClosedResourceError("listener was closed")
            if self._queue:
                return self._queue.popleft()
            event = self._changed
            await event.wait()

    async def aclose(self) -> None:
        """Stop listening; queued, never-accepted connections are reset."""
        self._shut()
        await trio.lowlevel.checkpoint()

    def _shut(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._owner.fabric.unlisten(self._owner.host.name, self.port, self)
        while self._queue:
            self._queue.popleft().crash()
        self._changed.set()


class HostNetwork:
    """One incarnation of a host's network: listen and connect, as `Network` wants."""

    def __init__(self, fabric: SimNetwork, host: SimHost) -> None:
        self.fabric = fabric
        self.host = host
        self.alive = True
        self.streams: dict[SimStream, None] = {}
        self.listeners: list[SimListener] = []

    def check_alive(self) -> None:
        """Raise NodeCrashedError if this incarnation has crashed."""
        if not self.alive:
            raise NodeCrashedError(f"{self.host.name} has crashed; its sockets are gone")

    async def listen(self, host: str, port: int) -> list[trio.abc.Listener[trio.abc.Stream]]:
        """Listen on this host's own name; another name cannot be bound."""
        await self.host.gate()
        self.check_alive()
        if host != self.host.name:
            raise OSError(f"{self.host.name} cannot bind {host}:{port}: not its address")
        listener = SimListener(self, port)
        self.fabric.listen(host, port, listener)
        self.listeners.append(listener)
        return [listener]

    async def connect(self, host: str, port: int) -> trio.abc.Stream:
        """Open a stream to host:port; OSError when refused, waits across a held link."""
        await self.host.gate()
        self.check_alive()
        return await self.fabric.connect(self, host, port)

    def crash(self) -> None:
        """End this incarnation: listeners vanish, peers get RSTs, calls raise."""
        self.alive = False
        for listener in self.listeners:
            listener._shut()
        for stream in list(self.streams):
            stream.crash()
        self.streams.clear()


class SimNetwork:
    """The fabric: hosts, directed links, listeners; all randomness from one rng."""

    def __init__(
        self,
        rng: random.Random,
        *,
        base_latency_ms: float = 0.1,
        pipe_capacity: int = DEFAULT_PIPE_CAPACITY,
    ) -> None:
        self.rng = rng
        self.base_latency_s = base_latency_ms / 1000
        self.pipe_capacity = pipe_capacity
        self.hosts: dict[str, SimHost] = {}
        self.links: dict[tuple[str, str], Link] = {}
        self._listeners: dict[tuple[str, int], SimListener] = {}
        self._links_changed = trio.Event()
        self._incarnations: dict[str, HostNetwork] = {}
        self._agenda: Agenda | None = None
        self._agenda_checked = False

    @property
    def agenda(self) -> Agenda | None:
        """The run's timer agenda (see `clock.Agenda`), None when its clock has none.

        Installed on first use, which must be inside the trio run.
        """
        if not self._agenda_checked:
            self._agenda = Agenda.for_this_run()
            self._agenda_checked = True
        return self._agenda

    # -- hosts -------------------------------------------------------------------------

    def add_host(self, name: str) -> SimHost:
        """Register a host name (idempotent)."""
        host = self.hosts.get(name)
        if host is None:
            host = self.hosts[name] = SimHost(name)
        return host

    def incarnate(self, name: str) -> HostNetwork:
        """A fresh network view for a (re)started host; the previous one must be crashed."""
        previous = self._incarnations.get(name)
        if previous is not None and previous.alive:
            raise RuntimeError(f"{name} is still running; crash it before starting it again")
        view = HostNetwork(self, self.add_host(name))
        self._incarnations[name] = view
        return view

    def crash(self, name: str) -> None:
        """Crash the host's current incarnation (no-op when none is alive)."""
        view = self._incarnations.get(name)
        if view is not None and view.alive:
            view.crash()

    # -- links -------------------------------------------------------------------------

    def link(self, src: str, dst: str) -> Link:
        """The directed link src -> dst (created on first use)."""
        key = (src, dst)
        link = self.links.get(key)
        if link is None:
            link = self.links[key] = Link(src, dst)
        return link

    def _changed(self, link: Link) -> None:
        link.notify()
        self._links_changed.set()
        self._links_changed = trio.Event()

    def block(self, src: str, dst: str) -> None:
        """Hold every byte from src to dst until unblocked."""
        link = self.link(src, dst)
        if not link.held:
            link.held = True
            self._changed(link)

    def unblock(self, src: str, dst: str) -> None:
        """Let src -> dst flow again; held bytes are delivered."""
        link = self.link(src, dst)
        if link.held:
            link.held = False
            self._changed(link)

    def set_fault(self, src: str, dst: str, fault: LinkFault | None) -> None:
        """Degrade src -> dst (latency, jitter, bandwidth) or restore it with None."""
        link = self.link(src, dst)
        link.fault = fault
        self._changed(link)

    def heal(self) -> None:
        """Release every held link and clear every link fault."""
        for link in self.links.values():
            if link.held or link.fault is not None:
                link.held = False
                link.fault = None
                self._changed(link)

    def reset(self, name: str) -> None:
        """RST every open connection to or from the host."""
        view = self._incarnations.get(name)
        for other in self._incarnations.values():
            for stream in list(other.streams):
                if other is view or stream.peer == name:
                    stream.reset()

    def delivery_time(self, pipe: _Pipe, size: int) -> float:
        """When `size` bytes sent now on `pipe` arrive: bandwidth, latency, jitter, FIFO."""
        now = trio.current_time()
        fault = pipe.link.fault
        departs = now
        latency = self.base_latency_s
        if fault is not None:
            if fault.bandwidth_bytes_per_s:
                departs = max(now, pipe.sender_free_at) + size / fault.bandwidth_bytes_per_s
                pipe.sender_free_at = departs
            latency += fault.latency_ms / 1000
            if fault.jitter_ms:
                latency += self.rng.uniform(-fault.jitter_ms, fault.jitter_ms) / 1000
        at = max(departs + max(latency, 0.0), pipe.last_at)
        pipe.last_at = at
        return at

    # -- listeners and connects ---------------------------------------------------------

    def listen(self, host: str, port: int, listener: SimListener) -> None:
        """Register a listener; OSError if the address is taken."""
        if (host, port) in self._listeners:
            raise OSError(f"address {host}:{port} already in use")
        self._listeners[(host, port)] = listener

    def unlisten(self, host: str, port: int, listener: SimListener) -> None:
        """Remove a listener (if it is still the one registered)."""
        if self._listeners.get((host, port)) is listener:
            del self._listeners[(host, port)]

    async def connect(self, client: HostNetwork, host: str, port: int) -> SimStream:
        """Handshake client -> host:port through the links, then hand the server end over."""
        if host not in self.hosts:
            raise OSError(f"unknown host {host!r} in the simulated network")
        src = client.host.name
        forward, backward = self.link(src, host), self.link(host, src)
        while forward.held or backward.held:
            event = self._links_changed
            await event.wait()
        # SYN out, SYN-ACK back.
        await trio.sleep_until(self._handshake_done_at(forward, backward))
        client.check_alive()
        listener = self._listeners.get((host, port))
        if listener is None:
            raise ConnectionRefusedError(f"connection to {host}:{port} refused: nothing listens")
        agenda = self.agenda
        to_server, to_client = _Pipe(forward, agenda), _Pipe(backward, agenda)
        client_end = SimStream(client, to_server, to_client, peer=host)
        server_end = SimStream(listener._owner, to_client, to_server, peer=src)
        client.streams[client_end] = None
        listener._owner.streams[server_end] = None
        listener.enqueue(server_end)
        return client_end

    def _handshake_done_at(self, forward: Link, backward: Link) -> float:
        now = trio.current_time()
        total = 2 * self.base_latency_s
        for link in (forward, backward):
            if link.fault is not None:
                total += link.fault.latency_ms / 1000
        return now + total
