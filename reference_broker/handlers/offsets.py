"""ListOffsets (earliest, latest, by timestamp) and OffsetForLeaderEpoch.

Both are answered by the partition's leader only (NOT_LEADER_OR_FOLLOWER elsewhere),
after the leader-epoch check. "Latest" is the high watermark for read_uncommitted
consumers, the last stable offset for read_committed ones (isolation_level 1) and the
log end offset for a follower asking as a replica (replica_id >= 0), as in Kafka; a
timestamp lookup finds only records below the same bound.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kafka.protocol.api_message import ApiMessage
from kafka.protocol.consumer import ListOffsetsResponse, OffsetForLeaderEpochResponse

from ..errors import BrokerError, ErrorCode
from .context import RequestContext

if TYPE_CHECKING:
    from ..broker import Broker

EARLIEST_TIMESTAMP = -2
LATEST_TIMESTAMP = -1

_ListTopic = ListOffsetsResponse.ListOffsetsTopicResponse
_ListPartition = _ListTopic.ListOffsetsPartitionResponse
_EpochTopic = OffsetForLeaderEpochResponse.OffsetForLeaderTopicResult
_EpochPartition = _EpochTopic.EpochEndOffset


def _list_offset(
    broker: Broker,
    topic: str,
    p: ApiMessage,
    version: int,
    replica_id: int,
    read_committed: bool = False,
) -> ApiMessage:
    try:
        partition = broker.partition(topic, p.partition_index)
        partition.ensure_leader()
        if version >= 4:
            partition.check_leader_epoch(p.current_leader_epoch)
    except BrokerError as exc:
        return _ListPartition(
            partition_index=p.partition_index, error_code=int(exc.code), timestamp=-1, offset=-1
        )
    timestamp, offset = -1, -1
    if p.timestamp == EARLIEST_TIMESTAMP:
        offset = partition.log_start_offset
    elif p.timestamp == LATEST_TIMESTAMP:
        # For consumers the end is the high watermark, or the last stable offset under
        # read_committed; a follower resolving an out-of-range fetch needs the log end.
        if replica_id >= 0:
            offset = partition.log_end_offset
        elif read_committed:
            offset = partition.last_stable_offset
        else:
            offset = partition.high_watermark
    elif p.timestamp < 0:
        return _ListPartition(
            partition_index=p.partition_index,
            error_code=int(ErrorCode.UNSUPPORTED_VERSION),
            timestamp=-1,
            offset=-1,
        )
    else:
        found = broker.log_of(partition).offset_for_timestamp(p.timestamp)
        # Only committed records are visible to a timestamp lookup, as in Kafka.
        bound = partition.last_stable_offset if read_committed else partition.high_watermark
        if found is not None and found[0] < bound:
            offset, timestamp = found
    return _ListPartition(
        partition_index=p.partition_index,
        error_code=0,
        timestamp=timestamp,
        offset=offset,
        leader_epoch=partition.leader_epoch,
    )


async def handle_list_offsets(
    broker: Broker, ctx: RequestContext, request: ApiMessage
) -> ApiMessage:
    """Resolve each partition's timestamp query to an offset."""
    # isolation_level exists from v2; 1 is read_committed.
    read_committed = ctx.version >= 2 and request.isolation_level == 1
    topics = [
        _ListTopic(
            name=topic.name,
            partitions=[
                _list_offset(broker, topic.name, p, ctx.version, request.replica_id, read_committed)
                for p in topic.partitions
            ],
        )
        for topic in request.topics
    ]
    return ListOffsetsResponse(version=ctx.version, throttle_time_ms=0, topics=topics)


def _epoch_end(broker: Broker, topic: str, p: ApiMessage) -> ApiMessage:
    try:
        partition = broker.partition(topic, p.partition)
        partition.ensure_leader()
        partition.check_leader_epoch(p.current_leader_epoch)
        epoch, end_offset = broker.log_of(partition).end_offset_for_epoch(p.leader_epoch)
    except BrokerError as exc:
        return _EpochPartition(
            error_code=int(exc.code), partition=p.partition, leader_epoch=-1, end_offset=-1
        )
    return _EpochPartition(
        error_code=0, partition=p.partition, leader_epoch=epoch, end_offset=end_offset
    )


async def handle_offset_for_leader_epoch(
    broker: Broker, ctx: RequestContext, request: ApiMessage
) -> ApiMessage:
    """The end offset of each requested leader epoch (KIP-101 / KIP-320)."""
    topics = [
        _EpochTopic(
            topic=topic.topic,
            partitions=[_epoch_end(broker, topic.topic, p) for p in topic.partitions],
        )
        for topic in request.topics
    ]
    return OffsetForLeaderEpochResponse(version=ctx.version, throttle_time_ms=0, topics=topics)
