"""Transaction APIs wired to the transaction coordinator and the partition leaders.

Client APIs (client listeners): InitProducerId with a transactional id (the idempotent
case stays in `producer_id.py`), AddPartitionsToTxn, AddOffsetsToTxn, EndTxn and
TxnOffsetCommit (the group coordinator's). Inter-broker: WriteTxnMarkers, served on the
controller listener only (`markers.py` says why).

PRODUCER_FENCED exists from InitProducerId v4, AddPartitionsToTxn v2, AddOffsetsToTxn v2,
EndTxn v2 and TxnOffsetCommit v3 (KIP-588); older versions get INVALID_PRODUCER_EPOCH,
as Kafka's KafkaApis answers them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kafka.protocol.api_message import ApiMessage
from kafka.protocol.producer import (
    AddOffsetsToTxnResponse,
    AddPartitionsToTxnResponse,
    EndTxnResponse,
    InitProducerIdResponse,
    TxnOffsetCommitResponse,
    WriteTxnMarkersResponse,
)

from ..errors import ErrorCode
from ..group.offsets_store import OFFSETS_TOPIC
from ..group.results import OffsetAndMetadata
from ..log.control_batch import TxnMarker
from ..txn.markers import write_marker_locally
from .context import RequestContext

if TYPE_CHECKING:
    from ..broker import Broker

_AddTopicResult = AddPartitionsToTxnResponse.AddPartitionsToTxnTopicResult
_AddPartitionResult = _AddTopicResult.AddPartitionsToTxnPartitionResult
_TxnCommitTopic = TxnOffsetCommitResponse.TxnOffsetCommitResponseTopic
_TxnCommitPartition = _TxnCommitTopic.TxnOffsetCommitResponsePartition
_MarkerResult = WriteTxnMarkersResponse.WritableTxnMarkerResult
_MarkerTopicResult = _MarkerResult.WritableTxnMarkerTopicResult
_MarkerPartitionResult = _MarkerTopicResult.WritableTxnMarkerPartitionResult


def _fenced(error: ErrorCode, version: int, since: int) -> ErrorCode:
    if error is ErrorCode.PRODUCER_FENCED and version < since:
        return ErrorCode.INVALID_PRODUCER_EPOCH
    return error


async def init_transactional_producer_id(
    broker: Broker, ctx: RequestContext, request: ApiMessage
) -> ApiMessage:
    """InitProducerId with a transactional id: the coordinator's producer id and epoch."""
    expected = None
    if ctx.version >= 3 and request.producer_id >= 0:
        expected = (request.producer_id, request.producer_epoch)
    error, producer_id, epoch = await broker.txn_coordinator.init_producer_id(
        request.transactional_id, request.transaction_timeout_ms, expected
    )
    return InitProducerIdResponse(
        version=ctx.version,
        throttle_time_ms=0,
        error_code=int(_fenced(error, ctx.version, 4)),
        producer_id=producer_id,
        producer_epoch=epoch,
    )


async def handle_add_partitions_to_txn(
    broker: Broker, ctx: RequestContext, request: ApiMessage
) -> ApiMessage:
    """Add partitions to the ongoing transaction (v0-3: one transaction per request).

    Unknown partitions fail the request: they get UNKNOWN_TOPIC_OR_PARTITION and the
    others OPERATION_NOT_ATTEMPTED, as Kafka does.
    """
    wanted = [(t.name, p) for t in request.v3_and_below_topics for p in t.partitions]
    unknown = {
        tp for tp in wanted if tp not in broker.partitions and not broker.replicas.knows(*tp)
    }
    codes: dict[tuple[str, int], ErrorCode]
    if unknown:
        codes = {
            tp: ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
            if tp in unknown
            else ErrorCode.OPERATION_NOT_ATTEMPTED
            for tp in wanted
        }
    else:
        error = await broker.txn_coordinator.add_partitions(
            request.v3_and_below_transactional_id,
            request.v3_and_below_producer_id,
            request.v3_and_below_producer_epoch,
            wanted,
        )
        codes = dict.fromkeys(wanted, _fenced(error, ctx.version, 2))
    return AddPartitionsToTxnResponse(
        version=ctx.version,
        throttle_time_ms=0,
        results_by_topic_v3_and_below=[
            _AddTopicResult(
                name=t.name,
                results_by_partition=[
                    _AddPartitionResult(
                        partition_index=p, partition_error_code=int(codes[(t.name, p)])
                    )
                    for p in t.partitions
                ],
            )
            for t in request.v3_and_below_topics
        ],
    )


