"""`DurableQuorumStore`: the election state (epoch, vote, leader) in Kafka's `quorum-state` file.

The file sits in the metadata log's directory and holds Kafka's QuorumStateData as
JSON (`leaderEpoch`, `votedId`, `leaderId`, `currentVoters`, ...). It is replaced
whole: written to `quorum-state.tmp`, fsynced, renamed over the old one and the
directory fsynced, so a crash leaves either the old state or the new one.

As with the log, `write` (called synchronously by the Raft core) records that a
write is owed and `sync()` performs it; the driver awaits `sync()` before any
message of that step leaves the node, so a vote is durable before it is cast.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from reference_broker.env import Storage

from .metadata_log import METADATA_PARTITION, METADATA_TOPIC, DeferredSync
from .raft.state import ElectionState, QuorumStateStore

QUORUM_STATE_FILE = "quorum-state"
_DATA_VERSION = 0
_NONE = -1


class QuorumStateError(Exception):
    """The quorum-state file is unreadable or belongs to another quorum."""


class _Voter(msgspec.Struct):
    voterId: int


class _QuorumStateData(msgspec.Struct, omit_defaults=False):
    """Kafka's QuorumStateData, as Kafka writes it to the quorum-state file."""

    clusterId: str
    leaderId: int
    leaderEpoch: int
    votedId: int
    appliedOffset: int
    currentVoters: list[_Voter]
    data_version: int = _DATA_VERSION


class DurableQuorumStore(QuorumStateStore):
    """A `QuorumStateStore` whose state survives crashes once `sync()` returns."""

    def __init__(
        self, storage: Storage, directory: str, voters: Iterable[int], cluster_id: str = ""
    ) -> None:
        super().__init__()
        self._storage = storage
        self._directory = directory
        self._voters = sorted(voters)
        self._cluster_id = cluster_id
        self._debt = DeferredSync(self._write_file)

    @classmethod
    def open(
        cls,
        storage: Storage,
        voters: Iterable[int],
        *,
        cluster_id: str = "",
        directory: str = f"{METADATA_TOPIC}-{METADATA_PARTITION}",
    ) -> DurableQuorumStore:
        """Load the state from `directory/quorum-state` (a fresh state when there is none).

        Raises QuorumStateError when the file is unreadable or was written for
        another cluster or another set of voters: reusing it could cast a second
        vote in an epoch, so a person must decide.
        """
        store = cls(storage, directory, voters, cluster_id)
        path = store.path
        if storage.exists(f"{path}.tmp"):
            storage.remove(f"{path}.tmp")  # an interrupted replacement; the old file stands
        if storage.exists(path):
            store._state = store._parse(path)
        return store

    @property
    def cluster_id(self) -> str:
        """The cluster id this quorum's members share."""
        return self._cluster_id

    @property
    def path(self) -> str:
        """The file's path in the node's storage."""
        return f"{self._directory}/{QUORUM_STATE_FILE}"

    def _parse(self, path: str) -> ElectionState:
        f = self._storage.open(path, create=False)
        try:
            raw = f.read(0, f.size())
        finally:
            f.close()
        try:
            data = msgspec.json.decode(raw, type=_QuorumStateData)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise QuorumStateError(
                f"{path} is not a valid quorum-state file ({exc}); restore it from a backup "
                "or, if this node's metadata may be discarded, delete the metadata log "
                "directory so it rejoins as a new voter"
            ) from None
        voters = sorted(v.voterId for v in data.currentVoters)
        if voters and voters != self._voters:
            raise QuorumStateError(
                f"{path} was written for voters {voters} but controller.quorum.voters names "
                f"{self._voters}; changing the voter set of an existing quorum is not supported"
            )
        if data.clusterId and self._cluster_id and data.clusterId != self._cluster_id:
            raise QuorumStateError(
                f"{path} belongs to cluster {data.clusterId!r}, this node is configured for "
                f"{self._cluster_id!r}"
            )
        return ElectionState(
            epoch=data.leaderEpoch,
            voted_id=None if data.votedId == _NONE else data.votedId,
            leader_id=None if data.leaderId == _NONE else data.leaderId,
        )

    def write(self, state: ElectionState) -> None:
        """Take `state` as current; it is durable once `sync()` returns."""
        super().write(state)
        self._debt.owe()

    @property
    def sync_owed(self) -> bool:
        """Whether the current state is not known durable yet."""
        return self._debt.owed

    async def sync(self) -> None:
        """Write the current state durably (temp file, fsync, rename, directory fsync)."""
        await self._debt.sync()

    async def _write_file(self) -> None:
        state = self.read()
        data = _QuorumStateData(
            clusterId=self._cluster_id,
            leaderId=_NONE if state.leader_id is None else state.leader_id,
            leaderEpoch=state.epoch,
            votedId=_NONE if state.voted_id is None else state.voted_id,
            appliedOffset=0,
            currentVoters=[_Voter(v) for v in self._voters],
        )
        self._storage.makedirs(self._directory)
        tmp = f"{self.path}.tmp"
        f = self._storage.open(tmp)
        try:
            f.truncate(0)
            f.append(msgspec.json.encode(data))
            await f.fsync()
        finally:
            f.close()
        self._storage.rename(tmp, self.path)
        await self._storage.fsync_dir(self._directory)
