"""Produce: append record batches, honour acks, map log errors to Kafka's codes.

The records of each partition reach the log as the client's bytes: the log checks
batch framing, CRC-32C, sizes, every record (as Kafka's LogValidator; one bad batch
fails the partition) and idempotent-producer sequences, and assigns offsets in place.
Order of events for each partition, as Kafka's ReplicaManager.appendRecords:

1. leader and acks checks (NOT_LEADER_OR_FOLLOWER on any node but the leader,
   NOT_ENOUGH_REPLICAS for acks=all when the ISR is smaller than min.insync.replicas);
2. append (synchronous) in the leader's epoch, which wakes followers' fetches, and
   the high-watermark update;
3. the flush policy (`flush.messages`) — an fsync here delays this response only;
4. for acks=all, wait until the high watermark passes the batch: every in-sync
   replica has it. NOT_ENOUGH_REPLICAS_AFTER_APPEND when the ISR falls under
   min.insync.replicas meanwhile, NOT_LEADER_OR_FOLLOWER when this node stops leading
   the epoch that appended, REQUEST_TIMED_OUT after timeout_ms. acks=1 answers after
   the leader's append.

acks=0 gets no response; if any partition failed, the connection is closed instead,
which is how Kafka tells an acks=0 producer to refresh its metadata.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import trio
from kafka.protocol.api_message import ApiMessage
from kafka.protocol.producer import ProduceResponse

from .. import bugs
from ..errors import BrokerError, ErrorCode, InvalidRecordError
from .context import CloseConnection, RequestContext

if TYPE_CHECKING:
    from ..broker import Broker
    from ..replication.partition import Partition

_TopicResponse = ProduceResponse.TopicProduceResponse
_PartitionResponse = _TopicResponse.PartitionProduceResponse


def _partition_error(index: int, code: ErrorCode, message: str | None) -> ApiMessage:
    return _PartitionResponse(
        index=index,
        error_code=int(code),
        base_offset=-1,
        log_append_time_ms=-1,
        log_start_offset=-1,
        record_errors=[],
        error_message=message,
    )


async def handle_produce(
    broker: Broker, ctx: RequestContext, request: ApiMessage
) -> ApiMessage | None:
    """Append each partition's batches; respond per partition (or not at all for acks=0)."""
    acks = request.acks
    responses: list[ApiMessage] = []
    # acks=all waits, run after all appends: (entry, partition, offset to reach, leader epoch).
    waits: list[tuple[ApiMessage, Partition, int, int]] = []
    failed = False
    for topic_data in request.topic_data:
        name = topic_data.name
        entries: list[ApiMessage] = []
        if acks not in (-1, 0, 1):
            for data in topic_data.partition_data:
                entries.append(
                    _partition_error(
                        data.index,
                        ErrorCode.INVALID_REQUIRED_ACKS,
                        f"acks must be -1, 0 or 1, not {acks}",
                    )
                )
            responses.append(_TopicResponse(name=name, partition_responses=entries))
            failed = True
            continue
        if not broker.has_topic(name):
            # A topic that cannot be created is reported per partition below as unknown.
            with contextlib.suppress(BrokerError):
                await broker.ensure_topic(name)
        for data in topic_data.partition_data:
            try:
                partition = broker.partition(name, data.index)
                partition.ensure_leader()
                records = data.records
                if not records:
                    # As Kafka's ProduceRequest.validateRecords: INVALID_RECORD.
                    raise InvalidRecordError(
                        f"produce to {name}-{data.index} carried no record batch"
                    )
                leader_epoch = partition.leader_epoch
                result = partition.append_records_as_leader(bytes(records), acks)
                if not result.duplicate:
                    await broker.flush_if_due(partition)
            except BrokerError as exc:
                failed = True
                entries.append(_partition_error(data.index, exc.code, str(exc)))
                continue
            entry = _PartitionResponse(
                index=data.index,
                error_code=0,
                base_offset=result.base_offset,
                log_append_time_ms=result.log_append_time,
                log_start_offset=result.log_start_offset,
                record_errors=[],
                error_message=None,
            )
            entries.append(entry)
            # PLANTED BUG ack-before-replication: answer acks=all like acks=1.
            if acks == -1 and not bugs.enabled("ack-before-replication"):
                waits.append((entry, partition, result.last_offset + 1, leader_epoch))
        responses.append(_TopicResponse(name=name, partition_responses=entries))

    if acks == 0:
        if failed:
            raise CloseConnection("acks=0 produce failed for at least one partition")
        return None

    if waits:
        deadline = trio.current_time() + max(request.timeout_ms, 0) / 1000
        for entry, partition, offset, leader_epoch in waits:
            code = await partition.wait_for_high_watermark(
                offset, max(deadline - trio.current_time(), 0), leader_epoch
            )
            if code != ErrorCode.NONE:
                entry.error_code = int(code)
                entry.error_message = f"acks=all: {code.name}"

    return ProduceResponse(version=ctx.version, responses=responses, throttle_time_ms=0)
