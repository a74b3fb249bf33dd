"""`ReplicaFetcher`: a follower pulling every partition it follows from one leader broker.

Kafka's ReplicaFetcherThread, one per source broker, as a trio task owning one
`PeerChannel`. Each round sends one Fetch (v12) for every partition that is ready:
`replica_id` = this node, the fetch offset is the follower's log end offset (LEO), the
last fetched epoch its newest leader epoch, and the current leader epoch the one the
metadata gave it, so a leader can fence a stale follower and tell one whose log
diverged where to cut (`diverging_epoch`). What comes back:

- records: appended with the leader's offsets and epochs (producer state, and so
  idempotent dedup, is rebuilt from them by the log); the follower's high watermark
  becomes the leader's, bounded by its own LEO;
- a diverging epoch: truncate to the smaller of the leader's and our own end offset
  of that epoch (Kafka's rule, which may cut below the local high watermark after an
  unclean election: the leader's log wins) and fetch again, naming the epoch the
  truncated log ends in; a truncation that changed neither the log end nor that epoch
  backs off, since the same fetch would get the same answer;
- OFFSET_OUT_OF_RANGE: behind the leader's log start, restart the log there; ahead
  of its log end (only without epoch information), truncate to its log end;
- any other error, or an unreachable leader: back off replica.fetch.backoff.ms.

The partition's state is re-checked after every await: a response for a partition
whose leader epoch or LEO changed meanwhile is dropped, and the next round fetches
again from the new state.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import trio
from kafka.protocol.api_message import ApiMessage
from kafka.protocol.consumer import FetchRequest, ListOffsetsRequest

from .. import bugs
from ..config import BrokerConfig, Listener
from ..env import Clock, Network
from ..errors import BrokerError, ErrorCode
from ..log.partition_log import PartitionLog
from ..peer import PeerChannel, PeerUnavailableError
from .partition import Partition

logger = logging.getLogger("faultline.broker.replication.fetcher")

FETCH_VERSION = 12
LIST_OFFSETS_VERSION = 4
LATEST_TIMESTAMP = -1
# Kafka's replica.fetch.response.max.bytes default: the whole response's budget.
RESPONSE_MAX_BYTES = 10 * 2**20

PartitionKey = tuple[str, int]

_FetchTopic = FetchRequest.FetchTopic
_FetchPartition = _FetchTopic.FetchPartition
_ListTopic = ListOffsetsRequest.ListOffsetsTopic
_ListPartition = _ListTopic.ListOffsetsPartition


@dataclass
class _Target:
    """A partition this fetcher serves, and until when it sits out after an error."""

    partition: Partition
    delayed_until: float = -math.inf


@dataclass(frozen=True)
class _Sent:
    """What a partition looked like when its fetch went out."""

    leader_epoch: int
    fetch_offset: int


def diverged_truncation_offset(log: PartitionLog, epoch: int, leader_end: int) -> int:
    """Where a follower cuts its log when the leader says its `epoch` ends at `leader_end`.

    Kafka's getOffsetTruncationState: the smaller of the leader's and our own end of
    that epoch. When we never had that epoch, cut to the end of the newest epoch we
    have below it; the next fetch names that older epoch and the leader checks again.
    """
    leo = log.log_end_offset
    own_epoch, own_end = log.end_offset_for_epoch(epoch)
    if own_epoch < 0 or own_end < 0:
        return min(leader_end, leo)
    if own_epoch != epoch:
        return min(own_end, leo)
    return min(own_end, leader_end, leo)


class ReplicaFetcher:
    """Fetches the partitions this node follows from broker `source_id` at `address`."""

    def __init__(
        self,
        *,
        node_id: int,
        source_id: int,
        address: Listener,
        network: Network,
        clock: Clock,
        config: BrokerConfig,
    ) -> None:
        self.node_id = node_id
        self.source_id = source_id
        self.address = address
        self._clock = clock
        self._config = config
        self._backoff_s = config.replica_fetch_backoff_ms / 1000
        self._targets: dict[PartitionKey, _Target] = {}
        self._changed = trio.Event()
        self._scope = trio.CancelScope()
        self._channel = PeerChannel(
            network,
            address.host,
            address.port,
            client_id=f"replica-fetcher-{node_id}-from-{source_id}",
            request_timeout_s=config.replica_socket_timeout_ms / 1000,
            max_response_bytes=max(RESPONSE_MAX_BYTES, config.replica_fetch_max_bytes) + 2**20,
        )
        self.rounds = 0
        """Fetch requests sent (for tests and diagnostics)."""

    def __repr__(self) -> str:
        return f"ReplicaFetcher({self.node_id} <- {self.source_id} at {self.address})"

    @property
    def partitions(self) -> set[PartitionKey]:
        """The partitions this fetcher serves."""
        return set(self._targets)

    def add(self, partition: Partition) -> None:
        """Serve `partition` (again) from the next round on, without delay."""
        self._targets[(partition.topic, partition.index)] = _Target(partition)
        self._wake()

    def remove(self, key: PartitionKey) -> None:
        """Stop serving a partition."""
        self._targets.pop(key, None)

    def stop(self) -> None:
        """Cancel the fetch loop (its channel closes on the way out)."""
        self._scope.cancel()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _delay(self, target: _Target) -> None:
        target.delayed_until = trio.current_time() + self._backoff_s

    # -- the loop ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Fetch until stopped (`stop`) or cancelled."""
        try:
            with self._scope:
                while True:
                    await self._round()
        finally:
            await self._channel.aclose()

    def _ready(self) -> dict[PartitionKey, _Target]:
        now = trio.current_time()
        return {
            key: target
            for key, target in self._targets.items()
            if target.delayed_until <= now
            and target.partition.is_follower
            and target.partition.leader_id == self.source_id
        }

    async def _round(self) -> None:
        ready = self._ready()
        if not ready:
            changed = self._changed
            wake_at = min((t.delayed_until for t in self._targets.values()), default=math.inf)
            if wake_at <= trio.current_time():
                # Targets in another role (e.g. made leader): nothing to do until changed.
                wake_at = math.inf
            with trio.move_on_at(wake_at):
                await changed.wait()
            return
        request, sent = self._fetch_request(ready)
        self.rounds += 1
        try:
            response = await self._channel.request(request, FETCH_VERSION)
        except PeerUnavailableError as exc:
            logger.info("%r: %s; retrying in %gs", self, exc, self._backoff_s)
            for target in ready.values():
                self._delay(target)
            return
        if response.error_code != 0:
            logger.warning(
                "%r: fetch failed with error %d; retrying in %gs",
                self,
                response.error_code,
                self._backoff_s,
            )
            for target in ready.values():
                self._delay(target)
            return
        await self._process(response, sent)

    def _fetch_request(
        self, ready: dict[PartitionKey, _Target]
    ) -> tuple[ApiMessage, dict[PartitionKey, _Sent]]:
        sent: dict[PartitionKey, _Sent] = {}
        topics: dict[str, list[ApiMessage]] = {}
        for key in sorted(ready):
            partition = ready[key].partition
            log = partition.log
            sent[key] = _Sent(partition.leader_epoch, log.log_end_offset)
            topics.setdefault(key[0], []).append(
                _FetchPartition(
                    partition=key[1],
                    current_leader_epoch=partition.leader_epoch,
                    fetch_offset=log.log_end_offset,
                    # PLANTED BUG follower-skips-epoch-check: no epoch, so no divergence check.
                    last_fetched_epoch=(
                        -1 if bugs.enabled("follower-skips-epoch-check") else log.latest_epoch
                    ),
                    log_start_offset=log.log_start_offset,
                    partition_max_bytes=self._config.replica_fetch_max_bytes,
                )
            )
        request = FetchRequest(
            replica_id=self.node_id,
            max_wait_ms=self._config.replica_fetch_wait_max_ms,
            min_bytes=self._config.replica_fetch_min_bytes,
            max_bytes=max(RESPONSE_MAX_BYTES, self._config.replica_fetch_max_bytes),
            isolation_level=0,
            session_id=0,
            session_epoch=-1,
            topics=[_FetchTopic(topic=t, partitions=ps) for t, ps in topics.items()],
            forgotten_topics_data=[],
            rack_id="",
        )
        return request, sent

    def _current(self, key: PartitionKey, sent: _Sent | None) -> Partition | None:
        """The partition if it is still in the state its fetch was sent in."""
        target = self._targets.get(key)
        if target is None or sent is None:
            return None
        partition = target.partition
        if (
            not partition.is_follower
            or partition.leader_id != self.source_id
            or partition.leader_epoch != sent.leader_epoch
            or partition.log_end_offset != sent.fetch_offset
        ):
            return None
        return partition

    async def _process(self, response: ApiMessage, sent: dict[PartitionKey, _Sent]) -> None:
        appended: list[Partition] = []
        for topic in response.responses:
            for data in topic.partitions:
                key = (topic.topic, data.partition_index)
                partition = self._current(key, sent.get(key))
                if partition is None:
                    continue
                error = data.error_code
                try:
                    if error == ErrorCode.NONE:
                        if self._apply_fetched(partition, data):
                            appended.append(partition)
                    elif error == ErrorCode.OFFSET_OUT_OF_RANGE:
                        await self._out_of_range(key, sent[key], data)
                    else:
                        logger.info(
                            "%r: %s-%d: error %d; retrying in %gs",
                            self,
                            key[0],
                            key[1],
                            error,
                            self._backoff_s,
                        )
                        self._delay(self._targets[key])
                except BrokerError as exc:
                    # A batch the log refuses, a log gone offline: this partition sits
                    # out a backoff, the others go on.
                    logger.warning("%r: %s-%d: %s", self, key[0], key[1], exc)
                    target = self._targets.get(key)
                    if target is not None:
                        self._delay(target)
        for partition in appended:
            # The follower applies its own flush policy, exactly as the leader does.
            if partition.log.flush_due(self._clock.now_ms()):
                await partition.log.flush()

    def _apply_fetched(self, partition: Partition, data: ApiMessage) -> bool:
        """Truncate or append one partition's answer; returns whether records were appended."""
        diverging = data.diverging_epoch
        if diverging is not None and diverging.epoch >= 0 and diverging.end_offset >= 0:
            self._truncate_diverged(partition, diverging.epoch, diverging.end_offset)
            return False
        records = bytes(data.records or b"")
        appended = False
        if records:
            partition.append_replicated(records)
            appended = True
        partition.update_follower_high_watermark(data.high_watermark)
        return appended

    def _truncate_diverged(self, partition: Partition, epoch: int, leader_end: int) -> None:
        leo = partition.log_end_offset
        last_epoch = partition.log.latest_epoch
        target = diverged_truncation_offset(partition.log, epoch, leader_end)
        logger.info(
            "%s-%d: log diverged from leader %d (epoch %d ends at %d there); truncating %d -> %d",
            partition.topic,
            partition.index,
            self.source_id,
            epoch,
            leader_end,
            leo,
            target,
        )
        partition.truncate_to(target)
        if (partition.log_end_offset, partition.log.latest_epoch) == (leo, last_epoch):
            # The next fetch would ask the leader the same question and get the same
            # answer: sit out a backoff rather than ask again at network speed.
            logger.warning(
                "%s-%d: truncation left the log at %d in epoch %d; retrying in %gs",
                partition.topic,
                partition.index,
                leo,
                last_epoch,
                self._backoff_s,
            )
            entry = self._targets.get((partition.topic, partition.index))
            if entry is not None:
                self._delay(entry)

    async def _out_of_range(self, key: PartitionKey, sent: _Sent, data: ApiMessage) -> None:
        partition = self._current(key, sent)
        assert partition is not None
        leader_start = data.log_start_offset
        if leader_start >= 0 and leader_start > partition.log_end_offset:
            logger.info(
                "%s-%d: leader %d starts at %d, beyond our log end %d; restarting there",
                key[0],
                key[1],
                self.source_id,
                leader_start,
                partition.log_end_offset,
            )
            partition.truncate_fully_and_start_at(leader_start)
            return
        leader_end = await self._leader_log_end(key, sent.leader_epoch)
        partition = self._current(key, sent)
        if partition is None:
            return
        if leader_end is not None and leader_end < partition.log_end_offset:
            logger.warning(
                "%s-%d: leader %d ends at %d, before our log end %d; truncating",
                key[0],
                key[1],
                self.source_id,
                leader_end,
                partition.log_end_offset,
            )
            partition.truncate_to(leader_end)
            return
        self._delay(self._targets[key])

    async def _leader_log_end(self, key: PartitionKey, leader_epoch: int) -> int | None:
        """The leader's log end offset (ListOffsets latest, asked as a replica)."""
        request = ListOffsetsRequest(
            replica_id=self.node_id,
            isolation_level=0,
            topics=[
                _ListTopic(
                    name=key[0],
                    partitions=[
                        _ListPartition(
                            partition_index=key[1],
                            current_leader_epoch=leader_epoch,
                            timestamp=LATEST_TIMESTAMP,
                        )
                    ],
                )
            ],
        )
        try:
            response = await self._channel.request(request, LIST_OFFSETS_VERSION)
        except PeerUnavailableError as exc:
            logger.info("%r: %s", self, exc)
            return None
        for topic in response.topics:
            for p in topic.partitions:
                if (topic.name, p.partition_index) == key and p.error_code == 0:
                    return int(p.offset)
        return None
