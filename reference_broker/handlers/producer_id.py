"""InitProducerId: hand an idempotent producer a fresh producer id (epoch 0)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from kafka.protocol.api_message import ApiMessage
from kafka.protocol.producer import InitProducerIdResponse

from ..errors import ErrorCode
from .context import RequestContext

if TYPE_CHECKING:
    from ..broker import Broker


async def handle_init_producer_id(
    broker: Broker, ctx: RequestContext, request: ApiMessage
) -> ApiMessage:
    """A new producer id for an idempotent producer; transactions are not served yet.

    As Kafka's TransactionCoordinator for a null transactional id: always a new id
    with epoch 0, even when the producer passes its old id and epoch (KIP-360), so
    an id is never shared by two producer sessions.
    """
    if request.transactional_id is not None:
        return InitProducerIdResponse(
            version=ctx.version,
            throttle_time_ms=0,
            error_code=int(ErrorCode.INVALID_REQUEST),
            producer_id=-1,
            producer_epoch=-1,
        )
    producer_id = await broker.producer_ids.next_id()
    return InitProducerIdResponse(
        version=ctx.version,
        throttle_time_ms=0,
        error_code=0,
        producer_id=producer_id,
        producer_epoch=0,
    )
