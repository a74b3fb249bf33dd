"""Fetch: read whole batches up to the high watermark, long-polling for min_bytes.

As Kafka's ReplicaManager.fetchMessages: partitions are read in request order,
each up to its partition_max_bytes and what is left of the response's max_bytes;
the first partition that returns data may exceed the limits by one batch so that
a consumer always makes progress. If fewer than min_bytes are available and
max_wait_ms > 0, the request waits (a DelayedFetch) until a high watermark moves
on one of its partitions or the time is up, then reads again.

Only the leader serves a partition (NOT_LEADER_OR_FOLLOWER elsewhere), and a request
naming a leader epoch is checked against it (FENCED_LEADER_EPOCH for an older one,
UNKNOWN_LEADER_EPOCH for a newer one). Consumers (replica_id < 0) read up to the high
watermark with isolation_level read_uncommitted, and up to the last stable offset (LSO:
no open transaction below it) with read_committed; a read_committed answer lists the
aborted transactions that overlap the returned batches, so the consumer drops their
records (consumers skip the control batches themselves). Followers (replica_id = their
broker id) read up to the log end offset; from v12 their last fetched epoch is checked
against the leader's epoch cache first, and a follower whose log diverged gets
`diverging_epoch` (the epoch and where it ends here) instead of records. Otherwise the
fetch offset is the follower's log end offset: it may grow the ISR and move the high
watermark. Replica long-polls wake on appends, consumer long-polls when their visible
end (HW or LSO) moves.

A Fetch of `__cluster_metadata` is the controller quorum's (Raft), served only on a
controller listener (`quorum.handle_controller_fetch`); here, on a client listener, its
partitions are UNKNOWN_TOPIC_OR_PARTITION.

Incremental fetch sessions (KIP-227) are not offered: every response carries
session_id 0, which tells clients to keep sending full fetch requests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio
from kafka.protocol.api_message import ApiMessage
from kafka.protocol.consumer import FetchResponse
from kafka.protocol.data_container import DataContainer

from ..errors import BrokerError, ErrorCode, OffsetOutOfRangeError
from ..log.record_batch import iter_batches
from .context import RequestContext

if TYPE_CHECKING:
    from ..broker import Broker
    from ..replication.partition import Partition

_TopicResponse = FetchResponse.FetchableTopicResponse
_PartitionData = _TopicResponse.PartitionData
_EpochEndOffset = _PartitionData.EpochEndOffset
_AbortedTransaction = _PartitionData.AbortedTransaction

READ_COMMITTED = 1
METADATA_TOPIC = "__cluster_metadata"


@dataclass
class _Read:
    """The outcome of one pass over the requested partitions."""

    responses: list[ApiMessage]
    bytes_read: int
    # An error or a diverging epoch: answer now, waiting would not change it.
    complete: bool


def _error_partition(index: int, code: ErrorCode, hw: int = -1, log_start: int = -1) -> ApiMessage:
    return _PartitionData(
        partition_index=index,
        error_code=int(code),
        high_watermark=hw,
        last_stable_offset=hw,
        log_start_offset=log_start,
        aborted_transactions=None,
        preferred_read_replica=-1,
        records=b"",
    )


def _read_once(broker: Broker, request: ApiMessage, version: int) -> _Read:
    replica_id = request.replica_id
    is_replica = replica_id >= 0
    read_committed = request.isolation_level == READ_COMMITTED and not is_replica
    remaining = max(request.max_bytes, 0)
    min_one = True
    bytes_read = 0
    complete = False
    responses = []
    for topic in request.topics:
        entries = []
        for p in topic.partitions:
            try:
                partition = broker.partition(topic.topic, p.partition)
                partition.ensure_leader()
                if version >= 9:
                    partition.check_leader_epoch(p.current_leader_epoch)
                log = broker.log_of(partition)
                if is_replica:
                    partition.check_follower(replica_id)
                    if version >= 12 and p.last_fetched_epoch >= 0:
                        diverging = partition.diverging_epoch(p.last_fetched_epoch, p.fetch_offset)
                        if diverging is not None:
                            complete = True
                            entries.append(_diverging(p.partition, partition, *diverging))
                            continue
                    max_offset = None
                elif read_committed:
                    max_offset = partition.last_stable_offset
                else:
                    max_offset = partition.high_watermark
                result = log.read(
                    p.fetch_offset,
                    min(p.partition_max_bytes, remaining),
                    max_offset=max_offset,
                    min_one=min_one,
                )
                if is_replica:
                    partition.update_follower_fetch(replica_id, p.fetch_offset, trio.current_time())
            except OffsetOutOfRangeError:
                complete = True
                entries.append(
                    _error_partition(
                        p.partition,
                        ErrorCode.OFFSET_OUT_OF_RANGE,
                        partition.high_watermark,
                        partition.log_start_offset,
                    )
                )
                continue
            except BrokerError as exc:
                complete = True
                entries.append(_error_partition(p.partition, exc.code))
                continue
            records = result.records
            # read_committed answers carry the aborted transaction list (maybe empty);
            # others null.
            aborted: list[DataContainer] | None = None
            if read_committed:
                aborted = _aborted_in(broker, partition, p.fetch_offset, records)
            if records:
                size = len(records)
                remaining = max(remaining - size, 0)
                bytes_read += size
                min_one = False
            entries.append(
                _PartitionData(
                    # With the version, every field is a set slot: kafka-python's encoder
                    # then never falls back to its (slow) __getattr__ for defaults.
                    version=version,
                    partition_index=p.partition,
                    error_code=0,
                    high_watermark=result.high_watermark,
                    last_stable_offset=partition.last_stable_offset,
                    log_start_offset=result.log_start_offset,
                    aborted_transactions=aborted,
                    preferred_read_replica=-1,
                    records=records,
                )
            )
        responses.append(_TopicResponse(version=version, topic=topic.topic, partitions=entries))
    return _Read(responses, bytes_read, complete)


def _aborted_in(
    broker: Broker, partition: Partition, fetch_offset: int, records: bytes
) -> list[DataContainer]:
    """The aborted transactions overlapping the returned batches (Kafka's
    collectAbortedTxns up to the offset after the last batch returned)."""
    if not records:
        return []
    upper = fetch_offset
    for header, _raw in iter_batches(records):
        upper = header.next_offset
    return [
        _AbortedTransaction(producer_id=a.producer_id, first_offset=a.first_offset)
        for a in broker.log_of(partition).aborted_transactions(fetch_offset, upper)
    ]


def _diverging(index: int, partition: Partition, epoch: int, end_offset: int) -> ApiMessage:
    """A follower's log left ours: where its last fetched epoch ends here, and no records."""
    return _PartitionData(
        partition_index=index,
        error_code=0,
        high_watermark=partition.high_watermark,
        last_stable_offset=partition.high_watermark,
        log_start_offset=partition.log_start_offset,
        diverging_epoch=_EpochEndOffset(epoch=epoch, end_offset=end_offset),
        aborted_transactions=None,
        preferred_read_replica=-1,
        records=b"",
    )


