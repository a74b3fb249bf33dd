"""BrokerRegistration, BrokerHeartbeat and AlterPartition: brokers' requests to the controller.

Each is answered by this node's `ControllerService` (`broker.controller_service`),
which answers NOT_CONTROLLER unless it is the active controller; the sender's
`ControllerClient` then tries another node. A standalone broker has no controller
quorum and answers NOT_CONTROLLER too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kafka.protocol.api_message import ApiMessage

from ..errors import ErrorCode
from ..protocol.controller_apis import (
    AlterPartitionResponse,
    BrokerHeartbeatResponse,
    BrokerRegistrationResponse,
)
from .context import RequestContext

if TYPE_CHECKING:
    from ..broker import Broker

# Errors.INCONSISTENT_CLUSTER_ID; ErrorCode does not list it.
INCONSISTENT_CLUSTER_ID = 104
_Topic = AlterPartitionResponse.TopicData
_Partition = _Topic.PartitionData


async def handle_broker_registration(
    broker: Broker, ctx: RequestContext, request: ApiMessage
) -> ApiMessage:
    """A starting broker registers: a new broker epoch, fenced until it catches up."""

    def answer(code: int, epoch: int = -1) -> ApiMessage:
        return BrokerRegistrationResponse(
            version=ctx.version, throttle_time_ms=0, error_code=code, broker_epoch=epoch
        )

    service = broker.controller_service
    if service is None:
        return answer(ErrorCode.NOT_CONTROLLER)
    if request.cluster_id != service.cluster_id:
        return answer(INCONSISTENT_CLUSTER_ID)
    listeners = [x for x in request.listeners if x.name == "PLAINTEXT"] or list(request.listeners)
    if not listeners:
        return answer(ErrorCode.INVALID_REQUEST)
    result = await service.register_broker(
        request.broker_id,
        str(request.incarnation_id),
        listeners[0].host,
        listeners[0].port,
        previous_broker_epoch=request.previous_broker_epoch,
    )
    return answer(result.error_code, result.broker_epoch)


async def handle_broker_heartbeat(
    broker: Broker, ctx: RequestContext, request: ApiMessage
) -> ApiMessage:
    """A broker's heartbeat: renews its session, unfences it once caught up."""
    service = broker.controller_service
    if service is None:
        return BrokerHeartbeatResponse(
            version=ctx.version,
            throttle_time_ms=0,
            error_code=ErrorCode.NOT_CONTROLLER,
            is_caught_up=False,
            is_fenced=True,
            should_shut_down=False,
        )
    result = await service.heartbeat(
        request.broker_id,
        request.broker_epoch,
        current_metadata_offset=request.current_metadata_offset,
        want_fence=request.want_fence,
        want_shutdown=request.want_shut_down,
    )
    return BrokerHeartbeatResponse(
        version=ctx.version,
        throttle_time_ms=0,
        error_code=result.error_code,
        is_caught_up=result.is_caught_up,
        is_fenced=result.is_fenced,
        should_shut_down=result.should_shutdown,
    )


async def handle_alter_partition(
    broker: Broker, ctx: RequestContext, request: ApiMessage
) -> ApiMessage:
    """A partition leader's ISR change, one partition at a time, each committed before the
    answer. NOT_CONTROLLER anywhere is the whole request's error, as in Kafka."""

    def refused(code: int) -> ApiMessage:
        return AlterPartitionResponse(
            version=ctx.version, throttle_time_ms=0, error_code=code, topics=[]
        )

    service = broker.controller_service
    if service is None or not service.is_active:
        return refused(ErrorCode.NOT_CONTROLLER)
    topics = []
    for topic in request.topics:
        partitions = []
        for p in topic.partitions:
            result = await service.alter_partition(
                request.broker_id,
                request.broker_epoch,
                topic.topic_name,
                p.partition_index,
                p.leader_epoch,
                p.partition_epoch,
                tuple(p.new_isr),
            )
            if result.error_code == ErrorCode.NOT_CONTROLLER:
                return refused(ErrorCode.NOT_CONTROLLER)
            partitions.append(
                _Partition(
                    partition_index=p.partition_index,
                    error_code=result.error_code,
                    leader_id=result.leader,
                    leader_epoch=result.leader_epoch,
                    isr=list(result.isr),
                    partition_epoch=result.partition_epoch,
                )
            )
        topics.append(_Topic(topic_name=topic.topic_name, partitions=partitions))
    return AlterPartitionResponse(
        version=ctx.version, throttle_time_ms=0, error_code=ErrorCode.NONE, topics=topics
    )
