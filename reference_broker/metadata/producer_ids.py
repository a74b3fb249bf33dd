"""Producer id allocation that never repeats an id, even across crashes and restarts.

As Kafka's ProducerIdManager: ids are handed out from blocks, and the end of the
current block is persisted *before* any id from it is used. After a crash the node
starts at the persisted end, skipping whatever was left of the old block.
"""

from __future__ import annotations

import trio

from .store import MetadataStore

BLOCK_SIZE = 1000


class ProducerIdManager:
    """Allocates producer ids for InitProducerId."""

    def __init__(
        self, store: MetadataStore, block_size: int = BLOCK_SIZE, *, base: int = 0
    ) -> None:
        self._store = store
        self._block_size = block_size
        # Nothing of the persisted block is trusted after a restart: start past it. In a
        # cluster each node hands out ids from its own range (`base`), so two nodes never
        # give two producers one id (Kafka's controller hands out blocks instead).
        self._next = max(store.state.producer_id_block_end, base)
        self._block_end = self._next
        # Held across the save, so no id of a new block is handed out before it is durable.
        self._lock = trio.Lock()

    async def next_id(self) -> int:
        """A producer id never returned before by this node."""
        async with self._lock:
            if self._next >= self._block_end:
                block_end = self._next + self._block_size
                self._store.state.producer_id_block_end = block_end
                await self._store.save()
                self._block_end = block_end
            producer_id = self._next
            self._next += 1
            return producer_id
