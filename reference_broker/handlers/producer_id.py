"""InitProducerId: a fresh producer id (epoch 0) for an idempotent producer; a
transactional one is the transaction coordinator's (`transactions.py`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from kafka.protocol.api_message import ApiMessage
from kafka.protocol.producer import InitProducerIdResponse

from .context import RequestContext
from .transactions import init_transactional_producer_id

if TYPE_CHECKING:
    from ..broker import Broker


async def handle_init_producer_id(
    broker: Broker, ctx: RequestContext, request: ApiMessage
) -> ApiMessage:
    """A new producer id for an idempotent producer; with a transactional id, the
    coordinator's id and bumped epoch.

    As Kafka's TransactionCoordinator for a null transactional id: always a new id
    with epoch 0, even when the producer passes its old id and epoch (KIP-360), so
    an id is never shared by two producer sessions.
    """
    if request.transactional_id:
        return await init_transactional_producer_id(broker, ctx, request)
    producer_id = await broker.producer_ids.next_id()
    return InitProducerIdResponse(
        version=ctx.version,
        throttle_time_ms=0,
        error_code=0,
        producer_id=producer_id,
        producer_epoch=0,
    )
