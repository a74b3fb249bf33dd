"""The node's own metadata, persisted in its storage: cluster id, topics, producer-id blocks.

Kafka keeps this in ZooKeeper or the KRaft metadata log; a single node needs only a
small document, rewritten atomically (write a temporary file, fsync it, rename it
over the old one, fsync the directory) on every change, so that a crash leaves
either the old or the new state and never a torn one.
"""

from __future__ import annotations

import base64
import random
import uuid
from collections.abc import Sequence

import msgspec
import trio

from ..env import Storage

METADATA_PATH = "__cluster_metadata.json"
_TEMPORARY_PATH = METADATA_PATH + ".tmp"


class MetadataCorruptError(RuntimeError):
    """The metadata file exists but cannot be read; the broker refuses to start on it."""


class MetadataMissingError(MetadataCorruptError):
    """The metadata file is gone but the data dir holds logs: which topics exist is unknown."""


class TopicRecord(msgspec.Struct, frozen=True):
    """One topic as the controller knows it."""

    name: str
    topic_id: str  # canonical UUID string
    partitions: int
    replication_factor: int
    configs: dict[str, str] = {}

    @property
    def uuid(self) -> uuid.UUID:
        """The topic id as a UUID."""
        return uuid.UUID(self.topic_id)


class MetadataState(msgspec.Struct):
    """Everything the node persists about the cluster."""

    cluster_id: str
    node_id: int
    topics: dict[str, TopicRecord] = {}
    # Producer ids below this value may have been handed out; never reuse them.
    producer_id_block_end: int = 0
    # name -> topic id of topics deleted here: the only logs the broker may remove at
    # start-up are theirs (a deletion cut short by a crash).
    deleted_topics: dict[str, str] = {}


def random_uuid(rng: random.Random) -> uuid.UUID:
    """A version-4 UUID drawn from the node's seeded rng (never the zero UUID)."""
    return uuid.UUID(int=rng.getrandbits(128), version=4)


def new_cluster_id(rng: random.Random) -> str:
    """Kafka's cluster id format: a UUID in URL-safe base64 without padding (22 chars)."""
    return base64.urlsafe_b64encode(random_uuid(rng).bytes).rstrip(b"=").decode()


class MetadataStore:
    """Holds the `MetadataState` and writes it back atomically on `save()`."""

    def __init__(self, storage: Storage, state: MetadataState) -> None:
        self._storage = storage
        self.state = state
        self._lock = trio.Lock()
        self._encoder = msgspec.json.Encoder()

    @classmethod
    async def open(
        cls,
        storage: Storage,
        rng: random.Random,
        node_id: int,
        *,
        existing_logs: Sequence[str] = (),
    ) -> MetadataStore:
        """Load the node's metadata, or create it (fresh cluster id) on an empty data dir.

        `existing_logs` names the partition directories already in the data dir: with
        any, a missing metadata file is an error (MetadataMissingError), never a reason
        to start afresh, since a fresh registry would disown those logs and a fresh
        producer-id block would hand out ids again.
        """
        if not storage.exists(METADATA_PATH) and existing_logs:
            # Users' topics first: they are what a reader of this message worries about.
            ordered = sorted(existing_logs, key=lambda name: (name.startswith("__"), name))
            shown = ", ".join(ordered[:5])
            more = f" and {len(existing_logs) - 5} more" if len(existing_logs) > 5 else ""
            raise MetadataMissingError(
                f"{METADATA_PATH} is missing from the data dir, which holds "
                f"{len(existing_logs)} partition logs ({shown}{more}); without it the broker "
                "cannot tell which topics exist. Restore the file (from a backup or another "
                "copy of this data dir), or move the partition directories away to start "
                "with an empty node"
            )
        if storage.exists(METADATA_PATH):
            handle = storage.open(METADATA_PATH, create=False)
            try:
                raw = handle.read(0, handle.size())
            finally:
                handle.close()
            try:
                state = msgspec.json.decode(raw, type=MetadataState)
            except msgspec.DecodeError as exc:
                raise MetadataCorruptError(
                    f"{METADATA_PATH} in the data dir is unreadable ({exc}); "
                    "restore it or start from an empty data dir"
                ) from exc
            if state.node_id != node_id:
                raise MetadataCorruptError(
                    f"the data dir belongs to node.id={state.node_id}, "
                    f"but this broker is configured as node.id={node_id}"
                )
            return cls(storage, state)
        store = cls(storage, MetadataState(cluster_id=new_cluster_id(rng), node_id=node_id))
        await store.save()
        return store

    async def save(self) -> None:
        """Durably replace the stored document with the current state."""
        async with self._lock:
            data = self._encoder.encode(self.state)
            handle = self._storage.open(_TEMPORARY_PATH, create=True)
            try:
                handle.truncate(0)
                handle.append(data)
                await handle.fsync()
            finally:
                handle.close()
            self._storage.rename(_TEMPORARY_PATH, METADATA_PATH)
            await self._storage.fsync_dir("")
