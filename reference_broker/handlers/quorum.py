"""Vote, BeginQuorumEpoch, EndQuorumEpoch and the metadata log's Fetch: into the Raft core.

Each handler turns the Kafka request into the Raft message (addressed to this node),
lets the node's quorum member (`broker.quorum_endpoint`, the QuorumDriver) handle it,
waits until what the core just wrote — a vote, an epoch, appended entries — is durable,
and only then answers: a reply that left before its fsync could be forgotten by a
crash and contradicted after it (a vote cast twice).

These APIs are served only on a controller listener (`CONTROLLER_HANDLERS`); a node
without a quorum has no controller listener. Every request must name this quorum's
cluster id: a null or different one is answered INCONSISTENT_CLUSTER_ID before the
core sees it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from kafka.protocol.api_key import ApiKey
from kafka.protocol.api_message import ApiMessage

from ..controller.raft.messages import FetchRequest
from ..controller.transport import (
    QuorumEndpoint,
    QuorumWireError,
    from_kafka_request,
    quorum_error_response,
    to_kafka_response,
)
from ..errors import ErrorCode
from .context import RequestContext

if TYPE_CHECKING:
    from ..broker import Broker

logger = logging.getLogger("faultline.broker.quorum")


async def _handle(
    endpoint: QuorumEndpoint | None,
    api_key: int,
    ctx: RequestContext,
    request: ApiMessage,
    no_quorum: ErrorCode,
) -> ApiMessage:
    if endpoint is None:
        return quorum_error_response(api_key, ctx.version, no_quorum)
    try:
        message = from_kafka_request(
            api_key,
            request,
            node_id=endpoint.node_id,
            cluster_id=endpoint.cluster_id,
            correlation_id=ctx.header.correlation_id,
        )
    except QuorumWireError as exc:
        logger.info(
            "refusing %s from %s: %s", ApiKey(api_key).name, ctx.client_id or ctx.client_host, exc
        )
        return quorum_error_response(api_key, ctx.version, exc.code)
    if isinstance(message, FetchRequest):
        reply = await endpoint.handle_fetch(message, request.max_wait_ms)
    else:
        reply = endpoint.handle_request(message)
    await endpoint.sync()
    return to_kafka_response(api_key, reply, ctx.version)


async def handle_vote(broker: Broker, ctx: RequestContext, request: ApiMessage) -> ApiMessage:
    """A candidate's VoteRequest: the core grants or refuses, durably, then answers."""
    return await _handle(
        broker.quorum_endpoint, ApiKey.Vote, ctx, request, ErrorCode.NOT_CONTROLLER
    )


async def handle_begin_quorum_epoch(
    broker: Broker, ctx: RequestContext, request: ApiMessage
) -> ApiMessage:
    """A new leader's BeginQuorumEpoch: this voter follows it and acknowledges."""
    return await _handle(
        broker.quorum_endpoint, ApiKey.BeginQuorumEpoch, ctx, request, ErrorCode.NOT_CONTROLLER
    )


async def handle_end_quorum_epoch(
    broker: Broker, ctx: RequestContext, request: ApiMessage
) -> ApiMessage:
    """A resigning leader's EndQuorumEpoch: this voter prepares to stand and acknowledges."""
    return await _handle(
        broker.quorum_endpoint, ApiKey.EndQuorumEpoch, ctx, request, ErrorCode.NOT_CONTROLLER
    )


async def handle_raft_fetch(
    endpoint: QuorumEndpoint | None, ctx: RequestContext, request: ApiMessage
) -> ApiMessage:
    """A Fetch of `__cluster_metadata-0` by a quorum member: the leader's entries or error.

    With nothing new to send, the endpoint may hold it up to the request's max_wait_ms,
    as a Kafka leader does.
    """
    return await _handle(endpoint, ApiKey.Fetch, ctx, request, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)


async def handle_controller_fetch(
    broker: Broker, ctx: RequestContext, request: ApiMessage
) -> ApiMessage:
    """A Fetch on a controller listener: always the metadata log's (any other partition
    is INVALID_REQUEST, as Kafka's controller answers)."""
    return await handle_raft_fetch(broker.quorum_endpoint, ctx, request)