async def handle_add_offsets_to_txn(
    broker: Broker, ctx: RequestContext, request: ApiMessage
) -> ApiMessage:
    """The group's `__consumer_offsets` partition joins the transaction."""
    partition = broker.coordinator.partition_for(request.group_id)
    error = await broker.txn_coordinator.add_partitions(
        request.transactional_id,
        request.producer_id,
        request.producer_epoch,
        [(OFFSETS_TOPIC, partition)],
    )
    return AddOffsetsToTxnResponse(
        version=ctx.version, throttle_time_ms=0, error_code=int(_fenced(error, ctx.version, 2))
    )


async def handle_end_txn(broker: Broker, ctx: RequestContext, request: ApiMessage) -> ApiMessage:
    """Commit or abort: answered once the decision is durable; markers follow."""
    error = await broker.txn_coordinator.end_txn(
        request.transactional_id, request.producer_id, request.producer_epoch, request.committed
    )
    return EndTxnResponse(
        version=ctx.version, throttle_time_ms=0, error_code=int(_fenced(error, ctx.version, 2))
    )


async def handle_txn_offset_commit(
    broker: Broker, ctx: RequestContext, request: ApiMessage
) -> ApiMessage:
    """Offsets committed inside a transaction: visible once the transaction commits."""
    version = ctx.version
    offsets: dict[tuple[str, int], OffsetAndMetadata] = {}
    codes: dict[tuple[str, int], ErrorCode] = {}
    for topic in request.topics:
        for p in topic.partitions:
            key = (topic.name, p.partition_index)
            if key not in broker.partitions and not broker.has_topic(topic.name):
                codes[key] = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
                continue
            offsets[key] = OffsetAndMetadata(
                offset=p.committed_offset,
                leader_epoch=p.committed_leader_epoch if version >= 2 else -1,
                metadata=p.committed_metadata,
            )
    if offsets:
        codes.update(
            await broker.coordinator.commit_transactional_offsets(
                request.group_id,
                request.producer_id,
                request.producer_epoch,
                request.generation_id if version >= 3 else -1,
                request.member_id if version >= 3 else "",
                request.group_instance_id if version >= 3 else None,
                offsets,
            )
        )
    return TxnOffsetCommitResponse(
        version=version,
        throttle_time_ms=0,
        topics=[
            _TxnCommitTopic(
                name=topic.name,
                partitions=[
                    _TxnCommitPartition(
                        partition_index=p.partition_index,
                        error_code=int(
                            _fenced(
                                codes.get((topic.name, p.partition_index), ErrorCode.NONE),
                                version,
                                3,
                            )
                        ),
                    )
                    for p in topic.partitions
                ],
            )
            for topic in request.topics
        ],
    )


async def handle_write_txn_markers(
    broker: Broker, ctx: RequestContext, request: ApiMessage
) -> ApiMessage:
    """A coordinator's markers for partitions this node leads (inter-broker only)."""
    results = []
    for marker in request.markers:
        outcome = TxnMarker(bool(marker.transaction_result), marker.coordinator_epoch)
        topics = []
        for topic in marker.topics:
            partitions = []
            for index in topic.partition_indexes:
                code = await write_marker_locally(
                    broker, topic.name, index, marker.producer_id, marker.producer_epoch, outcome
                )
                partitions.append(
                    _MarkerPartitionResult(partition_index=index, error_code=int(code))
                )
            topics.append(_MarkerTopicResult(name=topic.name, partitions=partitions))
        results.append(_MarkerResult(producer_id=marker.producer_id, topics=topics))
    return WriteTxnMarkersResponse(version=ctx.version, markers=results)