def _new_data_available(broker: Broker, request: ApiMessage) -> bool:
    # Cheaper than a full re-read: did any requested partition's visible end move past
    # the fetch offset (or the partition vanish, or this node stop leading it)?
    is_replica = request.replica_id >= 0
    read_committed = request.isolation_level == READ_COMMITTED
    for topic in request.topics:
        for p in topic.partitions:
            partition = broker.partitions.get((topic.topic, p.partition))
            if partition is None or not partition.is_leader:
                return True
            if is_replica:
                end = partition.log_end_offset
            elif read_committed:
                end = partition.last_stable_offset
            else:
                end = partition.high_watermark
            if end > p.fetch_offset:
                return True
    return False


async def handle_fetch(broker: Broker, ctx: RequestContext, request: ApiMessage) -> ApiMessage:
    """Answer a Fetch, waiting up to max_wait_ms for min_bytes of data."""
    version = ctx.version
    if any(topic.topic == METADATA_TOPIC for topic in request.topics):
        return _metadata_log_not_here(ctx, request)
    if version >= 7 and request.session_id != 0:
        # We never hand out a session id, so any id a client names is unknown to us.
        return FetchResponse(
            version=version,
            throttle_time_ms=0,
            error_code=int(ErrorCode.FETCH_SESSION_ID_NOT_FOUND),
            session_id=0,
            responses=[],
        )
    if version >= 7 and request.session_epoch not in (0, -1):
        return FetchResponse(
            version=version,
            throttle_time_ms=0,
            error_code=int(ErrorCode.INVALID_FETCH_SESSION_EPOCH),
            session_id=0,
            responses=[],
        )
    deadline = trio.current_time() + max(request.max_wait_ms, 0) / 1000
    min_bytes = request.min_bytes
    while True:
        # Taken before reading, so an append between the read and the wait still wakes us.
        changed = broker.hw_signal.current()
        result = _read_once(broker, request, version)
        if result.bytes_read >= min_bytes or result.complete or trio.current_time() >= deadline:
            break
        with trio.move_on_at(deadline):
            while True:
                await changed.wait()
                changed = broker.hw_signal.current()
                if _new_data_available(broker, request):
                    break
    return FetchResponse(
        version=version,
        throttle_time_ms=0,
        error_code=0,
        session_id=0,
        responses=result.responses,
    )


def _metadata_log_not_here(ctx: RequestContext, request: ApiMessage) -> ApiMessage:
    """The answer of a client listener to a Fetch naming the metadata log: this listener
    hosts no such partition (quorum members fetch it on the controller listener)."""
    return FetchResponse(
        version=ctx.version,
        throttle_time_ms=0,
        error_code=0,
        session_id=0,
        responses=[
            _TopicResponse(
                topic=topic.topic,
                partitions=[
                    _error_partition(p.partition, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)
                    for p in topic.partitions
                ],
            )
            for topic in request.topics
        ],
    )
