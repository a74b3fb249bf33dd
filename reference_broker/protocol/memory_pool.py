"""A broker-wide byte budget for request frames: Kafka's `queued.max.request.bytes` pool.

`socket.request.max.bytes` bounds one frame; it does nothing against many connections
each sending most of a large frame. Every connection therefore reserves a frame's
announced size from one `MemoryPool` before it reads the frame's body, and gives it
back once the request has been handled. While the pool cannot hold a frame, that
connection simply stops reading its socket (Kafka mutes the channel): the client's
bytes wait in kernel buffers and then in the client, not in the broker's memory.

A reservation is all-or-nothing for the whole frame, so a connection that holds one can
always finish its frame: partial reservations could leave every connection holding part
of what it needs and none able to complete. Waiters are not served in arrival order but
whenever their frame fits, so small requests (ApiVersions, Metadata) still pass while
large ones wait for room.
"""

from __future__ import annotations

import trio


class MemoryPool:
    """`capacity` bytes shared by every connection's frames; None means unbounded."""

    def __init__(self, capacity: int | None) -> None:
        if capacity is not None and capacity < 0:
            raise ValueError(f"a memory pool needs a non-negative capacity, not {capacity}")
        self.capacity = capacity
        self.in_use = 0
        self._freed = trio.lowlevel.ParkingLot()

    def fits(self, size: int) -> bool:
        """Whether `size` more bytes can be reserved right now."""
        return self.capacity is None or self.in_use + size <= self.capacity

    async def reserve(self, size: int) -> Reservation:
        """Wait until `size` bytes fit, then take them. Cancellation takes nothing.

        Raises ValueError for a size the pool could never hold (the broker's config
        keeps socket.request.max.bytes at or below the capacity, so frames never are).
        """
        if size < 0:
            raise ValueError(f"cannot reserve {size} bytes")
        if self.capacity is not None and size > self.capacity:
            raise ValueError(f"{size} bytes can never fit in a pool of {self.capacity}")
        while not self.fits(size):
            await self._freed.park()
        self.in_use += size
        return Reservation(self, size)

    def _give_back(self, size: int) -> None:
        self.in_use -= size
        # Every waiter rechecks: whichever frames fit now go ahead.
        self._freed.unpark_all()


class Reservation:
    """Bytes held in a `MemoryPool` for one frame; `release` (idempotent) returns them."""

    def __init__(self, pool: MemoryPool, size: int) -> None:
        self.pool = pool
        self.size = size
        self.released = False

    def release(self) -> None:
        """Give the bytes back to the pool (once)."""
        if not self.released:
            self.released = True
            self.pool._give_back(self.size)
