"""AlterPartitionReassignments, ListPartitionReassignments and UnregisterBroker.

Kafka serves all three on the client listener and forwards them to the active
controller (KIP-590 forwarding); the controller serves them on its own listener. Here
a client listener's handler goes through the broker's `ControllerClient` (a direct
call when this node is the active controller, else the Kafka RPC to the controller
listener of the one it finds); a controller listener's handler asks this node's
`ControllerService`, which answers NOT_CONTROLLER unless it is the active one. A
NOT_CONTROLLER from the service is the whole response's error there, so the
forwarding broker tries another node.

A broker without a controller quorum (standalone) answers NOT_CONTROLLER.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

from kafka.protocol.admin import (
    AlterPartitionReassignmentsResponse,
    ListPartitionReassignmentsResponse,
)
from kafka.protocol.api_message import ApiMessage

from ..controller.service import OngoingReassignment, ReassignmentResult
from ..errors import ErrorCode
from ..protocol.controller_apis import UnregisterBrokerResponse
from .context import RequestContext

if TYPE_CHECKING:
    from ..broker import Broker

_AlterTopic = AlterPartitionReassignmentsResponse.ReassignableTopicResponse
_AlterPartition = _AlterTopic.ReassignablePartitionResponse
_ListTopic = ListPartitionReassignmentsResponse.OngoingTopicReassignment
_ListPartition = _ListTopic.OngoingPartitionReassignment


class ReassignmentBackend(Protocol):
    """What answers these APIs: the ControllerClient or the ControllerService."""

    async def alter_reassignment(
        self,
        topic: str,
        partition: int,
        target: tuple[int, ...] | None,
        *,
        allow_factor_change: bool = True,
    ) -> ReassignmentResult: ...

    async def list_reassignments(
        self, partitions: Mapping[str, list[int]] | None = None
    ) -> list[OngoingReassignment] | int: ...

    async def unregister_broker(self, broker_id: int) -> ReassignmentResult: ...


def _client_backend(broker: Broker) -> ReassignmentBackend | None:
    return broker.controller_client


def _controller_backend(broker: Broker) -> ReassignmentBackend | None:
    return broker.controller_service


async def _alter(
    backend: ReassignmentBackend | None, ctx: RequestContext, request: ApiMessage
) -> ApiMessage:
    def answer(code: int, message: str | None, topics: Sequence[ApiMessage]) -> ApiMessage:
        return AlterPartitionReassignmentsResponse(
            version=ctx.version,
            throttle_time_ms=0,
            allow_replication_factor_change=allow,
            error_code=code,
            error_message=message,
            responses=list(topics),
        )

    allow = bool(getattr(request, "allow_replication_factor_change", True))
    if ctx.version < 1:
        allow = True
    if backend is None:
        return answer(ErrorCode.NOT_CONTROLLER, "this broker has no controller quorum", [])
    topics = []
    for topic in request.topics:
        partitions = []
        for p in topic.partitions:
            target = None if p.replicas is None else tuple(p.replicas)
            result = await backend.alter_reassignment(
                topic.name, p.partition_index, target, allow_factor_change=allow
            )
            if result.error_code == ErrorCode.NOT_CONTROLLER:
                return answer(ErrorCode.NOT_CONTROLLER, None, [])
            partitions.append(
                _AlterPartition(
                    partition_index=p.partition_index,
                    error_code=result.error_code,
                    error_message=result.message if result.error_code else None,
                )
            )
        topics.append(_AlterTopic(name=topic.name, partitions=partitions))
    return answer(ErrorCode.NONE, None, topics)


async def _list(
    backend: ReassignmentBackend | None, ctx: RequestContext, request: ApiMessage
) -> ApiMessage:
    def answer(code: int, message: str | None, topics: Sequence[ApiMessage]) -> ApiMessage:
        return ListPartitionReassignmentsResponse(
            version=ctx.version,
            throttle_time_ms=0,
            error_code=code,
            error_message=message,
            topics=list(topics),
        )

    if backend is None:
        return answer(ErrorCode.NOT_CONTROLLER, "this broker has no controller quorum", [])
    wanted = (
        None
        if request.topics is None
        else {t.name: list(t.partition_indexes) for t in request.topics}
    )
    found = await backend.list_reassignments(wanted)
    if isinstance(found, int):
        return answer(found, None, [])
    by_topic: dict[str, list[ApiMessage]] = {}
    for entry in found:
        by_topic.setdefault(entry.topic, []).append(
            _ListPartition(
                partition_index=entry.partition,
                replicas=list(entry.replicas),
                adding_replicas=list(entry.adding_replicas),
                removing_replicas=list(entry.removing_replicas),
            )
        )
    return answer(
        ErrorCode.NONE,
        None,
        [_ListTopic(name=name, partitions=parts) for name, parts in sorted(by_topic.items())],
    )


async def _unregister(
    backend: ReassignmentBackend | None, ctx: RequestContext, request: ApiMessage
) -> ApiMessage:
    message: str | None = "this broker has no controller quorum"
    code = int(ErrorCode.NOT_CONTROLLER)
    if backend is not None:
        result = await backend.unregister_broker(request.broker_id)
        code, message = result.error_code, result.message if result.error_code else None
    return UnregisterBrokerResponse(
        version=ctx.version, throttle_time_ms=0, error_code=code, error_message=message
    )


async def handle_alter_partition_reassignments(
    broker: Broker, ctx: RequestContext, request: ApiMessage
) -> ApiMessage:
    """AlterPartitionReassignments from a client, forwarded to the active controller."""
    return await _alter(_client_backend(broker), ctx, request)


async def handle_list_partition_reassignments(
    broker: Broker, ctx: RequestContext, request: ApiMessage
) -> ApiMessage:
    """ListPartitionReassignments from a client, forwarded to the active controller."""
    return await _list(_client_backend(broker), ctx, request)


async def handle_unregister_broker(
    broker: Broker, ctx: RequestContext, request: ApiMessage
) -> ApiMessage:
    """UnregisterBroker from a client, forwarded to the active controller."""
    return await _unregister(_client_backend(broker), ctx, request)


async def handle_controller_alter_partition_reassignments(
    broker: Broker, ctx: RequestContext, request: ApiMessage
) -> ApiMessage:
    """AlterPartitionReassignments on the controller listener."""
    return await _alter(_controller_backend(broker), ctx, request)


async def handle_controller_list_partition_reassignments(
    broker: Broker, ctx: RequestContext, request: ApiMessage
) -> ApiMessage:
    """ListPartitionReassignments on the controller listener."""
    return await _list(_controller_backend(broker), ctx, request)


async def handle_controller_unregister_broker(
    broker: Broker, ctx: RequestContext, request: ApiMessage
) -> ApiMessage:
    """UnregisterBroker on the controller listener."""
    return await _unregister(_controller_backend(broker), ctx, request)
