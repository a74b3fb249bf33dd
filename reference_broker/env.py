"""The node environment: the only door between the broker and the world (DESIGN.md §2).

The broker never opens a socket, a file, reads the wall clock or global randomness
itself. A runtime hands it a `NodeEnv`; the OS runtime (`reference_broker.os_env`)
backs it with TCP, files and the wall clock, the simulated runtime (issue 5) with
memory streams, an in-memory disk and trio's MockClock.

Timeouts and sleeps use trio's own clock (`trio.current_time`, `trio.sleep`,
`trio.move_on_after`), which the simulation replaces with a MockClock; `Clock.now_ms`
exists only for values that end up in data, such as record timestamps, so that a
runtime can skew it per node.

Storage is synchronous except for `fsync`: reads and appends hit the page cache (or
process memory) and are fast, while fsync is the one call worth handing to a thread
in the OS runtime and worth delaying in the simulation.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Protocol

import trio


class Network(Protocol):
    """Where a node listens and how it dials other nodes."""

    async def listen(self, host: str, port: int) -> list[trio.abc.Listener[trio.abc.Stream]]:
        """Open listeners on host:port (port 0 picks a free port)."""
        ...

    async def connect(self, host: str, port: int) -> trio.abc.Stream:
        """Open a stream to host:port; raises OSError when it cannot."""
        ...


class StorageFile(Protocol):
    """An open file in a node's storage: append-mostly, random reads, explicit fsync."""

    @property
    def path(self) -> str:
        """The file's path relative to the storage root."""
        ...

    def size(self) -> int:
        """Bytes in the file as the node sees it (durable plus volatile)."""
        ...

    def read(self, offset: int, size: int) -> bytes:
        """Up to `size` bytes from `offset`; shorter at end of file."""
        ...

    def append(self, data: bytes) -> None:
        """Append bytes; volatile until the next fsync."""
        ...

    def write_at(self, offset: int, data: bytes) -> None:
        """Overwrite bytes at `offset` (used for preallocated index files)."""
        ...

    def truncate(self, size: int) -> None:
        """Cut the file to `size` bytes."""
        ...

    async def fsync(self) -> None:
        """Make everything written so far durable."""
        ...

    def close(self) -> None:
        """Release the handle; unsynced data stays volatile as the runtime defines."""
        ...


class Storage(Protocol):
    """A directory tree owned by one node. Paths are relative, '/'-separated."""

    def open(self, path: str, *, create: bool = True) -> StorageFile:
        """Open a file for reading and appending, creating it (and parents) if asked."""
        ...

    def exists(self, path: str) -> bool:
        """Whether a file or directory exists."""
        ...

    def listdir(self, path: str) -> list[str]:
        """Names in a directory, sorted; empty when it does not exist."""
        ...

    def makedirs(self, path: str) -> None:
        """Create a directory and its parents; no error if present."""
        ...

    def rename(self, src: str, dst: str) -> None:
        """Atomically replace dst with src."""
        ...

    def remove(self, path: str) -> None:
        """Delete a file, or a directory with everything under it."""
        ...

    async def fsync_dir(self, path: str) -> None:
        """Make a directory's entries (creates, renames, removes) durable."""
        ...


class Clock(Protocol):
    """The node's idea of wall-clock time, for values stored in data."""

    def now_ms(self) -> int:
        """Milliseconds since the Unix epoch, as this node believes."""
        ...


@dataclass
class NodeEnv:
    """Everything a broker may touch: network, storage, clock and a seeded rng."""

    network: Network
    storage: Storage
    clock: Clock
    rng: random.Random
